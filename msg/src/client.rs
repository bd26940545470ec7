//! The client end: finds the server's pages in XenStore, maps them, connects.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use vchan_ring::layout::CLI_LIVE_OFFSET;
use vchan_ring::{ControlPage, Geometry, RawRing, RingPlacement, Role, Side};
use vchan_xenif::xenstore::{self, wire};
use vchan_xenif::{Access, DomId, EventPort, GrantMapper, GrantRef, UnmapNotify};

use crate::channel::{Endpoint, EndpointParts, HalfSettings, Region, Vchan};
use crate::config::{Common, check_path, common_setters, event_channel_key, ring_ref_key};
use crate::error::{Error, Result};
use crate::monitor::ReleaseMonitor;
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

    /// If the server has not advertised the channel yet, wait up to `timeout` for it
    /// (a XenStore watch) instead of failing at once (the default, as in C).
    pub fn wait_for_server(mut self, timeout: Duration) -> Self {
        self.wait_for_server = Some(timeout);
        self
    }

    common_setters!();

    /// Connects: reads the keys, binds the event channel, maps and validates the control
    /// page and the rings, marks the client live and signals the server.
    pub fn connect(&self) -> Result<Vchan> {
        check_path(&self.path)?;
        let backend = self.common.backend()?;
        let xs = self.common.xenstore(&backend)?;
        let (ring_ref, remote_port) = self.read_keys(&xs)?;

        let events = backend.event_channels()?;
        let port = events
            .bind_interdomain(self.server, remote_port)
            .map_err(|e| {
                self.handshake(format!(
                    "cannot bind to event channel {remote_port} of domain {}: {e}. Is domain {} \
                 the server, and did it create the channel for this domain?",
                    self.server, self.server
                ))
            })?;
        let mapper = backend.grant_mapper()?;
        let ctrl_map = mapper
            .map(self.server, &[ring_ref], Access::ReadWrite)
            .map_err(|e| {
                self.handshake(format!(
                    "cannot map the control page (grant {ring_ref} of domain {}): {e}",
                    self.server
                ))
            })?;
        ctrl_map.set_unmap_notify(UnmapNotify {
            clear_byte: Some(CLI_LIVE_OFFSET),
            event: Some(port),
        })?;
        let ptr =
            NonNull::new(ctrl_map.as_ptr()).ok_or_else(|| self.handshake("null mapping".into()))?;
        // SAFETY: `ctrl_map` is a page-aligned, writable mapping of one page, kept alive by the
        // endpoint built below as long as the view and everything derived from it; this
        // process touches it only through them (the server may write it at any time).
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

        let monitor = self.monitor(&xs);
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
            xs_cleanup: None,
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

    /// Reads `ring-ref` and `event-channel`, waiting for them if asked to.
    fn read_keys(&self, xs: &xenstore::Client) -> Result<(GrantRef, EventPort)> {
        let ref_key = ring_ref_key(&self.path);
        let deadline = self.wait_for_server.map(|t| Instant::now() + t);
        let watch = match self.wait_for_server {
            Some(_) => {
                let token = format!("vchan-cli:{}:{}", std::process::id(), self.path);
                Some(xs.watch(&ref_key, &token)?)
            }
            None => None,
        };
        loop {
            match self.try_read_keys(xs) {
                Ok(keys) => return Ok(keys),
                Err(e) => {
                    let (Some(watch), Some(deadline)) = (&watch, deadline) else {
                        return Err(e);
                    };
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Err(e);
                    };
                    // Any change below the key (or nothing until the deadline): look again.
                    watch.next_timeout(left)?;
                }
            }
        }
    }

    fn try_read_keys(&self, xs: &xenstore::Client) -> Result<(GrantRef, EventPort)> {
        let read = |key: String| -> Result<u32> {
            let value = match xs.read(&key) {
                Ok(v) => v,
                Err(e) if e.is_not_found() => {
                    return Err(self.handshake(format!(
                        "{key} does not exist: no server is listening there. Start the server \
                         (in domain {}) first, check the path, or let the client wait for it",
                        self.server
                    )));
                }
                Err(e) if e.is_permission_denied() => {
                    return Err(self.handshake(format!(
                        "{key} is not readable by this domain (xenstored answers EACCES both \
                         for a key made for another domain and for a missing key under a \
                         directory we may not list): either no server is listening there \
                         yet — start it first, or let the client wait for it — or it serves \
                         another domain (check the domain ids on both sides)"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            match wire::parse_decimal(&value) {
                Some(v) if v != 0 => Ok(v),
                _ => Err(self.handshake(format!(
                    "{key} holds {:?}, not a non-zero number: the entry was not written by a \
                     vchan server",
                    String::from_utf8_lossy(&value)
                ))),
            }
        };
        let ring_ref = read(ring_ref_key(&self.path))?;
        let port = read(event_channel_key(&self.path))?;
        Ok((GrantRef(ring_ref), EventPort(port)))
    }

    fn monitor(&self, xs: &xenstore::Client) -> Option<Box<dyn PeerMonitor>> {
        if self.common.watch_peer_domain == Some(false) || self.server == DomId::DOM0 {
            // Dom0 is never released while we run.
            return None;
        }
        let token = format!("vchan-cli-rel:{}:{}", std::process::id(), self.path);
        ReleaseMonitor::new(xs, self.server, &token)
            .ok()
            .map(|m| Box::new(m) as Box<dyn PeerMonitor>)
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
    ) -> Result<RawRing> {
        let order = geometry.order(side);
        if let RingPlacement::InPage { .. } = order.placement() {
            // SAFETY: one producer (left) and one consumer (right) of this process use the
            // in-page rings of this page, which outlives them (endpoint).
            return unsafe { ctrl.in_page_ring(order) }
                .ok_or_else(|| self.handshake("in-page ring without an in-page slot".into()));
        }
        let refs: Vec<GrantRef> = ctrl.grant_refs(geometry, side).map(GrantRef).collect();
        let pages = mapper.map(self.server, &refs, access).map_err(|e| {
            self.handshake(format!(
                "cannot map the {side} ring ({} pages granted by domain {}): {e}",
                refs.len(),
                self.server
            ))
        })?;
        if pages.len() < order.size() {
            return Err(self.handshake(format!(
                "the {side} ring mapping has {} bytes, expected {}",
                pages.len(),
                order.size()
            )));
        }
        let base =
            NonNull::new(pages.as_ptr()).ok_or_else(|| self.handshake("null mapping".into()))?;
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
