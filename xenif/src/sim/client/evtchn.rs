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
//!   Its descriptor comes from a table indexed by port number (no hashing) under a read
//!   lock of its own, apart from the masking state: two threads (a channel's reader and
//!   writer halves) signal at once without contending, and delivery and unmask never wait
//!   for a signal nor a signal for them. Bind and unbind take the write lock just to change
//!   the table; unbind removes the descriptor under it, so a notify in progress finishes
//!   with the descriptor still open: a signal never lands in a descriptor number reused
//!   after close.
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

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// Port numbers this handle accepts from the host: Xen's own limit (the FIFO event-channel
/// ABI has 2^17 ports). The host hands out the lowest free numbers, so tables indexed by port
/// stay as small as the number of ports bound.
const MAX_PORTS: u32 = 1 << 17;

/// Values indexed by port number: one bounds check and one load to find a port (no hashing
/// on the notify and delivery paths).
#[derive(Debug)]
struct PortSlots<T>(Vec<Option<T>>);

impl<T> Default for PortSlots<T> {
    fn default() -> Self {
        PortSlots(Vec::new())
    }
}

impl<T> PortSlots<T> {
    #[inline]
    fn get(&self, port: u32) -> Option<&T> {
        self.0.get(port as usize).and_then(Option::as_ref)
    }

    #[inline]
    fn get_mut(&mut self, port: u32) -> Option<&mut T> {
        self.0.get_mut(port as usize).and_then(Option::as_mut)
    }

    fn contains(&self, port: u32) -> bool {
        self.get(port).is_some()
    }

    /// Stores `value` at `port` (below [`MAX_PORTS`], checked by the caller).
    fn insert(&mut self, port: u32, value: T) {
        let i = port as usize;
        if self.0.len() <= i {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i] = Some(value);
    }

    fn remove(&mut self, port: u32) -> Option<T> {
        self.0.get_mut(port as usize).and_then(Option::take)
    }
}

#[derive(Debug)]
struct BoundPort {
    incoming: OwnedFd,
    masked: bool,
    /// An edge came while masked; the registration is disarmed until unmask.
    fired_while_masked: bool,
}

#[derive(Debug, Default)]
struct Ports {
    bound: PortSlots<BoundPort>,
}

/// An event-channel handle on a simulated host (the sim's `/dev/xen/evtchn`).
///
/// Its [`AsFd`] descriptor is readable while a bound, unmasked port has a pending event.
#[derive(Debug)]
pub struct SimEventChannels {
    conn: Connection,
    epoll: Epoll,
    /// Masking state and incoming descriptors (bind, unbind, delivery, unmask).
    ports: Mutex<Ports>,
    /// The outgoing eventfd of each bound port (notify). A port is in here exactly when it
    /// is in `ports`; whoever changes both takes `ports` first.
    outgoing: RwLock<PortSlots<OwnedFd>>,
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
            outgoing: RwLock::new(PortSlots::default()),
        })
    }

    // A panic while holding one of these locks cannot leave its table inconsistent (each
    // change is one statement), so a poisoned lock is still usable.
    fn ports(&self) -> MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outgoing(&self) -> RwLockReadGuard<'_, PortSlots<OwnedFd>> {
        self.outgoing.read().unwrap_or_else(|e| e.into_inner())
    }

    fn outgoing_mut(&self) -> RwLockWriteGuard<'_, PortSlots<OwnedFd>> {
        self.outgoing.write().unwrap_or_else(|e| e.into_inner())
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
        if port.0 >= MAX_PORTS {
            let _ = self.conn.call(&Request::Unbind { port });
            return Err(self.conn.sim_error(format!(
                "{what} answered with port {port}, beyond the {MAX_PORTS} ports Xen can have"
            )));
        }
        let mut ports = self.ports();
        if ports.bound.contains(port.0) {
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
                masked: false,
                fired_while_masked: false,
            },
        );
        self.outgoing_mut().insert(port.0, outgoing);
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
                match ports.bound.get_mut(n) {
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
            let Some(p) = ports.bound.remove(port.0) else {
                return Err(not_bound(port, self.conn.domid()));
            };
            let _ = self.epoll.delete(&p.incoming);
            // Waits for a notify in progress on this port; it is closed after that.
            drop(self.outgoing_mut().remove(port.0));
        }
        match self.conn.call(&Request::Unbind { port })? {
            (Reply::Done, _) => Ok(()),
            _ => Err(self.conn.sim_error("unexpected answer to UNBIND")),
        }
    }

    fn notify(&self, port: EventPort) -> Result<()> {
        let outgoing = self.outgoing();
        let Some(fd) = outgoing.get(port.0) else {
            return Err(not_bound(port, self.conn.domid()));
        };
        match nix::unistd::write(fd, &1u64.to_ne_bytes()) {
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
            .get_mut(port.0)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::sim::broker::Broker;

    /// Notifications from two threads while a third binds and unbinds ports (one of them the
    /// port being signalled): a bound port's notifications all succeed, one being unbound
    /// fails only with "not bound", nothing panics or hangs, and the stable port's events
    /// arrive.
    #[test]
    fn notify_is_safe_against_concurrent_bind_and_unbind() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::new(dir.path()).unwrap();
        broker.domain_created(DomId(0)).unwrap();
        let ev = SimEventChannels::connect(dir.path(), DomId(0)).unwrap();
        let peer = SimEventChannels::connect(dir.path(), DomId(0)).unwrap();
        let stable = ev.bind_unbound(DomId(0)).unwrap();
        let stable_peer = peer.bind_interdomain(DomId(0), stable).unwrap();
        let churned = std::sync::Mutex::new(ev.bind_unbound(DomId(0)).unwrap());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        ev.notify(stable).unwrap();
                        let port = *churned.lock().unwrap();
                        if let Err(e) = ev.notify(port) {
                            assert!(e.to_string().contains("not bound"), "{e}");
                        }
                    }
                });
            }
            for _ in 0..200 {
                let mut port = churned.lock().unwrap();
                ev.unbind(*port).unwrap();
                *port = ev.bind_unbound(DomId(0)).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(
            peer.wait(Some(Duration::from_secs(5))).unwrap(),
            Some(stable_peer)
        );
    }
}
