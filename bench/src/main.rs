//! `vchan-bench`: the side-by-side comparison harness.
//!
//! ```text
//! cargo run -p vchan-bench --release -- compare [--short] [--out DIR] [--reps N]
//!     [--secs S] [--only grid,typed,spin,latency,proxy] [--rings LIST] [--msgs LIST]
//!     [--no-pin] [--vchan PATH]
//! ```
//!
//! See `bench/README.md` for what each row means. The binary also serves as the harness's
//! worker processes (`vchan-bench worker …`, started by the harness itself).

mod compare;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: vchan-bench compare [options]

Runs the side-by-side comparison on a simulated Xen host and writes a Markdown report with
PNG plots: bench/results/<date>-<host>.md (short mode: bench/results/tmp/).

options:
  --short          CI mode: small grid, 3 repetitions, short trials (about a minute)
  --out DIR        write the report and plots under DIR
  --reps N         interleaved repetitions per measurement (default 5; short 3)
  --secs S         target seconds per throughput trial (default 0.25; short 0.05)
  --only LIST      sections to run, comma-separated: grid,typed,spin,latency,proxy
  --rings LIST     ring sizes of the throughput grid, e.g. 4K,64K,1M
  --msgs LIST      write sizes of the throughput grid, e.g. 64,4K,64K,1M
  --no-pin         do not pin the two sides of a pair to CPUs 0 and 1
  --vchan PATH     the vchan command to run as `vchan proxy` (default: built with cargo)
";

fn parse(args: &[String]) -> Result<compare::Options, String> {
    let mut o = compare::Options {
        short: false,
        out: None,
        reps: None,
        trial_secs: None,
        no_pin: false,
        vchan: None,
        only: None,
        rings: None,
        msgs: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--short" => o.short = true,
            "--no-pin" => o.no_pin = true,
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--vchan" => o.vchan = Some(PathBuf::from(value("--vchan")?)),
            "--reps" => {
                o.reps = Some(
                    value("--reps")?
                        .parse()
                        .map_err(|_| "--reps: not a number")?,
                )
            }
            "--secs" => {
                o.trial_secs = Some(
                    value("--secs")?
                        .parse()
                        .map_err(|_| "--secs: not a number")?,
                )
            }
            "--only" => {
                let v: Vec<String> = value("--only")?.split(',').map(str::to_owned).collect();
                for s in &v {
                    if !["grid", "typed", "spin", "latency", "proxy"].contains(&s.as_str()) {
                        return Err(format!("--only: unknown section {s}"));
                    }
                }
                o.only = Some(v);
            }
            "--rings" | "--msgs" => {
                let name = a.clone();
                let list = value(&name)?;
                let mut sizes = Vec::new();
                for item in list.split(',') {
                    let v = vchan_bench::units::parse_size(item)
                        .filter(|&v| (1..=1 << 20).contains(&v))
                        .ok_or_else(|| format!("{name}: {item:?} is not a size from 1 to 1M"))?;
                    if name == "--rings" && (v < 4096 || !v.is_power_of_two()) {
                        return Err(format!(
                            "--rings: {item} is not a power of two from 4K to 1M"
                        ));
                    }
                    sizes.push(v);
                }
                if name == "--rings" {
                    o.rings = Some(sizes);
                } else {
                    o.msgs = Some(sizes);
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => match compare::worker::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vchan-bench worker: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("compare") => match parse(&args[1..]) {
            Ok(o) => match compare::run(o) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vchan-bench compare: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                if !e.is_empty() {
                    eprintln!("vchan-bench compare: {e}\n");
                }
                eprint!("{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
