//! `vchan-bench`: shared helpers for the criterion benches in `benches/` and, later, the
//! side-by-side comparison harness.
#![deny(missing_docs)]
