//! The frame wire format: constants, the header, and the arithmetic both ends share.
//!
//! This module only describes bytes; it never touches shared memory.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a frame header in bytes: `{u32 tag, u32 len}`.
pub const HEADER_LEN: usize = 8;

/// Frames start at ring offsets that are multiples of this, and their footprint is padded to
/// it, so every payload starts 8-byte aligned in memory (ring memory is page-aligned).
pub const FRAME_ALIGN: usize = 8;

/// The tag of a skip marker: "the rest of the ring up to its end is padding, the next frame
/// starts at ring offset 0". Never seen by users.
pub const TAG_SKIP: u32 = 0xFFFF_FFFF;

/// The first reserved tag. Tags `FIRST_RESERVED_TAG..=u32::MAX` belong to the frame layer
/// (only [`TAG_SKIP`] is used today); sending one is refused, receiving any but the skip
/// marker is a protocol violation.
pub const FIRST_RESERVED_TAG: u32 = 0xFFFF_FF00;

/// The smallest ring that can carry frames (a header and one aligned payload word).
pub const MIN_RING_SIZE: usize = 16;

/// A frame header as it lies in the ring: two little-endian `u32`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct WireHeader {
    pub(crate) tag: U32,
    pub(crate) len: U32,
}

const _: () = assert!(core::mem::size_of::<WireHeader>() == HEADER_LEN);

impl WireHeader {
    pub(crate) fn new(tag: u32, len: u32) -> WireHeader {
        WireHeader {
            tag: U32::new(tag),
            len: U32::new(len),
        }
    }
}

/// The decoded header of a frame: its tag and payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The frame's type tag, chosen by the application (below [`FIRST_RESERVED_TAG`]).
    pub tag: u32,
    /// Payload length in bytes (the header and padding not included).
    pub len: u32,
}

/// Whether `tag` is reserved for the frame layer (see [`FIRST_RESERVED_TAG`]).
pub const fn is_reserved_tag(tag: u32) -> bool {
    tag >= FIRST_RESERVED_TAG
}

/// Ring bytes a frame with a `len`-byte payload occupies: the header, the payload, and
/// padding up to a multiple of [`FRAME_ALIGN`]. `None` if that overflows `usize`.
///
/// ```
/// use vchan_msg::frame::footprint;
/// assert_eq!(footprint(0), Some(8));
/// assert_eq!(footprint(64), Some(72));
/// assert_eq!(footprint(65), Some(80));
/// ```
pub const fn footprint(len: usize) -> Option<usize> {
    match len.checked_add(HEADER_LEN + FRAME_ALIGN - 1) {
        Some(v) => Some(v & !(FRAME_ALIGN - 1)),
        None => None,
    }
}

/// The largest payload a ring of `capacity` bytes can carry in one frame: the ring minus a
/// header (0 for rings too small for frames).
///
/// ```
/// use vchan_msg::frame::max_payload;
/// assert_eq!(max_payload(1024), 1016);
/// assert_eq!(max_payload(1 << 20), (1 << 20) - 8);
/// ```
pub const fn max_payload(capacity: usize) -> usize {
    capacity.saturating_sub(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_two_little_endian_words() {
        let h = WireHeader::new(0x0403_0201, 0x0807_0605);
        assert_eq!(h.as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let back = WireHeader::read_from_bytes(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(back.tag.get(), 0x0403_0201);
        assert_eq!(back.len.get(), 0x0807_0605);
    }

    #[test]
    fn footprints_are_aligned_and_cover_the_payload() {
        for len in 0..200usize {
            let f = footprint(len).unwrap();
            assert_eq!(f % FRAME_ALIGN, 0);
            assert!(f >= len + HEADER_LEN && f < len + HEADER_LEN + FRAME_ALIGN);
        }
        assert_eq!(footprint(usize::MAX), None);
        assert_eq!(footprint(usize::MAX - 7), None);
        assert!(footprint(u32::MAX as usize).is_some());
        // The largest payload always fits: it is the ring minus a header, a multiple of 8.
        for order in 4..=20 {
            let cap = 1usize << order;
            assert_eq!(footprint(max_payload(cap)), Some(cap));
        }
    }

    #[test]
    fn reserved_tags() {
        assert!(is_reserved_tag(TAG_SKIP));
        assert!(is_reserved_tag(FIRST_RESERVED_TAG));
        assert!(!is_reserved_tag(FIRST_RESERVED_TAG - 1));
        assert!(!is_reserved_tag(0));
    }
}
