//! Shared by the C interop tests (`msg/tests/c_interop*.rs`): Debian's C programs and
//! libraries from `target/debian/root` (unpacked by `tools/setup.sh`), the simulated host's
//! drop-in C libraries (`tools/sim-libs.sh`), the C test driver (`c/vchan_node.c`, compiled
//! here with gcc), a simulated host, child processes with deadlines, and the test pattern.
//!
//! A missing Debian file or tool skips a test with a printed reason, except under `CI`, where
//! it fails.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use vchan_msg::{Client, Server, Vchan, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("msg/ has a parent")
        .to_owned()
}

/// Where `tools/setup.sh` unpacks Debian packages.
pub fn debian_root() -> PathBuf {
    workspace().join("target/debian/root")
}

/// Debian's unpacked Xen headers (`libxen-dev`).
pub fn debian_include() -> PathBuf {
    debian_root().join("usr/include")
}

/// Debian's unpacked libraries (libxenvchan, libxenstore, libxenctrl, ...).
pub fn debian_libs() -> PathBuf {
    debian_root().join("usr/lib/x86_64-linux-gnu")
}

/// Debian's `vchan-socket-proxy` (xen-utils-4.17).
pub fn socket_proxy() -> PathBuf {
    debian_root().join("usr/lib/xen-4.17/bin/vchan-socket-proxy")
}

/// Whether `what` exists; a printed skip (or, under `CI`, a failure) otherwise.
pub fn available(what: &Path, how: &str) -> bool {
    if what.exists() {
        return true;
    }
    let msg = format!("{} is missing: {how}", what.display());
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure: run tools/setup.sh)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Whether everything the C side needs is there (see [`available`]).
pub fn c_side_available() -> bool {
    available(
        &debian_libs().join("libxenvchan.so.4.17"),
        "run tools/setup.sh (apt-get download libxenmisc4.17)",
    ) && available(
        &debian_include().join("libxenvchan.h"),
        "run tools/setup.sh (apt-get download libxen-dev)",
    ) && available(Path::new("/usr/bin/gcc"), "apt-get install gcc")
}

/// This test binary's target directory and cargo profile, from its own path
/// (`<target>/<profile dir>/deps/<test>-<hash>`).
fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps");
    let target = profile_dir.parent().expect("target dir").to_owned();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(p) => p.to_owned(),
        None => "dev".to_owned(),
    };
    (target, profile)
}

/// The directory holding the drop-in `libxengnttab.so.1`, `libxenevtchn.so.1`,
/// `libxencall.so.1` and `libxenforeignmemory.so.1`, built (once per test binary) by `tools/sim-libs.sh` with this test's
/// profile.
pub fn sim_libs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (target, profile) = target_and_profile();
        let out = Command::new(workspace().join("tools/sim-libs.sh"))
            .args(["--profile", &profile])
            .env("CARGO_TARGET_DIR", &target)
            .stderr(Stdio::inherit())
            .output()
            .expect("running tools/sim-libs.sh");
        assert!(out.status.success(), "tools/sim-libs.sh failed");
        let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        for lib in [
            "libxengnttab.so.1",
            "libxenevtchn.so.1",
            "libxencall.so.1",
            "libxenforeignmemory.so.1",
        ] {
            assert!(dir.join(lib).exists(), "{lib} missing in {}", dir.display());
        }
        dir
    })
    .clone()
}

/// The `vchan` command line (`tools/`), built (once per test binary) with this test's profile.
pub fn vchan_cli() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let (target, profile) = target_and_profile();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args([
                "build",
                "-q",
                "-p",
                "vchan-tools",
                "--bin",
                "vchan",
                "--profile",
            ])
            .arg(&profile)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running cargo build -p vchan-tools");
        assert!(status.success(), "building the vchan command failed");
        let dir = if profile == "dev" {
            "debug"
        } else {
            profile.as_str()
        };
        target.join(dir).join("vchan")
    })
    .clone()
}

