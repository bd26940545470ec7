//! Fuzz harnesses of the frame layer (hidden; compiled with the `fuzzing` feature or in
//! tests).
//!
//! The cargo-fuzz targets `fuzz/fuzz_targets/frame_*.rs` are one-line wrappers around
//! [`hostile`] and [`roundtrip`]; the tests at the bottom replay every file of
//! `fuzz/corpus/frame_*/` through the same functions, so the committed corpus runs in plain
//! `cargo test`.
//!
//! * [`hostile`]: the real [`FrameConsumer`] reads a heap ring (with guard zones) written by
//!   a scripted **hostile writer**: honest frames, garbage headers, raw byte writes anywhere
//!   (also into the frame being read, between accessor calls), arbitrary producer indices,
//!   and — optionally — every ring byte the reader copies out is changed right after the
//!   copy, as a concurrent writer would at the worst moment. Checked: no panic, no access
//!   outside the ring (guards intact), errors are sticky, the header a frame reports is the
//!   one fetched (once) from the ring, the consumer index moves by exactly the skip and the
//!   frame's footprint, and while the writer has been honest every frame arrives intact.
//! * [`roundtrip`]: the real [`FrameProducer`] and [`FrameConsumer`] against a model:
//!   whether each frame fits (skip markers included) is predicted exactly, and every frame
//!   arrives intact.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use vchan_ring::{Consumer, ContiguousRingMemory, IndexCell, Producer, RingError, RingMemory};

use super::core::{FrameConsumer, FrameProducer};
use super::error::FrameError;
use super::wire::{FIRST_RESERVED_TAG, HEADER_LEN, TAG_SKIP, footprint, max_payload};

/// Guard bytes on each side of the ring.
const GUARD: usize = 64;
/// Most operations one input drives.
const MAX_OPS: usize = 4096;

fn guard_byte(i: usize) -> u8 {
    0x5A ^ (i as u8).wrapping_mul(29)
}

/// Ring memory on the heap, reached only through raw pointers, with guard zones, a log of
/// the reader's copies, and optional mutation of every byte right after the reader copied it.
#[derive(Debug)]
pub struct HostileRing {
    alloc: NonNull<u8>,
    layout: Layout,
    size: usize,
    prod: AtomicU32,
    cons: AtomicU32,
    /// Change bytes right after the reader copies them out.
    flip_after_copy: Cell<bool>,
    rng: Cell<u64>,
    /// `(ring offset, length, first 8 bytes as copied)` of each `copy_out` since the last
    /// [`HostileRing::take_log`].
    log: RefCell<Vec<(usize, usize, [u8; 8])>>,
}

impl HostileRing {
    /// A zeroed ring of `size` bytes (a power of two) between guard zones.
    pub fn new(size: usize) -> HostileRing {
        assert!(size.is_power_of_two(), "ring size {size}");
        let layout = match Layout::from_size_align(size + 2 * GUARD, 64) {
            Ok(l) => l,
            Err(e) => panic!("layout for a {size}-byte test ring: {e}"),
        };
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(alloc) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        let ring = HostileRing {
            alloc,
            layout,
            size,
            prod: AtomicU32::new(0),
            cons: AtomicU32::new(0),
            flip_after_copy: Cell::new(false),
            rng: Cell::new(0x9E37_79B9_7F4A_7C15),
            log: RefCell::new(Vec::new()),
        };
        for i in (0..GUARD).chain(GUARD + size..size + 2 * GUARD) {
            ring.put_abs(i, guard_byte(i));
        }
        ring
    }

    fn put_abs(&self, i: usize, v: u8) {
        assert!(i < self.layout.size());
        // SAFETY: `i` is inside the allocation (asserted), which lives as long as `self`;
        // it is only ever accessed through raw pointers.
        unsafe { self.alloc.as_ptr().wrapping_add(i).write_volatile(v) }
    }

    fn get_abs(&self, i: usize) -> u8 {
        assert!(i < self.layout.size());
        // SAFETY: as in `put_abs`.
        unsafe { self.alloc.as_ptr().wrapping_add(i).read_volatile() }
    }

    /// Ring size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Writes `bytes` at ring offset `offset` (wrapping), as the peer may at any time.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        for (k, &b) in bytes.iter().enumerate() {
            self.put_abs(GUARD + (offset + k) % self.size, b);
        }
    }

    /// Reads `len` bytes at ring offset `offset` (wrapping).
    pub fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|k| self.get_abs(GUARD + (offset + k) % self.size))
            .collect()
    }

    /// Whether both guard zones are intact.
    pub fn guards_intact(&self) -> bool {
        (0..GUARD)
            .chain(GUARD + self.size..self.size + 2 * GUARD)
            .all(|i| self.get_abs(i) == guard_byte(i))
    }

    /// Turns the change-after-copy mode on or off.
    pub fn set_flip_after_copy(&self, on: bool) {
        self.flip_after_copy.set(on);
    }

    /// The reader's copies since the last call.
    pub fn take_log(&self) -> Vec<(usize, usize, [u8; 8])> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    /// The shared producer index.
    pub fn prod(&self) -> &AtomicU32 {
        &self.prod
    }

    /// The shared consumer index.
    pub fn cons(&self) -> &AtomicU32 {
        &self.cons
    }

    fn next_rand(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// The reader half over this ring.
    pub fn consumer(&self) -> Result<Consumer<HostileBytes<'_>, HostileIndex<'_>>, RingError> {
        Consumer::new(
            HostileBytes(self),
            HostileIndex(&self.prod),
            HostileIndex(&self.cons),
        )
    }

    /// A reader half over this ring whose indices are reached through `prod` and `cons`
    /// (cells over [`HostileRing::prod`] and [`HostileRing::cons`] that do something when
    /// they are loaded, for tests that act at an exact moment of the reader's protocol).
    pub fn consumer_with<X: IndexCell>(
        &self,
        prod: X,
        cons: X,
    ) -> Result<Consumer<HostileBytes<'_>, X>, RingError> {
        Consumer::new(HostileBytes(self), prod, cons)
    }

    /// A writer half over this ring (for the round-trip harness).
    pub fn producer(&self) -> Result<Producer<HostileBytes<'_>, HostileIndex<'_>>, RingError> {
        Producer::new(
            HostileBytes(self),
            HostileIndex(&self.prod),
            HostileIndex(&self.cons),
        )
    }
}

impl Drop for HostileRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; freed once.
        unsafe { std::alloc::dealloc(self.alloc.as_ptr(), self.layout) };
    }
}

/// The bytes of a [`HostileRing`].
#[derive(Debug)]
pub struct HostileBytes<'a>(&'a HostileRing);

