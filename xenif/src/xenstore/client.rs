//! The XenStore client: connection, request/reply matching, transactions, own domid.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::error::{Error, Result};
use super::watch::{Watch, WatchEvent, WatchQueue};
use super::wire::{self, ErrorCode, Incoming, MsgType, PAYLOAD_MAX, Perm};
use crate::types::DomId;

/// Environment variable naming the xenstored socket or device (as in libxenstore).
pub const ENV_XENSTORED_PATH: &str = "XENSTORED_PATH";
/// Environment variable naming xenstored's run directory (`<dir>/socket`).
pub const ENV_XENSTORED_RUNDIR: &str = "XENSTORED_RUNDIR";
/// xenstored's default run directory.
pub const DEFAULT_RUNDIR: &str = "/var/run/xenstored";
/// The XenBus device through which a domU reaches xenstored.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// Default limit on how long a request waits for its reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest child list (bytes of NUL-terminated names) `directory` assembles from
/// `DIRECTORY_PART` replies, so a misbehaving xenstored cannot make it grow without bound.
const MAX_DIRECTORY_BYTES: usize = 16 << 20;
/// How many times [`Client::transaction`] runs the body when commits keep conflicting.
pub const TRANSACTION_ATTEMPTS: u32 = 64;

/// What is waiting for replies, and where watch events go. Shared with the reader thread.
struct Dispatch {
    pending: Mutex<Pending>,
    /// Registered watches by their wire token (unique per registration).
    watches: Mutex<HashMap<String, Arc<WatchQueue>>>,
    next_watch: AtomicU64,
}

