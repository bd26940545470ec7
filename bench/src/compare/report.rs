//! The Markdown report, the raw CSV and the plots of one run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vchan_bench::stats::{Latency, ratio};
use vchan_bench::units::{mbps, size, time_ns, times};

use super::{Cell, GRID_IMPLS, Impl, LATENCY_IMPLS, Results, RunInfo, SPIN_RING, Unit, Wait};

/// What [`write`] wrote.
pub(crate) struct Written {
    pub(crate) markdown: PathBuf,
    pub(crate) plots_dir: PathBuf,
    /// The headline table, also printed at the end of the run.
    pub(crate) headline: String,
}

fn cell_text(c: Option<&Cell>, unit: Unit) -> String {
    match c {
        Some(c) => match (c.median(), unit) {
            (Some(v), Unit::MBps) => mbps(v),
            (Some(v), Unit::Mmsgs) => format!("{v:.2}"),
            (None, _) => "n/a".into(),
        },
        None => "–".into(),
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("–".into(), times)
}

fn pct(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:.0}%", r * 100.0))
}

fn median_of(c: Option<&Cell>) -> Option<f64> {
    c.and_then(Cell::median)
}

/// One line of the headline table.
struct Target {
    what: String,
    measured: String,
    target: String,
    met: Option<bool>,
}

