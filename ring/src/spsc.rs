//! The single-producer single-consumer byte ring: [`Producer`] and [`Consumer`] halves.
//!
//! Each half owns its own index privately (`tail` for the producer, `head` for the consumer)
//! and never reads it back from shared memory; it writes it to shared memory to publish. It
//! caches the peer's index and loads the shared one (acquire) only when the cached value
//! cannot satisfy the request. Every peer-written index is loaded once, checked against the
//! only range an honest peer could have written, and then used from the local copy; an
//! impossible value poisons the half with [`RingError::Corrupt`].
//!
//! Positions are `index & (size - 1)`; copies are at most two `copy_nonoverlapping` calls
//! (before and after the wrap). Staging operations (`stage`, `reserve`+`commit`, `take`,
//! `peek`+`consume`) only move the private index; `publish` makes them visible with one
//! release store. `write`/`read` and friends are "stage, then publish".

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use crate::error::{Corruption, IndexName, RingError};
use crate::layout::{NOTIFY_READ, NOTIFY_WRITE};
use crate::notify;
use crate::shared::{ContiguousRingMemory, FlagCell, IndexCell, RawIndex, RawRing, RingMemory};

/// Largest ring the generic core accepts (2 GiB): free-running u32 indices must be able to
/// tell "full" from "corrupt".
pub const MAX_RING_SIZE: usize = 1 << 31;

#[inline(always)]
fn checked_size(size: usize) -> Result<u32, RingError> {
    if size.is_power_of_two() && size <= MAX_RING_SIZE {
        Ok(size as u32)
    } else {
        Err(RingError::InvalidSize { size })
    }
}

/// `len` clamped to `cap` (the ring size), as u32.
#[inline(always)]
fn clamp(len: usize, cap: u32) -> u32 {
    if len >= cap as usize { cap } else { len as u32 }
}

/// The two pieces (start offset, length) of `len` bytes starting at ring position `pos`.
#[inline(always)]
fn pieces(pos: u32, len: u32, size: u32) -> ((usize, usize), usize) {
    let first = len.min(size - pos);
    ((pos as usize, first as usize), (len - first) as usize)
}

/// The writing half of a ring.
///
/// `M` is where the bytes live and `X` where the two shared indices live: [`RawRing`] and
/// [`RawIndex`] for Xen-shared pages (see [`ControlPage::producer`](crate::ControlPage::producer)),
/// [`LocalRing`](crate::LocalRing) handles in-process and in loom models.
///
/// ```
/// use vchan_ring::{LocalRing, RingError};
///
/// let ring = LocalRing::<8>::new();
/// let (mut tx, mut rx) = LocalRing::split(&ring).unwrap();
/// assert_eq!(tx.write(b"hello, world")?, 8); // partial: the ring holds 8 bytes
/// assert!(matches!(tx.write_all(b"!"), Err(RingError::NoSpace { requested: 1, free: 0 })));
/// let mut buf = [0; 5];
/// rx.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"hello");
/// // Batching: stage several writes, publish once.
/// tx.stage_all(b"ab")?;
/// tx.stage_all(b"c")?;
/// assert_eq!(rx.available()?, 3); // ", w" — the staged bytes are not visible yet
/// assert!(tx.publish());
/// assert_eq!(rx.available()?, 6);
/// # Ok::<(), RingError>(())
/// ```
#[repr(align(128))] // keep this half's private state off the other half's cache lines
pub struct Producer<M = RawRing, X = RawIndex> {
    /// Private producer index: everything before it is written (staged or published).
    tail: u32,
    /// Value last stored to the shared `prod`.
    published: u32,
    /// Last validated value of the shared `cons`.
    cons_cache: u32,
    size: u32,
    mask: u32,
    poisoned: Option<Corruption>,
    mem: M,
    prod: X,
    cons: X,
}

