//! The frame protocol over any ring: locating and validating frames at the consumer,
//! placing them (with skip markers) at the producer, and the borrowed [`Frame`].
//!
//! Generic over where the ring lives ([`ContiguousRingMemory`], [`IndexCell`]), so that the
//! very code the channel runs also runs over in-process rings (doc examples, benches) and
//! over the fuzz harness's hostile ring.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use vchan_ring::{
    Consumer, ContiguousRingMemory, FlagCell, IndexCell, Producer, RawIndex, RawRing, ReadRegion,
    RingError,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Ref};

use super::error::{FrameError, Malformation};
use super::view::{FrameBuf, SharedBytes};
use super::wire::{
    FRAME_ALIGN, FrameHeader, HEADER_LEN, MIN_RING_SIZE, TAG_SKIP, WireHeader, footprint,
    is_reserved_tag, max_payload,
};

/// Error type a fill-in-place closure may return.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a fill closure's error into a [`FrameError`] (one it returned as is, or
/// [`FrameError::Fill`]).
pub(crate) fn fill_error(e: impl Into<BoxError>) -> FrameError {
    match e.into().downcast::<FrameError>() {
        Ok(frame_error) => *frame_error,
        Err(other) => FrameError::Fill(other),
    }
}

/// A validated frame in the ring: everything here comes from one fetch of its header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    pub(crate) tag: u32,
    pub(crate) len: u32,
    /// First payload byte (8-byte aligned, inside the ring).
    pub(crate) payload: NonNull<u8>,
    /// Ring bytes of the header, payload and padding.
    pub(crate) footprint: u32,
}

/// Why no frame could be located.
#[derive(Debug)]
pub(crate) enum LocateError {
    /// The ring (its indices) is corrupt.
    Ring(RingError),
    /// The bytes at the head are not a valid frame.
    Malformed { offset: u32, problem: Malformation },
}

impl From<LocateError> for FrameError {
    fn from(e: LocateError) -> FrameError {
        match e {
            LocateError::Ring(e) => FrameError::Ring(e),
            LocateError::Malformed { offset, problem } => FrameError::Malformed { offset, problem },
        }
    }
}

/// Ring offset of the first byte of `parts` (`[(start, len), (ring base, len)]`).
fn offset_of(parts: &[(NonNull<u8>, usize); 2]) -> usize {
    (parts[0].0.as_ptr() as usize).wrapping_sub(parts[1].0.as_ptr() as usize)
}

/// Ring offset of the consumer's private head.
pub(crate) fn head_offset<M: ContiguousRingMemory, X: IndexCell>(
    rx: &mut Consumer<M, X>,
) -> Result<usize, RingError> {
    Ok(offset_of(&rx.peek(0)?.as_raw_parts()))
}

/// Ring offset of the producer's private tail.
pub(crate) fn tail_offset<M: ContiguousRingMemory, X: IndexCell>(
    tx: &mut Producer<M, X>,
) -> Result<usize, RingError> {
    Ok(offset_of(&tx.reserve_up_to(0)?.as_raw_parts()))
}

/// Checks that a ring of `capacity` bytes whose index is at `offset` can carry frames.
pub(crate) fn check_suitable(capacity: usize, offset: usize) -> Result<(), FrameError> {
    if capacity < MIN_RING_SIZE {
        return Err(FrameError::Unsuitable {
            reason: format!("the ring holds only {capacity} bytes"),
        });
    }
    if offset % FRAME_ALIGN != 0 {
        return Err(FrameError::Unsuitable {
            reason: format!(
                "its index is at ring offset {offset}, not a multiple of {FRAME_ALIGN} (the \
                 channel already carried stream bytes)"
            ),
        });
    }
    Ok(())
}

/// What a header fetched (once) from the ring is.
#[derive(Clone, Copy, Debug)]
enum Header {
    /// A frame of `footprint` bytes, all of them published and before the ring's end.
    Frame {
        tag: u32,
        len: u32,
        footprint: usize,
    },
    /// A valid skip marker: the `room` bytes up to the ring's end are padding, all published.
    Skip { room: usize },
}

/// Validates a header fetched once at ring `offset` (a multiple of 8) of a ring of `size`
/// bytes, with `available` bytes published from there: every bound [`locate`] and
/// [`Walk`] rely on is checked here, on the copy, and nowhere else.
#[inline(always)]
fn check_header(
    raw: [u8; HEADER_LEN],
    offset: usize,
    size: usize,
    available: usize,
) -> Result<Header, Malformation> {
    let room = size - offset;
    let [t0, t1, t2, t3, l0, l1, l2, l3] = raw;
    let tag = u32::from_le_bytes([t0, t1, t2, t3]);
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    if tag == TAG_SKIP {
        if offset == 0 {
            return Err(Malformation::SkipAtRingStart);
        }
        let expected = (room - HEADER_LEN) as u32;
        if len != expected {
            return Err(Malformation::BadSkip { len, expected });
        }
        if available < room {
            return Err(Malformation::SkipBeyondPublished {
                room: room as u32,
                available: available as u32,
            });
        }
        return Ok(Header::Skip { room });
    }
    if is_reserved_tag(tag) {
        return Err(Malformation::ReservedTag { tag });
    }
    let max = max_payload(size);
    if len as usize > max {
        return Err(Malformation::LengthBeyondRing {
            len,
            max: max as u32,
        });
    }
    // `len <= size - 8` and `size` is a multiple of 8: the footprint is at most `size`.
    let fp = footprint(len as usize).unwrap_or(usize::MAX);
    if fp > room {
        return Err(Malformation::CrossesRingEnd {
            len,
            room: room as u32,
        });
    }
    if fp > available {
        return Err(Malformation::BeyondPublished {
            footprint: fp as u32,
            available: available as u32,
        });
    }
    Ok(Header::Frame {
        tag,
        len,
        footprint: fp,
    })
}

