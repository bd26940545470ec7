//! This process's side of simulated grants and event channels: [`SimGrantSharer`],
//! [`SimGrantMapper`] and [`SimEventChannels`], the sim's implementations of
//! [`GrantSharer`], [`GrantMapper`] and [`crate::EventChannels`].
//!
//! Each handle opens its own connection to `<dir>/dom<N>/host.sock` and keeps it for its life
//! (and the life of every region made through it), so the host sees this process go away
//! however it goes. Setting up (share, map, bind) is a request to the host; the data path is
//! not: pages are plain `mmap(MAP_SHARED)` memory, and a notification is one `write(2)` on
//! an eventfd shared with the other end.
//!
//! Usually reached through [`crate::Backend`] (`VCHAN_SIM_DIR` + `VCHAN_SIM_DOMID`); the
//! constructors here are for code that picks the host explicitly.
//!
//! ```
//! use std::time::Duration;
//! use vchan_xenif::sim::broker::Broker;
//! use vchan_xenif::sim::client::SimEventChannels;
//! use vchan_xenif::{DomId, EventChannels};
//!
//! let dir = tempfile::tempdir()?;
//! let broker = Broker::new(dir.path())?;
//! broker.domain_created(DomId(0))?;
//! broker.domain_created(DomId(1))?;
//!
//! // Domain 0 offers a port to domain 1, which connects to it (normally two processes).
//! let server = SimEventChannels::connect(dir.path(), DomId(0))?;
//! let client = SimEventChannels::connect(dir.path(), DomId(1))?;
//! let port0 = server.bind_unbound(DomId(1))?;
//! let port1 = client.bind_interdomain(DomId(0), port0)?;
//!
//! client.notify(port1)?;
//! assert_eq!(server.wait(Some(Duration::from_secs(5)))?, Some(port0));
//! // Delivered ports stay masked until unmasked, as with Linux /dev/xen/evtchn.
//! client.notify(port1)?;
//! assert_eq!(server.pending()?, None);
//! server.unmask(port0)?;
//! assert_eq!(server.pending()?, Some(port0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod evtchn;
mod region;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::evtchn::SimEventChannels;
use self::region::{MappedRegion, PieceSource, SharedRegion};
use super::broker::socket::{self, Received};
use super::broker::wire::{
    MAX_MAP_PAGES, MAX_MESSAGE, PROTOCOL_VERSION, Reply, Request, WireError,
};
use crate::error::{Error, Result};
use crate::grant::{
    Access, GrantMapper, GrantSharer, MappedPages, RegionBackend, SharedPages, UnmapNotify,
};
use crate::types::{DomId, GrantRef, PAGE_SIZE};

/// How long a request may wait for the host's answer before it is an error (the host answers
/// in microseconds; this only turns a wedged host into an error instead of a hang).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to the host, shared by a handle and the regions made through it.
#[derive(Debug)]
pub(crate) struct Connection {
    sock: OwnedFd,
    dir: PathBuf,
    domid: DomId,
    /// Serialises requests (one reply per request, in order).
    calls: Mutex<Calls>,
}

/// The state of the request/reply exchange.
#[derive(Debug)]
struct Calls {
    /// Number of the last request sent.
    seq: u32,
    /// Receive buffer, kept between calls.
    buf: Vec<u8>,
}

impl Connection {
    /// Connects to domain `domid`'s socket of the host at `dir` and checks that both sides
    /// agree on the protocol and the domain.
    pub(crate) fn open(dir: &Path, domid: DomId) -> Result<Connection> {
        let path = super::host_socket(dir, domid);
        let sock = socket::connect(&path).map_err(|e| Error::Sim {
            dir: dir.to_owned(),
            reason: format!(
                "cannot connect to {}: {e}. Is the simulated host running (`vchan sim`), and was \
                 domain {domid} created on it?",
                path.display()
            ),
        })?;
        socket::set_timeouts(sock.as_fd(), REPLY_TIMEOUT)
            .map_err(|e| Error::os(format!("setting timeouts on {}", path.display()), e))?;
        let conn = Connection {
            sock,
            dir: dir.to_owned(),
            domid,
            calls: Mutex::new(Calls {
                seq: 0,
                buf: vec![0u8; MAX_MESSAGE],
            }),
        };
        match conn.call(&Request::Hello {
            version: PROTOCOL_VERSION,
            domid,
        })? {
            (Reply::Hello { domid: d }, _) if d == domid => Ok(conn),
            _ => Err(conn.sim_error("unexpected answer to HELLO")),
        }
    }

