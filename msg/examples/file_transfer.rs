//! A file sent from one domain to another with fd splicing: the sender's `read(2)` puts the
//! file's bytes straight into reserved ring space, and the receiver's `write(2)` takes them
//! straight from the ring to the output file. No buffer of either process holds the data:
//! the kernel copies each byte into the shared ring and out of it, once each.
//!
//! The example starts a simulated Xen host in a temporary directory, sends as dom0, and runs
//! itself again as a second OS process acting as domain 1, the receiver. Two ways:
//!
//! * frames (the default): a typed header (the size), data frames filled by
//!   [`FrameWriter::send_from_fd`] and written out with [`Frame::write_all_to_fd`], an empty
//!   frame at end of file, and a typed trailer with the sender's checksum, which the receiver
//!   compares with its own of the file it wrote;
//! * `--stream`: the byte stream, [`WriteHalf::read_from_fd`] (`readv(2)` into the ring) and
//!   [`ReadHalf::write_to_fd`] (`writev(2)` out of it), as `vchan proxy` does; the sender
//!   closes at the end and the parent compares the checksums of both files.
//!
//! The checksums (FNV-1a, 64 bits) are computed apart from the transfer, by reading the
//! files: the data path itself touches no byte.
//!
//! Run it (in seconds with `--quick`):
//!
//! ```text
//! cargo run -p vchan-msg --release --example file_transfer
//! cargo run -p vchan-msg --example file_transfer -- --quick
//! cargo run -p vchan-msg --example file_transfer -- --quick --stream
//! ```
//!
//! Options: `--size BYTES` (the generated file, default 64 MiB), `--quick` (2 MiB),
//! `--file PATH` (send this file instead of a generated one), `--ring BYTES` (the ring the
//! data goes through, default 256 KiB, at most 1 MiB), `--stream`.
//!
//! [`FrameWriter::send_from_fd`]: vchan_msg::frame::FrameWriter::send_from_fd
//! [`Frame::write_all_to_fd`]: vchan_msg::frame::Frame::write_all_to_fd
//! [`WriteHalf::read_from_fd`]: vchan_msg::WriteHalf::read_from_fd
//! [`ReadHalf::write_to_fd`]: vchan_msg::ReadHalf::write_to_fd

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use vchan_msg::{Client, Error, Server, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Tag of the [`Header`] frame.
const HEADER: u32 = 1;
/// Tag of a data frame (an empty one ends the file).
const DATA: u32 = 2;
/// Tag of the [`Trailer`] frame.
const TRAILER: u32 = 3;

/// What comes first.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Header {
    size: u64,
}

/// What comes last: the sender's account of what it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Trailer {
    bytes: u64,
    fnv1a: u64,
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn chan_path() -> String {
    default_path(DomId(0), DomId(1), 8)
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// FNV-1a (64 bits) of a whole file, read in 1 MiB pieces.
fn checksum(path: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut h, mut len) = (0xcbf2_9ce4_8422_2325u64, 0u64);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, h));
        }
        for &b in &buf[..n] {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        len += n as u64;
    }
}

