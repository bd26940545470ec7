//! 100 connect/close cycles with the peer in another process leak no descriptors, memory
//! mappings, files, host bookkeeping or XenStore nodes — on the server side and on the
//! client side.
//!
//! Alone in its test binary: the counts are of this whole process (`/proc/self/fd`,
//! `/proc/self/maps`), which also holds the embedded simulated host, so no other test may run
//! beside it. The peer is this binary started again (`child`, an ignored test, is its entry
//! point); it checks its own counts the same way and reports them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vchan_msg::{Client, Error, Server, Vchan, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};

const CYCLES: u32 = 100;
const CHILD_ENV: &str = "VCHAN_TEST_LEAK_CHILD";

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// One line of `/proc/self/maps`: (start, end, permissions, backed by a file).
fn mappings() -> Vec<(u64, u64, String, bool)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').unwrap();
            let hex = |x: &str| u64::from_str_radix(x, 16).unwrap();
            let inode = f[4] != "0";
            (hex(a), hex(b), f[1].to_owned(), inode || f.len() > 5)
        })
        .collect()
}

/// The mappings that are not the C library's own bookkeeping. glibc keeps what threads
/// leave behind — each channel's XenStore connection has a reader thread, and the embedded
/// host has threads of its own — as malloc arenas (a `rw-p` + `---p` pair filling a
/// 64 MiB-aligned 64 MiB region) and cached thread stacks (a one-page `---p` guard right
/// below a `rw-p` stack); their number follows how many threads ever overlapped, not how
/// many channels were opened. Everything else must come back exactly: grant mappings
/// (shared), reservations for scattered grants (`---p` of ring size), files.
fn maps() -> usize {
    const ARENA: u64 = 64 << 20;
    let m = mappings();
    let anon = |i: usize| !m[i].3;
    let mut ours = 0;
    for i in 0..m.len() {
        let (start, end, perms, _) = &m[i];
        let arena_head = anon(i) && perms == "rw-p" && start % ARENA == 0 && end - start <= ARENA;
        let arena_tail = anon(i)
            && perms == "---p"
            && i > 0
            && anon(i - 1)
            && m[i - 1].0 % ARENA == 0
            && m[i - 1].1 == *start
            && end - m[i - 1].0 == ARENA;
        let guard = anon(i)
            && perms == "---p"
            && end - start == 4096
            && m.get(i + 1)
                .is_some_and(|n| !n.3 && n.0 == *end && n.2 == "rw-p");
        let stack = anon(i)
            && perms == "rw-p"
            && i > 0
            && anon(i - 1)
            && m[i - 1].2 == "---p"
            && m[i - 1].1 - m[i - 1].0 == 4096
            && m[i - 1].1 == *start;
        if !(arena_head || arena_tail || guard || stack) {
            ours += 1;
        }
    }
    ours
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

/// The (descriptors, mappings) of this process once teardown that happens in the background
/// is over: each channel's XenStore connection ends its reader thread (and with it that
/// thread's descriptors) asynchronously after the channel is dropped. Waits until two samples
/// 50 ms apart agree, or until the counts are down to `target`, for at most 5 s.
fn settled(target: Option<(usize, usize)>) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (fds(), maps());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = (fds(), maps());
        let done = match target {
            Some((f, m)) => now.0 <= f && now.1 <= m,
            None => now == last,
        };
        if done || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// The path of cycle `i`: a fresh port each time, so that one cycle's entries can never be
/// mistaken for the next one's.
fn path_of(server: DomId, client: DomId, i: u32) -> String {
    default_path(server, client, 1000 + i)
}

/// One cycle's traffic, the same on both sides: 1 KiB each way, then the client closes and
/// the server sees it.
fn exchange(chan: &mut Vchan) {
    chan.set_timeout(Some(Duration::from_secs(20)));
    let out = [chan.role() as u8; 1024];
    chan.send(&out).unwrap();
    let mut back = [0u8; 1024];
    chan.recv(&mut back).unwrap();
}

fn serve_cycle(server: &Server) {
    // Granted rings (not in the control page): three shares, three mappings per cycle.
    let server = server.clone().read_min(8192).write_min(16384);
    let mut chan = server.accept(Some(Duration::from_secs(20))).unwrap();
    exchange(&mut chan);
    let mut b = [0u8; 1];
    match chan.read(&mut b) {
        Err(Error::PeerClosed { .. }) => {}
        other => panic!("the server expected the client to close, got {other:?}"),
    }
}

fn client_cycle(client: &Client) {
    let mut chan = client.connect().unwrap();
    exchange(&mut chan);
}

/// The child: runs `CYCLES + 1` cycles as `role` against domain `peer`, and prints its own
/// counts after the first and after the last.
#[test]
#[ignore = "entry point of the child process the leak test starts"]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let words: Vec<&str> = spec.split_whitespace().collect();
    let own: DomId = words[1].parse().unwrap();
    let peer: DomId = words[2].parse().unwrap();
    let mut before = None;
    for i in 0..=CYCLES {
        match words[0] {
            "server" => serve_cycle(&Server::new(peer, path_of(own, peer, i))),
            _ => client_cycle(
                &Client::new(peer, path_of(peer, own, i)).wait_for_server(Duration::from_secs(20)),
            ),
        }
        if i == 0 {
            before = Some(settled(None));
        }
    }
    let (f0, m0) = before.unwrap();
    let (f1, m1) = settled(before);
    println!("vchan-child: fds {f0} {f1} maps {m0} {m1}");
}

