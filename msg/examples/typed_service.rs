//! A typed request/response service between two domains, over frames.
//!
//! The example starts a simulated Xen host (XenStore, grants, event channels) in a temporary
//! directory, serves as dom0, and runs itself again as a second OS process acting as domain 1,
//! the client. The two talk through a vchan turned into frames
//! ([`Vchan::into_frames`]); the messages are `#[repr(C)]` `zerocopy` types:
//!
//! 1. round trips: the client [`send`](vchan_msg::frame::FrameWriter::send)s one `AddRequest`, the server
//!    receives it with [`recv_copy`](vchan_msg::frame::FrameReader::recv_copy) (one fetch of the shared bytes)
//!    and answers with an `AddResponse`;
//! 2. batches: the client stages many requests with [`batch`](vchan_msg::frame::FrameWriter::batch) (one
//!    publish, at most one signal), the server answers each;
//! 3. variable-size payloads written in place: the client fills a frame straight in the ring
//!    with [`send_with`](vchan_msg::frame::FrameWriter::send_with); the server borrows it with
//!    [`recv`](vchan_msg::frame::FrameReader::recv) (no copy of the frame: it reads the header and hashes the
//!    payload through the volatile view) and answers with the hash, which the client checks.
//!
//! Every answer is checked; the figures printed are from this run.
//!
//! Run it (in seconds with `--quick`):
//!
//! ```text
//! cargo run -p vchan-msg --release --example typed_service
//! cargo run -p vchan-msg --example typed_service -- --quick
//! ```
//!
//! Options: `--requests N` (round trips and batched requests, default 100000), `--quick`
//! (2000), `--dir DIR` (the simulated host's directory; default: a new temporary one).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use vchan_msg::frame::FrameError;
use vchan_msg::{Client, Server, Vchan, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Tag of an [`AddRequest`].
const ADD: u32 = 1;
/// Tag of an [`AddResponse`].
const ADDED: u32 = 2;
/// Tag of a variable-size payload to hash.
const HASH: u32 = 3;
/// Tag of a [`Hashed`] answer.
const HASHED: u32 = 4;
/// Tag of the last request (empty payload); answered with an empty [`BYE`] frame.
const BYE: u32 = 9;

/// "Add these two numbers."
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct AddRequest {
    id: u64,
    a: i64,
    b: i64,
}

/// The answer to an [`AddRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct AddResponse {
    id: u64,
    sum: i64,
}

/// The answer to a [`HASH`] frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Hashed {
    len: u64,
    fnv1a: u64,
}

