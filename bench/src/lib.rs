//! `vchan-bench`: the criterion benches in `benches/` and the side-by-side comparison harness
//! (`cargo run -p vchan-bench --release -- compare`, see `bench/README.md`).
//!
//! This library holds the parts of the harness that are worth testing on their own: the
//! statistics every table is built from ([`stats`]), the description of the machine a report
//! was measured on ([`machine`]) and the units tables are written in ([`units`]). It never
//! measures anything itself.
#![deny(missing_docs)]

pub mod machine;
pub mod stats;
pub mod units;
