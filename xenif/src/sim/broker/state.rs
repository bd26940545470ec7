//! The host's bookkeeping: domains, connections, shares, mappings, ports, and what happens
//! when any of them ends.
//!
//! Nothing here blocks: every system call is on a memfd, an eventfd or `/proc/self/fd`, and
//! the socket I/O is the caller's (`super::serve`). Requests come from processes acting as
//! domains, which may be hostile: every id, offset and count in a request is checked against
//! what the requesting connection owns before use, and refusals say what to do.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::{Mode, fchmod};

use super::BrokerConfig;
use super::BrokerStats;
use super::grants::{GrantTable, ShareId};
use super::ports::{ConnId, Port, PortTable};
use super::wire::{
    MAX_FDS_PER_MESSAGE, MAX_MAP_PAGES, Malformed, PROTOCOL_VERSION, Piece, RegionId, Reply,
    Request, WireError,
};
use crate::grant::Access;
use crate::types::{DomId, EventPort, GrantRef, PAGE_SIZE};

/// A descriptor to send with a reply: one the broker keeps, or a fresh one closed after sending.
#[derive(Debug)]
pub(crate) enum OutFd {
    /// The broker's own descriptor (the file description is shared with the receiver).
    Kept(Arc<OwnedFd>),
    /// Made for this reply only (a read-only reopening).
    Fresh(OwnedFd),
}

impl AsFd for OutFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            OutFd::Kept(fd) => fd.as_fd(),
            OutFd::Fresh(fd) => fd.as_fd(),
        }
    }
}

/// The broker's answer to one message.
#[derive(Debug)]
pub(crate) struct Response {
    /// The request's sequence number (0 when even that could not be read).
    pub(crate) seq: u32,
    /// The answer.
    pub(crate) result: Result<Reply, WireError>,
    /// Descriptors to attach.
    pub(crate) fds: Vec<OutFd>,
    /// Close the connection after sending (protocol violation, or a refused connection).
    pub(crate) close: bool,
}

/// What to do when a region ends.
#[derive(Debug, Default)]
struct Notify {
    /// The file and offset of the byte to clear.
    clear: Option<(Arc<OwnedFd>, u64)>,
    /// The port (domain, number) to signal; pinned while registered.
    event: Option<(DomId, u32)>,
}

#[derive(Debug)]
struct Share {
    granter: DomId,
    grantee: DomId,
    first_ref: u32,
    count: u32,
    access: Access,
    mem: Arc<OwnedFd>,
    owner: ConnId,
    notify: Notify,
}

#[derive(Debug)]
struct MapPiece {
    mem: Arc<OwnedFd>,
    page_offset: u32,
    pages: u32,
}

#[derive(Debug)]
struct Mapping {
    domid: DomId,
    owner: ConnId,
    access: Access,
    pieces: Vec<MapPiece>,
    /// The distinct files of `pieces`, in the `fd_index` order the client was given.
    files: Vec<Arc<OwnedFd>>,
    pages: u32,
    notify: Notify,
}

#[derive(Debug)]
struct Conn {
    domid: DomId,
    sock: Arc<OwnedFd>,
    greeted: bool,
    /// Set when the connection exceeded a limit: every request is answered with this and the
    /// connection closed.
    refused: Option<String>,
    shares: BTreeSet<ShareId>,
    maps: BTreeSet<u64>,
    ports: BTreeSet<u32>,
}

#[derive(Debug)]
struct Domain {
    listener: Arc<OwnedFd>,
    socket: PathBuf,
    grants: GrantTable,
    ports: PortTable,
    mapped_pages: usize,
    connections: usize,
}

/// Everything the host knows about grants and event channels.
#[derive(Debug)]
pub(crate) struct State {
    config: BrokerConfig,
    domains: HashMap<DomId, Domain>,
    conns: HashMap<ConnId, Conn>,
    shares: HashMap<ShareId, Share>,
    maps: HashMap<u64, Mapping>,
    next_id: u64,
}

type Answer = Result<(Reply, Vec<OutFd>), WireError>;

