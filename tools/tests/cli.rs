//! The `vchan` binary, run as real processes acting as domains of a simulated host embedded in
//! the test (its XenStore, grants and event channels are the real simulated-host machinery).

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;
use vchan_xenif::DomId;

#[test]
fn node_moves_a_file_each_way() {
    let h = host(&[1]);
    let data = pattern(1, 3 << 20);
    for (port, server_writes) in [(1, false), (2, true)] {
        let p = path(port);
        let (sdir, cdir) = if server_writes {
            ("write", "read")
        } else {
            ("read", "write")
        };
        let mut sc = h.vchan(0);
        sc.args(["node", "server", sdir, "1", &p, "--read-min", "64K"]);
        let mut cc = h.vchan(1);
        cc.args(["node", "client", cdir, "0", &p, "--wait", "30"]);
        if server_writes {
            sc.stdin(Stdio::piped());
        } else {
            cc.stdin(Stdio::piped());
        }
        let mut s = sc.spawn().unwrap();
        let mut c = cc.spawn().unwrap();
        let mut stdin = if server_writes {
            s.stdin.take()
        } else {
            c.stdin.take()
        }
        .unwrap();
        let d = data.clone();
        let feeder = thread::spawn(move || stdin.write_all(&d));
        let (so, co) = wait_both(s, c, Duration::from_secs(60));
        ok(&so, "node server");
        ok(&co, "node client");
        feeder.join().unwrap().unwrap();
        let got = if server_writes {
            &co.stdout
        } else {
            &so.stdout
        };
        assert!(
            *got == data,
            "server {sdir}: {} bytes arrived, or the content differs",
            got.len()
        );
        // The server removed its XenStore entries when it closed.
        let dom0 = h.host.client(DomId(0)).unwrap();
        assert!(!dom0.exists(&p).unwrap());
    }
}