impl<M: RingMemory, X: IndexCell> Producer<M, X> {
    /// Builds the producer of a ring whose bytes are `mem`, whose producer index is `prod` and
    /// consumer index `cons`. Reads both shared indices once: our own (to resume where a
    /// previous producer stopped; 0 on a fresh page) and the peer's, which must be consistent.
    pub fn new(mem: M, prod: X, cons: X) -> Result<Self, RingError> {
        let size = checked_size(mem.size())?;
        let p = prod.load(Ordering::Relaxed);
        let c = cons.load(Ordering::Acquire);
        if p.wrapping_sub(c) > size {
            return Err(RingError::Corrupt(Corruption {
                index: IndexName::Cons,
                observed: c,
                low: p.wrapping_sub(size),
                high: p,
                ring_size: size,
            }));
        }
        Ok(Producer {
            tail: p,
            published: p,
            cons_cache: c,
            size,
            mask: size - 1,
            poisoned: None,
            mem,
            prod,
            cons,
        })
    }

    /// Ring size in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.size as usize
    }

    /// Bytes staged but not yet published.
    #[inline]
    pub fn staged(&self) -> usize {
        self.tail.wrapping_sub(self.published) as usize
    }

    /// The corruption this half has seen, if any (then every operation fails with it).
    #[inline]
    pub fn corruption(&self) -> Option<Corruption> {
        self.poisoned
    }

    #[inline(always)]
    fn check(&self) -> Result<(), RingError> {
        match self.poisoned {
            None => Ok(()),
            Some(c) => Err(RingError::Corrupt(c)),
        }
    }

    #[inline(always)]
    fn cached_free(&self) -> u32 {
        self.size - self.tail.wrapping_sub(self.cons_cache)
    }

    /// Loads the shared `cons` once, validates it, and returns the free space.
    ///
    /// An honest consumer's index only moves forward and never passes what we published, so
    /// it lies in `cons_cache..=published`.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let c = self.cons.load(Ordering::Acquire);
        if c.wrapping_sub(self.cons_cache) > self.published.wrapping_sub(self.cons_cache) {
            return Err(self.poison(Corruption {
                index: IndexName::Cons,
                observed: c,
                low: self.cons_cache,
                high: self.published,
                ring_size: self.size,
            }));
        }
        self.cons_cache = c;
        Ok(self.cached_free())
    }

    #[cold]
    fn poison(&mut self, c: Corruption) -> RingError {
        self.poisoned = Some(c);
        RingError::Corrupt(c)
    }

    /// Free space, from the cache when it has `want` bytes, else from the shared index.
    #[inline(always)]
    fn free_for(&mut self, want: u32) -> Result<u32, RingError> {
        let free = self.cached_free();
        if free >= want {
            Ok(free)
        } else {
            self.refresh()
        }
    }

    /// Copies `src` to the ring at our private index.
    ///
    /// # Safety
    ///
    /// `src.len() <= self.cached_free()`: the target bytes are free, so the ring protocol
    /// gives them to us (the consumer finished reading them before it published the `cons`
    /// we acquired).
    #[inline(always)]
    unsafe fn copy_in_at_tail(&self, src: &[u8]) {
        let ((pos, first), second) = pieces(self.tail & self.mask, src.len() as u32, self.size);
        let (a, b) = src.split_at(first);
        // SAFETY: `pos < size` and `first <= size - pos`, so the piece is in bounds; the bytes
        // are free (caller's contract), so no other accessor in this process uses them.
        unsafe { self.mem.copy_in(pos, a) };
        if second != 0 {
            // SAFETY: `second = len - (size - pos) <= pos` since `len <= free <= size`: the
            // wrapped piece `0..second` is in bounds and ends before the first piece; the
            // bytes are free as above.
            unsafe { self.mem.copy_in(0, b) };
        }
    }

    /// Free space now: loads the shared consumer index (acquire).
    pub fn space(&mut self) -> Result<usize, RingError> {
        self.check()?;
        Ok(self.refresh()? as usize)
    }

    /// Copies as much of `src` as fits (possibly 0 bytes) without publishing it.
    #[inline]
    pub fn stage(&mut self, src: &[u8]) -> Result<usize, RingError> {
        self.check()?;
        let want = clamp(src.len(), self.size);
        if want == 0 {
            return Ok(0);
        }
        let n = want.min(self.free_for(want)?);
        // SAFETY: `n <= free` just established.
        unsafe { self.copy_in_at_tail(&src[..n as usize]) };
        self.tail = self.tail.wrapping_add(n);
        Ok(n as usize)
    }

    /// Copies all of `src` or nothing ([`RingError::NoSpace`], [`RingError::TooLarge`]),
    /// without publishing it.
    #[inline]
    pub fn stage_all(&mut self, src: &[u8]) -> Result<(), RingError> {
        self.check()?;
        if src.len() > self.size as usize {
            return Err(RingError::TooLarge {
                requested: src.len(),
                capacity: self.size as usize,
            });
        }
        let want = src.len() as u32;
        let free = self.free_for(want)?;
        if free < want {
            return Err(RingError::NoSpace {
                requested: src.len(),
                free: free as usize,
            });
        }
        // SAFETY: `src.len() <= free` just established.
        unsafe { self.copy_in_at_tail(src) };
        self.tail = self.tail.wrapping_add(want);
        Ok(())
    }

    /// Writes as much of `src` as fits and publishes: C `libxenvchan_write` without blocking.
    #[inline]
    pub fn write(&mut self, src: &[u8]) -> Result<usize, RingError> {
        let n = self.stage(src)?;
        self.publish();
        Ok(n)
    }

    /// Writes all of `src` or nothing, and publishes: C `libxenvchan_send` without blocking.
    #[inline]
    pub fn write_all(&mut self, src: &[u8]) -> Result<(), RingError> {
        self.stage_all(src)?;
        self.publish();
        Ok(())
    }

    /// Reserves exactly `len` free bytes for writing in place (at most two pieces across the
    /// wrap), or fails with [`RingError::NoSpace`] / [`RingError::TooLarge`].
    pub fn reserve(&mut self, len: usize) -> Result<WriteRegion<'_, M, X>, RingError> {
        self.check()?;
        if len > self.size as usize {
            return Err(RingError::TooLarge {
                requested: len,
                capacity: self.size as usize,
            });
        }
        let free = self.free_for(len as u32)?;
        if (free as usize) < len {
            return Err(RingError::NoSpace {
                requested: len,
                free: free as usize,
            });
        }
        Ok(WriteRegion {
            len: len as u32,
            producer: self,
        })
    }

    /// Reserves up to `max` free bytes (possibly none) for writing in place.
    pub fn reserve_up_to(&mut self, max: usize) -> Result<WriteRegion<'_, M, X>, RingError> {
        self.check()?;
        let want = clamp(max, self.size);
        let free = if want == 0 { 0 } else { self.free_for(want)? };
        Ok(WriteRegion {
            len: want.min(free),
            producer: self,
        })
    }

    /// Marks `n` bytes after the private index as written (after filling a reservation),
    /// without publishing them. Fails if `n` exceeds the free space last seen.
    #[inline]
    pub fn commit(&mut self, n: usize) -> Result<(), RingError> {
        self.check()?;
        let free = self.cached_free();
        if n > free as usize {
            return Err(RingError::CommitBeyondFree {
                requested: n,
                free: free as usize,
            });
        }
        self.tail = self.tail.wrapping_add(n as u32);
        Ok(())
    }

    /// Makes every staged byte visible to the consumer with one release store of `prod`.
    /// Returns whether there was anything new to publish.
    ///
    /// After publishing, the peer may be waiting for data: call
    /// [`publish_and_check`](Producer::publish_and_check) instead, or
    /// [`take_notify_request`](crate::take_notify_request) with [`NOTIFY_WRITE`] yourself.
    #[inline]
    pub fn publish(&mut self) -> bool {
        if self.tail == self.published {
            return false;
        }
        self.prod.store(self.tail, Ordering::Release);
        self.published = self.tail;
        true
    }

    /// [`publish`](Producer::publish), then clear-and-test [`NOTIFY_WRITE`] in `own` (the notify
    /// byte this side honours): returns whether the peer asked to be told about new data,
    /// i.e. whether the caller must signal the event channel.
    ///
    /// The test happens even if nothing new was staged, because an earlier
    /// [`write`](Producer::write) may have published data the peer is waiting for: call this
    /// once after a batch of `stage`/`write`/`commit` calls.
    #[inline]
    pub fn publish_and_check<F: FlagCell + ?Sized>(&mut self, own: &F) -> bool {
        self.publish();
        notify::take_notify_request(own, NOTIFY_WRITE)
    }

    /// Free space, with a wake-up guarantee: if fewer than `want` bytes (clamped to the ring
    /// size) are free, sets [`NOTIFY_READ`] in `peer` (the notify byte the consumer honours)
    /// and looks again. If the result is still short, the consumer will signal the event
    /// channel after it next frees space, so the caller may sleep on it.
    pub fn space_or_request<F: FlagCell + ?Sized>(
        &mut self,
        want: usize,
        peer: &F,
    ) -> Result<usize, RingError> {
        self.check()?;
        let want = clamp(want, self.size);
        let free = self.free_for(want)?;
        if free >= want {
            return Ok(free as usize);
        }
        notify::request_notify(peer, NOTIFY_READ);
        Ok(self.refresh()? as usize)
    }
}

