//! The host side of simulated grants and event channels: the grant table, event-channel
//! bindings and unmap-notify registrations of every domain, served on `<dir>/dom<N>/host.sock`.
//!
//! A process acts as domain N by connecting to domain N's socket (the socket it reaches is
//! its identity, as the ring page a real domain's kernel uses is). Each handle
//! ([`crate::sim::client`]) keeps one connection for its life, so when a process exits or is
//! killed the broker sees the connection end and runs the unmap notifications of everything
//! the process held — the way Linux's gntdev/gntalloc do at file release.
//!
//! What the broker provides, and how:
//!
//! * **Grants.** A share is one sealed `memfd` (it can neither shrink nor grow, so no mapper
//!   ever faults with `SIGBUS`) with a run of consecutive references in the granting domain's
//!   table. Only the grantee may map; it receives the file over `SCM_RIGHTS` — for a read-only
//!   mapping a fresh `O_RDONLY` open of it, so `PROT_WRITE` is refused by the kernel. The
//!   broker keeps its own descriptor, so it can clear a notify byte after every process using
//!   the pages is gone.
//! * **Event channels.** Binding is brokered: a channel is a pair of `eventfd`s that each end
//!   receives when it binds. Notifying is then one `write(2)` straight into the other process.
//! * **Limits.** Grants, ports, mapped pages and open handles per domain are bounded
//!   ([`BrokerConfig`]); a refusal says which limit and how to raise it.
//!
//! What it must never do: trust a request. Every id in a request is checked against what
//! the asking connection owns, every offset and count against the region it names. A
//! malformed request closes that connection and nothing else.
//!
//! Limits of the simulation: the sim isolates domains from *mistakes*, not from a process
//! determined to escape. All domains' processes usually run under one user, which can read
//! and write each other's memory (`/proc/<pid>/mem`, `ptrace`); and a process with
//! `CAP_DAC_OVERRIDE` (root) can reopen a read-only grant descriptor for writing through
//! `/proc/self/fd` (the files are mode 0400 to stop everyone else).
//!
//! ```
//! use vchan_xenif::sim::broker::Broker;
//! use vchan_xenif::{Access, Backend, DomId};
//!
//! let dir = tempfile::tempdir()?;
//! let broker = Broker::new(dir.path())?;
//! broker.domain_created(DomId(0))?;
//! broker.domain_created(DomId(1))?;
//!
//! // Normally two processes; here two handles of one process, acting as domains 0 and 1.
//! let dom0 = Backend::Sim { dir: dir.path().into(), domid: DomId(0) };
//! let dom1 = Backend::Sim { dir: dir.path().into(), domid: DomId(1) };
//! let shared = dom0.grant_sharer()?.share(DomId(1), 2, Access::ReadWrite)?;
//! let mapped = dom1.grant_mapper()?.map(DomId(0), shared.refs(), Access::ReadOnly)?;
//! assert_eq!(mapped.len(), 2 * vchan_xenif::PAGE_SIZE);
//! assert_eq!(broker.stats().mappings, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod grants;
mod ports;
pub(crate) mod socket;
mod state;
pub(crate) mod wire;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use self::socket::Received;
use self::state::State;
use self::wire::MAX_MESSAGE;
use crate::types::DomId;

/// Limits the host enforces per domain. The defaults follow Xen 4.17 where Xen has a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Pages a domain may have granted at once (default 32768: Xen's default
    /// `max_grant_frames` of 64 frames × 512 version-1 entries). Exceeding it is
    /// [`crate::Error::GrantLimit`].
    pub max_grants_per_domain: u32,
    /// Event-channel ports a domain may have bound at once (default 1023, Xen's default
    /// `max_event_channels` for a guest).
    pub max_ports_per_domain: u32,
    /// Pages a domain may have mapped at once (default 262144, 1 GiB).
    pub max_mapped_pages_per_domain: u32,
    /// Open handles (grant sharers, grant mappers, event-channel handles) per domain (default
    /// 1024). Each is one connection, hence one descriptor in the host.
    pub max_connections_per_domain: u32,
    /// Whether releasing (destroying) a domain runs the unmap notifications of everything
    /// its processes had shared or mapped, as if they had all exited first (default `true`).
    ///
    /// `false` is what real Xen does: a destroyed domain's kernel never runs its gntdev or
    /// gntalloc release code, so the byte is not cleared and no event is sent; its peers
    /// learn of the destruction only from XenStore's `@releaseDomain` watch (its grants
    /// still end, its ports still close, and mappings of its pages stay valid until the
    /// mapper unmaps them). Use it to test that a peer notices a destroyed domain promptly
    /// without help from the dead side.
    pub notify_on_release: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_grants_per_domain: 64 * 512,
            max_ports_per_domain: 1023,
            max_mapped_pages_per_domain: 1 << 18,
            max_connections_per_domain: 1024,
            notify_on_release: true,
        }
    }
}

