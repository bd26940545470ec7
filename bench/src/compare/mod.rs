//! `vchan-bench compare`: the side-by-side comparison on the simulated host.
//!
//! The parent process starts a simulated Xen host (its XenStore and grant/event-channel
//! broker threads block unless a pair is being set up), then, for every implementation to be
//! compared, the child processes that carry its data ([`procs::Pair`]). Pairs of one table
//! are measured **interleaved**: calibration, then repetition 1 of A, B, C…, repetition 2 of
//! A, B, C… (rotating who goes first), so that slow drift of a shared machine hits all of
//! them alike. Tables quote medians over repetitions and ratios of those medians; latency
//! tables pool the per-round-trip samples of all interleaved blocks.
//!
//! Idle pairs block on their command pipe; only the pair being measured runs.

mod plot;
mod procs;
mod report;
mod setup;
pub(crate) mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vchan_bench::machine::{self, Machine};
use vchan_bench::units::size;
use vchan_msg::default_path;
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;

use procs::{Helper, Member, Pair, expect_ready};
use setup::Externals;

/// Options of `compare`.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// CI mode: a small grid, few repetitions, short trials.
    pub(crate) short: bool,
    /// Where the report and plots go.
    pub(crate) out: Option<PathBuf>,
    /// Repetitions per measurement (default: 5, short: 3).
    pub(crate) reps: Option<usize>,
    /// Target seconds per throughput trial.
    pub(crate) trial_secs: Option<f64>,
    /// Do not pin processes to CPUs.
    pub(crate) no_pin: bool,
    /// Path of the `vchan` command (default: built with cargo).
    pub(crate) vchan: Option<PathBuf>,
    /// Sections to run (default: all).
    pub(crate) only: Option<Vec<String>>,
    /// Ring sizes of the throughput grid (default: 4K, 64K, 1M; short: 64K, 1M).
    pub(crate) rings: Option<Vec<usize>>,
    /// Write sizes of the throughput grid (default: 64 … 1M; short: 64, 4K, 64K).
    pub(crate) msgs: Option<Vec<usize>>,
}

/// The sizes and counts a run uses.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) rings: Vec<usize>,
    pub(crate) msgs: Vec<usize>,
    pub(crate) reps: usize,
    pub(crate) trial_secs: f64,
    pub(crate) calib_bytes: usize,
    pub(crate) lat_blocks: usize,
    pub(crate) lat_count: u64,
    pub(crate) typed_rings: Vec<usize>,
    pub(crate) spin_msgs: Vec<usize>,
    pub(crate) proxy_msgs: Vec<usize>,
    pub(crate) pin: bool,
}

impl Plan {
    fn new(o: &Options) -> Plan {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let k = 1 << 10;
        let m = 1 << 20;
        let mut p = if o.short {
            Plan {
                rings: vec![64 * k, m],
                msgs: vec![64, 4 * k, 64 * k],
                reps: 3,
                trial_secs: 0.05,
                calib_bytes: m,
                lat_blocks: 3,
                lat_count: 2000,
                typed_rings: vec![64 * k],
                spin_msgs: vec![64, 64 * k],
                proxy_msgs: vec![64 * k],
                pin: true,
            }
        } else {
            Plan {
                rings: vec![4 * k, 64 * k, m],
                msgs: vec![64, 256, k, 4 * k, 16 * k, 64 * k, 256 * k, m],
                reps: 5,
                trial_secs: 0.25,
                calib_bytes: 4 * m,
                lat_blocks: 10,
                lat_count: 5000,
                typed_rings: vec![64 * k, m],
                spin_msgs: vec![64, 4 * k, 64 * k],
                proxy_msgs: vec![k, 64 * k],
                pin: true,
            }
        };
        if let Some(r) = o.reps {
            p.reps = r.max(1);
        }
        if let Some(s) = o.trial_secs {
            p.trial_secs = s.max(0.001);
        }
        if let Some(r) = &o.rings {
            p.rings = r.clone();
        }
        if let Some(m) = &o.msgs {
            p.msgs = m.clone();
        }
        p.pin = !o.no_pin && cpus >= 2;
        p
    }
}

/// Which waiting strategy a vchan (Rust or C) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wait {
    /// Never sleep: spin on the ring (Rust: an unbounded spin; C: non-blocking calls retried).
    Busy,
    /// The library's default: Rust's adaptive spin-then-sleep (≤ 50 µs), C's blocking calls.
    Default,
    /// Rust with spinning off: sleep on the event channel at once (C's behaviour).
    NoSpin,
    /// Rust spinning the default's maximum (50 µs) every time, without adapting.
    Fixed50,
}

impl Wait {
    fn rust_arg(self) -> &'static str {
        match self {
            Wait::Busy => "busy",
            Wait::Default => "default",
            Wait::NoSpin => "off",
            Wait::Fixed50 => "fixed50",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Wait::Busy => "busy-poll",
            Wait::Default => "default",
            Wait::NoSpin => "no spin",
            Wait::Fixed50 => "fixed 50 µs spin",
        }
    }
}

