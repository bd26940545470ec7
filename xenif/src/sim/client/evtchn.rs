//! Event channels of a simulated host, with the semantics of Linux `/dev/xen/evtchn`.
//!
//! Each bound port has two eventfds received from the host: *incoming* (the other end writes
//! it) and *outgoing* (we write it to notify). The handle's pollable descriptor is an epoll
//! instance watching every incoming eventfd edge-triggered (each `write(2)` by the other end
//! is one edge). Masking is kept here, not in the kernel:
//!
//! * a port that fires is delivered once and is then *masked*;
//! * the first edge on a masked port marks it "fired while masked" and *disarms* its epoll
//!   registration, so that further notifications on a masked port cost nothing: a peer that
//!   notifies in a tight loop cannot keep [`EventChannels::wait`] or
//!   [`EventChannels::pending`] busy, nor keep the descriptor readable (Linux raises no
//!   interrupt for a masked port either);
//! * [`EventChannels::unmask`] clears the mask; if the port fired meanwhile it re-arms the
//!   registration, and because the incoming eventfd is readable (its counter is never reset)
//!   the kernel queues the edge at once: the event pending while masked is delivered after
//!   unmask, as on Linux;
//! * `notify` is one `write(2)` into the other process's eventfd, with no host on the way.
//!
//! So the hot path of a ping-pong is one `write` (notify) and one `epoll_wait` (wait) per
//! side; unmask is a few instructions unless the port fired while masked (one `epoll_ctl`).
//! The incoming counters are never read: edges carry the information, and a counter cannot
//! overflow in practice (2^64 − 1 notifications; an end that saturates it on purpose only
//! silences its own notifications).
//!
//! Readiness of the descriptor may be spurious once: an edge on a masked port makes it
//! readable until [`EventChannels::pending`] or [`EventChannels::wait`] absorbs the edge and
//! reports nothing. Event channels allow spurious wake-ups; callers re-check their state.

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

/// How an incoming eventfd is registered while its port may deliver.
fn armed(port: u32) -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, port.into())
}

#[derive(Debug)]
struct BoundPort {
    incoming: OwnedFd,
    outgoing: OwnedFd,
    masked: bool,
    /// An edge came while masked; the registration is disarmed until unmask.
    fired_while_masked: bool,
}

#[derive(Debug, Default)]
struct Ports {
    bound: HashMap<u32, BoundPort>,
}

/// An event-channel handle on a simulated host (the sim's `/dev/xen/evtchn`).
///
/// Its [`AsFd`] descriptor is readable while a bound, unmasked port has a pending event.
#[derive(Debug)]
pub struct SimEventChannels {
    conn: Connection,
    epoll: Epoll,
    ports: Mutex<Ports>,
}

fn not_bound(port: EventPort, domid: DomId) -> Error {
    Error::Port {
        port,
        reason: format!("not bound by this event-channel handle (domain {domid})"),
    }
}

fn epoll_error(e: Errno) -> Error {
    Error::os("epoll_wait on an event-channel handle", e.into())
}

/// What one look at the epoll instance found.
enum Look {
    /// A port to deliver.
    Port(EventPort),
    /// Something that is not a delivery (an absorbed edge, an interrupted wait).
    Nothing,
    /// Nothing ready within the timeout.
    TimedOut,
}

