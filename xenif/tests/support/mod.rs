//! Helpers for cross-process tests of the simulated host.
//!
//! A test that needs another domain re-runs its own test binary as a child process, selecting
//! only itself (`<name> --exact`) and naming a role in `VCHAN_TEST_ROLE`; the test function
//! starts with `if let Some(role) = support::child_role() { ... }` and plays that role. The
//! child acts as a domain through the ordinary environment (`VCHAN_SIM_DIR`,
//! `VCHAN_SIM_DOMID`), talks to its parent in prefixed lines on stdout (the test harness's
//! own output is ignored) and reads lines from stdin. Every wait has a deadline, and a child
//! still running when its handle drops is killed: a broken test fails, it never hangs.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vchan_xenif::DomId;
use vchan_xenif::sim::broker::{Broker, BrokerConfig};

/// Environment variable naming the role a child plays.
pub const ROLE_ENV: &str = "VCHAN_TEST_ROLE";
const LINE_PREFIX: &str = "@@vchan-test@@ ";
/// How long the parent waits for a child's line or exit.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The role this process plays, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Child side: tells the parent `line`.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// Child side: the next line from the parent.
pub fn hear() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    line.trim_end().to_owned()
}

/// Child side: an environment variable the parent set.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child started without {name}"))
}

/// A child process acting as a domain.
pub struct Child {
    name: String,
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

/// Starts a child running test `test` in role `role`, as domain `domid` of the host at `dir`.
pub fn spawn(test: &str, role: &str, dir: &Path, domid: DomId, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, role)
        .env(vchan_xenif::sim::ENV_DIR, dir)
        .env(vchan_xenif::sim::ENV_DOMID, domid.to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning a child test process");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(msg) = line.strip_prefix(LINE_PREFIX) {
                if tx.send(msg.to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    Child {
        name: format!("{role} (domain {domid})"),
        child,
        lines,
    }
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child's next line, which must start with `word`; returns the rest.
    pub fn expect(&self, word: &str) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => {
                let (w, rest) = line.split_once(' ').unwrap_or((&line, ""));
                assert_eq!(w, word, "child {} said {line:?}", self.name);
                rest.to_owned()
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("child {} did not say {word} within {DEADLINE:?}", self.name)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("child {} ended before saying {word}", self.name)
            }
        }
    }

    /// Sends the child a line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "{line}").expect("writing to the child");
        stdin.flush().expect("writing to the child");
    }

    /// Kills the child with SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL to the child");
    }

    /// Waits for the child to end (killing it and failing after the deadline).
    pub fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("child {} did not exit within {DEADLINE:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the child to end and checks it succeeded.
    pub fn wait_success(&mut self) {
        let status = self.wait();
        assert!(status.success(), "child {} failed: {status}", self.name);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A simulated host (broker only) in a fresh temporary directory, with `domains` created.
pub struct Host {
    /// The broker; dropped before the directory.
    pub broker: Broker,
    /// The host's directory.
    pub dir: tempfile::TempDir,
}

impl Host {
    /// A host with default limits.
    pub fn new(domains: &[u16]) -> Host {
        Self::with_config(BrokerConfig::default(), domains)
    }

    /// A host with the given limits.
    pub fn with_config(config: BrokerConfig, domains: &[u16]) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("vchan-sim-test")
            .tempdir()
            .expect("temporary directory");
        let broker = Broker::with_config(dir.path(), config).expect("starting the broker");
        for &d in domains {
            broker.domain_created(DomId(d)).expect("creating a domain");
        }
        Host { broker, dir }
    }

    /// The host's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The backend through which this process acts as `domid`.
    pub fn backend(&self, domid: u16) -> vchan_xenif::Backend {
        vchan_xenif::Backend::Sim {
            dir: self.path().to_owned(),
            domid: DomId(domid),
        }
    }
}

/// Waits (up to [`DEADLINE`]) for `cond` to hold: for what the host does asynchronously, such
/// as noticing that a process has gone.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Copies `len` bytes out of shared memory.
pub fn read(ptr: *const u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: callers pass a pointer and length inside a live mapping (`as_ptr()`/`len()` of
    // a `SharedPages`/`MappedPages` they hold); a raw copy never forms a reference into memory
    // another process may write.
    unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), len) };
    out
}

/// Copies `bytes` into shared memory.
pub fn write(ptr: *mut u8, bytes: &[u8]) {
    // SAFETY: callers pass a pointer inside a live writable mapping with room for `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
}

/// Reads one byte of shared memory.
pub fn read_byte(ptr: *const u8) -> u8 {
    // SAFETY: callers pass a pointer inside a live mapping; a volatile read of one byte.
    unsafe { ptr.read_volatile() }
}

/// Writes one byte of shared memory.
pub fn write_byte(ptr: *mut u8, v: u8) {
    // SAFETY: callers pass a pointer inside a live writable mapping.
    unsafe { ptr.write_volatile(v) }
}

/// Grant references as a comma-separated list (for a child's environment).
pub fn refs_to_string(refs: &[vchan_xenif::GrantRef]) -> String {
    refs.iter()
        .map(|r| r.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`refs_to_string`].
pub fn refs_from_string(s: &str) -> Vec<vchan_xenif::GrantRef> {
    s.split(',')
        .map(|r| vchan_xenif::GrantRef(r.parse().expect("grant reference")))
        .collect()
}
