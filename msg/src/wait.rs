//! Sleeping on the event channel, shared by every thread that uses one channel.
//!
//! A channel has one event-channel port, and Linux evtchn semantics make a fired port *pending
//! and masked* until someone consumes and unmasks it. If two threads (a reader and a writer of
//! a split channel) both slept on the fd, one could consume the event the other was waiting
//! for and the other would sleep on. So exactly one thread at a time sleeps in `poll(2)` on the
//! fd (the *poller*); any other waiter sleeps on a condition variable. Every consumed event (or
//! peer-monitor wake-up) bumps a generation counter and wakes all waiters, who re-check their
//! ring condition.
//!
//! The caller's protocol, which makes lost wake-ups impossible:
//!
//! 1. `let seen = waiter.generation();`
//! 2. request a notification from the peer (set the bit in the peer's notify byte, full fence);
//! 3. re-check the ring; if the condition holds, stop;
//! 4. `waiter.wait(seen, deadline)`; then go to 1.
//!
//! An event fired after step 1 either is still pending when the poller polls (so `poll`
//! returns at once) or was consumed by another thread, which bumped the generation past `seen`
//! (so `wait` returns at once).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use vchan_xenif::{EventChannels, EventPort};

use crate::error::{Error, Result};

/// A second source of wake-ups besides the event channel: typically a XenStore watch on
/// `@releaseDomain` that tells when the peer *domain* (not just its process) is gone.
pub(crate) trait PeerMonitor: Send + Sync + std::fmt::Debug {
    /// A fd that becomes readable when [`PeerMonitor::check`] should be called.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Consumes whatever made the fd readable; `Ok(false)` once the peer is known to be gone.
    fn check(&self) -> Result<bool>;
}

#[derive(Debug, Default)]
struct State {
    /// A thread is inside `poll(2)` on the event-channel fd.
    polling: bool,
}

/// What ended a [`Waiter::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Something happened since `seen`: re-check the ring.
    Progress,
    /// The deadline passed first.
    TimedOut,
}

/// The event channel of one vchan, and the machinery to sleep on it from several threads.
#[derive(Debug)]
pub(crate) struct Waiter {
    events: Box<dyn EventChannels>,
    port: EventPort,
    monitor: Option<Box<dyn PeerMonitor>>,
    /// Written by [`Waiter::interrupt`] to end a `poll(2)` in progress (shutdown).
    interrupt: EventFd,
    generation: AtomicU64,
    /// The monitor reported the peer gone. Set (once, never cleared) while holding `state`
    /// and before the generation is bumped, so a waiter that sees the new generation, or
    /// checks under the lock, sees it too; read without the lock on every write
    /// ([`Waiter::peer_gone`]: one load).
    peer_gone: AtomicBool,
    state: Mutex<State>,
    cond: Condvar,
}

