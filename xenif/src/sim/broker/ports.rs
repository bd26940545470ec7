//! One domain's event-channel ports.
//!
//! A channel between two ports is a pair of `eventfd`s, created when the first end is bound
//! (unbound for a remote domain) and handed to each end as it binds: the end's *incoming* fd
//! (which its handle polls) and its *outgoing* fd (the other end's incoming one, which notify
//! writes). So a notification is one `write(2)` from one process to the other; the broker
//! keeps its own copies only to hand them to a later binder and to send unmap notifications.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::types::DomId;

/// Identifier of a connection in the broker.
pub(crate) type ConnId = u64;

/// One bound port.
#[derive(Debug)]
pub(crate) struct Port {
    /// The connection (handle) that bound it; `None` once it unbound or died while an unmap
    /// notification still refers to the port (the port lives on until that fires, as Linux's
    /// gntdev keeps its reference on the event channel).
    pub(crate) owner: Option<ConnId>,
    /// The domain allowed to connect (unbound) or connected (interdomain).
    pub(crate) remote: DomId,
    /// The remote port when connected.
    pub(crate) peer: Option<u32>,
    /// The eventfd this end waits on.
    pub(crate) incoming: Arc<OwnedFd>,
    /// The eventfd notify writes (the other end's incoming one).
    pub(crate) outgoing: Arc<OwnedFd>,
    /// Unmap notifications that will signal this port.
    pub(crate) pins: u32,
}

/// The ports of one domain, numbered from 1 like Xen's (port 0 is never valid).
#[derive(Debug)]
pub(crate) struct PortTable {
    ports: BTreeMap<u32, Port>,
    limit: u32,
}

impl PortTable {
    /// A table with room for `limit` ports.
    pub(crate) fn new(limit: u32) -> Self {
        PortTable {
            ports: BTreeMap::new(),
            limit,
        }
    }

    /// Ports in use (including those kept alive by a pending unmap notification).
    pub(crate) fn len(&self) -> usize {
        self.ports.len()
    }

    /// The most ports this domain may have.
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// The lowest free port number, if the limit allows one more.
    pub(crate) fn free_number(&self) -> Option<u32> {
        if self.ports.len() >= self.limit as usize {
            return None;
        }
        let mut expected = 1u32;
        for &n in self.ports.keys() {
            if n != expected {
                break;
            }
            expected += 1;
        }
        (expected <= self.limit).then_some(expected)
    }

    /// Records `port` under `number` (from [`Self::free_number`]).
    pub(crate) fn insert(&mut self, number: u32, port: Port) {
        self.ports.insert(number, port);
    }

    /// The port numbered `n`.
    pub(crate) fn get(&self, n: u32) -> Option<&Port> {
        self.ports.get(&n)
    }

    /// The port numbered `n`, mutably.
    pub(crate) fn get_mut(&mut self, n: u32) -> Option<&mut Port> {
        self.ports.get_mut(&n)
    }

    /// Removes the port numbered `n`.
    pub(crate) fn remove(&mut self, n: u32) -> Option<Port> {
        self.ports.remove(&n)
    }

    /// All port numbers.
    pub(crate) fn numbers(&self) -> Vec<u32> {
        self.ports.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    fn port() -> Port {
        let fd = || -> Arc<OwnedFd> {
            let e = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap();
            Arc::new(OwnedFd::from(e))
        };
        Port {
            owner: Some(1),
            remote: DomId(1),
            peer: None,
            incoming: fd(),
            outgoing: fd(),
            pins: 0,
        }
    }

    #[test]
    fn lowest_free_number_from_one_up_to_the_limit() {
        let mut t = PortTable::new(3);
        assert_eq!(t.free_number(), Some(1));
        t.insert(1, port());
        t.insert(2, port());
        assert_eq!(t.free_number(), Some(3));
        t.remove(1);
        assert_eq!(t.free_number(), Some(1));
        t.insert(1, port());
        t.insert(3, port());
        assert_eq!(t.free_number(), None);
        assert_eq!(t.len(), 3);
        assert_eq!(t.numbers(), vec![1, 2, 3]);
    }
}
