//! Simulated grants across real processes: share, map, permissions, read-only enforcement,
//! unmap notification on unmap / exit / SIGKILL / domain release, and limits.
//!
//! The parent test process runs the host's broker and acts as domain 0; children (this same
//! test binary, re-run in a role, see `support`) act as the other domains.

mod support;

use std::os::unix::process::ExitStatusExt;

use support::{Host, read, read_byte, refs_from_string, refs_to_string, say, spawn, write};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::{Access, Backend, DomId, Error, GrantRef, PAGE_SIZE, UnmapNotify};

/// A recognisable byte for page `page`, offset `i`.
fn pattern(page: usize, i: usize) -> u8 {
    (page.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8
}

fn fill_pattern(ptr: *mut u8, pages: usize) {
    for p in 0..pages {
        let bytes: Vec<u8> = (0..PAGE_SIZE).map(|i| pattern(p, i)).collect();
        write(ptr.wrapping_add(p * PAGE_SIZE), &bytes);
    }
}

fn check_pattern(ptr: *const u8, page_order: &[usize]) {
    for (at, &p) in page_order.iter().enumerate() {
        let got = read(ptr.wrapping_add(at * PAGE_SIZE), PAGE_SIZE);
        let want: Vec<u8> = (0..PAGE_SIZE).map(|i| pattern(p, i)).collect();
        assert!(
            got == want,
            "page {at} of the mapping is not page {p} of the share"
        );
    }
}

/// The roles children play.
fn child(role: &str) {
    let backend = Backend::detect().expect("sim backend from the environment");
    match role {
        // Map the refs read-write, check the pattern in the page order given, write a reply.
        "map-check-write" => {
            let refs = refs_from_string(&support::env("REFS"));
            let order: Vec<usize> = support::env("ORDER")
                .split(',')
                .map(|s| s.parse().unwrap())
                .collect();
            let m = backend
                .grant_mapper()
                .unwrap()
                .map(DomId(0), &refs, Access::ReadWrite)
                .unwrap();
            assert_eq!(m.len(), refs.len() * PAGE_SIZE);
            assert_eq!(m.peer(), DomId(0));
            check_pattern(m.as_ptr(), &order);
            // The last byte of the mapping, through this process's view.
            write(m.as_ptr().wrapping_add(m.len() - 5), b"dom1!");
            say("DONE");
        }
        // Try to map refs that are not granted to us.
        "map-denied" => {
            let refs = refs_from_string(&support::env("REFS"));
            let result = backend
                .grant_mapper()
                .unwrap()
                .map(DomId(0), &refs, Access::ReadOnly);
            match &result {
                Err(e @ Error::GrantDenied { granter, gref, .. }) => {
                    say(&format!("DENIED {granter} {gref} {e}"));
                }
                other => panic!("mapping someone else's grant: {other:?}"),
            }
        }
        // Map read-only, prove the descriptor refuses writing, then write (and die).
        "read-only-write" => {
            let refs = refs_from_string(&support::env("REFS"));
            let m = backend
                .grant_mapper()
                .unwrap()
                .map(DomId(0), &refs, Access::ReadOnly)
                .unwrap();
            assert_eq!(m.access(), Access::ReadOnly);
            check_pattern(m.as_ptr(), &[0]);
            // SAFETY: asks the kernel to make our own mapping writable; it must refuse
            // (EACCES: the file was opened read-only), and on refusal nothing changes.
            let rc = unsafe {
                libc::mprotect(
                    m.as_ptr().cast(),
                    m.len(),
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(
                (rc, errno),
                (-1, Some(libc::EACCES)),
                "mprotect(PROT_WRITE) allowed"
            );
            say("READ");
            support::write_byte(m.as_ptr(), 0xEE);
            say("WROTE");
        }
        // Map with an unmap notification (clear byte 22, signal our port), then end in the
        // way the parent asks: "unmap", "exit" (no destructors), or wait to be killed.
        "notify-mapper" => {
            let refs = refs_from_string(&support::env("REFS"));
            let remote_port = vchan_xenif::EventPort(support::env("PORT").parse().unwrap());
            // A dying process's files are released in no promised order (Linux: the reverse
            // of opening); the notification must fire either way, so the parent asks for both.
            let (ev, mapper) = if support::env("OPEN") == "evtchn-last" {
                let mapper = backend.grant_mapper().unwrap();
                (backend.event_channels().unwrap(), mapper)
            } else {
                let ev = backend.event_channels().unwrap();
                (ev, backend.grant_mapper().unwrap())
            };
            let port = ev.bind_interdomain(DomId(0), remote_port).unwrap();
            let m = mapper.map(DomId(0), &refs, Access::ReadWrite).unwrap();
            m.set_unmap_notify(UnmapNotify {
                clear_byte: Some(22),
                event: Some(port),
            })
            .unwrap();
            say("READY");
            match support::hear().as_str() {
                "unmap" => {
                    drop(m);
                    say("UNMAPPED");
                    support::hear();
                }
                "exit" => std::process::exit(0),
                "map-again" => {
                    // The handle that still exists, and a new one.
                    let old = mapper.map(DomId(0), &refs, Access::ReadWrite).unwrap_err();
                    let new = backend.grant_mapper().unwrap_err();
                    say(&format!("AGAIN {old} | {new}"));
                    support::hear();
                }
                _ => {
                    support::hear();
                }
            }
        }
        // Share a page with an unmap notification (clear byte 21, signal our port), then wait
        // to be killed.
        "notify-sharer" => {
            let ev = backend.event_channels().unwrap();
            let port = ev.bind_unbound(DomId(0)).unwrap();
            let s = backend
                .grant_sharer()
                .unwrap()
                .share(DomId(0), 1, Access::ReadWrite)
                .unwrap();
            support::write_byte(s.as_ptr().wrapping_add(21), 1);
            s.set_unmap_notify(UnmapNotify {
                clear_byte: Some(21),
                event: Some(port),
            })
            .unwrap();
            say(&format!("READY {} {}", s.refs()[0], port));
            support::hear();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn shared_pages_are_written_and_read_across_processes() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let s = host
        .backend(0)
        .grant_sharer()
        .unwrap()
        .share(DomId(1), 3, Access::ReadWrite)
        .unwrap();
    assert_eq!(s.len(), 3 * PAGE_SIZE);
    assert_eq!(s.peer(), DomId(1));
    // Fresh pages are zeroed; refs are consecutive.
    assert!(read(s.as_ptr(), s.len()).iter().all(|&b| b == 0));
    assert_eq!(s.refs()[1].0, s.refs()[0].0 + 1);
    fill_pattern(s.as_ptr(), 3);

    let mut c = spawn(
        "shared_pages_are_written_and_read_across_processes",
        "map-check-write",
        host.path(),
        DomId(1),
        &[
            ("REFS", refs_to_string(s.refs())),
            ("ORDER", "0,1,2".into()),
        ],
    );
    c.expect("DONE");
    c.wait_success();
    assert_eq!(read(s.as_ptr().wrapping_add(s.len() - 5), 5), b"dom1!");
    // The child is gone and so is its mapping; the share lives on.
    support::eventually("the child's mapping is released", || {
        let st = host.broker.stats();
        (st.mappings, st.shares, st.shared_pages) == (0, 1, 3)
    });
}

#[test]
fn a_1mib_ring_and_its_control_page_map_contiguously_in_any_order() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let sharer = host.backend(0).grant_sharer().unwrap();
    // As a vchan server does: the control page, then the ring, as separate shares.
    let ctrl = sharer.share(DomId(1), 1, Access::ReadWrite).unwrap();
    let ring = sharer.share(DomId(1), 256, Access::ReadWrite).unwrap();
    fill_pattern(ctrl.as_ptr(), 1);
    // Ring page i carries the pattern of page i + 1, so that page numbers are unique.
    let fill_ring = || {
        for p in 0..256 {
            let bytes: Vec<u8> = (0..PAGE_SIZE).map(|i| pattern(p + 1, i)).collect();
            write(ring.as_ptr().wrapping_add(p * PAGE_SIZE), &bytes);
        }
    };
    fill_ring();

    // 257 pages from two shares in one mapping (reservation + MAP_FIXED pieces).
    let mut refs = ctrl.refs().to_vec();
    refs.extend_from_slice(ring.refs());
    let order: Vec<usize> = (0..257).collect();
    let order_s = |o: &[usize]| {
        o.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut c = spawn(
        "a_1mib_ring_and_its_control_page_map_contiguously_in_any_order",
        "map-check-write",
        host.path(),
        DomId(1),
        &[("REFS", refs_to_string(&refs)), ("ORDER", order_s(&order))],
    );
    c.expect("DONE");
    c.wait_success();
    assert_eq!(
        read(ring.as_ptr().wrapping_add(ring.len() - 5), 5),
        b"dom1!"
    );
    fill_ring();

    // Scattered: the ring's pages reversed, then the control page.
    let mut refs: Vec<GrantRef> = ring.refs().iter().rev().copied().collect();
    refs.push(ctrl.refs()[0]);
    let mut order: Vec<usize> = (1..=256).rev().collect();
    order.push(0);
    let mut c = spawn(
        "a_1mib_ring_and_its_control_page_map_contiguously_in_any_order",
        "map-check-write",
        host.path(),
        DomId(1),
        &[("REFS", refs_to_string(&refs)), ("ORDER", order_s(&order))],
    );
    c.expect("DONE");
    c.wait_success();
    assert_eq!(read(ctrl.as_ptr().wrapping_add(PAGE_SIZE - 5), 5), b"dom1!");
}

#[test]
fn only_the_grantee_domain_can_map() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1, 2]);
    let s = host
        .backend(0)
        .grant_sharer()
        .unwrap()
        .share(DomId(1), 2, Access::ReadWrite)
        .unwrap();
    let mut c = spawn(
        "only_the_grantee_domain_can_map",
        "map-denied",
        host.path(),
        DomId(2),
        &[("REFS", refs_to_string(s.refs()))],
    );
    let said = c.expect("DENIED");
    c.wait_success();
    let first = s.refs()[0];
    assert!(
        said.starts_with(&format!("0 {first} ")),
        "error names the wrong domain or ref: {said}"
    );
    assert!(
        said.contains("granted to domain 1, not to domain 2"),
        "unclear error: {said}"
    );
    assert_eq!(host.broker.stats().mappings, 0);

    // The same checks in-process, for the other ways to be refused.
    let mapper1 = host.backend(1).grant_mapper().unwrap();
    let unknown = GrantRef(first.0 + 1000);
    match mapper1.map(DomId(0), &[unknown], Access::ReadOnly) {
        Err(Error::GrantDenied {
            granter,
            gref,
            reason,
        }) => {
            assert_eq!((granter, gref), (DomId(0), unknown));
            assert!(reason.contains("no such grant"), "{reason}");
        }
        other => panic!("unknown ref mapped: {other:?}"),
    }
    match mapper1.map(DomId(9), &[first], Access::ReadOnly) {
        Err(Error::GrantDenied { granter, .. }) => assert_eq!(granter, DomId(9)),
        other => panic!("ref of a missing domain mapped: {other:?}"),
    }
    // A read-only grant cannot be mapped writable.
    let ro = host
        .backend(0)
        .grant_sharer()
        .unwrap()
        .share(DomId(1), 1, Access::ReadOnly)
        .unwrap();
    match mapper1.map(DomId(0), ro.refs(), Access::ReadWrite) {
        Err(e @ Error::GrantDenied { .. }) => {
            assert!(e.to_string().contains("read-only"), "{e}")
        }
        other => panic!("read-only grant mapped writable: {other:?}"),
    }
    assert!(mapper1.map(DomId(0), ro.refs(), Access::ReadOnly).is_ok());
    // Ended grants cannot be mapped any more.
    let refs = s.refs().to_vec();
    drop(s);
    match mapper1.map(DomId(0), &refs, Access::ReadOnly) {
        Err(Error::GrantDenied { reason, .. }) => assert!(reason.contains("no such grant")),
        other => panic!("ended grant mapped: {other:?}"),
    }
}

#[test]
fn read_only_mappings_cannot_be_written() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let s = host
        .backend(0)
        .grant_sharer()
        .unwrap()
        .share(DomId(1), 1, Access::ReadWrite)
        .unwrap();
    fill_pattern(s.as_ptr(), 1);
    let mut c = spawn(
        "read_only_mappings_cannot_be_written",
        "read-only-write",
        host.path(),
        DomId(1),
        &[("REFS", refs_to_string(s.refs()))],
    );
    c.expect("READ");
    let status = c.wait();
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "a write to a read-only mapping did not fault: {status}"
    );
    check_pattern(s.as_ptr(), &[0]);
    support::eventually("the dead child's mapping is released", || {
        host.broker.stats().mappings == 0
    });
}

