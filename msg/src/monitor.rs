//! Noticing that the peer *domain* is gone, not only its process.
//!
//! When a peer process exits or is killed, its kernel (gntdev/gntalloc) clears its live byte
//! and signals the event channel: the unmap notification. When the whole domain is destroyed
//! no kernel of its runs that code, so the only sign is XenStore's `@releaseDomain` watch.
//! This monitor watches it and asks xenstored whether the peer is still introduced.

use std::os::fd::{AsFd, BorrowedFd};

use vchan_xenif::DomId;
use vchan_xenif::xenstore::{self, Watch};

use crate::error::{Error, Result};
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
        // Take every queued event (lost ones only mean "look again", which follows).
        loop {
            match self.watch.try_next() {
                Ok(Some(_)) | Err(xenstore::Error::EventsLost { .. }) => {}
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            }
        }
        match self.xs.is_domain_introduced(self.peer) {
            Ok(alive) => Ok(alive),
            // Not allowed to ask (an unprivileged domain on real Xen): no evidence of death.
            Err(e) if e.is_permission_denied() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

/// The peer monitor a channel end uses, following its `watch_peer_domain` setting:
///
/// * `Some(false)`: none;
/// * a peer that is dom0: none (dom0 is never destroyed while anything else runs);
/// * `Some(true)`: the watch, or an error saying why it cannot be had;
/// * `None` (the default): the watch where it can be had; where it cannot (an unprivileged
///   domain may not watch `@releaseDomain` on some Xen versions, or the watch quota is used
///   up) the channel goes on without it and a warning saying so is printed on stderr once,
///   since blocked calls would then miss the peer domain's destruction. Choosing
///   `watch_peer_domain(false)` silences it.
pub(crate) fn peer_monitor(
    xs: &xenstore::Client,
    peer: DomId,
    path: &str,
    token: &str,
    setting: Option<bool>,
) -> Result<Option<Box<dyn PeerMonitor>>> {
    if setting == Some(false) || peer == DomId::DOM0 {
        return Ok(None);
    }
    match ReleaseMonitor::new(xs, peer, token) {
        Ok(m) => Ok(Some(Box::new(m))),
        Err(e) if setting == Some(true) => Err(Error::Handshake {
            peer,
            path: path.to_owned(),
            reason: format!(
                "cannot watch @releaseDomain, which watch_peer_domain(true) asks for: {e}. \
                 Allow this domain the watch (or raise its watch quota), or go on without it \
                 with watch_peer_domain(false)"
            ),
        }),
        Err(e) => {
            eprintln!(
                "vchan: warning: cannot watch @releaseDomain ({e}): if domain {peer} is \
                 destroyed without its kernel closing the vchan at {path}, blocked calls will \
                 only notice through a timeout. Use watch_peer_domain(false) to go on without \
                 the watch and without this warning, or watch_peer_domain(true) to make it an \
                 error."
            );
            Ok(None)
        }
    }
}
