//! Errors of the ring halves.

use core::fmt;

/// A shared index of one ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexName {
    /// The producer's index (`prod`): bytes written so far.
    Prod,
    /// The consumer's index (`cons`): bytes consumed so far.
    Cons,
}

impl fmt::Display for IndexName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IndexName::Prod => "prod",
            IndexName::Cons => "cons",
        })
    }
}

/// An impossible value found in a peer-written index: what was seen, and the range an honest
/// peer could have written (inclusive, in free-running mod-2^32 arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Corruption {
    /// The index the peer owns and wrote.
    pub index: IndexName,
    /// The value read (once).
    pub observed: u32,
    /// Lowest possible value (what we had already seen, or the start of unconsumed data).
    pub low: u32,
    /// Highest possible value.
    pub high: u32,
    /// Size of the ring in bytes.
    pub ring_size: u32,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer-written {} = {} is outside {}..={}, the only values an honest peer could \
             have written (ring of {} bytes; indices are free-running mod 2^32)",
            self.index, self.observed, self.low, self.high, self.ring_size
        )
    }
}

/// Errors of [`Producer`](crate::Producer) and [`Consumer`](crate::Consumer) operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The peer put the ring into a state no honest peer can produce (for example
    /// `prod - cons > size`, or an index moving backwards). The half that saw it stays in this
    /// state: every later operation returns the same error. Stop using the channel.
    #[error(
        "ring corrupt: {0}. The peer is faulty or hostile; stop using this channel and close it"
    )]
    Corrupt(Corruption),
    /// All-or-nothing write: not enough free space right now.
    #[error(
        "not enough free space: {requested} bytes requested, {free} free; retry once the \
         consumer has made progress (request a READ notification and wait)"
    )]
    NoSpace {
        /// Bytes the operation needs.
        requested: usize,
        /// Bytes free now.
        free: usize,
    },
    /// All-or-nothing read: not enough data right now.
    #[error(
        "not enough data: {requested} bytes requested, {available} available; retry once the \
         producer has made progress (request a WRITE notification and wait)"
    )]
    NoData {
        /// Bytes the operation needs.
        requested: usize,
        /// Bytes readable now.
        available: usize,
    },
    /// All-or-nothing operation larger than the ring: it can never succeed.
    #[error(
        "{requested} bytes can never fit in a ring of {capacity} bytes: split the transfer or \
         use a larger ring"
    )]
    TooLarge {
        /// Bytes the operation needs.
        requested: usize,
        /// The ring size.
        capacity: usize,
    },
    /// `commit(n)` with more bytes than are free (reserve first).
    #[error("cannot commit {requested} bytes: only {free} bytes are free (reserve them first)")]
    CommitBeyondFree {
        /// Bytes the caller tried to commit.
        requested: usize,
        /// Bytes free (and so reservable).
        free: usize,
    },
    /// `consume(n)` with more bytes than are readable (peek first).
    #[error("cannot consume {requested} bytes: only {available} bytes are readable (peek first)")]
    ConsumeBeyondAvailable {
        /// Bytes the caller tried to consume.
        requested: usize,
        /// Bytes readable.
        available: usize,
    },
    /// Ring memory whose size is not a power of two from 1 byte to 2 GiB.
    #[error("ring memory of {size} bytes: the size must be a power of two from 1 byte to 2 GiB")]
    InvalidSize {
        /// The size given.
        size: usize,
    },
}

impl RingError {
    /// Whether this is [`RingError::Corrupt`]: the channel must be abandoned.
    pub const fn is_corrupt(&self) -> bool {
        matches!(self, RingError::Corrupt(_))
    }

    /// Whether retrying later (after a notification) can succeed.
    pub const fn is_transient(&self) -> bool {
        matches!(self, RingError::NoSpace { .. } | RingError::NoData { .. })
    }
}
