//! Noticing that the peer *domain* is gone, not only its process.
//!
//! When a peer process exits or is killed, its kernel (gntdev/gntalloc) clears its live byte
//! and signals the event channel: the unmap notification. When the whole domain is destroyed
//! no kernel of its runs that code, so the only sign is XenStore's `@releaseDomain` watch.
//! This monitor watches it and asks xenstored whether the peer is still introduced.

use std::os::fd::{AsFd, BorrowedFd};

use vchan_xenif::DomId;
use vchan_xenif::xenstore::{self, Watch};

use crate::error::Result;
use crate::wait::PeerMonitor;

/// Watches `@releaseDomain` for one peer.
#[derive(Debug)]
pub(crate) struct ReleaseMonitor {
    xs: xenstore::Client,
    watch: Watch,
    peer: DomId,
}

impl ReleaseMonitor {
    /// Registers the watch. Fails where the domain may not watch `@releaseDomain` or its
    /// watch quota is used up; callers then go on without it.
    pub(crate) fn new(xs: &xenstore::Client, peer: DomId, token: &str) -> Result<Self> {
        let watch = xs.watch(xenstore::wire::RELEASE_DOMAIN, token)?;
        Ok(ReleaseMonitor {
            xs: xs.clone(),
            watch,
            peer,
        })
    }
}

impl PeerMonitor for ReleaseMonitor {
    fn fd(&self) -> BorrowedFd<'_> {
        self.watch.as_fd()
    }

    fn check(&self) -> Result<bool> {
        while self.watch.try_next()?.is_some() {}
        match self.xs.is_domain_introduced(self.peer) {
            Ok(alive) => Ok(alive),
            // Not allowed to ask (an unprivileged domain on real Xen): no evidence of death.
            Err(e) if e.is_permission_denied() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}
