//! The client end: finds the server's pages in XenStore, maps them, connects.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use vchan_ring::layout::CLI_LIVE_OFFSET;
use vchan_ring::{ControlPage, Geometry, LIVE_EXITED, RawRing, RingPlacement, Role, Side};
use vchan_xenif::xenstore::{self, wire};
use vchan_xenif::{Access, Backend, DomId, EventPort, GrantMapper, GrantRef, UnmapNotify};

use crate::channel::{Endpoint, EndpointParts, HalfSettings, Region, Vchan};
use crate::config::{Common, check_path, common_setters, event_channel_key, ring_ref_key};
use crate::error::{Error, Result};
use crate::monitor::peer_monitor;
use crate::wait::{PeerMonitor, Waiter};

/// Connects client ends of vchans (C `libxenvchan_client_init`).
///
/// ```no_run
/// use std::io::Read;
/// use vchan_msg::Client;
/// use vchan_xenif::DomId;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut chan = Client::new(DomId(0), "/local/domain/0/data/vchan/7/1").connect()?;
/// let mut greeting = String::new();
/// chan.read_to_string(&mut greeting)?; // until the server closes
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    server: DomId,
    path: String,
    wait_for_server: Option<Duration>,
    common: Common,
}

impl Client {
    /// A client of the server in domain `server` advertised at XenStore base `path`.
    pub fn new(server: DomId, path: impl Into<String>) -> Client {
        Client {
            server,
            path: path.into(),
            wait_for_server: None,
            common: Common::default(),
        }
    }

    /// If no live server is advertised at the path yet, wait up to `timeout` for one
    /// instead of failing at once (the default, as in C).
    ///
    /// "No live server" covers both a path with no entries (the server has not started) and
    /// stale entries: the `ring-ref` and `event-channel` of a server that was killed or
    /// crashed (nothing removed them), whose port or pages no longer exist. A client started
    /// right after a server restart therefore connects to the new server once it has
    /// advertised. The wait follows XenStore (a watch on the path), so the client connects as
    /// soon as the server writes its entries. When `timeout` passes, `connect` fails with the
    /// last reason the server could not be used. Entries that belong to another domain than
    /// the one named as the server fail at once: waiting cannot fix the domain id.
    pub fn wait_for_server(mut self, timeout: Duration) -> Self {
        self.wait_for_server = Some(timeout);
        self
    }

    common_setters!();