    pub(crate) fn domid(&self) -> DomId {
        self.domid
    }

    pub(crate) fn sim_error(&self, reason: impl Into<String>) -> Error {
        Error::Sim {
            dir: self.dir.clone(),
            reason: reason.into(),
        }
    }

    fn closed(&self) -> Error {
        self.sim_error(format!(
            "the host closed the connection of domain {}: the host stopped, or the domain was \
             released",
            self.domid
        ))
    }

    /// Sends `req` and waits for its reply (and the descriptors that came with it).
    pub(crate) fn call(&self, req: &Request) -> Result<(Reply, Vec<OwnedFd>)> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let Calls { seq, buf } = &mut *calls;
        *seq = seq.wrapping_add(1);
        let msg = req.encode(*seq);
        if let Err(e) = socket::send(self.sock.as_fd(), &msg, &[], false) {
            return Err(match e.raw_os_error() {
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => self.closed(),
                _ => Error::os("sending a request to the simulated host", e),
            });
        }
        loop {
            let (len, fds) = match socket::recv(self.sock.as_fd(), buf, true, false) {
                Ok(Received::Message(len, fds)) => (len, fds),
                Ok(Received::Closed) => return Err(self.closed()),
                Ok(Received::WouldBlock) => {
                    return Err(self.sim_error(format!(
                        "no answer from the host within {} s",
                        REPLY_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(Error::os("receiving the simulated host's answer", e)),
            };
            let (reply_seq, result) = super::broker::wire::decode_reply(&buf[..len])
                .map_err(|m| self.sim_error(format!("malformed answer from the host: {}", m.0)))?;
            if reply_seq != *seq {
                // The late answer to a request that timed out: drop it (and its descriptors).
                continue;
            }
            return match result {
                Ok(reply) => Ok((reply, fds)),
                Err(e) => Err(self.error(e)),
            };
        }
    }

    fn error(&self, e: WireError) -> Error {
        match e {
            WireError::GrantLimit { requested, hint } => Error::GrantLimit {
                requested: usize::try_from(requested).unwrap_or(usize::MAX),
                hint,
            },
            WireError::GrantDenied {
                granter,
                gref,
                reason,
            } => Error::GrantDenied {
                granter,
                gref,
                reason,
            },
            WireError::Port { port, reason } => Error::Port { port, reason },
            WireError::InvalidArgument(msg) => Error::InvalidArgument(msg),
            WireError::Host(reason) => self.sim_error(reason),
        }
    }
}

/// Shares pages with other domains of a simulated host (the sim's `/dev/xen/gntalloc`).
#[derive(Debug)]
pub struct SimGrantSharer {
    conn: Arc<Connection>,
}

impl SimGrantSharer {
    /// Opens a handle acting as domain `domid` of the host rooted at `dir`.
    pub fn connect(dir: &Path, domid: DomId) -> Result<Self> {
        Ok(SimGrantSharer {
            conn: Arc::new(Connection::open(dir, domid)?),
        })
    }
}

impl SimGrantSharer {
    /// Asks the host for a share; returns it (dropping the region ends it), its file and refs.
    fn share_on_host(
        &self,
        peer: DomId,
        count: usize,
        access: Access,
    ) -> Result<(SharedRegion, OwnedFd, Vec<GrantRef>)> {
        if count == 0 {
            return Err(Error::InvalidArgument("cannot share zero pages".into()));
        }
        let count32 = u32::try_from(count).map_err(|_| Error::GrantLimit {
            requested: count,
            hint: "more pages than a grant table can hold".into(),
        })?;
        let (reply, mut fds) = self.conn.call(&Request::Share {
            peer,
            count: count32,
            access,
        })?;
        let (share, first_ref) = match reply {
            Reply::Shared { share, first_ref } => (share, first_ref),
            _ => return Err(self.conn.sim_error("unexpected answer to SHARE")),
        };
        // From here on the share exists on the host; dropping `region` ends it.
        let region = SharedRegion::new(Arc::clone(&self.conn), share);
        let (Some(fd), true) = (fds.pop(), fds.is_empty()) else {
            return Err(self
                .conn
                .sim_error("SHARE answered without exactly one descriptor"));
        };
        // Check the host's file before mapping it: a short file would turn accesses past its
        // end into SIGBUS.
        let size = nix::sys::stat::fstat(&fd)
            .map_err(|e| Error::os("fstat of a shared grant", e.into()))?
            .st_size;
        if u64::try_from(size).unwrap_or(0) < (count as u64).saturating_mul(PAGE_SIZE as u64) {
            return Err(self.conn.sim_error(format!(
                "SHARE answered with a {size}-byte file for {count} pages"
            )));
        }
        let refs = (0..count32)
            .map(|i| GrantRef(first_ref.0.wrapping_add(i)))
            .collect();
        Ok((region, fd, refs))
    }

    /// Shares `count` zeroed pages with `peer` like [`GrantSharer::share`], but hands the local
    /// mapping over to the caller, as C's `xengntshr_share_pages` does: the caller unmaps it
    /// (`munmap`) when it wants, and dropping the returned value ends the share on the host
    /// without unmapping anything. This is the model of the drop-in C libraries, whose
    /// programs own their mappings and may `munmap` them directly.
    pub fn share_detached(
        &self,
        peer: DomId,
        count: usize,
        access: Access,
    ) -> Result<DetachedShare> {
        let (region, fd, refs) = self.share_on_host(peer, count, access)?;
        let (ptr, len) = region
            .map_detached(&fd, count * PAGE_SIZE)
            .map_err(|e| Error::os("mmap of shared pages", e))?;
        Ok(DetachedShare {
            region,
            addr: ptr.as_ptr() as usize,
            len,
            refs,
            peer,
        })
    }
}

impl GrantSharer for SimGrantSharer {
    fn share(&self, peer: DomId, count: usize, access: Access) -> Result<SharedPages> {
        let (region, fd, refs) = self.share_on_host(peer, count, access)?;
        region
            .into_shared_pages(&fd, count * PAGE_SIZE, refs, peer)
            .map_err(|e| Error::os("mmap of shared pages", e))
    }
}

/// The handle's connection to the host (what the C libraries call the handle's internal
/// descriptor: usable with `fcntl`, useless to `poll`).
impl AsFd for SimGrantSharer {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.conn.sock.as_fd()
    }
}

/// Maps pages other domains of a simulated host granted (the sim's `/dev/xen/gntdev`).
#[derive(Debug)]
pub struct SimGrantMapper {
    conn: Arc<Connection>,
}

impl SimGrantMapper {
    /// Opens a handle acting as domain `domid` of the host rooted at `dir`.
    pub fn connect(dir: &Path, domid: DomId) -> Result<Self> {
        Ok(SimGrantMapper {
            conn: Arc::new(Connection::open(dir, domid)?),
        })
    }
}

/// The handle's connection to the host (see [`SimGrantSharer`]'s).
impl AsFd for SimGrantMapper {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.conn.sock.as_fd()
    }
}

/// Where one run of a mapping's pages comes from: (descriptor index, byte offset, length).
type Run = (usize, u64, usize);

impl SimGrantMapper {
    /// Asks the host for a mapping; returns it (dropping the region ends it), the files it
    /// came with, and the checked runs that make it up, in order.
    fn map_on_host(
        &self,
        peer: DomId,
        refs: &[GrantRef],
        access: Access,
    ) -> Result<(MappedRegion, Vec<OwnedFd>, Vec<Run>)> {
        if refs.is_empty() {
            return Err(Error::InvalidArgument("cannot map zero pages".into()));
        }
        if refs.len() > MAX_MAP_PAGES {
            return Err(Error::InvalidArgument(format!(
                "cannot map {} pages in one call: the simulated host maps at most \
                 {MAX_MAP_PAGES} ({} MiB)",
                refs.len(),
                (MAX_MAP_PAGES * PAGE_SIZE) >> 20
            )));
        }
        let (reply, mut fds) = self.conn.call(&Request::Map {
            granter: peer,
            access,
            refs: refs.to_vec(),
        })?;
        let (map, fd_count, pieces) = match reply {
            Reply::Mapped {
                map,
                fd_count,
                pieces,
            } => (map, fd_count as usize, pieces),
            _ => return Err(self.conn.sim_error("unexpected answer to MAP")),
        };
        // From here on the mapping exists on the host; dropping `region` ends it.
        let region = MappedRegion::new(Arc::clone(&self.conn), map, access);
        while fds.len() < fd_count {
            let (reply, more) = self.conn.call(&Request::MapFds {
                map,
                start: fds.len() as u32,
            })?;
            if reply != Reply::Fds || more.is_empty() {
                return Err(self.conn.sim_error("unexpected answer to MAP_FDS"));
            }
            fds.extend(more);
        }
        if fds.len() != fd_count {
            return Err(self
                .conn
                .sim_error("MAP answered with the wrong number of descriptors"));
        }
        // Check the host's answer before mapping anything: pieces cover exactly the pages
        // asked for, each within its file.
        let mut sizes = Vec::with_capacity(fds.len());
        for fd in &fds {
            let st = nix::sys::stat::fstat(fd)
                .map_err(|e| Error::os("fstat of a mapped grant", e.into()))?;
            sizes.push(u64::try_from(st.st_size).unwrap_or(0));
        }
        let mut total = 0u64;
        let mut runs = Vec::with_capacity(pieces.len());
        for p in &pieces {
            let size = sizes.get(p.fd_index as usize).copied();
            let end = (u64::from(p.page_offset) + u64::from(p.pages)) * PAGE_SIZE as u64;
            match size {
                Some(size) if p.pages > 0 && end <= size => {}
                _ => return Err(self.conn.sim_error("MAP answered with an invalid piece")),
            }
            total += u64::from(p.pages);
            runs.push((
                p.fd_index as usize,
                u64::from(p.page_offset) * PAGE_SIZE as u64,
                p.pages as usize * PAGE_SIZE,
            ));
        }
        if total != refs.len() as u64 {
            return Err(self
                .conn
                .sim_error("MAP answered with pieces of the wrong total size"));
        }
        Ok((region, fds, runs))
    }

