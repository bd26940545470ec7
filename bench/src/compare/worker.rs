//! The worker processes of the harness: `vchan-bench worker key=value…`, re-runs of this
//! binary that the orchestrator starts as one side of a measured pair.
//!
//! Every worker speaks the same line protocol as the C driver (`bench/c/vchan_bench.c`):
//! it prints `ready` once set up (the first of a pair when it listens, the second once
//! connected), then reads commands on stdin — `run MSG COUNT` (COUNT messages of MSG bytes,
//! or COUNT round trips) and `check MSG COUNT` (the same with a position pattern that the
//! receiver verifies) — and answers each with `done WALL_NS` (a ping first prints
//! `samples NS NS …`, one per round trip). Between commands a worker blocks on stdin, never
//! on the channel, so an idle pair costs no CPU whatever its waiting mode. End of input or
//! `quit` ends it.
//!
//! Nothing inside a timed loop inspects the bytes moved (except under `check`).

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use vchan_msg::frame::{FrameError, FrameReader, FrameWriter};
use vchan_msg::{Client, Server, SpinPolicy, Vchan, default_path};
use vchan_xenif::DomId;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Largest message a worker handles.
pub(crate) const MAX_MSG: usize = 1 << 20;

/// The typed message of the 64-byte typed-frame benchmark.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Msg64 {
    seq: u64,
    body: [u64; 7],
}

/// Frames per batch in the batched typed benchmark.
const TYPED_BATCH: usize = 256;

/// What one command produced.
struct Outcome {
    wall_ns: u64,
    samples: Option<Vec<u64>>,
}

/// The pattern `check` sends: byte at stream position `pos`.
fn pattern_byte(pos: u64) -> u8 {
    (pos % 251) as u8
}

fn fill_pattern(buf: &mut [u8], pos: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(pos + i as u64);
    }
}

fn verify_pattern(buf: &[u8], pos: u64) -> Result<()> {
    match buf
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern_byte(pos + i as u64))
    {
        Some((i, _)) => bail!("wrong byte at stream offset {}", pos + i as u64),
        None => Ok(()),
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_to(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu < 8 * std::mem::size_of::<libc::cpu_set_t>() {
        // SAFETY: CPU_SET writes one bit inside `set`; `cpu` is below its capacity.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        eprintln!(
            "vchan-bench worker: cannot pin to CPU {cpu} ({}); running unpinned",
            std::io::Error::last_os_error()
        );
    }
}

/// A worker's job: one side of a pair (or, in-process, both).
trait Job {
    fn run(&mut self, msg: usize, count: u64, check: bool) -> Result<Outcome>;
}

/// Parses `key=value` arguments.
fn parse_args(args: &[String]) -> Result<HashMap<String, String>> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("worker argument {a:?} is not key=value"))
        })
        .collect()
}

/// Runs a worker with `args` (`key=value`); the entry point of `vchan-bench worker`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let args = parse_args(args)?;
    let get = |k: &str| {
        args.get(k)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("worker: missing {k}="))
    };
    let num = |k: &str| -> Result<usize> {
        get(k)?
            .parse()
            .with_context(|| format!("worker: {k}= is not a number"))
    };
    if let Some(cpu) = args.get("cpu") {
        pin_to(cpu.parse().context("cpu=")?);
    }
    let role = Role::parse(get("role")?)?;
    let mut job: Box<dyn Job> = match get("kind")? {
        "vchan" => Box::new(VchanJob::open(
            get("side")? == "server",
            Api::parse(get("api")?)?,
            role,
            num("ring")?,
            spin_policy(get("spin")?)?,
            num("port")? as u32,
        )?),
        "unix" => Box::new(FdJob::unix(role, get("path")?, num("ring")?)?),
        "pipe" => Box::new(FdJob::pipe(role, get("path")?, num("ring")?)?),
        "inproc" => Box::new(InProc::new(
            get("impl")?,
            num("ring")?,
            args.get("cpus").map(String::as_str),
        )?),
        other => bail!("worker: unknown kind {other}"),
    };
    serve(&mut *job)
}

