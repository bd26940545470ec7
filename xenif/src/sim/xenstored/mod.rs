//! The simulated xenstored: the XenStore wire protocol served on one Unix socket per
//! simulated domain (`<dir>/dom<N>/xenstored.sock`); a connection acts as the domain whose
//! socket it came through, and dom0's socket is privileged.
//!
//! The protocol semantics live in [`store`] (pure state machine); this module owns the
//! sockets and threads: one accept thread per domain, and per connection a reader thread
//! (requests are handled one at a time under the store lock; it writes the reply itself when
//! nothing else is queued for that connection) and a writer thread draining the connection's
//! outbound queue (watch events caused by others, replies behind them), so that a client that
//! stops reading can never block the daemon or other clients. A connection whose queue exceeds [`OUTBOX_LIMIT`] messages is
//! closed, as is one that sends a malformed frame (over-long payload, truncated header).
//!
//! Each process keeps its connection for its lifetime: EOF means the client is gone, and its
//! watches and transactions are dropped.

pub mod store;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use crate::sim::host::DomainHooks;
use crate::types::DomId;
use crate::xenstore::wire::{self, ErrorCode, Message};

pub use store::{ConnId, Quotas, Store};

/// Messages a connection may have queued before it is considered stuck and closed.
pub const OUTBOX_LIMIT: usize = 8192;

/// Longest path a Unix socket can be bound at (`sizeof(sun_path) - 1` on Linux).
const SUN_PATH_MAX: usize = 107;

/// Connections one simulated domain may hold open at once (further ones are closed at
/// accept), so that a hostile domain cannot exhaust the host's threads.
pub const MAX_CONNECTIONS_PER_DOMAIN: usize = 256;

/// A running simulated xenstored.
#[derive(Debug, Clone)]
pub struct Xenstored {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xenstored").field("dir", &self.dir).finish()
    }
}

struct State {
    store: Store,
    net: Net,
}

struct Net {
    dir: PathBuf,
    weak: Weak<Inner>,
    hooks: Vec<Arc<dyn DomainHooks>>,
    listeners: HashMap<DomId, Listener>,
    conns: HashMap<ConnId, ConnHandle>,
    new_threads: Vec<JoinHandle<()>>,
    stopping: bool,
}

struct Listener {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

struct ConnHandle {
    domid: DomId,
    stream: UnixStream,
    out: Arc<Outbox>,
}

impl ConnHandle {
    fn close(&self) {
        self.out.close();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn send(&self, m: &Message) {
        if !self.out.push(m.encode()) {
            self.close();
        }
    }
}

/// A connection's outbound messages. Whoever writes to the socket holds `writing`: the
/// writer thread draining the queue, or the connection's own reader thread sending a reply
/// directly when nothing is queued (the common case, which saves a thread hand-off).
#[derive(Default)]
struct Outbox {
    q: Mutex<OutState>,
    cv: Condvar,
}

#[derive(Default)]
struct OutState {
    queue: VecDeque<Vec<u8>>,
    closed: bool,
    writing: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; `false` if the queue is full (the client does not read).
    fn push(&self, buf: Vec<u8>) -> bool {
        let mut g = self.lock();
        if g.closed {
            return true;
        }
        if g.queue.len() >= OUTBOX_LIMIT {
            return false;
        }
        g.queue.push_back(buf);
        self.cv.notify_all();
        true
    }

    /// Takes the right to write directly, if nothing is queued or being written.
    fn try_reserve(&self) -> bool {
        let mut g = self.lock();
        if g.closed || g.writing || !g.queue.is_empty() {
            return false;
        }
        g.writing = true;
        true
    }

