//! The simulated host's costs, each beside the bare Linux primitive it is built on, in the
//! same run:
//!
//! * `evtchn_round_trip`: parent notifies, a child process waits, unmasks and notifies back,
//!   the parent waits and unmasks — against the same ping-pong over two bare eventfds
//!   (blocking `read`/`write`). Target: the sim within 1.5× of bare. Both are dominated by
//!   the scheduler's wake-up latency, which varies a lot on a virtual machine, so:
//! * after criterion's summary, `evtchn_round_trip` again, *interleaved*: blocks of bare and
//!   sim round trips alternate, so both see the same machine (criterion measures one after the
//!   other, minutes apart, and on a virtual machine the wake-up latency drifts more than the
//!   difference being measured). Printed: the median and the best block of each, and ratios;
//!   as the scheduler places the processes; with every process pinned to one CPU (re-run
//!   under `taskset -c 0`), where wake-up placement no longer varies and the figure shows the
//!   sim's own cost; and with the echo processes pinned to another CPU than the parent (as two
//!   domains on two CPUs), where every wake-up crosses CPUs. Run only by `cargo bench` (not in test mode), and skipped when
//!   a filter is given that does not match `evtchn_interleaved`.
//! * `evtchn_same_thread`: the same operations without any sleep — notify, then `pending` +
//!   `unmask` on the other end of a loopback channel, against `write` + `read` of one eventfd —
//!   isolate what the sim itself adds to the hot path.
//! * `grant_setup`: share a control page and a 1 MiB ring (1 + 256 pages) and map both in the
//!   other domain, as a vchan server and client do — against `memfd_create` + `ftruncate` +
//!   two `mmap`s per region. Target: well under 1 ms. (Pages are not touched: first-touch
//!   faults cost the same with or without the sim.)
//!
//! The binary re-runs itself as the child process (`SIM_BENCH_ROLE`).

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use vchan_xenif::sim::broker::Broker;
use vchan_xenif::{Access, Backend, DomId, EventPort, PAGE_SIZE};

const ROLE: &str = "SIM_BENCH_ROLE";

/// Kills and reaps the child when dropped, so that no echo process outlives the bench.
struct Echo(Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the echo processes run: anywhere, or pinned (through `taskset`) to CPU `ECHO_CPU`
/// when that variable is set.
const ECHO_CPU: &str = "SIM_BENCH_ECHO_CPU";

fn spawn(role: &str, envs: &[(&str, String)], stdin: Stdio, stdout: Stdio) -> Echo {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match std::env::var(ECHO_CPU) {
        Ok(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(exe);
            c
        }
        Err(_) => Command::new(exe),
    };
    let child = cmd
        .env(ROLE, role)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the echo process");
    Echo(child)
}

fn eventfd_blocking() -> OwnedFd {
    OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC).expect("eventfd"))
}

fn write_u64(fd: impl AsFd, v: u64) {
    nix::unistd::write(fd, &v.to_ne_bytes()).expect("eventfd write");
}

fn read_u64(fd: impl AsFd) -> u64 {
    let mut b = [0u8; 8];
    nix::unistd::read(fd, &mut b).expect("eventfd read");
    u64::from_ne_bytes(b)
}