impl<M, X> fmt::Debug for Producer<M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("size", &self.size)
            .field("tail", &self.tail)
            .field("published", &self.published)
            .field("cons_cache", &self.cons_cache)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Free ring bytes reserved for writing in place; see [`Producer::reserve`].
///
/// The bytes are reached through copies ([`WriteRegion::copy_from`]) or, for contiguous
/// memory, as raw pieces ([`WriteRegion::as_raw_parts`]) for `read(2)`/`readv(2)` straight
/// into the ring. Nothing is visible to the consumer until [`WriteRegion::commit`] and a
/// publish.
pub struct WriteRegion<'a, M, X> {
    producer: &'a mut Producer<M, X>,
    len: u32,
}

impl<M: RingMemory, X: IndexCell> WriteRegion<'_, M, X> {
    /// Reserved bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether nothing was reserved.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The two pieces `((offset, len), len)`: the second piece starts at ring offset 0.
    #[inline]
    fn pieces(&self) -> ((usize, usize), usize) {
        let p = &*self.producer;
        pieces(p.tail & p.mask, self.len, p.size)
    }

    /// Copies `src` into the region starting `offset` bytes in (handling the wrap); copies
    /// only what fits and returns the number of bytes copied.
    #[inline]
    pub fn copy_from(&mut self, offset: usize, src: &[u8]) -> usize {
        let len = self.len as usize;
        if offset >= len {
            return 0;
        }
        let n = src.len().min(len - offset);
        let p = &*self.producer;
        let start = p.tail.wrapping_add(offset as u32);
        let ((pos, first), _) = pieces(start & p.mask, n as u32, p.size);
        let (a, b) = src[..n].split_at(first);
        // SAFETY: `pos..pos + first` is inside the ring (`pieces`), and inside this
        // reservation, whose bytes are free and so belong to the producer (we hold it `&mut`).
        unsafe { p.mem.copy_in(pos, a) };
        if !b.is_empty() {
            // SAFETY: the wrapped rest `0..b.len()` is inside the reservation's second piece.
            unsafe { p.mem.copy_in(0, b) };
        }
        n
    }

    /// Commits the first `n` reserved bytes (not published yet).
    pub fn commit(self, n: usize) -> Result<(), RingError> {
        if n > self.len as usize {
            return Err(RingError::CommitBeyondFree {
                requested: n,
                free: self.len as usize,
            });
        }
        self.producer.tail = self.producer.tail.wrapping_add(n as u32);
        Ok(())
    }

    /// Commits the whole region (not published yet).
    pub fn commit_all(self) {
        self.producer.tail = self.producer.tail.wrapping_add(self.len);
    }
}

