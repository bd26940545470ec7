//! `vchan-msg`: the libxenvchan-compatible channel and typed zero-copy frames.
//!
//! Filled by the channel issue; for now this crate only ties `vchan-ring` and `vchan-xenif`
//! together in the dependency graph.
#![deny(missing_docs)]