    /// Maps `peer`'s pages `refs` like [`GrantMapper::map`], but hands the local mapping over
    /// to the caller, as C's `xengnttab_map_*` do: the caller unmaps it (`munmap`) when it
    /// wants, and dropping the returned value ends the mapping on the host (running its unmap
    /// notification) without unmapping anything.
    pub fn map_detached(
        &self,
        peer: DomId,
        refs: &[GrantRef],
        access: Access,
    ) -> Result<DetachedMap> {
        let (region, fds, runs) = self.map_on_host(peer, refs, access)?;
        let (ptr, len) = region
            .map_detached(&sources(&fds, &runs))
            .map_err(|e| Error::os("mmap of granted pages", e))?;
        Ok(DetachedMap {
            region,
            addr: ptr.as_ptr() as usize,
            len,
            peer,
            access,
        })
    }
}

fn sources<'a>(fds: &'a [OwnedFd], runs: &[Run]) -> Vec<PieceSource<'a>> {
    runs.iter()
        .map(|&(fd_index, offset, len)| PieceSource {
            fd: fds[fd_index].as_fd(),
            offset,
            len,
        })
        .collect()
}

impl GrantMapper for SimGrantMapper {
    fn map(&self, peer: DomId, refs: &[GrantRef], access: Access) -> Result<MappedPages> {
        let (region, fds, runs) = self.map_on_host(peer, refs, access)?;
        region
            .into_mapped_pages(&sources(&fds, &runs), peer)
            .map_err(|e| Error::os("mmap of granted pages", e))
    }
}