// SAFETY: `size` is the ring's fixed power-of-two size; the copies touch exactly
// `offset..offset + len` of the ring body (between the guard zones).
unsafe impl RingMemory for HostileBytes<'_> {
    fn size(&self) -> usize {
        self.0.size
    }

    unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.0.size);
        // SAFETY: in bounds (asserted); `src` is a Rust slice, never this heap ring (which is
        // only reached through raw pointers), so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.base().as_ptr().wrapping_add(offset),
                src.len(),
            );
        }
    }

    unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        let ring = self.0;
        assert!(offset + dst.len() <= ring.size);
        // SAFETY: in bounds (asserted); `dst` is private memory, not this ring.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base().as_ptr().wrapping_add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        let mut first = [0u8; 8];
        let n = dst.len().min(8);
        first[..n].copy_from_slice(&dst[..n]);
        ring.log.borrow_mut().push((offset, dst.len(), first));
        if ring.flip_after_copy.get() {
            // A concurrent writer changes what we just read: a reader that fetched twice
            // would now see other values.
            for k in 0..dst.len() {
                let noise = ring.next_rand() as u8 | 1;
                let i = GUARD + offset + k;
                ring.put_abs(i, ring.get_abs(i) ^ noise);
            }
        }
    }
}

// SAFETY: `base` is the first of the `size` ring bytes, valid while the ring lives (the
// `'a` borrow); the copies above use exactly that range.
unsafe impl ContiguousRingMemory for HostileBytes<'_> {
    fn base(&self) -> NonNull<u8> {
        // SAFETY: `GUARD` is inside the allocation.
        unsafe { self.0.alloc.add(GUARD) }
    }
}

/// An index of a [`HostileRing`].
#[derive(Debug)]
pub struct HostileIndex<'a>(&'a AtomicU32);

impl IndexCell for HostileIndex<'_> {
    fn load(&self, order: Ordering) -> u32 {
        self.0.load(order)
    }

    fn store(&self, value: u32, order: Ordering) {
        self.0.store(value, order);
    }
}

/// Reads the fuzz input a few bytes at a time (zeros once it runs out).
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let v = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in &mut a {
            *b = self.u8();
        }
        a
    }
}

/// A producer index the hostile writer publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProdValue {
    /// Any value.
    Absolute(u32),
    /// The writer's tail plus this.
    TailPlus(u8),
    /// The reader's published index plus this.
    ConsPlus(u16),
}

/// What the reader does with a frame, and what the writer does to it meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Offset in the payload (taken modulo `len + 16`).
    pub offset: u16,
    /// `kind % 7`: 0 `read::<u64>`, 1 `read_into` 13 bytes, 2 `to_vec`, 3 `write_to`, 4 `get`,
    /// 5 `subslice`, 6 the writer rewrites 8 bytes of the frame (header included) with
    /// `bytes`.
    pub kind: u8,
    /// Bytes for kind 6.
    pub bytes: [u8; 8],
}

/// One step of the [`hostile`] harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostileOp {
    /// The honest writer stages a frame (tag modulo the reserved range, length modulo the
    /// largest payload).
    Frame {
        /// Tag.
        tag: u32,
        /// Payload length.
        len: u16,
    },
    /// The writer publishes what it staged.
    Publish,
    /// Garbage written at a ring offset (at most 15 bytes).
    Garbage {
        /// Ring offset (wrapping).
        offset: u16,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A raw header at the writer's tail, then the tail jumps.
    RawHeader {
        /// Tag.
        tag: u32,
        /// Length; `None`: the skip length that would be valid at the tail.
        len: Option<u32>,
        /// Tail jump (even values are rounded down to a multiple of 8).
        jump: u8,
    },
    /// A producer index.
    Prod(ProdValue),
    /// Turns change-after-copy on or off.
    ToggleFlip,
    /// The reader receives a frame, accesses it (at most 3 accesses), and releases it
    /// (`release % 4 == 0`: leaves it unread).
    Recv {
        /// Accesses, in order.
        accesses: Vec<Access>,
        /// How it is released.
        release: u8,
    },
    /// The reader receives a typed copy (`kind % 3`: `u64`, `[u8; 16]`, `[u32; 3]`); with
    /// `kind >= 0xC0`, a batch of at most `kind % 8 + 1` frames instead
    /// ([`FrameConsumer::try_recv_batch`]), each checked as [`HostileOp::Recv`] checks one.
    RecvCopy(u8),
}

/// A [`hostile`] input: ring size `16 << (order % 9)`, the initial change-after-copy mode,
/// and the steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileScript {
    /// Ring order selector.
    pub order: u8,
    /// Change bytes right after the reader copied them.
    pub flip: bool,
    /// The steps.
    pub ops: Vec<HostileOp>,
}

impl HostileScript {
    /// Parses any bytes (missing bytes read as zero).
    pub fn parse(data: &[u8]) -> HostileScript {
        let mut input = Input { data, at: 0 };
        let order = input.u8();
        let flip = input.u8() & 1 == 1;
        let mut ops = Vec::new();
        while !input.done() && ops.len() < MAX_OPS {
            ops.push(match input.u8() % 10 {
                0 | 1 => HostileOp::Frame {
                    tag: input.u32(),
                    len: input.u16(),
                },
                2 => HostileOp::Publish,
                3 => {
                    let offset = input.u16();
                    let n = input.u8() as usize % 16;
                    HostileOp::Garbage {
                        offset,
                        bytes: (0..n).map(|_| input.u8()).collect(),
                    }
                }
                4 => {
                    let tag = input.u32();
                    let len = match input.u8() % 2 {
                        0 => None,
                        _ => Some(input.u32()),
                    };
                    HostileOp::RawHeader {
                        tag,
                        len,
                        jump: input.u8(),
                    }
                }
                5 => HostileOp::Prod(match input.u8() % 3 {
                    0 => ProdValue::Absolute(input.u32()),
                    1 => ProdValue::TailPlus(input.u8()),
                    _ => ProdValue::ConsPlus(input.u16()),
                }),
                6 => HostileOp::ToggleFlip,
                7 | 8 => {
                    let n = input.u8() % 4;
                    let accesses = (0..n)
                        .map(|_| Access {
                            offset: input.u16(),
                            kind: input.u8(),
                            bytes: input.array(),
                        })
                        .collect();
                    HostileOp::Recv {
                        accesses,
                        release: input.u8(),
                    }
                }
                _ => HostileOp::RecvCopy(input.u8()),
            });
        }
        HostileScript { order, flip, ops }
    }