/// An implementation to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Impl {
    VchanStream(Wait),
    VchanFrames(Wait),
    VchanFramesInPlace(Wait),
    VchanTyped(Wait),
    VchanTypedBatch(Wait),
    C(Wait),
    Unix,
    Pipe,
    Rtrb,
    Crossbeam,
    Memcpy,
    Cacheline,
}

impl Impl {
    /// The row/column label in the report.
    pub(crate) fn label(self) -> String {
        let w = |w: Wait| match w {
            Wait::Default => String::new(),
            other => format!(", {}", other.label()),
        };
        match self {
            Impl::VchanStream(m) => format!("vchan stream{}", w(m)),
            Impl::VchanFrames(m) => format!("vchan frames{}", w(m)),
            Impl::VchanFramesInPlace(m) => format!("vchan frames, read in place{}", w(m)),
            Impl::VchanTyped(m) => format!("typed frames, one by one{}", w(m)),
            Impl::VchanTypedBatch(m) => format!("typed frames, batched{}", w(m)),
            Impl::C(Wait::Default) => "C libxenvchan".into(),
            Impl::C(m) => format!("C libxenvchan, {}", m.label()),
            Impl::Unix => "Unix socket".into(),
            Impl::Pipe => "pipe".into(),
            Impl::Rtrb => "rtrb (in-process)".into(),
            Impl::Crossbeam => "crossbeam-channel (in-process)".into(),
            Impl::Memcpy => "memcpy (1 thread)".into(),
            Impl::Cacheline => "cache-line ping-pong".into(),
        }
    }

    /// Whether a message of `msg` bytes fits this implementation with `ring`-byte rings.
    fn fits(self, ring: usize, msg: usize) -> bool {
        match self {
            Impl::VchanFrames(_)
            | Impl::VchanFramesInPlace(_)
            | Impl::VchanTyped(_)
            | Impl::VchanTypedBatch(_) => msg <= ring - vchan_msg::frame::HEADER_LEN,
            _ => true,
        }
    }
}

/// One measured quantity of one implementation: a value per repetition.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cell {
    /// One value per repetition (MB/s, or messages/s).
    pub(crate) values: Vec<f64>,
    /// Wall and CPU time over all repetitions (all processes of the pair).
    pub(crate) wall_ns: u64,
    pub(crate) cpu_ns: u64,
    /// Why it was not measured.
    pub(crate) na: Option<String>,
}

impl Cell {
    fn na(reason: impl Into<String>) -> Cell {
        Cell {
            na: Some(reason.into()),
            ..Cell::default()
        }
    }

    /// The median value, if measured.
    pub(crate) fn median(&self) -> Option<f64> {
        vchan_bench::stats::median(&self.values)
    }

    /// CPU use over wall time (1.0 = one CPU busy all the time).
    pub(crate) fn cpu_share(&self) -> Option<f64> {
        (self.wall_ns > 0 && !self.values.is_empty())
            .then(|| self.cpu_ns as f64 / self.wall_ns as f64)
    }
}

/// What a throughput measurement counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// 10^6 payload bytes per second.
    MBps,
    /// 10^6 messages per second.
    Mmsgs,
}

/// One raw trial, for the CSV file.
#[derive(Clone, Debug)]
pub(crate) struct RawTrial {
    pub(crate) section: &'static str,
    pub(crate) ring: usize,
    pub(crate) msg: usize,
    pub(crate) label: String,
    pub(crate) rep: usize,
    pub(crate) count: u64,
    pub(crate) wall_ns: u64,
    pub(crate) cpu_ns: u64,
}

/// Everything a run measured.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// (ring, msg, impl) → MB/s.
    pub(crate) grid: BTreeMap<(usize, usize, Impl), Cell>,
    /// (ring, wait, impl) → M messages/s of 64 bytes.
    pub(crate) typed: BTreeMap<(usize, Impl), Cell>,
    /// (msg, impl) → MB/s at the spin ring size.
    pub(crate) spin: BTreeMap<(usize, Impl), Cell>,
    /// Per-round-trip samples in ns.
    pub(crate) latency: Vec<(Impl, Vec<f64>)>,
    /// (msg, proxy label) → MB/s.
    pub(crate) proxy: BTreeMap<(usize, String), Cell>,
    /// Proxy labels in order.
    pub(crate) proxy_labels: Vec<String>,
    /// Every trial.
    pub(crate) raw: Vec<RawTrial>,
    /// Sections skipped or partly failed, with the reason.
    pub(crate) notes: Vec<String>,
}

/// The ring size of the spin and latency sections.
pub(crate) const SPIN_RING: usize = 64 << 10;

/// What the measuring code needs.
struct Ctx {
    host: SimHost,
    ext: Externals,
    plan: Plan,
    tmp: tempfile::TempDir,
    next_port: u32,
    next_sock: u32,
}

impl Ctx {
    fn port(&mut self) -> u32 {
        self.next_port += 1;
        self.next_port
    }

    fn sock(&mut self, what: &str) -> PathBuf {
        self.next_sock += 1;
        self.tmp.path().join(format!("{what}{}", self.next_sock))
    }