impl Waiter {
    pub(crate) fn new(
        events: Box<dyn EventChannels>,
        port: EventPort,
        monitor: Option<Box<dyn PeerMonitor>>,
    ) -> Result<Self> {
        let interrupt = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| vchan_xenif::Error::os("eventfd", e.into()))?;
        Ok(Waiter {
            events,
            port,
            monitor,
            interrupt,
            generation: AtomicU64::new(0),
            peer_gone: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        })
    }

    /// Wakes every waiter, including one inside `poll(2)`, so that it re-checks its
    /// condition (used to shut a channel down from another thread).
    pub(crate) fn interrupt(&self) {
        let _ = self.interrupt.write(1);
        let _st = self.lock();
        self.bump();
    }

    /// The local event-channel port.
    pub(crate) fn port(&self) -> EventPort {
        self.port
    }

    /// The peer monitor's fd, if there is a monitor.
    pub(crate) fn monitor_fd(&self) -> Option<BorrowedFd<'_>> {
        self.monitor.as_ref().map(|m| m.fd())
    }

    /// The event-channel handle (for its pollable fd).
    pub(crate) fn events(&self) -> &dyn EventChannels {
        &*self.events
    }

    /// The current generation; read it *before* checking the ring (step 1 of the protocol).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the peer monitor has reported the peer gone (one atomic load: cheap enough
    /// for every write).
    #[inline]
    pub(crate) fn peer_gone(&self) -> bool {
        self.peer_gone.load(Ordering::Acquire)
    }

    /// Records that the peer is gone; the caller holds the state lock and bumps the
    /// generation afterwards.
    fn mark_peer_gone(&self, _st: &MutexGuard<'_, State>) {
        self.peer_gone.store(true, Ordering::Release);
    }

    /// Signals the peer.
    pub(crate) fn notify_peer(&self) -> Result<()> {
        self.events.notify(self.port).map_err(Error::from)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` inconsistent (one plain
        // field, written in one statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Consumes pending events — the event channel's and the peer monitor's — without
    /// sleeping; returns whether there were any. Afterwards the channel's fd is readable only
    /// for something new, so a caller polling it does not spin on stale readiness (the
    /// monitor's watch, for one, fires once at registration).
    pub(crate) fn drain(&self) -> Result<bool> {
        let mut any = false;
        while let Some(port) = self.events.pending()? {
            self.events.unmask(port)?;
            any = true;
        }
        if let Some(m) = &self.monitor {
            let mut fds = [PollFd::new(m.fd(), PollFlags::POLLIN)];
            let ready = match poll(&mut fds, PollTimeout::ZERO) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => {
                    return Err(Error::from(vchan_xenif::Error::os(
                        "poll on the peer-domain watch",
                        e.into(),
                    )));
                }
            };
            if ready {
                any = true;
                if !m.check()? {
                    let st = self.lock();
                    self.mark_peer_gone(&st);
                }
            }
        }
        if any {
            let _st = self.lock();
            self.bump();
        }
        Ok(any)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cond.notify_all();
    }

    /// Sleeps until the generation moves past `seen`, or `deadline` passes.
    ///
    /// Returns [`Error::PeerDomainGone`]-style errors only through the monitor: a monitor that
    /// reports the peer gone makes every current and later wait return `Progress`, and the
    /// caller learns the cause from [`Self::peer_gone`].
    pub(crate) fn wait(&self, seen: u64, deadline: Option<Instant>) -> Result<Wake> {
        let mut st = self.lock();
        loop {
            if self.generation() != seen || self.peer_gone() {
                return Ok(Wake::Progress);
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(Wake::TimedOut),
                },
            };
            if st.polling {
                st = match timeout {
                    None => self.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
                    Some(t) => {
                        self.cond
                            .wait_timeout(st, t)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
                continue;
            }
            st.polling = true;
            drop(st);
            let outcome = self.poll_once(timeout);
            st = self.lock();
            st.polling = false;
            match outcome {
                Ok((events, alive)) => {
                    if !alive {
                        self.mark_peer_gone(&st);
                    }
                    if events || !alive {
                        self.bump();
                        return Ok(Wake::Progress);
                    }
                    // Woken for nothing (timeout or a spurious wake-up): let another waiter
                    // take the poller's place if it is waiting on the condition variable.
                    self.cond.notify_all();
                }
                Err(e) => {
                    self.cond.notify_all();
                    return Err(e);
                }
            }
        }
    }

    /// One `poll(2)` on the event-channel fd (and the monitor's); consumes what fired.
    /// Returns (events were consumed, peer still alive).
    fn poll_once(&self, timeout: Option<std::time::Duration>) -> Result<(bool, bool)> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so that a sub-millisecond remainder does not become a busy loop.
            Some(t) => {
                let ms = t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = Vec::with_capacity(2);
        fds.push(PollFd::new(self.events.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.interrupt.as_fd(), PollFlags::POLLIN));
        if let Some(m) = &self.monitor {
            fds.push(PollFd::new(m.fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((false, true)),
            Err(e) => {
                return Err(Error::from(vchan_xenif::Error::os(
                    "poll on the event channel",
                    e.into(),
                )));
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let mut events = false;
        if ready(0) {
            while let Some(port) = self.events.pending()? {
                self.events.unmask(port)?;
                events = true;
            }
        }
        let mut alive = true;
        if ready(1) {
            // Leave the eventfd readable: a shut-down channel stays interrupted.
            events = true;
        }
        if ready(2) {
            if let Some(m) = &self.monitor {
                alive = m.check()?;
            }
        }
        Ok((events, alive))
    }
}
