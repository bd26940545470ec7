//! `vchan demo`: one command, no set-up: a simulated Xen host, a server "dom0" process and a
//! client "domU" process streaming verified data both ways, then a latency run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vchan_msg::default_path;
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;

use crate::cmd::pump::MAX_PINGS;
use crate::util::{human, parse_chunk, parse_size, report};

/// Parses a ring size: 1K to 1M.
fn parse_ring(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if (1024..=1 << 20).contains(&n) => Ok(n),
        n => Err(format!(
            "{s:?} ({n} bytes) is out of range: a vchan ring holds 1K to 1M"
        )),
    }
}

/// Arguments of `vchan demo`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run the demo: a simulated Xen host with dom0 and a guest, data both ways, figures",
    after_help = "Starts a simulated Xen host (XenStore, grants, event channels) in a temporary \
                  directory, then two processes of this binary: `vchan pump server` acting as \
                  dom0 and `vchan pump client` acting as domain 1. They connect through \
                  XenStore exactly as libxenvchan programs do, stream --bytes each way at once \
                  while every byte is checked, and then measure --pings round trips of 64 bytes.\n\n\
                  Example: vchan demo --bytes 1G --ring 256K"
)]
pub struct Args {
    /// Bytes to send each way
    #[arg(long, value_parser = parse_size, default_value = "512M", value_name = "SIZE")]
    bytes: usize,
    /// Size of each ring (1K … 1M)
    #[arg(long, value_parser = parse_ring, default_value = "1M", value_name = "SIZE")]
    ring: usize,
    /// Bytes per write/read call (at most 64M)
    #[arg(long, value_parser = parse_chunk, default_value = "64K", value_name = "SIZE")]
    chunk: usize,
    /// Round trips in the latency run (0 skips it; at most 10000000)
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(0..=MAX_PINGS))]
    pings: u64,
    /// Directory for the simulated host [default: a new temporary directory]
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("demo", &e),
    }
}

/// A child `vchan pump` acting as one domain, with its progress and result.
struct Peer {
    name: &'static str,
    child: Child,
    recv: Arc<AtomicU64>,
    stderr: thread::JoinHandle<Vec<String>>,
    stdout: thread::JoinHandle<String>,
}

fn spawn_pump(host: &SimHost, domid: DomId, name: &'static str, args: &[String]) -> Result<Peer> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = Command::new(exe);
    cmd.arg("pump")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in host.env(domid) {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {name} process"))?;
    let recv = Arc::new(AtomicU64::new(0));
    let err = child.stderr.take().context("child stderr")?;
    let r = recv.clone();
    let stderr = thread::spawn(move || {
        let mut other = Vec::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let fields = parse_fields(&line);
            if line.starts_with("progress ") {
                if let Some(v) = fields.get("recv").and_then(|v| v.parse().ok()) {
                    r.store(v, Ordering::Relaxed);
                }
            } else {
                other.push(line);
            }
        }
        other
    });
    let mut out = child.stdout.take().context("child stdout")?;
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    Ok(Peer {
        name,
        child,
        recv,
        stderr,
        stdout,
    })
}

fn parse_fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Waits for a peer; returns its `result` fields or an error with what it printed.
fn finish(mut peer: Peer) -> Result<HashMap<String, String>> {
    let status = peer.child.wait()?;
    let errors = peer.stderr.join().unwrap_or_default();
    let out = peer.stdout.join().unwrap_or_default();
    let result = out.lines().rev().find(|l| l.starts_with("result "));
    match (status.success(), result) {
        (true, Some(line)) => Ok(parse_fields(line)),
        _ => bail!(
            "the {} process failed ({status}):\n  {}",
            peer.name,
            if errors.is_empty() {
                "(no message)".to_owned()
            } else {
                errors.join("\n  ")
            }
        ),
    }
}