    /// The bytes that parse back to this script.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.order, u8::from(self.flip)];
        for op in &self.ops {
            match op {
                HostileOp::Frame { tag, len } => {
                    out.push(0);
                    out.extend_from_slice(&tag.to_le_bytes());
                    out.extend_from_slice(&len.to_le_bytes());
                }
                HostileOp::Publish => out.push(2),
                HostileOp::Garbage { offset, bytes } => {
                    out.push(3);
                    out.extend_from_slice(&offset.to_le_bytes());
                    let n = bytes.len().min(15);
                    out.push(n as u8);
                    out.extend_from_slice(&bytes[..n]);
                }
                HostileOp::RawHeader { tag, len, jump } => {
                    out.push(4);
                    out.extend_from_slice(&tag.to_le_bytes());
                    match len {
                        None => out.push(0),
                        Some(l) => {
                            out.push(1);
                            out.extend_from_slice(&l.to_le_bytes());
                        }
                    }
                    out.push(*jump);
                }
                HostileOp::Prod(p) => {
                    out.push(5);
                    match p {
                        ProdValue::Absolute(v) => {
                            out.push(0);
                            out.extend_from_slice(&v.to_le_bytes());
                        }
                        ProdValue::TailPlus(v) => out.extend_from_slice(&[1, *v]),
                        ProdValue::ConsPlus(v) => {
                            out.push(2);
                            out.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                HostileOp::ToggleFlip => out.push(6),
                HostileOp::Recv { accesses, release } => {
                    out.push(7);
                    let n = accesses.len().min(3);
                    out.push(n as u8);
                    for a in &accesses[..n] {
                        out.extend_from_slice(&a.offset.to_le_bytes());
                        out.push(a.kind);
                        out.extend_from_slice(&a.bytes);
                    }
                    out.push(*release);
                }
                HostileOp::RecvCopy(k) => out.extend_from_slice(&[9, *k]),
            }
        }
        out
    }
}

/// A payload derived from a seed (so that inputs stay short).
fn payload(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed as u64 | 1 << 40;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The honest writer of the hostile harness: an encoder written independently of
/// [`FrameProducer`] (all-or-nothing: skip marker and frame together).
struct ReferenceWriter {
    tail: u32,
}

impl ReferenceWriter {
    /// Writes one frame unpublished; false if it does not fit now.
    fn frame(&mut self, ring: &HostileRing, tag: u32, body: &[u8]) -> bool {
        let size = ring.size();
        let Some(fp) = footprint(body.len()).filter(|&f| f <= size) else {
            return false;
        };
        if self.tail % 8 != 0 {
            return false; // a hostile jump left the tail between frames
        }
        let pos = self.tail as usize & (size - 1);
        let room = size - pos;
        let need = if fp > room { room + fp } else { fp };
        let used = self.tail.wrapping_sub(ring.cons().load(Ordering::Acquire)) as usize;
        if used > size || need > size - used {
            return false;
        }
        let mut pos = pos;
        if fp > room {
            let mut skip = TAG_SKIP.to_le_bytes().to_vec();
            skip.extend_from_slice(&((room - HEADER_LEN) as u32).to_le_bytes());
            ring.write(pos, &skip);
            self.tail = self.tail.wrapping_add(room as u32);
            pos = 0;
        }
        let mut bytes = tag.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.resize(fp, 0);
        ring.write(pos, &bytes);
        self.tail = self.tail.wrapping_add(fp as u32);
        true
    }
}

/// How the reader failed, to check that failures are sticky.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Malformed,
    Corrupt,
}

fn classify(e: &FrameError) -> Failure {
    match e {
        FrameError::Malformed { .. } => Failure::Malformed,
        FrameError::Ring(RingError::Corrupt(_)) => Failure::Corrupt,
        other => panic!("unexpected reader error: {other}"),
    }
}

fn describe(e: &FrameError) -> String {
    match e {
        FrameError::Malformed { problem, .. } => {
            let name = format!("{problem:?}");
            let variant = name.split([' ', '{']).next().unwrap_or_default().to_owned();
            format!("Malformed: {variant}")
        }
        _ => "Corrupt".into(),
    }
}

/// What one [`hostile`] run did (for coverage checks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostileStats {
    /// Frames the reader returned.
    pub frames: usize,
    /// Of which checked against what the honest writer sent.
    pub honest_frames: usize,
    /// Frames that came after a skip marker.
    pub after_skip: usize,
    /// The reader's failure, if it failed: `"Malformed: <problem>"` or `"Corrupt"`.
    pub failure: Option<String>,
}

/// The state of one [`hostile`] run.
struct Hostile<'r> {
    ring: &'r HostileRing,
    size: usize,
    writer: ReferenceWriter,
    /// Frames the honest writer published and the reader has not received, in order.
    sent: VecDeque<(u32, Vec<u8>)>,
    staged: Vec<(u32, Vec<u8>)>,
    /// Nothing hostile has happened yet: every frame must arrive intact.
    honest: bool,
    failed: Option<Failure>,
    stats: HostileStats,
}

