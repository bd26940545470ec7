//! A connected vchan endpoint: stream and packet I/O, waiting, liveness, close.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use vchan_ring::{
    Consumer, ControlPage, Corruption, LIVE_EXITED, LIVE_NOT_YET_CONNECTED, Producer, RawFlag,
    RingError, Role,
};
use vchan_xenif::xenstore::{self, wire};
use vchan_xenif::{DomId, EventPort, GrantRef, MappedPages, SharedPages};

use crate::config::{Mode, SpinPolicy, event_channel_key, ring_ref_key};
use crate::error::{Error, Result};
use crate::spin::Spinner;
use crate::wait::{Waiter, Wake};

/// Memory backing a control page or a ring: granted by us (server) or mapped from the peer.
/// Held only so that dropping it unmaps the memory at the right moment.
#[derive(Debug)]
pub(crate) enum Region {
    Shared(#[allow(dead_code, reason = "held for its Drop")] SharedPages),
    Mapped(#[allow(dead_code, reason = "held for its Drop")] MappedPages),
}

/// What both halves of a channel share: the control page, the event channel, the memory.
///
/// Dropped when the last half goes: that is the close (C `libxenvchan_close`).
pub(crate) struct Endpoint {
    pub(crate) role: Role,
    pub(crate) peer: DomId,
    pub(crate) path: String,
    pub(crate) persistent: bool,
    pub(crate) ctrl: ControlPage,
    pub(crate) waiter: Waiter,
    poll: Epoll,
    /// The rings' own pages (empty for in-page rings). Unmapped first at close.
    rings: Vec<Region>,
    /// The control page; unmapped after our live byte is cleared.
    ctrl_region: Option<Region>,
    /// Server: what it advertised in XenStore, withdrawn at close.
    advert: Option<Advertisement>,
    /// Set by [`Vchan::close`] paths and corruption: no further I/O.
    dead: AtomicBool,
    /// The first corruption seen by either half: every later operation reports it.
    corruption: OnceLock<Corruption>,
}

/// What a server wrote under its base path: removed at close only if it is still ours.
#[derive(Debug)]
pub(crate) struct Advertisement {
    /// The connection to remove it with.
    pub(crate) xs: xenstore::Client,
    /// The control page's grant reference we wrote to `ring-ref`.
    pub(crate) ring_ref: GrantRef,
    /// The port we wrote to `event-channel`.
    pub(crate) port: EventPort,
}

/// Everything an [`Endpoint`] is made of, gathered by the server or client handshake.
pub(crate) struct EndpointParts {
    pub(crate) role: Role,
    pub(crate) peer: DomId,
    pub(crate) path: String,
    pub(crate) persistent: bool,
    pub(crate) ctrl: ControlPage,
    pub(crate) ctrl_region: Region,
    pub(crate) rings: Vec<Region>,
    pub(crate) waiter: Waiter,
    pub(crate) advert: Option<Advertisement>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("path", &self.path)
            .field("persistent", &self.persistent)
            .field("port", &self.waiter.port())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Assembles an endpoint. `parts.ctrl` must view `parts.ctrl_region`'s first page.
    pub(crate) fn new(parts: EndpointParts) -> Result<Endpoint> {
        let poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| vchan_xenif::Error::os("epoll_create1", e.into()))?;
        let endpoint = Endpoint {
            role: parts.role,
            peer: parts.peer,
            path: parts.path,
            persistent: parts.persistent,
            ctrl: parts.ctrl,
            waiter: parts.waiter,
            poll,
            rings: parts.rings,
            ctrl_region: Some(parts.ctrl_region),
            advert: parts.advert,
            dead: AtomicBool::new(false),
            corruption: OnceLock::new(),
        };
        endpoint.add_to_poll(endpoint.waiter.events().as_fd(), 0)?;
        if let Some(fd) = endpoint.waiter.monitor_fd() {
            endpoint.add_to_poll(fd, 1)?;
        }
        Ok(endpoint)
    }

    fn add_to_poll(&self, fd: BorrowedFd<'_>, data: u64) -> Result<()> {
        self.poll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, data))
            .map_err(|e| vchan_xenif::Error::os("epoll_ctl(ADD)", e.into()).into())
    }

    pub(crate) fn peer_flag(&self) -> RawFlag {
        self.ctrl.notify_flag(self.role.peer())
    }

    pub(crate) fn own_flag(&self) -> RawFlag {
        self.ctrl.notify_flag(self.role)
    }

    /// Why the peer can no longer take part, if it cannot. Three atomic loads (our stop flag,
    /// the peer monitor's verdict, the peer's live byte): cheap enough for every write.
    #[inline]
    pub(crate) fn peer_failure(&self) -> Option<Error> {
        if self.dead.load(Ordering::Acquire) {
            return Some(self.stopped());
        }
        if self.waiter.peer_gone() {
            return Some(Error::PeerDomainGone { peer: self.peer });
        }
        let persistent_server = self.persistent && self.role == Role::Server;
        if !persistent_server && self.ctrl.live(self.role.peer()) == LIVE_EXITED {
            return Some(Error::PeerClosed { peer: self.peer });
        }
        None
    }

    fn is_open(&self) -> bool {
        self.peer_failure().is_none()
    }

    /// Stops all I/O: blocked calls return [`Error::Closed`] promptly. (Also used by the frame
    /// layer when the peer sends a malformed frame.)
    pub(crate) fn shutdown(&self) {
        self.dead.store(true, Ordering::Release);
        self.waiter.interrupt();
    }

    /// Whether this side shut the channel down, or found the ring corrupt (one atomic load:
    /// cheap enough for hot paths). [`Endpoint::stopped`] says which.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// The error of every operation on a stopped channel: the corruption that stopped it
    /// (sticky: a corrupt ring stays reported as such), or [`Error::Closed`].
    pub(crate) fn stopped(&self) -> Error {
        match self.corruption.get() {
            Some(&corruption) => Error::Corrupt {
                peer: self.peer,
                corruption,
            },
            None => Error::Closed,
        }
    }

    /// The channel's error if it is stopped (see [`Endpoint::stopped`]).
    pub(crate) fn check_stopped(&self) -> Result<()> {
        if self.is_shut_down() {
            Err(self.stopped())
        } else {
            Ok(())
        }
    }

    /// Converts a ring error; a corruption stops the channel for both halves, and the first
    /// one seen is what every later operation reports.
    pub(crate) fn corrupt(&self, e: RingError) -> Error {
        match e {
            RingError::Corrupt(corruption) => {
                // Record before raising the flag, so that whoever sees the flag finds the cause.
                let first = *self.corruption.get_or_init(|| corruption);
                self.dead.store(true, Ordering::Release);
                self.waiter.interrupt();
                Error::Corrupt {
                    peer: self.peer,
                    corruption: first,
                }
            }
            RingError::TooLarge {
                requested,
                capacity,
            } => Error::TooLarge {
                len: requested,
                capacity,
            },
            other => Error::Ring(other),
        }
    }
}