fn host_error(what: &str, e: impl Into<io::Error>) -> WireError {
    WireError::Host(format!("{what} failed on the host: {}", e.into()))
}

/// Adds one event to an eventfd. A saturated counter (only a process writing the eventfd
/// directly can cause one) already means "pending", so `EAGAIN` is fine.
fn signal(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd's counter (events sent before a channel was connected are dropped, as
/// Xen drops a notification on an unbound port).
fn drain(fd: &OwnedFd) {
    let mut v = [0u8; 8];
    let _ = nix::unistd::read(fd, &mut v);
}

fn new_eventfd() -> io::Result<Arc<OwnedFd>> {
    let e = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    Ok(Arc::new(OwnedFd::from(e)))
}

/// A sealed memfd of `count` zeroed pages: neither the granter nor a grantee can shrink it
/// under the other's mapping (which would turn their accesses into `SIGBUS`).
fn new_pages(granter: DomId, first_ref: u32, count: u32) -> io::Result<OwnedFd> {
    let name = CString::new(format!("vchan-sim-dom{granter}-gref{first_ref}"))
        .map_err(|_| io::Error::other("memfd name"))?;
    let fd = memfd_create(
        name.as_c_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let len = i64::from(count) * PAGE_SIZE as i64;
    nix::unistd::ftruncate(&fd, len)?;
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    // Owner read-only: a process given a read-only descriptor cannot reopen it for writing
    // through /proc/self/fd (unless it has CAP_DAC_OVERRIDE, as root has; see the module docs
    // of `crate::sim::broker`). Descriptors already open for writing keep working.
    fchmod(&fd, Mode::S_IRUSR)?;
    Ok(fd)
}

/// A new, read-only open file description of the same file, so that `mmap(PROT_WRITE,
/// MAP_SHARED)` and `mprotect(PROT_WRITE)` fail for whoever receives it.
fn reopen_read_only(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let f = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(OwnedFd::from(f))
}

fn fd_for(mem: &Arc<OwnedFd>, access: Access) -> io::Result<OutFd> {
    match access {
        Access::ReadWrite => Ok(OutFd::Kept(Arc::clone(mem))),
        Access::ReadOnly => Ok(OutFd::Fresh(reopen_read_only(mem)?)),
    }
}

impl State {
    pub(crate) fn new(config: BrokerConfig) -> Self {
        State {
            config,
            domains: HashMap::new(),
            conns: HashMap::new(),
            shares: HashMap::new(),
            maps: HashMap::new(),
            next_id: 1,
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn has_domain(&self, domid: DomId) -> bool {
        self.domains.contains_key(&domid)
    }

    /// Registers a created domain served on `listener` (bound at `socket`).
    pub(crate) fn add_domain(&mut self, domid: DomId, listener: Arc<OwnedFd>, socket: PathBuf) {
        self.domains.insert(
            domid,
            Domain {
                listener,
                socket,
                grants: GrantTable::default(),
                ports: PortTable::new(self.config.max_ports_per_domain),
                mapped_pages: 0,
                connections: 0,
            },
        );
    }

    pub(crate) fn listener(&self, domid: DomId) -> Option<Arc<OwnedFd>> {
        self.domains.get(&domid).map(|d| Arc::clone(&d.listener))
    }

    pub(crate) fn conn_socket(&self, id: ConnId) -> Option<Arc<OwnedFd>> {
        self.conns.get(&id).map(|c| Arc::clone(&c.sock))
    }

    /// Records a new connection to `domid`'s socket; returns its id (unknown domain: `None`).
    pub(crate) fn add_conn(&mut self, domid: DomId, sock: OwnedFd) -> Option<ConnId> {
        let limit = self.config.max_connections_per_domain;
        let id = self.new_id();
        let dom = self.domains.get_mut(&domid)?;
        let refused = if dom.connections >= limit as usize {
            Some(format!(
                "domain {domid} already has {limit} open grant/event-channel handles on the \
                 simulated host (its limit): close handles it no longer uses, or start the host \
                 with a larger BrokerConfig::max_connections_per_domain"
            ))
        } else {
            dom.connections += 1;
            None
        };
        self.conns.insert(
            id,
            Conn {
                domid,
                sock: Arc::new(sock),
                greeted: false,
                refused,
                shares: BTreeSet::new(),
                maps: BTreeSet::new(),
                ports: BTreeSet::new(),
            },
        );
        Some(id)
    }

    /// Answers one message received on connection `id`.
    pub(crate) fn handle(&mut self, id: ConnId, msg: &[u8]) -> Response {
        let (seq, decoded) = Request::decode(msg);
        let seq_or_0 = seq.unwrap_or(0);
        let refuse = |reason: String| Response {
            seq: seq_or_0,
            result: Err(WireError::Host(reason)),
            fds: Vec::new(),
            close: true,
        };
        let Some(conn) = self.conns.get(&id) else {
            return refuse("unknown connection".into());
        };
        if let Some(reason) = &conn.refused {
            return refuse(reason.clone());
        }
        let req = match decoded {
            Ok(req) => req,
            Err(Malformed(what)) => {
                return refuse(format!(
                    "malformed request ({what}): client and host are different builds, or the \
                     client is not a vchan client"
                ));
            }
        };
        if !conn.greeted && !matches!(req, Request::Hello { .. }) {
            return refuse("the first request on a connection must be HELLO".into());
        }
        let answer = self.dispatch(id, req);
        let close = matches!(answer, Err(WireError::Host(_)))
            && self.conns.get(&id).is_some_and(|c| !c.greeted);
        let (result, fds) = match answer {
            Ok((reply, fds)) => (Ok(reply), fds),
            Err(e) => (Err(e), Vec::new()),
        };
        Response {
            seq: seq_or_0,
            result,
            fds,
            close,
        }
    }

    fn dispatch(&mut self, id: ConnId, req: Request) -> Answer {
        match req {
            Request::Hello { version, domid } => self.hello(id, version, domid),
            Request::Share {
                peer,
                count,
                access,
            } => self.share(id, peer, count, access),
            Request::Unshare { share } => {
                self.owned_share(id, share)?;
                self.end_share(share);
                Ok((Reply::Done, Vec::new()))
            }
            Request::Map {
                granter,
                access,
                refs,
            } => self.map(id, granter, access, &refs),
            Request::MapFds { map, start } => self.map_fds(id, map, start),
            Request::Unmap { map } => {
                self.owned_map(id, map)?;
                self.end_map(map);
                Ok((Reply::Done, Vec::new()))
            }
            Request::SetNotify {
                region,
                clear_byte,
                port,
            } => self.set_notify(id, region, clear_byte, port),
            Request::BindUnbound { remote } => self.bind_unbound(id, remote),
            Request::BindInterdomain {
                remote,
                remote_port,
            } => self.bind_interdomain(id, remote, remote_port.0),
            Request::Unbind { port } => {
                let conn = self.conn(id)?;
                if !conn.ports.contains(&port.0) {
                    return Err(WireError::Port {
                        port,
                        reason: format!(
                            "not bound by this handle (domain {}): bind it first, or unbind it \
                             through the handle that bound it",
                            conn.domid
                        ),
                    });
                }
                let domid = conn.domid;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.ports.remove(&port.0);
                }
                self.close_port(domid, port.0, false);
                Ok((Reply::Done, Vec::new()))
            }
        }
    }

    fn conn(&self, id: ConnId) -> Result<&Conn, WireError> {
        self.conns
            .get(&id)
            .ok_or_else(|| WireError::Host("unknown connection".into()))
    }

    fn hello(&mut self, id: ConnId, version: u32, domid: DomId) -> Answer {
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or_else(|| WireError::Host("unknown connection".into()))?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::Host(format!(
                "protocol version mismatch: the host speaks version {PROTOCOL_VERSION}, this \
                 client version {version}; run the host and its clients from the same vchan build"
            )));
        }
        if domid != conn.domid {
            return Err(WireError::Host(format!(
                "this socket belongs to domain {}, but the client acts as domain {domid}: check \
                 VCHAN_SIM_DOMID",
                conn.domid
            )));
        }
        conn.greeted = true;
        Ok((Reply::Hello { domid }, Vec::new()))
    }

    fn share(&mut self, id: ConnId, peer: DomId, count: u32, access: Access) -> Answer {
        let domid = self.conn(id)?.domid;
        if !peer.is_valid() {
            return Err(WireError::InvalidArgument(format!(
                "cannot grant pages to domain {peer}: not a valid domain id"
            )));
        }
        if count == 0 {
            return Err(WireError::InvalidArgument("cannot share zero pages".into()));
        }
        let limit = self.config.max_grants_per_domain;
        let share_id = self.new_id();
        let dom = self
            .domains
            .get_mut(&domid)
            .ok_or_else(|| WireError::Host(format!("domain {domid} was released")))?;
        let in_use = dom.grants.in_use();
        let hint = || {
            format!(
                "domain {domid} has {in_use} of its {limit} grant entries in use on the \
                 simulated host: end shares it no longer needs, or start the host with a larger \
                 BrokerConfig::max_grants_per_domain"
            )
        };
        if in_use as u64 + u64::from(count) > u64::from(limit) {
            return Err(WireError::GrantLimit {
                requested: count.into(),
                hint: hint(),
            });
        }
        let first_ref =
            dom.grants
                .allocate(count, share_id)
                .ok_or_else(|| WireError::GrantLimit {
                    requested: count.into(),
                    hint: hint(),
                })?;
        let mem = match new_pages(domid, first_ref, count) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                dom.grants.release(first_ref);
                return Err(host_error("allocating shared pages (memfd)", e));
            }
        };
        let out = OutFd::Kept(Arc::clone(&mem));
        self.shares.insert(
            share_id,
            Share {
                granter: domid,
                grantee: peer,
                first_ref,
                count,
                access,
                mem,
                owner: id,
                notify: Notify::default(),
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.shares.insert(share_id);
        }
        Ok((
            Reply::Shared {
                share: share_id,
                first_ref: GrantRef(first_ref),
            },
            vec![out],
        ))
    }

    /// Share `share`, if connection `id` made it.
    fn owned_share(&self, id: ConnId, share: ShareId) -> Result<&Share, WireError> {
        match self.shares.get(&share) {
            Some(sh) if self.conn(id)?.shares.contains(&share) => Ok(sh),
            _ => Err(WireError::InvalidArgument(format!(
                "share {share} was not made through this handle (or has ended)"
            ))),
        }
    }

    /// Mapping `map`, if connection `id` made it.
    fn owned_map(&self, id: ConnId, map: u64) -> Result<&Mapping, WireError> {
        match self.maps.get(&map) {
            Some(m) if self.conn(id)?.maps.contains(&map) => Ok(m),
            _ => Err(WireError::InvalidArgument(format!(
                "mapping {map} was not made through this handle (or has ended)"
            ))),
        }
    }

    fn map(&mut self, id: ConnId, granter: DomId, access: Access, refs: &[GrantRef]) -> Answer {
        let domid = self.conn(id)?.domid;
        let Some(&first) = refs.first() else {
            return Err(WireError::InvalidArgument("cannot map zero pages".into()));
        };
        if refs.len() > MAX_MAP_PAGES {
            return Err(WireError::InvalidArgument(format!(
                "cannot map {} pages in one call: the simulated host maps at most {MAX_MAP_PAGES}",
                refs.len()
            )));
        }
        let limit = self.config.max_mapped_pages_per_domain as usize;
        let mapped = self.domains.get(&domid).map_or(0, |d| d.mapped_pages);
        if mapped + refs.len() > limit {
            return Err(WireError::Host(format!(
                "domain {domid} already maps {mapped} pages and may map at most {limit}: unmap \
                 pages it no longer uses, or start the host with a larger \
                 BrokerConfig::max_mapped_pages_per_domain"
            )));
        }
        let Some(gdom) = self.domains.get(&granter) else {
            return Err(WireError::GrantDenied {
                granter,
                gref: first,
                reason: format!("domain {granter} does not exist on this simulated host"),
            });
        };
        let mut pieces: Vec<(ShareId, u32, u32, Arc<OwnedFd>)> = Vec::new();
        for &gref in refs {
            let deny = |reason: String| WireError::GrantDenied {
                granter,
                gref,
                reason,
            };
            let (share_id, index) = gdom.grants.lookup(gref.0).ok_or_else(|| {
                deny("no such grant: it was never made, or it has been ended".into())
            })?;
            let share = self
                .shares
                .get(&share_id)
                .ok_or_else(|| deny("no such grant: it has been ended".into()))?;
            if share.grantee != domid {
                return Err(deny(format!(
                    "it is granted to domain {}, not to domain {domid}",
                    share.grantee
                )));
            }
            if access == Access::ReadWrite && share.access == Access::ReadOnly {
                return Err(deny(
                    "it is granted read-only: map it with Access::ReadOnly".into(),
                ));
            }
            match pieces.last_mut() {
                Some((s, start, n, _)) if *s == share_id && *start + *n == index => *n += 1,
                _ => pieces.push((share_id, index, 1, Arc::clone(&share.mem))),
            }
        }
        // Distinct shares, in order of first use, give the descriptor indices.
        let mut order: Vec<ShareId> = Vec::new();
        let mut files: Vec<Arc<OwnedFd>> = Vec::new();
        let mut wire_pieces = Vec::with_capacity(pieces.len());
        let mut map_pieces = Vec::with_capacity(pieces.len());
        for (share_id, page_offset, pages, mem) in pieces {
            let fd_index = match order.iter().position(|&s| s == share_id) {
                Some(i) => i,
                None => {
                    order.push(share_id);
                    files.push(Arc::clone(&mem));
                    order.len() - 1
                }
            };
            wire_pieces.push(Piece {
                fd_index: fd_index as u32,
                page_offset,
                pages,
            });
            map_pieces.push(MapPiece {
                mem,
                page_offset,
                pages,
            });
        }
        let mut fds = Vec::new();
        for mem in files.iter().take(MAX_FDS_PER_MESSAGE) {
            fds.push(fd_for(mem, access).map_err(|e| host_error("reopening shared pages", e))?);
        }
        let map_id = self.new_id();
        let pages = refs.len() as u32;
        self.maps.insert(
            map_id,
            Mapping {
                domid,
                owner: id,
                access,
                pieces: map_pieces,
                files: files.clone(),
                pages,
                notify: Notify::default(),
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.maps.insert(map_id);
        }
        if let Some(d) = self.domains.get_mut(&domid) {
            d.mapped_pages += pages as usize;
        }
        Ok((
            Reply::Mapped {
                map: map_id,
                fd_count: files.len() as u32,
                pieces: wire_pieces,
            },
            fds,
        ))
    }

    fn map_fds(&mut self, id: ConnId, map: u64, start: u32) -> Answer {
        let m = self.owned_map(id, map)?;
        let start = start as usize;
        if start >= m.files.len() {
            return Err(WireError::InvalidArgument(format!(
                "mapping {map} has {} descriptors, none from index {start}",
                m.files.len()
            )));
        }
        let mut fds = Vec::new();
        for mem in m.files.iter().skip(start).take(MAX_FDS_PER_MESSAGE) {
            fds.push(fd_for(mem, m.access).map_err(|e| host_error("reopening shared pages", e))?);
        }
        Ok((Reply::Fds, fds))
    }

    fn set_notify(
        &mut self,
        id: ConnId,
        region: RegionId,
        clear_byte: Option<u64>,
        port: Option<EventPort>,
    ) -> Answer {
        let domid = self.conn(id)?.domid;
        // The region's length and, for a byte offset within it, the file and file offset.
        let outside = |off: u64, len: u64| {
            WireError::InvalidArgument(format!(
                "unmap-notify byte offset {off} is outside the {len}-byte region"
            ))
        };
        let clear = match region {
            RegionId::Share(s) => {
                let sh = self.owned_share(id, s)?;
                let len = u64::from(sh.count) * PAGE_SIZE as u64;
                match clear_byte {
                    None => None,
                    Some(off) if off >= len => return Err(outside(off, len)),
                    Some(off) => Some((Arc::clone(&sh.mem), off)),
                }
            }
            RegionId::Map(m) => {
                let mp = self.owned_map(id, m)?;
                let len = u64::from(mp.pages) * PAGE_SIZE as u64;
                match clear_byte {
                    None => None,
                    Some(off) if off >= len => return Err(outside(off, len)),
                    Some(_) if mp.access == Access::ReadOnly => {
                        return Err(WireError::InvalidArgument(
                            "cannot clear a byte of a read-only mapping at unmap: map it \
                             read-write, or register only the event"
                                .into(),
                        ));
                    }
                    Some(off) => {
                        // Find the piece holding page `off / PAGE_SIZE` of the mapping.
                        let page = off / PAGE_SIZE as u64;
                        let mut first = 0u64;
                        let mut found = None;
                        for p in &mp.pieces {
                            if page < first + u64::from(p.pages) {
                                let file_page = u64::from(p.page_offset) + (page - first);
                                found = Some((
                                    Arc::clone(&p.mem),
                                    file_page * PAGE_SIZE as u64 + off % PAGE_SIZE as u64,
                                ));
                                break;
                            }
                            first += u64::from(p.pages);
                        }
                        found
                    }
                }
            }
        };
        if let Some(port) = port {
            let bound = self
                .domains
                .get(&domid)
                .and_then(|d| d.ports.get(port.0))
                .is_some_and(|p| p.owner.is_some());
            if !bound {
                return Err(WireError::Port {
                    port,
                    reason: format!(
                        "not bound in domain {domid}: bind the port before registering it for \
                         unmap notification"
                    ),
                });
            }
            if let Some(p) = self
                .domains
                .get_mut(&domid)
                .and_then(|d| d.ports.get_mut(port.0))
            {
                p.pins += 1;
            }
        }
        let notify = Notify {
            clear,
            event: port.map(|p| (domid, p.0)),
        };
        let old = match region {
            RegionId::Share(s) => self
                .shares
                .get_mut(&s)
                .map(|sh| std::mem::replace(&mut sh.notify, notify)),
            RegionId::Map(m) => self
                .maps
                .get_mut(&m)
                .map(|mp| std::mem::replace(&mut mp.notify, notify)),
        };
        if let Some((d, n)) = old.and_then(|o| o.event) {
            self.unpin(d, n);
        }
        Ok((Reply::Done, Vec::new()))
    }

    fn bind_unbound(&mut self, id: ConnId, remote: DomId) -> Answer {
        let domid = self.conn(id)?.domid;
        if !remote.is_valid() {
            return Err(WireError::InvalidArgument(format!(
                "cannot bind a port for domain {remote}: not a valid domain id"
            )));
        }
        if !self.domains.contains_key(&remote) {
            return Err(WireError::InvalidArgument(format!(
                "cannot bind a port for domain {remote}: it does not exist on this simulated host \
                 (create it first)"
            )));
        }
        let number = self.free_port(domid)?;
        let incoming = new_eventfd().map_err(|e| host_error("creating an eventfd", e))?;
        let outgoing = new_eventfd().map_err(|e| host_error("creating an eventfd", e))?;
        let fds = vec![
            OutFd::Kept(Arc::clone(&incoming)),
            OutFd::Kept(Arc::clone(&outgoing)),
        ];
        if let Some(d) = self.domains.get_mut(&domid) {
            d.ports.insert(
                number,
                Port {
                    owner: Some(id),
                    remote,
                    peer: None,
                    incoming,
                    outgoing,
                    pins: 0,
                },
            );
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.ports.insert(number);
        }
        Ok((
            Reply::Bound {
                port: EventPort(number),
            },
            fds,
        ))
    }

    fn free_port(&self, domid: DomId) -> Result<u32, WireError> {
        let dom = self
            .domains
            .get(&domid)
            .ok_or_else(|| WireError::Host(format!("domain {domid} was released")))?;
        dom.ports.free_number().ok_or_else(|| {
            WireError::Host(format!(
                "domain {domid} has all {} of its event-channel ports in use: unbind ports it no \
                 longer uses, or start the host with a larger BrokerConfig::max_ports_per_domain",
                dom.ports.limit()
            ))
        })
    }

    fn bind_interdomain(&mut self, id: ConnId, remote: DomId, rport: u32) -> Answer {
        let domid = self.conn(id)?.domid;
        let deny = |reason: String| WireError::Port {
            port: EventPort(rport),
            reason,
        };
        let Some(rdom) = self.domains.get(&remote) else {
            return Err(deny(format!(
                "domain {remote} does not exist on this simulated host"
            )));
        };
        let Some(p) = rdom.ports.get(rport) else {
            return Err(deny(format!(
                "domain {remote} has no such port: it must bind an unbound port for domain \
                 {domid} first"
            )));
        };
        if p.owner.is_none() {
            return Err(deny(format!(
                "port {rport} of domain {remote} is being closed"
            )));
        }
        if p.remote != domid {
            return Err(deny(format!(
                "port {rport} of domain {remote} was allocated for domain {}, not for domain \
                 {domid}",
                p.remote
            )));
        }
        if let Some(pp) = p.peer {
            return Err(deny(format!(
                "port {rport} of domain {remote} is already connected (to port {pp} of domain \
                 {domid})"
            )));
        }
        // Our end reads what the other end writes, and the other way round.
        let incoming = Arc::clone(&p.outgoing);
        let outgoing = Arc::clone(&p.incoming);
        let number = self.free_port(domid)?;
        drain(&incoming);
        let fds = vec![
            OutFd::Kept(Arc::clone(&incoming)),
            OutFd::Kept(Arc::clone(&outgoing)),
        ];
        if let Some(d) = self.domains.get_mut(&domid) {
            d.ports.insert(
                number,
                Port {
                    owner: Some(id),
                    remote,
                    peer: Some(rport),
                    incoming,
                    outgoing,
                    pins: 0,
                },
            );
        }
        if let Some(p) = self
            .domains
            .get_mut(&remote)
            .and_then(|d| d.ports.get_mut(rport))
        {
            p.peer = Some(number);
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.ports.insert(number);
        }
        Ok((
            Reply::Bound {
                port: EventPort(number),
            },
            fds,
        ))
    }

    /// Closes port `n` of `domid` (its handle unbound it or died). A port an unmap notification
    /// still refers to stays connected until that fires, unless `force` (domain release).
    fn close_port(&mut self, domid: DomId, n: u32, force: bool) {
        let Some(dom) = self.domains.get_mut(&domid) else {
            return;
        };
        let Some(p) = dom.ports.get_mut(n) else {
            return;
        };
        p.owner = None;
        if p.pins > 0 && !force {
            return;
        }
        let Some(p) = dom.ports.remove(n) else {
            return;
        };
        // The other end reverts to unbound, still for this domain: it may be bound again.
        if let Some(rp) = p.peer {
            if let Some(q) = self
                .domains
                .get_mut(&p.remote)
                .and_then(|d| d.ports.get_mut(rp))
            {
                if q.peer == Some(n) && q.remote == domid {
                    q.peer = None;
                }
            }
        }
    }

    fn unpin(&mut self, domid: DomId, n: u32) {
        let Some(p) = self
            .domains
            .get_mut(&domid)
            .and_then(|d| d.ports.get_mut(n))
        else {
            return;
        };
        p.pins = p.pins.saturating_sub(1);
        if p.pins == 0 && p.owner.is_none() {
            self.close_port(domid, n, true);
        }
    }

    /// Runs an unmap notification: clear the byte, then signal the port.
    fn fire(&mut self, notify: Notify) {
        if let Some((mem, off)) = notify.clear {
            // The broker's own descriptor is writable even when the region's owner has gone.
            if let Ok(off) = i64::try_from(off) {
                let _ = nix::sys::uio::pwrite(&*mem, &[0u8], off);
            }
        }
        if let Some((d, n)) = notify.event {
            if let Some(p) = self.domains.get(&d).and_then(|dom| dom.ports.get(n)) {
                signal(&p.outgoing);
            }
            self.unpin(d, n);
        }
    }

    /// Drops an unmap notification without running it (its domain was destroyed: no
    /// kernel of it is left to run it), releasing the port it pinned.
    fn forget(&mut self, notify: Notify) {
        if let Some((d, n)) = notify.event {
            self.unpin(d, n);
        }
    }

    fn end_share(&mut self, share: ShareId) {
        self.end_share_notifying(share, true);
    }

    fn end_share_notifying(&mut self, share: ShareId, notify: bool) {
        let Some(sh) = self.shares.remove(&share) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&sh.owner) {
            c.shares.remove(&share);
        }
        if let Some(d) = self.domains.get_mut(&sh.granter) {
            d.grants.release(sh.first_ref);
        }
        if notify {
            self.fire(sh.notify);
        } else {
            self.forget(sh.notify);
        }
        // Mappings of these pages keep their own reference to the file: the pages live on
        // until the last one ends, as on Xen.
    }

    fn end_map(&mut self, map: u64) {
        self.end_map_notifying(map, true);
    }

    fn end_map_notifying(&mut self, map: u64, notify: bool) {
        let Some(m) = self.maps.remove(&map) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&m.owner) {
            c.maps.remove(&map);
        }
        if let Some(d) = self.domains.get_mut(&m.domid) {
            d.mapped_pages = d.mapped_pages.saturating_sub(m.pages as usize);
        }
        if notify {
            self.fire(m.notify);
        } else {
            self.forget(m.notify);
        }
    }

    /// A connection ended (its process closed it, exited or was killed, or the domain was
    /// released): run the unmap notifications of everything it held and release it all.
    pub(crate) fn close_conn(&mut self, id: ConnId) {
        self.close_conn_notifying(id, true);
    }

    /// [`State::close_conn`], running the unmap notifications only if `notify`.
    fn close_conn_notifying(&mut self, id: ConnId, notify: bool) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if conn.refused.is_none() {
            if let Some(d) = self.domains.get_mut(&conn.domid) {
                d.connections = d.connections.saturating_sub(1);
            }
        }
        for map in conn.maps {
            self.end_map_notifying(map, notify);
        }
        for share in conn.shares {
            self.end_share_notifying(share, notify);
        }
        for port in conn.ports {
            self.close_port(conn.domid, port, false);
        }
    }

    /// Releases everything `domid` holds and forgets the domain; returns its socket path.
    /// The unmap notifications of what it held run only if
    /// [`BrokerConfig::notify_on_release`] says so.
    pub(crate) fn release_domain(&mut self, domid: DomId) -> Option<PathBuf> {
        let notify = self.config.notify_on_release;
        if !self.domains.contains_key(&domid) {
            return None;
        }
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.close_conn_notifying(id, notify);
        }
        let numbers = self
            .domains
            .get(&domid)
            .map(|d| d.ports.numbers())
            .unwrap_or_default();
        for n in numbers {
            self.close_port(domid, n, true);
        }
        self.domains.remove(&domid).map(|d| d.socket)
    }

    /// Socket paths of every domain (to remove them when the broker stops).
    pub(crate) fn sockets(&self) -> Vec<PathBuf> {
        self.domains.values().map(|d| d.socket.clone()).collect()
    }

    pub(crate) fn stats(&self) -> BrokerStats {
        BrokerStats {
            domains: self.domains.len(),
            connections: self.conns.len(),
            shares: self.shares.len(),
            shared_pages: self.shares.values().map(|s| s.count as usize).sum(),
            mappings: self.maps.len(),
            mapped_pages: self.maps.values().map(|m| m.pages as usize).sum(),
            ports: self.domains.values().map(|d| d.ports.len()).sum(),
        }
    }
}

impl From<Errno> for WireError {
    fn from(e: Errno) -> Self {
        host_error("a system call", e)
    }
}