/// Writes `size` pseudo-random bytes to `path`.
fn generate(path: &Path, size: u64) -> Result<()> {
    let mut f = File::create(path)?;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--as-receiver") {
        match (args.get(1), args.get(2)) {
            (Some(out), Some(mode)) => receive(Path::new(out), mode == "stream"),
            _ => Err("--as-receiver OUTPUT frames|stream".into()),
        }
    } else {
        send(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_transfer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_bytes(v: Option<&String>, what: &str) -> Result<u64> {
    v.and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{what} takes a number of bytes").into())
}

/// Dom0: prepares the file, starts the host and the receiver, sends.
fn send(args: &[String]) -> Result<()> {
    let (mut size, mut ring, mut stream, mut file) = (64u64 << 20, 256usize << 10, false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => size = 2 << 20,
            "--size" => size = parse_bytes(it.next(), "--size")?,
            "--ring" => ring = parse_bytes(it.next(), "--ring")? as usize,
            "--stream" => stream = true,
            "--file" => file = Some(PathBuf::from(it.next().ok_or("--file takes a path")?)),
            other => return Err(format!("unknown argument {other:?} (see the file's docs)").into()),
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("vchan-ft")
        .tempdir_in("/tmp")?;
    let input = match file {
        Some(f) => f,
        None => {
            let p = tmp.path().join("input");
            generate(&p, size)?;
            p
        }
    };
    let output = tmp.path().join("output");
    let (len, sum) = checksum(&input)?;
    let host = SimHost::builder(tmp.path().join("host"))
        .domain(DomId(1), "receiver")
        .broker(BrokerConfig::default())
        .start()?;
    let chan = Server::new(DomId(1), chan_path())
        .backend(Backend::Sim {
            dir: host.dir().to_owned(),
            domid: DomId(0),
        })
        .write_min(ring)
        .timeout(Some(TIMEOUT))
        .listen()?;
    let mode = if stream { "stream" } else { "frames" };
    println!(
        "sending {} ({len} bytes) from dom0 to domain 1 (another process) through a {} KiB \
         ring, as {mode}",
        input.display(),
        chan.write_capacity() >> 10
    );
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--as-receiver",
            output.to_str().ok_or("temporary path")?,
            mode,
        ])
        .envs(host.env(DomId(1)))
        .spawn()?;
    let sent = send_file(chan, &input, len, sum, stream);
    let status = child.wait()?;
    let (bytes, took) = sent?;
    if !status.success() {
        return Err(format!("the receiver failed ({status})").into());
    }
    let (out_len, out_sum) = checksum(&output)?;
    if (out_len, out_sum) != (len, sum) {
        return Err(format!(
            "the received file differs: {out_len} bytes, FNV-1a {out_sum:016x}; sent {len} bytes, \
             {sum:016x}"
        )
        .into());
    }
    println!(
        "sent {bytes} bytes in {took:.2?} ({:.0} MB/s); both files: {len} bytes, FNV-1a \
         {sum:016x}",
        bytes as f64 / took.as_secs_f64() / 1e6
    );
    Ok(())
}

/// Sends the file; returns the bytes sent and how long it took (until the receiver had read
/// everything).
fn send_file(
    mut chan: vchan_msg::Vchan,
    input: &Path,
    len: u64,
    sum: u64,
    stream: bool,
) -> Result<(u64, Duration)> {
    chan.wait_connected(Some(TIMEOUT))?;
    let file = File::open(input)?;
    let start = Instant::now();
    let mut sent = 0u64;
    if stream {
        let (_rx, mut tx) = chan.split();
        loop {
            // readv(2) from the file into the ring's free space.
            let n = tx.read_from_fd(file.as_fd(), 1 << 20)?;
            if n == 0 {
                break;
            }
            sent += n as u64;
        }
        tx.drain(Some(TIMEOUT))?;
        // Closing ends the stream: the receiver sees PeerClosed once it has everything.
    } else {
        let (_rx, mut tx) = chan.into_frames()?;
        tx.send(HEADER, &Header { size: len })?;
        // Frames of a quarter of the ring (header included): the receiver writes one out
        // while the sender fills the next ones.
        let chunk = tx.capacity() / 4 - vchan_msg::frame::HEADER_LEN;
        loop {
            // read(2) from the file straight into a reserved frame.
            let n = tx.send_from_fd(DATA, file.as_fd(), chunk)?;
            if n == 0 {
                break; // the empty frame ends the data
            }
            sent += n as u64;
        }
        tx.send(
            TRAILER,
            &Trailer {
                bytes: sent,
                fnv1a: sum,
            },
        )?;
        tx.drain(Some(TIMEOUT))?;
    }
    Ok((sent, start.elapsed()))
}

/// Domain 1: receives into `output`.
fn receive(output: &Path, stream: bool) -> Result<()> {
    let chan = Client::new(DomId(0), chan_path())
        .wait_for_server(TIMEOUT)
        .timeout(Some(TIMEOUT))
        .connect()?;
    let out = File::create(output)?;
    let mut received = 0u64;
    if stream {
        let (mut rx, _tx) = chan.split();
        loop {
            // writev(2) from the ring's readable bytes to the file.
            match rx.write_to_fd(out.as_fd(), 1 << 20) {
                Ok(n) => received += n as u64,
                Err(Error::PeerClosed { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        println!("receiver: {received} bytes written to {}", output.display());
        return Ok(());
    }
    let (mut rx, _tx) = chan.into_frames()?;
    let (tag, header): (u32, Header) = rx.recv_copy()?;
    if tag != HEADER {
        return Err(format!("expected the header, got a frame tagged {tag}").into());
    }
    loop {
        let frame = rx.recv()?;
        if frame.tag() != DATA {
            return Err(format!("expected data, got a frame tagged {}", frame.tag()).into());
        }
        if frame.is_empty() {
            break;
        }
        // write(2) straight from the frame in the ring to the file.
        frame.write_all_to_fd(out.as_fd())?;
        received += frame.len() as u64;
    }
    let (tag, trailer): (u32, Trailer) = rx.recv_copy()?;
    if tag != TRAILER {
        return Err(format!("expected the trailer, got a frame tagged {tag}").into());
    }
    drop(out);
    let (len, sum) = checksum(output)?;
    if trailer
        != (Trailer {
            bytes: len,
            fnv1a: sum,
        })
        || len != header.size
    {
        return Err(format!(
            "checksum mismatch: the sender says {} bytes, FNV-1a {:016x} (header: {} bytes); \
             the file written has {len} bytes, {sum:016x}",
            trailer.bytes, trailer.fnv1a, header.size
        )
        .into());
    }
    println!(
        "receiver: {received} bytes written to {}, checksum verified (FNV-1a {sum:016x})",
        output.display()
    );
    Ok(())
}