/// Shares a page with domain 1, binds a port for it, starts a "notify-mapper" child and waits
/// for it to be ready; then `how` is sent and the notification is awaited. Done twice: with
/// the child's event-channel handle opened before and after its grant mapper.
fn unmap_notify_case(test: &str, how: &str) {
    for open in ["evtchn-first", "evtchn-last"] {
        unmap_notify_once(test, how, open);
    }
}

fn unmap_notify_once(test: &str, how: &str, open: &str) {
    let host = Host::new(&[0, 1]);
    let b0 = host.backend(0);
    let ev = b0.event_channels().unwrap();
    let port = ev.bind_unbound(DomId(1)).unwrap();
    let s = b0
        .grant_sharer()
        .unwrap()
        .share(DomId(1), 2, Access::ReadWrite)
        .unwrap();
    support::write_byte(s.as_ptr().wrapping_add(22), 1);
    let mut c = spawn(
        test,
        "notify-mapper",
        host.path(),
        DomId(1),
        &[
            ("REFS", refs_to_string(s.refs())),
            ("PORT", port.0.to_string()),
            ("OPEN", open.into()),
        ],
    );
    c.expect("READY");
    assert_eq!(ev.pending().unwrap(), None);
    assert_eq!(read_byte(s.as_ptr().wrapping_add(22)), 1);
    match how {
        "kill" => c.kill(),
        _ => c.send(how),
    }
    let fired = ev.wait(Some(support::DEADLINE)).unwrap();
    assert_eq!(fired, Some(port), "no unmap notification ({how}, {open})");
    assert_eq!(
        read_byte(s.as_ptr().wrapping_add(22)),
        0,
        "notify byte not cleared ({how}, {open})"
    );
    assert_eq!(read_byte(s.as_ptr().wrapping_add(23)), 0);
    if how == "unmap" {
        c.expect("UNMAPPED");
        c.send("bye");
        c.wait_success();
    } else if how == "exit" {
        c.wait_success();
    } else {
        assert_eq!(c.wait().signal(), Some(libc::SIGKILL));
    }
    // The child's mapping and port are gone (the host may still be reading the end of its
    // other connection) and ours reverts to unbound: only ours is left.
    support::eventually("the child's port and mapping are released", || {
        let st = host.broker.stats();
        (st.mappings, st.ports) == (0, 1)
    });
}