/// Child: echo every event. Bare: stdin and stdout are the two eventfds. Sim: a port.
fn child(role: &str) {
    match role {
        "bare-echo" => loop {
            read_u64(std::io::stdin());
            write_u64(std::io::stdout(), 1);
        },
        "interleaved-pinned" => evtchn_interleaved(&match std::env::var(ECHO_CPU) {
            Ok(cpu) => format!("parent pinned to CPU 0, echo processes to CPU {cpu}"),
            Err(_) => "every process pinned to CPU 0".into(),
        }),
        "sim-echo" => {
            let backend = Backend::detect().expect("sim backend");
            let ev = backend.event_channels().expect("event channels");
            let remote = EventPort(std::env::var("PORT").unwrap().parse().unwrap());
            let port = ev.bind_interdomain(DomId(0), remote).expect("bind");
            println!("READY");
            loop {
                let got = ev.wait(None).expect("wait");
                assert_eq!(got, Some(port));
                ev.unmask(port).expect("unmask");
                ev.notify(port).expect("notify");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn evtchn_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("evtchn_round_trip");
    g.sample_size(40).measurement_time(Duration::from_secs(6));

    // Bare: two blocking eventfds as the child's stdin (ping) and stdout (pong).
    let ping = eventfd_blocking();
    let pong = eventfd_blocking();
    let ping_child = ping.try_clone().expect("dup");
    let pong_child = pong.try_clone().expect("dup");
    let bare = spawn(
        "bare-echo",
        &[],
        Stdio::from(ping_child),
        Stdio::from(pong_child),
    );
    g.bench_function("bare_eventfd", |b| {
        b.iter(|| {
            write_u64(&ping, 1);
            read_u64(&pong)
        })
    });
    drop(bare);

    // Sim: a broker in this process (its thread is idle on this path), the child as domain 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::new(dir.path()).expect("broker");
    broker.domain_created(DomId(0)).expect("dom0");
    broker.domain_created(DomId(1)).expect("dom1");
    let ev = Backend::Sim {
        dir: dir.path().to_owned(),
        domid: DomId(0),
    }
    .event_channels()
    .expect("event channels");
    let port = ev.bind_unbound(DomId(1)).expect("bind");
    let mut sim = spawn(
        "sim-echo",
        &[
            ("VCHAN_SIM_DIR", dir.path().display().to_string()),
            ("VCHAN_SIM_DOMID", "1".into()),
            ("PORT", port.0.to_string()),
        ],
        Stdio::null(),
        Stdio::piped(),
    );
    let mut ready = String::new();
    BufReader::new(sim.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("child ready");
    assert_eq!(ready.trim(), "READY");
    g.bench_function("sim_event_channel", |b| {
        b.iter(|| {
            ev.notify(port).expect("notify");
            let got = ev.wait(None).expect("wait");
            ev.unmask(port).expect("unmask");
            got
        })
    });
    g.finish();
    drop(sim);
}

fn evtchn_same_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("evtchn_same_thread");
    g.sample_size(50).measurement_time(Duration::from_secs(3));

    let efd = eventfd_blocking();
    g.bench_function("bare_eventfd_write_read", |b| {
        b.iter(|| {
            write_u64(&efd, 1);
            read_u64(&efd)
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::new(dir.path()).expect("broker");
    broker.domain_created(DomId(0)).expect("dom0");
    let ev = Backend::Sim {
        dir: dir.path().to_owned(),
        domid: DomId(0),
    }
    .event_channels()
    .expect("event channels");
    let a = ev.bind_unbound(DomId(0)).expect("bind");
    let b_port = ev.bind_interdomain(DomId(0), a).expect("bind");
    g.bench_function("sim_notify_pending_unmask", |b| {
        b.iter(|| {
            ev.notify(a).expect("notify");
            let got = ev.pending().expect("pending");
            ev.unmask(b_port).expect("unmask");
            got
        })
    });
    g.finish();
}

fn grant_setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("grant_setup");
    g.sample_size(50).measurement_time(Duration::from_secs(5));

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::new(dir.path()).expect("broker");
    broker.domain_created(DomId(0)).expect("dom0");
    broker.domain_created(DomId(1)).expect("dom1");
    let backend = |d| Backend::Sim {
        dir: dir.path().to_owned(),
        domid: DomId(d),
    };
    let sharer = backend(0).grant_sharer().expect("sharer");
    let mapper = backend(1).grant_mapper().expect("mapper");

    g.bench_function("sim_share_map_1MiB_ring_and_control_page", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let ctrl = sharer.share(DomId(1), 1, Access::ReadWrite).expect("share");
                let ring = sharer
                    .share(DomId(1), 256, Access::ReadWrite)
                    .expect("share");
                let mc = mapper
                    .map(DomId(0), ctrl.refs(), Access::ReadWrite)
                    .expect("map");
                let mr = mapper
                    .map(DomId(0), ring.refs(), Access::ReadOnly)
                    .expect("map");
                total += t.elapsed();
                drop((mc, mr, ctrl, ring));
            }
            total
        })
    });

    // The same with bare Linux calls: one memfd per region, mapped twice (both "domains").
    let bare_region = |pages: usize| {
        let fd = memfd_create(c"bench", MFdFlags::MFD_CLOEXEC).expect("memfd");
        nix::unistd::ftruncate(&fd, (pages * PAGE_SIZE) as i64).expect("ftruncate");
        let len = std::num::NonZeroUsize::new(pages * PAGE_SIZE).expect("len");
        let map = |prot| {
            // SAFETY: a fresh shared mapping at an address of the kernel's choosing; it is
            // unmapped below with the same length and never dereferenced.
            unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, &fd, 0) }.expect("mmap")
        };
        let a = map(ProtFlags::PROT_READ | ProtFlags::PROT_WRITE);
        let b = map(ProtFlags::PROT_READ);
        (a, b, len.get())
    };
    g.bench_function("bare_memfd_mmap_1MiB_ring_and_control_page", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let ctrl = bare_region(1);
                let ring = bare_region(256);
                total += t.elapsed();
                for (a, b, len) in [ctrl, ring] {
                    for p in [a, b] {
                        // SAFETY: `p` was mapped above with length `len` and is not used again.
                        unsafe { munmap(p, len) }.expect("munmap");
                    }
                }
            }
            total
        })
    });
    g.finish();
    drop((sharer, mapper));
    drop(broker);
}