/// The command loop.
fn serve(job: &mut dyn Job) -> Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading a command")?;
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        if cmd == "quit" {
            break;
        }
        let (Some(msg), Some(count)) = (
            words.next().and_then(|w| w.parse::<usize>().ok()),
            words.next().and_then(|w| w.parse::<u64>().ok()),
        ) else {
            bail!("bad command {line:?}");
        };
        if msg == 0 || msg > MAX_MSG || !matches!(cmd, "run" | "check") {
            bail!("bad command {line:?}");
        }
        let check = cmd == "check";
        let outcome = job.run(msg, count, check)?;
        if let Some(samples) = outcome.samples {
            let mut s = String::with_capacity(samples.len() * 7 + 8);
            s.push_str("samples");
            for v in samples {
                s.push(' ');
                s.push_str(&v.to_string());
            }
            writeln!(out, "{s}")?;
        }
        writeln!(out, "done {}", if check { 0 } else { outcome.wall_ns })?;
        out.flush()?;
    }
    Ok(())
}

fn say_ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Src,
    Sink,
    Ping,
    Echo,
}

impl Role {
    fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "src" => Role::Src,
            "sink" => Role::Sink,
            "ping" => Role::Ping,
            "echo" => Role::Echo,
            "both" => Role::Src, // in-process jobs play both sides
            other => bail!("unknown role {other}"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Stream,
    Frames,
    /// Frames written in place; the reader reads 8 bytes of each payload and leaves the rest
    /// in the ring (a borrowed frame).
    FramesInPlace,
    Typed,
    TypedBatch,
}

impl Api {
    fn parse(s: &str) -> Result<Api> {
        Ok(match s {
            "stream" => Api::Stream,
            "frames" => Api::Frames,
            "framesinplace" => Api::FramesInPlace,
            "typed" => Api::Typed,
            "typedbatch" => Api::TypedBatch,
            other => bail!("unknown api {other}"),
        })
    }
}

/// `busy`: spin without ever sleeping; `default`: the library's adaptive spin-then-sleep;
/// `off`: sleep on the event channel at once; `fixed<µs>`, `adaptive<µs>`: other budgets.
fn spin_policy(s: &str) -> Result<SpinPolicy> {
    Ok(match s {
        "busy" => SpinPolicy::fixed(Duration::from_secs(3600)),
        "default" => SpinPolicy::default(),
        "off" => SpinPolicy::OFF,
        // For experiments by hand: `fixed<µs>` / `adaptive<µs>`.
        other => match (other.strip_prefix("fixed"), other.strip_prefix("adaptive")) {
            (Some(us), _) => SpinPolicy::fixed(Duration::from_micros(us.parse()?)),
            (_, Some(us)) => SpinPolicy::adaptive(Duration::from_micros(us.parse()?)),
            _ => bail!("unknown spin mode {other}"),
        },
    })
}

enum Chan {
    Stream(Box<Vchan>),
    Frames(Box<(FrameReader, FrameWriter)>),
}

/// One side of a Rust vchan between dom0 (server) and domain 1 (client).
struct VchanJob {
    chan: Chan,
    api: Api,
    role: Role,
    buf: Vec<u8>,
    pos: u64,
}

fn frame_err(e: FrameError) -> anyhow::Error {
    anyhow!("frame: {e}")
}

impl VchanJob {
    fn open(
        server: bool,
        api: Api,
        role: Role,
        ring: usize,
        spin: SpinPolicy,
        port: u32,
    ) -> Result<VchanJob> {
        let path = default_path(DomId(0), DomId(1), port);
        let chan = if server {
            let chan = Server::new(DomId(1), &path)
                .read_min(ring)
                .write_min(ring)
                .spin(spin)
                .listen()
                .with_context(|| format!("serving {path}"))?;
            say_ready();
            chan
        } else {
            let chan = Client::new(DomId(0), &path)
                .spin(spin)
                .wait_for_server(Duration::from_secs(30))
                .connect()
                .with_context(|| format!("connecting to {path}"))?;
            say_ready();
            chan
        };
        let chan = match api {
            Api::Stream => Chan::Stream(Box::new(chan)),
            _ => {
                let (r, w) = chan.into_frames().map_err(frame_err)?;
                Chan::Frames(Box::new((r, w)))
            }
        };
        Ok(VchanJob {
            chan,
            api,
            role,
            buf: vec![0x5a; MAX_MSG],
            pos: 0,
        })
    }
}

impl Job for VchanJob {
    fn run(&mut self, msg: usize, count: u64, check: bool) -> Result<Outcome> {
        let buf = &mut self.buf[..msg];
        let start = Instant::now();
        let mut samples = None;
        match (&mut self.chan, self.api, self.role) {
            (Chan::Stream(c), _, Role::Src) => {
                for _ in 0..count {
                    if check {
                        fill_pattern(buf, self.pos);
                        self.pos += msg as u64;
                    }
                    c.write_all(buf)?;
                }
            }
            (Chan::Stream(c), _, Role::Sink) => {
                let total = msg as u64 * count;
                let mut got = 0u64;
                while got < total {
                    let want = (total - got).min(msg as u64) as usize;
                    let n = c.read(&mut buf[..want])?;
                    if check {
                        verify_pattern(&buf[..n], self.pos)?;
                        self.pos += n as u64;
                    }
                    got += n as u64;
                }
            }
            (Chan::Stream(c), _, Role::Ping) => {
                let mut v = Vec::with_capacity(count as usize);
                let mut prev = start;
                for _ in 0..count {
                    c.write_all(buf)?;
                    read_exact_vchan(c, buf)?;
                    let t = Instant::now();
                    v.push(ns(t - prev));
                    prev = t;
                }
                samples = Some(v);
            }
            (Chan::Stream(c), _, Role::Echo) => {
                for _ in 0..count {
                    read_exact_vchan(c, buf)?;
                    c.write_all(buf)?;
                }
            }
            (Chan::Frames(f), Api::Frames | Api::FramesInPlace, Role::Src) => {
                let w = &mut f.1;
                let src = &*buf;
                for _ in 0..count {
                    w.send_with(1, msg, |fb| {
                        fb.write_at(0, src)?;
                        Ok::<usize, FrameError>(msg)
                    })
                    .map_err(frame_err)?;
                }
            }
            (Chan::Frames(f), Api::Frames, Role::Sink) => {
                let r = &mut f.0;
                for _ in 0..count {
                    let f = r.recv().map_err(frame_err)?;
                    let n = f.len().min(buf.len());
                    f.read_into(0, &mut buf[..n]).map_err(frame_err)?;
                }
            }
            (Chan::Frames(f), Api::FramesInPlace, Role::Sink) => {
                let r = &mut f.0;
                let mut acc = 0u64;
                for _ in 0..count {
                    let f = r.recv().map_err(frame_err)?;
                    if f.len() >= 8 {
                        acc ^= f.read::<u64>(0).map_err(frame_err)?;
                    }
                }
                std::hint::black_box(acc);
            }
            (Chan::Frames(f), Api::Typed, Role::Src) => {
                let w = &mut f.1;
                let mut m = Msg64::default();
                for i in 0..count {
                    m.seq = i;
                    w.send(1, &m).map_err(frame_err)?;
                }
            }
            (Chan::Frames(f), Api::Typed, Role::Sink) => {
                let r = &mut f.0;
                let mut acc = 0u64;
                for _ in 0..count {
                    let (_, m): (u32, Msg64) = r.recv_copy().map_err(frame_err)?;
                    acc ^= m.seq;
                }
                std::hint::black_box(acc);
            }
            (Chan::Frames(f), Api::TypedBatch, Role::Src) => {
                let w = &mut f.1;
                let mut m = Msg64::default();
                let mut left = count;
                while left > 0 {
                    let n = left.min(TYPED_BATCH as u64);
                    let mut batch = w.batch().map_err(frame_err)?;
                    for _ in 0..n {
                        m.seq += 1;
                        batch.send(1, &m).map_err(frame_err)?;
                    }
                    batch.finish().map_err(frame_err)?;
                    left -= n;
                }
            }
            (Chan::Frames(f), Api::TypedBatch, Role::Sink) => {
                let r = &mut f.0;
                let mut acc = 0u64;
                let mut left = count;
                while left > 0 {
                    let max = left.min(1 << 16) as usize;
                    let got = r
                        .recv_batch(max, |f| {
                            if let Ok(m) = f.read::<Msg64>(0) {
                                acc ^= m.seq;
                            }
                        })
                        .map_err(frame_err)?;
                    left -= got as u64;
                }
                std::hint::black_box(acc);
            }
            (_, api, role) => bail!("no {role:?} job for the {api:?} API"),
        }
        Ok(Outcome {
            wall_ns: ns(start.elapsed()),
            samples,
        })
    }
}

fn read_exact_vchan(c: &mut Vchan, buf: &mut [u8]) -> Result<()> {
    let mut at = 0;
    while at < buf.len() {
        at += c.read(&mut buf[at..])?;
    }
    Ok(())
}

/// One side of a kernel byte channel: a Unix stream socket or a FIFO (a named pipe).
struct FdJob {
    input: Box<dyn Read>,
    output: Box<dyn Write>,
    role: Role,
    buf: Vec<u8>,
    pos: u64,
}

impl FdJob {
    /// The sink/echo side listens on `path` and accepts one connection; the src/ping side
    /// connects. Both set their socket buffers to `ring` bytes.
    fn unix(role: Role, path: &str, ring: usize) -> Result<FdJob> {
        let stream = match role {
            Role::Sink | Role::Echo => {
                let listener =
                    UnixListener::bind(path).with_context(|| format!("binding {path}"))?;
                say_ready();
                let (s, _) = listener.accept().context("accept")?;
                s
            }
            Role::Src | Role::Ping => {
                let deadline = Instant::now() + Duration::from_secs(30);
                let s = loop {
                    match UnixStream::connect(path) {
                        Ok(s) => break s,
                        Err(e) if Instant::now() > deadline => {
                            return Err(e).with_context(|| format!("connecting to {path}"));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                };
                say_ready();
                s
            }
        };
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(&stream, sockopt::SndBuf, &ring).context("SO_SNDBUF")?;
        setsockopt(&stream, sockopt::RcvBuf, &ring).context("SO_RCVBUF")?;
        Ok(FdJob {
            input: Box::new(stream.try_clone()?),
            output: Box::new(stream),
            role,
            buf: vec![0x5a; MAX_MSG],
            pos: 0,
        })
    }

    /// FIFOs `<path>.a` (src/ping → sink/echo) and `<path>.b` (back), made by the
    /// orchestrator; each is given `ring` bytes of pipe buffer.
    fn pipe(role: Role, path: &str, ring: usize) -> Result<FdJob> {
        let open = |suffix: &str, write: bool| -> Result<std::fs::File> {
            let p = format!("{path}.{suffix}");
            let f = std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open(&p)
                .with_context(|| format!("opening FIFO {p}"))?;
            nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(ring as i32))
                .context("F_SETPIPE_SZ")?;
            Ok(f)
        };
        let (input, output): (Box<dyn Read>, Box<dyn Write>) = match role {
            Role::Sink => {
                say_ready();
                (Box::new(open("a", false)?), Box::new(std::io::sink()))
            }
            Role::Src => {
                let a = open("a", true)?;
                say_ready();
                (Box::new(std::io::empty()), Box::new(a))
            }
            Role::Echo => {
                say_ready();
                let a = open("a", false)?;
                let b = open("b", true)?;
                (Box::new(a), Box::new(b))
            }
            Role::Ping => {
                let a = open("a", true)?;
                let b = open("b", false)?;
                say_ready();
                (Box::new(b), Box::new(a))
            }
        };
        Ok(FdJob {
            input,
            output,
            role,
            buf: vec![0x5a; MAX_MSG],
            pos: 0,
        })
    }
}

impl Job for FdJob {
    fn run(&mut self, msg: usize, count: u64, check: bool) -> Result<Outcome> {
        let buf = &mut self.buf[..msg];
        let start = Instant::now();
        let mut samples = None;
        match self.role {
            Role::Src => {
                for _ in 0..count {
                    if check {
                        fill_pattern(buf, self.pos);
                        self.pos += msg as u64;
                    }
                    self.output.write_all(buf)?;
                }
            }
            Role::Sink => {
                let total = msg as u64 * count;
                let mut got = 0u64;
                while got < total {
                    let want = (total - got).min(msg as u64) as usize;
                    let n = self.input.read(&mut buf[..want])?;
                    if n == 0 {
                        bail!("end of stream after {got} of {total} bytes");
                    }
                    if check {
                        verify_pattern(&buf[..n], self.pos)?;
                        self.pos += n as u64;
                    }
                    got += n as u64;
                }
            }
            Role::Ping => {
                let mut v = Vec::with_capacity(count as usize);
                let mut prev = start;
                for _ in 0..count {
                    self.output.write_all(buf)?;
                    self.input.read_exact(buf)?;
                    let t = Instant::now();
                    v.push(ns(t - prev));
                    prev = t;
                }
                samples = Some(v);
            }
            Role::Echo => {
                for _ in 0..count {
                    self.input.read_exact(buf)?;
                    self.output.write_all(buf)?;
                }
            }
        }
        Ok(Outcome {
            wall_ns: ns(start.elapsed()),
            samples,
        })
    }
}

/// In-process references and physical limits, both sides in this process (threads pinned
/// to two CPUs when `cpus=A,B` is given).
struct InProc {
    kind: String,
    ring: usize,
    cpus: Option<(usize, usize)>,
    src: Vec<u8>,
    dst: Vec<u8>,
}

/// Spins, then yields, while a lock-free peer makes no progress (both in-process references
/// wait the same way).
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// A cache line of its own (128 bytes: the adjacent-line prefetcher pulls pairs).
#[repr(align(128))]
struct Line(AtomicU64);

impl InProc {
    fn new(kind: &str, ring: usize, cpus: Option<&str>) -> Result<InProc> {
        let cpus = match cpus {
            Some(s) => {
                let (a, b) = s.split_once(',').context("cpus=A,B")?;
                Some((a.parse()?, b.parse()?))
            }
            None => None,
        };
        match kind {
            "rtrb" | "crossbeam" | "memcpy" | "cacheline" | "rtrb-ping" | "crossbeam-ping" => {}
            other => bail!("unknown in-process job {other}"),
        }
        say_ready();
        Ok(InProc {
            kind: kind.to_owned(),
            ring,
            cpus,
            src: vec![0x5a; MAX_MSG],
            dst: vec![0; MAX_MSG],
        })
    }