impl<M: ContiguousRingMemory, X: IndexCell> WriteRegion<'_, M, X> {
    /// The region as up to two raw `(pointer, length)` pieces (the second has length 0 unless
    /// the region wraps), for `readv(2)` or hand-written frames. The pointers stay valid while
    /// the ring memory does; writing through them is the caller's `unsafe`. The peer may also
    /// write this memory: never read back from it what you need to trust.
    pub fn as_raw_parts(&self) -> [(NonNull<u8>, usize); 2] {
        let ((pos, first), second) = self.pieces();
        let base = self.producer.mem.base();
        // SAFETY: `pos < size` (`pieces` masks it), and `ContiguousRingMemory` guarantees
        // `base..base + size` is one valid run of memory, so the offset stays inside it.
        let first_ptr = unsafe { base.add(pos) };
        [(first_ptr, first), (base, second)]
    }

    /// The region as two mutable slices.
    ///
    /// # Safety
    ///
    /// A slice into shared memory: the caller asserts the peer does not write these bytes
    /// while the slices live (a trusted peer, or memory not shared at all). A hostile peer
    /// writing them concurrently is a data race.
    pub unsafe fn as_mut_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        let [(a, alen), (b, blen)] = self.as_raw_parts();
        // SAFETY: `a..a + alen` is the first piece of this reservation: inside the ring memory
        // (valid by `ContiguousRingMemory`), free, hence ours while `self` is borrowed mutably;
        // the caller vouches that the peer does not write it.
        let first = unsafe { core::slice::from_raw_parts_mut(a.as_ptr(), alen) };
        // SAFETY: as above for the second piece, which does not overlap the first.
        let second = unsafe { core::slice::from_raw_parts_mut(b.as_ptr(), blen) };
        (first, second)
    }
}

