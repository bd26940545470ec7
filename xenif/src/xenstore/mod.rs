//! XenStore: the wire codec ([`wire`]), a thread-safe client ([`Client`]), and (in
//! [`crate::sim::xenstored`]) the simulated xenstored.
//!
//! The client speaks the protocol of Xen's `xs_wire.h` to a real xenstored (dom0 socket or a
//! domU's `/dev/xen/xenbus`) or to the simulated host, and is what the vchan channel uses to
//! publish and find ring references, learn its own domain id and watch for peer death.
//!
//! ```no_run
//! use vchan_xenif::xenstore::Client;
//!
//! # fn main() -> vchan_xenif::xenstore::Result<()> {
//! let xs = Client::connect()?; // XENSTORED_PATH, the simulated host, the socket, the device
//! xs.write("data/greeting", "hello")?; // relative to /local/domain/<own id>
//! assert_eq!(xs.read_string("data/greeting")?, "hello");
//! let n = xs.transaction(|tx| {
//!     let n: u32 = tx.read_string("data/counter").map(|s| s.parse().unwrap_or(0)).unwrap_or(0);
//!     tx.write("data/counter", (n + 1).to_string())?;
//!     Ok(n + 1)
//! })?;
//! let watch = xs.watch("data", "my-token")?;
//! let first = watch.next_event()?; // fires once at registration
//! assert_eq!(first.path, "data");
//! # let _ = n; Ok(()) }
//! ```
//!
//! Nothing in this module trusts the other end beyond the protocol: replies are matched by
//! request id, lengths are checked before allocation, and malformed input is an error.

mod client;
mod error;
pub mod fuzzing;
mod watch;
pub mod wire;

pub use client::{
    Client, DEFAULT_RUNDIR, DEFAULT_TIMEOUT, DomIdSources, ENV_XENSTORED_PATH,
    ENV_XENSTORED_RUNDIR, TRANSACTION_ATTEMPTS, Transaction, XENBUS_DEVICE,
};
pub use error::{Error, Result};
pub use watch::{WATCH_QUEUE_LIMIT, Watch, WatchEvent};
pub use wire::{ErrorCode, MsgType, Perm, PermAccess};
