//! Where a ring's shared state lives: the traits the ring core is generic over, and their
//! implementations for raw shared memory (a Xen grant mapping, or any memory the caller
//! vouches for).
//!
//! The ring core ([`Producer`](crate::Producer), [`Consumer`](crate::Consumer)) never touches
//! memory directly: it loads and stores its two indices through [`IndexCell`], sets and clears
//! notify bits through [`FlagCell`], and copies bytes through [`RingMemory`]. In production
//! these are [`RawIndex`], [`RawFlag`] and [`RawRing`] over the mapped pages; in the loom
//! models and in-process uses they are [`LocalRing`](crate::LocalRing)'s cells.
//!
//! This module must never create a Rust reference (`&u32`, `&[u8]`) to peer-writable memory:
//! indices and flags are reached through `Atomic*::from_ptr` (an atomic is allowed to change
//! under us), and bytes are moved with raw-pointer copies into or out of private buffers.

use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crate::error::RingError;
use crate::geometry::RingOrder;

/// A shared `u32` ring index (`prod` or `cons`).
///
/// Implementations must perform each call as one atomic access with the given ordering.
pub trait IndexCell {
    /// Atomically loads the index.
    fn load(&self, order: Ordering) -> u32;
    /// Atomically stores the index.
    fn store(&self, value: u32, order: Ordering);
}

/// A shared notify byte (`cli_notify` or `srv_notify`).
///
/// Implementations must perform each call as one atomic read-modify-write (or load).
pub trait FlagCell {
    /// Atomically ORs `bits` in, returning the previous value.
    fn fetch_or(&self, bits: u8, order: Ordering) -> u8;
    /// Atomically ANDs with `mask`, returning the previous value.
    fn fetch_and(&self, mask: u8, order: Ordering) -> u8;
    /// Atomically loads the byte.
    fn load(&self, order: Ordering) -> u8;
}

/// The bytes of one ring.
///
/// # Safety
///
/// Implementors guarantee that [`size`](RingMemory::size) is a constant power of two, and
/// that `copy_in`/`copy_out` with in-bounds arguments access exactly the bytes
/// `offset..offset + len` of the ring and nothing else.
pub unsafe trait RingMemory {
    /// Ring size in bytes (a power of two, constant).
    fn size(&self) -> usize;

    /// Copies `src` into the ring at `offset`.
    ///
    /// # Safety
    ///
    /// `offset + src.len() <= self.size()`, and no other thread of this process accesses
    /// those ring bytes concurrently (the ring protocol gives them to the producer).
    unsafe fn copy_in(&self, offset: usize, src: &[u8]);

    /// Copies ring bytes at `offset` into `dst`.
    ///
    /// # Safety
    ///
    /// `offset + dst.len() <= self.size()`, and no other thread of this process writes
    /// those ring bytes concurrently (the ring protocol gives them to the consumer).
    unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]);
}

/// Ring memory that is one contiguous run of addressable bytes, so that reserved and readable
/// regions can be handed out as raw pointers (zero-copy I/O, `readv`/`writev`).
///
/// # Safety
///
/// [`base`](ContiguousRingMemory::base) points to `size()` bytes valid for reads and writes
/// for as long as the value lives, and `copy_in`/`copy_out` access exactly those bytes.
pub unsafe trait ContiguousRingMemory: RingMemory {
    /// First byte of the ring.
    fn base(&self) -> NonNull<u8>;
}

/// A ring index at a raw address in shared memory.
pub struct RawIndex(NonNull<u32>);

impl RawIndex {
    /// Wraps the address of a shared `u32` index.
    ///
    /// # Safety
    ///
    /// `ptr` is 4-byte aligned and valid for reads and writes for as long as this value (or
    /// anything built from it) lives, and this process accesses it only atomically. Other
    /// domains may write it at any time; that is what the ring's validation is for.
    pub const unsafe fn new(ptr: NonNull<u32>) -> RawIndex {
        RawIndex(ptr)
    }

    /// The address.
    pub const fn as_ptr(&self) -> *mut u32 {
        self.0.as_ptr()
    }

    #[inline(always)]
    fn atomic(&self) -> &AtomicU32 {
        // SAFETY: `new`'s contract: aligned, valid for the lifetime of `self`, and only
        // accessed atomically by this process, which is what `AtomicU32::from_ptr` requires.
        unsafe { AtomicU32::from_ptr(self.0.as_ptr()) }
    }
}

impl IndexCell for RawIndex {
    #[inline(always)]
    fn load(&self, order: Ordering) -> u32 {
        self.atomic().load(order)
    }

    #[inline(always)]
    fn store(&self, value: u32, order: Ordering) {
        self.atomic().store(value, order);
    }
}

impl fmt::Debug for RawIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawIndex").field(&self.0).finish()
    }
}

// SAFETY: a `RawIndex` is an address of shared memory that `new`'s contract keeps valid and
// that is only accessed atomically; atomics may be used from any thread.
unsafe impl Send for RawIndex {}
// SAFETY: as for `Send`: every access through `&RawIndex` is atomic.
unsafe impl Sync for RawIndex {}

