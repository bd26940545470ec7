//! The one place that chooses between loom's model types (`--cfg loom`) and the real ones.
//!
//! Code that owns its synchronisation state ([`LocalRing`](crate::LocalRing)) imports atomics
//! and cells only from here, so the loom models in `ring/tests/loom.rs` exercise exactly the
//! production logic. The one exception is [`shared`](crate::shared): atomics placed at a raw
//! address in a Xen-shared page are necessarily `core` atomics (loom cannot model memory it
//! does not own), which is why the ring core is generic over where its state lives.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, fence};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

#[cfg(not(loom))]
pub(crate) use core::cell::UnsafeCell;