/// A snapshot of what the host holds (for status displays and leak checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Domains being served.
    pub domains: usize,
    /// Open connections (handles, plus regions that outlived their handle).
    pub connections: usize,
    /// Live shares.
    pub shares: usize,
    /// Pages in live shares.
    pub shared_pages: usize,
    /// Live mappings.
    pub mappings: usize,
    /// Pages in live mappings.
    pub mapped_pages: usize,
    /// Bound event-channel ports.
    pub ports: usize,
}

// Epoll data: the top byte says what became ready, the rest which one.
const TAG_SHIFT: u32 = 56;
const TAG_STOP: u64 = 1;
const TAG_LISTENER: u64 = 2;
const TAG_CONN: u64 = 3;
const ID_MASK: u64 = (1 << TAG_SHIFT) - 1;
/// Messages served per connection per wake-up, so that one busy client cannot starve others.
const MESSAGES_PER_TURN: usize = 16;
/// Connections accepted per listener per wake-up.
const ACCEPTS_PER_TURN: usize = 64;

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    epoll: Epoll,
    stop: EventFd,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; the bookkeeping is still
        // the best information there is, so keep serving rather than poisoning every domain.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The grant and event-channel service of a simulated host rooted at a directory.
///
/// Serves on its own thread from [`Broker::new`] until dropped. The host daemon calls
/// [`Broker::domain_created`] and [`Broker::domain_released`] as domains come and go.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Broker {
    /// Starts a broker for the host rooted at `dir` (created if missing), with default limits.
    pub fn new(dir: &Path) -> io::Result<Broker> {
        Self::with_config(dir, BrokerConfig::default())
    }

    /// Starts a broker with the given limits.
    pub fn with_config(dir: &Path, config: BrokerConfig) -> io::Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(
            &stop,
            EpollEvent::new(EpollFlags::EPOLLIN, TAG_STOP << TAG_SHIFT),
        )?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            epoll,
            stop,
            state: Mutex::new(State::new(config)),
        });
        let thread = std::thread::Builder::new()
            .name("vchan-sim-broker".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || serve(&shared)
            })?;
        Ok(Broker {
            shared,
            thread: Some(thread),
        })
    }

    /// The host's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Starts serving domain `domid`: binds `<dir>/dom<N>/host.sock` (creating the domain's
    /// directory if needed). Errors if the domain is already served, the id is reserved, or
    /// the socket cannot be bound.
    pub fn domain_created(&self, domid: DomId) -> io::Result<()> {
        if !domid.is_valid() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("domain id {domid} is reserved by Xen and cannot name a domain"),
            ));
        }
        let mut state = self.shared.state();
        if state.has_domain(domid) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("domain {domid} already exists on this simulated host"),
            ));
        }
        std::fs::create_dir_all(super::domain_dir(&self.shared.dir, domid))?;
        let path = super::host_socket(&self.shared.dir, domid);
        let listener = Arc::new(socket::listen(&path)?);
        let data = (TAG_LISTENER << TAG_SHIFT) | u64::from(domid.0);
        if let Err(e) = self
            .shared
            .epoll
            .add(listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, data))
        {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        state.add_domain(domid, listener, path);
        Ok(())
    }

    /// Releases everything domain `domid` holds, as Xen does when a domain is destroyed: its
    /// connections are closed (the unmap notifications of its mappings and shares fire, unless
    /// [`BrokerConfig::notify_on_release`] is off), its grants end, its ports close (the other
    /// ends revert to unbound), and its `host.sock` is removed. Returns whether the domain
    /// existed.
    pub fn domain_released(&self, domid: DomId) -> bool {
        let socket = self.shared.state().release_domain(domid);
        match socket {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                true
            }
            None => false,
        }
    }

    /// What the host holds right now.
    pub fn stats(&self) -> BrokerStats {
        self.shared.state().stats()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.shared.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let state = self.shared.state();
        for path in state.sockets() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn serve(shared: &Shared) {
    let mut events = vec![EpollEvent::empty(); 64];
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match shared.epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(_) => {
                // epoll_wait on a valid epoll fd fails only with EINTR; don't spin regardless.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        for ev in &events[..n] {
            let data = ev.data();
            match data >> TAG_SHIFT {
                TAG_STOP => return,
                TAG_LISTENER => accept_all(shared, DomId((data & ID_MASK) as u16)),
                TAG_CONN => serve_conn(shared, data & ID_MASK, &mut buf),
                _ => {}
            }
        }
    }
}