impl Hostile<'_> {
    fn fail(&mut self, e: &FrameError) {
        match self.failed {
            None => {
                assert!(!self.honest, "an honest writer's frames failed: {e}");
                self.failed = Some(classify(e));
                self.stats.failure = Some(describe(e));
            }
            Some(f) => assert_eq!(classify(e), f, "failures are sticky: {e}"),
        }
    }

    fn write_op(&mut self, op: &HostileOp) {
        let (ring, size) = (self.ring, self.size);
        let mask = size - 1;
        match op {
            HostileOp::Frame { tag, len } => {
                let tag = tag % FIRST_RESERVED_TAG;
                let body = payload(tag, *len as usize % (max_payload(size) + 1));
                if self.writer.frame(ring, tag, &body) {
                    self.staged.push((tag, body));
                }
            }
            HostileOp::Publish => {
                ring.prod().store(self.writer.tail, Ordering::Release);
                self.sent.extend(self.staged.drain(..));
            }
            HostileOp::Garbage { offset, bytes } => {
                ring.write(*offset as usize, bytes);
                self.honest = false;
            }
            HostileOp::RawHeader { tag, len, jump } => {
                let at = self.writer.tail as usize & mask;
                let len = len.unwrap_or((size - at).wrapping_sub(HEADER_LEN) as u32);
                let mut h = tag.to_le_bytes().to_vec();
                h.extend_from_slice(&len.to_le_bytes());
                ring.write(at, &h);
                let jump = *jump as u32;
                let jump = if jump & 1 == 0 { jump & !7 } else { jump };
                self.writer.tail = self.writer.tail.wrapping_add(jump);
                self.honest = false;
            }
            HostileOp::Prod(p) => {
                let prod = match *p {
                    ProdValue::Absolute(v) => v,
                    ProdValue::TailPlus(v) => self.writer.tail.wrapping_add(v as u32),
                    ProdValue::ConsPlus(v) => {
                        ring.cons().load(Ordering::Relaxed).wrapping_add(v as u32)
                    }
                };
                ring.prod().store(prod, Ordering::Release);
                self.honest = false;
            }
            HostileOp::ToggleFlip => ring.set_flip_after_copy(!ring.flip_after_copy.get()),
            HostileOp::Recv { .. } | HostileOp::RecvCopy(_) => {}
        }
    }

    fn recv<M, X>(&mut self, reader: &mut FrameConsumer<M, X>, accesses: &[Access], release: u8)
    where
        M: ContiguousRingMemory,
        X: IndexCell,
    {
        let (ring, size) = (self.ring, self.size);
        let mask = size - 1;
        let cons_before = ring.cons().load(Ordering::Relaxed);
        ring.take_log();
        let frame = match (reader.try_recv(), self.failed) {
            (Err(e), _) => return self.fail(&e),
            (Ok(_), Some(f)) => panic!("a reader that failed ({f:?}) read again"),
            (Ok(None), None) => {
                if self.honest {
                    assert!(self.sent.is_empty(), "published frames were not found");
                }
                return;
            }
            (Ok(Some(frame)), None) => frame,
        };
        // Where the frame is, and that its header is the one fetched, once.
        let base = ring.alloc.as_ptr() as usize + GUARD;
        let payload_at = (frame.bytes().as_ptr() as usize).wrapping_sub(base);
        assert!(payload_at >= HEADER_LEN && payload_at + frame.len() <= size);
        let start = payload_at - HEADER_LEN;
        let fetches: Vec<_> = ring
            .take_log()
            .into_iter()
            .filter(|&(off, _, _)| off == start)
            .collect();
        assert_eq!(fetches.len(), 1, "the header at {start} was fetched once");
        let (_, n, h) = fetches[0];
        assert!(n >= HEADER_LEN);
        assert_eq!(frame.tag(), u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
        assert_eq!(
            frame.len() as u32,
            u32::from_le_bytes([h[4], h[5], h[6], h[7]])
        );
        assert!(frame.len() <= max_payload(size) && frame.tag() < FIRST_RESERVED_TAG);
        let head = cons_before as usize & mask;
        let skipped = if start == head {
            0
        } else {
            assert_eq!(start, 0, "a frame starts at the head or after a skip");
            size - head
        };
        self.stats.frames += 1;
        if skipped > 0 {
            self.stats.after_skip += 1;
        }
        let mut expected = None;
        if self.honest {
            self.stats.honest_frames += 1;
            let Some((tag, body)) = self.sent.pop_front() else {
                panic!("a frame the honest writer did not publish")
            };
            assert_eq!(frame.tag(), tag);
            assert_eq!(frame.to_vec(), body, "payload of tag {tag:#x}");
            expected = Some((tag, body));
        }
        // Accesses, with the frame rewritten between them.
        let len = frame.len();
        for a in accesses {
            let off = a.offset as usize % (len + 16);
            match a.kind % 7 {
                0 => assert_eq!(frame.read::<u64>(off).is_ok(), off + 8 <= len),
                1 => {
                    let mut buf = [0u8; 13];
                    assert_eq!(frame.read_into(off, &mut buf).is_ok(), off + 13 <= len);
                }
                2 => assert_eq!(frame.to_vec().len(), len),
                3 => {
                    let mut out = Vec::new();
                    if let Err(e) = frame.write_to(&mut out) {
                        panic!("writing to a Vec: {e}");
                    }
                    assert_eq!(out.len(), len);
                }
                4 => assert_eq!(frame.bytes().get(off).is_some(), off < len),
                5 => assert_eq!(frame.bytes().subslice(off, 5).is_ok(), off + 5 <= len),
                _ => {
                    // The peer rewrites the frame (header included) under us.
                    ring.write(start + off % (len + HEADER_LEN), &a.bytes);
                    self.honest = false;
                }
            }
            // The header we hold does not change, whatever the ring says now.
            assert_eq!(frame.len(), len);
        }
        if release % 4 == 0 {
            frame.unread();
            let cons = ring.cons().load(Ordering::Relaxed);
            assert_eq!(cons.wrapping_sub(cons_before) as usize, skipped);
            if ring.flip_after_copy.get() {
                // Its header was changed after we fetched it: when it is read again, it is
                // whatever the "concurrent writer" left.
                self.honest = false;
            }
            if self.honest {
                if let Some(again) = expected.take() {
                    self.sent.push_front(again);
                }
            }
        } else {
            if let Err(e) = frame.finish() {
                panic!("releasing a frame: {e}");
            }
            let cons = ring.cons().load(Ordering::Relaxed);
            let fp = footprint(len).unwrap_or(usize::MAX);
            assert_eq!(
                cons.wrapping_sub(cons_before) as usize,
                skipped + fp,
                "the consumer moved by the skip and the frame"
            );
        }
    }

    /// A batch receive: every frame delivered is checked as in [`Hostile::recv`] (its header
    /// fetched once, where the walk must be, intact while the writer is honest), and the
    /// consumer index moves by exactly the delivered frames and the skip markers among them
    /// (and one at the end).
    fn recv_batch<M, X>(&mut self, reader: &mut FrameConsumer<M, X>, max: usize)
    where
        M: ContiguousRingMemory,
        X: IndexCell,
    {
        let (ring, size) = (self.ring, self.size);
        let mask = size - 1;
        let cons_before = ring.cons().load(Ordering::Relaxed);
        ring.take_log();
        let base = ring.alloc.as_ptr() as usize + GUARD;
        let mut got: Vec<(usize, u32, usize, Vec<u8>)> = Vec::new();
        let result = reader.try_recv_batch(max, |frame| {
            let payload_at = (frame.bytes().as_ptr() as usize).wrapping_sub(base);
            assert!(payload_at >= HEADER_LEN && payload_at + frame.len() <= size);
            got.push((
                payload_at - HEADER_LEN,
                frame.tag(),
                frame.len(),
                frame.to_vec(),
            ));
        });
        if let Ok(n) = result {
            assert_eq!(n, got.len());
        }
        assert!(got.len() <= max);
        if !got.is_empty() {
            if let Some(f) = self.failed {
                panic!("a reader that failed ({f:?}) read again");
            }
        }
        let log = ring.take_log();
        let mut pos = cons_before as usize & mask;
        let mut moved = 0usize;
        for (start, tag, len, bytes) in got {
            let fetches: Vec<_> = log.iter().filter(|&&(off, _, _)| off == start).collect();
            assert_eq!(fetches.len(), 1, "the header at {start} was fetched once");
            let (_, n, h) = *fetches[0];
            assert!(n >= HEADER_LEN);
            assert_eq!(tag, u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
            assert_eq!(len as u32, u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
            assert!(len <= max_payload(size) && tag < FIRST_RESERVED_TAG);
            if start != pos {
                assert_eq!(
                    start, 0,
                    "a frame starts where the last ended or after a skip"
                );
                moved += size - pos;
                pos = 0;
                self.stats.after_skip += 1;
            }
            let fp = footprint(len).unwrap_or(usize::MAX);
            moved += fp;
            pos = (pos + fp) & mask;
            self.stats.frames += 1;
            if self.honest {
                self.stats.honest_frames += 1;
                let Some((t, body)) = self.sent.pop_front() else {
                    panic!("a frame the honest writer did not publish")
                };
                assert_eq!((tag, &bytes), (t, &body), "payload of tag {t:#x}");
            }
        }
        let delta = ring
            .cons()
            .load(Ordering::Relaxed)
            .wrapping_sub(cons_before) as usize;
        assert!(
            delta == moved || (pos != 0 && delta == moved + size - pos),
            "the consumer moved by {delta}, the frames and skips by {moved}"
        );
        match result {
            Err(e) => self.fail(&e),
            Ok(n) => {
                if self.honest && n < max {
                    assert!(self.sent.is_empty(), "published frames were not found");
                }
            }
        }
    }

    fn recv_copy<M, X>(&mut self, reader: &mut FrameConsumer<M, X>, kind: u8)
    where
        M: ContiguousRingMemory,
        X: IndexCell,
    {
        let r = match kind % 3 {
            0 => reader
                .try_recv_copy::<u64>()
                .map(|o| o.map(|(t, v)| (t, v.to_ne_bytes().to_vec()))),
            1 => reader
                .try_recv_copy::<[u8; 16]>()
                .map(|o| o.map(|(t, v)| (t, v.to_vec()))),
            _ => reader
                .try_recv_copy::<[u32; 3]>()
                .map(|o| o.map(|(t, v)| (t, v.iter().flat_map(|w| w.to_ne_bytes()).collect()))),
        };
        match (r, self.failed) {
            (Err(FrameError::LengthMismatch { tag, len, .. }), None) => {
                if self.honest {
                    let front = self.sent.front().map(|(t, b)| (*t, b.len()));
                    assert_eq!(front, Some((tag, len)));
                }
                // Left unread, with its header changed after the fetch (see `recv`).
                if self.ring.flip_after_copy.get() {
                    self.honest = false;
                }
            }
            (Err(e), _) => self.fail(&e),
            (Ok(_), Some(f)) => panic!("a reader that failed ({f:?}) read again"),
            (Ok(None), None) => {
                if self.honest {
                    assert!(self.sent.is_empty(), "published frames were not found");
                }
            }
            (Ok(Some((tag, bytes))), None) => {
                self.stats.frames += 1;
                if self.honest {
                    self.stats.honest_frames += 1;
                    assert_eq!(self.sent.pop_front(), Some((tag, bytes)));
                }
            }
        }
    }
}

/// The hostile-writer harness (see the module docs). Panics on a violated property.
pub fn hostile(data: &[u8]) -> HostileStats {
    run_hostile(&HostileScript::parse(data))
}

/// [`hostile`] on a parsed script.
pub fn run_hostile(script: &HostileScript) -> HostileStats {
    let size = 16usize << (script.order % 9); // 16 B .. 4 KiB
    let ring = HostileRing::new(size);
    ring.set_flip_after_copy(script.flip);
    let Ok(consumer) = ring.consumer() else {
        panic!("a fresh ring is consistent")
    };
    let mut reader = match FrameConsumer::new(consumer) {
        Ok(r) => r,
        Err(e) => panic!("a fresh ring of {size} bytes carries frames: {e}"),
    };
    let mut run = Hostile {
        ring: &ring,
        size,
        writer: ReferenceWriter { tail: 0 },
        sent: VecDeque::new(),
        staged: Vec::new(),
        honest: true,
        failed: None,
        stats: HostileStats::default(),
    };
    for op in &script.ops {
        match op {
            HostileOp::Recv { accesses, release } => run.recv(&mut reader, accesses, *release),
            HostileOp::RecvCopy(kind) if *kind >= 0xC0 => {
                run.recv_batch(&mut reader, *kind as usize % 8 + 1)
            }
            HostileOp::RecvCopy(kind) => run.recv_copy(&mut reader, *kind),
            other => run.write_op(other),
        }
        assert!(ring.guards_intact(), "a guard zone was overwritten");
    }
    // Whatever the honest writer published is still there to read.
    if run.honest && run.failed.is_none() {
        while !run.sent.is_empty() {
            run.recv(&mut reader, &[], 1);
        }
    }
    assert!(ring.guards_intact(), "a guard zone was overwritten");
    run.stats
}

/// One step of the [`roundtrip`] harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundtripOp {
    /// Stage a frame: `reserve` bytes (modulo the largest payload + 9, so that some are too
    /// large); if `short` is odd, the payload is `short / 2` bytes shorter; if bit 1 of
    /// `short` is clear and the payload is the whole reservation, a typed send.
    Stage {
        /// Tag (modulo the reserved range).
        tag: u32,
        /// Bytes reserved.
        reserve: u16,
        /// Shortening and method.
        short: u8,
    },
    /// Publish what is staged.
    Publish,
    /// Receive: `how % 3`: 0 borrow and leave unread, 1 borrow and release, 2 typed copy of
    /// `[u8; 24]`.
    Recv(u8),
}

/// Parses any bytes into [`roundtrip`] steps, after a ring order selector.
pub fn parse_roundtrip(data: &[u8]) -> (u8, Vec<RoundtripOp>) {
    let mut input = Input { data, at: 0 };
    let order = input.u8();
    let mut ops = Vec::new();
    while !input.done() && ops.len() < MAX_OPS {
        ops.push(match input.u8() % 6 {
            0..=2 => RoundtripOp::Stage {
                tag: input.u32(),
                reserve: input.u16(),
                short: input.u8(),
            },
            3 => RoundtripOp::Publish,
            _ => RoundtripOp::Recv(input.u8()),
        });
    }
    (order, ops)
}

/// The bytes that parse back to `(order, ops)`.
pub fn encode_roundtrip(order: u8, ops: &[RoundtripOp]) -> Vec<u8> {
    let mut out = vec![order];
    for op in ops {
        match *op {
            RoundtripOp::Stage {
                tag,
                reserve,
                short,
            } => {
                out.push(0);
                out.extend_from_slice(&tag.to_le_bytes());
                out.extend_from_slice(&reserve.to_le_bytes());
                out.push(short);
            }
            RoundtripOp::Publish => out.push(3),
            RoundtripOp::Recv(how) => out.extend_from_slice(&[4, how]),
        }
    }
    out
}

/// The round-trip harness (see the module docs). Panics on a violated property.
pub fn roundtrip(data: &[u8]) -> usize {
    let (order, ops) = parse_roundtrip(data);
    run_roundtrip(order, &ops)
}

/// [`roundtrip`] on parsed steps; returns the number of frames received.
pub fn run_roundtrip(order: u8, ops: &[RoundtripOp]) -> usize {
    let size = 16usize << (order % 9);
    let mask = size - 1;
    let ring = HostileRing::new(size);
    let (Ok(tx), Ok(rx)) = (ring.producer(), ring.consumer()) else {
        panic!("a fresh ring is consistent")
    };
    let (mut tx, mut rx) = match (FrameProducer::new(tx), FrameConsumer::new(rx)) {
        (Ok(t), Ok(r)) => (t, r),
        _ => panic!("a fresh {size}-byte ring carries frames"),
    };
    // The model: the writer's private tail, what it published, frames in flight.
    let mut tail: u32 = 0;
    let mut published: u32 = 0;
    let mut in_ring: VecDeque<(u32, Vec<u8>)> = VecDeque::new();
    let mut unpublished = 0usize;
    let mut received = 0;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            RoundtripOp::Stage {
                tag,
                reserve,
                short,
            } => {
                let tag = tag % FIRST_RESERVED_TAG;
                let reserve = reserve as usize % (max_payload(size) + 9);
                let short = short as usize;
                let len = if short & 1 == 1 {
                    reserve.saturating_sub(short >> 1)
                } else {
                    reserve
                };
                let body = payload(tag ^ step as u32, len);
                let cons = ring.cons().load(Ordering::Relaxed);
                let free = size - tail.wrapping_sub(cons) as usize;
                let pos = tail as usize & mask;
                let room = size - pos;
                let fp = footprint(reserve).unwrap_or(usize::MAX);
                let result = if short & 2 == 0 && len == reserve {
                    tx.try_stage(tag, body.as_slice())
                        .map(|ok| ok.then_some(len))
                } else {
                    tx.try_stage_with(tag, reserve, |buf| {
                        buf.write_at(0, &body)?;
                        Ok::<_, FrameError>(len)
                    })
                };
                if reserve > max_payload(size) {
                    assert!(
                        matches!(result, Err(FrameError::TooLarge { .. })),
                        "{result:?}"
                    );
                    continue;
                }
                let (fits, skip) = if fp <= room {
                    (fp <= free, false)
                } else {
                    (room + fp <= free, room <= free)
                };
                match result {
                    Ok(Some(n)) => {
                        assert!(
                            fits,
                            "staged without room: {reserve} in {free} free at {pos}"
                        );
                        assert_eq!(n, len);
                        if fp > room {
                            tail = tail.wrapping_add(room as u32);
                        }
                        tail = tail.wrapping_add(footprint(len).unwrap_or(0) as u32);
                        in_ring.push_back((tag, body));
                        unpublished += 1;
                    }
                    Ok(None) => {
                        assert!(
                            !fits,
                            "refused with room: {reserve} in {free} free at {pos}"
                        );
                        if skip {
                            // The skip marker was staged on its own.
                            tail = tail.wrapping_add(room as u32);
                        }
                    }
                    Err(e) => panic!("staging {reserve} bytes: {e}"),
                }
            }
            RoundtripOp::Publish => {
                tx.publish();
                published = tail;
                unpublished = 0;
            }
            RoundtripOp::Recv(how) => {
                let visible = in_ring.len() - unpublished;
                if how % 3 == 2 {
                    match rx.try_recv_copy::<[u8; 24]>() {
                        Ok(None) => assert_eq!(visible, 0),
                        Ok(Some((tag, v))) => {
                            assert_eq!(in_ring.pop_front(), Some((tag, v.to_vec())));
                            received += 1;
                        }
                        Err(FrameError::LengthMismatch { tag, len, .. }) => {
                            let front = in_ring.front().map(|(t, b)| (*t, b.len()));
                            assert_eq!(front, Some((tag, len)));
                        }
                        Err(e) => panic!("honest frames failed: {e}"),
                    }
                    continue;
                }
                let frame = match rx.try_recv() {
                    Ok(f) => f,
                    Err(e) => panic!("honest frames failed: {e}"),
                };
                match frame {
                    None => assert_eq!(visible, 0, "published frames were not found"),
                    Some(frame) => {
                        assert!(visible > 0, "an unpublished frame was read");
                        let Some((tag, body)) = in_ring.front() else {
                            panic!("a frame that was never sent")
                        };
                        assert_eq!((frame.tag(), frame.to_vec()), (*tag, body.clone()));
                        if how % 3 == 0 {
                            frame.unread();
                        } else {
                            drop(frame);
                            in_ring.pop_front();
                            received += 1;
                        }
                    }
                }
            }
        }
        assert!(ring.guards_intact(), "a guard zone was overwritten");
        assert_eq!(ring.prod().load(Ordering::Relaxed), published);
    }
    // Drain: everything staged arrives, in order.
    tx.publish();
    loop {
        let frame = match rx.try_recv() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => panic!("honest frames failed: {e}"),
        };
        let Some((tag, body)) = in_ring.pop_front() else {
            panic!("a frame that was never sent")
        };
        assert_eq!((frame.tag(), frame.to_vec()), (tag, body));
        received += 1;
    }
    assert!(in_ring.is_empty(), "{} frames lost", in_ring.len());
    assert!(ring.guards_intact(), "a guard zone was overwritten");
    received
}

