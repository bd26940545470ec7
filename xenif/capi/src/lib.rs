//! `vchan-xen-capi`: the C ABI of Xen's `libxengnttab.so.1`, `libxenevtchn.so.1`,
//! `libxencall.so.1` and `libxenforeignmemory.so.1`, implemented over vchan's simulated Xen
//! host
//! ([`vchan_xenif::sim`]), so that unmodified, dynamically linked C Xen programs — Debian's
//! `libxenvchan.so.4.17` and everything built on it, such as `vchan-socket-proxy` — run on a
//! plain Linux machine.
//!
//! `tools/sim-libs.sh` links this crate's static library once per C library, each with its
//! linker version script from `maps/` (symbols versioned `VERS_1.0` … as in Xen's own
//! `libxengnttab.map`, `libxenevtchn.map`, ...), into `target/sim-libs/`. Then:
//!
//! ```text
//! eval "$(vchan sim env 1)"                 # VCHAN_SIM_DIR, VCHAN_SIM_DOMID, XENSTORED_PATH
//! LD_LIBRARY_PATH=target/sim-libs some-c-xen-program
//! ```
//!
//! Debian's own `libxenstore.so.4` talks to the simulated xenstored through
//! `XENSTORED_PATH`; Debian's `libxenvchan` and `libxenctrl` are used unchanged.
//!
//! # Semantics
//!
//! The functions follow the Linux implementations of the C libraries (Xen 4.17
//! `tools/libs/{gnttab,evtchn,call}/linux.c` on top of the Linux `gntdev`, `gntalloc`,
//! `evtchn` and `privcmd` drivers): the same return values and `errno`s, the same ownership
//! of mappings (a program may `munmap` grant mappings itself, as `libxenvchan_close` does),
//! unmap notifications when a mapping ends or the process dies, event channels masked from
//! delivery until unmasked, a pollable descriptor per event-channel handle. Where the
//! simulated host has no counterpart (virtual IRQs, dma-bufs, guest frames, hypercalls other
//! than `XEN_DOMCTL_getdomaininfo`) the call fails with a documented `errno`, as it does on a
//! Xen build or kernel without the feature. Each function's documentation says which.
//!
//! Errors are also written to standard error, as the C libraries' default logger does
//! (`xentoollog` loggers passed in are accepted and ignored; `NULL` is fine).
//!
//! # Safety
//!
//! These are C functions: callers must pass handles these functions returned (or `NULL`)
//! and pointers valid for the sizes the C headers document. Nothing here dereferences a
//! pointer it was not given by the caller or did not create itself; the memory shared with
//! other domains is only ever handed to the caller, never read by this crate.
#![deny(missing_docs)]

mod common;
pub mod evtchn;
pub mod foreignmemory;
pub mod gnttab;
pub mod xencall;

pub use common::PAGE_SIZE;