fn accept_all(shared: &Shared, domid: DomId) {
    let mut state = shared.state();
    let Some(listener) = state.listener(domid) else {
        return;
    };
    for _ in 0..ACCEPTS_PER_TURN {
        match socket::accept(listener.as_fd()) {
            Ok(Some(sock)) => register(shared, &mut state, domid, sock),
            Ok(None) => return,
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(_) => {
                // Out of descriptors or memory: leave the connection queued and retry soon,
                // without spinning on the still-readable listener.
                drop(state);
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        }
    }
}

fn register(shared: &Shared, state: &mut State, domid: DomId, sock: OwnedFd) {
    let Some(id) = state.add_conn(domid, sock) else {
        return;
    };
    let Some(sock) = state.conn_socket(id) else {
        return;
    };
    let data = (TAG_CONN << TAG_SHIFT) | (id & ID_MASK);
    if shared
        .epoll
        .add(sock.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, data))
        .is_err()
    {
        state.close_conn(id);
    }
}

fn serve_conn(shared: &Shared, id: u64, buf: &mut [u8]) {
    let mut state = shared.state();
    let Some(sock) = state.conn_socket(id) else {
        return;
    };
    for _ in 0..MESSAGES_PER_TURN {
        let len = match socket::recv(sock.as_fd(), buf, false, true) {
            Ok(Received::Message(len, _)) => len,
            Ok(Received::WouldBlock) => return,
            Ok(Received::Closed) | Err(_) => {
                state.close_conn(id);
                return;
            }
        };
        let response = state.handle(id, &buf[..len]);
        let bytes = wire::encode_reply(response.seq, &response.result);
        let fds: Vec<_> = response.fds.iter().map(|f| f.as_fd()).collect();
        // A client waits for each reply before its next request, so its queue never fills;
        // one whose does is not reading, and loses its connection rather than stalling the host.
        let sent = socket::send(sock.as_fd(), &bytes, &fds, true);
        if sent.is_err() || response.close {
            state.close_conn(id);
            return;
        }
    }
}

/// The broker as a [`SimHost`](super::host::SimHost) hook: the host calls these as domains are
/// created (dom0 at start, others at XenStore `INTRODUCE`) and released.
impl super::host::DomainHooks for Broker {
    fn domain_created(&self, domid: DomId, _dir: &Path) -> io::Result<()> {
        Broker::domain_created(self, domid)
    }

    fn domain_released(&self, domid: DomId) {
        Broker::domain_released(self, domid);
    }
}

#[cfg(test)]
mod tests {
    //! A hostile client speaking the raw protocol on a real socket: it can hurt only its own
    //! connection.

    use std::os::fd::AsFd;

    use super::socket::{self, Received};
    use super::wire::{self, Reply, Request, WireError};
    use super::*;
    use crate::grant::{Access, GrantSharer};
    use crate::sim::client::{SimEventChannels, SimGrantMapper, SimGrantSharer};
    use crate::{EventChannels, EventPort, GrantMapper};

