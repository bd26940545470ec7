//! `vchan pump`: a measured, verified transfer over a vchan — throughput both ways at once,
//! or round-trip latency — used by `vchan demo`, the tests, and anyone checking a link.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vchan_msg::{Error, ReadHalf, Vchan, WriteHalf};
use vchan_xenif::DomId;

use crate::chan::{ChanOpts, RoleArg};
use crate::pattern::Pattern;
use crate::util::{Mismatch, parse_chunk, parse_size, report};

/// The most round trips one `--ping` run measures (each is kept for the percentiles:
/// 8 bytes apiece, 80 MB at most).
pub const MAX_PINGS: u64 = 10_000_000;

/// Arguments of `vchan pump`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Send a verifiable byte stream both ways and measure it, or measure round trips",
    after_help = "Each side sends --send bytes of a deterministic pattern (seeded by its role) \
                  and checks every byte of the --expect bytes it receives, both directions at \
                  once. With --ping N the client sends N messages of --msg-size bytes and the \
                  server echoes them; the client reports round-trip percentiles.\n\n\
                  The last line on stdout is machine-readable: `result key=value …`.\n\n\
                  Example:\n  dom0$ vchan pump server 1 /local/domain/0/data/vchan/1/9 --send 1G \
                  --read-min 1M --write-min 1M\n  dom1$ vchan pump client 0 \
                  /local/domain/0/data/vchan/1/9 --send 1G --wait 10\n\n\
                  Exit codes: 0 done and verified, 1 transfer failed, 3 set-up failed, 4 data \
                  mismatch."
)]
pub struct Args {
    /// server or client
    #[arg(value_enum)]
    role: RoleArg,
    /// The peer domain
    domid: DomId,
    /// XenStore base path of the channel
    path: String,
    /// Bytes to send
    #[arg(long, value_parser = parse_size, default_value = "0", value_name = "SIZE")]
    send: usize,
    /// Bytes to receive and verify [default: the same as --send]
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    expect: Option<usize>,
    /// Bytes per write and per read call (at most 64M)
    #[arg(long, value_parser = parse_chunk, default_value = "64K", value_name = "SIZE")]
    chunk: usize,
    /// Print `progress sent=N recv=N` lines on stderr every quarter second
    #[arg(long)]
    progress: bool,
    /// Latency mode: this many round trips, 1 to 10000000 (the client measures, the server
    /// echoes)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_PINGS))]
    ping: Option<u64>,
    /// Message size in latency mode (at most the smaller ring)
    #[arg(long, value_parser = parse_chunk, default_value = "64", value_name = "SIZE")]
    msg_size: usize,
    #[command(flatten)]
    opts: ChanOpts,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match pump(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => report("pump", &e),
    }
}

/// The pattern seed of what `role` sends.
fn seed(role: RoleArg) -> u64 {
    match role {
        RoleArg::Server => 0x5e4e_5e4e,
        RoleArg::Client => 0xc11e_c11e,
    }
}

fn pump(args: &Args) -> Result<String> {
    let mut chan = args.opts.open(args.role, args.domid, &args.path)?;
    if args.role == RoleArg::Server {
        chan.wait_connected(None)
            .context("waiting for the client")?;
    }
    match args.ping {
        Some(n) => ping(args, chan, n),
        None => stream(args, chan),
    }
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    }
}

fn stream(args: &Args, chan: Vchan) -> Result<String> {
    let send = args.send as u64;
    let expect = args.expect.unwrap_or(args.send) as u64;
    let chunk = args.chunk.max(1);
    let sent = Arc::new(AtomicU64::new(0));
    let recvd = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let (reader, writer) = chan.split();
    let start = Instant::now();

    let s = sent.clone();
    let send_seed = seed(args.role);
    let tx = thread::spawn(move || send_all(writer, send, chunk, send_seed, &s, start));
    let r = recvd.clone();
    let recv_seed = seed(match args.role {
        RoleArg::Server => RoleArg::Client,
        RoleArg::Client => RoleArg::Server,
    });
    let rx = thread::spawn(move || recv_all(reader, expect, chunk, recv_seed, &r, start));

    let progress = args.progress.then(|| {
        let (s, r, f) = (sent.clone(), recvd.clone(), finished.clone());
        thread::spawn(move || {
            while !f.load(Ordering::Acquire) {
                eprintln!(
                    "progress sent={} recv={}",
                    s.load(Ordering::Relaxed),
                    r.load(Ordering::Relaxed)
                );
                thread::sleep(Duration::from_millis(250));
            }
        })
    });
    let tx = tx
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"));
    let rx = rx
        .join()
        .map_err(|_| anyhow::anyhow!("the receiving thread panicked"));
    finished.store(true, Ordering::Release);
    if let Some(p) = progress {
        let _ = p.join();
        eprintln!(
            "progress sent={} recv={}",
            sent.load(Ordering::Relaxed),
            recvd.load(Ordering::Relaxed)
        );
    }
    // Report a receive failure first: it usually explains a send failure (peer gone).
    let (recv_secs, reader) = rx??;
    let (send_secs, writer) = tx??;
    drop(Vchan::unsplit(reader, writer));
    Ok(format!(
        "result role={} sent={send} recv={expect} send_secs={send_secs:.3} recv_secs={recv_secs:.3} \
         send_MBps={:.1} recv_MBps={:.1} verified=yes",
        match args.role {
            RoleArg::Server => "server",
            RoleArg::Client => "client",
        },
        mbps(send, send_secs),
        mbps(expect, recv_secs),
    ))
}