impl Endpoint {
    /// Removes the server's XenStore entries, but only if they are still the ones this
    /// channel wrote: a newer channel at the same path (a server that listened again before
    /// dropping this one) keeps its advertisement. One transaction, so a concurrent rewrite
    /// either wins entirely or happens after the removal.
    fn withdraw(&self, advert: &Advertisement) {
        let (ref_key, port_key) = (ring_ref_key(&self.path), event_channel_key(&self.path));
        let holds = |tx: &xenstore::Transaction<'_>, key: &str, ours: u32| match tx.read(key) {
            Ok(v) => Ok(wire::parse_decimal(&v) == Some(ours)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        };
        // Nothing useful can be done about a failure while closing: the entries then stay, as
        // a killed server's do, and clients treat them as stale.
        let _ = advert.xs.transaction(|tx| {
            if holds(tx, &ref_key, advert.ring_ref.0)? && holds(tx, &port_key, advert.port.0)? {
                tx.rm(&self.path)?;
            }
            Ok(())
        });
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // The order of C's libxenvchan_close: rings first, then our live byte and a final
        // signal so a sleeping peer sees the change, and (server) the XenStore entries. The
        // entries go before the control page's grant and the port are released: while they
        // are held, no newer channel of this domain can have the same reference and port, so
        // comparing them tells ours from a newer advertisement.
        self.rings.clear();
        if self.ctrl_region.is_some() {
            self.ctrl.set_live(self.role, LIVE_EXITED);
            let _ = self.waiter.notify_peer();
        }
        if let Some(advert) = self.advert.take() {
            self.withdraw(&advert);
        }
        self.ctrl_region = None;
    }
}

