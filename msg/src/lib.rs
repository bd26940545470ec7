//! `vchan-msg`: vchans — byte streams and packets between two Xen domains over shared
//! memory, wire-compatible with Xen's C `libxenvchan`.
//!
//! A [`Server`] (usually in dom0) shares a control page and two rings with a client domain
//! and advertises them in XenStore; a [`Client`] maps them. Either side then holds a
//! [`Vchan`]: [`read`](Vchan::read)/[`write`](Vchan::write) move what they can (stream),
//! [`recv`](Vchan::recv)/[`send`](Vchan::send) move a whole packet or nothing, and
//! `std::io::{Read, Write}` are implemented. Operations block by default ([`Mode`]), spin
//! briefly before sleeping ([`SpinPolicy`]), honour timeouts, and fail promptly when the
//! peer closes, dies or its domain is destroyed — never hang. A corrupt ring (a faulty or
//! hostile peer) is the distinct [`Error::Corrupt`].
//!
//! The Xen services come from `vchan-xenif`: real Xen, or the simulated host for tests and
//! development ([`vchan_xenif::Backend`]).
//!
//! ```no_run
//! use vchan_msg::{Client, Server, default_path};
//! use vchan_xenif::DomId;
//!
//! # fn main() -> vchan_msg::Result<()> {
//! // In dom0:
//! let path = default_path(DomId(0), DomId(5), 1);
//! let mut server = Server::new(DomId(5), &path).read_min(1 << 16).write_min(1 << 16).accept(None)?;
//! server.send(b"ping")?;
//! // In domain 5:
//! let mut client = Client::new(DomId(0), &path).connect()?;
//! let mut buf = [0u8; 4];
//! client.recv(&mut buf)?;
//! # Ok(()) }
//! ```
//!
//! # Trust
//!
//! The peer may be hostile: every value it can write is read once and validated
//! (`vchan-ring`), no safe API exposes references into shared memory, and corruption is an
//! error, not a panic or a hang.
#![deny(missing_docs)]

mod channel;
mod client;
mod config;
mod error;
pub mod frame;
mod monitor;
mod server;
mod spin;
mod wait;

pub use channel::{ReadHalf, ShutdownHandle, Vchan, WriteHalf};
pub use client::Client;
pub use config::{Mode, SpinPolicy, check_path, default_path};
pub use error::{Error, Result};
pub use server::Server;
pub use vchan_ring::Role;

/// The Rust examples of the workspace's `README.md`, compiled (and run) as doc tests so that
/// the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
