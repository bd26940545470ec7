//! Event channels: the doorbell between two domains.
//!
//! Semantics follow Linux `/dev/xen/evtchn` (and the C `xenevtchn` handle), which every backend
//! reproduces: a handle binds any number of ports; when a port fires it becomes *pending* and is
//! masked, so it fires at most once until [`EventChannels::unmask`] is called; the handle's fd
//! is readable while any port is pending (usable with `poll`/`epoll`).

use core::fmt;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::error::Result;
use crate::types::{DomId, EventPort};

/// An event-channel handle (C: `xenevtchn_handle`).
pub trait EventChannels: Send + Sync + fmt::Debug + AsFd {
    /// Allocates a port that `remote` can bind to (`EVTCHN_BIND_UNBOUND_PORT`); returns our end.
    fn bind_unbound(&self, remote: DomId) -> Result<EventPort>;

    /// Connects to `remote_port`, a port `remote` allocated for us (`EVTCHN_BIND_INTERDOMAIN`);
    /// returns our end.
    fn bind_interdomain(&self, remote: DomId, remote_port: EventPort) -> Result<EventPort>;

    /// Closes a port bound by this handle.
    fn unbind(&self, port: EventPort) -> Result<()>;

    /// Signals the remote end of `port`. Cheap: one system call, no broker on the way.
    fn notify(&self, port: EventPort) -> Result<()>;

    /// The next pending port, without blocking (`None` if nothing is pending). The port stays
    /// masked until [`Self::unmask`].
    fn pending(&self) -> Result<Option<EventPort>>;

    /// Re-enables delivery for a port returned by [`Self::pending`] or [`Self::wait`].
    fn unmask(&self, port: EventPort) -> Result<()>;

    /// Blocks until a port is pending (returning it, still masked) or `timeout` passes
    /// (`Ok(None)`); `None` waits without limit.
    fn wait(&self, timeout: Option<Duration>) -> Result<Option<EventPort>>;
}
