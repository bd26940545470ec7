//! Fuzz harnesses and test support (hidden; compiled with the `fuzzing` feature or in tests).
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/ring_*.rs` are one-line wrappers around
//! [`hostile`], [`differential`] and [`page`]; the tests at the bottom of this file replay every
//! file of `fuzz/corpus/ring_*/` through the same functions, so the committed corpus runs in
//! plain `cargo test`.
//!
//! [`TestVchan`] is a heap-allocated control page plus ring memory with guard bytes around
//! each ring, reached only through raw pointers so that the ring halves and a simulated peer
//! may both write it.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use crate::control::ControlPage;
use crate::error::{IndexName, RingError};
use crate::geometry::{Geometry, GeometryError, RingPlacement, Role, Side};
use crate::layout::{
    CLI_NOTIFY_OFFSET, GRANTS_OFFSET, LEFT_CONS_OFFSET, LEFT_PROD_OFFSET, NOTIFY_READ,
    NOTIFY_WRITE, PAGE_SIZE, RIGHT_CONS_OFFSET, RIGHT_PROD_OFFSET, SRV_NOTIFY_OFFSET,
    VchanInterface,
};
use crate::shared::{
    ContiguousRingMemory, FlagCell, IndexCell, RawFlag, RawIndex, RawRing, RingMemory,
};
use crate::spsc::{Consumer, Producer};

/// Guard bytes on each side of a ring buffer.
pub const GUARD: usize = 64;

/// Most operations one fuzz input may drive (keeps every input fast).
const MAX_OPS: usize = 2048;

fn guard_byte(i: usize) -> u8 {
    0xA5 ^ (i as u8).wrapping_mul(31)
}

/// Heap memory reached only through raw pointers, with guard bytes on both sides.
#[derive(Debug)]
pub struct RawBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    guard: usize,
    len: usize,
}

impl RawBuf {
    /// `len` zeroed bytes aligned to `align`, between two `guard`-byte guard zones.
    pub fn new(len: usize, align: usize, guard: usize) -> RawBuf {
        let total = len + 2 * guard;
        let Ok(layout) = Layout::from_size_align(total.max(1), align.max(1)) else {
            panic!("bad test buffer layout: {len} bytes aligned to {align}");
        };
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::alloc::handle_alloc_error(layout)
        };
        let buf = RawBuf {
            ptr,
            layout,
            guard,
            len,
        };
        for i in (0..guard).chain(guard + len..total) {
            buf.write_abs(i, guard_byte(i));
        }
        buf
    }

    fn write_abs(&self, i: usize, value: u8) {
        assert!(i < self.layout.size());
        let p = self.ptr.as_ptr().wrapping_add(i);
        // SAFETY: `i` is inside the allocation (asserted), which lives as long as `self`.
        unsafe { p.write_volatile(value) };
    }

    fn read_abs(&self, i: usize) -> u8 {
        assert!(i < self.layout.size());
        let p = self.ptr.as_ptr().wrapping_add(i);
        // SAFETY: as in `write_abs`.
        unsafe { p.read_volatile() }
    }

    /// First byte after the leading guard.
    pub fn body(&self) -> NonNull<u8> {
        // SAFETY: `guard <= total size`, so the offset stays in (or one past) the allocation.
        unsafe { self.ptr.add(self.guard) }
    }

    /// Body length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads body byte `i`.
    pub fn get(&self, i: usize) -> u8 {
        assert!(i < self.len);
        self.read_abs(self.guard + i)
    }

    /// Writes body byte `i` (what a peer does).
    pub fn set(&self, i: usize, value: u8) {
        assert!(i < self.len);
        self.write_abs(self.guard + i, value);
    }

    /// A copy of the body.
    pub fn snapshot(&self) -> Vec<u8> {
        self.copy_abs(self.guard, self.len)
    }

    /// A copy of `len` bytes of the allocation from `start`.
    fn copy_abs(&self, start: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        self.copy_abs_into(start, len, &mut out);
        out
    }

    /// Copies `len` bytes of the allocation from `start` into `out` (reusing its capacity).
    fn copy_abs_into(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        assert!(start + len <= self.layout.size());
        out.clear();
        out.resize(len, 0);
        let src = self.ptr.as_ptr().wrapping_add(start);
        // SAFETY: `start..start + len` is inside the allocation (asserted); `out` holds `len`
        // bytes of its own, so the ranges do not overlap. Nothing writes the buffer
        // concurrently (tests that share it between threads do not snapshot it).
        unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len) };
    }

    /// Whether both guard zones still hold their pattern.
    pub fn guards_intact(&self) -> bool {
        let tail = self.guard + self.len;
        let zone_ok = |start: usize| {
            let mut zone = [0u8; GUARD];
            let n = self.guard.min(GUARD);
            let src = self.ptr.as_ptr().wrapping_add(start);
            // SAFETY: both guard zones (`0..guard`, `tail..tail + guard`) are inside the
            // allocation; `zone` is a local array of at least `n` bytes.
            unsafe { core::ptr::copy_nonoverlapping(src, zone.as_mut_ptr(), n) };
            let rest_ok =
                (n..self.guard).all(|i| self.read_abs(start + i) == guard_byte(start + i));
            zone[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == guard_byte(start + i))
                && rest_ok
        };
        zone_ok(0) && zone_ok(tail)
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A ring resource tied to the lifetime of the [`TestVchan`] it came from.
#[derive(Debug)]
pub struct Borrowed<'a, T> {
    inner: T,
    _owner: PhantomData<&'a ()>,
}

impl<T> Borrowed<'_, T> {
    fn new(inner: T) -> Self {
        Borrowed {
            inner,
            _owner: PhantomData,
        }
    }
}

impl<T: IndexCell> IndexCell for Borrowed<'_, T> {
    fn load(&self, order: Ordering) -> u32 {
        self.inner.load(order)
    }
    fn store(&self, value: u32, order: Ordering) {
        self.inner.store(value, order);
    }
}

impl<T: FlagCell> FlagCell for Borrowed<'_, T> {
    fn fetch_or(&self, bits: u8, order: Ordering) -> u8 {
        self.inner.fetch_or(bits, order)
    }
    fn fetch_and(&self, mask: u8, order: Ordering) -> u8 {
        self.inner.fetch_and(mask, order)
    }
    fn load(&self, order: Ordering) -> u8 {
        self.inner.load(order)
    }
}

// SAFETY: pure delegation to `T`, which upholds the contract.
unsafe impl<T: RingMemory> RingMemory for Borrowed<'_, T> {
    fn size(&self) -> usize {
        self.inner.size()
    }
    unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
        // SAFETY: the caller's contract is `T::copy_in`'s.
        unsafe { self.inner.copy_in(offset, src) }
    }
    unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        // SAFETY: the caller's contract is `T::copy_out`'s.
        unsafe { self.inner.copy_out(offset, dst) }
    }
}

// SAFETY: pure delegation to `T`, which upholds the contract.
unsafe impl<T: ContiguousRingMemory> ContiguousRingMemory for Borrowed<'_, T> {
    fn base(&self) -> NonNull<u8> {
        self.inner.base()
    }
}

/// Producer half of a [`TestVchan`] ring.
pub type TestProducer<'a> = Producer<Borrowed<'a, RawRing>, Borrowed<'a, RawIndex>>;
/// Consumer half of a [`TestVchan`] ring.
pub type TestConsumer<'a> = Consumer<Borrowed<'a, RawRing>, Borrowed<'a, RawIndex>>;

fn side_slot(side: Side) -> usize {
    match side {
        Side::Left => 0,
        Side::Right => 1,
    }
}

/// A control page and two rings on the heap, for tests and fuzzing.
#[derive(Debug)]
pub struct TestVchan {
    page: RawBuf,
    /// Separate ring buffers (`None`: the ring is inside the page).
    rings: [Option<RawBuf>; 2],
    /// In-page offsets of in-page rings.
    in_page: [Option<usize>; 2],
    sizes: [usize; 2],
    control: ControlPage,
    taken: Cell<u8>,
}

impl TestVchan {
    /// A zeroed page and two separate rings of any power-of-two sizes up to 1 MiB.
    pub fn new(left_size: usize, right_size: usize) -> TestVchan {
        for size in [left_size, right_size] {
            assert!(
                size.is_power_of_two() && size <= 1 << 20,
                "ring size {size}"
            );
        }
        let page = RawBuf::new(PAGE_SIZE, PAGE_SIZE, 0);
        // SAFETY: the page buffer lives as long as `self` (and, through `Borrowed`, longer than
        // every half built from it) and is accessed only atomically or through raw pointers.
        let control = unsafe { ControlPage::new(page.body()) };
        TestVchan {
            page,
            rings: [
                Some(RawBuf::new(left_size, 64, GUARD)),
                Some(RawBuf::new(right_size, 64, GUARD)),
            ],
            in_page: [None, None],
            sizes: [left_size, right_size],
            control,
            taken: Cell::new(0),
        }
    }

    /// A page set up by [`ControlPage::init_server`] for `geometry`, with in-page rings where
    /// the geometry puts them.
    pub fn with_geometry(geometry: Geometry) -> TestVchan {
        let page = RawBuf::new(PAGE_SIZE, PAGE_SIZE, 0);
        // SAFETY: as in `new`.
        let control = unsafe { ControlPage::new(page.body()) };
        control.init_server(geometry);
        let mut rings = [None, None];
        let mut in_page = [None, None];
        for side in [Side::Left, Side::Right] {
            match geometry.placement(side) {
                RingPlacement::InPage { offset } => in_page[side_slot(side)] = Some(offset),
                RingPlacement::Granted { .. } => {
                    rings[side_slot(side)] = Some(RawBuf::new(geometry.ring_size(side), 64, GUARD));
                }
            }
        }
        TestVchan {
            page,
            rings,
            in_page,
            sizes: [
                geometry.ring_size(Side::Left),
                geometry.ring_size(Side::Right),
            ],
            control,
            taken: Cell::new(0),
        }
    }

    /// The control page.
    pub fn control(&self) -> &ControlPage {
        &self.control
    }

    /// Size of `side`'s ring.
    pub fn ring_size(&self, side: Side) -> usize {
        self.sizes[side_slot(side)]
    }

    /// In-page offset of `side`'s ring, if it is in the page.
    pub fn in_page_offset(&self, side: Side) -> Option<usize> {
        self.in_page[side_slot(side)]
    }

    fn raw_ring(&self, side: Side) -> Result<RawRing, RingError> {
        let size = self.ring_size(side);
        let base = match (&self.rings[side_slot(side)], self.in_page_offset(side)) {
            (Some(buf), _) => buf.body(),
            // SAFETY: in-page offsets (1024/2048) plus the ring size stay inside the page.
            (None, Some(offset)) => unsafe { self.page.body().add(offset) },
            (None, None) => unreachable!("every ring has memory"),
        };
        // SAFETY: `base..base + size` is owned by `self`, which outlives the half (`Borrowed`);
        // `take` allows one producer and one consumer per ring.
        unsafe { RawRing::from_raw_parts(base, size) }
    }

    fn take(&self, side: Side, producer: bool) {
        let bit = 1u8 << (side_slot(side) * 2 + usize::from(producer));
        assert!(
            self.taken.get() & bit == 0,
            "a test vchan hands out one producer and one consumer per ring"
        );
        self.taken.set(self.taken.get() | bit);
    }

    /// The producer of the ring `role` writes (once per ring).
    pub fn producer(&self, role: Role) -> Result<TestProducer<'_>, RingError> {
        let side = role.write_side();
        self.take(side, true);
        Producer::new(
            Borrowed::new(self.raw_ring(side)?),
            Borrowed::new(self.control.index(side, IndexName::Prod)),
            Borrowed::new(self.control.index(side, IndexName::Cons)),
        )
    }

    /// The consumer of the ring `role` reads (once per ring).
    pub fn consumer(&self, role: Role) -> Result<TestConsumer<'_>, RingError> {
        let side = role.read_side();
        self.take(side, false);
        Consumer::new(
            Borrowed::new(self.raw_ring(side)?),
            Borrowed::new(self.control.index(side, IndexName::Prod)),
            Borrowed::new(self.control.index(side, IndexName::Cons)),
        )
    }

    /// The notify byte `role` honours.
    pub fn notify_flag(&self, role: Role) -> Borrowed<'_, RawFlag> {
        Borrowed::new(self.control.notify_flag(role))
    }

    /// Reads byte `i` of `side`'s ring.
    pub fn ring_get(&self, side: Side, i: usize) -> u8 {
        match (&self.rings[side_slot(side)], self.in_page_offset(side)) {
            (Some(buf), _) => buf.get(i),
            _ => {
                assert!(i < self.ring_size(side));
                self.page.get(self.in_page_offset(side).unwrap_or(0) + i)
            }
        }
    }

    /// Writes byte `i` of `side`'s ring (as the peer may).
    pub fn ring_set(&self, side: Side, i: usize, value: u8) {
        match (&self.rings[side_slot(side)], self.in_page_offset(side)) {
            (Some(buf), _) => buf.set(i, value),
            _ => {
                assert!(i < self.ring_size(side));
                self.page
                    .set(self.in_page_offset(side).unwrap_or(0) + i, value);
            }
        }
    }

    /// A copy of `side`'s ring bytes.
    pub fn ring_snapshot(&self, side: Side) -> Vec<u8> {
        let mut out = Vec::new();
        self.ring_snapshot_into(side, &mut out);
        out
    }

    /// Copies `side`'s ring bytes into `out` (reusing its capacity).
    pub fn ring_snapshot_into(&self, side: Side, out: &mut Vec<u8>) {
        match (&self.rings[side_slot(side)], self.in_page_offset(side)) {
            (Some(buf), _) => buf.copy_abs_into(buf.guard, buf.len, out),
            (None, offset) => {
                self.page
                    .copy_abs_into(offset.unwrap_or(0), self.ring_size(side), out);
            }
        }
    }

    /// Copies the control page into `out` (reusing its capacity).
    pub fn page_snapshot_into(&self, out: &mut Vec<u8>) {
        self.page.copy_abs_into(0, PAGE_SIZE, out);
    }

    /// Writes byte `i` of the control page (as the peer may).
    pub fn page_set(&self, i: usize, value: u8) {
        self.page.set(i, value);
    }

    /// A copy of the control page.
    pub fn page_snapshot(&self) -> Vec<u8> {
        self.page.snapshot()
    }

    /// Whether every guard byte around the separate rings is intact.
    pub fn guards_intact(&self) -> bool {
        self.rings.iter().flatten().all(RawBuf::guards_intact)
    }

    /// Whether page offset `i` lies in an in-page ring.
    fn in_page_ring_byte(&self, i: usize) -> bool {
        [Side::Left, Side::Right].iter().any(|&side| {
            self.in_page_offset(side)
                .is_some_and(|o| (o..o + self.ring_size(side)).contains(&i))
        })
    }
}

/// Fuzz input reader: never fails, yields zeros past the end.
#[derive(Debug)]
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// A length for a ring of `size`: up to twice the ring, so "too large" is reachable.
    fn len(&mut self, size: usize) -> usize {
        self.u16() as usize % (2 * size + 2)
    }
}

/// Byte `i` of the deterministic stream the producers write.
fn stream_byte(i: u32) -> u8 {
    (i ^ (i >> 8) ^ (i >> 16)).wrapping_mul(0x9E37_79B1) as u8
}

fn stream(start: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| stream_byte(start.wrapping_add(i)))
        .collect()
}

fn index_offset(side: Side, which: IndexName) -> usize {
    match (side, which) {
        (Side::Left, IndexName::Cons) => LEFT_CONS_OFFSET,
        (Side::Left, IndexName::Prod) => LEFT_PROD_OFFSET,
        (Side::Right, IndexName::Cons) => RIGHT_CONS_OFFSET,
        (Side::Right, IndexName::Prod) => RIGHT_PROD_OFFSET,
    }
}

fn notify_offset(role: Role) -> usize {
    match role {
        Role::Server => SRV_NOTIFY_OFFSET,
        Role::Client => CLI_NOTIFY_OFFSET,
    }
}

/// Whether ring position `pos` lies in the `len` positions starting at index `start`.
fn in_window(pos: usize, start: u32, len: usize, size: usize) -> bool {
    let rel = (pos as u32).wrapping_sub(start) & (size as u32 - 1);
    (rel as usize) < len
}

/// What our own halves have done, as the harness saw it.
#[derive(Debug, Default)]
struct Mirror {
    /// Producer's private index.
    tail: u32,
    /// Producer's last published index.
    published: u32,
    /// The corruption the producer reported (then every call must repeat it).
    producer_corrupt: Option<RingError>,
    /// Consumer's private index.
    head: u32,
    /// Consumer's last published index.
    released: u32,
    consumer_corrupt: Option<RingError>,
    /// The peer's consumer index in our write ring (what the harness last stored).
    peer_cons: u32,
    /// The peer's producer index in our read ring.
    peer_prod: u32,
    /// False once the peer wrote an arbitrary value into one of its indices.
    honest: bool,
}

/// Checks an operation's result against the sticky-corruption rule and records a first
/// corruption. Returns the `Ok` value, if any.
fn sticky<T>(
    slot: &mut Option<RingError>,
    honest: bool,
    result: Result<T, RingError>,
) -> Option<T> {
    if let Some(prev) = *slot {
        match result {
            Err(e) => assert_eq!(e, prev, "a corrupt half must keep reporting the same error"),
            Ok(_) => panic!("a corrupt half kept working after {prev}"),
        }
        return None;
    }
    match result {
        Ok(v) => Some(v),
        Err(e @ RingError::Corrupt(_)) => {
            assert!(!honest, "honest peer reported as corrupt: {e}");
            *slot = Some(e);
            None
        }
        Err(_) => None,
    }
}

/// What one [`hostile`] run did (for tests that check a seed reaches what it was made for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostileReport {
    /// Both halves attached.
    pub attached: bool,
    /// The producer reported `Corrupt`.
    pub producer_corrupt: bool,
    /// The consumer reported `Corrupt`.
    pub consumer_corrupt: bool,
    /// Bytes our producer staged or committed.
    pub written: u32,
    /// Bytes our consumer consumed.
    pub read: u32,
}

/// Fuzz target `ring_hostile`: our producer and consumer (of one role of a vchan) against a
/// peer that, between our operations, either behaves or writes arbitrary values into every
/// shared field and ring byte.
///
/// Checked after every operation: the guard bytes around both rings are intact; the control
/// page changed only where the operation may write (our own index, a notify byte); the
/// producer wrote ring bytes only in the window it reported, with the right data; the consumer
/// wrote no ring byte and returned exactly the ring's bytes at its index; a `Corrupt` error
/// never comes from an honest peer and, once reported, repeats on every later call; with an
/// honest peer, partial operations move exactly `min(requested, space or data)` bytes.
pub fn hostile(data: &[u8]) -> HostileReport {
    let mut report = HostileReport::default();
    let mut input = Input::new(data);
    let mode = input.u8();
    let role = if mode & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let vchan = if mode & 2 == 0 {
        let a = 1usize << (input.u8() % 13);
        let b = 1usize << (input.u8() % 13);
        TestVchan::new(a, b)
    } else {
        // Up to 8 KiB: in-page rings and small granted ones (every op snapshots the rings).
        let a = input.u16() as usize % 8193;
        let b = input.u16() as usize % 8193;
        match Geometry::server_choice(a, b) {
            Ok(g) => TestVchan::with_geometry(g),
            Err(_) => return report,
        }
    };
    let (wside, rside) = (role.write_side(), role.read_side());
    let (wsize, rsize) = (vchan.ring_size(wside), vchan.ring_size(rside));
    let page = vchan.control();

    // Optionally start from arbitrary shared indices (a resumed channel, or a hostile one).
    if mode & 4 != 0 {
        for (side, which) in [
            (wside, IndexName::Prod),
            (wside, IndexName::Cons),
            (rside, IndexName::Prod),
            (rside, IndexName::Cons),
        ] {
            page.store_index(side, which, input.u32());
        }
    }
    let start = page.snapshot();
    let (w0, r0) = match role {
        Role::Server => (start.right, start.left),
        Role::Client => (start.left, start.right),
    };
    let producer = vchan.producer(role);
    let consumer = vchan.consumer(role);
    assert_eq!(
        producer.is_ok(),
        w0.prod.wrapping_sub(w0.cons) as usize <= wsize,
        "producer attach with prod {} cons {}",
        w0.prod,
        w0.cons
    );
    assert_eq!(
        consumer.is_ok(),
        r0.prod.wrapping_sub(r0.cons) as usize <= rsize
    );
    report.attached = producer.is_ok() && consumer.is_ok();
    let (Ok(mut tx), Ok(mut rx)) = (producer, consumer) else {
        return report;
    };
    let own_flag = vchan.notify_flag(role);
    let peer_flag = vchan.notify_flag(role.peer());
    let mut m = Mirror {
        tail: w0.prod,
        published: w0.prod,
        head: r0.cons,
        released: r0.cons,
        peer_cons: w0.cons,
        peer_prod: r0.prod,
        honest: true,
        ..Mirror::default()
    };
    // The data the peer writes into our read ring carries its position in the stream.
    let own_prod_at = index_offset(wside, IndexName::Prod);
    let own_cons_at = index_offset(rside, IndexName::Cons);
    let own_notify_at = notify_offset(role);
    let peer_notify_at = notify_offset(role.peer());

    // Snapshot buffers, reused across operations.
    let (mut page_before, mut page_after) = (Vec::new(), Vec::new());
    let (mut wring_before, mut wring_after) = (Vec::new(), Vec::new());
    let (mut rring_before, mut rring_after) = (Vec::new(), Vec::new());
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 25;
        vchan.page_snapshot_into(&mut page_before);
        vchan.ring_snapshot_into(wside, &mut wring_before);
        vchan.ring_snapshot_into(rside, &mut rring_before);
        // Page offsets this operation may change, and the write-ring window it may write.
        let mut may_change: Vec<usize> = Vec::new();
        let mut write_window: Option<(u32, usize)> = None;
        let mut ring_writes_expected: Option<(u32, Vec<u8>)> = None;
        let mut consumer_read: Option<(u32, Vec<u8>)> = None;
        let mut peer_wrote_page = false;
        let mut peer_wrote_rings = false;
        match op {
            // ---- our producer ----
            0..=3 => {
                let len = input.len(wsize);
                let src = stream(m.tail, len);
                let true_free = wsize.wrapping_sub(m.tail.wrapping_sub(m.peer_cons) as usize);
                let result = match op {
                    0 => tx.stage(&src),
                    1 => tx.stage_all(&src).map(|()| len),
                    2 => tx.write(&src),
                    _ => tx.write_all(&src).map(|()| len),
                };
                let all_or_nothing = op == 1 || op == 3;
                if m.producer_corrupt.is_none() && m.honest {
                    match &result {
                        Ok(n) if !all_or_nothing => assert_eq!(*n, len.min(true_free)),
                        Ok(n) => assert!(*n == len && len <= true_free),
                        Err(RingError::NoSpace { requested, free }) => {
                            assert!(all_or_nothing && *requested == len && *free == true_free);
                            assert!(len > true_free);
                        }
                        Err(RingError::TooLarge { .. }) => assert!(all_or_nothing && len > wsize),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                if let Some(n) = sticky(&mut m.producer_corrupt, m.honest, result) {
                    assert!(n <= len);
                    write_window = Some((m.tail, n));
                    ring_writes_expected = Some((m.tail, src[..n].to_vec()));
                    m.tail = m.tail.wrapping_add(n as u32);
                    if op >= 2 {
                        m.published = m.tail;
                        may_change.extend(own_prod_at..own_prod_at + 4);
                    }
                }
            }
            4 | 5 => {
                let len = input.len(wsize);
                let commit = input.u16() as usize;
                let result = if op == 4 {
                    tx.reserve(len)
                } else {
                    tx.reserve_up_to(len)
                };
                let start = m.tail;
                if let Some(mut region) = sticky(&mut m.producer_corrupt, m.honest, result) {
                    let rlen = region.len();
                    assert!(if op == 4 { rlen == len } else { rlen <= len });
                    let src = stream(start, rlen);
                    // Fill in two uneven copies to exercise offsets and the wrap.
                    let cut = commit % (rlen + 1);
                    assert_eq!(region.copy_from(0, &src[..cut]), cut);
                    assert_eq!(region.copy_from(cut, &src[cut..]), rlen - cut);
                    assert_eq!(region.copy_from(rlen, &[1]), 0);
                    let k = commit % (rlen + 2);
                    let committed = region.commit(k);
                    assert_eq!(committed.is_ok(), k <= rlen);
                    write_window = Some((start, rlen));
                    ring_writes_expected = Some((start, src));
                    if committed.is_ok() {
                        m.tail = m.tail.wrapping_add(k as u32);
                    }
                }
            }
            6 => {
                let n = input.u16() as usize % (wsize + 2);
                let result = tx.commit(n);
                if sticky(&mut m.producer_corrupt, m.honest, result).is_some() {
                    m.tail = m.tail.wrapping_add(n as u32);
                }
                assert!(m.tail.wrapping_sub(m.peer_cons) as usize <= wsize || !m.honest);
            }
            7 | 8 => {
                let expect_new = m.tail != m.published;
                if op == 7 {
                    assert_eq!(tx.publish(), expect_new);
                } else {
                    let bit_set = page_before[own_notify_at] & NOTIFY_WRITE != 0;
                    assert_eq!(tx.publish_and_check(&own_flag), bit_set);
                    may_change.push(own_notify_at);
                }
                m.published = m.tail;
                may_change.extend(own_prod_at..own_prod_at + 4);
            }
            9 => {
                let want = input.len(wsize);
                let result = if want % 2 == 0 {
                    tx.space()
                } else {
                    may_change.push(peer_notify_at);
                    tx.space_or_request(want, &peer_flag)
                };
                if let Some(free) = sticky(&mut m.producer_corrupt, m.honest, result) {
                    assert!(free <= wsize);
                    if m.honest {
                        // `space` is exact; `space_or_request` may answer from its cache when
                        // that has enough, which never over-reports.
                        let true_free = wsize - m.tail.wrapping_sub(m.peer_cons) as usize;
                        if want % 2 == 0 || free < want.min(wsize) {
                            assert_eq!(free, true_free);
                        } else {
                            assert!(free <= true_free);
                        }
                    }
                }
            }
            // ---- our consumer ----
            10..=13 => {
                let len = input.len(rsize);
                let mut dst = alloc::vec![0u8; len];
                let true_avail = m.peer_prod.wrapping_sub(m.head) as usize;
                let result = match op {
                    10 => rx.take(&mut dst),
                    11 => rx.take_exact(&mut dst).map(|()| len),
                    12 => rx.read(&mut dst),
                    _ => rx.read_exact(&mut dst).map(|()| len),
                };
                let all_or_nothing = op == 11 || op == 13;
                if m.consumer_corrupt.is_none() && m.honest {
                    match &result {
                        Ok(n) if !all_or_nothing => assert_eq!(*n, len.min(true_avail)),
                        Ok(n) => assert!(*n == len && len <= true_avail),
                        Err(RingError::NoData {
                            requested,
                            available,
                        }) => {
                            assert!(all_or_nothing && *requested == len);
                            assert!(*available == true_avail && len > true_avail);
                        }
                        Err(RingError::TooLarge { .. }) => assert!(all_or_nothing && len > rsize),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                if let Some(n) = sticky(&mut m.consumer_corrupt, m.honest, result) {
                    assert!(n <= len);
                    consumer_read = Some((m.head, dst[..n].to_vec()));
                    m.head = m.head.wrapping_add(n as u32);
                    if op >= 12 {
                        m.released = m.head;
                        may_change.extend(own_cons_at..own_cons_at + 4);
                    }
                }
            }
            14 => {
                let want = input.len(rsize);
                let consume = input.u16() as usize;
                let start = m.head;
                if let Some(region) = sticky(&mut m.consumer_corrupt, m.honest, rx.peek(want)) {
                    let rlen = region.len();
                    assert!(rlen <= rsize);
                    let mut copy = alloc::vec![0u8; rlen];
                    let cut = consume % (rlen + 1);
                    assert_eq!(region.copy_to(cut, &mut copy[cut..]), rlen - cut);
                    assert_eq!(region.copy_to(0, &mut copy[..cut]), cut);
                    assert_eq!(region.copy_to(rlen, &mut [0]), 0);
                    consumer_read = Some((start, copy));
                    let k = consume % (rlen + 2);
                    let consumed = region.consume(k);
                    assert_eq!(consumed.is_ok(), k <= rlen);
                    if consumed.is_ok() {
                        m.head = m.head.wrapping_add(k as u32);
                    }
                }
            }
            15 => {
                let n = input.u16() as usize % (rsize + 2);
                let result = rx.consume(n);
                if sticky(&mut m.consumer_corrupt, m.honest, result).is_some() {
                    m.head = m.head.wrapping_add(n as u32);
                }
            }
            16 | 17 => {
                let expect_new = m.head != m.released;
                if op == 16 {
                    assert_eq!(rx.publish(), expect_new);
                } else {
                    let bit_set = page_before[own_notify_at] & NOTIFY_READ != 0;
                    assert_eq!(rx.publish_and_check(&own_flag), bit_set);
                    may_change.push(own_notify_at);
                }
                m.released = m.head;
                may_change.extend(own_cons_at..own_cons_at + 4);
            }
            18 => {
                let want = input.len(rsize);
                let result = if want % 2 == 0 {
                    rx.available()
                } else {
                    may_change.push(peer_notify_at);
                    rx.available_or_request(want, &peer_flag)
                };
                if let Some(avail) = sticky(&mut m.consumer_corrupt, m.honest, result) {
                    assert!(avail <= rsize);
                    if m.honest {
                        let true_avail = m.peer_prod.wrapping_sub(m.head) as usize;
                        if want % 2 == 0 || avail < want.min(rsize) {
                            assert_eq!(avail, true_avail);
                        } else {
                            assert!(avail <= true_avail);
                        }
                    }
                }
            }
            // ---- the peer, honest ----
            19 => {
                // Consumes from our write ring: never past what we published.
                let k = input.u16() as u32;
                let n = k.min(m.published.wrapping_sub(m.peer_cons));
                m.peer_cons = m.peer_cons.wrapping_add(n);
                page.store_index(wside, IndexName::Cons, m.peer_cons);
                peer_wrote_page = true;
            }
            20 => {
                // Produces into our read ring: never into space we have not released.
                let k = input.u16() as usize;
                let free = rsize.saturating_sub(m.peer_prod.wrapping_sub(m.released) as usize);
                let n = k.min(free);
                for (i, b) in stream(m.peer_prod ^ 0x5555, n).into_iter().enumerate() {
                    let pos = m.peer_prod.wrapping_add(i as u32) as usize & (rsize - 1);
                    vchan.ring_set(rside, pos, b);
                }
                m.peer_prod = m.peer_prod.wrapping_add(n as u32);
                page.store_index(rside, IndexName::Prod, m.peer_prod);
                peer_wrote_page = true;
                peer_wrote_rings = true;
            }
            // ---- the peer, hostile ----
            21 => {
                // An arbitrary or a nearby value in one of the peer's indices.
                let sel = input.u8();
                let raw = input.u32();
                let (side, which, cur) = if sel & 1 == 0 {
                    (wside, IndexName::Cons, &mut m.peer_cons)
                } else {
                    (rside, IndexName::Prod, &mut m.peer_prod)
                };
                *cur = if sel & 2 == 0 {
                    raw
                } else {
                    cur.wrapping_add((raw as i16) as i32 as u32)
                };
                page.store_index(side, which, *cur);
                m.honest = false;
                peer_wrote_page = true;
            }
            22 => {
                // Junk in *our* shared indices: we never read them back.
                page.store_index(wside, IndexName::Prod, input.u32());
                page.store_index(rside, IndexName::Cons, input.u32());
                peer_wrote_page = true;
            }
            23 => {
                // Junk ring bytes in either ring.
                let side = if input.u8() & 1 == 0 { wside } else { rside };
                let size = vchan.ring_size(side);
                let count = input.u8() as usize % 8 + 1;
                for _ in 0..count {
                    let pos = input.u16() as usize & (size - 1);
                    vchan.ring_set(side, pos, input.u8());
                }
                peer_wrote_rings = true;
                peer_wrote_page = true; // in-page rings live in the page
            }
            _ => {
                // Junk anywhere else in the page: orders, liveness, notify bytes, grants.
                let offset = 16 + input.u16() as usize % (PAGE_SIZE - 16);
                if !vchan.in_page_ring_byte(offset) {
                    vchan.page_set(offset, input.u8());
                    peer_wrote_page = true;
                }
            }
        }

        // ---- checks ----
        assert!(
            vchan.guards_intact(),
            "a guard byte around a ring was overwritten"
        );
        if !peer_wrote_page {
            vchan.page_snapshot_into(&mut page_after);
            let changed = page_before != page_after;
            for (i, (a, b)) in page_before
                .iter()
                .zip(&page_after)
                .enumerate()
                .filter(|_| changed)
            {
                if a != b && !may_change.contains(&i) && !vchan.in_page_ring_byte(i) {
                    panic!("op {op} changed page byte {i} ({a} -> {b})");
                }
            }
        }
        if !peer_wrote_rings {
            vchan.ring_snapshot_into(wside, &mut wring_after);
            let changed = wring_before != wring_after;
            for (pos, (a, b)) in wring_before
                .iter()
                .zip(&wring_after)
                .enumerate()
                .filter(|_| changed)
            {
                let allowed =
                    write_window.is_some_and(|(start, len)| in_window(pos, start, len, wsize));
                assert!(
                    a == b || allowed,
                    "op {op} wrote ring byte {pos} outside its window"
                );
            }
            if let Some((start, bytes)) = &ring_writes_expected {
                for (i, &b) in bytes.iter().enumerate() {
                    let pos = start.wrapping_add(i as u32) as usize & (wsize - 1);
                    assert_eq!(wring_after[pos], b, "op {op}: ring byte {pos}");
                }
            }
            // Neither of our halves ever writes the ring we read.
            vchan.ring_snapshot_into(rside, &mut rring_after);
            assert_eq!(rring_before, rring_after, "op {op} wrote the read ring");
        }
        if let Some((start, bytes)) = consumer_read {
            for (i, &b) in bytes.iter().enumerate() {
                let pos = start.wrapping_add(i as u32) as usize & (rsize - 1);
                assert_eq!(b, rring_before[pos], "op {op}: returned byte {i}");
            }
        }
    }
    report.producer_corrupt = m.producer_corrupt.is_some();
    report.consumer_corrupt = m.consumer_corrupt.is_some();
    report.written = m.tail.wrapping_sub(w0.prod);
    report.read = m.head.wrapping_sub(r0.cons);
    report
}

/// Fuzz target `ring_diff`: a producer and a consumer of one ring, in one process, driven by
/// a random sequence of every operation, compared after each step with a `VecDeque` model
/// (which also mirrors the cached indices, so the expected result of every call is exact).
pub fn differential(data: &[u8]) {
    let mut input = Input::new(data);
    let size = 1usize << (input.u8() % 13);
    let vchan = TestVchan::new(size, 4096);
    let (Ok(mut tx), Ok(mut rx)) = (vchan.producer(Role::Client), vchan.consumer(Role::Server))
    else {
        panic!("a fresh ring must attach");
    };
    let page = vchan.control();
    let client_flag = vchan.notify_flag(Role::Client); // the producer honours it
    let server_flag = vchan.notify_flag(Role::Server); // the consumer honours it
    let s = size as u32;

    // The model.
    let mut visible: VecDeque<u8> = VecDeque::new(); // published, not yet taken
    let mut staged: VecDeque<u8> = VecDeque::new(); // written, not yet published
    let (mut tail, mut published, mut head, mut released) = (0u32, 0u32, 0u32, 0u32);
    let (mut cons_cache, mut prod_cache) = (0u32, 0u32);
    let (mut producer_bits, mut consumer_bits) = (0u8, 0u8);
    let mut next = 0u32; // next stream byte to write

    // The caches, as the implementation keeps them: reload only when short.
    let free_for = |want: u32, tail: u32, cons_cache: &mut u32, released: u32| {
        let cached = s - tail.wrapping_sub(*cons_cache);
        if cached >= want {
            cached
        } else {
            *cons_cache = released;
            s - tail.wrapping_sub(released)
        }
    };
    let avail_for = |want: u32, head: u32, prod_cache: &mut u32, published: u32| {
        let cached = prod_cache.wrapping_sub(head);
        if cached >= want {
            cached
        } else {
            *prod_cache = published;
            published.wrapping_sub(head)
        }
    };

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 16;
        let len = input.len(size);
        match op {
            0 | 1 => {
                let src = stream(next, len);
                let want = len.min(size) as u32;
                if op == 0 {
                    let free = if want == 0 {
                        0
                    } else {
                        free_for(want, tail, &mut cons_cache, released)
                    };
                    let n = want.min(free) as usize;
                    assert_eq!(tx.stage(&src), Ok(n));
                    staged.extend(&src[..n]);
                    tail = tail.wrapping_add(n as u32);
                    next = next.wrapping_add(n as u32);
                } else if len > size {
                    assert_eq!(
                        tx.stage_all(&src),
                        Err(RingError::TooLarge {
                            requested: len,
                            capacity: size
                        })
                    );
                } else {
                    let free = free_for(want, tail, &mut cons_cache, released);
                    if free < want {
                        assert_eq!(
                            tx.stage_all(&src),
                            Err(RingError::NoSpace {
                                requested: len,
                                free: free as usize
                            })
                        );
                    } else {
                        assert_eq!(tx.stage_all(&src), Ok(()));
                        staged.extend(&src);
                        tail = tail.wrapping_add(want);
                        next = next.wrapping_add(want);
                    }
                }
            }
            2 | 3 => {
                let reserved = if op == 2 {
                    if len > size {
                        assert!(matches!(tx.reserve(len), Err(RingError::TooLarge { .. })));
                        continue;
                    }
                    let free = free_for(len as u32, tail, &mut cons_cache, released);
                    if (free as usize) < len {
                        assert_eq!(
                            tx.reserve(len).map(|r| r.len()),
                            Err(RingError::NoSpace {
                                requested: len,
                                free: free as usize
                            })
                        );
                        continue;
                    }
                    len
                } else {
                    let want = len.min(size) as u32;
                    let free = if want == 0 {
                        0
                    } else {
                        free_for(want, tail, &mut cons_cache, released)
                    };
                    want.min(free) as usize
                };
                let k = input.u16() as usize % (reserved + 2);
                let region = if op == 2 {
                    tx.reserve(len)
                } else {
                    tx.reserve_up_to(len)
                };
                let Ok(mut region) = region else {
                    panic!("reserve failed where the model has space");
                };
                assert_eq!(region.len(), reserved);
                let src = stream(next, reserved);
                assert_eq!(region.copy_from(0, &src), reserved);
                if k <= reserved {
                    assert_eq!(region.commit(k), Ok(()));
                    staged.extend(&src[..k]);
                    tail = tail.wrapping_add(k as u32);
                    next = next.wrapping_add(k as u32);
                } else {
                    assert_eq!(
                        region.commit(k),
                        Err(RingError::CommitBeyondFree {
                            requested: k,
                            free: reserved
                        })
                    );
                }
            }
            4 | 5 => {
                let any = !staged.is_empty();
                if op == 4 {
                    assert_eq!(tx.publish(), any);
                } else {
                    assert_eq!(
                        tx.publish_and_check(&client_flag),
                        producer_bits & NOTIFY_WRITE != 0
                    );
                    producer_bits &= !NOTIFY_WRITE;
                }
                visible.extend(staged.drain(..));
                published = tail;
            }
            6 => {
                let want = len.min(size) as u32;
                let mut free = if want == 0 {
                    s - tail.wrapping_sub(cons_cache)
                } else {
                    free_for(want, tail, &mut cons_cache, released)
                };
                if free < want {
                    consumer_bits |= NOTIFY_READ;
                    cons_cache = released;
                    free = s - tail.wrapping_sub(released);
                }
                assert_eq!(tx.space_or_request(len, &server_flag), Ok(free as usize));
            }
            7 => {
                cons_cache = released;
                assert_eq!(tx.space(), Ok(size - tail.wrapping_sub(released) as usize));
            }
            8 | 9 => {
                let mut dst = alloc::vec![0u8; len];
                let want = len.min(size) as u32;
                if op == 8 {
                    let avail = if want == 0 {
                        0
                    } else {
                        avail_for(want, head, &mut prod_cache, published)
                    };
                    let n = want.min(avail) as usize;
                    assert_eq!(rx.take(&mut dst), Ok(n));
                    let expect: Vec<u8> = visible.drain(..n).collect();
                    assert_eq!(&dst[..n], &expect[..]);
                    head = head.wrapping_add(n as u32);
                } else if len > size {
                    assert_eq!(
                        rx.take_exact(&mut dst),
                        Err(RingError::TooLarge {
                            requested: len,
                            capacity: size
                        })
                    );
                } else {
                    let avail = avail_for(want, head, &mut prod_cache, published);
                    if avail < want {
                        assert_eq!(
                            rx.take_exact(&mut dst),
                            Err(RingError::NoData {
                                requested: len,
                                available: avail as usize
                            })
                        );
                    } else {
                        assert_eq!(rx.take_exact(&mut dst), Ok(()));
                        let expect: Vec<u8> = visible.drain(..len).collect();
                        assert_eq!(dst, expect);
                        head = head.wrapping_add(want);
                    }
                }
            }
            10 => {
                let want = len.min(size) as u32;
                let avail = if want == 0 {
                    prod_cache.wrapping_sub(head)
                } else {
                    avail_for(want, head, &mut prod_cache, published)
                } as usize;
                let k = input.u16() as usize % (avail + 2);
                let Ok(region) = rx.peek(len) else {
                    panic!("peek failed on an honest ring");
                };
                assert_eq!(region.len(), avail);
                let mut copy = alloc::vec![0u8; avail];
                assert_eq!(region.copy_to(0, &mut copy), avail);
                assert!(visible.iter().take(avail).eq(copy.iter()));
                if k <= avail {
                    assert_eq!(region.consume(k), Ok(()));
                    visible.drain(..k);
                    head = head.wrapping_add(k as u32);
                } else {
                    assert_eq!(
                        region.consume(k),
                        Err(RingError::ConsumeBeyondAvailable {
                            requested: k,
                            available: avail
                        })
                    );
                }
            }
            11 => {
                let avail = prod_cache.wrapping_sub(head) as usize;
                let k = len % (avail + 2);
                if k <= avail {
                    assert_eq!(rx.consume(k), Ok(()));
                    visible.drain(..k);
                    head = head.wrapping_add(k as u32);
                } else {
                    assert_eq!(
                        rx.consume(k),
                        Err(RingError::ConsumeBeyondAvailable {
                            requested: k,
                            available: avail
                        })
                    );
                }
            }
            12 | 13 => {
                let any = head != released;
                if op == 12 {
                    assert_eq!(rx.publish(), any);
                } else {
                    assert_eq!(
                        rx.publish_and_check(&server_flag),
                        consumer_bits & NOTIFY_READ != 0
                    );
                    consumer_bits &= !NOTIFY_READ;
                }
                released = head;
            }
            14 => {
                let want = len.min(size) as u32;
                let mut avail = if want == 0 {
                    prod_cache.wrapping_sub(head)
                } else {
                    avail_for(want, head, &mut prod_cache, published)
                };
                if avail < want {
                    producer_bits |= NOTIFY_WRITE;
                    prod_cache = published;
                    avail = published.wrapping_sub(head);
                }
                assert_eq!(
                    rx.available_or_request(len, &client_flag),
                    Ok(avail as usize)
                );
            }
            _ => {
                prod_cache = published;
                assert_eq!(rx.available(), Ok(published.wrapping_sub(head) as usize));
            }
        }
        // The shared page holds exactly what the model says.
        let snap = page.snapshot();
        assert_eq!(
            (snap.left.prod, snap.left.cons),
            (published, released),
            "op {op}"
        );
        assert_eq!(
            (snap.cli_notify, snap.srv_notify),
            (producer_bits, consumer_bits),
            "op {op}"
        );
        assert_eq!(tx.staged(), staged.len());
        assert_eq!(rx.unreleased(), head.wrapping_sub(released) as usize);
        assert!(vchan.guards_intact());
    }
}

/// The geometry rules, written out independently of [`Geometry`] for the `ring_page` target.
fn spec_geometry(left: u16, right: u16) -> bool {
    let valid = |o: u16| (10..=20).contains(&o);
    if !valid(left) || !valid(right) || (left == right && left < 12) {
        return false;
    }
    let pages = |o: u16| if o >= 12 { 1usize << (o - 12) } else { 0 };
    let end = 24 + 4 * (pages(left) + pages(right));
    let limit = [left, right]
        .into_iter()
        .filter_map(|o| match o {
            10 => Some(1024),
            11 => Some(2048),
            _ => None,
        })
        .min()
        .unwrap_or(4096);
    end <= limit
}

/// libxenvchan's server choice, transcribed step by step for the `ring_page` target.
fn spec_server_choice(left_min: usize, right_min: usize) -> Option<(u8, u8)> {
    if left_min > 1 << 20 || right_min > 1 << 20 {
        return None;
    }
    let min_order = |size: usize| {
        let mut order = 12;
        while size > 1 << order {
            order += 1;
        }
        order
    };
    let (mut l, mut r) = (min_order(left_min), min_order(right_min));
    if left_min <= 1024 && right_min <= 2048 {
        (l, r) = (10, 11);
    } else if left_min <= 2048 && right_min <= 1024 {
        (l, r) = (11, 10);
    } else if left_min <= 2048 {
        l = 11;
    } else if right_min <= 2048 {
        r = 11;
    }
    Some((l, r))
}

/// Fuzz target `ring_page`: a control page with arbitrary content, as a client reads it.
///
/// Reading the geometry must agree with the independent rule set, never panic, and, when it
/// accepts, yield grant references equal to the page bytes where the geometry says they are,
/// all inside the page and before any in-page ring. The snapshot must equal a zerocopy parse
/// of the same bytes. The server's size choice for two sizes from the input must agree with a
/// transcription of libxenvchan's.
pub fn page(data: &[u8]) {
    let vchan = TestVchan::new(1, 1);
    for (i, &b) in data.iter().take(PAGE_SIZE).enumerate() {
        vchan.page_set(i, b);
    }
    let control = vchan.control();
    let bytes = vchan.page_snapshot();
    let parsed = <VchanInterface as zerocopy::FromBytes>::read_from_prefix(&bytes[..])
        .map(|(v, _)| v)
        .ok();
    assert_eq!(parsed, Some(control.snapshot()));
    let (left, right) = (
        control.snapshot().left_order,
        control.snapshot().right_order,
    );
    match control.read_geometry() {
        Ok(g) => {
            assert!(spec_geometry(left, right), "accepted ({left}, {right})");
            assert_eq!(
                (u16::from(g.left().get()), u16::from(g.right().get())),
                (left, right)
            );
            let mut count = 0;
            for side in [Side::Left, Side::Right] {
                let refs: Vec<u32> = control.grant_refs(&g, side).collect();
                assert_eq!(refs.len(), g.grant_count(side));
                for (k, value) in g.grant_indices(side).zip(&refs) {
                    let at = GRANTS_OFFSET + 4 * k;
                    assert!(at + 4 <= g.grant_limit());
                    let expect = u32::from_ne_bytes([
                        bytes[at],
                        bytes[at + 1],
                        bytes[at + 2],
                        bytes[at + 3],
                    ]);
                    assert_eq!(*value, expect);
                }
                count += refs.len();
            }
            assert_eq!(count, g.total_grants());
            assert!(g.grants_end() <= g.grant_limit() && g.grant_limit() <= PAGE_SIZE);
        }
        Err(e) => {
            assert!(
                !spec_geometry(left, right),
                "refused ({left}, {right}): {e}"
            );
            match e {
                GeometryError::OrderOutOfRange { order, .. } => {
                    assert!(!(10..=20).contains(&order))
                }
                GeometryError::InPageCollision { order, .. } => assert_eq!(u16::from(order), left),
                GeometryError::GrantListOverlap { end, limit, .. } => assert!(end > limit),
                other => panic!("unexpected {other}"),
            }
        }
    }
    // The server's choice for sizes taken from the tail of the input.
    let tail = &data[data.len().saturating_sub(8)..];
    let mut t = Input::new(tail);
    let (a, b) = (t.u32() as usize % (3 << 19), t.u32() as usize % (3 << 19));
    match (Geometry::server_choice(a, b), spec_server_choice(a, b)) {
        (Ok(g), Some((l, r))) => {
            assert_eq!(
                (g.left().get(), g.right().get()),
                (l, r),
                "server_choice({a}, {b})"
            );
            assert!(g.ring_size(Side::Left) >= a && g.ring_size(Side::Right) >= b);
        }
        (Err(GeometryError::TooLarge { .. }), None) => {}
        (got, want) => panic!("server_choice({a}, {b}) = {got:?}, libxenvchan: {want:?}"),
    }
}

/// Byte-level encoders for building meaningful seed inputs (see the `seeds` test).
#[cfg(test)]
pub(crate) mod seeds {
    use alloc::vec::Vec;

    /// A seed input under construction.
    #[derive(Default)]
    pub(crate) struct Seed(pub(crate) Vec<u8>);

    impl Seed {
        pub(crate) fn b(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        pub(crate) fn h(mut self, v: u16) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        pub(crate) fn w(mut self, v: u32) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        pub(crate) fn repeat(mut self, times: usize, f: impl Fn(Self) -> Self) -> Self {
            for _ in 0..times {
                self = f(self);
            }
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seeds::Seed;
    use super::*;
    use std::path::PathBuf;

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    /// Replays every file of `fuzz/corpus/<target>/` through `harness`; the committed seeds
    /// must be there.
    fn replay(target: &str, harness: fn(&[u8])) {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{} fails on {}", target, path.display());
            files += 1;
        }
        assert!(
            files >= 10,
            "only {files} corpus files in {}",
            dir.display()
        );
    }

    #[test]
    fn replay_ring_hostile_corpus() {
        replay("ring_hostile", |data| {
            hostile(data);
        });
    }

    #[test]
    fn replay_ring_diff_corpus() {
        replay("ring_diff", differential);
    }

    #[test]
    fn replay_ring_page_corpus() {
        replay("ring_page", page);
    }

    /// The harnesses notice a broken world: a hand-made corrupt page makes the consumer fail
    /// to attach, and writes outside a ring are caught by the guards.
    #[test]
    fn harness_checks_can_fail() {
        let v = TestVchan::new(16, 16);
        v.control().store_index(Side::Left, IndexName::Prod, 17);
        assert!(matches!(
            v.consumer(Role::Server),
            Err(RingError::Corrupt(_))
        ));
        let buf = RawBuf::new(8, 8, GUARD);
        assert!(buf.guards_intact());
        buf.write_abs(GUARD + 8, 0);
        assert!(!buf.guards_intact());
        // A peer write into a ring is visible to the snapshot-based checks.
        let v = TestVchan::new(4, 4);
        v.ring_set(Side::Right, 3, 9);
        assert_eq!(v.ring_snapshot(Side::Right), [0, 0, 0, 9]);
    }

    /// Builds the seed corpora. Run with
    /// `cargo test -p vchan-ring --lib write_seed_corpus -- --ignored` after changing the
    /// harness input formats; the files are committed.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        for (target, seeds) in [
            ("ring_hostile", hostile_seeds()),
            ("ring_diff", diff_seeds()),
            ("ring_page", page_seeds()),
        ] {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, seed) in seeds {
                std::fs::write(dir.join(format!("seed-{name}")), &seed.0).unwrap();
            }
        }
    }

    /// Every seed passes its harness (also when the corpus files are absent), and the hostile
    /// seeds reach what they were written for.
    #[test]
    fn seeds_pass() {
        for (name, s) in hostile_seeds() {
            let r = hostile(&s.0);
            let expect_producer_corrupt = ["cons-beyond-published", "cons-backwards"];
            let expect_consumer_corrupt = ["prod-too-far", "prod-backwards", "prod-at-u32-max"];
            assert_eq!(r.attached, name != "attach-prod-too-far", "{name}: {r:?}");
            assert_eq!(
                r.producer_corrupt,
                expect_producer_corrupt.contains(&name),
                "{name}: {r:?}"
            );
            assert_eq!(
                r.consumer_corrupt,
                expect_consumer_corrupt.contains(&name),
                "{name}: {r:?}"
            );
            if name.starts_with("honest") || name.ends_with("geometry") {
                assert!(r.written >= 12 && r.read >= 12, "{name}: {r:?}");
            }
        }
        for (_, s) in diff_seeds() {
            differential(&s.0);
        }
        for (_, s) in page_seeds() {
            page(&s.0);
        }
    }

    // Hostile-harness op codes.
    const STAGE: u8 = 0;
    const WRITE: u8 = 2;
    const WRITE_ALL: u8 = 3;
    const RESERVE: u8 = 4;
    const RESERVE_UP_TO: u8 = 5;
    const PUBLISH_CHECK: u8 = 8;
    const SPACE: u8 = 9;
    const READ: u8 = 12;
    const READ_EXACT: u8 = 13;
    const PEEK: u8 = 14;
    const C_PUBLISH_CHECK: u8 = 17;
    const AVAILABLE: u8 = 18;
    const PEER_CONSUME: u8 = 19;
    const PEER_PRODUCE: u8 = 20;
    const PEER_INDEX: u8 = 21;
    const OWN_JUNK: u8 = 22;
    const RING_JUNK: u8 = 23;
    const PAGE_JUNK: u8 = 24;

    /// Header: separate rings of 2^w (write) and 2^r (read) bytes.
    fn sized(role_client: bool, w: u8, r: u8) -> Seed {
        let mode = u8::from(role_client);
        let (left, right) = if role_client { (w, r) } else { (r, w) };
        Seed::default().b(mode).b(left).b(right)
    }

    fn ping_pong(s: Seed, n: u16) -> Seed {
        s.b(WRITE)
            .h(n)
            .b(PEER_CONSUME)
            .h(n)
            .b(PEER_PRODUCE)
            .h(n)
            .b(READ)
            .h(n)
    }

    fn hostile_seeds() -> Vec<(&'static str, Seed)> {
        let mut v = Vec::new();
        for (name, w, r, n) in [
            ("honest-4", 2u8, 2u8, 3u16),
            ("honest-1", 0, 0, 1),
            ("honest-1k", 10, 10, 700),
            ("honest-4k-2k", 12, 11, 3000),
        ] {
            v.push((name, sized(true, w, r).repeat(12, |s| ping_pong(s, n))));
        }
        v.push((
            "server-in-page-geometry",
            Seed::default()
                .b(2)
                .h(0)
                .h(0)
                .repeat(10, |s| ping_pong(s, 700)),
        ));
        v.push((
            "client-granted-geometry",
            Seed::default()
                .b(3)
                .h(8192)
                .h(4800)
                .repeat(10, |s| ping_pong(s, 5000)),
        ));
        v.push((
            "resume-consistent-indices",
            Seed::default()
                .b(4 | 1)
                .b(4)
                .b(4)
                .w(u32::MAX - 5)
                .w(u32::MAX - 9)
                .w(7)
                .w(3)
                .repeat(8, |s| ping_pong(s, 5)),
        ));
        v.push((
            "attach-prod-too-far",
            Seed::default().b(4).b(4).b(4).w(100).w(0).w(100).w(0),
        ));
        v.push((
            "cons-beyond-published",
            sized(false, 4, 4)
                .b(WRITE)
                .h(5)
                .b(PEER_INDEX)
                .b(2)
                .w(9)
                .b(SPACE)
                .h(2)
                .b(WRITE)
                .h(3),
        ));
        v.push((
            "cons-backwards",
            sized(false, 4, 4)
                .b(WRITE)
                .h(16)
                .b(PEER_CONSUME)
                .h(10)
                .b(SPACE)
                .h(0)
                .b(PEER_INDEX)
                .b(2)
                .w(0xFFFF_FFFB)
                .b(WRITE)
                .h(16)
                .b(WRITE_ALL)
                .h(1),
        ));
        v.push((
            "prod-too-far",
            sized(true, 3, 3)
                .b(PEER_INDEX)
                .b(1)
                .w(9)
                .b(READ)
                .h(8)
                .b(READ_EXACT)
                .h(1)
                .b(PEEK)
                .h(1)
                .h(0),
        ));
        v.push((
            "prod-backwards",
            sized(true, 3, 3)
                .b(PEER_PRODUCE)
                .h(6)
                .b(READ)
                .h(1)
                .b(PEER_INDEX)
                .b(1 | 2)
                .w(0xFFFF_FFFE)
                .b(AVAILABLE)
                .h(2)
                .b(READ)
                .h(4),
        ));
        v.push((
            "prod-at-u32-max",
            sized(true, 2, 2)
                .b(PEER_INDEX)
                .b(1)
                .w(u32::MAX)
                .b(READ)
                .h(1),
        ));
        v.push((
            "own-index-junk",
            sized(true, 3, 3)
                .b(OWN_JUNK)
                .w(0xDEAD_BEEF)
                .w(0x1234_5678)
                .repeat(6, |s| ping_pong(s, 5)),
        ));
        v.push((
            "ring-junk-during-reads",
            sized(true, 4, 4).repeat(6, |s| {
                s.b(PEER_PRODUCE)
                    .h(9)
                    .b(RING_JUNK)
                    .b(1)
                    .b(3)
                    .h(2)
                    .b(0xEE)
                    .h(5)
                    .b(0x11)
                    .h(15)
                    .b(0x22)
                    .b(READ)
                    .h(4)
            }),
        ));
        v.push((
            "page-junk",
            sized(false, 4, 4).repeat(6, |s| {
                s.b(PAGE_JUNK)
                    .h(4)
                    .b(0xFF)
                    .b(PAGE_JUNK)
                    .h(6)
                    .b(3)
                    .b(PAGE_JUNK)
                    .h(200)
                    .b(7)
                    .b(WRITE)
                    .h(3)
                    .b(PUBLISH_CHECK)
            }),
        ));
        v.push((
            "reserve-wraps",
            sized(true, 3, 3).repeat(8, |s| {
                s.b(RESERVE)
                    .h(5)
                    .h(4)
                    .b(PUBLISH_CHECK)
                    .b(PEER_CONSUME)
                    .h(5)
                    .b(RESERVE_UP_TO)
                    .h(7)
                    .h(9)
                    .b(STAGE)
                    .h(2)
            }),
        ));
        v.push((
            "notify-requests",
            sized(true, 2, 2).repeat(6, |s| {
                s.b(SPACE)
                    .h(3)
                    .b(AVAILABLE)
                    .h(3)
                    .b(PEER_PRODUCE)
                    .h(2)
                    .b(READ)
                    .h(1)
                    .b(C_PUBLISH_CHECK)
                    .b(WRITE)
                    .h(4)
                    .b(PUBLISH_CHECK)
                    .b(PEER_CONSUME)
                    .h(4)
            }),
        ));
        v.push((
            "too-large",
            sized(true, 2, 2)
                .b(WRITE_ALL)
                .h(9)
                .b(READ_EXACT)
                .h(9)
                .b(RESERVE)
                .h(9)
                .h(0),
        ));
        v
    }

    fn diff_seeds() -> Vec<(&'static str, Seed)> {
        let mut v = Vec::new();
        // op codes: 0 stage, 1 stage_all, 2 reserve, 3 reserve_up_to, 4 publish,
        // 5 publish_and_check, 6 space_or_request, 7 space, 8 take, 9 take_exact, 10 peek,
        // 11 consume, 12 publish, 13 publish_and_check, 14 available_or_request, 15 available
        for (name, order) in [
            ("size-1", 0u8),
            ("size-4", 2),
            ("size-64", 6),
            ("size-4096", 12),
        ] {
            let n = (1u16 << order) * 3 / 4 + 1;
            v.push((
                name,
                Seed::default().b(order).repeat(10, |s| {
                    s.b(0)
                        .h(n)
                        .b(4)
                        .h(0)
                        .b(8)
                        .h(n / 2 + 1)
                        .b(12)
                        .h(0)
                        .b(1)
                        .h(n)
                        .b(5)
                        .h(0)
                        .b(9)
                        .h(n)
                        .b(13)
                        .h(0)
                }),
            ));
        }
        v.push((
            "reserve-peek-wrap",
            Seed::default().b(3).repeat(12, |s| {
                s.b(2)
                    .h(5)
                    .h(5)
                    .b(4)
                    .h(0)
                    .b(10)
                    .h(1)
                    .h(3)
                    .b(12)
                    .h(0)
                    .b(3)
                    .h(7)
                    .h(2)
                    .b(5)
                    .h(0)
                    .b(11)
                    .h(9)
                    .b(13)
                    .h(0)
            }),
        ));
        v.push((
            "notify-both-ways",
            Seed::default().b(2).repeat(10, |s| {
                s.b(14)
                    .h(3)
                    .b(0)
                    .h(2)
                    .b(5)
                    .h(0)
                    .b(6)
                    .h(4)
                    .b(8)
                    .h(2)
                    .b(13)
                    .h(0)
                    .b(7)
                    .h(0)
                    .b(15)
                    .h(0)
            }),
        ));
        v.push((
            "errors",
            Seed::default()
                .b(2)
                .b(1)
                .h(9)
                .b(9)
                .h(9)
                .b(2)
                .h(9)
                .h(0)
                .b(11)
                .h(7)
                .b(9)
                .h(3)
                .b(1)
                .h(4)
                .b(1)
                .h(1),
        ));
        v.push((
            "stale-caches",
            Seed::default().b(4).repeat(8, |s| {
                s.b(0)
                    .h(10)
                    .b(4)
                    .h(0)
                    .b(8)
                    .h(3)
                    .b(12)
                    .h(0)
                    .b(0)
                    .h(16)
                    .b(10)
                    .h(2)
                    .h(1)
                    .b(10)
                    .h(20)
                    .h(0)
            }),
        ));
        v.push(("empty", Seed::default()));
        v.push((
            "zero-lengths",
            Seed::default()
                .b(5)
                .repeat(16, |s| s.b(0).h(0).b(8).h(0).b(10).h(0).h(0)),
        ));
        v
    }

    fn page_seeds() -> Vec<(&'static str, Seed)> {
        let header = |l: u16, r: u16, grants: &[u32]| {
            let mut s = Seed::default()
                .w(1)
                .w(2)
                .w(3)
                .w(4)
                .h(l)
                .h(r)
                .b(1)
                .b(1)
                .b(NOTIFY_WRITE)
                .b(NOTIFY_WRITE);
            for &g in grants {
                s = s.w(g);
            }
            s
        };
        let many: Vec<u32> = (1..=600).collect();
        let mut v = Vec::new();
        for (name, l, r, count) in [
            ("default-10-11", 10u16, 11u16, 0usize),
            ("swapped-11-10", 11, 10, 0),
            ("pages-12-12", 12, 12, 2),
            ("pages-16-13", 16, 13, 18),
            ("max-20-20", 20, 20, 512),
            ("in-page-11-max-20", 11, 20, 256),
            ("in-page-10-19", 10, 19, 128),
            ("overlap-10-20", 10, 20, 256),
            ("collision-10-10", 10, 10, 0),
            ("collision-11-11", 11, 11, 0),
            ("order-9", 9, 11, 0),
            ("order-21", 12, 21, 0),
            ("order-max-u16", u16::MAX, 12, 0),
        ] {
            v.push((name, header(l, r, &many[..count])));
        }
        v.push(("short", Seed::default().w(0).h(10)));
        v.push((
            "server-choice-sizes",
            header(12, 12, &[7, 8]).w(1025).w(2049),
        ));
        v.push((
            "server-choice-too-big",
            header(10, 11, &[]).w(1 << 20).w((1 << 20) + 1),
        ));
        v
    }
}