/// Pages this process shared, whose local mapping belongs to the caller
/// ([`SimGrantSharer::share_detached`]).
///
/// Dropping it ends the share on the host (running its unmap notification, as Linux gntalloc
/// does when the last mapping of a deallocated grant goes); it never unmaps the local pages.
#[derive(Debug)]
pub struct DetachedShare {
    region: SharedRegion,
    addr: usize,
    len: usize,
    refs: Vec<GrantRef>,
    peer: DomId,
}

impl DetachedShare {
    /// Start of the local mapping (page aligned, read-write), which the caller must `munmap`
    /// (`len()` bytes) when done with it; the peer may write it concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Length of the local mapping in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The grant references, one per page, in page order.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// The domain the pages are granted to.
    pub fn peer(&self) -> DomId {
        self.peer
    }

    /// Registers what to do when the share ends or this process dies.
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        self.region.set_unmap_notify(notify)
    }
}

/// A peer's pages this process mapped, whose local mapping belongs to the caller
/// ([`SimGrantMapper::map_detached`]).
///
/// Dropping it ends the mapping on the host (running its unmap notification); it never unmaps
/// the local pages.
#[derive(Debug)]
pub struct DetachedMap {
    region: MappedRegion,
    addr: usize,
    len: usize,
    peer: DomId,
    access: Access,
}

impl DetachedMap {
    /// Start of the local mapping (page aligned), which the caller must `munmap` (`len()`
    /// bytes) when done with it. Writable only if [`Self::access`] is
    /// [`Access::ReadWrite`]; the peer may write it concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Length of the local mapping in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The domain that granted the pages.
    pub fn peer(&self) -> DomId {
        self.peer
    }

    /// How the pages are mapped.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Registers what to do when the mapping ends or this process dies.
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        self.region.set_unmap_notify(notify)
    }
}

#[cfg(test)]
mod detached_tests;