    fn host() -> (tempfile::TempDir, Broker) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::new(dir.path()).unwrap();
        for d in [0, 1] {
            broker.domain_created(DomId(d)).unwrap();
        }
        (dir, broker)
    }

    fn raw(dir: &Path, domid: u16) -> OwnedFd {
        let s = socket::connect(&crate::sim::host_socket(dir, DomId(domid))).unwrap();
        socket::set_timeouts(s.as_fd(), Duration::from_secs(10)).unwrap();
        s
    }

    fn send(s: &OwnedFd, bytes: &[u8]) {
        socket::send(s.as_fd(), bytes, &[], false).unwrap();
    }

    fn reply(s: &OwnedFd) -> Option<Result<Reply, WireError>> {
        let mut buf = vec![0u8; wire::MAX_MESSAGE];
        match socket::recv(s.as_fd(), &mut buf, true, false).unwrap() {
            Received::Message(n, _) => Some(wire::decode_reply(&buf[..n]).unwrap().1),
            Received::Closed => None,
            Received::WouldBlock => panic!("no reply"),
        }
    }

    fn hello(s: &OwnedFd, domid: u16) {
        let req = Request::Hello {
            version: wire::PROTOCOL_VERSION,
            domid: DomId(domid),
        };
        send(s, &req.encode(1));
        assert_eq!(
            reply(s),
            Some(Ok(Reply::Hello {
                domid: DomId(domid)
            }))
        );
    }

    fn host_error(r: Option<Result<Reply, WireError>>, want: &str) {
        match r {
            Some(Err(WireError::Host(msg))) => assert!(msg.contains(want), "{msg}"),
            other => panic!("expected a host error containing {want:?}, got {other:?}"),
        }
    }

    #[test]
    fn releasing_a_domain_runs_its_unmap_notifications_only_if_configured() {
        for notify_on_release in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let config = BrokerConfig {
                notify_on_release,
                ..BrokerConfig::default()
            };
            let broker = Broker::with_config(dir.path(), config).unwrap();
            for d in [0, 1] {
                broker.domain_created(DomId(d)).unwrap();
            }
            // Dom0 shares a page with domain 1 and binds a channel to it; domain 1 maps the
            // page with an unmap notification (clear byte 20, signal dom0), as a vchan client.
            let sharer = SimGrantSharer::connect(dir.path(), DomId(0)).unwrap();
            let shared = sharer.share(DomId(1), 1, Access::ReadWrite).unwrap();
            let byte = shared.as_ptr().wrapping_add(20);
            // SAFETY: byte 20 of the one-page share, which `shared` keeps mapped; plain
            // volatile byte accesses, no reference is formed.
            unsafe { byte.write_volatile(1) };
            let ev0 = SimEventChannels::connect(dir.path(), DomId(0)).unwrap();
            let p0 = ev0.bind_unbound(DomId(1)).unwrap();
            let ev1 = SimEventChannels::connect(dir.path(), DomId(1)).unwrap();
            let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();
            let mapper = SimGrantMapper::connect(dir.path(), DomId(1)).unwrap();
            let mapped = mapper
                .map(DomId(0), shared.refs(), Access::ReadWrite)
                .unwrap();
            mapped
                .set_unmap_notify(crate::UnmapNotify {
                    clear_byte: Some(20),
                    event: Some(p1),
                })
                .unwrap();

            assert!(broker.domain_released(DomId(1)));
            let signal = ev0.wait(Some(Duration::from_millis(300))).unwrap();
            // SAFETY: as above.
            let value = unsafe { byte.read_volatile() };
            if notify_on_release {
                assert_eq!(signal, Some(p0), "the notification did not signal");
                assert_eq!(value, 0, "the notification did not clear the byte");
            } else {
                assert_eq!(signal, None, "a destroyed domain's notification signalled");
                assert_eq!(
                    value, 1,
                    "a destroyed domain's notification cleared the byte"
                );
            }
            // Either way domain 1 holds nothing any more (its mapping, port and pinned port
            // are gone); dom0's share and its now-unbound port remain.
            let stats = broker.stats();
            assert_eq!(
                (stats.mappings, stats.shares, stats.ports),
                (0, 1, 1),
                "{stats:?}"
            );
            drop((mapped, mapper, ev1));
        }
    }

    #[test]
    fn malformed_or_premature_requests_close_only_that_connection() {
        let (dir, broker) = host();
        let sharer = SimGrantSharer::connect(dir.path(), DomId(0)).unwrap();

        let s = raw(dir.path(), 1);
        send(&s, &[1, 2, 3]);
        host_error(reply(&s), "malformed request");
        assert_eq!(reply(&s), None, "connection left open after garbage");

        let s = raw(dir.path(), 1);
        let share = Request::Share {
            peer: DomId(0),
            count: 1,
            access: Access::ReadWrite,
        };
        send(&s, &share.encode(7));
        host_error(reply(&s), "must be HELLO");
        assert_eq!(reply(&s), None);

        let s = raw(dir.path(), 1);
        let lie = Request::Hello {
            version: wire::PROTOCOL_VERSION,
            domid: DomId(0),
        };
        send(&s, &lie.encode(1));
        host_error(reply(&s), "belongs to domain 1");
        assert_eq!(reply(&s), None);

        let s = raw(dir.path(), 1);
        let old = Request::Hello {
            version: wire::PROTOCOL_VERSION + 1,
            domid: DomId(1),
        };
        send(&s, &old.encode(1));
        host_error(reply(&s), "protocol version mismatch");

        // Everyone else is unaffected.
        assert!(sharer.share(DomId(1), 1, Access::ReadWrite).is_ok());
        assert_eq!(broker.stats().connections, 1);
    }

    #[test]
    fn ids_of_other_connections_are_refused() {
        let (dir, broker) = host();
        let sharer = SimGrantSharer::connect(dir.path(), DomId(0)).unwrap();
        let shared = sharer.share(DomId(1), 2, Access::ReadWrite).unwrap();
        let mapper = SimGrantMapper::connect(dir.path(), DomId(1)).unwrap();
        let _mapped = mapper
            .map(DomId(0), shared.refs(), Access::ReadWrite)
            .unwrap();
        let ev = SimEventChannels::connect(dir.path(), DomId(0)).unwrap();
        let port = ev.bind_unbound(DomId(1)).unwrap();
        let before = broker.stats();

        // Another connection of the same domain, guessing every small id.
        let s = raw(dir.path(), 0);
        hello(&s, 0);
        for id in 0..64u64 {
            for req in [
                Request::Unshare { share: id },
                Request::Unmap { map: id },
                Request::MapFds { map: id, start: 0 },
                Request::SetNotify {
                    region: wire::RegionId::Share(id),
                    clear_byte: Some(0),
                    port: None,
                },
                Request::SetNotify {
                    region: wire::RegionId::Map(id),
                    clear_byte: Some(0),
                    port: None,
                },
                Request::Unbind {
                    port: EventPort(id as u32),
                },
            ] {
                send(&s, &req.encode(2));
                match reply(&s) {
                    Some(Err(WireError::InvalidArgument(_) | WireError::Port { .. })) => {}
                    other => panic!("{req:?} on a foreign id answered {other:?}"),
                }
            }
        }
        assert_eq!(
            broker.stats(),
            BrokerStats {
                connections: before.connections + 1,
                ..before
            }
        );
        // The owners' objects still work.
        ev.notify(port).unwrap();
        shared
            .set_unmap_notify(crate::UnmapNotify {
                clear_byte: Some(1),
                event: Some(port),
            })
            .unwrap();
    }

    #[test]
    fn descriptors_sent_to_the_host_are_dropped() {
        let (dir, _broker) = host();
        let s = raw(dir.path(), 1);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let req = Request::Hello {
            version: wire::PROTOCOL_VERSION,
            domid: DomId(1),
        };
        socket::send(s.as_fd(), &req.encode(1), &[w.as_fd()], false).unwrap();
        drop(w);
        assert!(matches!(reply(&s), Some(Ok(Reply::Hello { .. }))));
        // Had the host kept the write end, the read would say EAGAIN; it says end of file.
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut b), Ok(0));
    }

    #[test]
    fn a_client_that_does_not_read_its_replies_is_disconnected() {
        let (dir, broker) = host();
        let s = raw(dir.path(), 1);
        hello(&s, 1);
        let req = Request::Hello {
            version: wire::PROTOCOL_VERSION,
            domid: DomId(1),
        }
        .encode(3);
        let start = std::time::Instant::now();
        let mut sent = 0usize;
        let err = loop {
            match socket::send(s.as_fd(), &req, &[], false) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "host kept a client that never reads ({sent} requests)"
            );
        };
        assert!(
            matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
            "{err}"
        );
        // The host still serves everyone else.
        let sharer = SimGrantSharer::connect(dir.path(), DomId(1)).unwrap();
        assert!(sharer.share(DomId(0), 1, Access::ReadOnly).is_ok());
        assert_eq!(broker.stats().connections, 1);
    }
}