fn verdict(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn latency_of(res: &Results, imp: Impl) -> Option<Latency> {
    res.latency
        .iter()
        .find(|(i, _)| *i == imp)
        .and_then(|(_, s)| Latency::of(&mut s.clone()))
}

fn targets(res: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let g = |ring, msg, imp| res.grid.get(&(ring, msg, imp));
    let stream = Impl::VchanStream(Wait::Default);
    let frames = Impl::VchanFrames(Wait::Default);

    // 1. Stream ≥ 3× C over the grid (and the same with a fixed spin, which shows what the
    //    adaptive spinner leaves on the table).
    for (imp, what) in [
        (
            stream,
            "vchan stream vs C libxenvchan (same rings, same writes)",
        ),
        (
            Impl::VchanStream(Wait::Fixed50),
            "vchan stream with a fixed 50 µs spin vs C libxenvchan (not the default)",
        ),
    ] {
        let ratios: Vec<(usize, usize, f64)> = res
            .grid
            .keys()
            .filter(|k| k.2 == imp)
            .filter_map(|&(ring, msg, _)| {
                ratio(
                    median_of(g(ring, msg, imp)),
                    median_of(g(ring, msg, Impl::C(Wait::Default))),
                )
                .map(|r| (ring, msg, r))
            })
            .collect();
        if ratios.is_empty() {
            t.push(Target {
                what: what.into(),
                measured: "–".into(),
                target: "≥ 3×".into(),
                met: None,
            });
            continue;
        }
        let rs: Vec<f64> = ratios.iter().map(|r| r.2).collect();
        let (wr, wm, worst) = ratios
            .iter()
            .copied()
            .fold((0, 0, f64::INFINITY), |a, b| if b.2 < a.2 { b } else { a });
        let met = ratios.iter().filter(|r| r.2 >= 3.0).count();
        t.push(Target {
            what: what.into(),
            measured: format!(
                "median {} over {} cells; worst {} ({} ring, {} writes); ≥ 3× in {}/{}",
                times(vchan_bench::stats::median(&rs).unwrap_or(0.0)),
                rs.len(),
                times(worst),
                size(wr),
                size(wm),
                met,
                rs.len()
            ),
            target: "≥ 3× in every cell".into(),
            met: Some(met == rs.len()),
        });
    }

    // 2. ≥ 25% of memcpy at 64K writes, 1M rings.
    let (ring, msg) = (1 << 20, 64 << 10);
    let r = ratio(
        median_of(g(ring, msg, stream)),
        median_of(g(ring, msg, Impl::Memcpy)),
    );
    t.push(Target {
        what: "vchan stream at 64K writes, 1M rings, vs memcpy of 64K".into(),
        measured: match r {
            Some(r) => format!(
                "{} MB/s vs {} MB/s = {}",
                mbps(median_of(g(ring, msg, stream)).unwrap_or(0.0)),
                mbps(median_of(g(ring, msg, Impl::Memcpy)).unwrap_or(0.0)),
                pct(Some(r))
            ),
            None => "–".into(),
        },
        target: "≥ 25%".into(),
        met: r.map(|r| r >= 0.25),
    });

    // 3. Busy-poll RTT ≤ 2× cache-line ping-pong.
    let busy = latency_of(res, Impl::VchanStream(Wait::Busy));
    let line = latency_of(res, Impl::Cacheline);
    let r = ratio(busy.map(|l| l.p50), line.map(|l| l.p50));
    t.push(Target {
        what: "64 B round trip, busy-poll, vs cache-line ping-pong (p50)".into(),
        measured: match (busy, line, r) {
            (Some(b), Some(l), Some(r)) => {
                format!("{} vs {} = {}", time_ns(b.p50), time_ns(l.p50), times(r))
            }
            _ => "–".into(),
        },
        target: "≤ 2×".into(),
        met: r.map(|r| r <= 2.0),
    });

    // 4. Default blocking RTT ≤ 1 µs.
    let def = latency_of(res, Impl::VchanStream(Wait::Default));
    t.push(Target {
        what: "64 B round trip, default (adaptive spin) waiting, both peers active (p50)".into(),
        measured: def.map_or("–".into(), |l| {
            format!("p50 {}, p99 {}", time_ns(l.p50), time_ns(l.p99))
        }),
        target: "≤ 1 µs".into(),
        met: def.map(|l| l.p50 <= 1000.0),
    });

    // 5. Typed 64 B ≥ 50 M/s with batching.
    for w in [Wait::Busy, Wait::Default] {
        let best = res
            .typed
            .iter()
            .filter(|((_, imp), _)| *imp == Impl::VchanTypedBatch(w))
            .filter_map(|((ring, _), c)| c.median().map(|v| (*ring, v)))
            .fold(None, |a: Option<(usize, f64)>, b| match a {
                Some(a) if a.1 >= b.1 => Some(a),
                _ => Some(b),
            });
        t.push(Target {
            what: format!("typed 64 B messages, batched, {} waiting", w.label()),
            measured: best.map_or("–".into(), |(ring, v)| {
                format!("{v:.1} M/s ({} rings)", size(ring))
            }),
            target: "≥ 50 M/s".into(),
            met: best.map(|b| b.1 >= 50.0),
        });
    }

    // 6. In-place large frames within 1.5× of memcpy (read in place, and copied out).
    for (imp, how) in [
        (
            Impl::VchanFramesInPlace(Wait::Default),
            "written and read in place",
        ),
        (frames, "written in place, copied out"),
    ] {
        for msg in [64 << 10, 256 << 10] {
            let ring = 1 << 20;
            let f = median_of(g(ring, msg, imp));
            let m = median_of(g(ring, msg, Impl::Memcpy));
            if f.is_none() && m.is_none() {
                continue;
            }
            let r = ratio(m, f);
            t.push(Target {
                what: format!("{} frames ({how}), 1M rings: time vs memcpy", size(msg)),
                measured: match r {
                    Some(r) => format!(
                        "{} vs {} MB/s: {}",
                        mbps(f.unwrap_or(0.0)),
                        mbps(m.unwrap_or(0.0)),
                        times(r)
                    ),
                    None => "–".into(),
                },
                target: "≤ 1.5×".into(),
                met: r.map(|r| r <= 1.5),
            });
        }
    }

    // 7. Proxy ≥ 2× the C proxy.
    let c_label = res.proxy_labels.first().cloned().unwrap_or_default();
    let ours = res.proxy_labels.get(1).cloned().unwrap_or_default();
    let msg = res.proxy.keys().map(|k| k.0).max().unwrap_or(64 << 10);
    let r = ratio(
        median_of(res.proxy.get(&(msg, ours))),
        median_of(res.proxy.get(&(msg, c_label))),
    );
    t.push(Target {
        what: format!(
            "vchan proxy vs vchan-socket-proxy, same rings, {} writes",
            size(msg)
        ),
        measured: ratio_text(r),
        target: "≥ 2×".into(),
        met: r.map(|r| r >= 2.0),
    });
    t
}

fn headline(res: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| target | measured | goal | |");
    let _ = writeln!(s, "|---|---|---|---|");
    for t in targets(res) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.target,
            verdict(t.met)
        );
    }
    s
}