/// How a blocking operation waits: shared by both halves (and the frame layer).
pub(crate) struct Waiting<'a> {
    pub(crate) ep: &'a Endpoint,
    mode: Mode,
    timeout: Option<Duration>,
    spinner: &'a mut Spinner,
}

impl Waiting<'_> {
    /// Runs `attempt` until it yields a value, waiting between tries as the mode, spin
    /// policy and timeout say. `attempt(true)` must request a notification from the peer
    /// before its final check (the notify protocol), and fail when the peer is gone.
    pub(crate) fn run<T>(self, mut attempt: impl FnMut(bool) -> Result<Option<T>>) -> Result<T> {
        if let Some(v) = attempt(false)? {
            return Ok(v);
        }
        if self.mode == Mode::NonBlocking {
            loop {
                if let Some(v) = attempt(true)? {
                    return Ok(v);
                }
                // Consume events that fired, so that a caller polling our fd does not spin
                // on a stale readiness; if there were any, look again (they may announce
                // what `attempt` just missed).
                if !self.ep.waiter.drain()? {
                    return Err(Error::WouldBlock);
                }
            }
        }
        let start = Instant::now();
        // A timeout too large for the clock is no limit.
        let deadline = self.timeout.and_then(|t| start.checked_add(t));
        let budget = self.spinner.budget();
        if !budget.is_zero() {
            // A spin too long for the clock spins until the deadline, if any.
            let end = match (start.checked_add(budget), deadline) {
                (Some(e), Some(d)) => Some(e.min(d)),
                (e, d) => e.or(d),
            };
            loop {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
                if let Some(v) = attempt(false)? {
                    self.spinner.record(start.elapsed());
                    return Ok(v);
                }
                if end.is_some_and(|end| Instant::now() >= end) {
                    break;
                }
            }
        }
        loop {
            let seen = self.ep.waiter.generation();
            if let Some(v) = attempt(true)? {
                // How long the whole wait took tells the spinner whether a longer spin
                // would have paid (see `crate::spin`).
                self.spinner.record(start.elapsed());
                return Ok(v);
            }
            match self.ep.waiter.wait(seen, deadline)? {
                Wake::Progress => {}
                Wake::TimedOut => {
                    return Err(Error::Timeout(self.timeout.unwrap_or_default()));
                }
            }
        }
    }
}

/// The reading half of a channel (see [`Vchan::split`]).
pub struct ReadHalf {
    pub(crate) rx: Consumer,
    mode: Mode,
    timeout: Option<Duration>,
    spinner: Spinner,
    pub(crate) ep: Arc<Endpoint>,
}

