//! The XenStore client against the simulated xenstored (embedded host, real Unix sockets).

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vchan_xenif::DomId;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::xenstore::{Client, DomIdSources, Error, ErrorCode, MsgType, Perm, WatchEvent};

fn host(domains: &[u16]) -> (tempfile::TempDir, SimHost) {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::builder(dir.path())
        .domains(domains.iter().map(|&d| DomId(d)))
        .start()
        .unwrap();
    (dir, host)
}

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

#[test]
fn basic_operations_and_relative_paths() {
    let (_d, host) = host(&[5]);
    let xs = host.client(DomId(5)).unwrap();
    assert_eq!(xs.read_string("domid").unwrap(), "5");
    assert_eq!(xs.read_string("name").unwrap(), "dom5");
    xs.write("data/a/b", "value").unwrap();
    assert_eq!(xs.read("/local/domain/5/data/a/b").unwrap(), b"value");
    assert_eq!(xs.directory("data/a").unwrap(), vec!["b".to_string()]);
    xs.mkdir("data/dir").unwrap();
    xs.mkdir("data/dir").unwrap();
    assert_eq!(xs.read("data/dir").unwrap(), b"");
    assert!(xs.exists("data/a").unwrap());
    xs.rm("data/a").unwrap();
    assert!(!xs.exists("data/a").unwrap());
    assert_eq!(xs.try_read("data/a/b").unwrap(), None);
    let err = xs.read("data/a/b").unwrap_err();
    assert!(err.is_not_found());
    let msg = err.to_string();
    assert!(
        msg.contains("XS_READ") && msg.contains("data/a/b") && msg.contains("ENOENT"),
        "{msg}"
    );
    assert_eq!(
        xs.get_domain_path(DomId(9)).unwrap(),
        "/local/domain/9".to_string()
    );
    // Binary values with NULs survive.
    xs.write("data/bin", [0u8, 1, 0, 255]).unwrap();
    assert_eq!(xs.read("data/bin").unwrap(), vec![0, 1, 0, 255]);
}

