//! 1000 share/map/unmap cycles leak no descriptors, files, mappings or host bookkeeping.
//!
//! Alone in its test binary: the counts are of this whole process (`/proc/self/fd`,
//! `/proc/self/maps`), which holds the host's broker as well as both domains' handles, so no
//! other test may run beside it.

mod support;

use std::path::Path;

use support::{Host, read_byte, write_byte};
use vchan_xenif::sim::broker::BrokerStats;
use vchan_xenif::{Access, DomId, PAGE_SIZE, UnmapNotify};

const CYCLES: usize = 1000;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn memfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("/memfd:"))
        .count()
}

fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        n += 1;
        if entry.file_type().unwrap().is_dir() {
            n += files_under(&entry.path());
        }
    }
    n
}

#[test]
fn a_thousand_share_map_unmap_cycles_leak_nothing() {
    let host = Host::new(&[0, 1]);
    let sharer = host.backend(0).grant_sharer().unwrap();
    let mapper = host.backend(1).grant_mapper().unwrap();
    let ev0 = host.backend(0).event_channels().unwrap();
    let ev1 = host.backend(1).event_channels().unwrap();
    let p0 = ev0.bind_unbound(DomId(1)).unwrap();
    let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();

    let cycle = |i: usize| {
        // A control page and a 4-page ring, mapped together (two pieces), alternately
        // read-write (with an unmap notification) and read-only (a fresh read-only
        // descriptor every time).
        let ctrl = sharer.share(DomId(1), 1, Access::ReadWrite).unwrap();
        let ring = sharer.share(DomId(1), 4, Access::ReadWrite).unwrap();
        let mut refs = ctrl.refs().to_vec();
        refs.extend_from_slice(ring.refs());
        write_byte(ctrl.as_ptr().wrapping_add(20), 1);
        write_byte(ring.as_ptr().wrapping_add(3 * PAGE_SIZE), i as u8);
        if i % 2 == 0 {
            let m = mapper.map(DomId(0), &refs, Access::ReadWrite).unwrap();
            assert_eq!(read_byte(m.as_ptr().wrapping_add(4 * PAGE_SIZE)), i as u8);
            m.set_unmap_notify(UnmapNotify {
                clear_byte: Some(20),
                event: Some(p1),
            })
            .unwrap();
            drop(m);
            assert_eq!(ev0.wait(Some(support::DEADLINE)).unwrap(), Some(p0));
            ev0.unmask(p0).unwrap();
            assert_eq!(read_byte(ctrl.as_ptr().wrapping_add(20)), 0);
        } else {
            let m = mapper.map(DomId(0), &refs, Access::ReadOnly).unwrap();
            assert_eq!(read_byte(m.as_ptr().wrapping_add(4 * PAGE_SIZE)), i as u8);
        }
        ctrl.set_unmap_notify(UnmapNotify {
            clear_byte: Some(21),
            event: Some(p0),
        })
        .unwrap();
    };

    // One cycle first, so that lazily created things (buffers, thread-locals) exist.
    cycle(0);
    assert_eq!(ev1.pending().unwrap(), Some(p1));
    ev1.unmask(p1).unwrap();
    let (fds0, maps0, memfds0, files0) = (fds(), maps(), memfds(), files_under(host.path()));
    let stats0 = host.broker.stats();
    assert_eq!(
        stats0,
        BrokerStats {
            domains: 2,
            connections: 4,
            shares: 0,
            shared_pages: 0,
            mappings: 0,
            mapped_pages: 0,
            ports: 2,
        }
    );
    for i in 1..=CYCLES {
        cycle(i);
        // The sharer's notification of each cycle reached domain 1.
        assert_eq!(ev1.pending().unwrap(), Some(p1), "cycle {i}");
        ev1.unmask(p1).unwrap();
    }
    assert_eq!(host.broker.stats(), stats0, "host bookkeeping grew");
    assert_eq!(fds(), fds0, "descriptors leaked");
    assert_eq!(memfds(), memfds0, "grant files leaked");
    assert_eq!(maps(), maps0, "mappings leaked");
    assert_eq!(
        files_under(host.path()),
        files0,
        "files leaked in the host directory"
    );
}