struct Pending {
    map: HashMap<u32, SyncSender<Incoming>>,
    closed: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dispatch {
    fn close(&self, reason: String) {
        let mut p = lock(&self.pending);
        if p.closed.is_none() {
            p.closed = Some(reason.clone());
        }
        p.map.clear();
        drop(p);
        for w in lock(&self.watches).values() {
            w.close(&reason);
        }
    }

    fn deliver(&self, msg: wire::Message) -> std::result::Result<(), String> {
        let Some(incoming) = wire::classify_incoming(msg) else {
            return Err("xenstored sent a malformed message".into());
        };
        match incoming {
            Incoming::WatchEvent { path, token } => {
                // Each registration has its own wire token, so an event belongs to exactly
                // one watch even when several watch overlapping paths. Events for tokens we
                // never registered (or just unregistered) are dropped.
                if let Some(w) = lock(&self.watches).get(&token) {
                    w.push(WatchEvent {
                        path,
                        token: w.token.clone(),
                    });
                }
            }
            Incoming::Reply { req_id, .. } | Incoming::Error { req_id, .. } => {
                // A reply nobody waits for (its request timed out) is dropped.
                if let Some(tx) = lock(&self.pending).map.remove(&req_id) {
                    let _ = tx.send(incoming);
                }
            }
        }
        Ok(())
    }
}

/// The connection state shared by a [`Client`], its clones and its [`Watch`]es.
pub(crate) struct Shared {
    writer: Mutex<File>,
    dispatch: Arc<Dispatch>,
    next_req: AtomicU32,
    timeout_ms: AtomicU64,
    endpoint: PathBuf,
    socket: Option<UnixStream>,
    /// Closing this (on drop) wakes the reader thread, which then exits.
    _wake: OwnedFd,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(s) = &self.socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Shared {
    fn timeout(&self) -> Option<Duration> {
        match self.timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Sends one request and waits for its reply (matched by `req_id`).
    pub(crate) fn request(
        &self,
        op: MsgType,
        tx_id: u32,
        payload: Vec<u8>,
        subject: &str,
    ) -> Result<Vec<u8>> {
        if payload.len() > PAYLOAD_MAX {
            return Err(Error::InvalidArgument {
                op,
                path: subject.to_owned(),
                reason: format!(
                    "the request needs {} bytes but a XenStore message carries at most \
                     {PAYLOAD_MAX}: shorten the path or the value",
                    payload.len()
                ),
            });
        }
        let mut req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        if req_id == 0 {
            req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut p = lock(&self.dispatch.pending);
            if let Some(reason) = &p.closed {
                return Err(Error::Closed {
                    op,
                    path: subject.to_owned(),
                    reason: reason.clone(),
                });
            }
            p.map.insert(req_id, tx);
        }
        let msg = wire::Message {
            msg_type: op as u32,
            req_id,
            tx_id,
            payload,
        };
        if let Err(e) = msg.write_to(&mut *lock(&self.writer)) {
            lock(&self.dispatch.pending).map.remove(&req_id);
            return Err(Error::Wire(e.into()));
        }
        let got = match self.timeout() {
            Some(t) => rx.recv_timeout(t),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(Incoming::Reply { kind, payload, .. }) if kind == op => Ok(payload),
            Ok(Incoming::Reply { kind, .. }) => Err(Error::Protocol {
                op,
                path: subject.to_owned(),
                reason: format!("reply of type {kind} to a {op} request"),
            }),
            Ok(Incoming::Error {
                code: Some(code), ..
            }) => Err(Error::Xenstored {
                op,
                path: subject.to_owned(),
                code,
            }),
            Ok(Incoming::Error { code: None, .. }) => Err(Error::Protocol {
                op,
                path: subject.to_owned(),
                reason: "error reply with an unknown error name".into(),
            }),
            Ok(Incoming::WatchEvent { .. }) => Err(Error::Protocol {
                op,
                path: subject.to_owned(),
                reason: "watch event routed as a reply".into(),
            }),
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.dispatch.pending).map.remove(&req_id);
                Err(Error::Timeout {
                    op,
                    path: subject.to_owned(),
                    timeout: self.timeout().unwrap_or_default(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed {
                op,
                path: subject.to_owned(),
                reason: lock(&self.dispatch.pending)
                    .closed
                    .clone()
                    .unwrap_or_else(|| "reader stopped".into()),
            }),
        }
    }

    pub(crate) fn unregister_watch(&self, q: &Arc<WatchQueue>) {
        lock(&self.dispatch.watches).remove(&q.wire_token);
    }
}

fn reader_loop(conn: File, wake: OwnedFd, dispatch: Arc<Dispatch>) {
    // Buffered: one read(2) usually brings a whole message, often several. Poll only when
    // nothing is left in the buffer.
    let mut conn = io::BufReader::with_capacity(2 * (wire::HEADER_LEN + PAYLOAD_MAX), conn);
    let reason = loop {
        if !conn.buffer().is_empty() {
            match wire::read_message(&mut conn) {
                Ok(Some(msg)) => {
                    if let Err(reason) = dispatch.deliver(msg) {
                        break reason;
                    }
                    continue;
                }
                Ok(None) => break "xenstored closed the connection".into(),
                Err(e) => break e.to_string(),
            }
        }
        let mut fds = [
            PollFd::new(conn.get_ref().as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break format!("poll failed: {e}"),
        }
        let woke = fds[1].revents().is_some_and(|r| !r.is_empty());
        let readable = fds[0].revents().is_some_and(|r| !r.is_empty());
        if woke {
            break "the client was dropped".into();
        }
        if !readable {
            continue;
        }
        match wire::read_message(&mut conn) {
            Ok(Some(msg)) => {
                if let Err(reason) = dispatch.deliver(msg) {
                    break reason;
                }
            }
            Ok(None) => break "xenstored closed the connection".into(),
            Err(e) => break e.to_string(),
        }
    };
    dispatch.close(reason);
}

/// Where to find the own domain id: the sources [`Client::own_domid_with`] consults after the
/// relative `domid` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomIdSources {
    /// The Xen capabilities file; containing `control_d` means "this is dom0".
    pub capabilities: PathBuf,
    /// The simulated host's `VCHAN_SIM_DOMID`, if set.
    pub sim_domid: Option<String>,
}

impl DomIdSources {
    /// `/proc/xen/capabilities` and the `VCHAN_SIM_DOMID` environment variable.
    pub fn from_env() -> DomIdSources {
        DomIdSources {
            capabilities: PathBuf::from("/proc/xen/capabilities"),
            sim_domid: std::env::var(crate::sim::ENV_DOMID).ok(),
        }
    }
}

/// A connection to xenstored. Cheap to clone (clones share the connection) and usable from
/// many threads at once: each request waits only for its own reply (matched by request id)
/// and watch events are routed to their [`Watch`] by the reader thread.
///
/// ```no_run
/// use vchan_xenif::xenstore::{Client, Perm};
/// use vchan_xenif::DomId;
///
/// # fn main() -> vchan_xenif::xenstore::Result<()> {
/// let xs = Client::connect()?;
/// let me = xs.own_domid()?;
/// let base = format!("/local/domain/{me}/data/vchan/7/5000");
/// xs.transaction(|tx| {
///     tx.write(&format!("{base}/ring-ref"), "8")?;
///     tx.write(&format!("{base}/event-channel"), "33")?;
///     for key in ["ring-ref", "event-channel"] {
///         tx.set_perms(&format!("{base}/{key}"), &[Perm::none(me), Perm::read(DomId(7))])?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(xs.read_string(&format!("{base}/ring-ref"))?, "8");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shared.endpoint)
            .finish()
    }
}

fn check_path(path: &str, special: bool) -> Result<()> {
    wire::check_path(path, special).map_err(|problem| Error::InvalidPath {
        path: path.to_owned(),
        problem,
    })
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn expect_string(op: MsgType, path: &str, payload: &[u8]) -> Result<String> {
    wire::parse_single_string(payload)
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol {
            op,
            path: path.to_owned(),
            reason: "reply is not one string".into(),
        })
}

impl Client {
    /// Connects the way libxenstore does, plus the simulated host:
    ///
    /// 1. `XENSTORED_PATH` if set and not empty (a socket or a device), and nothing else —
    ///    as in libxenstore, so that a wrong path is an error rather than a silent switch
    ///    to another xenstored;
    /// 2. else, with `VCHAN_SIM_DIR` and `VCHAN_SIM_DOMID` set, the simulated host's socket
    ///    for that domain;
    /// 3. else the dom0 socket `$XENSTORED_RUNDIR/socket` (default
    ///    `/var/run/xenstored/socket`), then the domU device `/dev/xen/xenbus`.
    ///
    /// The error lists every place tried and why each failed.
    pub fn connect() -> Result<Client> {
        if let Some(p) = std::env::var_os(ENV_XENSTORED_PATH).filter(|p| !p.is_empty()) {
            // Like libxenstore: an explicit path is the only one tried.
            return Self::connect_to(PathBuf::from(p));
        }
        if let (Some(dir), Ok(d)) = (
            std::env::var_os(crate::sim::ENV_DIR),
            std::env::var(crate::sim::ENV_DOMID),
        ) {
            let domid: DomId = d.parse().map_err(|e| Error::Connect {
                tried: vec![(
                    PathBuf::from(crate::sim::ENV_DOMID),
                    io::Error::new(io::ErrorKind::InvalidInput, e),
                )],
            })?;
            return Self::connect_sim(Path::new(&dir), domid);
        }
        let rundir = std::env::var_os(ENV_XENSTORED_RUNDIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNDIR));
        let mut tried = Vec::new();
        for p in [rundir.join("socket"), PathBuf::from(XENBUS_DEVICE)] {
            match Self::open(&p) {
                Ok(c) => return Ok(c),
                Err(e) => tried.push((p, e)),
            }
        }
        Err(Error::Connect { tried })
    }

