//! Errors of the frame layer.

use std::fmt;
use std::io;

use vchan_ring::RingError;

use crate::error::Error;

/// What was wrong with a frame the peer wrote. Any of these means the peer is faulty or
/// hostile: an honest frame writer cannot produce them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformation {
    /// Fewer than 8 bytes were published at a frame boundary: a frame header never straddles
    /// a publish.
    ShortHeader {
        /// Bytes published after the last frame.
        available: u32,
    },
    /// A reserved tag other than the skip marker.
    ReservedTag {
        /// The tag read.
        tag: u32,
    },
    /// A payload length that no frame in this ring can have.
    LengthBeyondRing {
        /// The length read.
        len: u32,
        /// The largest payload the ring can carry.
        max: u32,
    },
    /// A frame that would run past the end of the ring (a writer must put a skip marker
    /// there and start the frame at offset 0).
    CrossesRingEnd {
        /// The length read.
        len: u32,
        /// Bytes from the frame's start to the ring's end.
        room: u32,
    },
    /// A frame longer than what the peer published: frames are published whole.
    BeyondPublished {
        /// Ring bytes the frame occupies.
        footprint: u32,
        /// Bytes published from the frame's start.
        available: u32,
    },
    /// A skip marker whose length is not exactly "the rest of the ring".
    BadSkip {
        /// The length read.
        len: u32,
        /// The only valid length at this offset.
        expected: u32,
    },
    /// A skip marker at ring offset 0, where every frame fits.
    SkipAtRingStart,
    /// A skip marker that the peer published only in part.
    SkipBeyondPublished {
        /// Ring bytes the skip covers.
        room: u32,
        /// Bytes published from its start.
        available: u32,
    },
}

impl fmt::Display for Malformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformation::ShortHeader { available } => write!(
                f,
                "only {available} bytes published where an 8-byte frame header must start"
            ),
            Malformation::ReservedTag { tag } => {
                write!(f, "tag {tag:#010x} is reserved for the frame layer")
            }
            Malformation::LengthBeyondRing { len, max } => write!(
                f,
                "payload length {len} exceeds the ring's maximum frame payload of {max} bytes"
            ),
            Malformation::CrossesRingEnd { len, room } => write!(
                f,
                "a frame of {len} payload bytes would cross the ring's end ({room} bytes left \
                 before it; the writer must skip to offset 0)"
            ),
            Malformation::BeyondPublished {
                footprint,
                available,
            } => write!(
                f,
                "a frame occupying {footprint} bytes but only {available} bytes published"
            ),
            Malformation::BadSkip { len, expected } => write!(
                f,
                "skip marker of length {len}, but only {expected} (the rest of the ring) is valid"
            ),
            Malformation::SkipAtRingStart => write!(f, "skip marker at ring offset 0"),
            Malformation::SkipBeyondPublished { room, available } => write!(
                f,
                "skip marker covering {room} bytes but only {available} bytes published"
            ),
        }
    }
}