#[test]
fn cat_carries_both_directions_at_once() {
    let h = host(&[1]);
    let p = path(3);
    let (a, b) = (pattern(2, 2 << 20), pattern(3, 1 << 20));
    let mut server = h
        .vchan(0)
        .args(["cat", "server", "1", &p, "--linger", "1"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = h
        .vchan(1)
        .args([
            "cat",
            "client",
            "0",
            &p,
            "--wait",
            "30",
            "--linger",
            "1",
            "--write-size",
            "1000",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut si, mut ci) = (server.stdin.take().unwrap(), client.stdin.take().unwrap());
    let (a2, b2) = (a.clone(), b.clone());
    let f1 = thread::spawn(move || si.write_all(&a2).unwrap());
    let f2 = thread::spawn(move || ci.write_all(&b2).unwrap());
    let (s, c) = wait_both(server, client, Duration::from_secs(60));
    f1.join().unwrap();
    f2.join().unwrap();
    ok(&s, "cat server");
    ok(&c, "cat client");
    assert!(
        c.stdout == a,
        "server→client: {} of {} bytes, or content differs",
        c.stdout.len(),
        a.len()
    );
    assert!(
        s.stdout == b,
        "client→server: {} of {} bytes, or content differs",
        s.stdout.len(),
        b.len()
    );
}

/// 1 GiB each way, verified, for the in-page layouts and every power of two up to 1 MiB.
#[test]
fn pump_a_gibibyte_each_way_for_each_ring_size() {
    let h = host(&[1]);
    let mut pairs = vec![("1K", "2K"), ("2K", "1K")];
    for s in [
        "4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M",
    ] {
        pairs.push((s, s));
    }
    pairs.push(("4K", "1M"));
    pairs.push(("1M", "4K"));
    for (k, (r, w)) in pairs.iter().enumerate() {
        let t = Instant::now();
        let (s, c) = pump(
            &h,
            100 + k as u32,
            &["--send", "1G", "--read-min", r, "--write-min", w],
            &["--send", "1G"],
        );
        ok(&s, "pump server");
        ok(&c, "pump client");
        let (sf, cf) = (result_fields(&s), result_fields(&c));
        assert_eq!(sf["recv"], "1073741824");
        assert_eq!(cf["recv"], "1073741824");
        assert_eq!(sf["verified"], "yes");
        eprintln!(
            "{r}/{w}: server→client {} MB/s, client→server {} MB/s ({:.1} s)",
            cf["recv_MBps"],
            sf["recv_MBps"],
            t.elapsed().as_secs_f64()
        );
    }
}

/// Every valid ring-size pair (orders 10..=20 both sides), 8 MiB each way: the geometry of
/// every layout, wrapping many times.
#[test]
fn pump_every_ring_size_pair() {
    let h = host(&[1]);
    let mut port = 1000;
    for lo in 10..=20u32 {
        for ro in 10..=20u32 {
            if lo == ro && lo < 12 {
                continue; // two rings cannot share one in-page slot
            }
            let (r, w) = ((1usize << lo).to_string(), (1usize << ro).to_string());
            // Sizes ≤ 2K are given as minimums; the server's choice then follows C's rules
            // (which may move a side to a granted ring): what matters is that both ends agree.
            let (s, c) = pump(
                &h,
                port,
                &["--send", "8M", "--read-min", &r, "--write-min", &w],
                &["--send", "8M"],
            );
            ok(&s, &format!("pump server {r}/{w}"));
            ok(&c, &format!("pump client {r}/{w}"));
            port += 1;
        }
    }
}

#[test]
fn a_killed_peer_ends_the_other_side_promptly() {
    let h = host(&[1]);
    for (port, kill_server) in [(20, true), (21, false)] {
        let p = path(port);
        let mut server = h
            .vchan(0)
            .args([
                "pump",
                "server",
                "1",
                &p,
                "--send",
                "100G",
                "--progress",
                "--read-min",
                "64K",
                "--write-min",
                "64K",
            ])
            .spawn()
            .unwrap();
        let mut client = h
            .vchan(1)
            .args(["pump", "client", "0", &p, "--send", "100G", "--wait", "30"])
            .spawn()
            .unwrap();
        // Let data flow first: the server reports progress on stderr, collected here.
        let err = server.stderr.take().unwrap();
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        let collector = thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok)
            {
                let _ = line_tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        loop {
            let line = line_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("no progress from the server");
            if line.starts_with("progress") && !line.contains("recv=0") {
                break;
            }
        }
        let (victim, survivor) = if kill_server {
            (&mut server, client)
        } else {
            (&mut client, server)
        };
        victim.kill().unwrap();
        let killed_at = Instant::now();
        victim.wait().unwrap();
        let mut out = wait_output(survivor, Duration::from_secs(10));
        let took = killed_at.elapsed();
        let server_err = collector.join().unwrap();
        if !kill_server {
            out.stderr = server_err.into_bytes();
        }
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("closed the channel"), "{msg}");
        assert!(
            took < Duration::from_millis(1000),
            "the survivor took {took:?} to notice"
        );
        eprintln!("peer killed (server={kill_server}): the other side exited after {took:?}");
    }
}

#[test]
fn a_restarted_server_serves_a_reconnecting_client() {
    let h = host(&[1]);
    let p = path(30);
    // A server that is killed leaves its XenStore entries behind (nothing runs its close).
    let mut first = h
        .vchan(0)
        .args(["pump", "server", "1", &p, "--send", "10G"])
        .spawn()
        .unwrap();
    let client = h
        .vchan(1)
        .args(["pump", "client", "0", &p, "--send", "10G", "--wait", "30"])
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    first.kill().unwrap();
    first.wait().unwrap();
    let out = wait_output(client, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    // The restarted server overwrites them; a new client connects and gets everything.
    let (s, c) = pump(&h, 30, &["--send", "16M"], &["--send", "16M"]);
    ok(&s, "restarted server");
    ok(&c, "reconnected client");
}

#[test]
fn set_up_errors_are_clear_and_have_their_exit_code() {
    let h = host(&[1, 2]);
    // No server at the path.
    let out = wait_output(
        h.vchan(1)
            .args(["node", "client", "read", "0", &path(50)])
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(3));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("no server is listening"), "{msg}");
    // A server for domain 2; domain 1 names the wrong server domain.
    let server = h
        .vchan(0)
        .args(["node", "server", "read", "1", &path(51)])
        .spawn()
        .unwrap();
    let out = wait_output(
        h.vchan(1)
            .args(["node", "client", "write", "2", &path(51), "--wait", "10"])
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("domain 2"), "{msg}");
    drop(server);
    // Ring too large.
    let out = wait_output(
        h.vchan(0)
            .args(["node", "server", "read", "1", &path(52), "--read-min", "2M"])
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 MiB"));
    // Neither Xen nor a simulated host.
    let out = Command::new(env!("CARGO_BIN_EXE_vchan"))
        .args(["node", "client", "read", "0", &path(53)])
        .env_remove("VCHAN_SIM_DIR")
        .env_remove("VCHAN_SIM_DOMID")
        .env_remove("XENSTORED_PATH")
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    if !std::path::Path::new("/dev/xen/evtchn").exists() {
        assert_eq!(out.status.code(), Some(3), "{msg}");
        assert!(msg.contains("vchan sim"), "{msg}");
    }
    // Bad usage is clap's exit code 2.
    let out = h
        .vchan(0)
        .args(["node", "server", "sideways", "1", "/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn xs_reads_and_writes_through_the_binary() {
    let h = host(&[1]);
    let out = h
        .vchan(1)
        .args(["xs", "write", "data/greeting", "hello"])
        .output()
        .unwrap();
    ok(&out, "xs write");
    let out = h
        .vchan(1)
        .args(["xs", "read", "data/greeting"])
        .output()
        .unwrap();
    ok(&out, "xs read");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    let out = h.vchan(1).args(["xs", "domid"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let out = h
        .vchan(1)
        .args(["xs", "read", "/local/domain/0/name"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn demo_runs_end_to_end() {
    let out = Command::new(env!("CARGO_BIN_EXE_vchan"))
        .args(["demo", "--bytes", "16M", "--pings", "200"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    ok(&out, "demo");
    assert!(text.contains("every byte arrived intact"), "{text}");
    assert!(text.contains("p50"), "{text}");
}

#[test]
fn help_has_examples() {
    for cmd in [
        "node", "cat", "proxy", "pump", "demo", "sim", "xs", "layout",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vchan"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        if ["node", "cat", "proxy", "pump", "demo"].contains(&cmd) {
            assert!(
                text.contains("Example"),
                "{cmd} --help has no example:\n{text}"
            );
        }
    }
}