impl<M, X> fmt::Debug for WriteRegion<'_, M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteRegion")
            .field("start", &self.producer.tail)
            .field("len", &self.len)
            .finish()
    }
}

/// The reading half of a ring.
///
/// ```
/// use vchan_ring::{LocalRing, RingError};
///
/// let ring = LocalRing::<16>::new();
/// let (mut tx, mut rx) = LocalRing::split(&ring).unwrap();
/// tx.write_all(b"frame-1frame-2")?;
/// // Zero-copy style: peek what is readable, copy out a header, consume a frame.
/// let mut region = rx.peek(1)?;
/// assert_eq!(region.len(), 14);
/// let mut head = [0u8; 7];
/// region.copy_to(0, &mut head);
/// assert_eq!(&head, b"frame-1");
/// region.consume(7)?;
/// rx.publish(); // give the space back
/// assert!(matches!(rx.read_exact(&mut [0; 8]), Err(RingError::NoData { requested: 8, available: 7 })));
/// # Ok::<(), RingError>(())
/// ```
#[repr(align(128))] // keep this half's private state off the other half's cache lines
pub struct Consumer<M = RawRing, X = RawIndex> {
    /// Private consumer index: everything before it is consumed (staged or published).
    head: u32,
    /// Value last stored to the shared `cons`.
    released: u32,
    /// Last validated value of the shared `prod`.
    prod_cache: u32,
    size: u32,
    mask: u32,
    poisoned: Option<Corruption>,
    mem: M,
    prod: X,
    cons: X,
}

impl<M: RingMemory, X: IndexCell> Consumer<M, X> {
    /// Builds the consumer of a ring whose bytes are `mem`, producer index `prod`, consumer
    /// index `cons`. Reads both shared indices once (our own to resume; the peer's, which must
    /// be consistent with it).
    pub fn new(mem: M, prod: X, cons: X) -> Result<Self, RingError> {
        let size = checked_size(mem.size())?;
        let c = cons.load(Ordering::Relaxed);
        let p = prod.load(Ordering::Acquire);
        if p.wrapping_sub(c) > size {
            return Err(RingError::Corrupt(Corruption {
                index: IndexName::Prod,
                observed: p,
                low: c,
                high: c.wrapping_add(size),
                ring_size: size,
            }));
        }
        Ok(Consumer {
            head: c,
            released: c,
            prod_cache: p,
            size,
            mask: size - 1,
            poisoned: None,
            mem,
            prod,
            cons,
        })
    }

