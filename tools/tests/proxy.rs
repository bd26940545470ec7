//! `vchan proxy` between Unix sockets, run as real processes acting as domains of a simulated
//! host embedded in the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;

/// The guest-side service: for each connection, `serve` runs on its own thread (errors of a
/// connection the proxy closed are the service's own business, not a test failure).
fn service(path: &Path, serve: fn(UnixStream) -> std::io::Result<()>) {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            thread::spawn(move || {
                let _ = serve(conn);
            });
        }
    });
}

/// An echo service: copies what it reads back until the connection ends.
fn echo(conn: UnixStream) -> std::io::Result<()> {
    let mut rd = conn.try_clone()?;
    let mut wr = conn;
    std::io::copy(&mut rd, &mut wr).map(|_| ())
}

/// A child process whose stderr is collected as it comes.
struct Logged {
    child: Child,
    log: Arc<Mutex<String>>,
    collector: Option<thread::JoinHandle<()>>,
}

impl Logged {
    fn spawn(mut cmd: std::process::Command) -> Logged {
        let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let collector = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Logged {
            child,
            log,
            collector: Some(collector),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `limit` until `needle` occurs `count` times in the log; returns the log.
    fn wait_log(&self, needle: &str, count: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count || Instant::now() > deadline {
                return log;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` for the process to exit (killing it after that); returns its
    /// status and its whole log.
    fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            thread::sleep(Duration::from_millis(20));
        };
        if let Some(c) = self.collector.take() {
            let _ = c.join();
        }
        (status, self.log())
    }

    fn stop(self) -> String {
        self.wait(Duration::ZERO).1
    }
}

/// The guest-side proxy (server, in domain 1) in front of `target`, and the dom0 proxy
/// (client) listening on `front`, on vchan port `port`, with `extra` arguments for both.
struct Proxies {
    server: Logged,
    client: Logged,
    front: PathBuf,
}

impl Proxies {
    fn start(h: &Host, port: u32, target: &Path, extra: &[&str]) -> Proxies {
        let path = format!("/local/domain/1/data/vchan/0/{port}");
        let front = h.dir.path().join(format!("front{port}.sock"));
        let mut server = h.vchan(1);
        server
            .args(["proxy", "server", "0", &path, target.to_str().unwrap()])
            .args(["--read-min", "64K", "--write-min", "64K", "--verbose"])
            .args(extra);
        let mut client = h.vchan(0);
        client
            .args(["proxy", "client", "1", &path, front.to_str().unwrap()])
            .args(["--verbose"])
            .args(extra);
        let (server, mut client) = (Logged::spawn(server), Logged::spawn(client));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !front.exists() {
            if Instant::now() > deadline || client.child.try_wait().unwrap().is_some() {
                panic!("the client proxy never listened:\n{}", client.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Proxies {
            server,
            client,
            front,
        }
    }

    fn connect(&mut self) -> UnixStream {
        match UnixStream::connect(&self.front) {
            Ok(conn) => {
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                conn
            }
            Err(e) => panic!(
                "connecting to the client proxy: {e}\nclient proxy ({:?}):\n{}\nserver proxy \
                 ({:?}):\n{}",
                self.client.child.try_wait(),
                self.client.log(),
                self.server.child.try_wait(),
                self.server.log()
            ),
        }
    }

    /// Stops both; returns their logs (server, client).
    fn stop(self) -> (String, String) {
        (self.server.stop(), self.client.stop())
    }
}

/// Writes `data` on `conn`, half-closes it, and reads until the proxy closes the connection.
fn request(conn: UnixStream, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut w = conn.try_clone()?;
    let feeder = thread::spawn(move || {
        w.write_all(&data)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut conn = conn;
    let mut got = Vec::new();
    let read = conn.read_to_end(&mut got);
    let fed = feeder.join().expect("feeder thread");
    fed.map_err(|e| std::io::Error::new(e.kind(), format!("writing the request: {e}")))?;
    read.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("reading the answer ({} bytes so far): {e}", got.len()),
        )
    })?;
    Ok(got)
}

/// The socket's half-close cannot cross a vchan, so after the input ends the proxy waits for
/// the peer to read everything and goes on forwarding the answer until the vchan has been
/// silent for --linger: the whole echo comes back before the connection is closed, one
/// connection after another.
#[test]
fn a_half_closed_connection_gets_its_whole_answer_one_connection_after_another() {
    let h = host(&[1]);
    let target = h.dir.path().join("echo.sock");
    service(&target, echo);
    // A generous linger: only a stall of the whole pipeline that long could cut the echo.
    let mut p = Proxies::start(&h, 40, &target, &["--linger", "2"]);
    for round in 0..3u8 {
        let data = pattern(10 + round, 1 << 20);
        let got = request(p.connect(), data.clone());
        if got.as_ref().ok() != Some(&data) {
            let (s, c) = p.stop();
            let got = got.map(|g| g.len());
            panic!(
                "round {round}: {got:?} of {} bytes echoed, or content differs\nserver \
                 proxy:\n{s}\nclient proxy:\n{c}",
                data.len()
            );
        }
    }
    let limit = Duration::from_secs(10);
    let c = p.client.wait_log("sent nothing more for 2s", 3, limit);
    let s = p.server.wait_log("the peer closed the channel", 3, limit);
    p.stop();
    assert_eq!(c.matches("sent nothing more for 2s").count(), 3, "{c}");
    assert_eq!(s.matches("the peer closed the channel").count(), 3, "{s}");
}

/// A service that answers and closes: the close travels back through both proxies at once
/// (the server proxy delivers the answer, sees its socket closed, and closes the vchan), so
/// the connection ends without waiting for the (long) linger.
#[test]
fn a_service_that_answers_and_closes_ends_the_session_at_once() {
    fn answer(mut conn: UnixStream) -> std::io::Result<()> {
        let mut req = [0u8; 4096];
        conn.read_exact(&mut req)?;
        let reply: Vec<u8> = (0..256 * 1024u32)
            .map(|i| req[(i % 4096) as usize] ^ (i as u8))
            .collect();
        conn.write_all(&reply)
        // Dropped: closed both ways.
    }
    let h = host(&[1]);
    let target = h.dir.path().join("answer.sock");
    service(&target, answer);
    let mut p = Proxies::start(&h, 41, &target, &["--linger", "60"]);
    for round in 0..2u8 {
        let req = pattern(20 + round, 4096);
        let expected: Vec<u8> = (0..256 * 1024u32)
            .map(|i| req[(i % 4096) as usize] ^ (i as u8))
            .collect();
        let start = Instant::now();
        let got = request(p.connect(), req).unwrap();
        let took = start.elapsed();
        assert!(
            got == expected,
            "round {round}: {} bytes, or content differs",
            got.len()
        );
        assert!(
            took < Duration::from_secs(20),
            "round {round}: the close took {took:?}"
        );
    }
    let limit = Duration::from_secs(10);
    let s = p.server.wait_log("the output was closed", 2, limit);
    let c = p.client.wait_log("the peer closed the channel", 2, limit);
    p.stop();
    assert_eq!(s.matches("the output was closed").count(), 2, "{s}");
    assert_eq!(c.matches("the peer closed the channel").count(), 2, "{c}");
}

/// A session that fails (the service is not there yet) is reported, and the proxies go on
/// serving the next connection.
#[test]
fn a_failed_session_is_reported_and_the_next_one_is_served() {
    let h = host(&[1]);
    let target = h.dir.path().join("late.sock");
    let mut p = Proxies::start(&h, 42, &target, &["--linger", "1"]);
    // Nothing listens at the target: the server proxy cannot connect, closes the vchan, and
    // the client's connection ends with nothing.
    let got = request(p.connect(), b"hello?".to_vec()).unwrap();
    assert!(got.is_empty(), "{} bytes from nowhere", got.len());
    service(&target, echo);
    let data = pattern(30, 100_000);
    let got = request(p.connect(), data.clone()).unwrap();
    let s = p.server.wait_log("session 2:", 1, Duration::from_secs(10));
    let (_, c) = p.stop();
    assert!(got == data, "{} bytes echoed\n{s}\n{c}", got.len());
    assert!(
        s.contains("session 1 failed") && s.contains("late.sock") && s.contains("serving the next"),
        "{s}"
    );
}

/// A host whose domain destruction is as on real Xen: the destroyed domain's processes run
/// no unmap notification, so its peers learn of it only through `@releaseDomain`.
fn xen_like_host(domains: &[u16]) -> Host {
    let dir = tempfile::Builder::new()
        .prefix("vt")
        .tempdir_in("/tmp")
        .unwrap();
    let host = SimHost::builder(dir.path())
        .domains(domains.iter().map(|&d| DomId(d)))
        .broker(BrokerConfig {
            notify_on_release: false,
            ..BrokerConfig::default()
        })
        .start()
        .unwrap();
    Host { host, dir }
}

/// The peer's domain is destroyed in the middle of a session: the client proxy (which then
/// has nothing left to serve) and `vchan cat` report it and exit with the failure code 1.
#[test]
fn a_destroyed_peer_domain_is_a_failure() {
    let h = xen_like_host(&[1]);
    let target = h.dir.path().join("echo.sock");
    service(&target, echo);
    let mut p = Proxies::start(&h, 43, &target, &["--linger", "inf"]);
    let mut conn = p.connect();
    conn.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    let mut cat_server = h.vchan(0);
    cat_server
        .args(["cat", "server", "1", &path(44)])
        .stdin(Stdio::piped());
    let cat_server = Logged::spawn(cat_server);
    let mut cat_client = h.vchan(1);
    cat_client
        .args(["cat", "client", "0", &path(44), "--wait", "30"])
        .stdin(Stdio::piped());
    let cat_client = Logged::spawn(cat_client);
    // Both cats are connected once the server's client byte says so; give them a moment.
    thread::sleep(Duration::from_millis(500));
    h.host.destroy_domain(DomId(1)).unwrap();
    let Proxies { server, client, .. } = p;
    let (status, msg) = client.wait(Duration::from_secs(20));
    server.stop();
    assert_eq!(status.code(), Some(1), "client proxy: {msg}");
    assert!(msg.contains("no longer exists"), "{msg}");
    let (status, msg) = cat_server.wait(Duration::from_secs(20));
    cat_client.stop();
    assert_eq!(status.code(), Some(1), "cat: {msg}");
    assert!(msg.contains("no longer exists"), "{msg}");
    drop(conn);
}