/// The C test driver, compiled (once per test binary) with gcc against Debian's headers and
/// Debian's `libxenvchan.so.4.17`.
pub fn vchan_node() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let (target, _) = target_and_profile();
        let dir = target.join("c-interop");
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("vchan_node");
        let tmp = dir.join(format!(".vchan_node.{}", std::process::id()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/vchan_node.c");
        let libs = debian_libs();
        let out = Command::new("gcc")
            .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg(format!("-I{}", debian_include().display()))
            .arg(format!("-L{}", libs.display()))
            .arg("-l:libxenvchan.so.4.17")
            .arg(format!(
                "-Wl,-rpath-link,{}:{}",
                sim_libs().display(),
                libs.display()
            ))
            .output()
            .expect("running gcc");
        assert!(
            out.status.success(),
            "gcc failed to build {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &exe).unwrap();
        exe
    })
    .clone()
}

/// `LD_LIBRARY_PATH` for a C program on the simulated host: the drop-ins first, then
/// Debian's unpacked libraries.
pub fn ld_library_path() -> String {
    format!("{}:{}", sim_libs().display(), debian_libs().display())
}

/// A simulated host (XenStore and the grant/event-channel broker) with some domains.
pub struct Host {
    pub host: SimHost,
    _dir: tempfile::TempDir,
}

impl Host {
    pub fn new(domains: &[u16]) -> Host {
        // Under /tmp: socket paths must stay short.
        let dir = tempfile::Builder::new()
            .prefix("vci")
            .tempdir_in("/tmp")
            .unwrap();
        let host = SimHost::builder(dir.path())
            .domains(domains.iter().map(|&d| DomId(d)))
            .broker(BrokerConfig::default())
            .start()
            .unwrap();
        Host { host, _dir: dir }
    }

    pub fn dir(&self) -> &Path {
        self.host.dir()
    }

    pub fn backend(&self, domid: u16) -> Backend {
        Backend::Sim {
            dir: self.dir().to_owned(),
            domid: DomId(domid),
        }
    }

    /// A Rust server in `own` for a client in `peer`.
    pub fn server(&self, own: u16, peer: u16, port: u32) -> Server {
        Server::new(DomId(peer), default_path(DomId(own), DomId(peer), port))
            .backend(self.backend(own))
    }

    /// A Rust client in `own` of the server in `server`.
    pub fn client(&self, own: u16, server: u16, port: u32) -> Client {
        Client::new(DomId(server), default_path(DomId(server), DomId(own), port))
            .backend(self.backend(own))
    }

    /// A command running `program` as domain `domid` of this host, with the drop-ins.
    pub fn command(&self, program: &Path, domid: u16) -> Command {
        let mut cmd = Command::new(program);
        for (k, v) in vchan_xenif::sim::host::join_env(self.dir(), DomId(domid)) {
            cmd.env(k, v);
        }
        cmd.env("LD_LIBRARY_PATH", ld_library_path());
        cmd
    }

    /// Starts the C driver as domain `domid` with `args` (after the role, domain and path).
    pub fn c_node(&self, domid: u16, args: &[String]) -> Proc {
        let mut cmd = self.command(&vchan_node(), domid);
        cmd.args(args);
        Proc::spawn(format!("vchan_node {}", args.join(" ")), cmd)
    }
}

/// How long a test waits for a child's line or exit before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A child process whose stdout lines are collected; killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Mutex<Vec<String>>,
}

impl Proc {
    pub fn spawn(name: String, cmd: Command) -> Proc {
        Proc::spawn_prefixed(name, cmd, "")
    }

