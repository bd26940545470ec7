//! The XenStore state machine of the simulated xenstored: node tree, permissions, watches,
//! transactions, quotas and domains. No I/O: [`Store::handle`] turns one request into a reply,
//! the watch events it causes and the connections to close, so it can be driven by the socket
//! server, by unit tests and by the fuzzer alike.
//!
//! Semantics follow Xen's C xenstored (4.17):
//! * permissions: the first entry names the owner (full access) and the default for everyone
//!   else; later entries give specific domains access; dom0 is privileged; a device-model
//!   domain given a target by `SET_TARGET` acts as its target for permission checks;
//! * a missing node answers `ENOENT` if its nearest existing ancestor is readable, `EACCES`
//!   otherwise (so a domain cannot probe what it cannot read); creating a node needs write
//!   permission there; new nodes inherit their parent's permissions, and an unprivileged
//!   creator becomes the owner;
//! * watches fire once on registration, then for changes of the node or its descendants (and
//!   for removed descendants watched exactly), only to connections that may read the node;
//!   relative watches get relative event paths; `@introduceDomain`/`@releaseDomain` go to
//!   privileged connections and to domains the special node's permissions let read;
//! * transactions see their own writes; a commit fails with `EAGAIN` if any node the
//!   transaction looked at changed since it first looked;
//! * quotas (for unprivileged domains) answer `ENOSPC`, except the watch quota: `E2BIG`.

use std::collections::{BTreeSet, HashMap};

use crate::types::DomId;
use crate::xenstore::wire::{
    self, ErrorCode, INTRODUCE_DOMAIN, Message, MsgType, PAYLOAD_MAX, Perm, PermAccess,
    RELEASE_DOMAIN, Request,
};

/// Limits applied to unprivileged domains (Xen 4.17 defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`-E`, default 1000).
    pub nodes_per_domain: usize,
    /// Watches a domain may register (`-W`, default 128).
    pub watches_per_domain: usize,
    /// Transactions open at once per connection (`-t`, default 10).
    pub transactions_per_connection: usize,
    /// Permission entries per node (`-A`, default 5).
    pub perms_per_node: usize,
    /// Bytes in one node's value (`-S`, default 2048).
    pub value_size: usize,
    /// Distinct nodes one transaction may access (the `transaction-nodes` quota, default
    /// 1024): a transaction remembers every node it read or wrote, so without this bound a
    /// domain could make the daemon's memory grow without limit (XSA-326).
    pub transaction_nodes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            nodes_per_domain: 1000,
            watches_per_domain: 128,
            transactions_per_connection: 10,
            perms_per_node: 5,
            value_size: 2048,
            transaction_nodes: 1024,
        }
    }
}

/// Identifies one client connection.
pub type ConnId = u64;

/// Side effects of domain introduction and release that live outside the store (sockets,
/// the grant/event-channel broker). Called with the store locked.
pub trait DomainControl {
    /// A domain is being introduced: make it reachable. An error fails the `INTRODUCE`.
    fn create(&mut self, domid: DomId) -> Result<(), String>;
    /// A domain was released: tear down what `create` set up.
    fn release(&mut self, domid: DomId);
}

/// A [`DomainControl`] that does nothing (pure-store tests, the fuzzer).
#[derive(Debug, Default)]
pub struct NoDomainControl;

impl DomainControl for NoDomainControl {
    fn create(&mut self, _domid: DomId) -> Result<(), String> {
        Ok(())
    }
    fn release(&mut self, _domid: DomId) {}
}

/// What handling one request produced.
#[derive(Debug)]
pub struct Output {
    /// The reply to send on the requesting connection.
    pub reply: Message,
    /// Watch events to send, in order, each on its connection.
    pub events: Vec<(ConnId, Message)>,
    /// Connections to close (those of a released domain).
    pub close: Vec<ConnId>,
}

#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    children: Vec<String>,
    generation: u64,
}

impl Node {
    fn new(value: Vec<u8>, perms: Vec<Perm>) -> Node {
        Node {
            value,
            perms,
            children: Vec::new(),
            generation: 0,
        }
    }

    fn owner(&self) -> DomId {
        self.perms.first().map_or(DomId::DOM0, |p| p.domid)
    }
}

#[derive(Debug, Default)]
struct Tree {
    nodes: HashMap<String, Node>,
    owned: HashMap<DomId, usize>,
    next_generation: u64,
}

impl Tree {
    fn put(&mut self, path: &str, mut node: Node) {
        self.next_generation += 1;
        node.generation = self.next_generation;
        let new_owner = node.owner();
        if let Some(old) = self.nodes.insert(path.to_owned(), node) {
            self.dec(old.owner());
        }
        *self.owned.entry(new_owner).or_default() += 1;
    }

    fn remove(&mut self, path: &str) {
        if let Some(old) = self.nodes.remove(path) {
            self.dec(old.owner());
        }
    }

    fn dec(&mut self, d: DomId) {
        if let Some(c) = self.owned.get_mut(&d) {
            *c = c.saturating_sub(1);
        }
    }
}

#[derive(Debug)]
struct TxEntry {
    base_generation: Option<u64>,
    node: Option<Node>,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Transaction {
    entries: HashMap<String, TxEntry>,
    owned_delta: HashMap<DomId, i64>,
    changes: Vec<Change>,
}

/// A modification that may fire watches.
#[derive(Clone, Debug)]
struct Change {
    path: String,
    /// Only watches on exactly this path (removed descendants); else this path and ancestors.
    exact: bool,
    /// Permissions deciding who may hear of it (before removal for removed nodes).
    perms: Vec<Perm>,
}

/// A node view: the tree itself, or a transaction's overlay on it.
struct View<'a> {
    tree: &'a mut Tree,
    tx: Option<&'a mut Transaction>,
}