    /// Connects to a given socket or XenBus-style device.
    pub fn connect_to(path: impl AsRef<Path>) -> Result<Client> {
        let p = path.as_ref();
        Self::open(p).map_err(|e| Error::Connect {
            tried: vec![(p.to_owned(), e)],
        })
    }

    /// Connects to the simulated host rooted at `dir`, acting as `domid`.
    pub fn connect_sim(dir: &Path, domid: DomId) -> Result<Client> {
        Self::connect_to(crate::sim::xenstore_socket(dir, domid))
    }

    fn open(path: &Path) -> io::Result<Client> {
        let meta = std::fs::metadata(path)?;
        let (conn, socket): (File, Option<UnixStream>) = if meta.file_type().is_socket() {
            let s = UnixStream::connect(path)?;
            let f = File::from(OwnedFd::from(s.try_clone()?));
            (f, Some(s))
        } else {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?;
            (f, None)
        };
        let reader = conn.try_clone()?;
        let (wake_r, wake_w) = nix::unistd::pipe().map_err(io::Error::from)?;
        let dispatch = Arc::new(Dispatch {
            pending: Mutex::new(Pending {
                map: HashMap::new(),
                closed: None,
            }),
            watches: Mutex::new(HashMap::new()),
            next_watch: AtomicU64::new(1),
        });
        let d2 = dispatch.clone();
        std::thread::Builder::new()
            .name("xenstore-reader".into())
            .spawn(move || reader_loop(reader, wake_r, d2))?;
        Ok(Client {
            shared: Arc::new(Shared {
                writer: Mutex::new(conn),
                dispatch,
                next_req: AtomicU32::new(1),
                timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
                endpoint: path.to_owned(),
                socket,
                _wake: wake_w,
            }),
        })
    }