    /// [`Self::spawn`], keeping only the lines that start with `prefix` (without it).
    pub fn spawn_prefixed(name: String, mut cmd: Command, prefix: &'static str) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(line) = line.strip_prefix(prefix) else {
                    continue;
                };
                if tx.send(line.to_owned()).is_err() {
                    break;
                }
            }
        });
        Proc {
            name,
            child,
            lines,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The next line, which must start with `word`; returns the rest.
    pub fn expect(&self, word: &str) -> String {
        self.expect_within(word, DEADLINE)
    }

    /// [`Self::expect`] with a deadline.
    pub fn expect_within(&self, word: &str, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(line) => {
                self.seen.lock().unwrap().push(line.clone());
                let (w, rest) = line.split_once(' ').unwrap_or((&line, ""));
                assert_eq!(w, word, "{} said {line:?}", self.name);
                rest.to_owned()
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{} did not say {word} within {within:?}", self.name)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "{} ended before saying {word} (said {:?})",
                self.name,
                self.seen.lock().unwrap()
            ),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the exit (failing after the deadline); returns the status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > DEADLINE {
                self.kill();
                panic!("{} did not exit within {DEADLINE:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn wait_success(&mut self) {
        let status = self.wait();
        assert!(status.success(), "{} failed: {status}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test pattern (the same function as `pattern()` in `c/vchan_node.c`): byte `pos` of
/// the stream with `seed` is a byte of splitmix64 of its 8-byte block.
pub fn pattern(seed: u64, pos: u64, buf: &mut [u8]) {
    fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let mut i = 0;
    while i < buf.len() {
        let p = pos + i as u64;
        let v = splitmix64(seed.wrapping_add((p / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut off = (p % 8) as u32;
        while off < 8 && i < buf.len() {
            buf[i] = (v >> (8 * off)) as u8;
            off += 1;
            i += 1;
        }
    }
}

/// FNV-1a 64, as `c/vchan_node.c` reports it.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn fnv1a(mut h: u64, buf: &[u8]) -> u64 {
    for &b in buf {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The checksum of the first `len` bytes of the pattern with `seed`.
pub fn pattern_sum(seed: u64, len: u64) -> u64 {
    let mut buf = vec![0u8; 1 << 16];
    let (mut at, mut h) = (0u64, FNV_OFFSET);
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        pattern(seed, at, &mut buf[..n]);
        h = fnv1a(h, &buf[..n]);
        at += n as u64;
    }
    h
}

/// How the Rust side moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `write_all` / `read`: a byte stream.
    Stream,
    /// `send` / `recv` of whole packets of the given size (the last one may be shorter).
    Packet,
}

impl Mode {
    pub fn c_arg(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Packet => "packet",
        }
    }
}

/// One direction of a transfer: `len` bytes of the pattern with `seed`, in calls of `chunk`.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub len: u64,
    pub seed: u64,
    pub chunk: usize,
}

/// What [`rust_transfer`] leaves: the checksums and the channel's halves (still open).
pub struct Transfer {
    pub sent: u64,
    pub received: u64,
    pub reader: vchan_msg::ReadHalf,
    pub writer: vchan_msg::WriteHalf,
}

/// Runs both directions at once on a Rust vchan: sends `tx` (on a thread) and receives and
/// checks `rx`, byte by byte.
pub fn rust_transfer(chan: Vchan, mode: Mode, tx: Flow, rx: Flow) -> Transfer {
    let (mut r, mut w) = chan.split();
    // A lost wake-up or a stuck peer fails the test instead of hanging it.
    r.set_timeout(Some(DEADLINE));
    w.set_timeout(Some(DEADLINE));
    let writer = std::thread::spawn(move || {
        let mut buf = vec![0u8; tx.chunk];
        let (mut at, mut h) = (0u64, FNV_OFFSET);
        while at < tx.len {
            let n = (tx.len - at).min(tx.chunk as u64) as usize;
            pattern(tx.seed, at, &mut buf[..n]);
            match mode {
                Mode::Stream => w.write_all(&buf[..n]),
                Mode::Packet => w.send(&buf[..n]),
            }
            .unwrap_or_else(|e| panic!("Rust side sending at byte {at}: {e}"));
            h = fnv1a(h, &buf[..n]);
            at += n as u64;
        }
        (h, w)
    });
    let mut buf = vec![0u8; rx.chunk];
    let mut want = vec![0u8; rx.chunk];
    let (mut at, mut h) = (0u64, FNV_OFFSET);
    while at < rx.len {
        let n = (rx.len - at).min(rx.chunk as u64) as usize;
        let got = match mode {
            Mode::Stream => r.read(&mut buf[..n]),
            Mode::Packet => r.recv(&mut buf[..n]).map(|()| n),
        }
        .unwrap_or_else(|e| panic!("Rust side receiving at byte {at}: {e}"));
        pattern(rx.seed, at, &mut want[..got]);
        if buf[..got] != want[..got] {
            let i = (0..got).find(|&i| buf[i] != want[i]).unwrap();
            panic!(
                "Rust side received a wrong byte at {}: {} instead of {}",
                at + i as u64,
                buf[i],
                want[i]
            );
        }
        h = fnv1a(h, &buf[..got]);
        at += got as u64;
    }
    let (sent, w) = writer.join().expect("Rust sender");
    Transfer {
        sent,
        received: h,
        reader: r,
        writer: w,
    }
}

/// Writes `len` bytes of the pattern with `seed` to `w` in `chunk`-byte calls; returns the
/// checksum.
pub fn write_pattern(w: &mut dyn std::io::Write, seed: u64, len: u64, chunk: usize) -> u64 {
    let mut buf = vec![0u8; chunk];
    let (mut at, mut h) = (0u64, FNV_OFFSET);
    while at < len {
        let n = (len - at).min(chunk as u64) as usize;
        pattern(seed, at, &mut buf[..n]);
        w.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("writing at byte {at}: {e}"));
        h = fnv1a(h, &buf[..n]);
        at += n as u64;
    }
    h
}

/// Reads exactly `len` bytes from `r`, checking each against the pattern with `seed`;
/// returns the checksum.
pub fn read_pattern(r: &mut dyn std::io::Read, seed: u64, len: u64) -> u64 {
    let mut buf = vec![0u8; 1 << 16];
    let mut want = vec![0u8; 1 << 16];
    let (mut at, mut h) = (0u64, FNV_OFFSET);
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        let got = r
            .read(&mut buf[..n])
            .unwrap_or_else(|e| panic!("reading at byte {at}: {e}"));
        assert!(got > 0, "end of stream after {at} of {len} bytes");
        pattern(seed, at, &mut want[..got]);
        if let Some(i) = (0..got).find(|&i| buf[i] != want[i]) {
            panic!(
                "wrong byte at {}: {} instead of {}",
                at + i as u64,
                buf[i],
                want[i]
            );
        }
        h = fnv1a(h, &buf[..got]);
        at += got as u64;
    }
    h
}

/// Parses a driver report "N SUM" into (bytes, checksum).
pub fn report(rest: &str) -> (u64, u64) {
    let (n, sum) = rest.split_once(' ').expect("N SUM");
    (n.parse().unwrap(), u64::from_str_radix(sum, 16).unwrap())
}

/// Environment variable naming the role a re-run of this test binary plays (a Rust peer in
/// its own process, so that it can be killed).
pub const ROLE_ENV: &str = "VCHAN_INTEROP_ROLE";
/// Prefix of the lines a role says (the test harness's own output is ignored).
const ROLE_PREFIX: &str = "@@interop@@ ";

/// The role this process plays, if it is a re-run child.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Child side: tells the parent `line`.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ROLE_PREFIX}{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// The simulated domain a child acts as (`VCHAN_SIM_DIR`, `VCHAN_SIM_DOMID`).
pub fn child_backend() -> Backend {
    Backend::detect().expect("the child's simulated-host environment")
}

impl Host {
    /// Re-runs this test binary's test `test` as domain `domid`, in role `role`, with `env`.
    pub fn rust_child(&self, test: &str, role: &str, domid: u16, env: &[(&str, String)]) -> Proc {
        let mut cmd = self.command(&std::env::current_exe().unwrap(), domid);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE_ENV, role)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Proc::spawn_prefixed(format!("{role} (Rust, domain {domid})"), cmd, ROLE_PREFIX)
    }
}
