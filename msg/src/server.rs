//! The server end: shares the pages, advertises them in XenStore, waits for a client.

use std::ptr::NonNull;
use std::time::Duration;

use vchan_ring::layout::SRV_LIVE_OFFSET;
use vchan_ring::{ControlPage, Geometry, RawRing, RingOrder, RingPlacement, Role, Side};
use vchan_xenif::xenstore::Perm;
use vchan_xenif::{Access, Backend, DomId, GrantSharer, UnmapNotify};

use crate::channel::{Advertisement, Endpoint, EndpointParts, HalfSettings, Region, Vchan};
use crate::config::{Common, check_path, common_setters, event_channel_key, ring_ref_key};
use crate::error::{Error, Result};
use crate::monitor::peer_monitor;
use crate::wait::{PeerMonitor, Waiter};

/// Builds server ends of vchans (C `libxenvchan_server_init`).
///
/// The server shares a control page and the ring pages with the client domain, binds an
/// event channel for it, and writes `<path>/ring-ref` and `<path>/event-channel` in one
/// XenStore transaction, readable only by the client. [`Server::listen`] returns at once (as
/// in C: writes wait in the ring until a client comes); [`Server::accept`] waits for the client
/// to connect. The builder is reusable: call `accept` again after a client went away to
/// serve the next one, without rebuilding anything (the XenStore connection is shared).
///
/// ```no_run
/// use vchan_msg::Server;
/// use vchan_xenif::DomId;
///
/// # fn main() -> vchan_msg::Result<()> {
/// let server = Server::new(DomId(7), "/local/domain/0/data/vchan/7/1").read_min(65536).write_min(65536);
/// loop {
///     let mut chan = server.accept(None)?;
///     chan.write_all(b"hello\n")?;
///     // … serve this client; dropping `chan` closes it and removes the XenStore entries.
/// #   break;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Server {
    peer: DomId,
    path: String,
    read_min: usize,
    write_min: usize,
    persistent: bool,
    common: Common,
}

impl Server {
    /// A server for client domain `peer` at XenStore base path `path` (see
    /// [`default_path`](crate::default_path) for the convention), with C's default ring
    /// sizes (1 KiB to read, 2 KiB to write, both inside the control page).
    pub fn new(peer: DomId, path: impl Into<String>) -> Server {
        Server {
            peer,
            path: path.into(),
            read_min: 0,
            write_min: 0,
            persistent: false,
            common: Common::default(),
        }
    }

    /// Minimum size of the ring the server reads (the client writes): rounded up to a power
    /// of two as C does; at most 1 MiB.
    pub fn read_min(mut self, bytes: usize) -> Self {
        self.read_min = bytes;
        self
    }

    /// Minimum size of the ring the server writes; at most 1 MiB.
    pub fn write_min(mut self, bytes: usize) -> Self {
        self.write_min = bytes;
        self
    }

    /// Persistent mode (C `server_persist`): the channel stays open when the client leaves,
    /// so that another client can connect to the same rings; reads and writes then wait
    /// instead of failing with [`Error::PeerClosed`].
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    common_setters!();

    /// The ring sizes this server will choose, without creating anything.
    pub fn geometry(&self) -> Result<Geometry> {
        Ok(Geometry::server_choice(self.read_min, self.write_min)?)
    }

