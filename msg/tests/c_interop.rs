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

/// One run: a channel between the Rust and the C side with the given ring sizes, moving
/// `to_c` bytes from Rust to C and `to_rust` from C to Rust at the same time, with calls of
/// `chunk` bytes (packets of that size in packet mode). Returns the wall time.
#[allow(clippy::too_many_arguments)]
fn run(
    host: &Host,
    pairing: Pairing,
    mode: Mode,
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
    let what = format!("{pairing:?} {mode:?} {read_min}/{write_min}");
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
            run(
                &host,
                pairing,
                mode,
                port,
                (read_min, write_min),
                v,
                v + 1,
                (chunk_to_c, chunk_to_rust),
            );
        }
    }
    eprintln!(
        "{pairing:?} {mode:?}: {} ring-size pairs, both directions at once, in {:.2?}",
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
