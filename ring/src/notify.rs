//! The notify-bit protocol (DESIGN §5), as two functions that tell the caller whether to
//! signal the event channel.
//!
//! Each side owns one notify byte in the control page (`srv_notify` for the server,
//! `cli_notify` for the client) holding the requests *of the peer*: [`NOTIFY_WRITE`]
//! ("tell me when you write") and [`NOTIFY_READ`] ("tell me when you consume").
//!
//! * A side about to sleep for data (or space) first calls [`request_notify`] on the *peer's*
//!   byte with `NOTIFY_WRITE` (or `NOTIFY_READ`), then re-checks the ring, and sleeps on the
//!   event channel only if the re-check still comes up short.
//! * A side that has just published its index calls [`take_notify_request`] on *its own* byte
//!   with `NOTIFY_WRITE` (after publishing `prod`) or `NOTIFY_READ` (after publishing `cons`),
//!   and signals the event channel only if the bit was set.
//!
//! [`Producer::publish_and_check`](crate::Producer::publish_and_check),
//! [`Producer::space_or_request`](crate::Producer::space_or_request) and their
//! [`Consumer`](crate::Consumer) counterparts wrap exactly these steps.
//!
//! # Why no wake-up is lost
//!
//! Let the writer W publish (`prod.store(p, Release)`) then clear-and-test
//! (`flag.fetch_and(!WRITE, SeqCst)`), and the reader R request (`flag.fetch_or(WRITE,
//! SeqCst)`) then re-check (`prod.load(Acquire)`). Both read-modify-writes act on the same
//! byte, so they are totally ordered (modification order):
//!
//! * R's `fetch_or` first: W's `fetch_and` (or an earlier one by W that already signalled)
//!   sees the bit and W signals.
//! * W's `fetch_and` first: R's `fetch_or` reads its result (read-modify-writes always read
//!   the latest value, and every later write of the byte is itself a read-modify-write, so the
//!   release sequence is unbroken); release/acquire then orders W's `prod` store before R's
//!   re-check, which therefore sees the new data and R does not sleep.
//!
//! The same argument holds for `NOTIFY_READ` with `cons` in place of `prod`. The loom model
//! `ring/tests/loom.rs` checks it, and checks that dropping the re-check does lose wake-ups.
//! `SeqCst` on the read-modify-writes makes them full barriers like C's `__sync_*` builtins
//! (on x86 every `lock`ed instruction is one); the extra fence after a request mirrors C's
//! `xen_mb()` for peers on weaker architectures and costs nothing on the fast path.

use core::sync::atomic::Ordering;

use crate::layout::{NOTIFY_READ, NOTIFY_WRITE};
use crate::shared::FlagCell;
use crate::sync::fence;

/// Asks the peer to signal the event channel after its next write (`bit` =
/// [`NOTIFY_WRITE`]) or consume ([`NOTIFY_READ`]): atomically ORs `bit` into `peer_byte` (the
/// notify byte the peer honours), with a full barrier, so that the caller's re-check of the
/// ring happens after the request is visible.
#[inline]
pub fn request_notify<F: FlagCell + ?Sized>(peer_byte: &F, bit: u8) {
    debug_assert!(bit == NOTIFY_WRITE || bit == NOTIFY_READ);
    peer_byte.fetch_or(bit, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// After publishing an index, atomically clears `bit` in `own_byte` (the notify byte this side
/// honours) and returns whether it was set, i.e. whether the peer is waiting and the caller
/// must signal the event channel.
#[inline]
pub fn take_notify_request<F: FlagCell + ?Sized>(own_byte: &F, bit: u8) -> bool {
    debug_assert!(bit == NOTIFY_WRITE || bit == NOTIFY_READ);
    own_byte.fetch_and(!bit, Ordering::SeqCst) & bit != 0
}
