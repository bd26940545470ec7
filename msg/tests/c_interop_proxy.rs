//! Debian's `vchan-socket-proxy` (xen-utils-4.17, unmodified, linked against Debian's
//! `libxenvchan.so.4.17`) on the simulated host, opposite the Rust side: the Rust library,
//! and the `vchan proxy` command. A byte stream goes both ways at once through Unix sockets
//! and the vchan, every byte checked; then one end closes and the close must travel through
//! the proxies to the other end.
//!
//! The C proxy runs with the drop-in `libxengnttab`/`libxenevtchn` and, because its client
//! mode opens a `libxenctrl` interface (to ask whether the server's domain still exists), the
//! drop-in `libxencall` (`tools/sim-libs.sh`).

#[path = "c/support.rs"]
mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{DEADLINE, Host, Proc, available, read_pattern, socket_proxy, write_pattern};
use vchan_msg::default_path;
use vchan_xenif::DomId;

/// Bytes each way.
const LEN: u64 = 4 << 20;

/// One end of the stream under test: what the test reads from and writes to.
struct End {
    name: String,
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
}

impl End {
    fn unix(name: &str, s: UnixStream) -> End {
        End {
            name: name.to_owned(),
            reader: Box::new(s.try_clone().unwrap()),
            writer: Box::new(s),
        }
    }

    fn vchan(name: &str, chan: vchan_msg::Vchan) -> End {
        let (r, w) = chan.split();
        End {
            name: name.to_owned(),
            reader: Box::new(r),
            writer: Box::new(w),
        }
    }
}

/// Sends a pattern each way at once between `a` and `b` and checks both; then closes `b` and
/// checks that `a` sees the end of the stream (and nothing more). Returns the transfer time
/// and how long the close took to arrive.
fn exchange(a: End, b: End) -> (Duration, Duration) {
    let start = Instant::now();
    let (mut a_r, mut a_w, mut b_r, mut b_w) = (a.reader, a.writer, b.reader, b.writer);
    let (an, bn) = (a.name.clone(), b.name.clone());
    let wa = std::thread::spawn(move || (write_pattern(&mut *a_w, 11, LEN, 7001), a_w));
    let wb = std::thread::spawn(move || (write_pattern(&mut *b_w, 22, LEN, 5003), b_w));
    let rb = std::thread::spawn(move || (read_pattern(&mut *b_r, 11, LEN), b_r));
    let got_at_a = read_pattern(&mut *a_r, 22, LEN);
    let (sent_by_a, a_w) = wa.join().unwrap_or_else(|_| panic!("{an} writer"));
    let (sent_by_b, b_w) = wb.join().unwrap_or_else(|_| panic!("{bn} writer"));
    let (got_at_b, b_r) = rb.join().unwrap_or_else(|_| panic!("{bn} reader"));
    assert_eq!(got_at_b, sent_by_a, "{an} -> {bn} checksum");
    assert_eq!(got_at_a, sent_by_b, "{bn} -> {an} checksum");
    let transfer = start.elapsed();

    // Close b entirely; a must see the end of the stream.
    let closed = Instant::now();
    drop((b_r, b_w));
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let r = a_r.read(&mut buf);
        (r, a_r)
    });
    let deadline = Instant::now() + DEADLINE;
    while !reader.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{an} did not see {bn}'s close within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (r, _a_r) = reader.join().unwrap();
    assert_eq!(r.unwrap(), 0, "{an} read data after {bn} closed");
    drop(a_w);
    (transfer, closed.elapsed())
}

