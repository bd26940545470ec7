//! Detached shares and mappings (the C ABI's model): the host side ends on drop, the local
//! mapping stays until the caller unmaps it, and unmap notifications fire at the host side's
//! end.

use std::time::Duration;

use super::{SimEventChannels, SimGrantMapper, SimGrantSharer};
use crate::sim::broker::Broker;
use crate::{Access, DomId, EventChannels, PAGE_SIZE, UnmapNotify};

fn read_byte(p: *const u8) -> u8 {
    // SAFETY: the tests below only pass addresses inside mappings they have not unmapped yet.
    unsafe { p.read_volatile() }
}

fn write_byte(p: *mut u8, v: u8) {
    // SAFETY: as for `read_byte`, and the mapping is writable.
    unsafe { p.write_volatile(v) }
}

fn unmap(p: *mut u8, len: usize) {
    // SAFETY: `p..p+len` is a detached mapping this test received and no longer uses.
    let r = unsafe { libc::munmap(p.cast(), len) };
    assert_eq!(r, 0);
}

#[test]
fn detached_regions_end_on_the_host_and_stay_mapped_until_the_caller_unmaps() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new(dir.path()).unwrap();
    broker.domain_created(DomId(0)).unwrap();
    broker.domain_created(DomId(1)).unwrap();

    let sharer = SimGrantSharer::connect(dir.path(), DomId(0)).unwrap();
    let share = sharer
        .share_detached(DomId(1), 2, Access::ReadWrite)
        .unwrap();
    assert_eq!((share.len(), share.refs().len()), (2 * PAGE_SIZE, 2));
    assert_eq!(share.peer(), DomId(1));
    write_byte(share.as_ptr().wrapping_add(PAGE_SIZE + 9), 0x5a);
    write_byte(share.as_ptr().wrapping_add(21), 1);

    // Domain 1 maps it (detached), with an unmap notification: clear byte 21, signal a port.
    let ev0 = SimEventChannels::connect(dir.path(), DomId(0)).unwrap();
    let ev1 = SimEventChannels::connect(dir.path(), DomId(1)).unwrap();
    let port0 = ev0.bind_unbound(DomId(1)).unwrap();
    let port1 = ev1.bind_interdomain(DomId(0), port0).unwrap();
    let mapper = SimGrantMapper::connect(dir.path(), DomId(1)).unwrap();
    let map = mapper
        .map_detached(DomId(0), share.refs(), Access::ReadWrite)
        .unwrap();
    assert_eq!(
        (map.len(), map.access(), map.peer()),
        (2 * PAGE_SIZE, Access::ReadWrite, DomId(0))
    );
    assert_eq!(read_byte(map.as_ptr().wrapping_add(PAGE_SIZE + 9)), 0x5a);
    map.set_unmap_notify(UnmapNotify {
        clear_byte: Some(21),
        event: Some(port1),
    })
    .unwrap();
    assert_eq!(broker.stats().mappings, 1);

    // Ending the mapping on the host runs the notification, and leaves the memory mapped.
    let (addr, len) = (map.as_ptr(), map.len());
    drop(map);
    assert_eq!(broker.stats().mappings, 0);
    assert_eq!(read_byte(share.as_ptr().wrapping_add(21)), 0);
    assert_eq!(ev0.wait(Some(Duration::from_secs(5))).unwrap(), Some(port0));
    write_byte(addr.wrapping_add(PAGE_SIZE + 9), 0x77);
    assert_eq!(read_byte(share.as_ptr().wrapping_add(PAGE_SIZE + 9)), 0x77);
    unmap(addr, len);

    // The same for the share: the grant ends (no one can map it any more), the pages stay.
    let refs = share.refs().to_vec();
    let (addr, len) = (share.as_ptr(), share.len());
    drop(share);
    assert_eq!(broker.stats().shares, 0);
    assert!(
        mapper
            .map_detached(DomId(0), &refs, Access::ReadOnly)
            .is_err()
    );
    assert_eq!(read_byte(addr.wrapping_add(PAGE_SIZE + 9)), 0x77);
    unmap(addr, len);
}