/// The writing half of a channel (see [`Vchan::split`]).
pub struct WriteHalf {
    pub(crate) tx: Producer,
    mode: Mode,
    timeout: Option<Duration>,
    spinner: Spinner,
    pub(crate) ep: Arc<Endpoint>,
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("endpoint", &self.ep)
            .field("ring", &self.rx)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf")
            .field("endpoint", &self.ep)
            .field("ring", &self.tx)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ReadHalf {
    pub(crate) fn waiting(&mut self) -> (Waiting<'_>, &mut Consumer) {
        (
            Waiting {
                ep: &self.ep,
                mode: self.mode,
                timeout: self.timeout,
                spinner: &mut self.spinner,
            },
            &mut self.rx,
        )
    }

    /// One attempt to move up to `buf.len()` bytes (`exact`: all of them) out of the ring.
    fn attempt(
        ep: &Endpoint,
        rx: &mut Consumer,
        buf: &mut [u8],
        exact: bool,
        request: bool,
    ) -> Result<Option<usize>> {
        ep.check_stopped()?;
        let want = if exact { buf.len() } else { 1 };
        let available = if request {
            rx.available_or_request(want, &ep.peer_flag())
        } else {
            rx.available()
        }
        .map_err(|e| ep.corrupt(e))?;
        if available < want {
            if let Some(failure) = ep.peer_failure() {
                // The peer publishes its data before clearing its live byte: look once
                // more, so that nothing it sent before leaving is lost.
                let again = rx.available().map_err(|e| ep.corrupt(e))?;
                if again < want {
                    return Err(failure);
                }
            } else {
                return Ok(None);
            }
        }
        let n = if exact {
            rx.take_exact(buf).map_err(|e| ep.corrupt(e))?;
            buf.len()
        } else {
            rx.take(buf).map_err(|e| ep.corrupt(e))?
        };
        if rx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        Ok(Some(n))
    }

    /// The fast path of [`ReadHalf::read`]: takes what is readable now, publishes and
    /// signals, without the waiting machinery. `Ok(0)`: nothing readable; the caller waits
    /// (and looks at the peer's liveness only then, as [`ReadHalf::attempt`] does). Like
    /// every read it loads (and validates) the peer's index once, so a corrupt index is
    /// reported by the first read after it was written, not once the cache runs dry.
    #[inline]
    fn read_now(&mut self, buf: &mut [u8]) -> Result<usize> {
        let ep = &*self.ep;
        ep.check_stopped()?;
        if self.rx.available().map_err(|e| ep.corrupt(e))? == 0 {
            return Ok(0);
        }
        let n = self.rx.take(buf).map_err(|e| ep.corrupt(e))?;
        if n > 0 && self.rx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        Ok(n)
    }

    /// Reads at least one byte (blocking mode: waits for it) and at most `buf.len()`.
    ///
    /// Returns `Ok(0)` only for an empty `buf`. When the peer has closed and everything it
    /// sent was read, fails with [`Error::PeerClosed`]; in non-blocking mode with nothing to
    /// read, with [`Error::WouldBlock`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.read_now(buf)? {
            0 => {}
            n => return Ok(n),
        }
        let (waiting, rx) = self.waiting();
        let ep = waiting.ep;
        waiting.run(|request| Self::attempt(ep, rx, buf, false, request))
    }

    /// Reads exactly `buf.len()` bytes, or nothing (C `libxenvchan_recv`): a packet.
    ///
    /// Fails with [`Error::TooLarge`] if `buf` is larger than the ring (it could never
    /// complete), [`Error::WouldBlock`] in non-blocking mode when fewer bytes are ready, and
    /// [`Error::PeerClosed`] when the peer left before sending enough.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if buf.len() > self.rx.capacity() {
            return Err(Error::TooLarge {
                len: buf.len(),
                capacity: self.rx.capacity(),
            });
        }
        let (waiting, rx) = self.waiting();
        let ep = waiting.ep;
        waiting
            .run(|request| Self::attempt(ep, rx, buf, true, request))
            .map(|_| ())
    }

    /// Bytes ready to read now. Like C `libxenvchan_data_ready`, asks the peer to signal
    /// the event channel when it writes more, so a caller polling the fd is woken.
    pub fn data_ready(&mut self) -> Result<usize> {
        let ep = &self.ep;
        ep.check_stopped()?;
        self.rx
            .available_or_request(usize::MAX, &ep.peer_flag())
            .map_err(|e| ep.corrupt(e))
    }

    /// Waits until at least one byte is readable (or the peer is gone: then `Ok(false)` if
    /// nothing is left to read), for at most `timeout` (`None`: no limit).
    pub fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let spinner = &mut self.spinner;
        let waiting = Waiting {
            ep: &self.ep,
            mode: Mode::Blocking,
            timeout,
            spinner,
        };
        let ep = &*self.ep;
        let rx = &mut self.rx;
        waiting.run(|request| {
            ep.check_stopped()?;
            let n = if request {
                rx.available_or_request(1, &ep.peer_flag())
            } else {
                rx.available()
            }
            .map_err(|e| ep.corrupt(e))?;
            if n > 0 {
                return Ok(Some(true));
            }
            match ep.peer_failure() {
                Some(e @ (Error::Corrupt { .. } | Error::Closed)) => Err(e),
                Some(_) => Ok(Some(rx.available().map_err(|e| ep.corrupt(e))? > 0)),
                None => Ok(None),
            }
        })
    }

    /// The size of the ring this half reads.
    pub fn capacity(&self) -> usize {
        self.rx.capacity()
    }

    /// Blocking or non-blocking.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Limits every blocking operation of this half (`None`: wait as long as needed).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Whether the peer is still there (see [`Vchan::is_open`]).
    pub fn is_open(&self) -> bool {
        self.ep.is_open()
    }

    /// See [`Vchan::shutdown_handle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            ep: Arc::downgrade(&self.ep),
        }
    }
}