fn machine_table(info: &RunInfo) -> String {
    let m = &info.machine;
    let load = |l: Option<[f64; 3]>| {
        l.map_or("?".into(), |l| {
            format!("{:.2} / {:.2} / {:.2}", l[0], l[1], l[2])
        })
    };
    let mut s = String::new();
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| host | `{}` |", m.host);
    let _ = writeln!(s, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(
        s,
        "| logical CPUs | {}{} |",
        m.cpus,
        if m.virtualised {
            " (virtual machine: hypervisor flag set)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| memory | {:.1} GiB |",
        m.memory as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| rustc | {} |", m.rustc);
    let _ = writeln!(s, "| C compiler | {} |", info.gcc);
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) before | {} |",
        load(info.load_before)
    );
    let _ = writeln!(s, "| load average after | {} |", load(info.load_after));
    let _ = writeln!(
        s,
        "| scheduling | nice {} for the harness and every process it starts{} |",
        info.nice,
        if info.nice < 0 {
            " (ahead of the machine's other, nice 0, work)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "| commit | {} |", info.commit);
    let _ = writeln!(
        s,
        "| run | {} start, {:.0} s, {} repetitions, ~{} s per throughput trial, processes {} |",
        info.started,
        info.seconds,
        info.plan.reps,
        info.plan.trial_secs,
        if info.plan.pin {
            "pinned (sender/ping side CPU 0, receiver/echo side CPU 1)"
        } else {
            "not pinned"
        }
    );
    s
}

fn grid_tables(res: &Results, rings: &[usize], msgs: &[usize]) -> String {
    let mut s = String::new();
    let stream = Impl::VchanStream(Wait::Default);
    for &ring in rings {
        if !res.grid.keys().any(|k| k.0 == ring) {
            continue;
        }
        let _ = writeln!(
            s,
            "\n#### {} rings (MB/s, median of the repetitions)\n",
            size(ring)
        );
        let _ = write!(s, "| write size |");
        for imp in GRID_IMPLS {
            let _ = write!(s, " {} |", imp.label());
        }
        let _ = writeln!(
            s,
            " stream / C | stream / memcpy | frames / memcpy | stream / Unix |"
        );
        let _ = writeln!(s, "|---:|{}", "---:|".repeat(GRID_IMPLS.len() + 4));
        for &msg in msgs {
            let g = |imp| res.grid.get(&(ring, msg, imp));
            if g(stream).is_none() {
                continue;
            }
            let _ = write!(s, "| {} |", size(msg));
            for imp in GRID_IMPLS {
                let _ = write!(s, " {} |", cell_text(g(imp), Unit::MBps));
            }
            let m = |imp| median_of(g(imp));
            let _ = writeln!(
                s,
                " {} | {} | {} | {} | {} | {} |",
                ratio_text(ratio(m(stream), m(Impl::C(Wait::Default)))),
                ratio_text(ratio(
                    m(Impl::VchanStream(Wait::Fixed50)),
                    m(Impl::C(Wait::Default))
                )),
                pct(ratio(m(stream), m(Impl::Memcpy))),
                pct(ratio(m(Impl::VchanFrames(Wait::Default)), m(Impl::Memcpy))),
                pct(ratio(
                    m(Impl::VchanFramesInPlace(Wait::Default)),
                    m(Impl::Memcpy)
                )),
                ratio_text(ratio(m(stream), m(Impl::Unix))),
            );
        }
    }
    s
}

fn spread_note(res: &Results) -> String {
    // The noisiest cell of the grid, so the reader knows how far to trust a ratio.
    let worst = res
        .grid
        .iter()
        .filter_map(|(k, c)| vchan_bench::stats::Summary::of(&c.values).map(|s| (k, s)))
        .filter(|(_, s)| s.n >= 2)
        .max_by(|a, b| a.1.spread().total_cmp(&b.1.spread()));
    let spreads: Vec<f64> = res
        .grid
        .values()
        .filter_map(|c| vchan_bench::stats::Summary::of(&c.values))
        .filter(|s| s.n >= 2)
        .map(|s| s.spread())
        .collect();
    match (worst, vchan_bench::stats::median(&spreads)) {
        (Some(((ring, msg, imp), s)), Some(med)) => format!(
            "Spread of the repetitions, (max − min) / median: median {:.0}% over the grid's cells; \
             the noisiest was {} at {} rings, {} writes ({:.0}%: {} … {} MB/s).",
            med * 100.0,
            imp.label(),
            size(*ring),
            size(*msg),
            s.spread() * 100.0,
            mbps(s.min),
            mbps(s.max)
        ),
        _ => String::new(),
    }
}

fn typed_table(res: &Results) -> String {
    let rings: Vec<usize> = {
        let mut r: Vec<usize> = res.typed.keys().map(|k| k.0).collect();
        r.dedup();
        r
    };
    if rings.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = write!(s, "| 64 B messages | ");
    for r in &rings {
        let _ = write!(s, "{} rings: M msgs/s | CPU (both processes) | ", size(*r));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---:|---:|".repeat(rings.len()));
    let imps: Vec<Impl> = {
        let mut v: Vec<Impl> = Vec::new();
        for k in res.typed.keys() {
            if !v.contains(&k.1) {
                v.push(k.1);
            }
        }
        v
    };
    for imp in imps {
        let _ = write!(s, "| {} |", imp.label());
        for r in &rings {
            let c = res.typed.get(&(*r, imp));
            let _ = write!(
                s,
                " {} | {} |",
                cell_text(c, Unit::Mmsgs),
                pct(c.and_then(Cell::cpu_share))
            );
        }
        let _ = writeln!(s);
    }
    s
}

fn spin_table(res: &Results) -> String {
    let msgs: Vec<usize> = {
        let mut v: Vec<usize> = res.spin.keys().map(|k| k.0).collect();
        v.dedup();
        v
    };
    if msgs.is_empty() {
        return String::new();
    }
    let imps = super::SPIN_IMPLS;
    let mut s = String::new();
    let _ = write!(s, "| waiting |");
    for m in &msgs {
        let _ = write!(s, " {} writes: MB/s | CPU |", size(*m));
    }
    let _ = writeln!(s, " 64 B RTT p50 | p99 |");
    let _ = writeln!(s, "|---|{}---:|---:|", "---:|---:|".repeat(msgs.len()));
    for imp in imps {
        let _ = write!(s, "| {} |", imp.label());
        for m in &msgs {
            let c = res.spin.get(&(*m, imp));
            let _ = write!(
                s,
                " {} | {} |",
                cell_text(c, Unit::MBps),
                pct(c.and_then(Cell::cpu_share))
            );
        }
        let l = latency_of(res, imp);
        let _ = writeln!(
            s,
            " {} | {} |",
            l.map_or("–".into(), |l| time_ns(l.p50)),
            l.map_or("–".into(), |l| time_ns(l.p99))
        );
    }
    s
}

fn latency_table(res: &Results) -> String {
    let mut s = String::new();
    let line = latency_of(res, Impl::Cacheline).map(|l| l.p50);
    let _ = writeln!(
        s,
        "| 64 B round trip | min | p50 | p90 | p99 | p99.9 | mean | samples | p50 / cache line |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for imp in LATENCY_IMPLS {
        let Some(l) = latency_of(res, imp) else {
            let _ = writeln!(s, "| {} | n/a | | | | | | | |", imp.label());
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            imp.label(),
            time_ns(l.min),
            time_ns(l.p50),
            time_ns(l.p90),
            time_ns(l.p99),
            time_ns(l.p999),
            time_ns(l.mean),
            l.n,
            ratio_text(ratio(Some(l.p50), line))
        );
    }
    s
}

fn proxy_table(res: &Results) -> String {
    if res.proxy.is_empty() {
        return String::new();
    }
    let msgs: Vec<usize> = {
        let mut v: Vec<usize> = res.proxy.keys().map(|k| k.0).collect();
        v.sort();
        v.dedup();
        v
    };
    let c_label = res.proxy_labels.first().cloned().unwrap_or_default();
    let mut s = String::new();
    let _ = write!(s, "| proxy pair |");
    for m in &msgs {
        let _ = write!(s, " {} writes: MB/s | vs C | CPU (4 processes) |", size(*m));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---:|---:|---:|".repeat(msgs.len()));
    for label in &res.proxy_labels {
        let _ = write!(s, "| {label} |");
        for m in &msgs {
            let c = res.proxy.get(&(*m, label.clone()));
            let base = median_of(res.proxy.get(&(*m, c_label.clone())));
            let _ = write!(
                s,
                " {} | {} | {} |",
                cell_text(c, Unit::MBps),
                ratio_text(ratio(median_of(c), base)),
                pct(c.and_then(Cell::cpu_share))
            );
        }
        let _ = writeln!(s);
    }
    s
}

fn notes(res: &Results) -> String {
    let mut reasons: Vec<String> = res.notes.clone();
    let mut seen = std::collections::BTreeSet::new();
    for ((ring, msg, imp), c) in &res.grid {
        if let Some(r) = &c.na {
            if r.starts_with("a frame holds") {
                continue;
            }
            let line = format!(
                "{} ({} rings, {} writes): {r}",
                imp.label(),
                size(*ring),
                size(*msg)
            );
            if seen.insert(line.clone()) {
                reasons.push(line);
            }
        }
    }
    for ((msg, label), c) in &res.proxy {
        if let Some(r) = &c.na {
            reasons.push(format!("{label} ({} writes): {r}", size(*msg)));
        }
    }
    if reasons.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Not measured\n\n");
    for r in reasons {
        let _ = writeln!(s, "- {r}");
    }
    s
}

fn csv(res: &Results) -> String {
    let mut s = String::from("section,ring,msg,implementation,repetition,count,wall_ns,cpu_ns\n");
    for t in &res.raw {
        let _ = writeln!(
            s,
            "{},{},{},\"{}\",{},{},{},{}",
            t.section, t.ring, t.msg, t.label, t.rep, t.count, t.wall_ns, t.cpu_ns
        );
    }
    s
}

const METHOD: &str = "\
## How this was measured

Every implementation runs in its own processes on one simulated Xen host (the parent only \
orchestrates and blocks; idle pairs block on their command pipe, never on the channel). \
Measurements of one table are **interleaved**: one calibration trial per implementation \
(also the warm-up), then repetition 1 of every implementation, repetition 2 of every \
implementation, …, rotating which goes first. Tables give the **median** over repetitions; \
ratios are ratios of medians of the same run. Latency rows pool every round trip of their \
interleaved blocks.

- **vchan stream**: Rust server in dom0 `write_all`s W-byte writes into the ring it writes \
(size R), the client in domain 1 `read`s up to W bytes at a time; both rings R bytes. \
**vchan frames**: the same, one frame per write, its payload written in place (`send_with`) \
and copied out by the reader (`Frame::read_into`); payloads must fit the ring minus the \
8-byte header, so larger writes are n/a. **vchan frames, read in place**: the same writer; \
the reader borrows each frame, reads its first 8 bytes and drops it (the payload never leaves \
the ring). Default waiting: adaptive spin (≤ 50 µs) then sleep.
- **C libxenvchan**: `bench/c/vchan_bench.c`, Debian's `libxenvchan.so.4.17` on the \
simulated host's drop-in `libxengnttab`/`libxenevtchn`, same rings (`libxenvchan_server_init` \
read_min = write_min = R), `libxenvchan_write`/`libxenvchan_read` of W bytes, blocking \
(its only waiting: sleep on the event channel).
- **Unix socket**, **pipe**: two processes, `SO_SNDBUF`/`SO_RCVBUF` or `F_SETPIPE_SZ` set \
to R, `write`/`read` of W bytes.
- **rtrb**, **crossbeam-channel**: in-process references, two threads (pinned like the \
processes). rtrb: an R-byte `u8` ring through its `io::Write`/`io::Read` (a copy in, a copy \
out). crossbeam: a bounded channel of R/W `Vec<u8>` messages (the sender allocates and \
fills one per write, the receiver copies it out).
- **memcpy**: one thread copying W bytes from one W-byte buffer to another.
- **cache-line ping-pong**: two threads pinned to CPUs 0 and 1 bounce one 128-byte-aligned \
atomic; the floor for any cross-core round trip.
- **Round trips**: 64 bytes there and back, timed one by one (one `clock_gettime` per round \
trip); 64K rings. *busy-poll*: Rust spins without sleeping, C retries non-blocking calls; \
*default*: Rust adaptive spin then sleep, C blocking; *no spin*: Rust sleeps at once; \
*fixed 50 µs spin*: Rust always spins the default's maximum before sleeping (not a default: \
it shows what the adaptive policy gains or loses).
- **Proxies**: source → Unix socket → client proxy (domain 1) → vchan → server proxy \
(dom0) → Unix socket → sink, one direction; the CPU column counts all four processes.
- CPU shares come from `/proc/<pid>/stat` (10 ms ticks) summed over the pair's processes: \
100% = one CPU busy.
";

/// Writes the report, the CSV and the plots under `out`.
pub(crate) fn write(out: &Path, info: &RunInfo, res: &Results) -> Result<Written> {
    let stem = format!(
        "{}-{}",
        vchan_bench::machine::today_utc(),
        info.machine
            .host
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
    );
    // A second run on the same day gets its own name (`…-2`, `…-3`): reports are kept.
    let stem = (1..)
        .map(|i| {
            if i == 1 {
                stem.clone()
            } else {
                format!("{stem}-{i}")
            }
        })
        .find(|s| !out.join(format!("{s}.md")).exists())
        .unwrap_or(stem);
    let plots_dir = out.join(&stem);
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("creating {}", plots_dir.display()))?;
    let plots = super::plot::draw(&plots_dir, &info.plan, res);
    std::fs::write(plots_dir.join("trials.csv"), csv(res))?;

    let head = headline(res);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# vchan comparison: {} on `{}`{}\n",
        vchan_bench::machine::today_utc(),
        info.machine.host,
        if info.short {
            " (short mode: CI smoke run, not for quoting)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "Produced by `{}`. Raw trials: [`{stem}/trials.csv`]({stem}/trials.csv).\n",
        info.command
    );
    let _ = writeln!(s, "## Machine\n\n{}", machine_table(info));
    let _ = writeln!(s, "## Headline (ratios from this run)\n\n{head}");
    let _ = writeln!(s, "## Throughput by write size and ring size\n");
    let _ = writeln!(
        s,
        "Default waiting for every implementation. MB/s = 10^6 payload bytes per second. {}",
        spread_note(res)
    );
    s.push_str(&grid_tables(res, &info.plan.rings, &info.plan.msgs));
    for p in &plots.throughput {
        let _ = writeln!(s, "\n![throughput]({stem}/{p})");
    }
    let _ = writeln!(s, "\n## Typed 64-byte messages (issue 7)\n");
    let _ = writeln!(
        s,
        "A `#[repr(C)]` 64-byte struct per frame (72 ring bytes with the header): \
         `FrameWriter::send` one by one or 256 per `batch` (one publish, at most one signal), \
         received with `recv_copy` / `recv_batch` + `Frame::read` (one fetch each). Beside: the \
         stream API and a Unix socket moving 64-byte writes. CPU is both processes' CPU time \
         over wall time (200% = both CPUs busy).\n"
    );
    s.push_str(&typed_table(res));
    let _ = writeln!(s, "\n## Waiting strategies: spin before sleep (issue 5)\n");
    let _ = writeln!(
        s,
        "{} rings. Throughput with CPU use (both processes), and the 64 B round trips of the \
         latency section.\n",
        size(SPIN_RING)
    );
    s.push_str(&spin_table(res));
    let _ = writeln!(s, "\n## 64-byte round trips\n");
    s.push_str(&latency_table(res));
    for p in &plots.latency {
        let _ = writeln!(s, "\n![latency]({stem}/{p})");
    }
    let _ = writeln!(s, "\n## Proxies (issue 7)\n");
    s.push_str(&proxy_table(res));
    s.push_str(&notes(res));
    if !plots.problems.is_empty() {
        let _ = writeln!(s, "\nPlots: {}", plots.problems.join("; "));
    }
    let _ = writeln!(s, "\n{METHOD}");
    let markdown = out.join(format!("{stem}.md"));
    std::fs::write(&markdown, s).with_context(|| format!("writing {}", markdown.display()))?;
    Ok(Written {
        markdown,
        plots_dir,
        headline: head,
    })
}