    fn cpu(&self, n: usize) -> Option<String> {
        self.plan.pin.then(|| n.to_string())
    }

    /// This binary as a worker acting as domain `dom`, with `args`, pinned to `cpu`.
    fn worker(&self, dom: u16, args: &[String], cpu: Option<String>) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.arg("worker").args(args);
        if let Some(c) = cpu {
            cmd.arg(format!("cpu={c}"));
        }
        for (k, v) in self.host.env(DomId(dom)) {
            cmd.env(k, v);
        }
        cmd
    }

    /// A C program acting as domain `dom` on the drop-in libraries.
    fn c_command(&self, program: &Path, dom: u16) -> Result<Command> {
        let (_, ld) = self
            .ext
            .c_driver
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut cmd = Command::new(program);
        for (k, v) in self.host.env(DomId(dom)) {
            cmd.env(k, v);
        }
        cmd.env("LD_LIBRARY_PATH", ld);
        Ok(cmd)
    }

    /// Starts the pair for `imp` with `ring`-byte rings, as a throughput pair (source and
    /// sink) or a latency pair (ping and echo).
    fn pair(&mut self, imp: Impl, ring: usize, latency: bool) -> Result<Pair> {
        let (first_role, second_role) = if latency {
            ("echo", "ping")
        } else {
            ("src", "sink")
        };
        let kv = |k: &str, v: &dyn std::fmt::Display| format!("{k}={v}");
        match imp {
            Impl::VchanStream(w)
            | Impl::VchanFrames(w)
            | Impl::VchanFramesInPlace(w)
            | Impl::VchanTyped(w)
            | Impl::VchanTypedBatch(w) => {
                let api = match imp {
                    Impl::VchanStream(_) => "stream",
                    Impl::VchanFrames(_) => "frames",
                    Impl::VchanFramesInPlace(_) => "framesinplace",
                    Impl::VchanTyped(_) => "typed",
                    _ => "typedbatch",
                };
                let port = self.port();
                let common = |side: &str, role: &str| {
                    vec![
                        kv("kind", &"vchan"),
                        kv("side", &side),
                        kv("api", &api),
                        kv("role", &role),
                        kv("ring", &ring),
                        kv("spin", &w.rust_arg()),
                        kv("port", &port),
                    ]
                };
                let mut server = Member::spawn(
                    format!("{} server", imp.label()),
                    self.worker(0, &common("server", first_role), self.cpu(0)),
                )?;
                expect_ready(&mut server)?;
                let mut client = Member::spawn(
                    format!("{} client", imp.label()),
                    self.worker(1, &common("client", second_role), self.cpu(1)),
                )?;
                expect_ready(&mut client)?;
                Ok(Pair::new(vec![server, client], 1))
            }
            Impl::C(w) => {
                let (exe, _) = self
                    .ext
                    .c_driver
                    .as_ref()
                    .map_err(|e| anyhow::anyhow!("{e:#}"))?
                    .clone();
                let port = self.port();
                let path = default_path(DomId(0), DomId(1), port);
                let mode = if w == Wait::Busy { "busy" } else { "block" };
                let ring_s = ring.to_string();
                let spawn = |dom: u16, side: &str, peer: &str, role: &str, cpu| {
                    let mut cmd = self.c_command(&exe, dom)?;
                    cmd.args([side, peer, &path, role, &ring_s, mode]);
                    if let Some(c) = cpu {
                        cmd.env("BENCH_CPU", c);
                    }
                    let mut m = Member::spawn(format!("{} {side}", imp.label()), cmd)?;
                    expect_ready(&mut m)?;
                    Ok::<Member, anyhow::Error>(m)
                };
                let server = spawn(0, "server", "1", first_role, self.cpu(0))?;
                let client = spawn(1, "client", "0", second_role, self.cpu(1))?;
                Ok(Pair::new(vec![server, client], 1))
            }
            Impl::Unix | Impl::Pipe => {
                let kind = if imp == Impl::Unix { "unix" } else { "pipe" };
                let path = self.sock(kind);
                if imp == Impl::Pipe {
                    for s in ["a", "b"] {
                        let p = format!("{}.{s}", path.display());
                        nix::unistd::mkfifo(p.as_str(), nix::sys::stat::Mode::S_IRWXU)
                            .with_context(|| format!("mkfifo {p}"))?;
                    }
                }
                // The receiving side (sink, echo) listens first.
                let (listen_role, connect_role) = if latency {
                    ("echo", "ping")
                } else {
                    ("sink", "src")
                };
                let args = |role: &str| {
                    vec![
                        kv("kind", &kind),
                        kv("role", &role),
                        kv("path", &path.display()),
                        kv("ring", &ring),
                    ]
                };
                let mut first = Member::spawn(
                    format!("{} {listen_role}", imp.label()),
                    self.worker(0, &args(listen_role), self.cpu(1)),
                )?;
                expect_ready(&mut first)?;
                let mut second = Member::spawn(
                    format!("{} {connect_role}", imp.label()),
                    self.worker(0, &args(connect_role), self.cpu(0)),
                )?;
                expect_ready(&mut second)?;
                Ok(Pair::new(vec![first, second], if latency { 1 } else { 0 }))
            }
            Impl::Rtrb | Impl::Crossbeam | Impl::Memcpy | Impl::Cacheline => {
                let name = match (imp, latency) {
                    (Impl::Rtrb, false) => "rtrb",
                    (Impl::Rtrb, true) => "rtrb-ping",
                    (Impl::Crossbeam, false) => "crossbeam",
                    (Impl::Crossbeam, true) => "crossbeam-ping",
                    (Impl::Memcpy, _) => "memcpy",
                    _ => "cacheline",
                };
                let mut args = vec![
                    kv("kind", &"inproc"),
                    kv("role", &"both"),
                    kv("impl", &name),
                    kv("ring", &ring),
                ];
                if self.plan.pin {
                    args.push(kv("cpus", &"0,1"));
                }
                let mut m = Member::spawn(imp.label(), self.worker(0, &args, None))?;
                expect_ready(&mut m)?;
                Ok(Pair::new(vec![m], 0))
            }
        }
    }

    /// Checks a byte-stream pair end to end (a position pattern, verified by the receiver).
    fn check(pair: &mut Pair, ring: usize) -> Result<()> {
        let count = (4 * ring / 1000).max(64) as u64;
        pair.command("check", 1000, count, false).map(|_| ())
    }
}