impl WriteHalf {
    pub(crate) fn waiting(&mut self) -> (Waiting<'_>, &mut Producer) {
        (
            Waiting {
                ep: &self.ep,
                mode: self.mode,
                timeout: self.timeout,
                spinner: &mut self.spinner,
            },
            &mut self.tx,
        )
    }

    fn attempt(
        ep: &Endpoint,
        tx: &mut Producer,
        buf: &[u8],
        exact: bool,
        request: bool,
    ) -> Result<Option<usize>> {
        if let Some(failure) = ep.peer_failure() {
            return Err(failure);
        }
        let want = if exact { buf.len() } else { 1 };
        let space = if request {
            tx.space_or_request(want, &ep.peer_flag())
        } else {
            tx.space()
        }
        .map_err(|e| ep.corrupt(e))?;
        if space < want {
            return Ok(None);
        }
        let n = if exact {
            tx.stage_all(buf).map_err(|e| ep.corrupt(e))?;
            buf.len()
        } else {
            tx.stage(buf).map_err(|e| ep.corrupt(e))?
        };
        if tx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        Ok(Some(n))
    }

    /// The fast path of [`WriteHalf::write`] and [`WriteHalf::write_all`]: stages what fits
    /// now, publishes and signals, without the waiting machinery. Like every write it first
    /// checks that the peer is there (as C's `libxenvchan_write` does): writing to a peer
    /// that left fails with [`Error::PeerClosed`] even when the ring has room; and it loads
    /// (and validates) the peer's index once, so a corrupt index is reported by the first
    /// write after it was written. `Ok(0)`: nothing fit; the caller waits.
    #[inline]
    fn write_now(&mut self, buf: &[u8]) -> Result<usize> {
        let ep = &*self.ep;
        if let Some(failure) = ep.peer_failure() {
            return Err(failure);
        }
        if self.tx.space().map_err(|e| ep.corrupt(e))? == 0 {
            return Ok(0);
        }
        let n = self.tx.stage(buf).map_err(|e| ep.corrupt(e))?;
        if n > 0 && self.tx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        Ok(n)
    }

    fn run(&mut self, buf: &[u8], exact: bool) -> Result<usize> {
        let waiting = Waiting {
            ep: &self.ep,
            mode: self.mode,
            timeout: self.timeout,
            spinner: &mut self.spinner,
        };
        let ep = &*self.ep;
        let tx = &mut self.tx;
        waiting.run(|request| Self::attempt(ep, tx, buf, exact, request))
    }