/// Errors of the frame API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The channel failed (peer closed or gone, timeout, would block, corrupt ring, …): see
    /// [`Error`].
    #[error(transparent)]
    Channel(#[from] Error),

    /// The ring itself (an in-process ring of [`FrameProducer`](super::FrameProducer) /
    /// [`FrameConsumer`](super::FrameConsumer)) failed, e.g. a corrupt peer index.
    #[error(transparent)]
    Ring(#[from] RingError),

    /// The peer wrote a frame that an honest writer cannot produce. The reader stays in this
    /// state (every later call fails the same way) and, on a channel, both halves are shut
    /// down.
    #[error(
        "malformed frame at ring offset {offset}: {problem}. The peer is faulty or hostile; \
         close the channel"
    )]
    Malformed {
        /// Ring offset of the bad header.
        offset: u32,
        /// What was wrong.
        problem: Malformation,
    },

    /// A frame that can never fit in this ring.
    #[error(
        "a frame payload of {len} bytes can never fit: this ring carries at most {max} bytes \
         per frame. Split the payload into several frames, use a larger ring (up to 1 MiB), \
         or send it as a byte stream"
    )]
    TooLarge {
        /// Payload bytes asked for.
        len: usize,
        /// The largest payload this ring can carry.
        max: usize,
    },

    /// An application tried to send a tag reserved for the frame layer.
    #[error(
        "tag {tag:#010x} is reserved for the frame layer (tags from 0xffffff00 up); use a \
         smaller tag"
    )]
    ReservedTag {
        /// The tag given.
        tag: u32,
    },

    /// A typed receive found a frame of another size than the type. The frame was left in
    /// the ring: receive it as a borrowed frame to see what it is.
    #[error(
        "frame with tag {tag:#x} has {len} payload bytes, but the requested type has \
         {expected}; the frame was left unread"
    )]
    LengthMismatch {
        /// The frame's tag.
        tag: u32,
        /// The frame's payload length.
        len: usize,
        /// The size of the requested type.
        expected: usize,
    },

    /// A read or write outside a frame's payload.
    #[error("{size} bytes at offset {offset} lie outside the {len}-byte frame payload")]
    OutOfBounds {
        /// Offset asked for.
        offset: usize,
        /// Bytes asked for.
        size: usize,
        /// The payload length.
        len: usize,
    },

    /// A trusted typed view could not be made (alignment or size of the type).
    #[error("cannot view the {len}-byte payload as {type_name}: {reason}")]
    Cast {
        /// The payload length.
        len: usize,
        /// The requested type.
        type_name: &'static str,
        /// Size or alignment problem.
        reason: &'static str,
    },

    /// A fill-in-place closure reported more bytes than it was given.
    #[error(
        "the fill closure reported {written} bytes, but the frame was reserved for at most \
         {max}: return the number of bytes actually written"
    )]
    FillOverrun {
        /// Bytes reported.
        written: usize,
        /// Bytes reserved.
        max: usize,
    },

    /// A fill-in-place closure failed; nothing was sent.
    #[error("filling the frame failed (nothing was sent): {0}")]
    Fill(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The ring does not start at a frame boundary: frames need a ring of at least 16 bytes
    /// whose index is at a multiple of 8, i.e. a channel not used as a byte stream before.
    #[error(
        "cannot carry frames on this ring: {reason}; frames need a ring of at least 16 bytes \
         used for nothing but frames from the start"
    )]
    Unsuitable {
        /// What is wrong.
        reason: String,
    },

    /// An I/O error on a file descriptor or writer a frame was moved to or from.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl FrameError {
    /// Whether the channel (or ring) can no longer carry frames: the peer is gone, closed, or
    /// broke the protocol.
    pub fn is_fatal(&self) -> bool {
        match self {
            FrameError::Channel(e) => e.is_fatal(),
            FrameError::Ring(e) => e.is_corrupt(),
            FrameError::Malformed { .. } => true,
            _ => false,
        }
    }

    /// Whether this is [`Error::WouldBlock`] (non-blocking mode: retry when the channel's fd
    /// is readable).
    pub fn is_would_block(&self) -> bool {
        matches!(self, FrameError::Channel(Error::WouldBlock))
    }

    /// The [`io::ErrorKind`] this error maps to.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            FrameError::Channel(e) => e.io_kind(),
            FrameError::Ring(_) | FrameError::Malformed { .. } => io::ErrorKind::InvalidData,
            FrameError::TooLarge { .. }
            | FrameError::ReservedTag { .. }
            | FrameError::OutOfBounds { .. }
            | FrameError::Cast { .. }
            | FrameError::FillOverrun { .. }
            | FrameError::Unsuitable { .. } => io::ErrorKind::InvalidInput,
            FrameError::LengthMismatch { .. } => io::ErrorKind::InvalidData,
            FrameError::Io { source, .. } => source.kind(),
            FrameError::Fill(_) => io::ErrorKind::Other,
        }
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        match e {
            FrameError::Io { source, .. } => source,
            FrameError::Channel(e) => e.into(),
            other => io::Error::new(other.io_kind(), other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = FrameError::TooLarge {
            len: 5000,
            max: 1016,
        };
        let s = e.to_string();
        assert!(
            s.contains("5000") && s.contains("1016") && s.contains("Split"),
            "{s}"
        );
        let e = FrameError::Malformed {
            offset: 40,
            problem: Malformation::BadSkip {
                len: 3,
                expected: 976,
            },
        };
        let s = e.to_string();
        assert!(
            s.contains("offset 40") && s.contains("976") && s.contains("close"),
            "{s}"
        );
        assert!(e.is_fatal());
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidData);
        assert!(FrameError::Channel(Error::WouldBlock).is_would_block());
    }
}