#[test]
fn unmap_notify_fires_on_unmap() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    unmap_notify_case("unmap_notify_fires_on_unmap", "unmap");
}

#[test]
fn unmap_notify_fires_on_exit_without_unmapping() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    unmap_notify_case("unmap_notify_fires_on_exit_without_unmapping", "exit");
}

#[test]
fn unmap_notify_fires_when_the_mapper_is_killed() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    unmap_notify_case("unmap_notify_fires_when_the_mapper_is_killed", "kill");
}

#[test]
fn unmap_notify_fires_when_the_sharer_is_killed() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let b0 = host.backend(0);
    let mut c = spawn(
        "unmap_notify_fires_when_the_sharer_is_killed",
        "notify-sharer",
        host.path(),
        DomId(1),
        &[],
    );
    let said = c.expect("READY");
    let (gref, rport) = said.split_once(' ').unwrap();
    let gref = GrantRef(gref.parse().unwrap());
    let ev = b0.event_channels().unwrap();
    let port = ev
        .bind_interdomain(DomId(1), vchan_xenif::EventPort(rport.parse().unwrap()))
        .unwrap();
    let m = b0
        .grant_mapper()
        .unwrap()
        .map(DomId(1), &[gref], Access::ReadOnly)
        .unwrap();
    assert_eq!(read_byte(m.as_ptr().wrapping_add(21)), 1);
    c.kill();
    assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(port));
    // Cleared by the host through its own descriptor: the sharer is dead and our mapping is
    // read-only, yet the byte we see is 0.
    assert_eq!(read_byte(m.as_ptr().wrapping_add(21)), 0);
    assert_eq!(c.wait().signal(), Some(libc::SIGKILL));
    support::eventually("the sharer's share and port are released", || {
        let st = host.broker.stats();
        (st.shares, st.mappings, st.ports) == (0, 1, 1)
    });
    // The grant ended with its sharer.
    let e = b0
        .grant_mapper()
        .unwrap()
        .map(DomId(1), &[gref], Access::ReadOnly)
        .unwrap_err();
    assert!(matches!(e, Error::GrantDenied { .. }), "{e}");
}