    /// Writes at least one byte (blocking mode: waits for space) and at most `buf.len()`.
    ///
    /// Fails with [`Error::PeerClosed`] once the peer has left, and with
    /// [`Error::WouldBlock`] in non-blocking mode when the ring is full.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.write_now(buf)? {
            0 => self.run(buf, false),
            n => Ok(n),
        }
    }

    /// Writes all of `buf`, waiting for space as often as needed (in non-blocking mode it
    /// fails with [`Error::WouldBlock`] at the first full ring, after writing a prefix: use
    /// [`WriteHalf::write`] to know how much).
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = match self.write_now(buf)? {
                0 => self.run(buf, false)?,
                n => n,
            };
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Writes all of `buf` at once or nothing (C `libxenvchan_send`): a packet.
    ///
    /// Fails with [`Error::TooLarge`] if `buf` is larger than the ring (it could never fit),
    /// and with [`Error::WouldBlock`] in non-blocking mode while it does not fit yet.
    pub fn send(&mut self, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if buf.len() > self.tx.capacity() {
            return Err(Error::TooLarge {
                len: buf.len(),
                capacity: self.tx.capacity(),
            });
        }
        self.run(buf, true).map(|_| ())
    }

    /// Free space in the ring now. Like C `libxenvchan_buffer_space`, asks the peer to
    /// signal the event channel when it frees more.
    pub fn buffer_space(&mut self) -> Result<usize> {
        let ep = &self.ep;
        ep.check_stopped()?;
        self.tx
            .space_or_request(usize::MAX, &ep.peer_flag())
            .map_err(|e| ep.corrupt(e))
    }

    /// Waits until at least `want` bytes (clamped to the ring size) are free, for at most
    /// `timeout`.
    pub fn wait_writable(&mut self, want: usize, timeout: Option<Duration>) -> Result<()> {
        let want = want.clamp(1, self.tx.capacity());
        let waiting = Waiting {
            ep: &self.ep,
            mode: Mode::Blocking,
            timeout,
            spinner: &mut self.spinner,
        };
        let ep = &*self.ep;
        let tx = &mut self.tx;
        waiting.run(|request| {
            if let Some(failure) = ep.peer_failure() {
                return Err(failure);
            }
            let n = if request {
                tx.space_or_request(want, &ep.peer_flag())
            } else {
                tx.space()
            }
            .map_err(|e| ep.corrupt(e))?;
            Ok((n >= want).then_some(()))
        })
    }

    /// Waits until the peer has read everything written so far (the ring is empty), for at
    /// most `timeout`. Call it before closing when the peer must get every byte: closing
    /// does not wait, and a server that closes unmaps the rings.
    ///
    /// Fails with [`Error::PeerClosed`] if the peer left with data still unread.
    pub fn drain(&mut self, timeout: Option<Duration>) -> Result<()> {
        let capacity = self.tx.capacity();
        let waiting = Waiting {
            ep: &self.ep,
            mode: Mode::Blocking,
            timeout,
            spinner: &mut self.spinner,
        };
        let ep = &*self.ep;
        let tx = &mut self.tx;
        waiting.run(|request| {
            ep.check_stopped()?;
            let free = if request {
                tx.space_or_request(capacity, &ep.peer_flag())
            } else {
                tx.space()
            }
            .map_err(|e| ep.corrupt(e))?;
            if free >= capacity {
                return Ok(Some(()));
            }
            match ep.peer_failure() {
                // The peer consumes before it leaves: look once more before giving up.
                Some(failure) => match tx.space().map_err(|e| ep.corrupt(e))? {
                    free if free >= capacity => Ok(Some(())),
                    _ => Err(failure),
                },
                None => Ok(None),
            }
        })
    }

    /// The size of the ring this half writes.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Blocking or non-blocking.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Limits every blocking operation of this half (`None`: wait as long as needed).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Whether the peer is still there (see [`Vchan::is_open`]).
    pub fn is_open(&self) -> bool {
        self.ep.is_open()
    }

    /// See [`Vchan::shutdown_handle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            ep: Arc::downgrade(&self.ep),
        }
    }
}

/// A connected vchan: one ring each way with a libxenvchan peer, a Rust or a C one.
///
/// Made by [`crate::Server`] or [`crate::Client`]. Blocking by default; every blocking call
/// ends with an error when the peer closes, its process dies, or its domain is destroyed,
/// and can be bounded with [`Vchan::set_timeout`]. The channel's fd ([`AsFd`]) becomes
/// readable when the peer signals, for use with `poll`/`epoll`/async runtimes (then call the
/// operation again in non-blocking mode).
///
/// Dropping it (or the last of its [`split`](Vchan::split) halves) closes it as C does: the
/// rings are unmapped, our live byte is cleared and the peer signalled, and a server removes
/// its XenStore entries — unless they are no longer its own (a newer channel listening at the
/// same path, e.g. a server that listened again before dropping this one, keeps its entries).
///
/// Once either half finds the ring corrupt, every operation on both halves fails with the
/// same [`Error::Corrupt`]: close the channel.
pub struct Vchan {
    reader: ReadHalf,
    writer: WriteHalf,
}

impl fmt::Debug for Vchan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vchan")
            .field("endpoint", &self.reader.ep)
            .field("read_ring", &self.reader.rx)
            .field("write_ring", &self.writer.tx)
            .finish()
    }
}

/// Shuts a channel down from anywhere (another thread, a signal-handling loop) without
/// holding it open: see [`Vchan::shutdown_handle`].
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    ep: Weak<Endpoint>,
}

impl ShutdownHandle {
    /// Makes every current and later operation on the channel fail with [`Error::Closed`]
    /// (blocked ones promptly; on a channel already found corrupt they keep failing with
    /// [`Error::Corrupt`]). The channel is closed (XenStore entries removed, peer told)
    /// once every half holding it is dropped.
    pub fn shutdown(&self) {
        if let Some(ep) = self.ep.upgrade() {
            ep.shutdown();
        }
    }
}