    /// Gives back the right taken by `try_reserve` (or `pop_all`).
    fn release(&self) {
        self.lock().writing = false;
        self.cv.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Everything queued, concatenated, with the right to write it (give it back with
    /// `release`); `None` once closed.
    fn pop_all(&self) -> Option<Vec<u8>> {
        let mut g = self.lock();
        loop {
            if g.closed {
                return None;
            }
            if !g.queue.is_empty() && !g.writing {
                let mut buf = Vec::new();
                for m in g.queue.drain(..) {
                    buf.extend_from_slice(&m);
                }
                g.writing = true;
                return Some(buf);
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Net {
    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let h = std::thread::Builder::new().name(name).spawn(f)?;
        self.new_threads.push(h);
        Ok(())
    }

    fn deliver(&self, events: &[(ConnId, Message)]) {
        for (c, m) in events {
            if let Some(h) = self.conns.get(c) {
                h.send(m);
            }
        }
    }

    fn close_conn(&mut self, c: ConnId) {
        if let Some(h) = self.conns.remove(&c) {
            h.close();
        }
    }

    fn stop_listener(&mut self, domid: DomId) {
        if let Some(l) = self.listeners.remove(&domid) {
            l.stop.store(true, Ordering::SeqCst);
            // Wake the accept thread; it sees the flag and exits.
            let _ = UnixStream::connect(&l.path);
            let _ = std::fs::remove_file(&l.path);
        }
    }
}

impl store::DomainControl for Net {
    fn create(&mut self, domid: DomId) -> Result<(), String> {
        if self.stopping {
            return Err("the host is stopping".into());
        }
        let ddir = super::domain_dir(&self.dir, domid);
        std::fs::create_dir_all(&ddir).map_err(|e| format!("mkdir {}: {e}", ddir.display()))?;
        let sock = super::xenstore_socket(&self.dir, domid);
        let len = sock.as_os_str().len();
        if len > SUN_PATH_MAX {
            return Err(format!(
                "{} is {len} bytes long, over the {SUN_PATH_MAX}-byte limit of Unix socket \
                 paths: choose a shorter host directory",
                sock.display()
            ));
        }
        let _ = std::fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let weak = self.weak.clone();
        let stop2 = stop.clone();
        self.spawn(format!("xs-accept-{domid}"), move || {
            accept_loop(weak, listener, domid, stop2)
        })
        .map_err(|e| format!("spawn accept thread: {e}"))?;
        self.listeners.insert(domid, Listener { path: sock, stop });
        for (i, h) in self.hooks.iter().enumerate() {
            if let Err(e) = h.domain_created(domid, &ddir) {
                for h in &self.hooks[..i] {
                    h.domain_released(domid);
                }
                self.stop_listener(domid);
                let _ = std::fs::remove_dir_all(&ddir);
                return Err(format!("domain hook failed: {e}"));
            }
        }
        Ok(())
    }

    fn release(&mut self, domid: DomId) {
        self.stop_listener(domid);
        let gone: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, h)| h.domid == domid)
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.close_conn(c);
        }
        for h in self.hooks.iter().rev() {
            h.domain_released(domid);
        }
        let _ = std::fs::remove_dir_all(super::domain_dir(&self.dir, domid));
    }
}

fn accept_loop(weak: Weak<Inner>, listener: UnixListener, domid: DomId, stop: Arc<AtomicBool>) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.register(domid, stream);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>, domid: DomId, stream: UnixStream) {
        let mut st = self.lock();
        let State { store, net } = &mut *st;
        if net.stopping || !store.is_introduced(domid) {
            return;
        }
        if net.conns.values().filter(|h| h.domid == domid).count() >= MAX_CONNECTIONS_PER_DOMAIN {
            return;
        }
        let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
            return;
        };
        let cid = store.connect(domid);
        let out = Arc::new(Outbox::default());
        net.conns.insert(
            cid,
            ConnHandle {
                domid,
                stream,
                out: out.clone(),
            },
        );
        let me = self.clone();
        let out2 = out.clone();
        let ok_r = net
            .spawn(format!("xs-conn-{cid}"), move || me.serve(cid, reader))
            .is_ok();
        let ok_w = net
            .spawn(format!("xs-out-{cid}"), move || write_loop(writer, out2))
            .is_ok();
        if !(ok_r && ok_w) {
            store.disconnect(cid);
            net.close_conn(cid);
        }
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|h| !h.is_finished());
        threads.append(&mut net.new_threads);
    }