/// Accepts one connection on `l`, failing after the deadline.
fn accept(l: &UnixListener) -> UnixStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection within {DEADLINE:?}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Connects to the socket a proxy listens on, once it exists.
fn connect(path: &Path, proxy: &mut Proc) -> UnixStream {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        if let Some(status) = proxy.child.try_wait().unwrap() {
            panic!("{} exited ({status}) before listening", proxy.name);
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {} within {DEADLINE:?}",
            proxy.name,
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Which program plays a proxy.
#[derive(Clone, Copy, Debug)]
enum Proxy {
    /// Debian's vchan-socket-proxy.
    Debian,
    /// `vchan proxy`.
    Ours,
}

struct Setup {
    host: Host,
    socks: tempfile::TempDir,
    path: String,
}

impl Setup {
    fn new(port: u32) -> Setup {
        Setup {
            host: Host::new(&[1]),
            socks: tempfile::Builder::new()
                .prefix("vcp")
                .tempdir_in("/tmp")
                .unwrap(),
            path: default_path(DomId(0), DomId(1), port),
        }
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.socks.path().join(name)
    }

    /// Starts a proxy: server in dom0 (for dom1) or client in dom1 (of dom0), with `endpoint`.
    fn proxy(&self, which: Proxy, server: bool, endpoint: &Path) -> Proc {
        let (own, peer) = if server { (0, "1") } else { (1, "0") };
        let role = if server { "server" } else { "client" };
        let endpoint = endpoint.to_str().unwrap();
        let mut cmd = match which {
            Proxy::Debian => {
                let mut c = self.host.command(&socket_proxy(), own);
                c.args(["-m", role, peer, &self.path, endpoint]);
                c
            }
            Proxy::Ours => {
                let mut c = self.host.command(&support::vchan_cli(), own);
                c.args(["proxy", role, peer, &self.path, endpoint]);
                c
            }
        };
        cmd.env("RUST_BACKTRACE", "1");
        Proc::spawn(format!("{which:?} proxy {role}"), cmd)
    }
}

fn debian_proxy_available() -> bool {
    support::c_side_available()
        && available(
            &socket_proxy(),
            "run tools/setup.sh (apt-get download xen-utils-4.17)",
        )
}

fn report(what: &str, (transfer, close): (Duration, Duration)) {
    eprintln!(
        "{what}: {} MiB each way at once in {transfer:.2?} ({:.0} MB/s per direction); close \
         arrived after {close:.2?}",
        LEN >> 20,
        LEN as f64 / transfer.as_secs_f64() / 1e6
    );
}

#[test]
fn debian_proxy_server_and_a_rust_client() {
    if !debian_proxy_available() {
        return;
    }
    let s = Setup::new(60);
    let a = UnixListener::bind(s.sock("a")).unwrap();
    let _proxy = s.proxy(Proxy::Debian, true, &s.sock("a"));
    let client = s
        .host
        .client(1, 0, 60)
        .wait_for_server(DEADLINE)
        .connect()
        .expect("Rust client of the C proxy");
    let a = accept(&a);
    report(
        "vchan-socket-proxy server <-> Rust client",
        exchange(
            End::unix("socket behind the C proxy", a),
            End::vchan("Rust client", client),
        ),
    );
}

#[test]
fn rust_server_and_a_debian_proxy_client() {
    if !debian_proxy_available() {
        return;
    }
    let s = Setup::new(61);
    let mut proxy = s.proxy(Proxy::Debian, false, &s.sock("b"));
    // The C proxy connects to the vchan only when a connection arrives on its socket; the
    // server comes later, so it waits for it (XenStore watch, libxenctrl domain check).
    let b = connect(&s.sock("b"), &mut proxy);
    std::thread::sleep(Duration::from_millis(300));
    let server = s
        .host
        .server(0, 1, 61)
        .accept(Some(DEADLINE))
        .expect("the C proxy connects to the Rust server");
    report(
        "Rust server <-> vchan-socket-proxy client",
        exchange(
            End::vchan("Rust server", server),
            End::unix("socket of the C proxy", b),
        ),
    );
}

/// A C proxy and `vchan proxy` facing each other, Unix sockets on both ends.
fn proxy_pair(server: Proxy, client: Proxy, port: u32) {
    if !debian_proxy_available() {
        return;
    }
    let s = Setup::new(port);
    let a = UnixListener::bind(s.sock("a")).unwrap();
    let _server = s.proxy(server, true, &s.sock("a"));
    let mut client_proxy = s.proxy(client, false, &s.sock("b"));
    let b = connect(&s.sock("b"), &mut client_proxy);
    let a = accept(&a);
    report(
        &format!("{server:?} proxy server <-> {client:?} proxy client"),
        exchange(
            End::unix("socket behind the server proxy", a),
            End::unix("socket of the client proxy", b),
        ),
    );
}

#[test]
fn debian_proxy_server_and_vchan_proxy_client() {
    proxy_pair(Proxy::Debian, Proxy::Ours, 62);
}

#[test]
fn vchan_proxy_server_and_debian_proxy_client() {
    proxy_pair(Proxy::Ours, Proxy::Debian, 63);
}

/// The C proxy's client mode in dom0, waiting for a server in a guest that is destroyed
/// before serving: its `libxenctrl` query (`xc_domain_getinfo`, answered by the simulated
/// hypervisor of the drop-in `libxencall`) reports the domain gone, and the proxy gives up
/// instead of waiting forever.
#[test]
fn debian_proxy_client_gives_up_when_the_server_domain_is_destroyed() {
    if !debian_proxy_available() {
        return;
    }
    let s = Setup::new(64);
    let path = default_path(DomId(1), DomId(0), 64);
    let mut cmd = s.host.command(&socket_proxy(), 0);
    cmd.args(["-m", "client", "1", &path, s.sock("b").to_str().unwrap()]);
    let mut proxy = Proc::spawn("Debian proxy client in dom0".into(), cmd);
    let _b = connect(&s.sock("b"), &mut proxy);
    // It waits for the server (XenStore watch; the domain exists, so it keeps waiting).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "the proxy gave up while the server's domain existed"
    );
    let destroyed = Instant::now();
    s.host.host.destroy_domain(DomId(1)).unwrap();
    let status = proxy.wait();
    eprintln!(
        "the C proxy gave up {:.2?} after the domain was destroyed ({status})",
        destroyed.elapsed()
    );
    assert_eq!(status.code(), Some(1), "vchan-socket-proxy's failure exit");
}