#[test]
fn bad_input_is_refused_before_sending() {
    let (_d, host) = host(&[]);
    let xs = host.client(DomId::DOM0).unwrap();
    for bad in ["", "/a//b", "/a/", "/a b", "@releaseDomain"] {
        match xs.read(bad) {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let long = format!("/{}", "x".repeat(3072));
    assert!(matches!(
        xs.write(&long, "v"),
        Err(Error::InvalidPath { .. })
    ));
    let err = xs.write("/big", vec![b'v'; 5000]).unwrap_err();
    assert!(err.to_string().contains("at most 4096"), "{err}");
    assert!(matches!(
        xs.set_perms("/x", &[]),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn large_directory_uses_directory_part() {
    let (_d, host) = host(&[]);
    let xs = host.client(DomId::DOM0).unwrap();
    let names: Vec<String> = (0..600).map(|i| format!("entry-number-{i:05}")).collect();
    xs.transaction(|tx| {
        for n in &names {
            tx.write(&format!("/big/{n}"), "x")?;
        }
        Ok(())
    })
    .unwrap();
    let listed = xs.directory("/big").unwrap();
    assert_eq!(listed, names);
}

#[test]
fn transaction_conflict_and_retry_helper() {
    let (_d, host) = host(&[]);
    let a = host.client(DomId::DOM0).unwrap();
    let b = host.client(DomId::DOM0).unwrap();
    a.write("/counter", "0").unwrap();

    let tx = a.begin().unwrap();
    assert_eq!(tx.read_string("/counter").unwrap(), "0");
    b.write("/counter", "7").unwrap();
    tx.write("/counter", "1").unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(a.read_string("/counter").unwrap(), "7");

    // Dropping a transaction aborts it.
    {
        let tx = a.begin().unwrap();
        tx.write("/dropped", "x").unwrap();
    }
    assert!(!a.exists("/dropped").unwrap());

    // Contending increments through the helper all land.
    a.write("/counter", "0").unwrap();
    let threads = 4;
    let per = 25;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let c = host.client(DomId::DOM0).unwrap();
            s.spawn(move || {
                for _ in 0..per {
                    c.transaction(|tx| {
                        let n: u32 = tx.read_string("/counter")?.parse().unwrap();
                        tx.write("/counter", (n + 1).to_string())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(
        a.read_string("/counter").unwrap(),
        (threads * per).to_string()
    );
}

#[test]
fn many_threads_share_one_client() {
    let (_d, host) = host(&[]);
    let xs = host.client(DomId::DOM0).unwrap();
    let watch = xs.watch("/mt", "t").unwrap();
    assert_eq!(watch.next_event().unwrap(), ev("/mt", "t"));
    std::thread::scope(|s| {
        for t in 0..8 {
            let xs = &xs;
            s.spawn(move || {
                for i in 0..100 {
                    let p = format!("/mt/{t}/{i}");
                    xs.write(&p, format!("{t}-{i}")).unwrap();
                    assert_eq!(xs.read_string(&p).unwrap(), format!("{t}-{i}"));
                }
            });
        }
    });
    // Every write fired exactly one event, interleaved with the replies.
    let mut n = 0;
    while watch
        .next_timeout(Duration::from_millis(200))
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 800);
}

#[test]
fn watches_iterate_and_poll() {
    let (_d, host) = host(&[5]);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let xs = host.client(DomId(5)).unwrap();
    let mut watch = xs.watch("data", "rel").unwrap();
    let abs = xs.watch("/local/domain/5/data/x", "abs").unwrap();
    assert_eq!(watch.next().unwrap().unwrap(), ev("data", "rel"));
    assert_eq!(
        abs.next_event().unwrap(),
        ev("/local/domain/5/data/x", "abs")
    );

    // Nothing pending: the descriptor does not poll readable.
    let readable = |w: &dyn AsFd, ms: u16| {
        let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() == 1
    };
    assert!(!readable(&watch, 0));
    dom0.write("/local/domain/5/data/x", "1").unwrap();
    assert!(readable(&watch, 2000));
    assert_eq!(watch.try_next().unwrap(), Some(ev("data/x", "rel")));
    assert!(!readable(&watch, 0));
    assert_eq!(watch.try_next().unwrap(), None);
    assert_eq!(
        abs.next_event().unwrap(),
        ev("/local/domain/5/data/x", "abs")
    );

    // Removing a parent fires the exact watch below it too.
    xs.rm("data/x").unwrap();
    assert_eq!(watch.next_event().unwrap(), ev("data/x", "rel"));
    assert_eq!(
        abs.next_event().unwrap(),
        ev("/local/domain/5/data/x", "abs")
    );

    // Another thread blocks on the iterator.
    let w = std::thread::spawn(move || watch.next().unwrap().unwrap());
    std::thread::sleep(Duration::from_millis(50));
    xs.write("data/y", "2").unwrap();
    assert_eq!(w.join().unwrap(), ev("data/y", "rel"));

    // Same token on overlapping paths: each watch gets exactly its own events.
    let outer = xs.watch("/local/domain/5/data", "same").unwrap();
    let inner = xs.watch("/local/domain/5/data/z", "same").unwrap();
    assert_eq!(outer.next_event().unwrap().path, "/local/domain/5/data");
    assert_eq!(inner.next_event().unwrap().path, "/local/domain/5/data/z");
    xs.write("data/z", "1").unwrap();
    assert_eq!(
        outer.next_event().unwrap(),
        ev("/local/domain/5/data/z", "same")
    );
    assert_eq!(
        inner.next_event().unwrap(),
        ev("/local/domain/5/data/z", "same")
    );
    for w in [&outer, &inner, &abs] {
        assert_eq!(w.next_timeout(Duration::from_millis(20)).unwrap(), None);
    }
    // Dropping a watch unregisters it: no more events reach the server's queue for it.
    drop(inner);
    xs.write("data/z", "2").unwrap();
    assert_eq!(outer.next_event().unwrap().path, "/local/domain/5/data/z");
}

#[test]
fn request_timeout_names_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // A server that accepts and never answers.
    let keep = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let xs = Client::connect_to(&sock).unwrap();
    xs.set_timeout(Some(Duration::from_millis(100)));
    let t0 = Instant::now();
    let err = xs.read("/never").unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(100));
    match &err {
        Error::Timeout { op, path, .. } => {
            assert_eq!(*op, MsgType::Read);
            assert_eq!(path, "/never");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("set_timeout"), "{err}");
    drop(keep.join());
}

#[test]
fn connect_errors_list_what_was_tried() {
    let err = Client::connect_to("/nonexistent/xenstored.sock").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/xenstored.sock") && msg.contains("XENSTORED_PATH"),
        "{msg}"
    );
}

/// `Client::connect()` reads the environment: check its order in child processes that get
/// exactly the environment under test.
#[test]
fn connect_follows_the_environment() {
    let (_d, host) = host(&[3]);
    let exe = std::env::current_exe().unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["--exact", "connect_child", "--ignored", "--nocapture"])
            .env_remove("XENSTORED_PATH")
            .env_remove("VCHAN_SIM_DIR")
            .env_remove("VCHAN_SIM_DOMID")
            .env("XENSTORED_RUNDIR", "/nonexistent-rundir");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = host.dir().to_str().unwrap();
    let sock3 = host.xenstore_socket(DomId(3));
    let out = run(&[("XENSTORED_PATH", sock3.to_str().unwrap())]);
    assert!(out.contains("CHILD-DOMID 3"), "{out}");
    let out = run(&[("VCHAN_SIM_DIR", dir), ("VCHAN_SIM_DOMID", "3")]);
    assert!(out.contains("CHILD-DOMID 3"), "{out}");
    let out = run(&[]);
    assert!(
        out.contains("CHILD-ERR")
            && out.contains("/nonexistent-rundir/socket")
            && out.contains("/dev/xen/xenbus"),
        "{out}"
    );
    // An explicit but wrong XENSTORED_PATH is an error, not a silent fallback.
    let out = run(&[
        ("XENSTORED_PATH", "/nonexistent/sock"),
        ("VCHAN_SIM_DIR", dir),
        ("VCHAN_SIM_DOMID", "3"),
    ]);
    assert!(
        out.contains("CHILD-ERR") && out.contains("/nonexistent/sock"),
        "{out}"
    );
}

#[test]
#[ignore = "run by connect_follows_the_environment in a child process"]
fn connect_child() {
    match Client::connect().and_then(|c| c.read_string("domid")) {
        Ok(d) => println!("CHILD-DOMID {d}"),
        Err(e) => println!("CHILD-ERR {e}"),
    }
}

#[test]
fn own_domid_falls_back_when_the_domid_key_is_missing() {
    let (d, host) = host(&[5]);
    let dom0 = host.client(DomId::DOM0).unwrap();
    let xs = host.client(DomId(5)).unwrap();
    let no_caps = DomIdSources {
        capabilities: d.path().join("no-capabilities"),
        sim_domid: None,
    };
    assert_eq!(xs.own_domid_with(&no_caps).unwrap(), DomId(5));

    // The Xen 4.2 failure: the toolstack did not write the key.
    dom0.rm("/local/domain/5/domid").unwrap();
    assert!(xs.read("domid").unwrap_err().is_not_found());
    assert_eq!(xs.own_domid_with(&no_caps).unwrap(), DomId(5));
    // Owner of `data` gone too: the `name` node names us in its permissions.
    dom0.rm("/local/domain/5/data").unwrap();
    assert_eq!(xs.own_domid_with(&no_caps).unwrap(), DomId(5));

    // Dom0 without its key: /proc/xen/capabilities says control_d.
    dom0.rm("/local/domain/0/domid").unwrap();
    let caps = d.path().join("capabilities");
    std::fs::write(&caps, "control_d\n").unwrap();
    let with_caps = DomIdSources {
        capabilities: caps,
        sim_domid: None,
    };
    assert_eq!(dom0.own_domid_with(&with_caps).unwrap(), DomId::DOM0);
    // ... and without capabilities, the owner of its data directory.
    assert_eq!(dom0.own_domid_with(&no_caps).unwrap(), DomId::DOM0);

    // Nothing left in the home directory: only the simulated host's variable helps.
    dom0.rm("/local/domain/5").unwrap();
    let err = xs.own_domid_with(&no_caps).unwrap_err();
    let msg = err.to_string();
    for what in [
        "domid",
        "no-capabilities",
        "`data`",
        "`name`",
        "VCHAN_SIM_DOMID",
    ] {
        assert!(msg.contains(what), "{what} missing from: {msg}");
    }
    let sim = DomIdSources {
        capabilities: d.path().join("no-capabilities"),
        sim_domid: Some("5".into()),
    };
    assert_eq!(xs.own_domid_with(&sim).unwrap(), DomId(5));
}

#[test]
fn released_domain_sees_its_connection_close() {
    let (_d, host) = host(&[4]);
    let xs = host.client(DomId(4)).unwrap();
    let mut watch = xs.watch("data", "t").unwrap();
    assert!(watch.next().is_some());
    host.destroy_domain(DomId(4)).unwrap();
    // The iterator ends, requests fail with a clear error.
    assert!(watch.next().is_none());
    let err = xs.read("domid").unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(err.to_string().contains("closed"), "{err}");
}

/// Takes a domain's whole watch and transaction quota.
fn take_quotas(xs: &Client) -> (Vec<vchan_xenif::xenstore::Watch>, Vec<u32>) {
    let watches: Vec<_> = (0..128)
        .map(|i| xs.watch("data", &format!("w{i}")).unwrap())
        .collect();
    let err = xs.watch("data", "one-too-many").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::E2BIG), "{err}");
    let mut txs = Vec::new();
    for _ in 0..10 {
        let tx = xs.begin().unwrap();
        txs.push(tx.id());
        std::mem::forget(tx); // left open
    }
    let err = xs.begin().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ENOSPC), "{err}");
    (watches, txs)
}

#[test]
fn process_death_drops_its_watches_and_transactions() {
    let (_d, host) = host(&[2]);
    let base = host.connection_count();
    let exe = std::env::current_exe().unwrap();
    // A process that takes the whole quota and exits without cleaning up.
    let out = std::process::Command::new(exe)
        .args(["--exact", "quota_child", "--ignored", "--nocapture"])
        .env("VCHAN_SIM_DIR", host.dir())
        .env("VCHAN_SIM_DOMID", "2")
        .env_remove("XENSTORED_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("QUOTA-TAKEN"), "{stdout}");
    // EOF on its connection: the server forgets it with its watches and transactions.
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.connection_count() > base && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(host.connection_count(), base);
    let xs = host.client(DomId(2)).unwrap();
    let _ = take_quotas(&xs);
}

#[test]
#[ignore = "run by process_death_drops_its_watches_and_transactions in a child process"]
fn quota_child() {
    let xs = Client::connect().unwrap();
    let kept = take_quotas(&xs);
    println!("QUOTA-TAKEN");
    std::mem::forget(kept);
    std::process::exit(0);
}

#[test]
fn clients_of_a_shared_arc_and_clones_work_after_original_drops() {
    let (_d, host) = host(&[]);
    let xs = Arc::new(host.client(DomId::DOM0).unwrap());
    let clone = (*xs).clone();
    drop(xs);
    clone.write("/still", "here").unwrap();
    assert_eq!(clone.read_string("/still").unwrap(), "here");
    assert_eq!(
        clone.endpoint(),
        Path::new(&host.xenstore_socket(DomId::DOM0))
    );
}

#[test]
fn permissions_set_in_a_transaction_as_the_vchan_server_does() {
    let (_d, host) = host(&[1, 2]);
    let server = host.client(DomId(1)).unwrap();
    let client = host.client(DomId(2)).unwrap();
    let other = host.client(DomId::DOM0).unwrap();
    let base = "/local/domain/1/data/vchan/2/5000";
    server
        .transaction(|tx| {
            for (k, v) in [("ring-ref", "8"), ("event-channel", "33")] {
                let p = format!("{base}/{k}");
                tx.write(&p, v)?;
                tx.set_perms(&p, &[Perm::none(DomId(1)), Perm::read(DomId(2))])?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        client.read_string(&format!("{base}/ring-ref")).unwrap(),
        "8"
    );
    assert_eq!(
        client
            .read_string(&format!("{base}/event-channel"))
            .unwrap(),
        "33"
    );
    assert!(
        client
            .write(&format!("{base}/ring-ref"), "9")
            .unwrap_err()
            .is_permission_denied()
    );
    assert_eq!(
        other.get_perms(&format!("{base}/ring-ref")).unwrap(),
        vec![Perm::none(DomId(1)), Perm::read(DomId(2))]
    );
    server.rm(base).unwrap();
    assert!(!other.exists(base).unwrap());
}

/// A hand-written "xenstored" that answers each request with whatever `answer` returns
/// (raw bytes), to check the client against a misbehaving daemon.
fn fake_xenstored(
    answer: impl Fn(&vchan_xenif::xenstore::wire::Message) -> Vec<u8> + Send + 'static,
) -> (tempfile::TempDir, Client) {
    use std::io::Write;
    use vchan_xenif::xenstore::wire;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        while let Ok(Some(m)) = wire::read_message(&mut s) {
            if s.write_all(&answer(&m)).is_err() {
                break;
            }
        }
    });
    let xs = Client::connect_to(&sock).unwrap();
    xs.set_timeout(Some(Duration::from_secs(5)));
    (dir, xs)
}

fn raw(kind: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [kind, req_id, 0, payload.len() as u32] {
        v.extend_from_slice(&w.to_ne_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[test]
fn misbehaving_xenstored_gives_errors_not_hangs() {
    // Wrong reply type.
    let (_d, xs) = fake_xenstored(|m| raw(MsgType::Write as u32, m.req_id, b"OK\0"));
    let err = xs.read("/x").unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");

    // Unknown error name.
    let (_d, xs) = fake_xenstored(|m| raw(MsgType::Error as u32, m.req_id, b"EWEIRD\0"));
    assert!(matches!(xs.read("/x").unwrap_err(), Error::Protocol { .. }));

    // A header announcing more than the protocol allows: the connection is dropped.
    let (_d, xs) = fake_xenstored(|m| {
        let mut v = raw(m.msg_type, m.req_id, b"");
        v[12..16].copy_from_slice(&100_000u32.to_ne_bytes());
        v
    });
    let err = xs.read("/x").unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(err.to_string().contains("4096"), "{err}");

    // A directory that never ends: bounded.
    let (_d, xs) = fake_xenstored(|m| {
        if m.msg_type == MsgType::Directory as u32 {
            raw(MsgType::Error as u32, m.req_id, b"E2BIG\0")
        } else {
            let mut p = b"1\0".to_vec();
            for i in 0..100 {
                p.extend_from_slice(format!("name-{i:034}\0").as_bytes());
            }
            raw(MsgType::DirectoryPart as u32, m.req_id, &p)
        }
    });
    let err = xs.directory("/endless").unwrap_err();
    assert!(err.to_string().contains("16 MiB"), "{err}");

    // Replies for requests nobody made, and a transaction id that is not a number.
    let (_d, xs) = fake_xenstored(|m| {
        let mut v = raw(MsgType::Read as u32, m.req_id.wrapping_add(1000), b"stray");
        v.extend(raw(MsgType::TransactionStart as u32, m.req_id, b"abc\0"));
        v
    });
    assert!(matches!(xs.begin().unwrap_err(), Error::Protocol { .. }));
}

/// The way a vchan server advertises: write + set_perms in one transaction. A watcher in the
/// client domain, registered before, must see the keys appear at commit (the node was created
/// unreadable to it and made readable inside the transaction).
#[test]
fn watch_fires_for_a_node_made_readable_in_a_transaction() {
    let (_d, host) = host(&[1]);
    let d0 = host.client(DomId(0)).unwrap();
    let d1 = host.client(DomId(1)).unwrap();
    let key = "/local/domain/0/data/vchan/1/1/ring-ref";
    let w = d1.watch(key, "t").unwrap();
    assert_eq!(
        w.next_timeout(Duration::from_secs(5)).unwrap(),
        Some(ev(key, "t"))
    );
    d0.transaction(|tx| {
        tx.write(key, "5")?;
        tx.set_perms(key, &[Perm::none(DomId(0)), Perm::read(DomId(1))])?;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        w.next_timeout(Duration::from_secs(5)).unwrap(),
        Some(ev(key, "t"))
    );
    // A node nobody lets domain 1 read still fires nothing for it.
    let hidden = "/local/domain/0/data/vchan/1/1/secret";
    let w2 = d1.watch(hidden, "h").unwrap();
    assert!(w2.next_timeout(Duration::from_secs(5)).unwrap().is_some()); // registration
    d0.write(hidden, "x").unwrap();
    assert_eq!(w2.next_timeout(Duration::from_millis(300)).unwrap(), None);
}