    /// The socket or device this client is connected to.
    pub fn endpoint(&self) -> &Path {
        &self.shared.endpoint
    }

    /// Sets how long a request waits for its reply (`None`: forever). Default
    /// [`DEFAULT_TIMEOUT`]. Applies to every clone of this client.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.shared.timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The current request timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.shared.timeout()
    }

    fn req(&self, op: MsgType, tx: u32, payload: Vec<u8>, subject: &str) -> Result<Vec<u8>> {
        self.shared.request(op, tx, payload, subject)
    }

    fn ok(&self, op: MsgType, tx: u32, payload: Vec<u8>, subject: &str) -> Result<()> {
        self.req(op, tx, payload, subject).map(drop)
    }

    // ---- operations, shared by Client (tx 0) and Transaction -------------------------

    fn op_read(&self, tx: u32, path: &str) -> Result<Vec<u8>> {
        check_path(path, false)?;
        self.req(MsgType::Read, tx, with_nul(path), path)
    }

    fn op_write(&self, tx: u32, path: &str, value: &[u8]) -> Result<()> {
        check_path(path, false)?;
        let mut p = with_nul(path);
        p.extend_from_slice(value);
        self.ok(MsgType::Write, tx, p, path)
    }

    fn op_mkdir(&self, tx: u32, path: &str) -> Result<()> {
        check_path(path, false)?;
        self.ok(MsgType::Mkdir, tx, with_nul(path), path)
    }

    fn op_rm(&self, tx: u32, path: &str) -> Result<()> {
        check_path(path, false)?;
        self.ok(MsgType::Rm, tx, with_nul(path), path)
    }

    fn op_directory(&self, tx: u32, path: &str) -> Result<Vec<String>> {
        check_path(path, false)?;
        match self.req(MsgType::Directory, tx, with_nul(path), path) {
            Ok(p) => wire::parse_string_list(&p).ok_or_else(|| Error::Protocol {
                op: MsgType::Directory,
                path: path.to_owned(),
                reason: "malformed name list".into(),
            }),
            Err(e) if e.code() == Some(ErrorCode::E2BIG) => self.directory_parts(tx, path),
            Err(e) => Err(e),
        }
    }

    /// Reads a directory too large for one message with `DIRECTORY_PART`, restarting when
    /// the node's generation changes underneath.
    fn directory_parts(&self, tx: u32, path: &str) -> Result<Vec<String>> {
        const RESTARTS: usize = 16;
        let bad = |reason: &str| Error::Protocol {
            op: MsgType::DirectoryPart,
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        'restart: for _ in 0..RESTARTS {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<String> = None;
            loop {
                let mut p = with_nul(path);
                p.extend_from_slice(offset.to_string().as_bytes());
                p.push(0);
                let reply = self.req(MsgType::DirectoryPart, tx, p, path)?;
                let (g, part, done) = wire::parse_directory_part(&reply)
                    .ok_or_else(|| bad("malformed DIRECTORY_PART reply"))?;
                match &generation {
                    None => generation = Some(g),
                    Some(prev) if *prev != g => continue 'restart,
                    Some(_) => {}
                }
                let advance: usize = part.iter().map(|n| n.len() + 1).sum();
                names.extend(part);
                if done {
                    return Ok(names);
                }
                if advance == 0 {
                    return Err(bad("DIRECTORY_PART made no progress"));
                }
                offset += advance;
                if offset > MAX_DIRECTORY_BYTES {
                    return Err(bad(
                        "the child list exceeds 16 MiB; refusing to read further",
                    ));
                }
            }
        }
        Err(bad("the directory kept changing while being listed"))
    }

