//! Wire compatibility with Xen's C `libxenvchan` (Debian's `libxenvchan.so.4.17`, unmodified)
//! on the simulated host: a Rust server and a C client, a C server and a Rust client, in
//! stream and packet mode, both directions at once, for every ring-size pair.
//!
//! The C side is `c/vchan_node.c`, compiled against Debian's headers and library and run with
//! the simulated host's drop-in `libxengnttab.so.1`/`libxenevtchn.so.1` (`tools/sim-libs.sh`)
//! first in `LD_LIBRARY_PATH`; Debian's `libxenstore.so.4` talks to the simulated xenstored.
//! Every byte is checked on arrival on both sides, and each direction's checksum is compared.

#[path = "c/support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Flow, Host, Mode, c_side_available, pattern_sum, report, rust_transfer};
use vchan_msg::default_path;
use vchan_xenif::DomId;

/// Ring sizes asked for (`read_min`, `write_min` of the server): 1 KiB to 1 MiB. Every pair
/// of them covers every geometry a server can choose, the in-page 1024/2048 and 2048/1024
/// layouts included.
const SIZES: [usize; 11] = [
    1 << 10,
    1 << 11,
    1 << 12,
    1 << 13,
    1 << 14,
    1 << 15,
    1 << 16,
    1 << 17,
    1 << 18,
    1 << 19,
    1 << 20,
];

/// The ring sizes a server asked for `(read_min, write_min)` gets (libxenvchan's rule).
fn geometry(read_min: usize, write_min: usize) -> (usize, usize) {
    let up = |n: usize| n.next_power_of_two().max(4096);
    if read_min <= 1024 && write_min <= 2048 {
        (1024, 2048)
    } else if read_min <= 2048 && write_min <= 1024 {
        (2048, 1024)
    } else if read_min <= 2048 {
        (2048, up(write_min))
    } else if write_min <= 2048 {
        (up(read_min), 2048)
    } else {
        (up(read_min), up(write_min))
    }
}

/// Which side is the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pairing {
    /// Rust server in dom0, C client in dom1.
    RustServer,
    /// C server in dom0, Rust client in dom1.
    CServer,
}

/// How the C side calls libxenvchan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CRole {
    /// Xen's `node`: blocking calls, everything sent, then everything received (the Rust
    /// side reads and writes at once, so this cannot deadlock).
    Node,
    /// Xen's `node-select`: non-blocking calls and `select(2)` on the event-channel fd, both
    /// directions at once.
    NodeSelect,
}

/// One run: a channel between the Rust and the C side with the given ring sizes, moving
/// `to_c` bytes from Rust to C and `to_rust` from C to Rust at the same time, with calls of
/// `chunk` bytes (packets of that size in packet mode). Returns the wall time.
#[allow(clippy::too_many_arguments)]
fn run(
    host: &Host,
    pairing: Pairing,
    mode: Mode,
    c_role: CRole,
    port: u32,
    (read_min, write_min): (usize, usize),
    to_c: u64,
    to_rust: u64,
    (chunk_to_c, chunk_to_rust): (usize, usize),
) -> Duration {
    let seed_to_c = 0x1000 + u64::from(port);
    let seed_to_rust = 0x2000 + u64::from(port);
    let path = default_path(DomId(0), DomId(1), port);
    let c_args = |role: &str, domid: u16| {
        let mut a = vec![
            role.to_owned(),
            domid.to_string(),
            path.clone(),
            "-m".into(),
            mode.c_arg().into(),
            "-s".into(),
            to_rust.to_string(),
            "-S".into(),
            seed_to_rust.to_string(),
            "-R".into(),
            to_c.to_string(),
            "-T".into(),
            seed_to_c.to_string(),
            "-c".into(),
            chunk_to_rust.to_string(),
            "-C".into(),
            chunk_to_c.to_string(),
        ];
        if c_role == CRole::Node {
            a.push("-b".into());
        }
        if role == "server" {
            a.extend(["-r".into(), read_min.to_string()]);
            a.extend(["-w".into(), write_min.to_string()]);
        }
        a
    };
    let tx = Flow {
        len: to_c,
        seed: seed_to_c,
        chunk: chunk_to_c,
    };
    let rx = Flow {
        len: to_rust,
        seed: seed_to_rust,
        chunk: chunk_to_rust,
    };
    let start = Instant::now();
    let (mut c, sums) = match pairing {
        Pairing::RustServer => {
            let server = host
                .server(0, 1, port)
                .read_min(read_min)
                .write_min(write_min)
                .listen()
                .expect("Rust server");
            let c = host.c_node(1, &c_args("client", 0));
            c.expect("ready");
            (c, rust_transfer(server, mode, tx, rx))
        }
        Pairing::CServer => {
            let c = host.c_node(0, &c_args("server", 1));
            c.expect("ready");
            let client = host.client(1, 0, port).connect().expect("Rust client");
            let (r, w) = geometry(read_min, write_min);
            assert_eq!(
                (client.write_capacity(), client.read_capacity()),
                (r, w),
                "the C server's rings for {read_min}/{write_min}"
            );
            (c, rust_transfer(client, mode, tx, rx))
        }
    };
    let sums = (sums.sent, sums.received);
    let what = format!("{pairing:?} {mode:?} {c_role:?} {read_min}/{write_min}");
    if to_rust > 0 {
        assert_eq!(
            report(&c.expect("sent")),
            (to_rust, sums.1),
            "{what}: C->Rust checksum"
        );
        assert_eq!(sums.1, pattern_sum(seed_to_rust, to_rust), "{what}");
    }
    if to_c > 0 {
        assert_eq!(
            report(&c.expect("received")),
            (to_c, sums.0),
            "{what}: Rust->C checksum"
        );
        assert_eq!(sums.0, pattern_sum(seed_to_c, to_c), "{what}");
    }
    c.wait_success();
    start.elapsed()
}