impl View<'_> {
    fn get(&mut self, path: &str) -> Option<Node> {
        match self.tx.as_deref_mut() {
            None => self.tree.nodes.get(path).cloned(),
            Some(tx) => {
                if let Some(e) = tx.entries.get(path) {
                    return e.node.clone();
                }
                let node = self.tree.nodes.get(path).cloned();
                tx.entries.insert(
                    path.to_owned(),
                    TxEntry {
                        base_generation: node.as_ref().map(|n| n.generation),
                        node: node.clone(),
                        dirty: false,
                    },
                );
                node
            }
        }
    }

    fn set(&mut self, path: &str, node: Option<Node>) {
        match self.tx.as_deref_mut() {
            None => match node {
                Some(n) => self.tree.put(path, n),
                None => self.tree.remove(path),
            },
            Some(tx) => {
                let base = self.tree.nodes.get(path);
                let entry = tx
                    .entries
                    .entry(path.to_owned())
                    .or_insert_with(|| TxEntry {
                        base_generation: base.map(|n| n.generation),
                        node: base.cloned(),
                        dirty: false,
                    });
                if let Some(old) = &entry.node {
                    *tx.owned_delta.entry(old.owner()).or_default() -= 1;
                }
                if let Some(new) = &node {
                    *tx.owned_delta.entry(new.owner()).or_default() += 1;
                }
                entry.node = node;
                entry.dirty = true;
            }
        }
    }

    fn owned(&self, d: DomId) -> usize {
        let base = self.tree.owned.get(&d).copied().unwrap_or(0);
        let delta = self
            .tx
            .as_deref()
            .and_then(|t| t.owned_delta.get(&d).copied())
            .unwrap_or(0);
        usize::try_from(
            i64::try_from(base)
                .unwrap_or(i64::MAX)
                .saturating_add(delta),
        )
        .unwrap_or(0)
    }
}

#[derive(Debug)]
struct WatchReg {
    /// The path as registered (relative or absolute or special).
    given: String,
    /// Absolute (or special) path.
    abs: String,
    token: String,
}

#[derive(Debug)]
struct Conn {
    domid: DomId,
    transactions: HashMap<u32, Transaction>,
    watches: Vec<WatchReg>,
}

/// Access rights a connection has on a node.
#[derive(Clone, Copy, Debug)]
struct Rights {
    read: bool,
    write: bool,
    owner: bool,
}

/// The simulated xenstored's state.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    next_tx: u32,
    domains: BTreeSet<DomId>,
    targets: HashMap<DomId, DomId>,
    special_perms: HashMap<&'static str, Vec<Perm>>,
    quotas: Quotas,
}

/// The home path of a domain.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn base_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `path` is `ancestor` or below it.
fn is_child(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.len() > ancestor.len()
            && path.starts_with(ancestor)
            && path.as_bytes()[ancestor.len()] == b'/')
}

fn ok_payload() -> Vec<u8> {
    b"OK\0".to_vec()
}

impl Store {
    /// A store with the initial tree (`/`, `/local`, `/local/domain`, `/tool`) and dom0
    /// introduced (`/local/domain/0/{domid,name}`).
    pub fn new(quotas: Quotas) -> Store {
        let mut s = Store {
            tree: Tree::default(),
            conns: HashMap::new(),
            next_conn: 1,
            next_tx: 1,
            domains: BTreeSet::new(),
            targets: HashMap::new(),
            special_perms: HashMap::new(),
            quotas,
        };
        let n0 = vec![Perm::none(DomId::DOM0)];
        for p in ["/", "/local", "/local/domain", "/tool"] {
            let mut node = Node::new(Vec::new(), n0.clone());
            node.children = match p {
                "/" => vec!["local".into(), "tool".into()],
                "/local" => vec!["domain".into()],
                _ => Vec::new(),
            };
            s.tree.put(p, node);
        }
        s.special_perms.insert(INTRODUCE_DOMAIN, n0.clone());
        s.special_perms.insert(RELEASE_DOMAIN, n0);
        let mut events = Vec::new();
        // Dom0 cannot fail to be created: NoDomainControl never fails.
        let _ = s.introduce(
            DomId::DOM0,
            Some("Domain-0"),
            &mut NoDomainControl,
            &mut events,
        );
        s
    }

