//! Peers in other processes: a peer that is killed, a peer domain that is destroyed (with and
//! without the unmap notifications its kernel would run), a server killed and restarted.
//!
//! The peer is this test binary started again as a child process acting as another domain of
//! a simulated host embedded in the test (`child`, an ignored test, is its entry point). The
//! host, its broker, XenStore and shared memory are the real simulated-host machinery.
//!
//! Latency goal (the issue): a blocked call fails within 100 ms of the peer's death. The
//! machine these tests run on is small and shared (2 CPUs, builds running beside), so each
//! scenario is measured several times and the median is held to the goal, every sample to
//! a 1 s bound that only a missed wake-up would break; the figures are printed.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vchan_msg::{Client, Error, Server, Vchan, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};

/// The child's role, in its environment: `client <server domid> <path>` or
/// `server <client domid> <path>`.
const CHILD_ENV: &str = "VCHAN_TEST_CHILD";
/// Runs per scenario.
const RUNS: usize = 9;
/// The goal for the median.
const GOAL: Duration = Duration::from_millis(100);
/// No sample may take longer than this (a lost wake-up would, by far).
const BOUND: Duration = Duration::from_secs(1);

/// The entry point of the child processes (does nothing when run as a test).
#[test]
#[ignore = "entry point of the child processes the other tests start"]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let words: Vec<&str> = spec.split_whitespace().collect();
    let peer: DomId = words[1].parse().unwrap();
    let path = words[2];
    // The backend comes from VCHAN_SIM_DIR / VCHAN_SIM_DOMID, as for any program.
    let mut chan = match words[0] {
        "client" => Client::new(peer, path)
            .wait_for_server(Duration::from_secs(30))
            .connect()
            .unwrap(),
        "server" => {
            let mut chan = Server::new(peer, path).listen().unwrap();
            println!("vchan-child: listening");
            chan.wait_connected(None).unwrap();
            chan
        }
        other => panic!("unknown child role {other}"),
    };
    println!("vchan-child: connected");
    // Block as a real peer would, until killed (or the channel ends).
    let mut buf = [0u8; 64];
    while chan.read(&mut buf).is_ok() {}
    std::thread::sleep(Duration::from_secs(3600));
}