/// Bytes per direction for a ring pair: a few times round the larger ring, plus an odd tail
/// so that reads and writes straddle the wrap at changing offsets.
fn volume(r: usize, w: usize) -> u64 {
    (3 * r.max(w) + 4099) as u64
}

/// Call sizes: odd, smaller than the ring (a packet must fit), so that packets wrap.
fn chunk(ring: usize) -> usize {
    (ring / 2 + 17).min(65_536 + 17)
}

fn matrix(pairing: Pairing, mode: Mode) {
    if !c_side_available() {
        return;
    }
    let host = Host::new(&[1]);
    let start = Instant::now();
    let mut port = 100;
    for &read_min in &SIZES {
        for &write_min in &SIZES {
            port += 1;
            // The ring each direction goes through: the server reads left, writes right.
            let (left, right) = geometry(read_min, write_min);
            let (to_server_ring, to_client_ring) = (left, right);
            let (chunk_to_c, chunk_to_rust) = match pairing {
                Pairing::RustServer => (chunk(to_client_ring), chunk(to_server_ring)),
                Pairing::CServer => (chunk(to_server_ring), chunk(to_client_ring)),
            };
            let v = volume(left, right);
            // Both C roles, alternating, and the other way round in packet mode: for each
            // pairing, every ring-size pair meets both roles (one per mode).
            let flip = u32::from(matches!(mode, Mode::Packet));
            let c_role = if (port + flip) % 2 == 0 {
                CRole::Node
            } else {
                CRole::NodeSelect
            };
            let took = run(
                &host,
                pairing,
                mode,
                c_role,
                port,
                (read_min, write_min),
                v,
                v + 1,
                (chunk_to_c, chunk_to_rust),
            );
            eprintln!(
                "  {pairing:?} {mode:?} read_min={read_min} write_min={write_min} rings \
                 {left}/{right} C={c_role:?}: {v}+{} bytes ok in {took:.2?}",
                v + 1
            );
        }
    }
    eprintln!(
        "{pairing:?} {mode:?}: {} ring-size pairs, both directions at once (C as node and \
         node-select, alternating; swapped between stream and packet mode), in {:.2?}",
        SIZES.len() * SIZES.len(),
        start.elapsed()
    );
}

#[test]
fn rust_server_c_client_stream_every_ring_size_pair() {
    matrix(Pairing::RustServer, Mode::Stream);
}

#[test]
fn rust_server_c_client_packets_every_ring_size_pair() {
    matrix(Pairing::RustServer, Mode::Packet);
}

#[test]
fn c_server_rust_client_stream_every_ring_size_pair() {
    matrix(Pairing::CServer, Mode::Stream);
}

#[test]
fn c_server_rust_client_packets_every_ring_size_pair() {
    matrix(Pairing::CServer, Mode::Packet);
}

/// 256 MiB each way at once through 1 MiB rings, with checksums.
fn big(pairing: Pairing) {
    if !c_side_available() {
        return;
    }
    let host = Host::new(&[1]);
    let len = 256u64 << 20;
    let t = run(
        &host,
        pairing,
        Mode::Stream,
        CRole::NodeSelect,
        7,
        (1 << 20, 1 << 20),
        len,
        len,
        (1 << 18, 1 << 18),
    );
    eprintln!(
        "{pairing:?}: 256 MiB each way at once in {t:.2?} ({:.0} MB/s per direction)",
        len as f64 / t.as_secs_f64() / 1e6
    );
}

#[test]
fn rust_server_c_client_256_mib_each_way() {
    big(Pairing::RustServer);
}

