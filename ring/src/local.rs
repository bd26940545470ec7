//! An in-process ring that owns its state: for in-process pipelines, doc examples, unit
//! tests and the loom models.
//!
//! All of its atomics and cells come from [`crate::sync`], so under `--cfg loom` they are
//! loom's and the models in `ring/tests/loom.rs` drive the very [`Producer`]/[`Consumer`]
//! code that runs over Xen-shared pages.

use core::fmt;
use core::ops::Deref;
#[cfg(not(loom))]
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use crate::error::IndexName;
use crate::shared::{FlagCell, IndexCell, RingMemory};
use crate::spsc::{Consumer, Producer};
use crate::sync::{AtomicBool, AtomicU8, AtomicU32, UnsafeCell};

/// Keeps a field on its own pair of cache lines (the x86 prefetcher pulls lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A ring of `N` bytes (a power of two) with its indices and notify bytes, all in one value.
///
/// Split it once into a [`Producer`] and a [`Consumer`] with [`LocalRing::split`], through
/// any shared pointer to it (`&LocalRing`, `Arc<LocalRing>`). Meant for small rings: the bytes
/// are inline, so a large `N` belongs in a `Box`.
///
/// ```
/// use std::sync::Arc;
/// use vchan_ring::LocalRing;
///
/// let ring = Arc::new(LocalRing::<1024>::new());
/// let (mut tx, mut rx) = LocalRing::split(ring.clone()).expect("first split");
/// assert!(LocalRing::split(ring.clone()).is_none()); // single producer, single consumer
/// let reader = std::thread::spawn(move || {
///     let mut got = Vec::new();
///     let mut buf = [0u8; 100];
///     while got.len() < 10_000 {
///         let n = rx.read(&mut buf).unwrap();
///         got.extend_from_slice(&buf[..n]);
///         if n == 0 { std::thread::yield_now(); }
///     }
///     got
/// });
/// let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
/// let mut sent = 0;
/// while sent < data.len() {
///     sent += tx.write(&data[sent..]).unwrap();
///     std::thread::yield_now();
/// }
/// assert_eq!(reader.join().unwrap(), data);
/// ```
pub struct LocalRing<const N: usize> {
    prod: Padded<AtomicU32>,
    cons: Padded<AtomicU32>,
    /// Requests the producer honours (the consumer sets `NOTIFY_WRITE` here).
    producer_notify: Padded<AtomicU8>,
    /// Requests the consumer honours (the producer sets `NOTIFY_READ` here).
    consumer_notify: Padded<AtomicU8>,
    split: AtomicBool,
    bytes: [UnsafeCell<u8>; N],
}

// SAFETY: the only non-`Sync` part is `bytes`. They are accessed only by the single producer
// and single consumer that `split` hands out once, and the ring protocol gives each byte to
// exactly one of them at a time, the hand-over ordered by release/acquire on `prod`/`cons`.
unsafe impl<const N: usize> Sync for LocalRing<N> {}

impl<const N: usize> LocalRing<N> {
    /// An empty ring. `N` must be a power of two (checked at compile time).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        const { assert!(N.is_power_of_two() && N <= crate::spsc::MAX_RING_SIZE) };
        LocalRing {
            prod: Padded(AtomicU32::new(0)),
            cons: Padded(AtomicU32::new(0)),
            producer_notify: Padded(AtomicU8::new(0)),
            consumer_notify: Padded(AtomicU8::new(0)),
            split: AtomicBool::new(false),
            bytes: [const { UnsafeCell::new(0) }; N],
        }
    }

    /// An empty ring. `N` must be a power of two (checked at compile time).
    #[cfg(loom)]
    pub fn new() -> Self {
        const { assert!(N.is_power_of_two() && N <= crate::spsc::MAX_RING_SIZE) };
        LocalRing {
            prod: Padded(AtomicU32::new(0)),
            cons: Padded(AtomicU32::new(0)),
            producer_notify: Padded(AtomicU8::new(0)),
            consumer_notify: Padded(AtomicU8::new(0)),
            split: AtomicBool::new(false),
            bytes: core::array::from_fn(|_| UnsafeCell::new(0)),
        }
    }

    /// The producer and consumer of the ring behind `ring`; `None` if it was already split.
    #[allow(clippy::type_complexity)]
    pub fn split<P>(ring: P) -> Option<(LocalProducer<P>, LocalConsumer<P>)>
    where
        P: Deref<Target = Self> + Clone,
    {
        if ring.split.swap(true, Ordering::AcqRel) {
            return None;
        }
        let producer = Producer::new(
            LocalBytes(ring.clone()),
            LocalIndex(ring.clone(), IndexName::Prod),
            LocalIndex(ring.clone(), IndexName::Cons),
        );
        let consumer = Consumer::new(
            LocalBytes(ring.clone()),
            LocalIndex(ring.clone(), IndexName::Prod),
            LocalIndex(ring, IndexName::Cons),
        );
        // A fresh ring has both indices at 0 and a power-of-two size, which cannot fail.
        match (producer, consumer) {
            (Ok(p), Ok(c)) => Some((p, c)),
            _ => None,
        }
    }

    /// The notify byte the producer honours: pass it to
    /// [`Producer::publish_and_check`] and [`Consumer::available_or_request`].
    pub fn producer_notify<P: Deref<Target = Self>>(ring: P) -> LocalFlag<P> {
        LocalFlag(ring, FlagOwner::Producer)
    }

    /// The notify byte the consumer honours: pass it to [`Consumer::publish_and_check`] and
    /// [`Producer::space_or_request`].
    pub fn consumer_notify<P: Deref<Target = Self>>(ring: P) -> LocalFlag<P> {
        LocalFlag(ring, FlagOwner::Consumer)
    }
}