/// A pair under measurement, with what is known about it.
struct Slot {
    imp: Impl,
    pair: Option<Pair>,
    count: u64,
    cell: Cell,
}

/// Measures throughput of `slots` at message size `msg`, interleaved; fills their cells.
fn measure_throughput(
    ctx: &Ctx,
    slots: &mut [Slot],
    ring: usize,
    msg: usize,
    unit: Unit,
    section: &'static str,
    raw: &mut Vec<RawTrial>,
) {
    let plan = &ctx.plan;
    // Calibration (also the warm-up): how many messages fill a trial.
    for s in slots.iter_mut() {
        s.cell = Cell::default();
        let Some(pair) = s.pair.as_mut() else {
            s.cell = Cell::na("not started");
            continue;
        };
        if !s.imp.fits(ring, msg) {
            s.cell = Cell::na(format!(
                "a frame holds at most ring − 8 = {} bytes",
                ring - 8
            ));
            continue;
        }
        match calibrate(pair, msg, plan) {
            Ok(count) => s.count = count,
            Err(e) => {
                println!("    {}: FAILED: {e:#}", s.imp.label());
                s.cell = Cell::na(format!("failed: {e:#}"));
                s.pair = None;
            }
        }
    }
    let n = slots.len();
    for rep in 0..plan.reps {
        for k in 0..n {
            let s = &mut slots[(k + rep) % n];
            if s.cell.na.is_some() {
                continue;
            }
            let Some(pair) = s.pair.as_mut() else {
                continue;
            };
            match pair.run(msg, s.count, false) {
                Ok(t) => {
                    let secs = t.wall_ns.max(1) as f64 / 1e9;
                    let v = match unit {
                        Unit::MBps => s.count as f64 * msg as f64 / secs / 1e6,
                        Unit::Mmsgs => s.count as f64 / secs / 1e6,
                    };
                    s.cell.values.push(v);
                    s.cell.wall_ns += t.wall_ns;
                    s.cell.cpu_ns += t.cpu_ns;
                    raw.push(RawTrial {
                        section,
                        ring,
                        msg,
                        label: s.imp.label(),
                        rep,
                        count: s.count,
                        wall_ns: t.wall_ns,
                        cpu_ns: t.cpu_ns,
                    });
                }
                Err(e) => {
                    println!("    {}: FAILED: {e:#}", s.imp.label());
                    s.cell = Cell::na(format!("failed: {e:#}"));
                    s.pair = None;
                }
            }
        }
    }
}

/// How many messages of `msg` bytes make a trial of about `plan.trial_secs`: a first run of
/// `plan.calib_bytes`, and a second, longer one when the first was too short to trust (both
/// also warm the pair up: pages faulted in, caches and spin budgets settled).
fn calibrate(pair: &mut Pair, msg: usize, plan: &Plan) -> Result<u64> {
    let mut count = (plan.calib_bytes / msg).max(2) as u64;
    let mut round = 0;
    loop {
        let t = pair.run(msg, count, false)?;
        let secs = t.wall_ns.max(1) as f64 / 1e9;
        let rate = count as f64 / secs;
        round += 1;
        if secs >= plan.trial_secs / 5.0 || round == 3 {
            // At least `calib_bytes` per trial: a calibration that hit a slow moment must
            // not leave the trials too short to average anything.
            let floor = (plan.calib_bytes / msg).max(1) as u64;
            return Ok(((rate * plan.trial_secs) as u64).clamp(floor, 1 << 32));
        }
        count = ((rate * plan.trial_secs / 3.0) as u64).clamp(1, 1 << 32);
    }
}

