//! Event channels of a simulated host, with the semantics of Linux `/dev/xen/evtchn`.
//!
//! Each bound port has two eventfds received from the host: *incoming* (the other end writes
//! it) and *outgoing* (we write it to notify). The handle's pollable descriptor is an epoll
//! instance over the incoming eventfds, each registered `EPOLLONESHOT`:
//!
//! * a port that fires is reported once and then disarmed — *masked* — until
//!   [`EventChannels::unmask`] re-arms it;
//! * reporting a port consumes the events that made it fire; events arriving while it is
//!   masked stay counted, so unmask makes it fire again at once (Linux: the pending bit is
//!   set while masked and delivered at unmask);
//! * `notify` is one `write(2)` into the other process's eventfd, with no host on the way.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::Connection;
use crate::error::{Error, Result};
use crate::evtchn::EventChannels;
use crate::sim::broker::wire::{Reply, Request};
use crate::types::{DomId, EventPort};

#[derive(Debug)]
struct BoundPort {
    incoming: OwnedFd,
    outgoing: OwnedFd,
}

/// An event-channel handle on a simulated host (the sim's `/dev/xen/evtchn`).
///
/// Its [`AsFd`] descriptor is readable while a bound, unmasked port has a pending event.
#[derive(Debug)]
pub struct SimEventChannels {
    conn: Connection,
    epoll: Epoll,
    ports: Mutex<HashMap<u32, BoundPort>>,
}

fn armed(port: u32) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT,
        u64::from(port),
    )
}

fn not_bound(port: EventPort, domid: DomId) -> Error {
    Error::Port {
        port,
        reason: format!("not bound by this event-channel handle (domain {domid})"),
    }
}

impl SimEventChannels {
    /// Opens a handle acting as domain `domid` of the host rooted at `dir`.
    pub fn connect(dir: &Path, domid: DomId) -> Result<Self> {
        let conn = Connection::open(dir, domid)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::os("epoll_create1 for an event-channel handle", e.into()))?;
        Ok(SimEventChannels {
            conn,
            epoll,
            ports: Mutex::new(HashMap::new()),
        })
    }

    fn ports(&self) -> MutexGuard<'_, HashMap<u32, BoundPort>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bind(&self, req: Request, what: &str) -> Result<EventPort> {
        let (reply, fds) = self.conn.call(&req)?;
        let port = match reply {
            Reply::Bound { port } => port,
            _ => return Err(self.conn.sim_error(format!("unexpected answer to {what}"))),
        };
        let mut fds = fds.into_iter();
        let (Some(incoming), Some(outgoing), None) = (fds.next(), fds.next(), fds.next()) else {
            // The host bound the port: give it back before failing.
            let _ = self.conn.call(&Request::Unbind { port });
            return Err(self
                .conn
                .sim_error(format!("{what} answered without exactly two descriptors")));
        };
        let mut ports = self.ports();
        if ports.contains_key(&port.0) {
            return Err(self.conn.sim_error(format!(
                "{what} answered with port {port}, which this handle already has"
            )));
        }
        if let Err(e) = self.epoll.add(&incoming, armed(port.0)) {
            drop(ports);
            let _ = self.conn.call(&Request::Unbind { port });
            return Err(Error::os("epoll_ctl(ADD) for a new port", e.into()));
        }
        ports.insert(port.0, BoundPort { incoming, outgoing });
        Ok(port)
    }

    /// Turns a readiness report for `port` into a delivery: consumes the port's counted events.
    /// `false` if the port was unbound in the meantime.
    fn take(&self, port: u32) -> bool {
        let ports = self.ports();
        match ports.get(&port) {
            Some(p) => {
                let mut v = [0u8; 8];
                // EAGAIN (nothing counted) can only follow another reader of the eventfd; the
                // report is then merely spurious, which event channels allow.
                let _ = nix::unistd::read(&p.incoming, &mut v);
                true
            }
            None => false,
        }
    }

    fn poll_once(&self, timeout: EpollTimeout) -> Result<Option<EventPort>> {
        let mut events = [EpollEvent::empty()];
        match self.epoll.wait(&mut events, timeout) {
            Ok(0) | Err(Errno::EINTR) => Ok(None),
            Ok(_) => {
                let port = events[0].data() as u32;
                Ok(self.take(port).then_some(EventPort(port)))
            }
            Err(e) => Err(Error::os("epoll_wait on an event-channel handle", e.into())),
        }
    }
}

impl AsFd for SimEventChannels {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl EventChannels for SimEventChannels {
    fn bind_unbound(&self, remote: DomId) -> Result<EventPort> {
        self.bind(Request::BindUnbound { remote }, "BIND_UNBOUND")
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: EventPort) -> Result<EventPort> {
        self.bind(
            Request::BindInterdomain {
                remote,
                remote_port,
            },
            "BIND_INTERDOMAIN",
        )
    }

    fn unbind(&self, port: EventPort) -> Result<()> {
        let removed = self.ports().remove(&port.0);
        let Some(p) = removed else {
            return Err(not_bound(port, self.conn.domid()));
        };
        let _ = self.epoll.delete(&p.incoming);
        drop(p);
        match self.conn.call(&Request::Unbind { port })? {
            (Reply::Done, _) => Ok(()),
            _ => Err(self.conn.sim_error("unexpected answer to UNBIND")),
        }
    }

    fn notify(&self, port: EventPort) -> Result<()> {
        let ports = self.ports();
        let p = ports
            .get(&port.0)
            .ok_or_else(|| not_bound(port, self.conn.domid()))?;
        match nix::unistd::write(&p.outgoing, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is saturated, so an event is pending there anyway.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(Error::os(format!("notify on port {port}"), e.into())),
        }
    }

    fn pending(&self) -> Result<Option<EventPort>> {
        // A report for a port unbound meanwhile is dropped; look again (bounded by the number
        // of ports that were ready).
        for _ in 0..64 {
            let mut events = [EpollEvent::empty()];
            match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    let port = events[0].data() as u32;
                    if self.take(port) {
                        return Ok(Some(EventPort(port)));
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("epoll_wait on an event-channel handle", e.into())),
            }
        }
        Ok(None)
    }

    fn unmask(&self, port: EventPort) -> Result<()> {
        let ports = self.ports();
        let p = ports
            .get(&port.0)
            .ok_or_else(|| not_bound(port, self.conn.domid()))?;
        let mut ev = armed(port.0);
        self.epoll
            .modify(&p.incoming, &mut ev)
            .map_err(|e| Error::os(format!("unmask of port {port} (epoll_ctl MOD)"), e.into()))
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Option<EventPort>> {
        let Some(timeout) = timeout else {
            loop {
                if let Some(port) = self.poll_once(EpollTimeout::NONE)? {
                    return Ok(Some(port));
                }
            }
        };
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            // Whole milliseconds, rounded up, so that we never return before the deadline.
            let ms = left
                .as_nanos()
                .div_ceil(1_000_000)
                .min(i32::MAX as u128) as i32;
            let t = EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX);
            if let Some(port) = self.poll_once(t)? {
                return Ok(Some(port));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}