#[test]
fn domain_release_releases_everything_it_held() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let b0 = host.backend(0);
    let ev = b0.event_channels().unwrap();
    let port = ev.bind_unbound(DomId(1)).unwrap();
    let s = b0
        .grant_sharer()
        .unwrap()
        .share(DomId(1), 1, Access::ReadWrite)
        .unwrap();
    support::write_byte(s.as_ptr().wrapping_add(22), 1);
    let mut c = spawn(
        "domain_release_releases_everything_it_held",
        "notify-mapper",
        host.path(),
        DomId(1),
        &[
            ("REFS", refs_to_string(s.refs())),
            ("PORT", port.0.to_string()),
            ("OPEN", "evtchn-first".into()),
        ],
    );
    c.expect("READY");
    let socket = vchan_xenif::sim::host_socket(host.path(), DomId(1));
    assert!(socket.exists());
    assert!(host.broker.domain_released(DomId(1)));
    assert!(!host.broker.domain_released(DomId(1)));
    assert!(!socket.exists());
    // Its mapping's notification fired, although its process still runs.
    assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(port));
    assert_eq!(read_byte(s.as_ptr().wrapping_add(22)), 0);
    // The process's handles are dead: it gets a clear error.
    c.send("map-again");
    let again = c.expect("AGAIN");
    let (old, new) = again.split_once(" | ").unwrap();
    assert!(
        old.contains("closed the connection of domain 1") && old.contains("released"),
        "unclear error on a released domain's handle: {old}"
    );
    assert!(new.contains("cannot connect"), "unclear error: {new}");
    c.send("bye");
    c.wait_success();
    let st = host.broker.stats();
    assert_eq!(
        (st.domains, st.mappings, st.ports, st.connections),
        (1, 0, 1, 2)
    );

    // Created again, the domain can connect to our port, which reverted to unbound.
    host.broker.domain_created(DomId(1)).unwrap();
    let ev1 = host.backend(1).event_channels().unwrap();
    let p1 = ev1.bind_interdomain(DomId(0), port).unwrap();
    ev.unmask(port).unwrap();
    ev1.notify(p1).unwrap();
    assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(port));
}