fn start_slots(ctx: &mut Ctx, imps: &[Impl], ring: usize, check: bool) -> Vec<Slot> {
    imps.iter()
        .map(|&imp| {
            let started = ctx.pair(imp, ring, false).and_then(|mut p| {
                if check
                    && matches!(
                        imp,
                        Impl::VchanStream(_) | Impl::C(_) | Impl::Unix | Impl::Pipe
                    )
                {
                    Ctx::check(&mut p, ring).context("end-to-end check")?;
                }
                Ok(p)
            });
            match started {
                Ok(p) => Slot {
                    imp,
                    pair: Some(p),
                    count: 1,
                    cell: Cell::default(),
                },
                Err(e) => {
                    println!(
                        "    {} ({} rings): unavailable: {e:#}",
                        imp.label(),
                        size(ring)
                    );
                    Slot {
                        imp,
                        pair: None,
                        count: 1,
                        cell: Cell::na(format!("unavailable: {e:#}")),
                    }
                }
            }
        })
        .collect()
}

fn fmt_cell(c: &Cell, unit: Unit) -> String {
    match (c.median(), unit) {
        (Some(v), Unit::MBps) => format!("{} MB/s", vchan_bench::units::mbps(v)),
        (Some(v), Unit::Mmsgs) => format!("{v:.2} M/s"),
        (None, _) => "n/a".into(),
    }
}

/// Prints progress: what was measured, with an estimate of the time left.
struct Progress {
    start: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str, detail: &str) {
        self.done += 1;
        let el = self.start.elapsed().as_secs_f64();
        let left = el / self.done as f64 * (self.total - self.done) as f64;
        println!(
            "  [{:>3}/{:<3}] {what}: {detail}   ({el:.0} s elapsed, ~{left:.0} s left in this section)",
            self.done, self.total
        );
    }
}

const GRID_IMPLS: [Impl; 10] = [
    Impl::VchanStream(Wait::Default),
    Impl::VchanStream(Wait::Fixed50),
    Impl::VchanFrames(Wait::Default),
    Impl::VchanFramesInPlace(Wait::Default),
    Impl::C(Wait::Default),
    Impl::Unix,
    Impl::Pipe,
    Impl::Rtrb,
    Impl::Crossbeam,
    Impl::Memcpy,
];

fn section_grid(ctx: &mut Ctx, res: &mut Results) {
    let rings = ctx.plan.rings.clone();
    let msgs = ctx.plan.msgs.clone();
    println!(
        "\n== throughput: {} ring sizes × {} message sizes × {} implementations, {} interleaved repetitions",
        rings.len(),
        msgs.len(),
        GRID_IMPLS.len(),
        ctx.plan.reps
    );
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: rings.len() * msgs.len(),
    };
    for &ring in &rings {
        println!("  starting the pairs for {} rings", size(ring));
        let mut slots = start_slots(ctx, &GRID_IMPLS, ring, true);
        for &msg in &msgs {
            measure_throughput(
                ctx,
                &mut slots,
                ring,
                msg,
                Unit::MBps,
                "throughput",
                &mut res.raw,
            );
            let detail = slots
                .iter()
                .take(7)
                .map(|s| format!("{} {}", short_label(s.imp), fmt_cell(&s.cell, Unit::MBps)))
                .collect::<Vec<_>>()
                .join(", ");
            progress.step(&format!("ring {} msg {}", size(ring), size(msg)), &detail);
            for s in &slots {
                res.grid.insert((ring, msg, s.imp), s.cell.clone());
            }
        }
    }
}

fn short_label(imp: Impl) -> String {
    let w = |w: Wait| match w {
        Wait::Busy => " busy",
        Wait::Default => "",
        Wait::NoSpin => " nospin",
        Wait::Fixed50 => " fixed50",
    };
    match imp {
        Impl::VchanStream(m) => format!("stream{}", w(m)),
        Impl::VchanFrames(m) => format!("frames{}", w(m)),
        Impl::VchanFramesInPlace(m) => format!("in-place{}", w(m)),
        Impl::VchanTyped(m) => format!("typed{}", w(m)),
        Impl::VchanTypedBatch(m) => format!("batched{}", w(m)),
        Impl::C(m) => format!("C{}", w(m)),
        Impl::Unix => "unix".into(),
        Impl::Pipe => "pipe".into(),
        Impl::Rtrb => "rtrb".into(),
        Impl::Crossbeam => "crossbeam".into(),
        Impl::Memcpy => "memcpy".into(),
        Impl::Cacheline => "cache line".into(),
    }
}

fn section_typed(ctx: &mut Ctx, res: &mut Results) {
    let rings = ctx.plan.typed_rings.clone();
    println!(
        "\n== typed 64-byte messages: {} ring sizes, busy-poll and default waiting",
        rings.len()
    );
    let imps = [
        Impl::VchanTypedBatch(Wait::Busy),
        Impl::VchanTypedBatch(Wait::Default),
        Impl::VchanTyped(Wait::Busy),
        Impl::VchanTyped(Wait::Default),
        Impl::VchanStream(Wait::Busy),
        Impl::VchanStream(Wait::Default),
        Impl::Unix,
    ];
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: rings.len(),
    };
    for &ring in &rings {
        let mut slots = start_slots(ctx, &imps, ring, false);
        measure_throughput(
            ctx,
            &mut slots,
            ring,
            64,
            Unit::Mmsgs,
            "typed",
            &mut res.raw,
        );
        let detail = slots
            .iter()
            .map(|s| format!("{} {}", short_label(s.imp), fmt_cell(&s.cell, Unit::Mmsgs)))
            .collect::<Vec<_>>()
            .join("; ");
        progress.step(&format!("ring {}", size(ring)), &detail);
        for s in slots {
            res.typed.insert((ring, s.imp), s.cell);
        }
    }
}