fn send_all(
    mut w: WriteHalf,
    total: u64,
    chunk: usize,
    seed: u64,
    sent: &AtomicU64,
    start: Instant,
) -> Result<(f64, WriteHalf)> {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; chunk];
    let mut left = total;
    while left > 0 {
        let n = chunk.min(left as usize);
        pattern.fill(&mut buf[..n]);
        let mut part = &buf[..n];
        while !part.is_empty() {
            let k = w.write(part).with_context(|| {
                format!(
                    "sending, after {} of {total} bytes",
                    total - left + (n - part.len()) as u64
                )
            })?;
            part = &part[k..];
            sent.fetch_add(k as u64, Ordering::Relaxed);
        }
        left -= n as u64;
    }
    w.drain(None)
        .with_context(|| format!("the peer left before reading all {total} bytes"))?;
    Ok((start.elapsed().as_secs_f64(), w))
}

fn recv_all(
    mut r: ReadHalf,
    total: u64,
    chunk: usize,
    seed: u64,
    recvd: &AtomicU64,
    start: Instant,
) -> Result<(f64, ReadHalf)> {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; chunk];
    let mut scratch = Vec::with_capacity(chunk);
    let mut got = 0u64;
    while got < total {
        let want = chunk.min((total - got) as usize);
        let n = match r.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e @ Error::PeerClosed { .. }) => {
                return Err(e).with_context(|| format!("received only {got} of {total} bytes"));
            }
            Err(e) => return Err(e).with_context(|| format!("receiving, after {got} bytes")),
        };
        pattern
            .check(&buf[..n], &mut scratch)
            .map_err(|offset| Mismatch { offset })?;
        got += n as u64;
        recvd.store(got, Ordering::Relaxed);
    }
    Ok((start.elapsed().as_secs_f64(), r))
}

fn ping(args: &Args, mut chan: Vchan, n: u64) -> Result<String> {
    let size = args.msg_size.max(1);
    if size > chan.read_capacity() || size > chan.write_capacity() {
        bail!(
            "--msg-size {size} does not fit the rings ({} and {} bytes): use a smaller message \
             or larger rings",
            chan.read_capacity(),
            chan.write_capacity()
        );
    }
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    match args.role {
        RoleArg::Server => {
            for i in 0..n {
                chan.recv(&mut msg)
                    .with_context(|| format!("ping {i} of {n}"))?;
                chan.send(&msg)
                    .with_context(|| format!("echo {i} of {n}"))?;
            }
            chan.drain(None)?;
            Ok(format!("result role=server echoed={n} msg_size={size}"))
        }
        RoleArg::Client => {
            // `n` is at most MAX_PINGS (clap), so this is at most 80 MB.
            let mut rtts = Vec::with_capacity(usize::try_from(n.min(MAX_PINGS)).unwrap_or(0));
            let mut pattern = Pattern::new(seed(RoleArg::Client));
            for i in 0..n {
                pattern.fill(&mut msg);
                let t = Instant::now();
                chan.send(&msg)
                    .with_context(|| format!("ping {i} of {n}"))?;
                chan.recv(&mut back)
                    .with_context(|| format!("echo {i} of {n}"))?;
                rtts.push(t.elapsed());
                if back != msg {
                    return Err(Mismatch {
                        offset: i * size as u64,
                    }
                    .into());
                }
                if args.progress && i % 10_000 == 0 {
                    eprintln!("progress pings={i}");
                    std::io::stderr().flush().ok();
                }
            }
            rtts.sort_unstable();
            let pct = |p: f64| {
                rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize)
                    .map_or(0.0, |d| d.as_secs_f64() * 1e6)
            };
            let mean =
                rtts.iter().map(Duration::as_secs_f64).sum::<f64>() / rtts.len().max(1) as f64;
            Ok(format!(
                "result role=client pings={n} msg_size={size} min_us={:.2} p50_us={:.2} \
                 p99_us={:.2} max_us={:.2} mean_us={:.2}",
                pct(0.0),
                pct(0.5),
                pct(0.99),
                pct(1.0),
                mean * 1e6
            ))
        }
    }
}