/// Bare and sim round trips in alternating blocks; prints per-round-trip figures.
fn evtchn_interleaved(placement: &str) {
    const BLOCKS: usize = 40;
    const PER_BLOCK: u32 = 1000;

    let ping = eventfd_blocking();
    let pong = eventfd_blocking();
    let _bare = spawn(
        "bare-echo",
        &[],
        Stdio::from(ping.try_clone().expect("dup")),
        Stdio::from(pong.try_clone().expect("dup")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::new(dir.path()).expect("broker");
    broker.domain_created(DomId(0)).expect("dom0");
    broker.domain_created(DomId(1)).expect("dom1");
    let ev = Backend::Sim {
        dir: dir.path().to_owned(),
        domid: DomId(0),
    }
    .event_channels()
    .expect("event channels");
    let port = ev.bind_unbound(DomId(1)).expect("bind");
    let mut sim = spawn(
        "sim-echo",
        &[
            ("VCHAN_SIM_DIR", dir.path().display().to_string()),
            ("VCHAN_SIM_DOMID", "1".into()),
            ("PORT", port.0.to_string()),
        ],
        Stdio::null(),
        Stdio::piped(),
    );
    let mut ready = String::new();
    BufReader::new(sim.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("child ready");

    let mut bare_blocks = Vec::with_capacity(BLOCKS);
    let mut sim_blocks = Vec::with_capacity(BLOCKS);
    for _ in 0..BLOCKS {
        let t = Instant::now();
        for _ in 0..PER_BLOCK {
            write_u64(&ping, 1);
            read_u64(&pong);
        }
        bare_blocks.push(t.elapsed() / PER_BLOCK);
        let t = Instant::now();
        for _ in 0..PER_BLOCK {
            ev.notify(port).expect("notify");
            ev.wait(None).expect("wait");
            ev.unmask(port).expect("unmask");
        }
        sim_blocks.push(t.elapsed() / PER_BLOCK);
    }
    bare_blocks.sort();
    sim_blocks.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (bm, sm) = (median(&bare_blocks), median(&sim_blocks));
    let (bb, sb) = (bare_blocks[0], sim_blocks[0]);
    println!(
        "\nevtchn_interleaved, {placement} ({BLOCKS} alternating blocks of {PER_BLOCK} round \
         trips)\n\
         \x20 bare eventfd:      median {:8.2} us   best block {:8.2} us\n\
         \x20 sim event channel: median {:8.2} us   best block {:8.2} us\n\
         \x20 sim / bare:        median {:8.2} x    best block {:8.2} x",
        us(bm),
        us(bb),
        us(sm),
        us(sb),
        us(sm) / us(bm),
        us(sb) / us(bb),
    );
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    evtchn_round_trip(&mut c);
    evtchn_same_thread(&mut c);
    grant_setup(&mut c);
    c.final_summary();

    // `cargo bench` passes --bench; a positional argument is criterion's filter.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benchmarking = args.iter().any(|a| a == "--bench");
    let filter_allows = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .all(|f| "evtchn_interleaved".contains(f.as_str()));
    if benchmarking && filter_allows {
        evtchn_interleaved("placed by the scheduler");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for echo_cpu in [None, (cpus > 1).then_some("1")] {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c")
                .arg("0")
                .arg(std::env::current_exe().expect("current_exe"))
                .env(ROLE, "interleaved-pinned");
            match echo_cpu {
                Some(cpu) => cmd.env(ECHO_CPU, cpu),
                None => cmd.env_remove(ECHO_CPU),
            };
            match cmd.status() {
                Ok(st) if st.success() => {}
                Ok(st) => println!("evtchn_interleaved, pinned: failed ({st})"),
                Err(e) => println!("evtchn_interleaved, pinned: skipped, cannot run taskset: {e}"),
            }
        }
    }
}