    /// Ring size in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.size as usize
    }

    /// Bytes consumed but not yet published (their space not yet given back).
    #[inline]
    pub fn unreleased(&self) -> usize {
        self.head.wrapping_sub(self.released) as usize
    }

    /// The corruption this half has seen, if any (then every operation fails with it).
    #[inline]
    pub fn corruption(&self) -> Option<Corruption> {
        self.poisoned
    }

    #[inline(always)]
    fn check(&self) -> Result<(), RingError> {
        match self.poisoned {
            None => Ok(()),
            Some(c) => Err(RingError::Corrupt(c)),
        }
    }

    #[inline(always)]
    fn cached_available(&self) -> u32 {
        self.prod_cache.wrapping_sub(self.head)
    }

    /// Loads the shared `prod` once, validates it, and returns the readable bytes.
    ///
    /// An honest producer's index only moves forward and never more than `size` past the
    /// `cons` we published, so it lies in `prod_cache..=released + size`.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let p = self.prod.load(Ordering::Acquire);
        let limit = self.released.wrapping_add(self.size);
        if p.wrapping_sub(self.prod_cache) > limit.wrapping_sub(self.prod_cache) {
            return Err(self.poison(Corruption {
                index: IndexName::Prod,
                observed: p,
                low: self.prod_cache,
                high: limit,
                ring_size: self.size,
            }));
        }
        self.prod_cache = p;
        Ok(self.cached_available())
    }

    #[cold]
    fn poison(&mut self, c: Corruption) -> RingError {
        self.poisoned = Some(c);
        RingError::Corrupt(c)
    }

    #[inline(always)]
    fn available_for(&mut self, want: u32) -> Result<u32, RingError> {
        let avail = self.cached_available();
        if avail >= want {
            Ok(avail)
        } else {
            self.refresh()
        }
    }

    /// Copies ring bytes at our private index into `dst`.
    ///
    /// # Safety
    ///
    /// `dst.len() <= self.cached_available()`: the bytes were published by the producer
    /// before the `prod` we acquired, and are ours until we publish a `cons` past them.
    #[inline(always)]
    unsafe fn copy_out_at_head(&self, dst: &mut [u8]) {
        let ((pos, first), second) = pieces(self.head & self.mask, dst.len() as u32, self.size);
        let (a, b) = dst.split_at_mut(first);
        // SAFETY: `pos..pos + first` is in bounds (`pieces`); the bytes are readable and thus
        // ours (caller's contract): no other accessor in this process writes them.
        unsafe { self.mem.copy_out(pos, a) };
        if second != 0 {
            // SAFETY: the wrapped piece `0..second` has `second <= pos` (len <= size), so it is
            // in bounds; readable and ours as above.
            unsafe { self.mem.copy_out(0, b) };
        }
    }

    /// Readable bytes now: loads the shared producer index (acquire).
    pub fn available(&mut self) -> Result<usize, RingError> {
        self.check()?;
        Ok(self.refresh()? as usize)
    }

    /// Copies out as many bytes as are readable, up to `dst.len()` (possibly 0), without
    /// giving their space back.
    #[inline]
    pub fn take(&mut self, dst: &mut [u8]) -> Result<usize, RingError> {
        self.check()?;
        let want = clamp(dst.len(), self.size);
        if want == 0 {
            return Ok(0);
        }
        let n = want.min(self.available_for(want)?);
        // SAFETY: `n <= available` just established.
        unsafe { self.copy_out_at_head(&mut dst[..n as usize]) };
        self.head = self.head.wrapping_add(n);
        Ok(n as usize)
    }

    /// Copies out exactly `dst.len()` bytes or nothing ([`RingError::NoData`],
    /// [`RingError::TooLarge`]), without giving their space back.
    #[inline]
    pub fn take_exact(&mut self, dst: &mut [u8]) -> Result<(), RingError> {
        self.check()?;
        if dst.len() > self.size as usize {
            return Err(RingError::TooLarge {
                requested: dst.len(),
                capacity: self.size as usize,
            });
        }
        let want = dst.len() as u32;
        let avail = self.available_for(want)?;
        if avail < want {
            return Err(RingError::NoData {
                requested: dst.len(),
                available: avail as usize,
            });
        }
        // SAFETY: `dst.len() <= available` just established.
        unsafe { self.copy_out_at_head(dst) };
        self.head = self.head.wrapping_add(want);
        Ok(())
    }

    /// Reads what is readable, up to `dst.len()`, and publishes: C `libxenvchan_read`
    /// without blocking.
    #[inline]
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, RingError> {
        let n = self.take(dst)?;
        self.publish();
        Ok(n)
    }

    /// Reads exactly `dst.len()` bytes or nothing, and publishes: C `libxenvchan_recv`
    /// without blocking.
    #[inline]
    pub fn read_exact(&mut self, dst: &mut [u8]) -> Result<(), RingError> {
        self.take_exact(dst)?;
        self.publish();
        Ok(())
    }

    /// Everything readable, as a region to copy from or point into; loads the shared producer
    /// index only if fewer than `want` bytes are known to be readable. The region may be
    /// shorter than `want` (even empty) or longer.
    pub fn peek(&mut self, want: usize) -> Result<ReadRegion<'_, M, X>, RingError> {
        self.check()?;
        let want = clamp(want, self.size);
        let len = if want == 0 {
            self.cached_available()
        } else {
            self.available_for(want)?
        };
        Ok(ReadRegion {
            len,
            consumer: self,
        })
    }

    /// Marks `n` readable bytes as consumed, without giving their space back. Fails if `n`
    /// exceeds what was last seen readable.
    #[inline]
    pub fn consume(&mut self, n: usize) -> Result<(), RingError> {
        self.check()?;
        let avail = self.cached_available();
        if n > avail as usize {
            return Err(RingError::ConsumeBeyondAvailable {
                requested: n,
                available: avail as usize,
            });
        }
        self.head = self.head.wrapping_add(n as u32);
        Ok(())
    }

    /// Gives the space of every consumed byte back to the producer with one release store of
    /// `cons`. Returns whether there was anything new to publish.
    ///
    /// The producer may be waiting for space: call
    /// [`publish_and_check`](Consumer::publish_and_check) instead, or
    /// [`take_notify_request`](crate::take_notify_request) with [`NOTIFY_READ`] yourself.
    #[inline]
    pub fn publish(&mut self) -> bool {
        if self.head == self.released {
            return false;
        }
        self.cons.store(self.head, Ordering::Release);
        self.released = self.head;
        true
    }

    /// [`publish`](Consumer::publish), then clear-and-test [`NOTIFY_READ`] in `own` (the notify
    /// byte this side honours): returns whether the peer asked to be told about freed space,
    /// i.e. whether the caller must signal the event channel.
    ///
    /// The test happens even if nothing new was consumed, because an earlier
    /// [`read`](Consumer::read) may have published space the peer is waiting for: call this
    /// once after a batch of `take`/`read`/`consume` calls.
    #[inline]
    pub fn publish_and_check<F: FlagCell + ?Sized>(&mut self, own: &F) -> bool {
        self.publish();
        notify::take_notify_request(own, NOTIFY_READ)
    }

    /// Readable bytes, with a wake-up guarantee: if fewer than `want` (clamped to the ring
    /// size) are readable, sets [`NOTIFY_WRITE`] in `peer` (the notify byte the producer
    /// honours) and looks again. If the result is still short, the producer will signal the
    /// event channel after it next publishes, so the caller may sleep on it.
    pub fn available_or_request<F: FlagCell + ?Sized>(
        &mut self,
        want: usize,
        peer: &F,
    ) -> Result<usize, RingError> {
        self.check()?;
        let want = clamp(want, self.size);
        let avail = self.available_for(want)?;
        if avail >= want {
            return Ok(avail as usize);
        }
        notify::request_notify(peer, NOTIFY_WRITE);
        Ok(self.refresh()? as usize)
    }
}

