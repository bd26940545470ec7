//! `vchan-ring`: the libxenvchan shared-page layout and the lock-free SPSC byte ring.
//!
//! `#![no_std]`, no allocation, no OS calls.
#![cfg_attr(not(any(test, loom)), no_std)]
#![deny(missing_docs)]