fn section_spin(ctx: &mut Ctx, res: &mut Results) {
    let msgs = ctx.plan.spin_msgs.clone();
    println!(
        "\n== waiting strategies (throughput and CPU use, {} rings)",
        size(SPIN_RING)
    );
    let imps = SPIN_IMPLS;
    let mut slots = start_slots(ctx, &imps, SPIN_RING, false);
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: msgs.len(),
    };
    for &msg in &msgs {
        measure_throughput(
            ctx,
            &mut slots,
            SPIN_RING,
            msg,
            Unit::MBps,
            "spin",
            &mut res.raw,
        );
        let detail = slots
            .iter()
            .map(|s| format!("{} {}", short_label(s.imp), fmt_cell(&s.cell, Unit::MBps)))
            .collect::<Vec<_>>()
            .join("; ");
        progress.step(&format!("msg {}", size(msg)), &detail);
        for s in &slots {
            res.spin.insert((msg, s.imp), s.cell.clone());
        }
    }
}

/// The waiting strategies compared in the spin section.
pub(crate) const SPIN_IMPLS: [Impl; 6] = [
    Impl::VchanStream(Wait::Busy),
    Impl::VchanStream(Wait::Default),
    Impl::VchanStream(Wait::Fixed50),
    Impl::VchanStream(Wait::NoSpin),
    Impl::C(Wait::Busy),
    Impl::C(Wait::Default),
];

const LATENCY_IMPLS: [Impl; 11] = [
    Impl::Cacheline,
    Impl::VchanStream(Wait::Busy),
    Impl::VchanStream(Wait::Default),
    Impl::VchanStream(Wait::Fixed50),
    Impl::VchanStream(Wait::NoSpin),
    Impl::C(Wait::Busy),
    Impl::C(Wait::Default),
    Impl::Unix,
    Impl::Pipe,
    Impl::Rtrb,
    Impl::Crossbeam,
];

fn section_latency(ctx: &mut Ctx, res: &mut Results) {
    let plan = ctx.plan.clone();
    println!(
        "\n== 64-byte round trips: {} implementations, {} interleaved blocks of {} round trips",
        LATENCY_IMPLS.len(),
        plan.lat_blocks,
        plan.lat_count
    );
    let mut pairs: Vec<(Impl, Option<Pair>, Vec<f64>)> = LATENCY_IMPLS
        .iter()
        .map(|&imp| match ctx.pair(imp, SPIN_RING, true) {
            Ok(mut p) => {
                // Warm-up, not recorded.
                match p.run(64, (plan.lat_count / 10).max(10), true) {
                    Ok(_) => (imp, Some(p), Vec::new()),
                    Err(e) => {
                        println!("    {}: FAILED: {e:#}", imp.label());
                        res.notes
                            .push(format!("{}: latency failed: {e:#}", imp.label()));
                        (imp, None, Vec::new())
                    }
                }
            }
            Err(e) => {
                println!("    {}: unavailable: {e:#}", imp.label());
                res.notes
                    .push(format!("{}: unavailable: {e:#}", imp.label()));
                (imp, None, Vec::new())
            }
        })
        .collect();
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: plan.lat_blocks,
    };
    let n = pairs.len();
    for block in 0..plan.lat_blocks {
        for k in 0..n {
            let (imp, pair, samples) = &mut pairs[(k + block) % n];
            let Some(p) = pair.as_mut() else { continue };
            match p.run(64, plan.lat_count, true) {
                Ok(t) => {
                    res.raw.push(RawTrial {
                        section: "latency",
                        ring: SPIN_RING,
                        msg: 64,
                        label: imp.label(),
                        rep: block,
                        count: plan.lat_count,
                        wall_ns: t.wall_ns,
                        cpu_ns: t.cpu_ns,
                    });
                    samples.extend(t.samples);
                }
                Err(e) => {
                    println!("    {}: FAILED: {e:#}", imp.label());
                    res.notes
                        .push(format!("{}: latency failed: {e:#}", imp.label()));
                    *pair = None;
                }
            }
        }
        let detail = pairs
            .iter()
            .filter(|(_, _, s)| !s.is_empty())
            .map(|(imp, _, s)| {
                let mut v = s.clone();
                let p50 = vchan_bench::stats::Latency::of(&mut v).map_or(f64::NAN, |l| l.p50);
                format!("{} {}", short_label(*imp), vchan_bench::units::time_ns(p50))
            })
            .collect::<Vec<_>>()
            .join(", ");
        progress.step(
            &format!("block {}", block + 1),
            &format!("p50 so far: {detail}"),
        );
    }
    res.latency = pairs
        .into_iter()
        .map(|(imp, _, samples)| (imp, samples))
        .collect();
}