#[test]
fn exhausted_limits_give_clear_errors() {
    let config = BrokerConfig {
        max_grants_per_domain: 16,
        max_mapped_pages_per_domain: 4,
        max_connections_per_domain: 3,
        ..BrokerConfig::default()
    };
    let host = Host::with_config(config, &[0, 1]);
    let sharer = host.backend(0).grant_sharer().unwrap();
    let a = sharer.share(DomId(1), 10, Access::ReadWrite).unwrap();
    match sharer.share(DomId(1), 7, Access::ReadWrite) {
        Err(Error::GrantLimit { requested, hint }) => {
            assert_eq!(requested, 7);
            assert!(hint.contains("10 of its 16"), "{hint}");
            assert!(hint.contains("max_grants_per_domain"), "{hint}");
        }
        other => panic!("grant limit not enforced: {other:?}"),
    }
    let b = sharer.share(DomId(1), 6, Access::ReadWrite).unwrap();
    drop(a);
    let _c = sharer.share(DomId(1), 10, Access::ReadWrite).unwrap();
    assert_eq!(host.broker.stats().shared_pages, 16);

    // Nonsense arguments.
    assert!(matches!(
        sharer.share(DomId(1), 0, Access::ReadWrite),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        sharer.share(DomId(0x7FF5), 1, Access::ReadWrite),
        Err(Error::InvalidArgument(_))
    ));
    let mapper = host.backend(1).grant_mapper().unwrap();
    assert!(matches!(
        mapper.map(DomId(0), &[], Access::ReadOnly),
        Err(Error::InvalidArgument(_))
    ));
    let too_many = vec![b.refs()[0]; 4097];
    assert!(matches!(
        mapper.map(DomId(0), &too_many, Access::ReadOnly),
        Err(Error::InvalidArgument(_))
    ));

    // Mapped pages: 4 at most.
    let m = mapper
        .map(DomId(0), &b.refs()[..4], Access::ReadOnly)
        .unwrap();
    match mapper.map(DomId(0), &b.refs()[4..5], Access::ReadOnly) {
        Err(e @ Error::Sim { .. }) => {
            assert!(e.to_string().contains("max_mapped_pages_per_domain"), "{e}")
        }
        other => panic!("mapping limit not enforced: {other:?}"),
    }
    drop(m);
    let _m = mapper
        .map(DomId(0), &b.refs()[..1], Access::ReadOnly)
        .unwrap();

    // Handles: domain 1 has a mapper; two more fit, the fourth is refused.
    let _e1 = host.backend(1).event_channels().unwrap();
    let _e2 = host.backend(1).grant_sharer().unwrap();
    match host.backend(1).grant_mapper() {
        Err(e @ Error::Sim { .. }) => {
            assert!(e.to_string().contains("max_connections_per_domain"), "{e}")
        }
        other => panic!("handle limit not enforced: {other:?}"),
    }
    // Unmap-notify offsets outside the region, and clearing a byte of a read-only mapping.
    assert!(matches!(
        b.set_unmap_notify(UnmapNotify {
            clear_byte: Some(6 * PAGE_SIZE),
            event: None
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        _m.set_unmap_notify(UnmapNotify {
            clear_byte: Some(0),
            event: None
        }),
        Err(Error::InvalidArgument(_))
    ));
    // A port that is not bound cannot be registered.
    assert!(matches!(
        b.set_unmap_notify(UnmapNotify {
            clear_byte: Some(1),
            event: Some(vchan_xenif::EventPort(77))
        }),
        Err(Error::Port { .. })
    ));
}

#[test]
fn a_missing_host_or_domain_is_a_clear_error() {
    let host = Host::new(&[0]);
    match host.backend(5).grant_sharer() {
        Err(e @ Error::Sim { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("domain 5"), "{msg}");
            assert!(msg.contains("vchan sim"), "{msg}");
        }
        other => panic!("connected to a missing domain: {other:?}"),
    }
    let nowhere = Backend::Sim {
        dir: host.path().join("nope"),
        domid: DomId(0),
    };
    assert!(matches!(nowhere.event_channels(), Err(Error::Sim { .. })));
    // The broker refuses to serve a domain twice or a reserved id.
    assert!(host.broker.domain_created(DomId(0)).is_err());
    assert!(host.broker.domain_created(DomId(0x7FF0)).is_err());
}