fn run_child(host: &SimHost, role: &str, own: DomId, peer: DomId) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child", "--exact", "--ignored", "--nocapture", "-q"])
        .env(CHILD_ENV, format!("{role} {own} {peer}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in host.env(own) {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's report and checks it leaked nothing either.
fn child_report(child: std::process::Child) {
    let mut child = child;
    let out = BufReader::new(child.stdout.take().unwrap());
    // Read to the end: the child's test harness still prints after the report.
    let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
    let line = lines
        .iter()
        .find(|l| l.starts_with("vchan-child: fds"))
        .expect("the child did not report");
    let n: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 4, "{line}");
    assert!(n[1] <= n[0], "the child leaked descriptors: {line}");
    assert!(n[3] <= n[2], "the child leaked mappings: {line}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_hundred_connect_close_cycles_leak_nothing_on_either_side() {
    let dir = tempfile::Builder::new()
        .prefix("vl")
        .tempdir_in("/tmp")
        .unwrap();
    let host = SimHost::builder(dir.path())
        .domains([DomId(1)])
        .broker(BrokerConfig::default())
        .start()
        .unwrap();
    let dom0 = host.client(DomId(0)).unwrap();
    let backend = Backend::Sim {
        dir: host.dir().to_owned(),
        domid: DomId(0),
    };
    let snapshot = |target: Option<(usize, usize)>| {
        let (f, m) = settled(target);
        (
            f,
            m,
            files_under(host.dir()),
            host.broker_stats().unwrap(),
            host.connection_count(),
            mappings().iter().filter(|m| m.2.ends_with('s')).count(),
        )
    };

    // This process serves (dom0), the child is the client (domain 1), then the other way
    // round: this process is a client of a server in domain 1.
    for we_serve in [true, false] {
        let child = if we_serve {
            run_child(&host, "client", DomId(1), DomId(0))
        } else {
            run_child(&host, "server", DomId(1), DomId(0))
        };
        let cycle = |i: u32| {
            if we_serve {
                serve_cycle(
                    &Server::new(DomId(1), path_of(DomId(0), DomId(1), i)).backend(backend.clone()),
                );
            } else {
                client_cycle(
                    &Client::new(DomId(1), path_of(DomId(1), DomId(0), i))
                        .backend(backend.clone())
                        .wait_for_server(Duration::from_secs(20)),
                );
            }
        };
        // One cycle first, so that lazily created things (buffers, thread-locals) exist.
        cycle(0);
        let before = snapshot(None);
        for i in 1..=CYCLES {
            cycle(i);
        }
        child_report(child);
        let after = snapshot(Some((before.0, before.1)));
        let what = if we_serve { "server" } else { "client" };
        // At most as many as before (the child's own XenStore connections, in the host's
        // daemon threads here, are gone too).
        assert!(
            after.0 <= before.0,
            "{what}: descriptors leaked: {} -> {}",
            before.0,
            after.0
        );
        assert!(
            after.1 <= before.1,
            "{what}: mappings leaked: {} -> {}",
            before.1,
            after.1
        );
        assert!(
            after.5 <= before.5,
            "{what}: shared mappings leaked: {} -> {}",
            before.5,
            after.5
        );
        assert_eq!(
            after.2, before.2,
            "{what}: files leaked in the host directory"
        );
        // The child has exited, so the host holds less than during the cycles: nothing of
        // the channels is left.
        let stats = after.3;
        assert_eq!(
            (stats.shares, stats.mappings, stats.ports),
            (0, 0, 0),
            "{what}: the host still holds channel resources: {stats:?}"
        );
        // The servers removed their entries: no node left under the parent of the paths.
        for server in [DomId(0), DomId(1)] {
            let parent = format!("/local/domain/{server}/data/vchan");
            if let Ok(dirs) = dom0.directory(&parent) {
                for client in dirs {
                    let left = dom0.directory(&format!("{parent}/{client}")).unwrap();
                    assert!(
                        left.is_empty(),
                        "{what}: nodes left under {parent}/{client}: {left:?}"
                    );
                }
            }
        }
        eprintln!(
            "{what}: {CYCLES} cycles; fds {} -> {}, mappings {} -> {} (shared {} -> {}), \
             host files {} -> {}, XenStore connections {} -> {}",
            before.0,
            after.0,
            before.1,
            after.1,
            before.5,
            after.5,
            before.2,
            after.2,
            before.4,
            after.4
        );
        assert!(
            after.4 <= before.4,
            "{what}: XenStore connections grew from {} to {}",
            before.4,
            after.4
        );
    }
}