impl<M, X> fmt::Debug for Consumer<M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("size", &self.size)
            .field("head", &self.head)
            .field("released", &self.released)
            .field("prod_cache", &self.prod_cache)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Readable ring bytes; see [`Consumer::peek`].
///
/// Read them by copying ([`ReadRegion::copy_to`]: the peer may change shared bytes at any
/// time, so copy what you validate and use only the copy) or as raw pieces
/// ([`ReadRegion::as_raw_parts`], e.g. for `writev(2)`). A borrowing view exists only as the
/// `unsafe` trusted-peer opt-in [`ReadRegion::as_slices`].
pub struct ReadRegion<'a, M, X> {
    consumer: &'a mut Consumer<M, X>,
    len: u32,
}

impl<M: RingMemory, X: IndexCell> ReadRegion<'_, M, X> {
    /// Readable bytes in the region.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether nothing is readable.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn pieces(&self) -> ((usize, usize), usize) {
        let c = &*self.consumer;
        pieces(c.head & c.mask, self.len, c.size)
    }

    /// Copies region bytes starting `offset` bytes in (handling the wrap) into `dst`; copies
    /// only what is there and returns the number of bytes copied.
    #[inline]
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> usize {
        let len = self.len as usize;
        if offset >= len {
            return 0;
        }
        let n = dst.len().min(len - offset);
        let c = &*self.consumer;
        let start = c.head.wrapping_add(offset as u32);
        let ((pos, first), _) = pieces(start & c.mask, n as u32, c.size);
        let (a, b) = dst[..n].split_at_mut(first);
        // SAFETY: `pos..pos + first` is inside the ring (`pieces`) and inside this region,
        // whose bytes are readable and so belong to the consumer (held `&mut` by us).
        unsafe { c.mem.copy_out(pos, a) };
        if !b.is_empty() {
            // SAFETY: the wrapped rest `0..b.len()` lies in the region's second piece.
            unsafe { c.mem.copy_out(0, b) };
        }
        n
    }

    /// Consumes the first `n` bytes of the region (space not given back until a publish).
    pub fn consume(self, n: usize) -> Result<(), RingError> {
        if n > self.len as usize {
            return Err(RingError::ConsumeBeyondAvailable {
                requested: n,
                available: self.len as usize,
            });
        }
        self.consumer.head = self.consumer.head.wrapping_add(n as u32);
        Ok(())
    }

    /// Consumes the whole region (space not given back until a publish).
    pub fn consume_all(self) {
        self.consumer.head = self.consumer.head.wrapping_add(self.len);
    }
}