impl SimEventChannels {
    /// Opens a handle acting as domain `domid` of the host rooted at `dir`.
    pub fn connect(dir: &Path, domid: DomId) -> Result<Self> {
        let conn = Connection::open(dir, domid)?;
        let os = |what: &str, e: Errno| {
            Error::os(format!("{what} for an event-channel handle"), e.into())
        };
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| os("epoll_create1", e))?;
        Ok(SimEventChannels {
            conn,
            epoll,
            ports: Mutex::new(Ports::default()),
        })
    }

    fn ports(&self) -> MutexGuard<'_, Ports> {
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
        if ports.bound.contains_key(&port.0) {
            return Err(self.conn.sim_error(format!(
                "{what} answered with port {port}, which this handle already has"
            )));
        }
        if let Err(e) = self.epoll.add(&incoming, armed(port.0)) {
            drop(ports);
            let _ = self.conn.call(&Request::Unbind { port });
            return Err(Error::os("epoll_ctl(ADD) for a new port", e.into()));
        }
        ports.bound.insert(
            port.0,
            BoundPort {
                incoming,
                outgoing,
                masked: false,
                fired_while_masked: false,
            },
        );
        Ok(port)
    }

    /// One look at the epoll instance (waiting up to `timeout`).
    fn look(&self, timeout: EpollTimeout) -> Result<Look> {
        let mut events = [EpollEvent::empty()];
        match self.epoll.wait(&mut events, timeout) {
            Ok(0) => Ok(Look::TimedOut),
            Ok(_) => {
                let n = events[0].data() as u32;
                let mut ports = self.ports();
                match ports.bound.get_mut(&n) {
                    // Unbound since the edge: nothing to deliver.
                    None => Ok(Look::Nothing),
                    Some(p) if p.masked => {
                        // Disarm: further edges on a masked port wake nobody. Unmask re-arms.
                        p.fired_while_masked = true;
                        let mut none = EpollEvent::new(EpollFlags::empty(), u64::from(n));
                        self.epoll.modify(&p.incoming, &mut none).map_err(|e| {
                            Error::os("epoll_ctl(MOD) to disarm a masked port", e.into())
                        })?;
                        Ok(Look::Nothing)
                    }
                    Some(p) => {
                        p.masked = true;
                        Ok(Look::Port(EventPort(n)))
                    }
                }
            }
            Err(Errno::EINTR) => Ok(Look::Nothing),
            Err(e) => Err(epoll_error(e)),
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
        {
            let mut ports = self.ports();
            let Some(p) = ports.bound.remove(&port.0) else {
                return Err(not_bound(port, self.conn.domid()));
            };
            let _ = self.epoll.delete(&p.incoming);
        }
        match self.conn.call(&Request::Unbind { port })? {
            (Reply::Done, _) => Ok(()),
            _ => Err(self.conn.sim_error("unexpected answer to UNBIND")),
        }
    }

    fn notify(&self, port: EventPort) -> Result<()> {
        let ports = self.ports();
        let p = ports
            .bound
            .get(&port.0)
            .ok_or_else(|| not_bound(port, self.conn.domid()))?;
        match nix::unistd::write(&p.outgoing, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is saturated, so an event is pending there anyway.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(Error::os(format!("notify on port {port}"), e.into())),
        }
    }

    fn pending(&self) -> Result<Option<EventPort>> {
        // Each look either delivers, or absorbs one edge of a masked port and disarms it (or
        // was interrupted); the number of those is bounded by the ports, so this ends.
        loop {
            match self.look(EpollTimeout::ZERO)? {
                Look::Port(p) => return Ok(Some(p)),
                Look::Nothing => continue,
                Look::TimedOut => return Ok(None),
            }
        }
    }

    fn unmask(&self, port: EventPort) -> Result<()> {
        let mut ports = self.ports();
        let p = ports
            .bound
            .get_mut(&port.0)
            .ok_or_else(|| not_bound(port, self.conn.domid()))?;
        p.masked = false;
        if std::mem::take(&mut p.fired_while_masked) {
            // Re-arm. The incoming eventfd is readable (it fired), so the kernel queues an
            // edge for it at once: the event that came while masked is delivered now.
            let mut ev = armed(port.0);
            self.epoll.modify(&p.incoming, &mut ev).map_err(|e| {
                Error::os(format!("epoll_ctl(MOD) in unmask of port {port}"), e.into())
            })?;
        }
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Option<EventPort>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let t = match (timeout, deadline) {
                (None, _) | (Some(_), None) => EpollTimeout::NONE,
                (Some(_), Some(d)) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Whole milliseconds, rounded up, so that we never return before the
                    // deadline.
                    let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128);
                    EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
                }
            };
            match self.look(t)? {
                Look::Port(p) => return Ok(Some(p)),
                Look::Nothing | Look::TimedOut => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
            }
        }
    }
}