    /// Advertises a new channel and returns at once; the client may connect later
    /// ([`Vchan::wait_connected`]).
    pub fn listen(&self) -> Result<Vchan> {
        check_path(&self.path)?;
        if !self.peer.is_valid() {
            return Err(vchan_xenif::Error::InvalidArgument(format!(
                "{} is not a domain id (valid ids are below {})",
                self.peer.0,
                DomId::FIRST_RESERVED
            ))
            .into());
        }
        let geometry = self.geometry()?;
        let backend = self.common.backend()?;
        let xs = self.common.xenstore(&backend)?;
        let own = match &backend {
            Backend::Sim { domid, .. } => *domid,
            _ => xs.own_domid()?,
        };
        if own == self.peer {
            return Err(self.handshake(format!(
                "the peer is this domain ({own}): a vchan connects two domains (C libxenvchan \
                 would crash the kernel on a loopback vchan)"
            )));
        }

        let events = backend.event_channels()?;
        let port = events.bind_unbound(self.peer).map_err(|e| {
            self.handshake(format!(
                "cannot allocate an event channel for domain {}: {e}",
                self.peer
            ))
        })?;
        let sharer = backend.grant_sharer()?;
        let ctrl_pages = sharer.share(self.peer, 1, Access::ReadWrite).map_err(|e| {
            self.handshake(format!(
                "cannot share the control page with domain {}: {e}",
                self.peer
            ))
        })?;
        ctrl_pages.set_unmap_notify(UnmapNotify {
            clear_byte: Some(SRV_LIVE_OFFSET),
            event: Some(port),
        })?;
        let ctrl_ref = *ctrl_pages
            .refs()
            .first()
            .ok_or_else(|| self.handshake("sharing one page returned no grant reference".into()))?;
        let ptr = NonNull::new(ctrl_pages.as_ptr())
            .ok_or_else(|| self.handshake("null mapping".into()))?;
        // SAFETY: `ctrl_pages` is a page-aligned, writable mapping of one page that the
        // endpoint built below keeps alive as long as the control page view and everything
        // derived from it (rings, indices, flags); this process touches it only through them.
        let ctrl = unsafe { ControlPage::new(ptr) };
        ctrl.init_server(geometry);

        let mut regions = Vec::new();
        let left = self.ring(&*sharer, &ctrl, &geometry, Side::Left, &mut regions)?;
        let right = self.ring(&*sharer, &ctrl, &geometry, Side::Right, &mut regions)?;
        let rx = ctrl
            .consumer(Role::Server, left)
            .map_err(|e| self.handshake(e.to_string()))?;
        let tx = ctrl
            .producer(Role::Server, right)
            .map_err(|e| self.handshake(e.to_string()))?;

        let perms = [Perm::none(own), Perm::read(self.peer)];
        let (ref_key, port_key) = (ring_ref_key(&self.path), event_channel_key(&self.path));
        xs.transaction(|tx| {
            tx.write(&ref_key, ctrl_ref.0.to_string())?;
            tx.set_perms(&ref_key, &perms)?;
            tx.write(&port_key, port.0.to_string())?;
            tx.set_perms(&port_key, &perms)?;
            Ok(())
        })
        .map_err(|e| self.handshake(format!("cannot advertise the channel in XenStore: {e}")))?;

        let monitor = self.monitor(&xs)?;
        let waiter = Waiter::new(events, port, monitor)?;
        let endpoint = Endpoint::new(EndpointParts {
            role: Role::Server,
            peer: self.peer,
            path: self.path.clone(),
            persistent: self.persistent,
            ctrl,
            ctrl_region: Region::Shared(ctrl_pages),
            rings: regions,
            waiter,
            advert: Some(Advertisement {
                xs,
                ring_ref: ctrl_ref,
                port,
            }),
        })?;
        Ok(Vchan::from_parts(endpoint, rx, tx, self.settings()))
    }

    /// Advertises a new channel and waits (at most `timeout`) for a client to connect.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Vchan> {
        let mut chan = self.listen()?;
        chan.wait_connected(timeout)?;
        Ok(chan)
    }

    fn settings(&self) -> HalfSettings {
        HalfSettings {
            mode: self.common.mode,
            spin: self.common.spin,
            timeout: self.common.timeout,
        }
    }

    fn monitor(&self, xs: &vchan_xenif::xenstore::Client) -> Result<Option<Box<dyn PeerMonitor>>> {
        let token = format!("vchan-srv:{}:{}", std::process::id(), self.path);
        peer_monitor(
            xs,
            self.peer,
            &self.path,
            &token,
            self.common.watch_peer_domain,
        )
    }

    /// The bytes of `side`'s ring: inside the control page, or freshly shared pages whose
    /// references go into the control page's grant list.
    fn ring(
        &self,
        sharer: &dyn GrantSharer,
        ctrl: &ControlPage,
        geometry: &Geometry,
        side: Side,
        regions: &mut Vec<Region>,
    ) -> Result<RawRing> {
        let order: RingOrder = geometry.order(side);
        if let RingPlacement::InPage { .. } = order.placement() {
            // SAFETY: this process builds exactly one consumer (left) and one producer (right)
            // on the in-page rings of this page, and the page outlives them (endpoint).
            return unsafe { ctrl.in_page_ring(order) }
                .ok_or_else(|| self.handshake("in-page ring without an in-page slot".into()));
        }
        let pages = sharer
            .share(self.peer, order.grant_count(), Access::ReadWrite)
            .map_err(|e| {
                self.handshake(format!(
                    "cannot share the {side} ring ({} pages) with domain {}: {e}",
                    order.grant_count(),
                    self.peer
                ))
            })?;
        let refs: Vec<u32> = pages.refs().iter().map(|r| r.0).collect();
        ctrl.write_grant_refs(geometry, side, &refs)?;
        let base =
            NonNull::new(pages.as_ptr()).ok_or_else(|| self.handshake("null mapping".into()))?;
        // SAFETY: `pages` is a writable mapping of `order.size()` bytes (grant_count pages),
        // kept alive by the endpoint (`regions`) as long as the ring half built on it; one
        // producer or consumer of this process uses it.
        let ring = unsafe { RawRing::new(base, order) };
        regions.push(Region::Shared(pages));
        Ok(ring)
    }

    fn handshake(&self, reason: String) -> Error {
        Error::Handshake {
            peer: self.peer,
            path: self.path.clone(),
            reason,
        }
    }
}
