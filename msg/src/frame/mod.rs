//! Typed, zero-copy frames over a vchan, safe against a hostile peer.
//!
//! A **frame** is an 8-byte header `{u32 tag, u32 len}` followed by `len` payload bytes,
//! kept whole (contiguous) in the ring so that it can be written and read in place. This
//! format is ours (not libxenvchan's): both ends of a channel must use frames from the start.
//!
//! # Wire format
//!
//! | ring offset | size | field |
//! |---|---|---|
//! | `p` | 4 | `tag`, little-endian: the application's message type, `< 0xFFFF_FF00` |
//! | `p + 4` | 4 | `len`, little-endian: payload bytes |
//! | `p + 8` | `len` | payload |
//! | `p + 8 + len` | 0–7 | zero padding to a multiple of 8 |
//!
//! * Frames start at ring offsets that are multiples of 8 ([`FRAME_ALIGN`]), so a payload is
//!   8-byte aligned in memory (rings are page-aligned). A frame occupies
//!   [`footprint`]`(len) = 8 + len` rounded up to 8 bytes.
//! * A frame never wraps around the ring's end. When one does not fit before the end, the
//!   writer fills the rest of the ring with a **skip marker** — a header with tag
//!   [`TAG_SKIP`] (`0xFFFF_FFFF`) and `len` = bytes to the ring's end minus 8 — and puts the
//!   frame at offset 0. Since offsets and ring sizes are multiples of 8, a skip header
//!   always fits. Tags `0xFFFF_FF00..=0xFFFF_FFFF` are reserved for the frame layer.
//! * The largest payload is the ring size minus 8 ([`max_payload`]): 1016 bytes in the
//!   default 1 KiB ring, 1 MiB − 8 in the largest. **Larger payloads are refused** with
//!   [`FrameError::TooLarge`] (the message says to split the payload, use a larger ring, or
//!   use the byte stream): a frame is a unit that can be borrowed whole, and streaming a
//!   body through a frame would give up exactly that. Bulk data that does not need framing
//!   goes through the stream API, which has zero-copy fd I/O too
//!   ([`WriteHalf::read_from_fd`](crate::WriteHalf::read_from_fd),
//!   [`ReadHalf::write_to_fd`](crate::ReadHalf::write_to_fd)).
//! * A writer publishes only whole frames and skip markers (one release store of the ring
//!   index after a frame or a batch), so published bytes always parse completely.
//!
//! # Trust model
//!
//! The reader treats the ring as hostile input (DESIGN §7):
//!
//! * a header is copied out of the ring **once**; the tag, the length and everything
//!   derived from them (bounds, footprint, the skip distance) come from that copy, never
//!   from the ring again (no double fetch, XSA-155);
//! * every length is checked against the ring (at most `size - 8`), the room before the
//!   ring's end (no wrap), and what the writer published (frames are published whole, so a
//!   partial frame is an error, not something to wait for); a skip marker must say exactly
//!   "the rest of the ring"; reserved tags are refused. Any violation is the distinct,
//!   sticky [`FrameError::Malformed`] (and shuts the channel down) — never a panic, an
//!   out-of-bounds access or a hang;
//! * the payload stays in shared memory and is reached only through [`SharedBytes`], a
//!   bounds-checked volatile view that copies ([`Frame::read`] is one fetch into a private
//!   `T: FromBytes`) or hands raw pointers to the kernel (`write(2)`). A `&[u8]` or zerocopy
//!   [`Ref`](zerocopy::Ref) into the ring exists only through the `unsafe` trusted-peer
//!   opt-in ([`Frame::as_slice_trusted`], [`Frame::as_ref_trusted`]), whose contract is that
//!   the peer does not write a frame it has published — true of an honest peer, which is
//!   the only case where skipping the copy is sound.
//!
//! The fuzz targets `frame_hostile` and `frame_roundtrip` (`fuzz/`) drive this reader with a
//! hostile writer that rewrites headers, payloads and the ring index between and during
//! reads; their corpora are replayed by `cargo test -p vchan-msg`.
//!
//! # API
//!
//! On a channel ([`crate::Vchan::into_frames`]):
//!
//! * [`FrameWriter`]: [`send`](FrameWriter::send) a `T: IntoBytes + Immutable` copied
//!   straight into the ring; [`send_with`](FrameWriter::send_with) to write the payload in
//!   place ([`FrameBuf`]); [`send_from_fd`](FrameWriter::send_from_fd) to `read(2)` it from a
//!   fd; [`batch`](FrameWriter::batch) for many frames with one publish and one signal.
//! * [`FrameReader`]: [`recv`](FrameReader::recv) a borrowed [`Frame`] (tag, length, typed
//!   reads at offsets, copy-out, writing to a fd or an `io::Write`, a volatile view; its space
//!   goes back to the writer when it is dropped); [`recv_copy`](FrameReader::recv_copy) a
//!   `T: FromBytes`; [`recv_batch`](FrameReader::recv_batch) for many frames with one
//!   publish.
//!
//! Over any ring (in-process [`vchan_ring::LocalRing`], raw shared memory): the same protocol
//! without waiting, [`FrameProducer`] and [`FrameConsumer`].
//!
//! ```
//! use vchan_msg::frame::{FrameConsumer, FrameProducer};
//! use vchan_ring::LocalRing;
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, PartialEq)]
//! #[repr(C)]
//! struct Reading { sensor: u32, flags: u32, value: f64 }
//!
//! let ring = LocalRing::<4096>::new();
//! let (tx, rx) = LocalRing::split(&ring).unwrap();
//! let (mut tx, mut rx) = (FrameProducer::new(tx)?, FrameConsumer::new(rx)?);
//! tx.try_send(1, &Reading { sensor: 3, flags: 0, value: 21.5 })?;
//! let (tag, r): (u32, Reading) = rx.try_recv_copy()?.expect("a frame");
//! assert_eq!((tag, r.sensor, r.value), (1, 3, 21.5));
//! # Ok::<(), vchan_msg::frame::FrameError>(())
//! ```

mod channel;
mod core;
mod error;
mod fdio;
mod view;
mod wire;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use self::channel::{Batch, FrameReader, FrameWriter};
pub use self::core::{Frame, FrameConsumer, FrameProducer};
pub use self::error::{FrameError, Malformation};
pub use self::view::{FrameBuf, SharedBytes};
pub use self::wire::{
    FIRST_RESERVED_TAG, FRAME_ALIGN, FrameHeader, HEADER_LEN, MIN_RING_SIZE, TAG_SKIP, footprint,
    is_reserved_tag, max_payload,
};