    fn op_get_perms(&self, tx: u32, path: &str) -> Result<Vec<Perm>> {
        check_path(path, true)?;
        let p = self.req(MsgType::GetPerms, tx, with_nul(path), path)?;
        wire::parse_perm_list(&p).ok_or_else(|| Error::Protocol {
            op: MsgType::GetPerms,
            path: path.to_owned(),
            reason: "malformed permission list".into(),
        })
    }

    fn op_set_perms(&self, tx: u32, path: &str, perms: &[Perm]) -> Result<()> {
        check_path(path, true)?;
        if perms.is_empty() {
            return Err(Error::InvalidArgument {
                op: MsgType::SetPerms,
                path: path.to_owned(),
                reason: "a permission list needs at least the owner entry".into(),
            });
        }
        let mut p = with_nul(path);
        p.extend_from_slice(&wire::perm_list_payload(perms));
        self.ok(MsgType::SetPerms, tx, p, path)
    }

    fn op_exists(&self, tx: u32, path: &str) -> Result<bool> {
        match self.op_read(tx, path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- public API ------------------------------------------------------------------

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.op_read(0, path)
    }

    /// Reads a node's value as UTF-8 text.
    pub fn read_string(&self, path: &str) -> Result<String> {
        let v = self.read(path)?;
        String::from_utf8(v).map_err(|_| Error::InvalidArgument {
            op: MsgType::Read,
            path: path.to_owned(),
            reason: "the value is not UTF-8 text".into(),
        })
    }

    /// Reads a node's value; `None` if it does not exist.
    pub fn try_read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a node exists (and is readable).
    pub fn exists(&self, path: &str) -> Result<bool> {
        self.op_exists(0, path)
    }

    /// Writes a node's value, creating it and missing parents (which inherit their parent's
    /// permissions).
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.op_write(0, path, value.as_ref())
    }

