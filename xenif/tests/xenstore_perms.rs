//! XenStore permissions and quotas on the simulated xenstored, seen through the client.

use std::time::Duration;

use vchan_xenif::DomId;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::sim::xenstored::Quotas;
use vchan_xenif::xenstore::{ErrorCode, Perm, WatchEvent};

fn host_with(domains: &[u16], quotas: Quotas) -> (tempfile::TempDir, SimHost) {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::builder(dir.path())
        .domains(domains.iter().map(|&d| DomId(d)))
        .quotas(quotas)
        .start()
        .unwrap();
    (dir, host)
}

fn host(domains: &[u16]) -> (tempfile::TempDir, SimHost) {
    host_with(domains, Quotas::default())
}

#[test]
fn domain_5_cannot_read_what_only_domain_6_may_but_dom0_can() {
    let (_d, host) = host(&[5, 6]);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let d5 = host.client(DomId(5)).unwrap();
    let d6 = host.client(DomId(6)).unwrap();

    // Domain 6 writes in its own data directory: it owns the node, nobody else may read.
    d6.write("data/secret", "for six").unwrap();
    assert_eq!(
        d6.get_perms("data/secret").unwrap(),
        vec![Perm::none(DomId(6))]
    );
    let err = d5.read("/local/domain/6/data/secret").unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
    assert!(err.to_string().contains("EACCES"), "{err}");
    assert_eq!(
        dom0.read_string("/local/domain/6/data/secret").unwrap(),
        "for six"
    );
    // Probing for nodes that do not exist under it reveals nothing either.
    assert!(
        d5.read("/local/domain/6/data/nothing")
            .unwrap_err()
            .is_permission_denied()
    );
    assert!(
        d5.directory("/local/domain/6/data")
            .unwrap_err()
            .is_permission_denied()
    );
    assert!(
        d5.get_perms("/local/domain/6/data/secret")
            .unwrap_err()
            .is_permission_denied()
    );

    // A node dom0 made readable only by 6.
    dom0.write("/only-six", "x").unwrap();
    dom0.set_perms("/only-six", &[Perm::none(DomId(0)), Perm::read(DomId(6))])
        .unwrap();
    assert_eq!(d6.read_string("/only-six").unwrap(), "x");
    assert!(d5.read("/only-six").unwrap_err().is_permission_denied());
    assert!(
        d6.write("/only-six", "y")
            .unwrap_err()
            .is_permission_denied()
    );
    assert_eq!(dom0.read_string("/only-six").unwrap(), "x");

    // Granting 5 read access changes that; write stays refused.
    d6.set_perms("data/secret", &[Perm::none(DomId(6)), Perm::read(DomId(5))])
        .unwrap();
    assert_eq!(
        d5.read_string("/local/domain/6/data/secret").unwrap(),
        "for six"
    );
    assert!(
        d5.write("/local/domain/6/data/secret", "mine")
            .unwrap_err()
            .is_permission_denied()
    );
}

#[test]
fn ownership_rules() {
    let (_d, host) = host(&[5, 6]);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let d5 = host.client(DomId(5)).unwrap();
    // Its home is dom0's: readable, not writable.
    assert!(d5.write("domid", "6").unwrap_err().is_permission_denied());
    assert!(d5.write("newkey", "x").unwrap_err().is_permission_denied());
    assert!(d5.write("/tool/x", "x").unwrap_err().is_permission_denied());
    // New nodes inherit the parent's permissions, owned by their unprivileged creator.
    dom0.set_perms(
        "/local/domain/5/data",
        &[Perm::none(DomId(5)), Perm::read(DomId(6))],
    )
    .unwrap();
    d5.write("data/a/b", "v").unwrap();
    assert_eq!(
        d5.get_perms("data/a").unwrap(),
        vec![Perm::none(DomId(5)), Perm::read(DomId(6))]
    );
    // An unprivileged owner cannot give a node away; a non-owner cannot change it.
    let err = d5
        .set_perms("data/a/b", &[Perm::none(DomId(6))])
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::EPERM), "{err}");
    let d6 = host.client(DomId(6)).unwrap();
    let err = d6
        .set_perms("/local/domain/5/data/a/b", &[Perm::both(DomId(5))])
        .unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
    // Dom0 can.
    dom0.set_perms("/local/domain/5/data/a/b", &[Perm::none(DomId(6))])
        .unwrap();
    assert!(d5.read("data/a/b").unwrap_err().is_permission_denied());
    // Privileged operations.
    for r in [
        d5.introduce(DomId(9), 0, 0),
        d5.release(DomId(6)),
        d5.is_domain_introduced(DomId(6)).map(drop),
    ] {
        assert!(r.unwrap_err().is_permission_denied());
    }
}