#[test]
fn c_server_rust_client_256_mib_each_way() {
    big(Pairing::CServer);
}

/// The shared control page each server writes, as the client domain sees it before
/// connecting.
fn control_page(host: &Host, path: &str) -> [u8; vchan_xenif::PAGE_SIZE] {
    let xs = host.host.client(DomId(1)).unwrap();
    let gref: u32 = xs
        .read_string(&format!("{path}/ring-ref"))
        .unwrap()
        .parse()
        .unwrap();
    let mapper = host.backend(1).grant_mapper().unwrap();
    let page = mapper
        .map(
            DomId(0),
            &[vchan_xenif::GrantRef(gref)],
            vchan_xenif::Access::ReadOnly,
        )
        .unwrap();
    let mut copy = [0u8; vchan_xenif::PAGE_SIZE];
    // SAFETY: `page` maps one readable page for as long as it lives; the server is idle (no
    // client), so nothing writes it during the copy, and `copy` is a separate local buffer.
    unsafe { std::ptr::copy_nonoverlapping(page.as_ptr(), copy.as_mut_ptr(), copy.len()) };
    copy
}

#[test]
fn the_rust_server_writes_the_same_shared_page_as_the_c_server() {
    if !c_side_available() {
        return;
    }
    let host = Host::new(&[1]);
    let dom0 = host.host.client(DomId(0)).unwrap();
    let mut port = 1000;
    for &read_min in &SIZES {
        for &write_min in &SIZES {
            port += 2;
            let what = format!("read_min {read_min}, write_min {write_min}");
            let rust_path = default_path(DomId(0), DomId(1), port);
            let c_path = default_path(DomId(0), DomId(1), port + 1);
            let rust = host
                .server(0, 1, port)
                .read_min(read_min)
                .write_min(write_min)
                .listen()
                .unwrap();
            let c = host.c_node(
                0,
                &[
                    "server".into(),
                    "1".into(),
                    c_path.clone(),
                    "-r".into(),
                    read_min.to_string(),
                    "-w".into(),
                    write_min.to_string(),
                    "-H".into(),
                ],
            );
            c.expect("ready");
            let mut ours = control_page(&host, &rust_path);
            let mut theirs = control_page(&host, &c_path);

            // Offsets 0..24: indices 0, orders, cli_live 2, srv_live 1, cli_notify WRITE,
            // srv_notify 0 — byte for byte.
            assert_eq!(ours[..24], theirs[..24], "header, {what}");
            let (left, right) = geometry(read_min, write_min);
            let order = |n: usize| n.trailing_zeros() as u16;
            let mut want = [0u8; 24];
            want[16..18].copy_from_slice(&order(left).to_ne_bytes());
            want[18..20].copy_from_slice(&order(right).to_ne_bytes());
            want[20..24].copy_from_slice(&[2, 1, 1, 0]);
            assert_eq!(theirs[..24], want, "the C server's header, {what}");

            // The grant list: the same length at the same place (left ring's pages first),
            // every entry a reference; the values themselves differ.
            let pages = |n: usize| if n >= 4096 { n / 4096 } else { 0 };
            let grants = pages(left) + pages(right);
            for page in [&mut ours, &mut theirs] {
                for i in 0..grants {
                    let at = 24 + 4 * i;
                    let gref = u32::from_ne_bytes(page[at..at + 4].try_into().unwrap());
                    assert_ne!(gref, 0, "grant {i} missing, {what}");
                    page[at..at + 4].copy_from_slice(&[0xff; 4]);
                }
            }
            // Everything else on the page (the rest of the list area, the in-page rings) too.
            if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
                panic!(
                    "byte {i} differs ({} in Rust's page, {} in C's), {what}",
                    ours[i], theirs[i]
                );
            }

            // The XenStore entries: decimal values with the same permissions.
            for key in ["ring-ref", "event-channel"] {
                let perms = |p: &str| {
                    dom0.get_perms(&format!("{p}/{key}"))
                        .unwrap()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                };
                assert_eq!(perms(&rust_path), perms(&c_path), "{key} perms, {what}");
                for p in [&rust_path, &c_path] {
                    let v = dom0.read_string(&format!("{p}/{key}")).unwrap();
                    assert!(
                        v.parse::<u32>().is_ok_and(|n| n > 0 && n.to_string() == v),
                        "{key} = {v:?} at {p}"
                    );
                }
            }
            drop(rust);
            drop(c);
        }
    }
}