/// Settings for [`Vchan::from_parts`].
pub(crate) struct HalfSettings {
    pub(crate) mode: Mode,
    pub(crate) spin: SpinPolicy,
    pub(crate) timeout: Option<Duration>,
}

impl Vchan {
    pub(crate) fn from_parts(
        ep: Endpoint,
        rx: Consumer,
        tx: Producer,
        settings: HalfSettings,
    ) -> Vchan {
        let ep = Arc::new(ep);
        Vchan {
            reader: ReadHalf {
                rx,
                mode: settings.mode,
                timeout: settings.timeout,
                spinner: Spinner::new(settings.spin),
                ep: ep.clone(),
            },
            writer: WriteHalf {
                tx,
                mode: settings.mode,
                timeout: settings.timeout,
                spinner: Spinner::new(settings.spin),
                ep,
            },
        }
    }

    /// Splits the channel into a reading and a writing half that can be used from two
    /// threads at once. The channel closes when both are dropped.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.reader, self.writer)
    }

    /// A handle that can shut this channel down from another thread while its halves are
    /// blocked (see [`ShutdownHandle`]).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            ep: Arc::downgrade(&self.reader.ep),
        }
    }

    /// Joins two halves of the same channel back; gives them back if they are not.
    pub fn unsplit(
        reader: ReadHalf,
        writer: WriteHalf,
    ) -> Result<Vchan, Box<(ReadHalf, WriteHalf)>> {
        if Arc::ptr_eq(&reader.ep, &writer.ep) {
            Ok(Vchan { reader, writer })
        } else {
            Err(Box::new((reader, writer)))
        }
    }

    /// The reading half.
    pub fn reader(&mut self) -> &mut ReadHalf {
        &mut self.reader
    }

    /// The writing half.
    pub fn writer(&mut self) -> &mut WriteHalf {
        &mut self.writer
    }

    /// See [`ReadHalf::read`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.reader.read(buf)
    }

    /// See [`ReadHalf::recv`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<()> {
        self.reader.recv(buf)
    }

    /// See [`WriteHalf::write`].
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.writer.write(buf)
    }

    /// See [`WriteHalf::write_all`].
    pub fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.writer.write_all(buf)
    }

    /// See [`WriteHalf::send`].
    pub fn send(&mut self, buf: &[u8]) -> Result<()> {
        self.writer.send(buf)
    }

    /// See [`WriteHalf::drain`].
    pub fn drain(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.writer.drain(timeout)
    }

    /// See [`ReadHalf::data_ready`].
    pub fn data_ready(&mut self) -> Result<usize> {
        self.reader.data_ready()
    }

    /// See [`WriteHalf::buffer_space`].
    pub fn buffer_space(&mut self) -> Result<usize> {
        self.writer.buffer_space()
    }

    /// Whether the peer is there: for a client, the server's live byte is set; for a server,
    /// the client's live byte is not "exited" (a client that has not connected yet counts as
    /// open, as in C), or always in persistent mode. False once the peer domain is gone, the
    /// ring was found corrupt, or this side closed.
    pub fn is_open(&self) -> bool {
        self.reader.ep.is_open()
    }

    /// Whether this end watches XenStore's `@releaseDomain` for the peer domain's
    /// destruction (see `watch_peer_domain` on [`crate::Server`] and [`crate::Client`]).
    pub fn watches_peer_domain(&self) -> bool {
        self.reader.ep.waiter.monitor_fd().is_some()
    }

    /// Whether a client has connected (server side; always true on a client).
    pub fn is_connected(&self) -> bool {
        let ep = &self.reader.ep;
        ep.role == Role::Client || ep.ctrl.live(Role::Client) != LIVE_NOT_YET_CONNECTED
    }

    /// Server: waits until a client connects (its live byte leaves "not yet connected"),
    /// for at most `timeout`. Returns at once on a client.
    pub fn wait_connected(&mut self, timeout: Option<Duration>) -> Result<()> {
        let ep = &*self.reader.ep;
        if ep.role == Role::Client {
            return Ok(());
        }
        let waiting = Waiting {
            ep,
            mode: Mode::Blocking,
            timeout,
            spinner: &mut self.reader.spinner,
        };
        waiting.run(|_| {
            if let Some(
                e @ (Error::Closed | Error::Corrupt { .. } | Error::PeerDomainGone { .. }),
            ) = ep.peer_failure()
            {
                return Err(e);
            }
            Ok((ep.ctrl.live(Role::Client) != LIVE_NOT_YET_CONNECTED).then_some(()))
        })
    }

    /// Waits for the peer to signal (data written, space freed, liveness changed) or for
    /// `timeout`; returns whether a signal came. Like C `libxenvchan_wait`, for callers that
    /// drive the channel in non-blocking mode: after `Ok(true)`, retry the operations.
    ///
    /// Unlike C's, it never sleeps on a channel where nothing more can happen: once the peer
    /// is gone it returns `Ok(true)` while data it sent is still unread, then fails with
    /// [`Error::PeerClosed`] or [`Error::PeerDomainGone`]; on a channel shut down or found
    /// corrupt it fails with [`Error::Closed`] or [`Error::Corrupt`] at once.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let ep = &*self.reader.ep;
        ep.check_stopped()?;
        let seen = ep.waiter.generation();
        if ep.waiter.drain()? {
            return Ok(true);
        }
        if let Some(failure) = ep.peer_failure() {
            let unread = self.reader.rx.available().map_err(|e| ep.corrupt(e))?;
            return if unread > 0 { Ok(true) } else { Err(failure) };
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Ok(ep.waiter.wait(seen, deadline)? == Wake::Progress)
    }

    /// Blocking or non-blocking, for both halves.
    pub fn set_mode(&mut self, mode: Mode) {
        self.reader.mode = mode;
        self.writer.mode = mode;
    }

    /// The mode of the reading half (both halves share it unless set separately).
    pub fn mode(&self) -> Mode {
        self.reader.mode
    }

    /// Limits every blocking operation (`None`: no limit); a passed limit fails the call
    /// with [`Error::Timeout`] without losing data.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.reader.timeout = timeout;
        self.writer.timeout = timeout;
    }

    /// Size of the ring we read.
    pub fn read_capacity(&self) -> usize {
        self.reader.rx.capacity()
    }

    /// Size of the ring we write.
    pub fn write_capacity(&self) -> usize {
        self.writer.tx.capacity()
    }

    /// The peer domain.
    pub fn peer(&self) -> DomId {
        self.reader.ep.peer
    }

    /// Our role: server or client.
    pub fn role(&self) -> Role {
        self.reader.ep.role
    }

    /// The XenStore base path.
    pub fn path(&self) -> &str {
        &self.reader.ep.path
    }

    /// Closes the channel now (the same as dropping it).
    pub fn close(self) {
        drop(self);
    }
}