/// Finds the next frame at the consumer's head, stepping over a skip marker, without
/// consuming the frame itself. `Ok(None)`: nothing published yet.
///
/// The header is copied out of the ring exactly once; every decision and every later access
/// uses that copy. Published bytes always consist of whole frames and skip markers (a writer
/// publishes nothing else), so a header or frame that is not entirely published is
/// malformed, not "wait for more" — a hostile writer cannot make us wait on half a frame.
pub(crate) fn locate<M: ContiguousRingMemory, X: IndexCell>(
    rx: &mut Consumer<M, X>,
) -> Result<Option<Located>, LocateError> {
    let size = rx.capacity();
    // At most two rounds: a skip marker moves the head to offset 0, where another skip
    // marker is malformed.
    for _ in 0..2 {
        let region = rx.peek(HEADER_LEN).map_err(LocateError::Ring)?;
        let available = region.len();
        if available == 0 {
            return Ok(None);
        }
        let parts = region.as_raw_parts();
        let offset = offset_of(&parts);
        let malformed = |problem| LocateError::Malformed {
            offset: offset as u32,
            problem,
        };
        if available < HEADER_LEN {
            return Err(malformed(Malformation::ShortHeader {
                available: available as u32,
            }));
        }
        // The single fetch of the header. `offset` is a multiple of 8 and so is `size`:
        // the 8 header bytes lie before the ring's end.
        let mut raw = [0u8; HEADER_LEN];
        region.copy_to(0, &mut raw);
        match check_header(raw, offset, size, available).map_err(malformed)? {
            Header::Skip { room } => {
                region.consume(room).map_err(LocateError::Ring)?;
                continue;
            }
            Header::Frame {
                tag,
                len,
                footprint,
            } => {
                // SAFETY: the frame `start..start + footprint` lies inside the ring
                // (`check_header`: it ends before the ring's end), and `footprint >=
                // HEADER_LEN`, so `start + 8` is inside it or at its end.
                let payload = unsafe { parts[0].0.add(HEADER_LEN) };
                return Ok(Some(Located {
                    tag,
                    len,
                    payload,
                    footprint: footprint as u32,
                }));
            }
        }
    }
    Ok(None)
}

/// The frames published after a first one, walked with a private cursor for a batch
/// receive: the producer index is loaded once (by the [`Consumer::peek`] that made the
/// region), each header is fetched once and validated by the same [`check_header`] as
/// [`locate`]'s, and nothing is consumed until [`Walk::finish`] consumes the bytes of the
/// delivered frames (and skip markers) at once.
pub(crate) struct Walk<'a, M, X> {
    region: ReadRegion<'a, M, X>,
    size: usize,
    /// Ring offset of the region's start (the consumer's head).
    head: usize,
    /// The ring's first byte.
    base: NonNull<u8>,
    /// Bytes of the region walked so far.
    at: usize,
}

impl<'a, M: ContiguousRingMemory, X: IndexCell> Walk<'a, M, X> {
    /// A walk of the published bytes at the consumer's head, starting after the first
    /// `first` bytes (the frame the caller already located there). One load of the shared
    /// producer index.
    pub(crate) fn new(rx: &'a mut Consumer<M, X>, first: usize) -> Result<Self, RingError> {
        let size = rx.capacity();
        let region = rx.peek(size)?;
        let parts = region.as_raw_parts();
        Ok(Walk {
            head: offset_of(&parts),
            base: parts[1].0,
            region,
            size,
            at: first,
        })
    }

    /// Bytes walked so far (frames and skip markers).
    pub(crate) fn walked(&self) -> usize {
        self.at
    }

