//! XenStore through the simulated xenstored: write+read round trip and watch-event latency,
//! with our Rust client and, in the same run against the same host, Debian's C libxenstore
//! (driven by `bench/c/xs_bench.c`, compiled here against Debian `libxen-dev`'s `xenstore.h`,
//! which `tools/setup.sh` unpacks into `target/debian/root`).
//!
//! Run: `cargo bench -p vchan-bench --bench xenstore`. The C side is skipped, with the reason
//! printed, when `gcc` or the unpacked `libxen-dev` is missing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use vchan_xenif::DomId;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::xenstore::Client;

/// The C driver, running against the host's dom0 socket.
struct CDriver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CDriver {
    fn start(host: &SimHost) -> Result<CDriver, String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/xs_bench.c");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xs_bench");
        // Debian's libxen-dev and libxenstore4, unpacked by tools/setup.sh (never installed).
        let debian = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian/root");
        let libs = debian.join("usr/lib/x86_64-linux-gnu");
        let out = Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg(format!("-I{}", debian.join("usr/include").display()))
            .arg(format!("-L{}", libs.display()))
            .arg("-lxenstore")
            .output()
            .map_err(|e| format!("gcc: {e} (apt-get install gcc)"))?;
        if !out.status.success() {
            return Err(format!(
                "compiling {} failed (run tools/setup.sh: it unpacks Debian's libxen-dev):\n{}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut child = Command::new(&bin)
            .env("LD_LIBRARY_PATH", &libs)
            .env("XENSTORED_PATH", host.xenstore_socket(DomId::DOM0))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("xs_bench did not start: {line:?}"));
        }
        Ok(CDriver {
            child,
            stdin,
            stdout,
        })
    }

    fn run(&mut self, cmd: &str, iters: u64) -> Duration {
        writeln!(self.stdin, "{cmd} {iters}").expect("xs_bench stdin");
        self.stdin.flush().expect("xs_bench stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("xs_bench stdout");
        let ns: u64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("xs_bench answered {line:?}"));
        Duration::from_nanos(ns)
    }
}

impl Drop for CDriver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = SimHost::start(dir.path()).expect("simulated host");
    let xs = Client::connect_sim(dir.path(), DomId::DOM0).expect("client");
    xs.write("/bench/rust/key", "v").expect("write");
    xs.write("/bench/rust/watched", "0").expect("write");
    let watch = xs.watch("/bench/rust/watched", "tok").expect("watch");
    watch.next_event().expect("registration event");
    let mut cdriver = match CDriver::start(&host) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("C libxenstore side skipped: {e}");
            None
        }
    };

    let mut g = c.benchmark_group("xenstore_write_read");
    g.bench_function("rust_client", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                xs.write("/bench/rust/key", "v").expect("write");
                xs.read("/bench/rust/key").expect("read");
            }
            t0.elapsed()
        })
    });
    if let Some(d) = cdriver.as_mut() {
        g.bench_function("c_libxenstore", |b| {
            b.iter_custom(|iters| d.run("wr", iters))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("xenstore_watch_event");
    g.bench_function("rust_client", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                xs.write("/bench/rust/watched", "1").expect("write");
                let ev = watch.next_event().expect("event");
                assert_eq!(ev.path, "/bench/rust/watched");
            }
            t0.elapsed()
        })
    });
    if let Some(d) = cdriver.as_mut() {
        g.bench_function("c_libxenstore", |b| {
            b.iter_custom(|iters| d.run("watch", iters))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