/// Waits until the vchan server at `path` has advertised itself.
fn wait_advertised(host: &SimHost, path: &str, proxy: &mut Helper) -> Result<()> {
    let xs = host.client(DomId::DOM0)?;
    let key = format!("{path}/event-channel");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if xs.read(&key).is_ok() {
            return Ok(());
        }
        proxy.check_alive()?;
        if Instant::now() > deadline {
            bail!("{} did not advertise {path} within 30 s", proxy.name);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A proxy pair: source → Unix socket B → client proxy (domain 1) → vchan → server proxy
/// (dom0) → Unix socket A → sink.
fn proxy_pair(ctx: &mut Ctx, c: bool, ring: usize) -> Result<Pair> {
    let a = ctx.sock("pa");
    let b = ctx.sock("pb");
    let port = ctx.port();
    let path = default_path(DomId(0), DomId(1), port);
    let kv = |k: &str, v: &dyn std::fmt::Display| format!("{k}={v}");
    let sock_args = |role: &str, p: &Path| {
        vec![
            kv("kind", &"unix"),
            kv("role", &role),
            kv("path", &p.display()),
            kv("ring", &0),
        ]
    };
    let mut sink = Member::spawn("proxy sink", ctx.worker(0, &sock_args("sink", &a), None))?;
    expect_ready(&mut sink)?;
    let command = |dom: u16, role: &str, peer: &str, endpoint: &Path| -> Result<Command> {
        if c {
            let exe = ctx
                .ext
                .c_proxy
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let mut cmd = ctx.c_command(exe, dom)?;
            cmd.args(["-m", role, peer, &path]).arg(endpoint);
            Ok(cmd)
        } else {
            let exe = ctx
                .ext
                .vchan_cli
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let mut cmd = Command::new(exe);
            for (k, v) in ctx.host.env(DomId(dom)) {
                cmd.env(k, v);
            }
            cmd.args(["proxy", role, peer, &path]).arg(endpoint);
            if ring > 0 && role == "server" {
                cmd.args([
                    "--read-min",
                    &ring.to_string(),
                    "--write-min",
                    &ring.to_string(),
                ]);
            }
            Ok(cmd)
        }
    };
    let name = if c {
        "vchan-socket-proxy"
    } else {
        "vchan proxy"
    };
    let log_s = ctx.tmp.path().join(format!("proxy-server-{port}.log"));
    let log_c = ctx.tmp.path().join(format!("proxy-client-{port}.log"));
    let mut server = Helper::spawn(
        format!("{name} server"),
        command(0, "server", "1", &a)?,
        &log_s,
    )?;
    wait_advertised(&ctx.host, &path, &mut server)?;
    let client = Helper::spawn(
        format!("{name} client"),
        command(1, "client", "0", &b)?,
        &log_c,
    )?;
    let mut source = Member::spawn("proxy source", ctx.worker(0, &sock_args("src", &b), None))?;
    expect_ready(&mut source)?;
    let mut pair = Pair::new(vec![sink, source], 0);
    pair.helpers = vec![server, client];
    Ok(pair)
}

fn section_proxy(ctx: &mut Ctx, res: &mut Results) {
    let msgs = ctx.plan.proxy_msgs.clone();
    println!(
        "\n== proxies: vchan proxy vs Debian's vchan-socket-proxy (Unix socket → vchan → Unix socket)"
    );
    let variants: Vec<(String, bool, usize)> = vec![
        (
            "vchan-socket-proxy (C, default 1K/2K rings)".into(),
            true,
            0,
        ),
        ("vchan proxy (default 1K/2K rings)".into(), false, 0),
        ("vchan proxy (64K rings)".into(), false, 64 << 10),
    ];
    res.proxy_labels = variants.iter().map(|v| v.0.clone()).collect();
    let mut slots: Vec<(String, Option<Pair>, u64, Cell)> = variants
        .iter()
        .map(|(label, c, ring)| match proxy_pair(ctx, *c, *ring) {
            Ok(p) => (label.clone(), Some(p), 1, Cell::default()),
            Err(e) => {
                println!("    {label}: unavailable: {e:#}");
                (
                    label.clone(),
                    None,
                    1,
                    Cell::na(format!("unavailable: {e:#}")),
                )
            }
        })
        .collect();
    let plan = ctx.plan.clone();
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: msgs.len(),
    };
    for &msg in &msgs {
        for (label, pair, count, cell) in slots.iter_mut() {
            if let Some(p) = pair.as_mut() {
                *cell = Cell::default();
                match calibrate(p, msg, &plan) {
                    Ok(c) => *count = c,
                    Err(e) => {
                        println!("    {label}: FAILED: {e:#}");
                        *cell = Cell::na(format!("failed: {e:#}"));
                        *pair = None;
                    }
                }
            }
        }
        let n = slots.len();
        for rep in 0..plan.reps {
            for k in 0..n {
                let (label, pair, count, cell) = &mut slots[(k + rep) % n];
                let Some(p) = pair.as_mut() else { continue };
                match p.run(msg, *count, false) {
                    Ok(t) => {
                        let secs = t.wall_ns.max(1) as f64 / 1e9;
                        cell.values.push(*count as f64 * msg as f64 / secs / 1e6);
                        cell.wall_ns += t.wall_ns;
                        cell.cpu_ns += t.cpu_ns;
                        res.raw.push(RawTrial {
                            section: "proxy",
                            ring: 0,
                            msg,
                            label: label.clone(),
                            rep,
                            count: *count,
                            wall_ns: t.wall_ns,
                            cpu_ns: t.cpu_ns,
                        });
                    }
                    Err(e) => {
                        println!("    {label}: FAILED: {e:#}");
                        *cell = Cell::na(format!("failed: {e:#}"));
                        *pair = None;
                    }
                }
            }
        }
        let detail = slots
            .iter()
            .map(|(l, _, _, c)| format!("{l} {}", fmt_cell(c, Unit::MBps)))
            .collect::<Vec<_>>()
            .join("; ");
        progress.step(&format!("writes of {}", size(msg)), &detail);
        for (label, _, _, cell) in &slots {
            res.proxy.insert((msg, label.clone()), cell.clone());
        }
    }
}

/// What a report says about the run itself.
#[derive(Clone, Debug)]
pub(crate) struct RunInfo {
    pub(crate) machine: Machine,
    pub(crate) started: String,
    pub(crate) load_before: Option<[f64; 3]>,
    pub(crate) load_after: Option<[f64; 3]>,
    pub(crate) seconds: f64,
    pub(crate) commit: String,
    pub(crate) gcc: String,
    pub(crate) short: bool,
    pub(crate) plan: Plan,
    pub(crate) command: String,
    /// The harness's nice value (its children inherit it).
    pub(crate) nice: i32,
}

fn git_commit() -> String {
    Command::new("git")
        .args(["-C"])
        .arg(setup::workspace())
        .args(["log", "-1", "--format=%h %s"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().chars().take(100).collect())
        .filter(|s: &String| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `compare`.
pub(crate) fn run(o: Options) -> Result<()> {
    let started_at = Instant::now();
    let started = machine::now_utc();
    let plan = Plan::new(&o);
    let machine = Machine::describe();
    let load_before = machine::load_average();
    println!(
        "vchan-bench compare{}: {} ({} CPUs), {}, load {}",
        if o.short { " --short" } else { "" },
        machine.cpu_model,
        machine.cpus,
        machine.rustc,
        load_before.map_or("?".into(), |l| format!(
            "{:.2} {:.2} {:.2}",
            l[0], l[1], l[2]
        ))
    );
    if !plan.pin {
        println!("note: processes are not pinned to CPUs");
    }
    let out = match &o.out {
        Some(d) => d.clone(),
        None if o.short => setup::workspace().join("bench/results/tmp"),
        None => setup::workspace().join("bench/results"),
    };
    let ext = setup::prepare(o.vchan.clone());
    let gcc = ext.gcc.clone();

    // Under /tmp: Unix socket paths must stay short.
    let tmp = tempfile::Builder::new()
        .prefix("vcb")
        .tempdir_in("/tmp")
        .context("creating a temporary directory")?;
    let host = SimHost::builder(tmp.path().join("host"))
        .domain(DomId(1), "guest")
        .broker(BrokerConfig::default())
        .start()
        .context("starting the simulated host")?;
    println!(
        "simulated host in {} (dom0 and domain 1)",
        host.dir().display()
    );
    let mut ctx = Ctx {
        host,
        ext,
        plan: plan.clone(),
        tmp,
        next_port: 0,
        next_sock: 0,
    };
    let mut res = Results::default();
    let want = |s: &str| o.only.as_ref().is_none_or(|v| v.iter().any(|x| x == s));
    if want("grid") {
        section_grid(&mut ctx, &mut res);
    }
    if want("typed") {
        section_typed(&mut ctx, &mut res);
    }
    if want("spin") {
        section_spin(&mut ctx, &mut res);
    }
    if want("latency") {
        section_latency(&mut ctx, &mut res);
    }
    if want("proxy") {
        section_proxy(&mut ctx, &mut res);
    }
    drop(ctx);

    let info = RunInfo {
        machine,
        started,
        load_before,
        load_after: machine::load_average(),
        seconds: started_at.elapsed().as_secs_f64(),
        commit: git_commit(),
        gcc,
        short: o.short,
        plan,
        // SAFETY: getpriority has no memory-safety preconditions.
        nice: unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        command: format!(
            "cargo run -p vchan-bench --release -- compare{}",
            if o.short { " --short" } else { "" }
        ),
    };
    let written = report::write(&out, &info, &res)?;
    println!("\n{}", written.headline);
    println!(
        "report: {}\nplots:  {}\n(done in {:.0} s)",
        written.markdown.display(),
        written.plots_dir.display(),
        info.seconds
    );
    Ok(())
}