/// Kills the C side (SIGKILL) while the Rust side is blocked reading; the Rust side must see
/// the close (unmap notification: live byte cleared, event sent) promptly.
fn kill_the_c_side(pairing: Pairing) {
    if !c_side_available() {
        return;
    }
    let host = Host::new(&[1]);
    let port = 40;
    let path = default_path(DomId(0), DomId(1), port);
    let hold = |role: &str, domid: &str| -> Vec<String> {
        [role, domid, &path, "-b", "-s", "100", "-S", "9", "-H"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (mut c, mut chan) = match pairing {
        Pairing::RustServer => {
            let server = host.server(0, 1, port).listen().unwrap();
            let c = host.c_node(1, &hold("client", "0"));
            (c, server)
        }
        Pairing::CServer => {
            let c = host.c_node(0, &hold("server", "1"));
            c.expect("ready");
            let client = host.client(1, 0, port).connect().unwrap();
            (c, client)
        }
    };
    // A missed close fails the test (timeout) instead of hanging it.
    chan.set_timeout(Some(support::DEADLINE));
    // Connected and working: 100 bytes from C.
    let mut buf = vec![0u8; 100];
    chan.recv(&mut buf).unwrap();
    let mut want = vec![0u8; 100];
    support::pattern(9, 0, &mut want);
    assert_eq!(buf, want);
    let reader = std::thread::spawn(move || {
        let mut b = [0u8; 8];
        let r = chan.read(&mut b);
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    c.kill();
    let (r, seen) = reader.join().unwrap();
    assert!(
        matches!(r, Err(vchan_msg::Error::PeerClosed { .. })),
        "{pairing:?}: {r:?}"
    );
    let after = seen.duration_since(killed);
    eprintln!("{pairing:?}: the Rust side saw the C side's death after {after:.2?}");
    assert!(after < Duration::from_secs(2), "{after:?}");
}

#[test]
fn killing_the_c_client_closes_the_rust_server() {
    kill_the_c_side(Pairing::RustServer);
}

#[test]
fn killing_the_c_server_closes_the_rust_client() {
    kill_the_c_side(Pairing::CServer);
}

/// The roles of the Rust side when it runs in its own process (to be killed).
fn rust_role(role: &str) {
    let port: u32 = std::env::var("PORT").unwrap().parse().unwrap();
    let path = default_path(DomId(0), DomId(1), port);
    let backend = support::child_backend();
    let mut chan = match role {
        "server" => vchan_msg::Server::new(DomId(1), &path)
            .backend(backend)
            .listen()
            .unwrap(),
        "client" => vchan_msg::Client::new(DomId(0), &path)
            .backend(backend)
            .connect()
            .unwrap(),
        other => panic!("unknown role {other}"),
    };
    let mut data = vec![0u8; 100];
    support::pattern(9, 0, &mut data);
    chan.write_all(&data).unwrap();
    support::say("ready");
    // Block until killed (or until the C side goes, which the test does not do).
    let mut b = [0u8; 1];
    let _ = chan.read(&mut b);
}

/// Kills the Rust side (a process of its own) while the C side is blocked in
/// `libxenvchan_read`; the C side must see the close.
fn kill_the_rust_side(test: &str, pairing: Pairing) {
    if let Some(role) = support::child_role() {
        return rust_role(&role);
    }
    if !c_side_available() {
        return;
    }
    let host = Host::new(&[1]);
    let port = 41;
    let path = default_path(DomId(0), DomId(1), port);
    let env = [("PORT", port.to_string())];
    let hold = |role: &str, domid: &str| -> Vec<String> {
        [role, domid, &path, "-b", "-R", "100", "-T", "9", "-H"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (mut rust, mut c) = match pairing {
        Pairing::RustServer => {
            let rust = host.rust_child(test, "server", 0, &env);
            rust.expect("ready");
            let c = host.c_node(1, &hold("client", "0"));
            (rust, c)
        }
        Pairing::CServer => {
            let c = host.c_node(0, &hold("server", "1"));
            c.expect("ready");
            let rust = host.rust_child(test, "client", 1, &env);
            rust.expect("ready");
            (rust, c)
        }
    };
    if pairing == Pairing::RustServer {
        c.expect("ready");
    }
    let (n, sum) = report(&c.expect("received"));
    assert_eq!((n, sum), (100, pattern_sum(9, 100)));
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    rust.kill();
    c.expect("closed");
    let after = killed.elapsed();
    eprintln!("{pairing:?}: the C side saw the Rust side's death after {after:.2?}");
    c.wait_success();
    assert!(after < Duration::from_secs(2), "{after:?}");
}

#[test]
fn killing_the_rust_server_closes_the_c_client() {
    kill_the_rust_side(
        "killing_the_rust_server_closes_the_c_client",
        Pairing::RustServer,
    );
}

#[test]
fn killing_the_rust_client_closes_the_c_server() {
    kill_the_rust_side(
        "killing_the_rust_client_closes_the_c_server",
        Pairing::CServer,
    );
}