#[cfg(not(loom))]
impl<const N: usize> Default for LocalRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for LocalRing<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRing")
            .field("size", &N)
            .field("prod", &self.prod.0)
            .field("cons", &self.cons.0)
            .finish_non_exhaustive()
    }
}

/// The producer of a [`LocalRing`] reached through `P`.
pub type LocalProducer<P> = Producer<LocalBytes<P>, LocalIndex<P>>;
/// The consumer of a [`LocalRing`] reached through `P`.
pub type LocalConsumer<P> = Consumer<LocalBytes<P>, LocalIndex<P>>;

/// One index of a [`LocalRing`].
#[derive(Clone)]
pub struct LocalIndex<P>(P, IndexName);

impl<P, const N: usize> IndexCell for LocalIndex<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    #[inline(always)]
    fn load(&self, order: Ordering) -> u32 {
        match self.1 {
            IndexName::Prod => self.0.prod.0.load(order),
            IndexName::Cons => self.0.cons.0.load(order),
        }
    }

    #[inline(always)]
    fn store(&self, value: u32, order: Ordering) {
        match self.1 {
            IndexName::Prod => self.0.prod.0.store(value, order),
            IndexName::Cons => self.0.cons.0.store(value, order),
        }
    }
}

impl<P> fmt::Debug for LocalIndex<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LocalIndex").field(&self.1).finish()
    }
}

#[derive(Clone, Copy, Debug)]
enum FlagOwner {
    Producer,
    Consumer,
}

/// One notify byte of a [`LocalRing`].
#[derive(Clone)]
pub struct LocalFlag<P>(P, FlagOwner);

impl<P, const N: usize> LocalFlag<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    #[inline(always)]
    fn byte(&self) -> &AtomicU8 {
        match self.1 {
            FlagOwner::Producer => &self.0.producer_notify.0,
            FlagOwner::Consumer => &self.0.consumer_notify.0,
        }
    }
}

impl<P, const N: usize> FlagCell for LocalFlag<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    #[inline(always)]
    fn fetch_or(&self, bits: u8, order: Ordering) -> u8 {
        self.byte().fetch_or(bits, order)
    }

    #[inline(always)]
    fn fetch_and(&self, mask: u8, order: Ordering) -> u8 {
        self.byte().fetch_and(mask, order)
    }

    #[inline(always)]
    fn load(&self, order: Ordering) -> u8 {
        self.byte().load(order)
    }
}

impl<P> fmt::Debug for LocalFlag<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LocalFlag").field(&self.1).finish()
    }
}

/// The bytes of a [`LocalRing`].
pub struct LocalBytes<P>(P);

impl<P> fmt::Debug for LocalBytes<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalBytes")
    }
}

#[cfg(not(loom))]
impl<P, const N: usize> LocalBytes<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    #[inline(always)]
    fn base_ptr(&self) -> *mut u8 {
        crate::shared::ContiguousRingMemory::base(self).as_ptr()
    }
}

// SAFETY: `size` is the constant `N`, a power of two (checked in `LocalRing::new`); the copies
// below touch exactly `offset..offset + len` of `bytes`.
#[cfg(not(loom))]
unsafe impl<P, const N: usize> RingMemory for LocalBytes<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    #[inline(always)]
    fn size(&self) -> usize {
        N
    }

    #[inline(always)]
    unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
        let dst = self.base_ptr().wrapping_add(offset);
        // SAFETY: the caller keeps `offset + src.len() <= N` and owns those bytes (ring
        // protocol), so they are in `bytes` and not accessed concurrently; `src` cannot overlap
        // them (it is not obtained from this ring's free bytes).
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    }

    #[inline(always)]
    unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        let src = self.base_ptr().wrapping_add(offset);
        // SAFETY: the caller keeps `offset + dst.len() <= N` and owns those bytes; `dst` is a
        // `&mut` and so cannot overlap bytes the consumer owns.
        unsafe { core::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    }
}

// SAFETY: `bytes` is `N` contiguous bytes living as long as the `LocalRing` that `P` keeps
// alive, and the copies above use exactly them.
#[cfg(not(loom))]
unsafe impl<P, const N: usize> crate::shared::ContiguousRingMemory for LocalBytes<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    #[inline(always)]
    fn base(&self) -> NonNull<u8> {
        // `UnsafeCell<u8>` is `repr(transparent)` over `u8`: the array is `N` contiguous bytes
        // that may be written through a pointer derived from a shared reference.
        NonNull::from(&self.0.bytes).cast::<u8>()
    }
}

// SAFETY: as the non-loom implementation, byte by byte through loom's cells (which check that
// the ring protocol really orders every access).
#[cfg(loom)]
unsafe impl<P, const N: usize> RingMemory for LocalBytes<P>
where
    P: Deref<Target = LocalRing<N>>,
{
    fn size(&self) -> usize {
        N
    }

    unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
        for (cell, &b) in self.0.bytes[offset..offset + src.len()].iter().zip(src) {
            // SAFETY: the producer owns these bytes (ring protocol); loom verifies it.
            cell.with_mut(|p| unsafe { *p = b });
        }
    }

    unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        for (cell, d) in self.0.bytes[offset..offset + dst.len()].iter().zip(dst) {
            // SAFETY: the consumer owns these bytes (ring protocol); loom verifies it.
            *d = cell.with(|p| unsafe { *p });
        }
    }
}