fn bar(done: u64, total: u64) -> String {
    let width = 24;
    let filled = (done.min(total) * width as u64)
        .checked_div(total)
        .map_or(width, |f| f as usize);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn demo(args: &Args) -> Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    println!("vchan demo: a simulated Xen host in {}", dir.display());
    let host = SimHost::builder(&dir)
        .domain(DomId(1), "guest")
        .broker(BrokerConfig::default())
        .start()
        .context("starting the simulated host")?;
    println!("  domains: dom0 (server) and domain 1 \"guest\" (client), one OS process each");

    let bytes = args.bytes.to_string();
    let ring = args.ring.to_string();
    let chunk = args.chunk.to_string();
    let path = default_path(DomId(0), DomId(1), 1);
    println!(
        "  streaming {} each way at once through {} rings ({} per call), every byte checked",
        human(args.bytes as u64),
        human(args.ring as u64),
        human(args.chunk as u64)
    );
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let server = spawn_pump(
        &host,
        DomId(0),
        "dom0 server",
        &s(&[
            "server",
            "1",
            &path,
            "--send",
            &bytes,
            "--read-min",
            &ring,
            "--write-min",
            &ring,
            "--chunk",
            &chunk,
            "--progress",
        ]),
    )?;
    let client = spawn_pump(
        &host,
        DomId(1),
        "domain 1 client",
        &s(&[
            "client",
            "0",
            &path,
            "--send",
            &bytes,
            "--chunk",
            &chunk,
            "--wait",
            "30",
            "--progress",
        ]),
    )?;

    let total = args.bytes as u64;
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut last_line = Instant::now();
    let (down, up) = (client.recv.clone(), server.recv.clone());
    let progress = |final_: bool| {
        let (d, u) = (down.load(Ordering::Relaxed), up.load(Ordering::Relaxed));
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        format!(
            "  dom0→dom1 {} {:>9}   dom1→dom0 {} {:>9}   {:.1} s{}",
            bar(d, total),
            human(d),
            bar(u, total),
            human(u),
            secs,
            if final_ { "" } else { "   " }
        )
    };
    let mut server = Some(server);
    let mut client = Some(client);
    let mut results = Vec::new();
    while server.is_some() || client.is_some() {
        thread::sleep(Duration::from_millis(100));
        for slot in [&mut server, &mut client] {
            if let Some(p) = slot {
                if p.child.try_wait()?.is_some() {
                    results.push((p.name, finish(slot.take().expect("present"))));
                }
            }
        }
        if tty {
            print!("\r{}", progress(false));
            std::io::stdout().flush().ok();
        } else if last_line.elapsed() >= Duration::from_secs(1) {
            println!("{}", progress(false));
            last_line = Instant::now();
        }
    }
    if tty {
        println!("\r{}", progress(true));
    } else {
        println!("{}", progress(true));
    }
    let mut by_role = HashMap::new();
    for (name, r) in results {
        let fields = r.with_context(|| format!("the {name} failed"))?;
        by_role.insert(fields.get("role").cloned().unwrap_or_default(), fields);
    }
    let get = |role: &str, key: &str| {
        by_role
            .get(role)
            .and_then(|f| f.get(key))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    println!("\nThroughput (both directions at once, verified):");
    println!("  dom0 → dom1: {:>8.0} MB/s", get("client", "recv_MBps"));
    println!("  dom1 → dom0: {:>8.0} MB/s", get("server", "recv_MBps"));
    println!(
        "  total:       {:>8.0} MB/s ({} moved in {:.2} s)",
        get("client", "recv_MBps") + get("server", "recv_MBps"),
        human(2 * total),
        get("client", "recv_secs").max(get("server", "recv_secs"))
    );

    if args.pings > 0 {
        let pings = args.pings.to_string();
        let path = default_path(DomId(0), DomId(1), 2);
        println!(
            "\nRound trips: {} × 64 bytes, default in-page rings, spin-then-sleep waiting",
            args.pings
        );
        let server = spawn_pump(
            &host,
            DomId(0),
            "dom0 echo server",
            &s(&["server", "1", &path, "--ping", &pings]),
        )?;
        let client = spawn_pump(
            &host,
            DomId(1),
            "domain 1 ping client",
            &s(&["client", "0", &path, "--ping", &pings, "--wait", "30"]),
        )?;
        let c = finish(client)?;
        finish(server)?;
        let f = |k: &str| c.get(k).cloned().unwrap_or_default();
        println!(
            "  round trip: p50 {} µs, p99 {} µs, min {} µs, mean {} µs",
            f("p50_us"),
            f("p99_us"),
            f("min_us"),
            f("mean_us")
        );
    }
    drop(host);
    println!("\nDone: every byte arrived intact. Next: `vchan sim --help`, `vchan cat --help`.");
    Ok(())
}

/// A temporary directory removed on drop (short path: Unix socket paths are limited).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let p = base.join(format!("vchan-demo-{}-{i}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!(
        "could not create a temporary directory under {}",
        base.display()
    )
}