    /// Connects: reads the keys, binds the event channel, maps and validates the control
    /// page and the rings, marks the client live and signals the server.
    ///
    /// Fails with [`Error::Handshake`] when no server is listening at the path, when the
    /// entries there were left by a server that is gone (both after waiting, with
    /// [`Client::wait_for_server`]), or when they were written by another domain than the
    /// server named; with [`Error::BadGeometry`] when the server's control page is invalid.
    pub fn connect(&self) -> Result<Vchan> {
        check_path(&self.path)?;
        let backend = self.common.backend()?;
        let xs = self.common.xenstore(&backend)?;
        let Some(timeout) = self.wait_for_server else {
            return self.attempt(&backend, &xs).map_err(Failure::into_error);
        };
        // A timeout too large for the clock is no limit.
        let deadline = Instant::now().checked_add(timeout);
        // Registered before the first look, so that entries written after it wake us.
        let token = format!("vchan-cli:{}:{}", std::process::id(), self.path);
        let watch = xs.watch(&ring_ref_key(&self.path), &token)?;
        loop {
            let error = match self.attempt(&backend, &xs) {
                Ok(chan) => return Ok(chan),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Absent(e) | Failure::Stale(e)) => e,
            };
            // A server writing (or rewriting) its entries, or the deadline: look again.
            match deadline {
                None => {
                    watch.next_event()?;
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.gave_up(error, timeout));
                    }
                    watch.next_timeout(left)?;
                }
            }
        }
    }

    /// One connection attempt.
    fn attempt(&self, backend: &Backend, xs: &xenstore::Client) -> Result<Vchan, Failure> {
        let (ring_ref, remote_port) = self.read_keys(xs)?;

        let events = backend.event_channels()?;
        let port =
            events
                .bind_interdomain(self.server, remote_port)
                .map_err(|e| {
                    Failure::stale_if_gone(&e, self.handshake(format!(
                    "cannot bind to event channel {remote_port} of domain {}: {e}. The entries \
                     at the path are stale: the server that wrote them is gone (killed, or it \
                     crashed without closing). Restart the server, or let the client wait for \
                     it",
                    self.server
                )))
                })?;
        let mapper = backend.grant_mapper()?;
        let ctrl_map = mapper
            .map(self.server, &[ring_ref], Access::ReadWrite)
            .map_err(|e| {
                Failure::stale_if_gone(
                    &e,
                    self.handshake(format!(
                        "cannot map the control page (grant {ring_ref} of domain {}): {e}. The \
                     server that advertised it is probably gone; restart it, or let the \
                     client wait for it",
                        self.server
                    )),
                )
            })?;
        ctrl_map.set_unmap_notify(UnmapNotify {
            clear_byte: Some(CLI_LIVE_OFFSET),
            event: Some(port),
        })?;
        let ptr =
            NonNull::new(ctrl_map.as_ptr()).ok_or_else(|| self.handshake("null mapping".into()))?;
        // SAFETY: `ctrl_map` is a page-aligned, writable mapping of one page, kept alive by the
        // endpoint built below as long as the view and everything derived from it (or dropped
        // after them when this attempt fails); this process touches it only through them (the
        // server may write it at any time).
        let ctrl = unsafe { ControlPage::new(ptr) };
        // The orders are read once here and only the validated copy is used from now on.
        let geometry = ctrl.read_geometry().map_err(|source| Error::BadGeometry {
            peer: self.server,
            path: self.path.clone(),
            source,
        })?;

        let mut regions = Vec::new();
        let left = self.ring(
            &*mapper,
            &ctrl,
            &geometry,
            Side::Left,
            Access::ReadWrite,
            &mut regions,
        )?;
        let right = self.ring(
            &*mapper,
            &ctrl,
            &geometry,
            Side::Right,
            Access::ReadOnly,
            &mut regions,
        )?;
        let tx = ctrl
            .producer(Role::Client, left)
            .map_err(|e| self.corrupt(e))?;
        let rx = ctrl
            .consumer(Role::Client, right)
            .map_err(|e| self.corrupt(e))?;
        if ctrl.live(Role::Server) == LIVE_EXITED {
            // A live server keeps its byte at 1 until it closes, and removes its entries when
            // it does: the entries are those of a server that exited or was killed.
            return Err(Failure::Stale(
                self.handshake(
                    "the server that advertised this channel has exited (its live byte is 0): \
                 restart it, or let the client wait for it"
                        .into(),
                ),
            ));
        }

        let monitor = self.monitor(xs)?;
        let waiter = Waiter::new(events, port, monitor)?;
        ctrl.connect_client();
        waiter.notify_peer()?;
        let endpoint = Endpoint::new(EndpointParts {
            role: Role::Client,
            peer: self.server,
            path: self.path.clone(),
            persistent: false,
            ctrl,
            ctrl_region: Region::Mapped(ctrl_map),
            rings: regions,
            waiter,
            advert: None,
        })?;
        let settings = HalfSettings {
            mode: self.common.mode,
            spin: self.common.spin,
            timeout: self.common.timeout,
        };
        Ok(Vchan::from_parts(endpoint, rx, tx, settings))
    }

    fn corrupt(&self, e: vchan_ring::RingError) -> Error {
        match e {
            vchan_ring::RingError::Corrupt(corruption) => Error::Corrupt {
                peer: self.server,
                corruption,
            },
            other => self.handshake(other.to_string()),
        }
    }

    /// The error after waiting `timeout` in vain: the last reason, saying how long we waited.
    fn gave_up(&self, error: Error, timeout: Duration) -> Error {
        match error {
            Error::Handshake { peer, path, reason } => Error::Handshake {
                peer,
                path,
                reason: format!("{reason} (gave up after waiting {timeout:?} for a live server)"),
            },
            other => other,
        }
    }

    /// Reads `ring-ref` and `event-channel`, and checks that the server named wrote them.
    fn read_keys(&self, xs: &xenstore::Client) -> Result<(GrantRef, EventPort), Failure> {
        let absent = |key: &str, e: &xenstore::Error| -> Option<Failure> {
            if e.is_not_found() {
                return Some(Failure::Absent(self.handshake(format!(
                    "{key} does not exist: no server is listening there. Start the server (in \
                     domain {}) first, check the path, or let the client wait for it",
                    self.server
                ))));
            }
            if e.is_permission_denied() {
                return Some(Failure::Absent(self.handshake(format!(
                    "{key} is not readable by this domain (xenstored answers EACCES both for \
                     a key made for another domain and for a missing key under a directory \
                     we may not list): either no server is listening there yet — start it \
                     first, or let the client wait for it — or it serves another domain \
                     (check the domain ids on both sides)"
                ))));
            }
            None
        };
        let read = |key: String| -> Result<u32, Failure> {
            let value = xs
                .read(&key)
                .map_err(|e| absent(&key, &e).unwrap_or_else(|| Failure::Fatal(e.into())))?;
            match wire::parse_decimal(&value) {
                Some(v) if v != 0 => Ok(v),
                _ => Err(Failure::Fatal(self.handshake(format!(
                    "{key} holds {:?}, not a non-zero number: the entry was not written by a \
                     vchan server",
                    String::from_utf8_lossy(&value)
                )))),
            }
        };
        let ref_key = ring_ref_key(&self.path);
        let ring_ref = read(ref_key.clone())?;
        let port = read(event_channel_key(&self.path))?;
        // A server writes its entries owning them (C: perms[0] is its own domain id), so the
        // owner says which domain advertised the channel. Naming another one cannot work (the
        // port and grants are that domain's), and waiting would not help.
        let perms = xs
            .get_perms(&ref_key)
            .map_err(|e| absent(&ref_key, &e).unwrap_or_else(|| Failure::Fatal(e.into())))?;
        if let Some(owner) = perms.first().map(|p| p.domid) {
            if owner != self.server {
                return Err(Failure::Fatal(self.handshake(format!(
                    "the channel at this path was advertised by domain {owner}, not by domain \
                     {}: name the server's domain ({owner}) as the peer, or check the path",
                    self.server
                ))));
            }
        }
        Ok((GrantRef(ring_ref), EventPort(port)))
    }

    fn monitor(&self, xs: &xenstore::Client) -> Result<Option<Box<dyn PeerMonitor>>> {
        let token = format!("vchan-cli-rel:{}:{}", std::process::id(), self.path);
        peer_monitor(
            xs,
            self.server,
            &self.path,
            &token,
            self.common.watch_peer_domain,
        )
    }

    /// The bytes of `side`'s ring: inside the control page, or the server's granted pages,
    /// whose references are read once from the control page.
    fn ring(
        &self,
        mapper: &dyn GrantMapper,
        ctrl: &ControlPage,
        geometry: &Geometry,
        side: Side,
        access: Access,
        regions: &mut Vec<Region>,
    ) -> Result<RawRing, Failure> {
        let order = geometry.order(side);
        if let RingPlacement::InPage { .. } = order.placement() {
            // SAFETY: one producer (left) and one consumer (right) of this process use the
            // in-page rings of this page, which outlives them (endpoint).
            return unsafe { ctrl.in_page_ring(order) }.ok_or_else(|| {
                Failure::Fatal(self.handshake("in-page ring without an in-page slot".into()))
            });
        }
        let refs: Vec<GrantRef> = ctrl.grant_refs(geometry, side).map(GrantRef).collect();
        let pages =
            mapper.map(self.server, &refs, access).map_err(|e| {
                Failure::stale_if_gone(&e, self.handshake(format!(
                "cannot map the {side} ring ({} pages granted by domain {}): {e}. The server \
                 that advertised it is probably gone; restart it, or let the client wait for it",
                refs.len(),
                self.server
            )))
            })?;
        if pages.len() < order.size() {
            return Err(Failure::Fatal(self.handshake(format!(
                "the {side} ring mapping has {} bytes, expected {}",
                pages.len(),
                order.size()
            ))));
        }
        let base = NonNull::new(pages.as_ptr())
            .ok_or_else(|| Failure::Fatal(self.handshake("null mapping".into())))?;
        // SAFETY: `pages` maps at least `order.size()` bytes (checked above), readable, and
        // writable when `access` is ReadWrite — the left ring, which only our producer writes;
        // the right ring is read-only and only our consumer, which never writes ring bytes,
        // uses it. The endpoint keeps the mapping alive as long as the ring half.
        let ring = unsafe { RawRing::new(base, order) };
        regions.push(Region::Mapped(pages));
        Ok(ring)
    }

    fn handshake(&self, reason: String) -> Error {
        Error::Handshake {
            peer: self.server,
            path: self.path.clone(),
            reason,
        }
    }
}

/// Why a connection attempt failed, as far as waiting for the server is concerned.
#[derive(Debug)]
enum Failure {
    /// No entries yet (or none this domain may read): a server may still come.
    Absent(Error),
    /// Entries of a server that is gone: a restarted server will overwrite them.
    Stale(Error),
    /// Waiting cannot help (wrong domain, invalid entries or pages, local failure).
    Fatal(Error),
}

impl Failure {
    /// `error`, as [`Failure::Stale`] if `cause` says the port or grant named in XenStore
    /// does not exist (any more), as [`Failure::Fatal`] otherwise (a limit, an OS error:
    /// waiting for a new server would not help).
    fn stale_if_gone(cause: &vchan_xenif::Error, error: Error) -> Failure {
        match cause {
            vchan_xenif::Error::Port { .. } | vchan_xenif::Error::GrantDenied { .. } => {
                Failure::Stale(error)
            }
            _ => Failure::Fatal(error),
        }
    }

    fn into_error(self) -> Error {
        match self {
            Failure::Absent(e) | Failure::Stale(e) | Failure::Fatal(e) => e,
        }
    }
}

impl<E: Into<Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Fatal(e.into())
    }
}