    /// The quotas in force.
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Registers a new connection acting as `domid`.
    pub fn connect(&mut self, domid: DomId) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                domid,
                transactions: HashMap::new(),
                watches: Vec::new(),
            },
        );
        id
    }

    /// Forgets a connection: its watches and open transactions are dropped.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Whether `domid` is introduced (dom0 always is).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.domains.contains(&domid)
    }

    /// Introduced domains, in order.
    pub fn domains(&self) -> Vec<DomId> {
        self.domains.iter().copied().collect()
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn rights(&self, me: DomId, perms: &[Perm]) -> Rights {
        let all = Rights {
            read: true,
            write: true,
            owner: true,
        };
        if me == DomId::DOM0 {
            return all;
        }
        let target = self.targets.get(&me).copied();
        let is_me = |d: DomId| d == me || Some(d) == target;
        let Some(first) = perms.first() else {
            return Rights {
                read: false,
                write: false,
                owner: false,
            };
        };
        if is_me(first.domid) {
            return all;
        }
        let access = perms[1..]
            .iter()
            .find(|p| is_me(p.domid))
            .map_or(first.access, |p| p.access);
        Rights {
            read: access.can_read(),
            write: access.can_write(),
            owner: false,
        }
    }

    fn canonical(me: DomId, path: &str) -> Result<String, ErrorCode> {
        if path.starts_with('/') || wire::is_special(path) {
            return Ok(path.to_owned());
        }
        let abs = format!("{}/{path}", domain_path(me));
        if abs.len() > wire::ABS_PATH_MAX {
            return Err(ErrorCode::EINVAL);
        }
        Ok(abs)
    }

    /// Handles one request from `conn`.
    pub fn handle(&mut self, conn: ConnId, msg: &Message, ctl: &mut dyn DomainControl) -> Output {
        let mut events = Vec::new();
        let mut close = Vec::new();
        let result = self.dispatch(conn, msg, ctl, &mut events, &mut close);
        let reply = match result {
            Ok(payload) => match Message::new(
                msg.kind().unwrap_or(MsgType::Error),
                msg.req_id,
                msg.tx_id,
                payload,
            ) {
                Ok(m) => m,
                Err(_) => Message::error_reply(msg.req_id, msg.tx_id, ErrorCode::E2BIG),
            },
            Err(code) => Message::error_reply(msg.req_id, msg.tx_id, code),
        };
        Output {
            reply,
            events,
            close,
        }
    }

    fn dispatch(
        &mut self,
        cid: ConnId,
        msg: &Message,
        ctl: &mut dyn DomainControl,
        events: &mut Vec<(ConnId, Message)>,
        close: &mut Vec<ConnId>,
    ) -> Result<Vec<u8>, ErrorCode> {
        let me = self.conns.get(&cid).ok_or(ErrorCode::EINVAL)?.domid;
        let privileged = me == DomId::DOM0;
        let req = Request::parse(msg)?;
        let tx_id = msg.tx_id;
        if tx_id != 0 && !self.conns[&cid].transactions.contains_key(&tx_id) {
            return Err(ErrorCode::ENOENT);
        }
        let need_priv = matches!(
            req,
            Request::Introduce { .. }
                | Request::Release { .. }
                | Request::IsDomainIntroduced { .. }
                | Request::Resume { .. }
                | Request::SetTarget { .. }
                | Request::Control { .. }
        );
        if need_priv && !privileged {
            return Err(ErrorCode::EACCES);
        }
        match req {
            Request::Read { path } => {
                let path = Self::canonical(me, path)?;
                let node = self.with_view(cid, tx_id, |s, v| s.lookup(v, me, &path, Need::Read))?;
                Ok(node.value)
            }
            Request::Directory { path } => {
                let path = Self::canonical(me, path)?;
                let node = self.with_view(cid, tx_id, |s, v| s.lookup(v, me, &path, Need::Read))?;
                let payload = wire::join_strings(&node.children);
                if payload.len() > PAYLOAD_MAX {
                    return Err(ErrorCode::E2BIG);
                }
                Ok(payload)
            }
            Request::DirectoryPart { path, offset } => {
                let path = Self::canonical(me, path)?;
                let node = self.with_view(cid, tx_id, |s, v| s.lookup(v, me, &path, Need::Read))?;
                directory_part(&node, offset as usize)
            }
            Request::GetPerms { path } => {
                if wire::is_special(path) {
                    let perms = self.special_perms.get(path).ok_or(ErrorCode::ENOENT)?;
                    if !self.rights(me, perms).read {
                        return Err(ErrorCode::EACCES);
                    }
                    return Ok(wire::perm_list_payload(perms));
                }
                let path = Self::canonical(me, path)?;
                let node = self.with_view(cid, tx_id, |s, v| s.lookup(v, me, &path, Need::Read))?;
                Ok(wire::perm_list_payload(&node.perms))
            }
            Request::Write { path, value } => {
                let path = Self::canonical(me, path)?;
                if !privileged && value.len() > self.quotas.value_size {
                    return Err(ErrorCode::ENOSPC);
                }
                self.modify(cid, tx_id, events, |s, v, changes| {
                    s.write(v, me, &path, value, changes)
                })?;
                Ok(ok_payload())
            }
            Request::Mkdir { path } => {
                let path = Self::canonical(me, path)?;
                self.modify(cid, tx_id, events, |s, v, changes| {
                    match s.lookup(v, me, &path, Need::Write) {
                        Ok(_) => Ok(()),
                        Err(ErrorCode::ENOENT) => s.create(v, me, &path, Vec::new(), changes),
                        Err(e) => Err(e),
                    }
                })?;
                Ok(ok_payload())
            }
            Request::Rm { path } => {
                let path = Self::canonical(me, path)?;
                self.modify(cid, tx_id, events, |s, v, changes| {
                    s.rm(v, me, &path, changes)
                })?;
                Ok(ok_payload())
            }
            Request::SetPerms { path, perms } => {
                if !privileged && perms.len() > self.quotas.perms_per_node {
                    return Err(ErrorCode::ENOSPC);
                }
                if wire::is_special(path) {
                    let cur = self.special_perms.get(path).ok_or(ErrorCode::ENOENT)?;
                    let r = self.rights(me, cur);
                    if !(r.write && r.owner) {
                        return Err(ErrorCode::EACCES);
                    }
                    let key = if path == INTRODUCE_DOMAIN {
                        INTRODUCE_DOMAIN
                    } else {
                        RELEASE_DOMAIN
                    };
                    self.special_perms.insert(key, perms);
                    return Ok(ok_payload());
                }
                let path = Self::canonical(me, path)?;
                self.modify(cid, tx_id, events, |s, v, changes| {
                    let mut node = s.lookup(v, me, &path, Need::Write)?;
                    let r = s.rights(me, &node.perms);
                    if !r.owner {
                        return Err(ErrorCode::EACCES);
                    }
                    if !privileged && perms[0].domid != node.owner() {
                        return Err(ErrorCode::EPERM);
                    }
                    if !privileged
                        && perms[0].domid != node.owner()
                        && v.owned(perms[0].domid) >= s.quotas.nodes_per_domain
                    {
                        return Err(ErrorCode::ENOSPC);
                    }
                    let old = std::mem::replace(&mut node.perms, perms.clone());
                    v.set(&path, Some(node));
                    changes.push(Change {
                        path: path.clone(),
                        exact: false,
                        perms: old,
                    });
                    Ok(())
                })?;
                Ok(ok_payload())
            }
            Request::Watch { path, token } => {
                let abs = Self::canonical(me, path)?;
                let quota = self.quotas.watches_per_domain;
                let count: usize = self
                    .conns
                    .values()
                    .filter(|c| c.domid == me)
                    .map(|c| c.watches.len())
                    .sum();
                let conn = self.conns.get_mut(&cid).ok_or(ErrorCode::EINVAL)?;
                if conn
                    .watches
                    .iter()
                    .any(|w| w.abs == abs && w.token == token)
                {
                    return Err(ErrorCode::EEXIST);
                }
                if !privileged && count >= quota {
                    return Err(ErrorCode::E2BIG);
                }
                conn.watches.push(WatchReg {
                    given: path.to_owned(),
                    abs,
                    token: token.to_owned(),
                });
                events.push((cid, watch_event(path, token)));
                Ok(ok_payload())
            }
            Request::Unwatch { path, token } => {
                let abs = Self::canonical(me, path)?;
                let conn = self.conns.get_mut(&cid).ok_or(ErrorCode::EINVAL)?;
                let before = conn.watches.len();
                conn.watches.retain(|w| !(w.abs == abs && w.token == token));
                if conn.watches.len() == before {
                    return Err(ErrorCode::ENOENT);
                }
                Ok(ok_payload())
            }
            Request::ResetWatches => {
                let conn = self.conns.get_mut(&cid).ok_or(ErrorCode::EINVAL)?;
                conn.watches.clear();
                conn.transactions.clear();
                Ok(ok_payload())
            }
            Request::TransactionStart => {
                if tx_id != 0 {
                    return Err(ErrorCode::EBUSY);
                }
                let quota = self.quotas.transactions_per_connection;
                let in_use: BTreeSet<u32> = self
                    .conns
                    .values()
                    .flat_map(|c| c.transactions.keys().copied())
                    .collect();
                let conn = self.conns.get_mut(&cid).ok_or(ErrorCode::EINVAL)?;
                if !privileged && conn.transactions.len() >= quota {
                    return Err(ErrorCode::ENOSPC);
                }
                let mut id = self.next_tx;
                while id == 0 || in_use.contains(&id) {
                    id = id.wrapping_add(1);
                }
                self.next_tx = id.wrapping_add(1);
                conn.transactions.insert(id, Transaction::default());
                Ok(format!("{id}\0").into_bytes())
            }
            Request::TransactionEnd { commit } => {
                let conn = self.conns.get_mut(&cid).ok_or(ErrorCode::EINVAL)?;
                let tx = conn.transactions.remove(&tx_id).ok_or(ErrorCode::ENOENT)?;
                if commit {
                    self.commit(tx, events)?;
                }
                Ok(ok_payload())
            }
            Request::GetDomainPath { domid } => {
                Ok(format!("{}\0", domain_path(domid)).into_bytes())
            }
            Request::IsDomainIntroduced { domid } => Ok(if self.domains.contains(&domid) {
                b"T\0".to_vec()
            } else {
                b"F\0".to_vec()
            }),
            Request::Introduce { domid, .. } => {
                self.introduce(domid, None, ctl, events)?;
                Ok(ok_payload())
            }
            Request::Release { domid } => {
                self.release(domid, ctl, events, close)?;
                Ok(ok_payload())
            }
            Request::Resume { domid } => {
                if self.domains.contains(&domid) {
                    Ok(ok_payload())
                } else {
                    Err(ErrorCode::ENOENT)
                }
            }
            Request::SetTarget { domid, target } => {
                if !self.domains.contains(&domid) || !self.domains.contains(&target) {
                    return Err(ErrorCode::ENOENT);
                }
                self.targets.insert(domid, target);
                Ok(ok_payload())
            }
            Request::Control { args } => match args[0] {
                "print" => Ok(ok_payload()),
                "help" => Ok(b"print <text>\nhelp\n\0".to_vec()),
                _ => Err(ErrorCode::EINVAL),
            },
        }
    }

    /// Runs a read-only lookup in the right view.
    fn with_view<T>(
        &mut self,
        cid: ConnId,
        tx_id: u32,
        f: impl FnOnce(&Store, &mut View<'_>) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        self.modify_inner(cid, tx_id, |s, v, _| f(s, v))
            .map(|(t, _)| t)
    }

    /// Runs a modification; outside a transaction its watch events fire at once, inside they
    /// are kept for the commit.
    fn modify(
        &mut self,
        cid: ConnId,
        tx_id: u32,
        events: &mut Vec<(ConnId, Message)>,
        f: impl FnOnce(&Store, &mut View<'_>, &mut Vec<Change>) -> Result<(), ErrorCode>,
    ) -> Result<(), ErrorCode> {
        let ((), changes) = self.modify_inner(cid, tx_id, f)?;
        if tx_id == 0 {
            self.fire(&changes, events);
        }
        Ok(())
    }

    fn modify_inner<T>(
        &mut self,
        cid: ConnId,
        tx_id: u32,
        f: impl FnOnce(&Store, &mut View<'_>, &mut Vec<Change>) -> Result<T, ErrorCode>,
    ) -> Result<(T, Vec<Change>), ErrorCode> {
        if tx_id != 0 {
            // The transaction-nodes quota: once a transaction of an unprivileged domain has
            // accessed that many nodes, its further requests fail (one request adds at most
            // a path's depth of entries, so the overshoot is bounded).
            let conn = self.conns.get(&cid);
            let full = conn.is_some_and(|c| {
                c.domid != DomId::DOM0
                    && c.transactions
                        .get(&tx_id)
                        .is_some_and(|t| t.entries.len() >= self.quotas.transaction_nodes)
            });
            if full {
                return Err(ErrorCode::ENOSPC);
            }
        }
        // Take the tree (and the transaction) out so that `f` can borrow the rest of the
        // store for permission checks and quotas while it edits them.
        let mut tree = std::mem::take(&mut self.tree);
        let mut tx = if tx_id == 0 {
            None
        } else {
            self.conns
                .get_mut(&cid)
                .and_then(|c| c.transactions.remove(&tx_id))
        };
        let mut changes = Vec::new();
        let result = {
            let mut view = View {
                tree: &mut tree,
                tx: tx.as_mut(),
            };
            f(self, &mut view, &mut changes)
        };
        self.tree = tree;
        if let Some(mut t) = tx {
            if result.is_ok() {
                t.changes.extend(changes.iter().cloned());
            }
            if let Some(c) = self.conns.get_mut(&cid) {
                c.transactions.insert(tx_id, t);
            }
        }
        result.map(|r| (r, changes))
    }

    fn lookup(
        &self,
        v: &mut View<'_>,
        me: DomId,
        path: &str,
        need: Need,
    ) -> Result<Node, ErrorCode> {
        match v.get(path) {
            Some(n) => {
                let r = self.rights(me, &n.perms);
                let ok = match need {
                    Need::Read => r.read,
                    Need::Write => r.write,
                };
                if ok { Ok(n) } else { Err(ErrorCode::EACCES) }
            }
            None => Err(self.errno_from_parents(v, me, path)),
        }
    }

    /// Missing node: `ENOENT` if the nearest existing ancestor is readable, else `EACCES`.
    fn errno_from_parents(&self, v: &mut View<'_>, me: DomId, path: &str) -> ErrorCode {
        let mut p = path;
        loop {
            if p == "/" {
                return ErrorCode::ENOENT;
            }
            p = parent_of(p);
            if let Some(n) = v.get(p) {
                return if self.rights(me, &n.perms).read {
                    ErrorCode::ENOENT
                } else {
                    ErrorCode::EACCES
                };
            }
        }
    }

    fn write(
        &self,
        v: &mut View<'_>,
        me: DomId,
        path: &str,
        value: &[u8],
        changes: &mut Vec<Change>,
    ) -> Result<(), ErrorCode> {
        match self.lookup(v, me, path, Need::Write) {
            Ok(mut node) => {
                node.value = value.to_vec();
                let perms = node.perms.clone();
                v.set(path, Some(node));
                changes.push(Change {
                    path: path.to_owned(),
                    exact: false,
                    perms,
                });
                Ok(())
            }
            Err(ErrorCode::ENOENT) => self.create(v, me, path, value.to_vec(), changes),
            Err(e) => Err(e),
        }
    }

    fn create(
        &self,
        v: &mut View<'_>,
        me: DomId,
        path: &str,
        value: Vec<u8>,
        changes: &mut Vec<Change>,
    ) -> Result<(), ErrorCode> {
        if path == "/" {
            return Err(ErrorCode::EINVAL);
        }
        let mut missing = vec![path.to_owned()];
        let mut p = parent_of(path).to_owned();
        let (anc_path, anc) = loop {
            if let Some(n) = v.get(&p) {
                break (p, n);
            }
            if p == "/" {
                return Err(ErrorCode::ENOENT);
            }
            missing.push(p.clone());
            p = parent_of(&p).to_owned();
        };
        if !self.rights(me, &anc.perms).write {
            return Err(ErrorCode::EACCES);
        }
        let privileged = me == DomId::DOM0;
        let mut perms = anc.perms.clone();
        if !privileged {
            if let Some(first) = perms.first_mut() {
                first.domid = me;
            }
            if v.owned(me).saturating_add(missing.len()) > self.quotas.nodes_per_domain {
                return Err(ErrorCode::ENOSPC);
            }
        }
        let mut parent_path = anc_path;
        let mut parent = anc;
        let mut value = Some(value);
        for m in missing.iter().rev() {
            parent.children.push(base_of(m).to_owned());
            v.set(&parent_path, Some(parent));
            let val = if m == path {
                value.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            parent = Node::new(val, perms.clone());
            parent_path = m.clone();
        }
        v.set(&parent_path, Some(parent));
        changes.push(Change {
            path: path.to_owned(),
            exact: false,
            perms,
        });
        Ok(())
    }

    fn rm(
        &self,
        v: &mut View<'_>,
        me: DomId,
        path: &str,
        changes: &mut Vec<Change>,
    ) -> Result<(), ErrorCode> {
        let node = match self.lookup(v, me, path, Need::Write) {
            Ok(n) => n,
            Err(ErrorCode::ENOENT) => {
                // Removing a missing node is fine if its parent exists.
                return if path != "/" && v.get(parent_of(path)).is_some() {
                    Ok(())
                } else {
                    Err(ErrorCode::ENOENT)
                };
            }
            Err(e) => return Err(e),
        };
        if path == "/" {
            return Err(ErrorCode::EINVAL);
        }
        // Depth-first removal of the descendants, deepest first.
        let mut stack: Vec<(String, bool)> = node
            .children
            .iter()
            .map(|c| (child_path(path, c), false))
            .collect();
        while let Some((p, expanded)) = stack.pop() {
            let Some(n) = v.get(&p) else { continue };
            if !expanded && !n.children.is_empty() {
                stack.push((p.clone(), true));
                stack.extend(n.children.iter().map(|c| (child_path(&p, c), false)));
                continue;
            }
            v.set(&p, None);
            changes.push(Change {
                path: p,
                exact: true,
                perms: n.perms,
            });
        }
        v.set(path, None);
        let parent_path = parent_of(path);
        if let Some(mut parent) = v.get(parent_path) {
            let base = base_of(path);
            parent.children.retain(|c| c != base);
            v.set(parent_path, Some(parent));
        }
        changes.push(Change {
            path: path.to_owned(),
            exact: false,
            perms: node.perms,
        });
        Ok(())
    }

    fn commit(
        &mut self,
        tx: Transaction,
        events: &mut Vec<(ConnId, Message)>,
    ) -> Result<(), ErrorCode> {
        for (path, e) in &tx.entries {
            let now = self.tree.nodes.get(path).map(|n| n.generation);
            if now != e.base_generation {
                return Err(ErrorCode::EAGAIN);
            }
        }
        for (path, e) in tx.entries {
            if e.dirty {
                match e.node {
                    Some(n) => self.tree.put(&path, n),
                    None => self.tree.remove(&path),
                }
            }
        }
        self.fire(&tx.changes, events);
        Ok(())
    }

    fn fire(&self, changes: &[Change], events: &mut Vec<(ConnId, Message)>) {
        if changes.is_empty() {
            return;
        }
        let mut ids: Vec<&ConnId> = self.conns.keys().collect();
        ids.sort_unstable();
        for ch in changes {
            for &cid in &ids {
                let conn = &self.conns[cid];
                for w in &conn.watches {
                    let hit = if ch.exact {
                        w.abs == ch.path
                    } else {
                        !wire::is_special(&w.abs) && is_child(&ch.path, &w.abs)
                    };
                    // Like xenstored: a watcher that could read the node before the change
                    // (recorded perms) or can read it after (its perms now: a transaction's
                    // SET_PERMS, or a write followed by SET_PERMS) gets the event.
                    let readable = self.rights(conn.domid, &ch.perms).read
                        || self
                            .tree
                            .nodes
                            .get(&ch.path)
                            .is_some_and(|n| self.rights(conn.domid, &n.perms).read);
                    if hit && readable {
                        let shown = shown_path(&ch.path, w, conn.domid);
                        events.push((*cid, watch_event(&shown, &w.token)));
                    }
                }
            }
        }
    }

    fn fire_special(&self, name: &'static str, events: &mut Vec<(ConnId, Message)>) {
        let perms = &self.special_perms[name];
        let mut ids: Vec<&ConnId> = self.conns.keys().collect();
        ids.sort_unstable();
        for cid in ids {
            let conn = &self.conns[cid];
            if !self.rights(conn.domid, perms).read {
                continue;
            }
            for w in conn.watches.iter().filter(|w| w.abs == name) {
                events.push((*cid, watch_event(name, &w.token)));
            }
        }
    }

    /// Introduces a domain: makes it reachable (`ctl`), writes its home
    /// `/local/domain/<id>` (perms `n0 r<id>`) with `domid` and `name`, and a `data`
    /// directory it owns, then fires `@introduceDomain`.
    pub fn introduce(
        &mut self,
        domid: DomId,
        name: Option<&str>,
        ctl: &mut dyn DomainControl,
        events: &mut Vec<(ConnId, Message)>,
    ) -> Result<(), ErrorCode> {
        if !domid.is_valid() {
            return Err(ErrorCode::EINVAL);
        }
        if self.domains.contains(&domid) {
            return Err(ErrorCode::EISCONN);
        }
        ctl.create(domid).map_err(|why| {
            // The wire carries only an errno: say why on the daemon's standard error.
            eprintln!("simulated xenstored: cannot introduce domain {domid}: {why}");
            ErrorCode::EIO
        })?;
        self.domains.insert(domid);
        let home = domain_path(domid);
        let ro = if domid == DomId::DOM0 {
            vec![Perm::none(DomId::DOM0)]
        } else {
            vec![Perm::none(DomId::DOM0), Perm::read(domid)]
        };
        let default_name = if domid == DomId::DOM0 {
            "Domain-0".to_owned()
        } else {
            format!("dom{domid}")
        };
        let name = name.map_or(default_name, str::to_owned);
        let mut changes = Vec::new();
        let mut tree = std::mem::take(&mut self.tree);
        {
            let mut v = View {
                tree: &mut tree,
                tx: None,
            };
            let entries: [(String, Vec<u8>, Vec<Perm>); 4] = [
                (home.clone(), Vec::new(), ro.clone()),
                (
                    format!("{home}/domid"),
                    domid.to_string().into_bytes(),
                    ro.clone(),
                ),
                (format!("{home}/name"), name.into_bytes(), ro.clone()),
                (
                    format!("{home}/data"),
                    Vec::new(),
                    vec![Perm {
                        domid,
                        access: PermAccess::None,
                    }],
                ),
            ];
            for (path, value, perms) in entries {
                // Written as dom0 (privileged), then given their permissions.
                let created = match self.write(&mut v, DomId::DOM0, &path, &value, &mut changes) {
                    Ok(()) => v.get(&path),
                    Err(_) => None,
                };
                if let Some(mut node) = created {
                    node.perms = perms;
                    v.set(&path, Some(node));
                }
            }
        }
        self.tree = tree;
        self.fire(&changes, events);
        self.fire_special(INTRODUCE_DOMAIN, events);
        Ok(())
    }

    /// Releases a domain: closes its connections (returned in `close`), removes its home,
    /// drops it from every permission list (its remaining nodes pass to dom0), tears down
    /// what `ctl` set up and fires `@releaseDomain`.
    pub fn release(
        &mut self,
        domid: DomId,
        ctl: &mut dyn DomainControl,
        events: &mut Vec<(ConnId, Message)>,
        close: &mut Vec<ConnId>,
    ) -> Result<(), ErrorCode> {
        if domid == DomId::DOM0 {
            return Err(ErrorCode::EINVAL);
        }
        if !self.domains.remove(&domid) {
            return Err(ErrorCode::ENOENT);
        }
        let mut gone: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid)
            .map(|(id, _)| *id)
            .collect();
        gone.sort_unstable();
        for id in &gone {
            self.conns.remove(id);
        }
        close.extend(gone);
        self.targets.retain(|d, t| *d != domid && *t != domid);
        let mut changes = Vec::new();
        let mut tree = std::mem::take(&mut self.tree);
        {
            let mut v = View {
                tree: &mut tree,
                tx: None,
            };
            let _ = self.rm(&mut v, DomId::DOM0, &domain_path(domid), &mut changes);
        }
        self.tree = tree;
        // Nodes elsewhere that name the dead domain: a later domain with the same id must
        // not inherit its rights.
        let touched: Vec<String> = self
            .tree
            .nodes
            .iter()
            .filter(|(_, n)| n.perms.iter().any(|p| p.domid == domid))
            .map(|(p, _)| p.clone())
            .collect();
        for path in touched {
            if let Some(mut n) = self.tree.nodes.get(&path).cloned() {
                if n.perms[0].domid == domid {
                    n.perms[0].domid = DomId::DOM0;
                }
                let (first, rest) = n.perms.split_at(1);
                let mut perms = first.to_vec();
                perms.extend(rest.iter().filter(|p| p.domid != domid));
                n.perms = perms;
                self.tree.put(&path, n);
            }
        }
        for perms in self.special_perms.values_mut() {
            if perms.len() > 1 {
                let first = perms[0];
                perms.retain(|p| p.domid != domid);
                if perms.first() != Some(&first) {
                    perms.insert(0, first);
                }
            }
        }
        ctl.release(domid);
        self.fire(&changes, events);
        self.fire_special(RELEASE_DOMAIN, events);
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Need {
    Read,
    Write,
}

fn watch_event(path: &str, token: &str) -> Message {
    Message {
        msg_type: MsgType::WatchEvent as u32,
        req_id: 0,
        tx_id: 0,
        payload: wire::join_strings(&[path, token]),
    }
}

/// The path an event shows: relative to the watcher's home if it registered a relative path.
fn shown_path(changed: &str, w: &WatchReg, watcher: DomId) -> String {
    if w.given.starts_with('/') {
        return changed.to_owned();
    }
    let home = domain_path(watcher);
    match changed.strip_prefix(&home) {
        Some(rest) if rest.starts_with('/') => rest[1..].to_owned(),
        _ => changed.to_owned(),
    }
}

/// A `DIRECTORY_PART` reply: generation, then as many names from byte `offset` of the
/// NUL-separated child list as fit, then an empty string if the list ends here.
fn directory_part(node: &Node, offset: usize) -> Result<Vec<u8>, ErrorCode> {
    let list = wire::join_strings(&node.children);
    let mut out = format!("{}\0", node.generation).into_bytes();
    if offset >= list.len() {
        out.push(0);
        return Ok(out);
    }
    if offset > 0 && list[offset - 1] != 0 {
        return Err(ErrorCode::EINVAL);
    }
    let room = PAYLOAD_MAX - out.len() - 1;
    let mut end = offset;
    for name in list[offset..].split_inclusive(|&b| b == 0) {
        if end - offset + name.len() > room {
            break;
        }
        end += name.len();
    }
    out.extend_from_slice(&list[offset..end]);
    if end == list.len() {
        out.push(0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: MsgType, tx: u32, payload: &[u8]) -> Message {
        Message::new(kind, 7, tx, payload.to_vec()).unwrap()
    }

    fn call(
        s: &mut Store,
        c: ConnId,
        kind: MsgType,
        tx: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, ErrorCode> {
        let out = s.handle(c, &msg(kind, tx, payload), &mut NoDomainControl);
        assert_eq!(out.reply.req_id, 7);
        if out.reply.msg_type == MsgType::Error as u32 {
            let name = out.reply.payload.strip_suffix(&[0]).unwrap();
            Err(ErrorCode::from_name(name).unwrap())
        } else {
            assert_eq!(out.reply.msg_type, kind as u32);
            Ok(out.reply.payload)
        }
    }

    fn with_domains(ids: &[u16]) -> (Store, Vec<ConnId>) {
        let mut s = Store::new(Quotas::default());
        let mut conns = vec![s.connect(DomId::DOM0)];
        for &d in ids {
            let mut ev = Vec::new();
            s.introduce(DomId(d), None, &mut NoDomainControl, &mut ev)
                .unwrap();
            conns.push(s.connect(DomId(d)));
        }
        (s, conns)
    }

    #[test]
    fn initial_tree_and_domain_nodes() {
        let (mut s, c) = with_domains(&[5]);
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, 0, b"/local/domain/0/name\0"),
            Ok(b"Domain-0".to_vec())
        );
        assert_eq!(
            call(&mut s, c[1], MsgType::Read, 0, b"domid\0"),
            Ok(b"5".to_vec())
        );
        assert_eq!(
            call(&mut s, c[1], MsgType::GetPerms, 0, b"data\0"),
            Ok(b"n5\0".to_vec())
        );
        assert_eq!(
            call(&mut s, c[1], MsgType::Write, 0, b"domid\0x"),
            Err(ErrorCode::EACCES)
        );
        assert_eq!(
            call(&mut s, c[1], MsgType::Write, 0, b"data/x\0y"),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            call(&mut s, c[1], MsgType::GetPerms, 0, b"data/x\0"),
            Ok(b"n5\0".to_vec())
        );
    }

    #[test]
    fn permissions_between_domains() {
        let (mut s, c) = with_domains(&[5, 6]);
        call(&mut s, c[2], MsgType::Write, 0, b"data/secret\0six").unwrap();
        assert_eq!(
            call(
                &mut s,
                c[1],
                MsgType::Read,
                0,
                b"/local/domain/6/data/secret\0"
            ),
            Err(ErrorCode::EACCES)
        );
        // Probing a missing node below an unreadable one also says EACCES.
        assert_eq!(
            call(
                &mut s,
                c[1],
                MsgType::Read,
                0,
                b"/local/domain/6/data/nope\0"
            ),
            Err(ErrorCode::EACCES)
        );
        assert_eq!(
            call(
                &mut s,
                c[0],
                MsgType::Read,
                0,
                b"/local/domain/6/data/secret\0"
            ),
            Ok(b"six".to_vec())
        );
        call(&mut s, c[2], MsgType::SetPerms, 0, b"data/secret\0n6\0r5\0").unwrap();
        assert_eq!(
            call(
                &mut s,
                c[1],
                MsgType::Read,
                0,
                b"/local/domain/6/data/secret\0"
            ),
            Ok(b"six".to_vec())
        );
        assert_eq!(
            call(
                &mut s,
                c[1],
                MsgType::Write,
                0,
                b"/local/domain/6/data/secret\0x"
            ),
            Err(ErrorCode::EACCES)
        );
        // Unprivileged domains cannot give their nodes away.
        assert_eq!(
            call(&mut s, c[2], MsgType::SetPerms, 0, b"data/secret\0n5\0"),
            Err(ErrorCode::EPERM)
        );
        assert_eq!(
            call(
                &mut s,
                c[1],
                MsgType::SetPerms,
                0,
                b"/local/domain/6/data/secret\0n5\0"
            ),
            Err(ErrorCode::EACCES)
        );
    }

    #[test]
    fn rm_semantics() {
        let (mut s, c) = with_domains(&[]);
        call(&mut s, c[0], MsgType::Write, 0, b"/a/b/c\0v").unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Directory, 0, b"/a\0"),
            Ok(b"b\0".to_vec())
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::Rm, 0, b"/a/zz\0"),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::Rm, 0, b"/q/zz\0"),
            Err(ErrorCode::ENOENT)
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::Rm, 0, b"/\0"),
            Err(ErrorCode::EINVAL)
        );
        call(&mut s, c[0], MsgType::Rm, 0, b"/a/b\0").unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, 0, b"/a/b/c\0"),
            Err(ErrorCode::ENOENT)
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::Directory, 0, b"/a\0"),
            Ok(Vec::new())
        );
    }

    #[test]
    fn transactions_conflict() {
        let (mut s, c) = with_domains(&[]);
        call(&mut s, c[0], MsgType::Write, 0, b"/x\0a").unwrap();
        let id = call(&mut s, c[0], MsgType::TransactionStart, 0, b"\0").unwrap();
        let id: u32 = wire::parse_single_string(&id).unwrap().parse().unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, id, b"/x\0"),
            Ok(b"a".to_vec())
        );
        call(&mut s, c[0], MsgType::Write, 0, b"/x\0b").unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, id, b"/x\0"),
            Ok(b"a".to_vec())
        );
        call(&mut s, c[0], MsgType::Write, id, b"/x\0c").unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, id, b"/x\0"),
            Ok(b"c".to_vec())
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::TransactionEnd, id, b"T\0"),
            Err(ErrorCode::EAGAIN)
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, 0, b"/x\0"),
            Ok(b"b".to_vec())
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, id, b"/x\0"),
            Err(ErrorCode::ENOENT)
        );
        // A clean one commits.
        let id = call(&mut s, c[0], MsgType::TransactionStart, 0, b"\0").unwrap();
        let id: u32 = wire::parse_single_string(&id).unwrap().parse().unwrap();
        call(&mut s, c[0], MsgType::Write, id, b"/y/z\0new").unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, 0, b"/y/z\0"),
            Err(ErrorCode::ENOENT)
        );
        call(&mut s, c[0], MsgType::TransactionEnd, id, b"T\0").unwrap();
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, 0, b"/y/z\0"),
            Ok(b"new".to_vec())
        );
    }

    #[test]
    fn quotas() {
        let mut s = Store::new(Quotas {
            nodes_per_domain: 6,
            watches_per_domain: 2,
            transactions_per_connection: 1,
            perms_per_node: 2,
            value_size: 4,
            transaction_nodes: 1024,
        });
        let mut ev = Vec::new();
        s.introduce(DomId(3), None, &mut NoDomainControl, &mut ev)
            .unwrap();
        let c = s.connect(DomId(3));
        assert_eq!(
            call(&mut s, c, MsgType::Write, 0, b"data/v\0toolong"),
            Err(ErrorCode::ENOSPC)
        );
        // data is 1 owned node; 5 more fit.
        for k in 0..5u8 {
            let p = [b"data/n".as_slice(), &[b'0' + k], b"\0"].concat();
            call(&mut s, c, MsgType::Write, 0, &p).unwrap();
        }
        assert_eq!(
            call(&mut s, c, MsgType::Write, 0, b"data/n9\0"),
            Err(ErrorCode::ENOSPC)
        );
        call(&mut s, c, MsgType::Watch, 0, b"data\0a\0").unwrap();
        call(&mut s, c, MsgType::Watch, 0, b"data\0b\0").unwrap();
        assert_eq!(
            call(&mut s, c, MsgType::Watch, 0, b"data\0c\0"),
            Err(ErrorCode::E2BIG)
        );
        call(&mut s, c, MsgType::TransactionStart, 0, b"\0").unwrap();
        assert_eq!(
            call(&mut s, c, MsgType::TransactionStart, 0, b"\0"),
            Err(ErrorCode::ENOSPC)
        );
        assert_eq!(
            call(&mut s, c, MsgType::SetPerms, 0, b"data/n0\0n3\0r1\0r2\0"),
            Err(ErrorCode::ENOSPC)
        );
    }

    #[test]
    fn watches_fire_with_relative_paths_and_permissions() {
        let (mut s, c) = with_domains(&[5]);
        let out = s.handle(
            c[1],
            &msg(MsgType::Watch, 0, b"data\0tok\0"),
            &mut NoDomainControl,
        );
        assert_eq!(out.events, vec![(c[1], watch_event("data", "tok"))]);
        let out = s.handle(
            c[0],
            &msg(MsgType::Write, 0, b"/local/domain/5/data/k\0v"),
            &mut NoDomainControl,
        );
        assert_eq!(out.events, vec![(c[1], watch_event("data/k", "tok"))]);
        // A node domain 5 cannot read does not reach it.
        s.handle(
            c[0],
            &msg(MsgType::Write, 0, b"/local/domain/5/data/hidden\0v"),
            &mut NoDomainControl,
        );
        s.handle(
            c[0],
            &msg(MsgType::SetPerms, 0, b"/local/domain/5/data/hidden\0n0\0"),
            &mut NoDomainControl,
        );
        let out = s.handle(
            c[0],
            &msg(MsgType::Write, 0, b"/local/domain/5/data/hidden\0w"),
            &mut NoDomainControl,
        );
        assert!(out.events.is_empty());
        // Special watches: privileged only by default.
        s.handle(
            c[1],
            &msg(MsgType::Watch, 0, b"@releaseDomain\0r\0"),
            &mut NoDomainControl,
        );
        s.handle(
            c[0],
            &msg(MsgType::Watch, 0, b"@releaseDomain\0r0\0"),
            &mut NoDomainControl,
        );
        let mut ev = Vec::new();
        s.introduce(DomId(9), None, &mut NoDomainControl, &mut ev)
            .unwrap();
        let mut close = Vec::new();
        let mut ev = Vec::new();
        s.release(DomId(9), &mut NoDomainControl, &mut ev, &mut close)
            .unwrap();
        assert_eq!(ev, vec![(c[0], watch_event("@releaseDomain", "r0"))]);
    }

    #[test]
    fn directory_part_pages() {
        let (mut s, c) = with_domains(&[]);
        for i in 0..400 {
            let p = format!("/big/child-with-a-long-name-{i:04}\0");
            call(&mut s, c[0], MsgType::Write, 0, p.as_bytes()).unwrap();
        }
        assert_eq!(
            call(&mut s, c[0], MsgType::Directory, 0, b"/big\0"),
            Err(ErrorCode::E2BIG)
        );
        let mut names = Vec::new();
        let mut off = 0usize;
        loop {
            let req = format!("/big\0{off}\0");
            let r = call(&mut s, c[0], MsgType::DirectoryPart, 0, req.as_bytes()).unwrap();
            assert!(r.len() <= PAYLOAD_MAX);
            let (_, part, done) = wire::parse_directory_part(&r).unwrap();
            off += part.iter().map(|n| n.len() + 1).sum::<usize>();
            names.extend(part);
            if done {
                break;
            }
        }
        assert_eq!(names.len(), 400);
        assert_eq!(
            call(&mut s, c[0], MsgType::DirectoryPart, 0, b"/big\x003\0"),
            Err(ErrorCode::EINVAL)
        );
    }

    #[test]
    fn release_closes_and_cleans() {
        let (mut s, c) = with_domains(&[4]);
        call(&mut s, c[1], MsgType::Write, 0, b"data/x\0y").unwrap();
        call(&mut s, c[0], MsgType::Write, 0, b"/shared\0z").unwrap();
        call(&mut s, c[0], MsgType::SetPerms, 0, b"/shared\0n4\0r4\0").unwrap();
        let mut close = Vec::new();
        let mut ev = Vec::new();
        s.release(DomId(4), &mut NoDomainControl, &mut ev, &mut close)
            .unwrap();
        assert_eq!(close, vec![c[1]]);
        assert_eq!(
            call(&mut s, c[0], MsgType::Read, 0, b"/local/domain/4/domid\0"),
            Err(ErrorCode::ENOENT)
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::GetPerms, 0, b"/shared\0"),
            Ok(b"n0\0".to_vec())
        );
        assert_eq!(
            call(&mut s, c[0], MsgType::IsDomainIntroduced, 0, b"4\0"),
            Ok(b"F\0".to_vec())
        );
        assert_eq!(
            s.release(DomId(0), &mut NoDomainControl, &mut ev, &mut close),
            Err(ErrorCode::EINVAL)
        );
    }
}