struct Host {
    host: SimHost,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new(config: BrokerConfig) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("vp")
            .tempdir_in("/tmp")
            .unwrap();
        let host = SimHost::builder(dir.path())
            .domains([DomId(1)])
            .broker(config)
            .start()
            .unwrap();
        Host { host, _dir: dir }
    }

    fn backend(&self, domid: u16) -> Backend {
        Backend::Sim {
            dir: self.host.dir().to_owned(),
            domid: DomId(domid),
        }
    }

    /// Starts the child acting as `domid` with role `spec`.
    fn child(&self, domid: u16, spec: &str) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["child", "--exact", "--ignored", "--nocapture", "-q"])
            .env(CHILD_ENV, spec)
            .env_remove("XENSTORED_PATH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in self.host.env(DomId(domid)) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer { child, out }
    }

    /// Waits until the host holds no grant or mapping any more (what dead processes held
    /// has been released).
    fn wait_released(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.host.broker_stats().unwrap();
            if stats.shares == 0 && stats.mappings == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the host still holds {stats:?}");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    /// Waits for the child to print `vchan-child: <what>`.
    fn expect(&mut self, what: &str) {
        let want = format!("vchan-child: {what}");
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "the child exited before saying {what:?}");
            if line.trim_end() == want {
                return;
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Blocks in `read` on `chan` in a thread; `end_peer` then ends the peer; returns the error
/// the read ended with and how long after `end_peer` started it came.
fn blocked_read_after(mut chan: Vchan, end_peer: impl FnOnce()) -> (Error, Duration) {
    chan.set_timeout(Some(Duration::from_secs(10)));
    let reader = thread::spawn(move || {
        let mut b = [0u8; 8];
        let r = chan.read(&mut b);
        (r, Instant::now())
    });
    // Long enough for the reader to be asleep on the event channel, past its spin.
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    end_peer();
    let (r, at) = reader.join().unwrap();
    match r {
        Err(e) => (e, at.saturating_duration_since(start)),
        Ok(n) => panic!("the blocked read returned {n} bytes instead of an error"),
    }
}

fn check_latencies(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let shown: Vec<String> = samples
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
        .collect();
    eprintln!(
        "{what}: median {:.2} ms, samples (ms) [{}]",
        median.as_secs_f64() * 1e3,
        shown.join(", ")
    );
    assert!(
        median < GOAL,
        "{what}: median {median:?} misses the {GOAL:?} goal"
    );
    let worst = *samples.last().unwrap();
    assert!(worst < BOUND, "{what}: one call took {worst:?}");
}

#[test]
fn a_killed_peer_process_ends_a_blocked_call_promptly() {
    let host = Host::new(BrokerConfig::default());
    // Our side serves, the child is the client.
    let mut samples = Vec::new();
    for run in 0..RUNS {
        let path = default_path(DomId(0), DomId(1), 100 + run as u32);
        let server = Server::new(DomId(1), &path).backend(host.backend(0));
        let mut chan = server.listen().unwrap();
        let mut peer = host.child(1, &format!("client 0 {path}"));
        peer.expect("connected");
        chan.wait_connected(Some(Duration::from_secs(10))).unwrap();
        let (e, took) = blocked_read_after(chan, || peer.kill());
        assert!(matches!(e, Error::PeerClosed { peer: DomId(1) }), "{e:?}");
        samples.push(took);
    }
    check_latencies("killed client process, blocked server read", samples);

    // The child serves, our side is the client.
    let mut samples = Vec::new();
    for run in 0..RUNS {
        let path = default_path(DomId(1), DomId(0), 200 + run as u32);
        let mut peer = host.child(1, &format!("server 0 {path}"));
        peer.expect("listening");
        let chan = Client::new(DomId(1), &path)
            .backend(host.backend(0))
            .connect()
            .unwrap();
        peer.expect("connected");
        let (e, took) = blocked_read_after(chan, || peer.kill());
        assert!(matches!(e, Error::PeerClosed { peer: DomId(1) }), "{e:?}");
        samples.push(took);
        host.wait_released();
    }
    check_latencies("killed server process, blocked client read", samples);
}

/// Domain 1 is destroyed while we (dom0) block in a read: through its unmap notifications
/// when the host runs them, through `@releaseDomain` alone when it does not (as on real Xen).
#[test]
fn a_destroyed_peer_domain_ends_a_blocked_call_promptly() {
    for notify_on_release in [true, false] {
        let host = Host::new(BrokerConfig {
            notify_on_release,
            ..BrokerConfig::default()
        });
        for dom0_serves in [true, false] {
            let mut samples = Vec::new();
            for run in 0..RUNS {
                let port = 300 + run as u32;
                let (chan, _peer) = if dom0_serves {
                    let path = default_path(DomId(0), DomId(1), port);
                    let mut chan = Server::new(DomId(1), &path)
                        .backend(host.backend(0))
                        .listen()
                        .unwrap();
                    let mut peer = host.child(1, &format!("client 0 {path}"));
                    peer.expect("connected");
                    chan.wait_connected(Some(Duration::from_secs(10))).unwrap();
                    (chan, peer)
                } else {
                    let path = default_path(DomId(1), DomId(0), port);
                    let mut peer = host.child(1, &format!("server 0 {path}"));
                    peer.expect("listening");
                    let chan = Client::new(DomId(1), &path)
                        .backend(host.backend(0))
                        .connect()
                        .unwrap();
                    peer.expect("connected");
                    (chan, peer)
                };
                assert!(chan.watches_peer_domain());
                let (e, took) = blocked_read_after(chan, || {
                    host.host.destroy_domain(DomId(1)).unwrap();
                });
                if notify_on_release {
                    // Whichever comes first: the notification or the watch.
                    assert!(
                        matches!(
                            e,
                            Error::PeerClosed { peer: DomId(1) }
                                | Error::PeerDomainGone { peer: DomId(1) }
                        ),
                        "{e:?}"
                    );
                } else {
                    // Nothing cleared the live byte: only the watch can have told.
                    assert!(
                        matches!(e, Error::PeerDomainGone { peer: DomId(1) }),
                        "{e:?}"
                    );
                }
                samples.push(took);
                host.host.create_domain(DomId(1), None).unwrap();
            }
            check_latencies(
                &format!(
                    "domain destroyed ({}), blocked {} read",
                    if notify_on_release {
                        "unmap notifications run"
                    } else {
                        "no unmap notification, @releaseDomain only"
                    },
                    if dom0_serves { "server" } else { "client" }
                ),
                samples,
            );
        }
    }
}

/// The control for the test above: on a host that runs no unmap notification at release,
/// a channel without the `@releaseDomain` watch does not notice (so the test above really
/// exercised the watch).
#[test]
fn without_the_watch_a_silently_destroyed_domain_goes_unnoticed() {
    let host = Host::new(BrokerConfig {
        notify_on_release: false,
        ..BrokerConfig::default()
    });
    let path = default_path(DomId(0), DomId(1), 400);
    let mut chan = Server::new(DomId(1), &path)
        .backend(host.backend(0))
        .watch_peer_domain(false)
        .listen()
        .unwrap();
    let _peer = {
        let mut peer = host.child(1, &format!("client 0 {path}"));
        peer.expect("connected");
        peer
    };
    chan.wait_connected(Some(Duration::from_secs(10))).unwrap();
    assert!(!chan.watches_peer_domain());
    host.host.destroy_domain(DomId(1)).unwrap();
    chan.set_timeout(Some(Duration::from_millis(500)));
    let mut b = [0u8; 8];
    let r = chan.read(&mut b);
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(chan.is_open());
}

/// A server killed leaves its entries in XenStore; a client waiting for a server is not
/// fooled by them and connects to the restarted one; one that does not wait says the
/// entries are stale.
#[test]
fn a_client_waits_past_a_killed_servers_entries_for_the_restarted_server() {
    let host = Host::new(BrokerConfig::default());
    let path = default_path(DomId(1), DomId(0), 500);
    let mut peer = host.child(1, &format!("server 0 {path}"));
    peer.expect("listening");
    peer.kill();
    host.wait_released();
    let xs = host.host.client(DomId(0)).unwrap();
    assert!(xs.exists(&format!("{path}/ring-ref")).unwrap());

    let e = Client::new(DomId(1), &path)
        .backend(host.backend(0))
        .connect()
        .unwrap_err();
    assert!(matches!(e, Error::Handshake { .. }), "{e:?}");
    assert!(e.to_string().contains("stale"), "{e}");

    let client = Client::new(DomId(1), &path)
        .backend(host.backend(0))
        .wait_for_server(Duration::from_secs(30));
    let started = Instant::now();
    let waiting = thread::spawn(move || (client.connect(), started.elapsed()));
    let delay = Duration::from_millis(300);
    thread::sleep(delay);
    let mut peer = host.child(1, &format!("server 0 {path}"));
    peer.expect("listening");
    let (r, took) = waiting.join().unwrap();
    let chan = r.expect("the waiting client did not connect to the restarted server");
    peer.expect("connected");
    assert!(
        took >= delay,
        "connected after {took:?}, before the new server existed"
    );
    assert!(chan.is_open());
    // It is the new server: killing it ends our blocked read.
    let (e, _) = blocked_read_after(chan, || peer.kill());
    assert!(matches!(e, Error::PeerClosed { .. }), "{e:?}");
    // And a wait that ends on stale entries says so, and how long it waited.
    host.wait_released();
    let e = Client::new(DomId(1), &path)
        .backend(host.backend(0))
        .wait_for_server(Duration::from_millis(200))
        .connect()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stale") && e.contains("gave up after waiting 200ms"),
        "{e}"
    );
}