    fn serve(&self, cid: ConnId, stream: UnixStream) {
        // Buffered: one read(2) usually brings a whole message, often several.
        let mut input =
            io::BufReader::with_capacity(2 * (wire::HEADER_LEN + wire::PAYLOAD_MAX), stream);
        while let Ok(Some(msg)) = wire::read_message(&mut input) {
            let stream = input.get_ref();
            let mut st = self.lock();
            let State { store, net } = &mut *st;
            if !net.conns.contains_key(&cid) {
                break;
            }
            let out = store.handle(cid, &msg, net);
            // Fast path: nothing queued for this connection, so write the reply (and the
            // events this request caused for it) ourselves, in order, after unlocking.
            let mut direct: Option<(Arc<Outbox>, Vec<u8>)> = None;
            if let Some(conn) = net.conns.get(&cid) {
                if conn.out.try_reserve() {
                    let mut buf = out.reply.encode();
                    for (c, m) in &out.events {
                        if *c == cid {
                            m.encode_into(&mut buf);
                        }
                    }
                    direct = Some((conn.out.clone(), buf));
                } else {
                    conn.send(&out.reply);
                }
            }
            for (c, m) in &out.events {
                if direct.is_none() || *c != cid {
                    if let Some(h) = net.conns.get(c) {
                        h.send(m);
                    }
                }
            }
            for c in out.close {
                net.close_conn(c);
            }
            self.adopt_threads(net);
            drop(st);
            if let Some((outbox, buf)) = direct {
                let ok = { stream }.write_all(&buf).is_ok();
                outbox.release();
                if !ok {
                    break;
                }
            }
        }
        let mut st = self.lock();
        st.store.disconnect(cid);
        st.net.close_conn(cid);
    }

    fn adopt_threads(&self, net: &mut Net) {
        if !net.new_threads.is_empty() {
            let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            threads.append(&mut net.new_threads);
        }
    }
}

fn write_loop(mut stream: UnixStream, out: Arc<Outbox>) {
    while let Some(buf) = out.pop_all() {
        let ok = stream.write_all(&buf).is_ok();
        out.release();
        if !ok {
            break;
        }
    }
    out.close();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

impl Xenstored {
    /// Starts serving under `dir` with dom0 introduced (its socket bound, `hooks` told).
    pub fn start(
        dir: &Path,
        quotas: Quotas,
        hooks: Vec<Arc<dyn DomainHooks>>,
    ) -> Result<Xenstored, String> {
        let inner = Arc::new_cyclic(|weak| Inner {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                store: Store::new(quotas),
                net: Net {
                    dir: dir.to_owned(),
                    weak: weak.clone(),
                    hooks,
                    listeners: HashMap::new(),
                    conns: HashMap::new(),
                    new_threads: Vec::new(),
                    stopping: false,
                },
            }),
            threads: Mutex::new(Vec::new()),
        });
        {
            // The store introduced dom0 logically; make it reachable.
            let mut st = inner.lock();
            let State { net, .. } = &mut *st;
            store::DomainControl::create(net, DomId::DOM0)?;
            inner.adopt_threads(net);
        }
        Ok(Xenstored { inner })
    }

    /// Introduces a domain as dom0's `INTRODUCE` would, then sets its name.
    pub fn introduce(&self, domid: DomId, name: Option<&str>) -> Result<(), ErrorCode> {
        let mut st = self.inner.lock();
        let State { store, net } = &mut *st;
        let mut events = Vec::new();
        let r = store.introduce(domid, name, net, &mut events);
        net.deliver(&events);
        self.inner.adopt_threads(net);
        r
    }

    /// Releases a domain as dom0's `RELEASE` would.
    pub fn release(&self, domid: DomId) -> Result<(), ErrorCode> {
        let mut st = self.inner.lock();
        let State { store, net } = &mut *st;
        let mut events = Vec::new();
        let mut close = Vec::new();
        let r = store.release(domid, net, &mut events, &mut close);
        net.deliver(&events);
        for c in close {
            net.close_conn(c);
        }
        r
    }

    /// Introduced domains.
    pub fn domains(&self) -> Vec<DomId> {
        self.inner.lock().store.domains()
    }

    /// Open client connections.
    pub fn connection_count(&self) -> usize {
        self.inner.lock().store.connection_count()
    }

    /// Stops serving: closes every listener and connection, tells the hooks every domain is
    /// gone, removes the sockets and waits for the threads.
    pub fn stop(&self) {
        {
            let mut st = self.inner.lock();
            let State { store, net } = &mut *st;
            if net.stopping {
                return;
            }
            net.stopping = true;
            let domains = store.domains();
            for d in domains.iter().rev() {
                net.stop_listener(*d);
            }
            let conns: Vec<ConnId> = net.conns.keys().copied().collect();
            for c in conns {
                store.disconnect(c);
                net.close_conn(c);
            }
            for d in domains.iter().rev() {
                for h in net.hooks.iter().rev() {
                    h.domain_released(*d);
                }
                let _ = std::fs::remove_dir_all(super::domain_dir(&net.dir, *d));
            }
            self.inner.adopt_threads(net);
        }
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}