    /// Creates a node with an empty value; succeeds if it exists.
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.op_mkdir(0, path)
    }

    /// Removes a node and everything below it; succeeds if it is already gone (but its
    /// parent exists).
    pub fn rm(&self, path: &str) -> Result<()> {
        self.op_rm(0, path)
    }

    /// Lists a node's children (using `DIRECTORY_PART` when the list exceeds one message).
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.op_directory(0, path)
    }

    /// Reads a node's permissions (owner first).
    pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        self.op_get_perms(0, path)
    }

    /// Replaces a node's permissions (owner first). Only the owner (or dom0) may, and an
    /// unprivileged owner cannot give the node away.
    pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        self.op_set_perms(0, path, perms)
    }

    /// A domain's home path (`/local/domain/<id>`).
    pub fn get_domain_path(&self, domid: DomId) -> Result<String> {
        let s = domid.to_string();
        let p = self.req(MsgType::GetDomainPath, 0, with_nul(&s), &s)?;
        expect_string(MsgType::GetDomainPath, &s, &p)
    }

    /// Introduces a domain (dom0 only). On the simulated host this creates the domain.
    pub fn introduce(&self, domid: DomId, mfn: u64, port: u32) -> Result<()> {
        let payload = wire::join_strings(&[domid.to_string(), mfn.to_string(), port.to_string()]);
        self.ok(MsgType::Introduce, 0, payload, &domid.to_string())
    }

    /// Releases a domain (dom0 only). On the simulated host this destroys it.
    pub fn release(&self, domid: DomId) -> Result<()> {
        let s = domid.to_string();
        self.ok(MsgType::Release, 0, with_nul(&s), &s)
    }

    /// Whether a domain is introduced (dom0 only).
    pub fn is_domain_introduced(&self, domid: DomId) -> Result<bool> {
        let s = domid.to_string();
        let p = self.req(MsgType::IsDomainIntroduced, 0, with_nul(&s), &s)?;
        match expect_string(MsgType::IsDomainIntroduced, &s, &p)?.as_str() {
            "T" => Ok(true),
            "F" => Ok(false),
            other => Err(Error::Protocol {
                op: MsgType::IsDomainIntroduced,
                path: s.clone(),
                reason: format!("expected T or F, got {other:?}"),
            }),
        }
    }

    /// Registers a watch on `path` (or a special path such as `@releaseDomain`) with
    /// `token`. The first event fires at once with the watched path itself; later ones
    /// report changes of the node or anything below it that this domain may read.
    ///
    /// Every call is a separate registration (xenstored sees `token#<serial>`), so two
    /// watches may share a token, even on overlapping paths, and each gets its own events.
    pub fn watch(&self, path: &str, token: &str) -> Result<Watch> {
        check_path(path, true)?;
        if token.contains('\0') {
            return Err(Error::InvalidArgument {
                op: MsgType::Watch,
                path: path.to_owned(),
                reason: "the token contains a NUL byte".into(),
            });
        }
        // The token xenstored sees is the caller's plus a per-client serial number, so that
        // events of watches with the same token on overlapping paths are not confused.
        let serial = self
            .shared
            .dispatch
            .next_watch
            .fetch_add(1, Ordering::Relaxed);
        let wire_token = format!("{token}#{serial}");
        let queue =
            Arc::new(WatchQueue::new(path, token, &wire_token).map_err(|e| Error::Wire(e.into()))?);
        // Register first, so the event fired at registration is not lost.
        lock(&self.shared.dispatch.watches).insert(wire_token.clone(), queue.clone());
        let payload = wire::join_strings(&[path, wire_token.as_str()]);
        if let Err(e) = self.req(MsgType::Watch, 0, payload, path) {
            self.shared.unregister_watch(&queue);
            return Err(e);
        }
        Ok(Watch {
            shared: self.shared.clone(),
            queue,
        })
    }

    /// Starts a transaction; prefer [`Client::transaction`], which retries conflicts.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        let p = self.req(MsgType::TransactionStart, 0, vec![0], "")?;
        let s = expect_string(MsgType::TransactionStart, "", &p)?;
        let id = wire::parse_decimal(s.as_bytes())
            .filter(|&id| id != 0)
            .ok_or_else(|| Error::Protocol {
                op: MsgType::TransactionStart,
                path: String::new(),
                reason: format!("transaction id {s:?} is not a non-zero number"),
            })?;
        Ok(Transaction {
            client: self,
            id,
            finished: false,
        })
    }

    /// Runs `body` in a transaction and commits it, running it again from the start when
    /// xenstored answers `EAGAIN` (another writer touched what the transaction read), up to
    /// [`TRANSACTION_ATTEMPTS`] times. Any other error aborts the transaction and is returned.
    pub fn transaction<T>(&self, mut body: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let tx = self.begin()?;
            let value = match body(&tx) {
                Ok(v) => v,
                Err(e) if e.is_conflict() => {
                    let _ = tx.abort();
                    backoff(attempt);
                    continue;
                }
                Err(e) => {
                    let _ = tx.abort();
                    return Err(e);
                }
            };
            match tx.commit() {
                Ok(()) => return Ok(value),
                Err(e) if e.is_conflict() => backoff(attempt),
                Err(e) => return Err(e),
            }
        }
        Err(Error::TooManyRetries {
            attempts: TRANSACTION_ATTEMPTS,
        })
    }

    /// This domain's id: see [`Client::own_domid_with`]; the sources are
    /// `/proc/xen/capabilities` and `VCHAN_SIM_DOMID`.
    pub fn own_domid(&self) -> Result<DomId> {
        self.own_domid_with(&DomIdSources::from_env())
    }

    /// This domain's id, found by, in order:
    ///
    /// 1. the relative key `domid` (written by the toolstack as `/local/domain/<id>/domid`);
    /// 2. `sources.capabilities` containing `control_d`: the control domain, 0;
    /// 3. the owner of nodes in the own home directory (`GET_PERMS` on the relative paths
    ///    `data`, `device`, `control`, `name`): a domain owns its `data`, and nodes dom0
    ///    created for it name it in their permissions;
    /// 4. on the simulated host, `sources.sim_domid` (`VCHAN_SIM_DOMID`).
    ///
    /// Xen 4.2's libxenvchan only did step 1 and failed in a dom0 whose toolstack had not
    /// written the key. If every step fails, the error lists what each one found.
    pub fn own_domid_with(&self, sources: &DomIdSources) -> Result<DomId> {
        let mut tried = Vec::new();
        match self.read("domid") {
            Ok(v) => match std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<DomId>().ok())
            {
                Some(d) => return Ok(d),
                None => tried.push(format!(
                    "relative key `domid` holds {:?}, not a domain id",
                    String::from_utf8_lossy(&v)
                )),
            },
            Err(e) => tried.push(format!("relative key `domid`: {e}")),
        }
        match std::fs::read_to_string(&sources.capabilities) {
            Ok(s)
                if s.split(|c: char| c == ',' || c.is_whitespace())
                    .any(|w| w == "control_d") =>
            {
                return Ok(DomId::DOM0);
            }
            Ok(_) => tried.push(format!(
                "{}: no `control_d` (not the control domain)",
                sources.capabilities.display()
            )),
            Err(e) => tried.push(format!("{}: {e}", sources.capabilities.display())),
        }
        for rel in ["data", "device", "control", "name"] {
            match self.get_perms(rel) {
                Ok(perms) => {
                    let owner = perms[0].domid;
                    if owner != DomId::DOM0 {
                        return Ok(owner);
                    }
                    let mut others: Vec<DomId> = perms[1..]
                        .iter()
                        .map(|p| p.domid)
                        .filter(|d| *d != DomId::DOM0)
                        .collect();
                    others.dedup();
                    match others.as_slice() {
                        // Readable although dom0 owns it and lists nobody else: privileged.
                        [] => return Ok(DomId::DOM0),
                        [one] => return Ok(*one),
                        _ => tried.push(format!(
                            "owner of relative `{rel}`: ambiguous permissions {}",
                            perms
                                .iter()
                                .map(Perm::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        )),
                    }
                }
                Err(e) => tried.push(format!("owner of relative `{rel}`: {e}")),
            }
        }
        match &sources.sim_domid {
            Some(s) => match s.parse::<DomId>() {
                Ok(d) => return Ok(d),
                Err(e) => tried.push(format!("{}: {e}", crate::sim::ENV_DOMID)),
            },
            None => tried.push(format!("{} is not set", crate::sim::ENV_DOMID)),
        }
        Err(Error::UnknownDomId { tried })
    }
}