    fn pin(&self, which: usize) {
        if let Some((a, b)) = self.cpus {
            pin_to(if which == 0 { a } else { b });
        }
    }
}

impl Job for InProc {
    fn run(&mut self, msg: usize, count: u64, _check: bool) -> Result<Outcome> {
        let ring = self.ring;
        let total = msg as u64 * count;
        let this = &*self;
        let src = &this.src[..msg];
        let mut samples = None;
        let mut dst = vec![0u8; msg];
        let start;
        match this.kind.as_str() {
            "memcpy" => {
                this.pin(0);
                start = Instant::now();
                for _ in 0..count {
                    dst.copy_from_slice(std::hint::black_box(src));
                    std::hint::black_box(&mut dst);
                }
            }
            "rtrb" => {
                let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(ring);
                start = Instant::now();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        this.pin(0);
                        for _ in 0..count {
                            let mut at = 0;
                            let mut b = Backoff(0);
                            while at < msg {
                                match tx.write(&src[at..]) {
                                    Ok(n) if n > 0 => {
                                        at += n;
                                        b = Backoff(0);
                                    }
                                    _ => b.snooze(),
                                }
                            }
                        }
                    });
                    this.pin(1);
                    let mut got = 0u64;
                    let mut b = Backoff(0);
                    while got < total {
                        let want = (total - got).min(msg as u64) as usize;
                        match rx.read(&mut dst[..want]) {
                            Ok(n) if n > 0 => {
                                got += n as u64;
                                b = Backoff(0);
                            }
                            _ => b.snooze(),
                        }
                    }
                });
            }
            "crossbeam" => {
                let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>((ring / msg).max(1));
                start = Instant::now();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        this.pin(0);
                        for _ in 0..count {
                            if tx.send(src.to_vec()).is_err() {
                                return;
                            }
                        }
                    });
                    this.pin(1);
                    for _ in 0..count {
                        let Ok(v) = rx.recv() else { break };
                        dst.copy_from_slice(&v);
                    }
                });
            }
            "cacheline" => {
                let line = Line(AtomicU64::new(0));
                let mut v = Vec::with_capacity(count as usize);
                start = Instant::now();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        this.pin(1);
                        for i in 0..count {
                            while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                                std::hint::spin_loop();
                            }
                            line.0.store(2 * i + 2, Ordering::Release);
                        }
                    });
                    this.pin(0);
                    let mut prev = Instant::now();
                    for i in 0..count {
                        line.0.store(2 * i + 1, Ordering::Release);
                        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                            std::hint::spin_loop();
                        }
                        let t = Instant::now();
                        v.push(ns(t - prev));
                        prev = t;
                    }
                });
                samples = Some(v);
            }
            "rtrb-ping" => {
                let (mut atx, mut arx) = rtrb::RingBuffer::<u8>::new(ring);
                let (mut btx, mut brx) = rtrb::RingBuffer::<u8>::new(ring);
                let mut v = Vec::with_capacity(count as usize);
                start = Instant::now();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        this.pin(1);
                        let mut buf = vec![0u8; msg];
                        for _ in 0..count {
                            rtrb_read_exact(&mut arx, &mut buf);
                            rtrb_write_all(&mut btx, &buf);
                        }
                    });
                    this.pin(0);
                    let mut prev = Instant::now();
                    for _ in 0..count {
                        rtrb_write_all(&mut atx, src);
                        rtrb_read_exact(&mut brx, &mut dst);
                        let t = Instant::now();
                        v.push(ns(t - prev));
                        prev = t;
                    }
                });
                samples = Some(v);
            }
            "crossbeam-ping" => {
                let (atx, arx) = crossbeam_channel::bounded::<Vec<u8>>(1);
                let (btx, brx) = crossbeam_channel::bounded::<Vec<u8>>(1);
                let mut v = Vec::with_capacity(count as usize);
                start = Instant::now();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        this.pin(1);
                        for _ in 0..count {
                            let Ok(m) = arx.recv() else { return };
                            if btx.send(m).is_err() {
                                return;
                            }
                        }
                    });
                    this.pin(0);
                    let mut prev = Instant::now();
                    for _ in 0..count {
                        if atx.send(src.to_vec()).is_err() {
                            break;
                        }
                        let Ok(m) = brx.recv() else { break };
                        dst.copy_from_slice(&m);
                        let t = Instant::now();
                        v.push(ns(t - prev));
                        prev = t;
                    }
                });
                samples = Some(v);
            }
            other => bail!("unknown in-process job {other}"),
        }
        let wall_ns = ns(start.elapsed());
        self.dst[..msg].copy_from_slice(&dst);
        Ok(Outcome { wall_ns, samples })
    }
}

fn rtrb_write_all(tx: &mut rtrb::Producer<u8>, mut buf: &[u8]) {
    let mut b = Backoff(0);
    while !buf.is_empty() {
        match tx.write(buf) {
            Ok(n) if n > 0 => buf = &buf[n..],
            _ => b.snooze(),
        }
    }
}

fn rtrb_read_exact(rx: &mut rtrb::Consumer<u8>, buf: &mut [u8]) {
    let mut at = 0;
    let mut b = Backoff(0);
    while at < buf.len() {
        match rx.read(&mut buf[at..]) {
            Ok(n) if n > 0 => at += n,
            _ => b.snooze(),
        }
    }
}
