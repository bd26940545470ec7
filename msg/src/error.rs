//! The channel's error type.

use std::io;
use std::time::Duration;

use vchan_ring::{Corruption, GeometryError, RingError};
use vchan_xenif::DomId;
use vchan_xenif::xenstore;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a vchan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end (its live byte is 0): it exited, was killed, or called close.
    /// Data it sent before closing can still be read; nothing more will come.
    #[error("the peer (domain {peer}) closed the channel")]
    PeerClosed {
        /// The peer domain.
        peer: DomId,
    },

    /// The peer *domain* was destroyed (XenStore `@releaseDomain`), not only its process.
    #[error("the peer domain {peer} no longer exists (it was destroyed or released)")]
    PeerDomainGone {
        /// The peer domain.
        peer: DomId,
    },

    /// The peer put the shared ring into a state an honest peer cannot produce. The channel is
    /// unusable from now on: close it.
    #[error(
        "the ring shared with domain {peer} is corrupt ({corruption}); the peer is faulty or \
         hostile: close the channel"
    )]
    Corrupt {
        /// The peer domain.
        peer: DomId,
        /// What was observed.
        corruption: Corruption,
    },

    /// An all-or-nothing transfer larger than the ring can never complete.
    #[error(
        "a packet of {len} bytes can never fit in the {capacity}-byte ring: send it as a \
         stream (write_all) or use a larger ring (read_min/write_min)"
    )]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The ring's size.
        capacity: usize,
    },

    /// Non-blocking mode: the operation would have to wait.
    #[error("the operation would block (non-blocking mode): wait for the channel's fd and retry")]
    WouldBlock,

    /// A timeout given to a blocking operation passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// This end was closed (or is being closed by another thread).
    #[error("the channel was closed on this side")]
    Closed,

    /// The server's control page failed validation, or the handshake could not complete.
    #[error("vchan handshake with domain {peer} at {path:?}: {reason}")]
    Handshake {
        /// The other domain.
        peer: DomId,
        /// The XenStore base path.
        path: String,
        /// What went wrong and what to do about it.
        reason: String,
    },

    /// The control page a server wrote does not describe a valid vchan.
    #[error("vchan at {path:?} (server domain {peer}): invalid control page: {source}")]
    BadGeometry {
        /// The server domain.
        peer: DomId,
        /// The XenStore base path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: GeometryError,
    },

    /// Ring sizes asked of a server are impossible (above 1 MiB).
    #[error(transparent)]
    Geometry(#[from] GeometryError),

    /// A XenStore base path that cannot be used.
    #[error("invalid vchan XenStore path {path:?}: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// Why it is refused.
        reason: String,
    },

    /// Grants, event channels or backend selection failed.
    #[error(transparent)]
    Xen(#[from] vchan_xenif::Error),

    /// A XenStore operation failed.
    #[error(transparent)]
    XenStore(#[from] xenstore::Error),

    /// Misuse of a ring operation (e.g. committing more than was reserved).
    #[error(transparent)]
    Ring(RingError),

    /// An I/O error on a file descriptor the channel moved data to or from.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether the channel can no longer carry data (peer gone, corrupt, closed).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::PeerClosed { .. }
                | Error::PeerDomainGone { .. }
                | Error::Corrupt { .. }
                | Error::Closed
        )
    }

    /// The [`io::ErrorKind`] this error maps to in the `std::io` traits.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::PeerClosed { .. } | Error::PeerDomainGone { .. } => io::ErrorKind::BrokenPipe,
            Error::Corrupt { .. } | Error::BadGeometry { .. } => io::ErrorKind::InvalidData,
            Error::TooLarge { .. } | Error::InvalidPath { .. } | Error::Geometry(_) => {
                io::ErrorKind::InvalidInput
            }
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::Closed => io::ErrorKind::NotConnected,
            Error::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io { source, .. } => source,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}