impl<M: ContiguousRingMemory, X: IndexCell> ReadRegion<'_, M, X> {
    /// The region as up to two raw `(pointer, length)` pieces (the second has length 0 unless
    /// the region wraps), e.g. for `writev(2)`. The bytes are shared with the peer, which may
    /// change them at any time: copy before you validate, never validate in place.
    pub fn as_raw_parts(&self) -> [(NonNull<u8>, usize); 2] {
        let ((pos, first), second) = self.pieces();
        let base = self.consumer.mem.base();
        // SAFETY: `pos < size` (`pieces` masks it), and `ContiguousRingMemory` guarantees
        // `base..base + size` is one valid run of memory, so the offset stays inside it.
        let first_ptr = unsafe { base.add(pos) };
        [(first_ptr, first), (base, second)]
    }

    /// The region as two borrowed slices: the **trusted-peer opt-in** to true zero-copy reads.
    ///
    /// # Safety
    ///
    /// The caller asserts that nothing writes these bytes while the slices live: the peer is
    /// trusted (or the memory is not shared at all). A hostile peer writing them concurrently
    /// makes this a data race and defeats any validation done on the slices (double fetch).
    pub unsafe fn as_slices(&self) -> (&[u8], &[u8]) {
        let [(a, alen), (b, blen)] = self.as_raw_parts();
        // SAFETY: the first piece lies inside the ring memory (valid by
        // `ContiguousRingMemory`) and is readable, so our producer half will not write it
        // until we publish past it (we hold the consumer `&mut`); the caller vouches for the
        // peer.
        let first = unsafe { core::slice::from_raw_parts(a.as_ptr(), alen) };
        // SAFETY: as above for the second piece.
        let second = unsafe { core::slice::from_raw_parts(b.as_ptr(), blen) };
        (first, second)
    }
}

impl<M, X> fmt::Debug for ReadRegion<'_, M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadRegion")
            .field("start", &self.consumer.head)
            .field("len", &self.len)
            .finish()
    }
}