macro_rules! io_impls {
    ($t:ty, read) => {
        impl io::Read for $t {
            /// `Ok(0)` means the peer closed and everything it sent was read.
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match <$t>::read(self, buf) {
                    Ok(n) => Ok(n),
                    Err(Error::PeerClosed { .. } | Error::PeerDomainGone { .. }) => Ok(0),
                    Err(e) => Err(e.into()),
                }
            }
        }
    };
    ($t:ty, write) => {
        impl io::Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                <$t>::write(self, buf).map_err(io::Error::from)
            }

            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                <$t>::write_all(self, buf).map_err(io::Error::from)
            }

            /// Data is published as it is written: nothing to flush.
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}

io_impls!(ReadHalf, read);
io_impls!(Vchan, read);
io_impls!(WriteHalf, write);
io_impls!(Vchan, write);

macro_rules! fd_impls {
    ($($t:ty => $ep:ident),*) => {$(
        impl AsFd for $t {
            /// Readable when the peer has signalled (or its domain died): an `epoll` fd over
            /// the event channel and the peer-domain watch.
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.$ep().poll.0.as_fd()
            }
        }

        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.as_fd().as_raw_fd()
            }
        }
    )*};
}

impl ReadHalf {
    fn endpoint(&self) -> &Endpoint {
        &self.ep
    }
}

impl WriteHalf {
    fn endpoint(&self) -> &Endpoint {
        &self.ep
    }
}

impl Vchan {
    fn endpoint(&self) -> &Endpoint {
        &self.reader.ep
    }
}

fd_impls!(Vchan => endpoint, ReadHalf => endpoint, WriteHalf => endpoint);