#[test]
fn watch_events_respect_read_permission() {
    let (_d, host) = host(&[5, 6]);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let d5 = host.client(DomId(5)).unwrap();
    let w = d5.watch("/local/domain", "all").unwrap();
    assert_eq!(w.next_event().unwrap().path, "/local/domain");
    dom0.write("/local/domain/6/data/secret", "s").unwrap();
    dom0.write("/local/domain/5/data/mine", "m").unwrap();
    assert_eq!(
        w.next_event().unwrap(),
        WatchEvent {
            path: "/local/domain/5/data/mine".into(),
            token: "all".into()
        }
    );
    assert_eq!(w.next_timeout(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn special_watches_need_permission_on_the_special_node() {
    let (_d, host) = host(&[5]);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let d5 = host.client(DomId(5)).unwrap();
    let w5 = d5.watch("@releaseDomain", "rel").unwrap();
    let w0 = dom0.watch("@releaseDomain", "rel0").unwrap();
    let intro = dom0.watch("@introduceDomain", "in").unwrap();
    for w in [&w5, &w0, &intro] {
        assert!(w.next_event().unwrap().path.starts_with('@'));
    }
    host.create_domain(DomId(7), None).unwrap();
    assert_eq!(intro.next_event().unwrap().path, "@introduceDomain");
    host.destroy_domain(DomId(7)).unwrap();
    assert_eq!(w0.next_event().unwrap().path, "@releaseDomain");
    // Unprivileged: nothing (Xen XSA-115) ...
    assert_eq!(w5.next_timeout(Duration::from_millis(50)).unwrap(), None);
    // ... until dom0 lets it read the special node, as disaggregated setups do.
    assert!(
        d5.get_perms("@releaseDomain")
            .unwrap_err()
            .is_permission_denied()
    );
    dom0.set_perms(
        "@releaseDomain",
        &[Perm::none(DomId(0)), Perm::read(DomId(5))],
    )
    .unwrap();
    host.create_domain(DomId(8), None).unwrap();
    host.destroy_domain(DomId(8)).unwrap();
    assert_eq!(w5.next_event().unwrap().path, "@releaseDomain");
    assert_eq!(w0.next_event().unwrap().path, "@releaseDomain");
}

#[test]
fn quotas_answer_the_errors_xen_gives() {
    let quotas = Quotas {
        nodes_per_domain: 10,
        watches_per_domain: 3,
        transactions_per_connection: 2,
        perms_per_node: 3,
        value_size: 16,
        transaction_nodes: 6,
    };
    let (_d, host) = host_with(&[5], quotas);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let d5 = host.client(DomId(5)).unwrap();

    let err = d5.write("data/big", [b'x'; 17]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ENOSPC), "{err}");
    assert!(err.to_string().contains("quota"), "{err}");
    d5.write("data/big", [b'x'; 16]).unwrap();
    dom0.write("/dom0-big", [b'x'; 3000]).unwrap(); // dom0 is exempt

    // Nodes: `data` and `data/big` are owned already; 8 more fit.
    for i in 0..8 {
        d5.write(&format!("data/n{i}"), "v").unwrap();
    }
    let err = d5.write("data/one-more", "v").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ENOSPC), "{err}");
    d5.rm("data/n0").unwrap();
    d5.write("data/one-more", "v").unwrap();

    let _w: Vec<_> = (0..3)
        .map(|i| d5.watch("data", &i.to_string()).unwrap())
        .collect();
    assert_eq!(
        d5.watch("data", "x").unwrap_err().code(),
        Some(ErrorCode::E2BIG)
    );

    let t1 = d5.begin().unwrap();
    let _t2 = d5.begin().unwrap();
    assert_eq!(d5.begin().unwrap_err().code(), Some(ErrorCode::ENOSPC));

    // Transaction nodes: a transaction that has accessed 6 distinct nodes (missing ones
    // included) is refused further requests; outside it all goes on.
    let mut refused = None;
    for i in 0..20 {
        if let Err(e) = t1.exists(&format!("data/missing{i}")) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, err) = refused.expect("a transaction read 20 distinct nodes under a quota of 6");
    assert_eq!(err.code(), Some(ErrorCode::ENOSPC), "{err}");
    assert!((3..=6).contains(&i), "refused after {i} reads");
    d5.read("data/big").unwrap();
    t1.abort().unwrap();
    // dom0 is exempt.
    let t0 = dom0.begin().unwrap();
    for i in 0..20 {
        t0.exists(&format!("/local/domain/5/data/missing{i}"))
            .unwrap();
    }
    t0.abort().unwrap();

    let four = [
        Perm::none(DomId(5)),
        Perm::read(DomId(1)),
        Perm::read(DomId(2)),
        Perm::read(DomId(3)),
    ];
    assert_eq!(
        d5.set_perms("data/big", &four).unwrap_err().code(),
        Some(ErrorCode::ENOSPC)
    );
    d5.set_perms("data/big", &four[..3]).unwrap();
}