/// A notify byte at a raw address in shared memory.
pub struct RawFlag(NonNull<u8>);

impl RawFlag {
    /// Wraps the address of a shared notify byte.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for reads and writes for as long as this value lives, and this process
    /// accesses it only atomically.
    pub const unsafe fn new(ptr: NonNull<u8>) -> RawFlag {
        RawFlag(ptr)
    }

    #[inline(always)]
    fn atomic(&self) -> &AtomicU8 {
        // SAFETY: `new`'s contract: valid for the lifetime of `self` and only accessed
        // atomically by this process (`AtomicU8` has alignment 1).
        unsafe { AtomicU8::from_ptr(self.0.as_ptr()) }
    }
}

impl FlagCell for RawFlag {
    #[inline(always)]
    fn fetch_or(&self, bits: u8, order: Ordering) -> u8 {
        self.atomic().fetch_or(bits, order)
    }

    #[inline(always)]
    fn fetch_and(&self, mask: u8, order: Ordering) -> u8 {
        self.atomic().fetch_and(mask, order)
    }

    #[inline(always)]
    fn load(&self, order: Ordering) -> u8 {
        self.atomic().load(order)
    }
}

impl fmt::Debug for RawFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawFlag").field(&self.0).finish()
    }
}

// SAFETY: as for `RawIndex`: a valid address only accessed atomically.
unsafe impl Send for RawFlag {}
// SAFETY: as for `RawIndex`.
unsafe impl Sync for RawFlag {}

/// The bytes of one ring at a raw address in shared memory (an in-page ring, or the
/// contiguous mapping of its granted pages).
pub struct RawRing {
    base: NonNull<u8>,
    size: usize,
}

impl RawRing {
    /// Wraps `order.size()` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base` is valid for reads and writes of `order.size()` bytes for as long as this value
    /// (or the [`Producer`](crate::Producer)/[`Consumer`](crate::Consumer) it is given to)
    /// lives. Within this process those bytes are accessed only through at most one
    /// producer and one consumer built on `RawRing`s of this memory (the peer, in another
    /// domain, may write them at any time: we only ever copy them).
    pub const unsafe fn new(base: NonNull<u8>, order: RingOrder) -> RawRing {
        RawRing {
            base,
            size: order.size(),
        }
    }

    /// Wraps `size` bytes at `base`, for any power-of-two size from 1 byte to 2 GiB (tests,
    /// in-process rings). Fails with [`RingError::InvalidSize`] otherwise.
    ///
    /// # Safety
    ///
    /// As for [`RawRing::new`], with `size` bytes.
    pub const unsafe fn from_raw_parts(
        base: NonNull<u8>,
        size: usize,
    ) -> Result<RawRing, RingError> {
        if !size.is_power_of_two() || size > crate::spsc::MAX_RING_SIZE {
            return Err(RingError::InvalidSize { size });
        }
        Ok(RawRing { base, size })
    }
}

impl fmt::Debug for RawRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRing")
            .field("base", &self.base)
            .field("size", &self.size)
            .finish()
    }
}

// SAFETY: the memory is valid per `new`'s contract and, within this process, accessed only by
// the single producer or consumer that owns this value; moving that owner to another thread
// moves the only local accessor with it.
unsafe impl Send for RawRing {}

// SAFETY: `size` is fixed at construction to a power of two (`RingOrder::size` or checked in
// `from_raw_parts`); the copies below touch exactly `offset..offset + len`.
unsafe impl RingMemory for RawRing {
    #[inline(always)]
    fn size(&self) -> usize {
        self.size
    }

    #[inline(always)]
    unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
        debug_assert!(offset <= self.size && src.len() <= self.size - offset);
        let dst = self.base.as_ptr().wrapping_add(offset);
        // SAFETY: the caller guarantees `offset + src.len() <= size`, so `dst` and the
        // `src.len()` bytes after it lie inside the ring, which `new`'s contract keeps valid
        // for writes. `src` is a Rust slice, so it is either private memory or (through the
        // `unsafe` trusted-peer views) readable bytes owned by a consumer, which the ring
        // protocol keeps disjoint from the free bytes a producer writes: no overlap.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    }

    #[inline(always)]
    unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        debug_assert!(offset <= self.size && dst.len() <= self.size - offset);
        let src = self.base.as_ptr().wrapping_add(offset);
        // SAFETY: the caller guarantees `offset + dst.len() <= size`: the source lies inside
        // the ring (valid for reads by `new`'s contract); `dst` is a private `&mut` buffer and
        // so cannot overlap it. A concurrent write by the peer domain can only change which
        // bytes we copy, never where we copy from or to.
        unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    }
}

// SAFETY: `base` is the start of the `size` bytes `new`'s contract keeps valid for reads and
// writes while `self` lives; the copies above use exactly that range.
unsafe impl ContiguousRingMemory for RawRing {
    #[inline(always)]
    fn base(&self) -> NonNull<u8> {
        self.base
    }
}