/// The vchan both processes use.
fn chan_path() -> String {
    default_path(DomId(0), DomId(1), 7)
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// FNV-1a, 64 bits, fed in pieces.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(mut self, bytes: &[u8]) -> Fnv {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

fn payload_byte(seed: u64, i: usize) -> u8 {
    (seed as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--as-client") {
        client(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2000))
    } else {
        parent(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("typed_service: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Dom0: starts the host and the client process, serves until the client says bye.
fn parent(args: &[String]) -> Result<()> {
    let mut requests = 100_000u64;
    let mut dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => requests = 2000,
            "--requests" => {
                requests = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--requests takes a number")?;
            }
            "--dir" => dir = Some(it.next().ok_or("--dir takes a directory")?.into()),
            other => return Err(format!("unknown argument {other:?} (see the file's docs)").into()),
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("vchan-ex")
        .tempdir_in("/tmp")?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    let host = SimHost::builder(&dir)
        .domain(DomId(1), "client")
        .broker(BrokerConfig::default())
        .start()?;
    println!(
        "simulated Xen host in {}: dom0 serves, domain 1 is a second process",
        dir.display()
    );

    // Advertise first, then start the client: it finds the channel at once.
    let mut chan = Server::new(DomId(1), chan_path())
        .backend(Backend::Sim {
            dir: dir.clone(),
            domid: DomId(0),
        })
        .read_min(64 << 10)
        .write_min(64 << 10)
        .timeout(Some(TIMEOUT))
        .listen()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--as-client", &requests.to_string()])
        .envs(host.env(DomId(1)))
        .spawn()?;
    let served = chan
        .wait_connected(Some(TIMEOUT))
        .map_err(Into::into)
        .and_then(|()| serve(chan));
    let status = child.wait()?;
    let served = served?;
    if !status.success() {
        return Err(format!("the client process failed ({status})").into());
    }
    println!(
        "server: answered {} additions and {} hash requests; the client checked every answer",
        served.0, served.1
    );
    Ok(())
}

/// The service: answers each request until [`BYE`]. Returns (additions, hashes) answered.
fn serve(chan: Vchan) -> Result<(u64, u64)> {
    let (mut rx, mut tx) = chan.into_frames()?;
    let (mut added, mut hashed) = (0u64, 0u64);
    loop {
        // Borrow the frame in place: its tag says what it is.
        let frame = rx.recv()?;
        match frame.tag() {
            ADD => {
                // A typed copy of a borrowed frame: one fetch, then the space goes back.
                let req: AddRequest = frame.read(0)?;
                drop(frame);
                let sum = req.a.wrapping_add(req.b);
                tx.send(ADDED, &AddResponse { id: req.id, sum })?;
                added += 1;
            }
            HASH => {
                // Hash the payload where it lies, through the volatile view, 4 KiB at a time
                // into a private buffer: the peer can change the ring, not what we hashed.
                let view = frame.bytes();
                let mut h = Fnv::new();
                let mut buf = [0u8; 4096];
                let mut at = 0;
                while at < view.len() {
                    let n = buf.len().min(view.len() - at);
                    view.read_into(at, &mut buf[..n])?;
                    h = h.feed(&buf[..n]);
                    at += n;
                }
                let answer = Hashed {
                    len: view.len() as u64,
                    fnv1a: h.0,
                };
                drop(frame);
                tx.send(HASHED, &answer)?;
                hashed += 1;
            }
            BYE => {
                drop(frame);
                tx.send(BYE, &[0u8; 0][..])?;
                tx.drain(Some(TIMEOUT))?;
                return Ok((added, hashed));
            }
            other => return Err(format!("unknown request tag {other}").into()),
        }
    }
}

/// Domain 1: the client, a process of its own (its domain comes from the environment the
/// parent gave it).
fn client(requests: u64) -> Result<()> {
    let chan = Client::new(DomId(0), chan_path())
        .wait_for_server(TIMEOUT)
        .timeout(Some(TIMEOUT))
        .connect()?;
    let (mut rx, mut tx) = chan.into_frames()?;

    // 1. One request, one answer.
    let start = Instant::now();
    for id in 0..requests {
        let req = AddRequest {
            id,
            a: id as i64 * 3,
            b: -(id as i64),
        };
        tx.send(ADD, &req)?;
        let (tag, resp): (u32, AddResponse) = rx.recv_copy()?;
        check(
            tag == ADDED
                && resp
                    == AddResponse {
                        id,
                        sum: 2 * id as i64,
                    },
            "an addition",
        )?;
    }
    let t = start.elapsed();
    println!(
        "client: {requests} round trips of 24-byte requests in {t:.2?}: {:.1} µs each",
        t.as_secs_f64() * 1e6 / requests as f64
    );

    // 2. Batches: up to 256 requests staged, published at once, then their answers.
    let start = Instant::now();
    let mut id = 0u64;
    while id < requests {
        let n = (requests - id).min(256);
        let mut batch = tx.batch()?;
        for k in 0..n {
            let i = id + k;
            batch.send(
                ADD,
                &AddRequest {
                    id: i,
                    a: i as i64,
                    b: 1,
                },
            )?;
        }
        batch.finish()?;
        for k in 0..n {
            let i = id + k;
            let (tag, resp): (u32, AddResponse) = rx.recv_copy()?;
            check(
                tag == ADDED
                    && resp
                        == AddResponse {
                            id: i,
                            sum: i as i64 + 1,
                        },
                "a batched addition",
            )?;
        }
        id += n;
    }
    let t = start.elapsed();
    println!(
        "client: {requests} requests in batches of 256 in {t:.2?}: {:.0} requests/s",
        requests as f64 / t.as_secs_f64()
    );

    // 3. Variable sizes, written in place in the ring.
    let max = tx.max_payload();
    let rounds = (requests / 20).max(50);
    let mut bytes = 0u64;
    let start = Instant::now();
    for seed in 0..rounds {
        let len = (seed as usize * 7919) % (max + 1);
        let n = tx.send_with(HASH, len, |buf| {
            // Generated 4 KiB at a time and written straight into the reserved frame: no
            // frame-sized buffer of ours, no copy after this one.
            let mut piece = [0u8; 4096];
            for start in (0..len).step_by(piece.len()) {
                let end = (start + piece.len()).min(len);
                for (k, b) in piece[..end - start].iter_mut().enumerate() {
                    *b = payload_byte(seed, start + k);
                }
                buf.write_at(start, &piece[..end - start])?;
            }
            Ok::<_, FrameError>(len)
        })?;
        let expected = (0..n).fold(Fnv::new(), |h, i| h.feed(&[payload_byte(seed, i)]));
        let (tag, answer): (u32, Hashed) = rx.recv_copy()?;
        check(
            tag == HASHED
                && answer
                    == Hashed {
                        len: n as u64,
                        fnv1a: expected.0,
                    },
            "a hash",
        )?;
        bytes += n as u64;
    }
    let t = start.elapsed();
    println!(
        "client: {rounds} payloads of 0..={max} bytes written in place and hashed by the server \
         ({bytes} bytes) in {t:.2?}"
    );

    tx.send(BYE, &[0u8; 0][..])?;
    let bye = rx.recv()?;
    check(bye.tag() == BYE, "the goodbye")?;
    println!("client: all answers correct");
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("wrong answer to {what}").into())
    }
}