/// Seed inputs for the corpora: `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use HostileOp as H;
    let recv = |release: u8| H::Recv {
        accesses: vec![],
        release,
    };
    let frame = |tag: u32, len: u16| H::Frame { tag, len };
    let mut out = Vec::new();
    let mut hostile_seed = |name: &str, order: u8, flip: bool, ops: Vec<HostileOp>| {
        let s = HostileScript { order, flip, ops };
        out.push(("frame_hostile", name.to_owned(), s.encode()));
    };
    // Honest traffic that wraps (skip markers) in small and large rings, with and without
    // bytes changing after every copy.
    for (order, flip) in [(0, false), (2, false), (2, true), (6, true), (8, false)] {
        let size = 16u16 << order;
        let mut ops = Vec::new();
        for k in 0..24u16 {
            if k % 3 == 0 {
                // A typed copy of a u64.
                ops.extend([frame(k as u32, 8), H::Publish, H::RecvCopy(0)]);
            } else {
                ops.extend([frame(k as u32, (k * 37) % size), H::Publish, recv(1)]);
            }
        }
        hostile_seed(
            &format!("honest-wrap-{size}-flip{}", u8::from(flip)),
            order,
            flip,
            ops,
        );
    }
    // Accesses of every kind on a frame, the writer rewriting it meanwhile.
    let all_access = (0..7u8)
        .map(|kind| Access {
            offset: kind as u16 * 5,
            kind,
            bytes: [0xFF; 8],
        })
        .collect::<Vec<_>>();
    for (i, chunk) in all_access.chunks(3).enumerate() {
        hostile_seed(
            &format!("accesses-{i}"),
            3,
            false,
            vec![
                frame(9, 40),
                H::Publish,
                H::Recv {
                    accesses: chunk.to_vec(),
                    release: 1,
                },
                frame(10, 8),
                H::Publish,
                recv(0),
                recv(1),
            ],
        );
    }
    // Each malformation.
    let malformed: [(&str, Vec<HostileOp>); 9] = [
        (
            "reserved-tag",
            vec![
                H::RawHeader {
                    tag: FIRST_RESERVED_TAG + 1,
                    len: Some(0),
                    jump: 8,
                },
                H::Prod(ProdValue::TailPlus(0)),
                recv(1),
            ],
        ),
        (
            "length-beyond-ring",
            vec![
                H::RawHeader {
                    tag: 1,
                    len: Some(u32::MAX),
                    jump: 8,
                },
                H::Prod(ProdValue::TailPlus(0)),
                recv(1),
            ],
        ),
        (
            "crosses-ring-end",
            vec![
                frame(1, 200),
                H::Publish,
                recv(1),
                H::RawHeader {
                    tag: 1,
                    len: Some(100),
                    jump: 120,
                },
                H::Prod(ProdValue::TailPlus(0)),
                recv(1),
            ],
        ),
        (
            "beyond-published",
            vec![
                H::RawHeader {
                    tag: 1,
                    len: Some(64),
                    jump: 8,
                },
                H::Prod(ProdValue::TailPlus(0)),
                recv(1),
            ],
        ),
        (
            "short-header",
            vec![
                frame(1, 0),
                H::Publish,
                recv(1),
                H::Prod(ProdValue::ConsPlus(4)),
                recv(1),
            ],
        ),
        (
            "bad-skip",
            vec![
                frame(1, 100),
                H::Publish,
                recv(1),
                H::RawHeader {
                    tag: TAG_SKIP,
                    len: Some(7),
                    jump: 0,
                },
                H::Prod(ProdValue::ConsPlus(200)),
                recv(1),
            ],
        ),
        (
            "skip-at-start",
            vec![
                H::RawHeader {
                    tag: TAG_SKIP,
                    len: None,
                    jump: 0,
                },
                H::Prod(ProdValue::ConsPlus(255)),
                recv(1),
            ],
        ),
        (
            "prod-too-far",
            vec![
                H::Prod(ProdValue::Absolute(0x8000_0000)),
                recv(1),
                H::RecvCopy(0),
            ],
        ),
        (
            "header-rewritten-after-fetch",
            vec![
                frame(5, 24),
                H::Publish,
                H::Recv {
                    accesses: vec![Access {
                        offset: 0,
                        kind: 6,
                        bytes: [0xFF; 8],
                    }],
                    release: 0,
                },
                recv(1),
                recv(1),
            ],
        ),
    ];
    for (name, ops) in malformed {
        hostile_seed(name, 4, false, ops.clone());
        hostile_seed(&format!("{name}-flip"), 4, true, ops);
    }
    // Round trips.
    let stage = |tag: u32, reserve: u16, short: u8| RoundtripOp::Stage {
        tag,
        reserve,
        short,
    };
    for order in [0u8, 1, 3, 6, 8] {
        let size = 16u16 << order;
        let mut ops = Vec::new();
        for k in 0..40u16 {
            ops.push(stage(k as u32, (k * 29 + 3) % (size + 8), (k % 7) as u8));
            if k % 2 == 0 {
                ops.push(RoundtripOp::Publish);
            }
            ops.push(RoundtripOp::Recv(k as u8));
        }
        out.push((
            "frame_roundtrip",
            format!("mixed-{size}"),
            encode_roundtrip(order, &ops),
        ));
    }
    let batch: Vec<_> = (0..30u32)
        .map(|k| stage(k, 16, 0))
        .chain([RoundtripOp::Publish])
        .chain((0..30).map(|_| RoundtripOp::Recv(1)))
        .collect();
    out.push((
        "frame_roundtrip",
        "batch-1k".into(),
        encode_roundtrip(6, &batch),
    ));
    let typed: Vec<_> = (0..20u32)
        .flat_map(|k| [stage(k, 24, 0), RoundtripOp::Publish, RoundtripOp::Recv(2)])
        .collect();
    out.push((
        "frame_roundtrip",
        "typed-copies".into(),
        encode_roundtrip(2, &typed),
    ));
    let full: Vec<_> = (0..12u32)
        .flat_map(|k| {
            [
                stage(k, 1016, 0),
                stage(k + 100, 1000, 0),
                RoundtripOp::Publish,
                RoundtripOp::Recv(1),
                RoundtripOp::Recv(1),
            ]
        })
        .collect();
    out.push((
        "frame_roundtrip",
        "largest-frames".into(),
        encode_roundtrip(6, &full),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    /// Replays every file of `fuzz/corpus/<target>/` through `harness`.
    fn replay<R>(target: &str, harness: fn(&[u8]) -> R) {
        let dir = corpus_dir(target);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{} fails", path.display());
            files += 1;
        }
        assert!(files >= 8, "only {files} corpus files in {}", dir.display());
    }

    /// Batch receives ([`FrameConsumer::try_recv_batch`]) through the hostile harness:
    /// honest traffic that wraps (skip markers inside batches and at their ends), with and
    /// without bytes changing after every copy; and a malformed header in the middle of a
    /// batch, which delivers the frames before it and fails for good.
    #[test]
    fn batches_walk_over_skip_markers_and_stop_at_a_malformed_frame() {
        use HostileOp as H;
        for (order, flip) in [(0, false), (2, false), (2, true), (4, false), (6, true)] {
            let size = 16u16 << order;
            let mut ops = Vec::new();
            for k in 0..60u16 {
                ops.push(H::Frame {
                    tag: k as u32,
                    len: (k * 37) % size,
                });
                if k % 4 == 3 {
                    ops.push(H::Publish);
                    ops.push(H::RecvCopy(0xC0 | (k as u8 % 8)));
                }
            }
            ops.extend([H::Publish, H::RecvCopy(0xC7), H::RecvCopy(0xC7)]);
            let stats = run_hostile(&HostileScript { order, flip, ops });
            assert_eq!(stats.failure, None, "ring {size}");
            assert!(stats.honest_frames >= 15, "ring {size}: {stats:?}");
            if (64..=256).contains(&size) {
                assert!(stats.after_skip > 0, "ring {size}: {stats:?}");
            }
        }
        let ops = vec![
            H::Frame { tag: 1, len: 8 },
            H::Frame { tag: 2, len: 8 },
            H::Publish,
            H::RawHeader {
                tag: 5,
                len: Some(9999),
                jump: 16,
            },
            H::Prod(ProdValue::TailPlus(0)),
            H::RecvCopy(0xC7),
            H::RecvCopy(0xC7),
        ];
        let stats = run_hostile(&HostileScript {
            order: 3,
            flip: false,
            ops,
        });
        assert_eq!(stats.frames, 2, "{stats:?}");
        assert_eq!(
            stats.failure.as_deref(),
            Some("Malformed: LengthBeyondRing"),
            "{stats:?}"
        );
    }

    #[test]
    fn replay_frame_hostile_corpus() {
        replay("frame_hostile", hostile);
    }

    #[test]
    fn replay_frame_roundtrip_corpus() {
        replay("frame_roundtrip", roundtrip);
    }

    /// Every seed is committed (regenerate with `cargo test -p vchan-msg --lib
    /// write_seed_corpus -- --ignored`), parses back to what was encoded, and its malformation
    /// seeds fail the way their names say.
    #[test]
    fn seeds_are_committed_and_do_what_they_say() {
        for (target, name, bytes) in seeds() {
            let path = corpus_dir(target).join(format!("seed-{name}"));
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (write the seeds)", path.display()));
            assert_eq!(committed, bytes, "{} is stale", path.display());
            if target == "frame_hostile" {
                assert_eq!(HostileScript::parse(&bytes).encode(), bytes, "{name}");
                let stats = hostile(&bytes);
                let want = match name.trim_end_matches("-flip") {
                    "reserved-tag" => Some("Malformed: ReservedTag"),
                    "length-beyond-ring" => Some("Malformed: LengthBeyondRing"),
                    "crosses-ring-end" => Some("Malformed: CrossesRingEnd"),
                    "beyond-published" => Some("Malformed: BeyondPublished"),
                    "short-header" => Some("Malformed: ShortHeader"),
                    "bad-skip" => Some("Malformed: BadSkip"),
                    "skip-at-start" => Some("Malformed: SkipAtRingStart"),
                    "prod-too-far" => Some("Corrupt"),
                    _ => None,
                };
                if let Some(want) = want {
                    assert_eq!(stats.failure.as_deref(), Some(want), "{name}: {stats:?}");
                } else if name.starts_with("honest") {
                    assert!(
                        stats.failure.is_none() && stats.honest_frames >= 10,
                        "{name}: {stats:?}"
                    );
                }
            } else {
                let (order, ops) = parse_roundtrip(&bytes);
                assert_eq!(encode_roundtrip(order, &ops), bytes, "{name}");
                assert!(roundtrip(&bytes) > 0, "{name} received nothing");
            }
        }
    }

    /// Writes the seeds into `fuzz/corpus/frame_*/`.
    #[test]
    #[ignore = "writes the committed seed corpus"]
    fn write_seed_corpus() {
        for (target, name, bytes) in seeds() {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// A random script: mostly honest traffic, with hostile steps at rate `hostility`/256.
    fn random_script(x: &mut u64, hostility: u64) -> HostileScript {
        let order = xorshift(x) as u8;
        let flip = xorshift(x) & 1 == 1;
        let n = 1 + xorshift(x) % 120;
        let mut ops = Vec::new();
        for _ in 0..n {
            let r = xorshift(x);
            let hostile = r % 256 < hostility;
            let v = xorshift(x);
            ops.push(if hostile {
                match (r >> 8) % 5 {
                    0 => HostileOp::Garbage {
                        offset: v as u16,
                        bytes: (0..(v >> 16) % 16).map(|k| (v >> k) as u8).collect(),
                    },
                    1 => HostileOp::RawHeader {
                        tag: match (v >> 40) % 3 {
                            0 => TAG_SKIP,
                            1 => v as u32 % 64,
                            _ => v as u32,
                        },
                        len: match (v >> 44) % 3 {
                            0 => None,
                            1 => Some((v >> 8) as u32 % 5000),
                            _ => Some((v >> 8) as u32),
                        },
                        jump: (v >> 48) as u8,
                    },
                    2 => HostileOp::Prod(match (v >> 40) % 3 {
                        0 => ProdValue::Absolute(v as u32),
                        1 => ProdValue::TailPlus(v as u8),
                        _ => ProdValue::ConsPlus(v as u16 % 5000),
                    }),
                    3 => HostileOp::Recv {
                        accesses: vec![Access {
                            offset: v as u16,
                            kind: 6,
                            bytes: (v >> 8).to_le_bytes(),
                        }],
                        release: (v >> 32) as u8,
                    },
                    _ => HostileOp::ToggleFlip,
                }
            } else {
                match (r >> 8) % 4 {
                    0 => HostileOp::Frame {
                        tag: v as u32,
                        len: (v >> 32) as u16,
                    },
                    1 => HostileOp::Publish,
                    2 => HostileOp::Recv {
                        accesses: (0..(v % 4))
                            .map(|k| Access {
                                offset: (v >> (8 + k)) as u16,
                                kind: ((v >> (24 + k * 3)) % 6) as u8,
                                bytes: [0; 8],
                            })
                            .collect(),
                        release: (v >> 40) as u8,
                    },
                    _ => HostileOp::RecvCopy(v as u8),
                }
            });
        }
        HostileScript { order, flip, ops }
    }

    /// Random scripts beyond the corpus (a few thousand per run): they must reach honest
    /// frames, frames after skip markers, and every kind of failure.
    #[test]
    fn random_scripts() {
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        let mut total = HostileStats::default();
        let mut failures = std::collections::BTreeMap::new();
        for round in 0..4000u64 {
            let script = random_script(&mut x, [0, 3, 12, 40][round as usize % 4]);
            let bytes = script.encode();
            assert_eq!(HostileScript::parse(&bytes), script);
            let stats = hostile(&bytes);
            total.frames += stats.frames;
            total.honest_frames += stats.honest_frames;
            total.after_skip += stats.after_skip;
            if let Some(f) = stats.failure {
                *failures.entry(f).or_insert(0) += 1;
            }
            // The same bytes as a round-trip input, and as raw noise.
            roundtrip(&bytes);
            let noise: Vec<u8> = (0..(round % 300)).map(|_| xorshift(&mut x) as u8).collect();
            hostile(&noise);
            roundtrip(&noise);
        }
        println!("{total:?} {failures:?}");
        assert!(total.honest_frames > 5_000, "{total:?}");
        assert!(total.after_skip > 500, "{total:?}");
        for kind in [
            "Corrupt",
            "Malformed: ShortHeader",
            "Malformed: ReservedTag",
            "Malformed: LengthBeyondRing",
            "Malformed: CrossesRingEnd",
            "Malformed: BeyondPublished",
            "Malformed: BadSkip",
            "Malformed: SkipAtRingStart",
        ] {
            assert!(failures.contains_key(kind), "no {kind} in {failures:?}");
        }
    }
}