    /// The next published frame, stepping over a skip marker; `Ok(None)` at the end of what
    /// was published when the walk began. On an error the cursor stays before the bad bytes.
    #[inline]
    pub(crate) fn next(&mut self) -> Result<Option<Located>, LocateError> {
        // At most two rounds, as in `locate`.
        for _ in 0..2 {
            let len = self.region.len();
            if self.at >= len {
                return Ok(None);
            }
            let available = len - self.at;
            // `at <= len <= size` and the head is inside the ring.
            let offset = (self.head + self.at) & (self.size - 1);
            let malformed = |problem| LocateError::Malformed {
                offset: offset as u32,
                problem,
            };
            if available < HEADER_LEN {
                return Err(malformed(Malformation::ShortHeader {
                    available: available as u32,
                }));
            }
            // The single fetch of this header (the walk is at a frame boundary, a multiple
            // of 8, so the header lies before the ring's end).
            let mut raw = [0u8; HEADER_LEN];
            self.region.copy_to(self.at, &mut raw);
            match check_header(raw, offset, self.size, available).map_err(malformed)? {
                Header::Skip { room } => self.at += room,
                Header::Frame {
                    tag,
                    len,
                    footprint,
                } => {
                    // SAFETY: `offset + footprint <= size` (`check_header`) and `footprint >=
                    // HEADER_LEN`, so `offset + 8` is inside the ring or at its end; `base`
                    // is the ring's first byte.
                    let payload = unsafe { self.base.add(offset + HEADER_LEN) };
                    self.at += footprint;
                    return Ok(Some(Located {
                        tag,
                        len,
                        payload,
                        footprint: footprint as u32,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Consumes the first `n` walked bytes (not published yet).
    pub(crate) fn finish(self, n: usize) -> Result<(), RingError> {
        self.region.consume(n.min(self.at))
    }
}

/// Hands `first` (located at the consumer's head) and the frames published after it, up to
/// `max` in all, to `each`, and consumes (without publishing) the space of those `each`
/// released and of the skip markers before and after them. A frame `each` keeps (forgotten,
/// or [`unread`](Frame::unread)) ends the batch and stays at the head. Returns how many
/// frames `each` got, and the error (a corrupt ring, a malformed frame) that ended the batch
/// early, if one did: the frames before it were delivered and consumed.
pub(crate) fn deliver_batch<M, X>(
    rx: &mut Consumer<M, X>,
    first: Located,
    max: usize,
    each: &mut impl FnMut(Frame<'_>),
) -> (usize, Result<(), LocateError>)
where
    M: ContiguousRingMemory,
    X: IndexCell,
{
    let mut walk = match Walk::new(rx, first.footprint as usize) {
        Ok(w) => w,
        Err(e) => return (0, Err(LocateError::Ring(e))),
    };
    let mut count = 0;
    let mut upto = 0;
    let mut next = Some(first);
    let mut outcome = Ok(());
    while let Some(loc) = next {
        let mut released = 0u32;
        each(Frame::batched(loc, &mut released));
        count += 1;
        if released != loc.footprint {
            break;
        }
        upto = walk.walked();
        if count >= max {
            break;
        }
        next = match walk.next() {
            Ok(Some(loc)) => Some(loc),
            Ok(None) => {
                // A skip marker stepped over at the end goes back too: the writer may wait
                // for exactly that space.
                upto = walk.walked();
                None
            }
            Err(e) => {
                outcome = Err(e);
                None
            }
        };
    }
    if let Err(e) = walk.finish(upto) {
        return (count, Err(LocateError::Ring(e)));
    }
    (count, outcome)
}

/// What [`look_or_request`] found.
#[derive(Debug)]
pub(crate) struct Look {
    /// The next frame, if one is published.
    pub(crate) found: Option<Located>,
    /// Space was given back that the writer had asked to be told about: signal it.
    pub(crate) signal: bool,
}

/// One attempt of a reader that sleeps when it finds nothing: [`locate`]s the next frame and,
/// when there is none, gives back the space of a skip marker stepped over; with `request`, it
/// also asks the writer for a signal (`NOTIFY_WRITE` in `peer`) and looks again.
///
/// When it returns no frame with `request`, sleeping until the writer signals is safe:
/// everything consumed is published (the writer cannot be waiting for space we hold), and the
/// request was in place when nothing was readable at the head the reader will wait at.
///
/// Why a loop: the writer may publish a lone skip marker between a look and the request. The
/// request then sees bytes and sets no flag, and the next look steps over the marker and
/// finds nothing, at a new head, holding the marker's space. A writer whose frame needs that
/// space waits for it, and a reader that slept now would never be signalled: both would sleep
/// forever. So a request that sees bytes leads to another look, and every look that finds
/// nothing publishes what it stepped over, until a request finds the ring empty at the head.
///
/// At most three rounds: a round goes on only if its request saw bytes, which (the producer
/// index only moves forward, or the ring is corrupt) the next look either returns as a frame,
/// rejects as malformed, or steps over as a skip marker ending at ring offset 0; a round
/// starting at offset 0 with bytes readable cannot find nothing, because a skip marker there
/// is malformed. A hostile writer cannot make it spin.
pub(crate) fn look_or_request<M, X, F, G>(
    rx: &mut Consumer<M, X>,
    own: &F,
    peer: &G,
    request: bool,
) -> Result<Look, LocateError>
where
    M: ContiguousRingMemory,
    X: IndexCell,
    F: FlagCell + ?Sized,
    G: FlagCell + ?Sized,
{
    let mut signal = false;
    for _ in 0..3 {
        if let Some(found) = locate(rx)? {
            return Ok(Look {
                found: Some(found),
                signal,
            });
        }
        // Nothing readable at the head. A skip marker stepped over is consumed but not yet
        // published: publish it, or a writer waiting for that space and we would wait for
        // each other.
        if rx.unreleased() > 0 {
            signal |= rx.publish_and_check(own);
        }
        if !request {
            break;
        }
        // Ask for a signal and check again. Nothing readable now: the writer signals after
        // its next publish. Something readable: it came after the look; look again.
        if rx
            .available_or_request(HEADER_LEN, peer)
            .map_err(LocateError::Ring)?
            == 0
        {
            break;
        }
    }
    Ok(Look {
        found: None,
        signal,
    })
}

/// Outcome of [`stage_frame`].
pub(crate) enum Staged<F> {
    /// The frame was staged; its payload length.
    Done(usize),
    /// Not enough free space: this many bytes must be free before trying again (the fill
    /// closure is handed back, not called). A skip marker may have been staged already.
    NeedSpace(usize, F),
}

/// Stages one frame of at most `max_len` payload bytes, filled in place by `fill`, with a
/// skip marker first if it does not fit before the ring's end. Publishes nothing.
pub(crate) fn stage_frame<M, X, F, E>(
    tx: &mut Producer<M, X>,
    tag: u32,
    max_len: usize,
    fill: F,
) -> Result<Staged<F>, FrameError>
where
    M: ContiguousRingMemory,
    X: IndexCell,
    F: FnOnce(&mut FrameBuf<'_>) -> Result<usize, E>,
    E: Into<BoxError>,
{
    if is_reserved_tag(tag) {
        return Err(FrameError::ReservedTag { tag });
    }
    let size = tx.capacity();
    let max = max_payload(size);
    if max_len > max {
        return Err(FrameError::TooLarge { len: max_len, max });
    }
    let fp = footprint(max_len).unwrap_or(usize::MAX);
    let offset = tail_offset(tx)?;
    let room = size - offset;
    if fp > room {
        // Pad to the ring's end with a skip marker; the frame goes to offset 0.
        let mut skip = match tx.reserve(room) {
            Ok(r) => r,
            Err(RingError::NoSpace { .. }) => return Ok(Staged::NeedSpace(room, fill)),
            Err(e) => return Err(e.into()),
        };
        skip.copy_from(
            0,
            WireHeader::new(TAG_SKIP, (room - HEADER_LEN) as u32).as_bytes(),
        );
        skip.commit_all();
    }
    let mut region = match tx.reserve(fp) {
        Ok(r) => r,
        Err(RingError::NoSpace { .. }) => return Ok(Staged::NeedSpace(fp, fill)),
        Err(e) => return Err(e.into()),
    };
    let parts = region.as_raw_parts();
    debug_assert_eq!(parts[0].1, fp, "a frame reservation is contiguous");
    // SAFETY: the reservation is contiguous (`fp <= room`) and at least `HEADER_LEN` long,
    // so `start + 8` is inside it or at its end.
    let payload = unsafe { parts[0].0.add(HEADER_LEN) };
    // SAFETY: `payload..payload + max_len` is the reservation after its header: free ring
    // space, which the ring protocol gives to this producer (held `&mut` through `region`)
    // until it is committed; valid for writes. `buf` does not outlive this function.
    let mut buf = unsafe { FrameBuf::new(payload, max_len) };
    let len = fill(&mut buf).map_err(fill_error)?;
    if len > max_len {
        return Err(FrameError::FillOverrun {
            written: len,
            max: max_len,
        });
    }
    let used = footprint(len).unwrap_or(usize::MAX);
    region.copy_from(
        HEADER_LEN + len,
        &[0u8; FRAME_ALIGN][..used - HEADER_LEN - len],
    );
    region.copy_from(0, WireHeader::new(tag, len as u32).as_bytes());
    region.commit(used)?;
    Ok(Staged::Done(len))
}

/// The fast path of a typed send: stages one frame holding `bytes` if it fits now before
/// the ring's end — one reservation, the header and the payload written straight into it
/// (for a `T` of known size the payload copy is a fixed-size copy the compiler inlines).
/// `Ok(false)`: it does not fit (no space now, or a skip marker is needed), and nothing was
/// written: take [`stage_frame`]. The caller checked the tag (not reserved) and the length
/// (at most [`max_payload`]).
#[inline(always)]
pub(crate) fn try_stage_bytes<M, X>(
    tx: &mut Producer<M, X>,
    tag: u32,
    bytes: &[u8],
) -> Result<bool, RingError>
where
    M: ContiguousRingMemory,
    X: IndexCell,
{
    let len = bytes.len();
    debug_assert!(!is_reserved_tag(tag) && len <= max_payload(tx.capacity()));
    // `len <= size - 8`: no overflow.
    let fp = (len + HEADER_LEN + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1);
    let region = match tx.reserve(fp) {
        Ok(r) => r,
        Err(RingError::NoSpace { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let [(start, first), _] = region.as_raw_parts();
    if first < fp {
        // It would wrap: a skip marker goes first (the general path).
        return Ok(false);
    }
    // The reservation's first piece, `start..start + fp` (`first >= fp`), is free ring space
    // that the ring protocol gives to this producer (held `&mut` through `region`) until it
    // is committed, valid for writes; the header, the payload and the padding lie inside it,
    // one after the other.
    let at = start.as_ptr();
    // SAFETY: `at..at + 8` is the start of the reservation (see above).
    unsafe { std::ptr::write_unaligned(at.cast::<WireHeader>(), WireHeader::new(tag, len as u32)) };
    let payload = at.wrapping_add(HEADER_LEN);
    // SAFETY: `payload..payload + len` follows the header inside the reservation (`8 + len <=
    // fp`); `bytes` is private memory, so the ranges do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), payload, len) };
    // SAFETY: the padding, `fp - 8 - len < 8` bytes, ends the reservation.
    unsafe { std::ptr::write_bytes(payload.wrapping_add(len), 0, fp - HEADER_LEN - len) };
    region.commit_all();
    Ok(true)
}

/// Copies `value`'s bytes into a frame buffer (the typed send's fill closure).
pub(crate) fn fill_with_bytes(
    bytes: &[u8],
) -> impl FnOnce(&mut FrameBuf<'_>) -> Result<usize, FrameError> + '_ {
    move |buf| {
        buf.write_at(0, bytes)?;
        Ok(bytes.len())
    }
}

/// What a [`Frame`] tells its reader when it is done.
pub(crate) trait Release {
    /// Consumes `footprint` bytes at the head (the frame) and, if `publish`, gives the space
    /// back to the writer (and signals it if it asked).
    fn release(&mut self, footprint: u32, publish: bool) -> Result<(), FrameError>;
    /// Keeps an error from a release in `Drop`, to report it from the next call.
    fn defer(&mut self, error: FrameError);
}

/// A received frame, borrowed in place from the ring: true zero-copy, safe against a hostile
/// peer.
///
/// Its header (tag and length) was fetched once and validated; the payload stays in ring
/// memory and is reached through copies or a volatile view ([`Frame::bytes`]), never as a
/// `&[u8]` unless you opt in ([`Frame::as_slice_trusted`]). The frame borrows its reader, and
/// its ring space goes back to the writer when it is dropped or [`finish`](Frame::finish)ed
/// ([`unread`](Frame::unread) leaves it in the ring instead).
///
/// ```
/// use vchan_msg::frame::{FrameConsumer, FrameProducer};
/// use vchan_ring::LocalRing;
///
/// let ring = LocalRing::<1024>::new();
/// let (tx, rx) = LocalRing::split(&ring).unwrap();
/// let (mut tx, mut rx) = (FrameProducer::new(tx)?, FrameConsumer::new(rx)?);
/// tx.try_send(42, &[1u32, 2, 3])?;
/// let frame = rx.try_recv()?.expect("one frame");
/// assert_eq!((frame.tag(), frame.len()), (42, 12));
/// assert_eq!(frame.read::<u32>(4)?, 2); // a typed single-fetch read at an offset
/// let mut out = Vec::new();
/// frame.write_to(&mut out)?;            // or write_all_to_fd: straight from the ring
/// assert_eq!(out.len(), 12);
/// drop(frame);                           // gives the space back
/// assert!(rx.try_recv()?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Frame<'a> {
    loc: Located,
    owner: Owner<'a>,
    released: bool,
}

/// Who takes a frame's space back when it is released.
enum Owner<'a> {
    /// The reader: consumes it (and publishes, if `publish`) at once.
    Reader {
        owner: &'a mut dyn Release,
        publish: bool,
    },
    /// A batch receive ([`deliver_batch`]): the frame only reports the footprint it released
    /// (0 if left unread), and the batch consumes everything at its end. No call through a
    /// trait object, so a batch's per-frame release inlines to one store.
    Batch(&'a mut u32),
}

impl<'a> Frame<'a> {
    pub(crate) fn new(loc: Located, owner: &'a mut dyn Release, publish: bool) -> Frame<'a> {
        Frame {
            loc,
            owner: Owner::Reader { owner, publish },
            released: false,
        }
    }

    /// A frame of a batch: releasing it stores its footprint in `released`.
    #[inline]
    pub(crate) fn batched(loc: Located, released: &'a mut u32) -> Frame<'a> {
        Frame {
            loc,
            owner: Owner::Batch(released),
            released: false,
        }
    }

    #[inline]
    fn release_now(&mut self) -> Result<(), FrameError> {
        match &mut self.owner {
            Owner::Reader { owner, publish } => owner.release(self.loc.footprint, *publish),
            Owner::Batch(released) => {
                **released = self.loc.footprint;
                Ok(())
            }
        }
    }

    /// The frame's tag.
    #[inline]
    pub fn tag(&self) -> u32 {
        self.loc.tag
    }

    /// Payload length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.loc.len as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.loc.len == 0
    }

    /// The header: tag and length.
    pub fn header(&self) -> FrameHeader {
        FrameHeader {
            tag: self.loc.tag,
            len: self.loc.len,
        }
    }

    /// The payload as a volatile view (copies, typed reads, fd writes), valid while the frame
    /// is.
    #[inline]
    pub fn bytes(&self) -> SharedBytes<'_> {
        // SAFETY: `locate` checked that the payload lies inside the ring and inside what the
        // writer published; our consumer owns those bytes until the frame is released, which
        // needs the frame (and so ends this borrow). Nothing in this process writes them: the
        // producer half of this ring is the peer's.
        unsafe { SharedBytes::new(self.loc.payload, self.loc.len as usize) }
    }

    /// A `T` copied out of the payload at `offset` (one fetch; any alignment).
    #[inline]
    pub fn read<T: FromBytes>(&self, offset: usize) -> Result<T, FrameError> {
        self.bytes().read(offset)
    }

    /// Copies `dst.len()` payload bytes from `offset` into `dst`.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<(), FrameError> {
        self.bytes().read_into(offset, dst)
    }

    /// A private copy of the payload.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }

    /// Writes the payload to `fd` straight from the ring (see
    /// [`SharedBytes::write_all_to_fd`]).
    pub fn write_all_to_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.bytes().write_all_to_fd(fd)
    }

    /// Writes the payload to `w` (through a stack buffer; see [`SharedBytes::write_to`]).
    pub fn write_to<W: io::Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        self.bytes().write_to(w)
    }

    /// The payload as a plain slice: the trusted-peer opt-in (see
    /// [`SharedBytes::as_slice_trusted`]).
    ///
    /// # Safety
    ///
    /// The peer must not write the frame's bytes while the slice lives (a trusted peer, which
    /// never touches what it published). With a hostile peer this is a data race and any
    /// validation of the slice can be undone before use.
    pub unsafe fn as_slice_trusted(&self) -> &[u8] {
        // SAFETY: the caller's contract.
        unsafe { self.bytes().as_slice_trusted() }
    }

    /// The payload as a zerocopy [`Ref`] to `T` (see [`SharedBytes::as_ref_trusted`]).
    ///
    /// # Safety
    ///
    /// As for [`as_slice_trusted`](Frame::as_slice_trusted).
    pub unsafe fn as_ref_trusted<T>(&self) -> Result<Ref<&[u8], T>, FrameError>
    where
        T: FromBytes + KnownLayout + Immutable,
    {
        // SAFETY: the caller's contract.
        unsafe { self.bytes().as_ref_trusted() }
    }

    /// Leaves the frame in the ring: the next receive returns it again.
    pub fn unread(mut self) {
        self.loc.footprint = 0;
    }

    /// Gives the frame's space back now, reporting a failure to signal the writer (dropping
    /// the frame does the same but reports such a failure from the next call).
    pub fn finish(mut self) -> Result<(), FrameError> {
        self.released = true;
        self.release_now()
    }
}

impl Drop for Frame<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.release_now() {
                if let Owner::Reader { owner, .. } = &mut self.owner {
                    owner.defer(e);
                }
            }
        }
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &self.loc.tag)
            .field("len", &self.loc.len)
            .finish_non_exhaustive()
    }
}

/// The frame reader of any ring: the protocol without waiting (see
/// [`FrameReader`](super::FrameReader) for a channel's, which waits and signals).
///
/// Over an in-process ring ([`vchan_ring::LocalRing`]) or raw shared memory. A reader that
/// wants to sleep uses the ring's notify protocol itself, in this order:
///
/// 1. [`try_recv`](FrameConsumer::try_recv); a frame: handle it, start again;
/// 2. none: [`publish_and_check`](FrameConsumer::publish_and_check), and signal the writer
///    if it says so (the look may have stepped over a skip marker whose space the writer
///    waits for);
/// 3. [`available_or_request`](FrameConsumer::available_or_request): not 0 means the writer
///    published meanwhile: start again (do not sleep, it may be a lone skip marker that no
///    signal will follow); 0: sleep until the writer signals.
///
/// [`FrameReader`](super::FrameReader) runs exactly this loop over a channel.
///
/// ```
/// use vchan_msg::frame::{FrameConsumer, FrameProducer};
/// use vchan_ring::LocalRing;
///
/// let ring = LocalRing::<64>::new();
/// let (tx, rx) = LocalRing::split(&ring).unwrap();
/// let (mut tx, mut rx) = (FrameProducer::new(tx)?, FrameConsumer::new(rx)?);
/// // 24-byte frames in a 64-byte ring: the third one does not fit before the ring's end,
/// // so the writer puts a skip marker there and the frame at offset 0.
/// for round in 0u64..10 {
///     assert!(tx.try_send(1, &[round, round])?);
///     let (tag, v): (u32, [u64; 2]) = rx.try_recv_copy()?.expect("a frame");
///     assert_eq!((tag, v), (1, [round, round]));
/// }
/// # Ok::<(), vchan_msg::frame::FrameError>(())
/// ```
pub struct FrameConsumer<M = RawRing, X = RawIndex> {
    rx: Consumer<M, X>,
    fault: Option<(u32, Malformation)>,
    deferred: Option<FrameError>,
}

impl<M: ContiguousRingMemory, X: IndexCell> FrameConsumer<M, X> {
    /// Reads frames from `rx`, which must be at least 16 bytes and at a frame boundary (a
    /// fresh ring, or one only ever used for frames).
    pub fn new(mut rx: Consumer<M, X>) -> Result<Self, FrameError> {
        let offset = head_offset(&mut rx)?;
        check_suitable(rx.capacity(), offset)?;
        Ok(FrameConsumer {
            rx,
            fault: None,
            deferred: None,
        })
    }

    fn check(&mut self) -> Result<(), FrameError> {
        if let Some((offset, problem)) = self.fault {
            return Err(FrameError::Malformed { offset, problem });
        }
        match self.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn locate(&mut self) -> Result<Option<Located>, FrameError> {
        self.check()?;
        match locate(&mut self.rx) {
            Ok(found) => Ok(found),
            Err(LocateError::Malformed { offset, problem }) => {
                self.fault = Some((offset, problem));
                Err(FrameError::Malformed { offset, problem })
            }
            Err(LocateError::Ring(e)) => Err(e.into()),
        }
    }

    /// The next frame, if one is published. Dropping it consumes it and publishes the
    /// consumer index (no signal: see [`publish_and_check`](FrameConsumer::publish_and_check)).
    /// When there is none, the space of a skip marker stepped over is published at once (a
    /// writer may be waiting for exactly that space).
    ///
    /// A malformed frame fails with [`FrameError::Malformed`], and so does every later call.
    pub fn try_recv(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        match self.locate()? {
            Some(loc) => Ok(Some(Frame::new(loc, self, true))),
            None => {
                self.rx.publish();
                Ok(None)
            }
        }
    }

    /// Hands every frame published now, up to `max`, to `each`, and gives their space back
    /// with one publish at the end (no signal: see
    /// [`publish_and_check`](FrameConsumer::publish_and_check)). Returns how many frames
    /// `each` got (0: none published).
    ///
    /// The writer's index is loaded once for the batch and the frames are walked with a
    /// private cursor, each header fetched once and validated as for
    /// [`try_recv`](FrameConsumer::try_recv). A frame `each` keeps (forgotten, or
    /// [`unread`](Frame::unread)) ends the batch and stays in the ring. A malformed frame
    /// after some good ones ends the batch with its error (the good ones were delivered and
    /// their space given back), and every later call fails with it.
    pub fn try_recv_batch(
        &mut self,
        max: usize,
        mut each: impl FnMut(Frame<'_>),
    ) -> Result<usize, FrameError> {
        if max == 0 {
            return Ok(0);
        }
        let Some(first) = self.locate()? else {
            self.rx.publish();
            return Ok(0);
        };
        let (count, outcome) = deliver_batch(&mut self.rx, first, max, &mut each);
        self.rx.publish();
        match outcome {
            Ok(()) => Ok(count),
            Err(LocateError::Malformed { offset, problem }) => {
                self.fault = Some((offset, problem));
                Err(FrameError::Malformed { offset, problem })
            }
            Err(LocateError::Ring(e)) => Err(e.into()),
        }
    }

    /// The next frame copied into a `T` (one fetch), if one is published. A frame of another
    /// length than `T` fails with [`FrameError::LengthMismatch`] and stays in the ring.
    pub fn try_recv_copy<T: FromBytes>(&mut self) -> Result<Option<(u32, T)>, FrameError> {
        match self.try_recv()? {
            None => Ok(None),
            Some(frame) => copy_frame(frame).map(Some),
        }
    }

    /// Bytes published by the writer and not yet received (loads the writer's index).
    pub fn available(&mut self) -> Result<usize, FrameError> {
        Ok(self.rx.available()?)
    }

    /// [`Consumer::available_or_request`]: before sleeping until a frame comes.
    pub fn available_or_request<F: FlagCell + ?Sized>(
        &mut self,
        peer: &F,
    ) -> Result<usize, FrameError> {
        Ok(self.rx.available_or_request(HEADER_LEN, peer)?)
    }

    /// [`Consumer::publish_and_check`]: after releasing frames, whether the writer asked to
    /// be signalled about the freed space.
    pub fn publish_and_check<F: FlagCell + ?Sized>(&mut self, own: &F) -> bool {
        self.rx.publish_and_check(own)
    }

    /// The ring size.
    pub fn capacity(&self) -> usize {
        self.rx.capacity()
    }

    /// The largest payload one frame can carry in this ring.
    pub fn max_payload(&self) -> usize {
        max_payload(self.rx.capacity())
    }

    /// The ring half underneath.
    pub fn consumer(&self) -> &Consumer<M, X> {
        &self.rx
    }

    /// Gives the ring half back.
    pub fn into_inner(self) -> Consumer<M, X> {
        self.rx
    }
}

impl<M: ContiguousRingMemory, X: IndexCell> Release for FrameConsumer<M, X> {
    fn release(&mut self, footprint: u32, publish: bool) -> Result<(), FrameError> {
        self.rx.consume(footprint as usize)?;
        if publish {
            self.rx.publish();
        }
        Ok(())
    }

    fn defer(&mut self, error: FrameError) {
        self.deferred.get_or_insert(error);
    }
}

impl<M, X> fmt::Debug for FrameConsumer<M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameConsumer")
            .field("ring", &self.rx)
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

/// Copies a whole frame into a `T`, or leaves it unread if the lengths differ.
pub(crate) fn copy_frame<T: FromBytes>(frame: Frame<'_>) -> Result<(u32, T), FrameError> {
    let expected = size_of::<T>();
    if frame.len() != expected {
        let e = FrameError::LengthMismatch {
            tag: frame.tag(),
            len: frame.len(),
            expected,
        };
        frame.unread();
        return Err(e);
    }
    let tag = frame.tag();
    let value = frame.read::<T>(0)?;
    frame.finish()?;
    Ok((tag, value))
}

/// The frame writer of any ring: the protocol without waiting (see
/// [`FrameWriter`](super::FrameWriter) for a channel's, which waits and signals).
///
/// `try_stage*` place frames without publishing them (batching: many frames, then one
/// [`publish`](FrameProducer::publish)); `try_send` publishes at once. When a frame does not
/// fit now they return `false`/`None` without writing it (a skip marker may have been staged
/// for it: publish, wait for space, and try again).
///
/// ```
/// use vchan_msg::frame::{FrameConsumer, FrameProducer};
/// use vchan_ring::LocalRing;
///
/// let ring = LocalRing::<1024>::new();
/// let (tx, rx) = LocalRing::split(&ring).unwrap();
/// let (mut tx, mut rx) = (FrameProducer::new(tx)?, FrameConsumer::new(rx)?);
/// for i in 0u64..10 {
///     assert!(tx.try_stage(1, &i)?); // straight into the ring, not yet visible
/// }
/// assert!(rx.try_recv()?.is_none());
/// tx.publish(); // one release store for the whole batch
/// let mut n = 0;
/// while let Some((_, v)) = rx.try_recv_copy::<u64>()? {
///     assert_eq!(v, n);
///     n += 1;
/// }
/// assert_eq!(n, 10);
/// # Ok::<(), vchan_msg::frame::FrameError>(())
/// ```
pub struct FrameProducer<M = RawRing, X = RawIndex> {
    tx: Producer<M, X>,
}

impl<M: ContiguousRingMemory, X: IndexCell> FrameProducer<M, X> {
    /// Writes frames to `tx`, which must be at least 16 bytes and at a frame boundary.
    pub fn new(mut tx: Producer<M, X>) -> Result<Self, FrameError> {
        let offset = tail_offset(&mut tx)?;
        check_suitable(tx.capacity(), offset)?;
        Ok(FrameProducer { tx })
    }

    /// Stages a frame holding `value`'s bytes, copied straight into the ring. `Ok(false)`:
    /// not enough space now.
    pub fn try_stage<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        tag: u32,
        value: &T,
    ) -> Result<bool, FrameError> {
        let bytes = value.as_bytes();
        if !is_reserved_tag(tag)
            && bytes.len() <= max_payload(self.tx.capacity())
            && try_stage_bytes(&mut self.tx, tag, bytes)?
        {
            return Ok(true);
        }
        Ok(self
            .try_stage_with(tag, bytes.len(), fill_with_bytes(bytes))?
            .is_some())
    }

    /// Stages a frame of at most `max_len` payload bytes written in place by `fill`, which
    /// returns the payload's actual length (at most `max_len`). `fill` is called only once
    /// the space is reserved; `Ok(None)`: not enough space now (`fill` was not called). An
    /// error from `fill` sends nothing.
    pub fn try_stage_with<F, E>(
        &mut self,
        tag: u32,
        max_len: usize,
        fill: F,
    ) -> Result<Option<usize>, FrameError>
    where
        F: FnOnce(&mut FrameBuf<'_>) -> Result<usize, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match stage_frame(&mut self.tx, tag, max_len, fill)? {
            Staged::Done(n) => Ok(Some(n)),
            Staged::NeedSpace(..) => Ok(None),
        }
    }

    /// [`try_stage`](FrameProducer::try_stage), then [`publish`](FrameProducer::publish).
    pub fn try_send<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        tag: u32,
        value: &T,
    ) -> Result<bool, FrameError> {
        let sent = self.try_stage(tag, value)?;
        self.tx.publish();
        Ok(sent)
    }

    /// Makes every staged frame visible with one release store.
    pub fn publish(&mut self) -> bool {
        self.tx.publish()
    }

    /// [`Producer::publish_and_check`]: whether the reader asked to be signalled.
    pub fn publish_and_check<F: FlagCell + ?Sized>(&mut self, own: &F) -> bool {
        self.tx.publish_and_check(own)
    }

    /// [`Producer::space_or_request`]: before sleeping until `want` bytes are free.
    pub fn space_or_request<F: FlagCell + ?Sized>(
        &mut self,
        want: usize,
        peer: &F,
    ) -> Result<usize, FrameError> {
        Ok(self.tx.space_or_request(want, peer)?)
    }

    /// The ring size.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// The largest payload one frame can carry in this ring.
    pub fn max_payload(&self) -> usize {
        max_payload(self.tx.capacity())
    }

    /// The ring half underneath.
    pub fn producer(&self) -> &Producer<M, X> {
        &self.tx
    }

    /// Gives the ring half back.
    pub fn into_inner(self) -> Producer<M, X> {
        self.tx
    }
}

impl<M, X> fmt::Debug for FrameProducer<M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameProducer")
            .field("ring", &self.tx)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

    use vchan_ring::{FlagCell, IndexCell, NOTIFY_WRITE};

    use super::*;
    use crate::frame::fuzzing::{HostileBytes, HostileIndex, HostileRing};

    /// A notify byte in private memory.
    #[derive(Debug, Default)]
    struct Flag(AtomicU8);

    impl FlagCell for Flag {
        fn fetch_or(&self, bits: u8, order: Ordering) -> u8 {
            self.0.fetch_or(bits, order)
        }
        fn fetch_and(&self, mask: u8, order: Ordering) -> u8 {
            self.0.fetch_and(mask, order)
        }
        fn load(&self, order: Ordering) -> u8 {
            self.0.load(order)
        }
    }

    /// Runs a hook just before the `fire_at`-th load of the index (1-based; 0: never).
    #[derive(Default)]
    struct Script<'a> {
        loads: Cell<u32>,
        fire_at: Cell<u32>,
        hook: RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    }

    struct HookedIndex<'a, 's> {
        cell: &'a AtomicU32,
        script: Option<&'s Script<'a>>,
    }

    impl IndexCell for HookedIndex<'_, '_> {
        fn load(&self, order: Ordering) -> u32 {
            if let Some(s) = self.script {
                let n = s.loads.get() + 1;
                s.loads.set(n);
                if n == s.fire_at.get() {
                    let hook = s.hook.borrow_mut().take();
                    if let Some(hook) = hook {
                        hook();
                    }
                }
            }
            self.cell.load(order)
        }

        fn store(&self, value: u32, order: Ordering) {
            self.cell.store(value, order);
        }
    }

    type Writer<'a> = FrameProducer<HostileBytes<'a>, HostileIndex<'a>>;

    /// The blocking writer's attempt at sending `payload` (as `FrameWriter` does it): stage,
    /// publish and signal if asked; if there is no space, request a signal and re-check.
    /// Returns (sent, signalled the reader).
    fn writer_attempt(
        w: &mut Writer<'_>,
        payload: &[u8],
        reader_flag: &Flag,
        writer_flag: &Flag,
    ) -> (bool, bool) {
        let need = footprint(payload.len()).unwrap();
        let mut signalled = false;
        for _ in 0..3 {
            let sent = w.try_stage(2, payload).unwrap();
            signalled |= w.publish_and_check(writer_flag);
            if sent {
                return (true, signalled);
            }
            if w.space_or_request(need, reader_flag).unwrap() < need {
                return (false, signalled);
            }
        }
        (false, signalled)
    }

    /// Polling both ends without sleeping: a reader that stepped over a lone skip marker
    /// gives its space back, or the writer, whose frame needs that space, never fits.
    #[test]
    fn try_recv_gives_back_a_skip_marker_it_stepped_over() {
        let ring = vchan_ring::LocalRing::<64>::new();
        let (tx, rx) = vchan_ring::LocalRing::split(&ring).unwrap();
        let (mut tx, mut rx) = (
            FrameProducer::new(tx).unwrap(),
            FrameConsumer::new(rx).unwrap(),
        );
        assert!(tx.try_send(1, &[1u8; 16]).unwrap());
        assert_eq!(rx.try_recv_copy::<[u8; 16]>().unwrap(), Some((1, [1; 16])));
        // 56 bytes: not before the ring's end (40 left), nor in the 24 free at its start
        // until the reader gives the skip marker's 40 back.
        assert!(!tx.try_send(2, &[2u8; 48]).unwrap(), "only the skip marker");
        assert!(
            rx.try_recv().unwrap().is_none(),
            "a skip marker is no frame"
        );
        assert!(
            tx.try_send(2, &[2u8; 48]).unwrap(),
            "the skip marker's space came back"
        );
        assert_eq!(rx.try_recv_copy::<[u8; 48]>().unwrap(), Some((2, [2; 48])));
    }

    /// The lost wake-up around a lone skip marker. The writer publishes a skip marker alone
    /// (its frame, more than half the ring, needs the marker's space back) at every possible
    /// moment of the reader's look-request-look, and both sides then behave as blocking
    /// waiters: each sleeps when its attempt fails and wakes only when signalled. Neither may
    /// be left asleep while the other sleeps too, and the frame must arrive.
    #[test]
    fn a_lone_skip_marker_published_at_any_moment_never_loses_a_wake_up() {
        let big = [0xB7u8; 48]; // footprint 56 in a 64-byte ring
        for fire_at in 1..=8 {
            let ring = HostileRing::new(64);
            let (reader_flag, writer_flag) = (Flag::default(), Flag::default());
            let writer: RefCell<Writer<'_>> =
                RefCell::new(FrameProducer::new(ring.producer().unwrap()).unwrap());
            let first_attempt: Cell<Option<(bool, bool)>> = Cell::new(None);
            let script = Script::default();
            let prod = HookedIndex {
                cell: ring.prod(),
                script: Some(&script),
            };
            let cons = HookedIndex {
                cell: ring.cons(),
                script: None,
            };
            let mut rx = ring.consumer_with(prod, cons).unwrap();
            // A 24-byte frame, read and given back: the head is at offset 24, where the big
            // frame does not fit before the ring's end (40 bytes) and, after a skip marker,
            // not in the 24 bytes free at the start either.
            assert!(writer.borrow_mut().try_send(1, &[1u8; 16]).unwrap());
            let first = look_or_request(&mut rx, &reader_flag, &writer_flag, false).unwrap();
            rx.consume(first.found.unwrap().footprint as usize).unwrap();
            rx.publish();

            // The writer's first attempt happens just before the reader's `fire_at`-th load of
            // the producer index (or after the reader's look, if it makes fewer loads).
            script.loads.set(0);
            script.fire_at.set(fire_at);
            *script.hook.borrow_mut() = Some(Box::new(|| {
                let r = writer_attempt(&mut writer.borrow_mut(), &big, &reader_flag, &writer_flag);
                first_attempt.set(Some(r));
            }));
            let look = look_or_request(&mut rx, &reader_flag, &writer_flag, true).unwrap();
            let hook = script.hook.borrow_mut().take();
            if let Some(hook) = hook {
                hook();
            }
            let (mut sent, signalled) = first_attempt.get().unwrap();
            let mut reader_awake = look.found.is_some() || signalled;
            let mut writer_awake = !sent && look.signal;
            let mut found = look.found;
            // Both sides, each sleeping until the other signals it.
            for _ in 0..6 {
                if found.is_some() {
                    break;
                }
                assert!(
                    reader_awake || writer_awake,
                    "writer's first attempt before load {fire_at}: both sides sleep (reader \
                     consumed {} bytes it has not given back, WRITE requested: {}; frame sent: \
                     {sent})",
                    rx.unreleased(),
                    writer_flag.load(Ordering::SeqCst) & NOTIFY_WRITE != 0
                );
                if writer_awake && !sent {
                    let (s, sig) =
                        writer_attempt(&mut writer.borrow_mut(), &big, &reader_flag, &writer_flag);
                    sent = s;
                    reader_awake |= sig;
                    writer_awake = false;
                }
                if reader_awake {
                    let look = look_or_request(&mut rx, &reader_flag, &writer_flag, true).unwrap();
                    found = look.found;
                    writer_awake |= look.signal;
                    reader_awake = false;
                }
            }
            let found = found.unwrap_or_else(|| panic!("load {fire_at}: the frame never arrived"));
            assert_eq!((found.tag, found.len, found.footprint), (2, 48, 56));
            assert_eq!(
                found.payload.as_ptr() as usize,
                ring.consumer().unwrap().peek(0).unwrap().as_raw_parts()[1]
                    .0
                    .as_ptr() as usize
                    + HEADER_LEN,
                "the big frame is at ring offset 0"
            );
        }
    }
}