fn backoff(attempt: u32) {
    // Short, growing pauses so that contending writers interleave instead of colliding.
    let micros = 50u64 << attempt.min(10);
    std::thread::sleep(Duration::from_micros(micros.min(20_000)));
}

/// An open transaction. Operations see the transaction's own writes and a stable view of
/// what they read; [`Transaction::commit`] fails with `EAGAIN` ([`Error::is_conflict`]) if
/// anything it looked at changed meanwhile. Dropping it without committing aborts it.
pub struct Transaction<'c> {
    client: &'c Client,
    id: u32,
    finished: bool,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("id", &self.id).finish()
    }
}

impl Transaction<'_> {
    /// The transaction id xenstored assigned.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.client.op_read(self.id, path)
    }

    /// Reads a node's value as UTF-8 text.
    pub fn read_string(&self, path: &str) -> Result<String> {
        let v = self.read(path)?;
        String::from_utf8(v).map_err(|_| Error::InvalidArgument {
            op: MsgType::Read,
            path: path.to_owned(),
            reason: "the value is not UTF-8 text".into(),
        })
    }

    /// Whether a node exists (and is readable).
    pub fn exists(&self, path: &str) -> Result<bool> {
        self.client.op_exists(self.id, path)
    }

    /// Writes a node's value.
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.client.op_write(self.id, path, value.as_ref())
    }

    /// Creates a node with an empty value.
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.client.op_mkdir(self.id, path)
    }

    /// Removes a node and everything below it.
    pub fn rm(&self, path: &str) -> Result<()> {
        self.client.op_rm(self.id, path)
    }

    /// Lists a node's children.
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.client.op_directory(self.id, path)
    }

    /// Reads a node's permissions.
    pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        self.client.op_get_perms(self.id, path)
    }

    /// Replaces a node's permissions.
    pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        self.client.op_set_perms(self.id, path, perms)
    }

    fn end(mut self, commit: bool) -> Result<()> {
        self.finished = true;
        let flag = if commit { "T" } else { "F" };
        self.client
            .ok(MsgType::TransactionEnd, self.id, with_nul(flag), "")
    }

    /// Commits. `EAGAIN` ([`Error::is_conflict`]) means: run the whole transaction again.
    pub fn commit(self) -> Result<()> {
        self.end(true)
    }

    /// Aborts, discarding every change.
    pub fn abort(self) -> Result<()> {
        self.end(false)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .client
                .ok(MsgType::TransactionEnd, self.id, with_nul("F"), "");
        }
    }
}
