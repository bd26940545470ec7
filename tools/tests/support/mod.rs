//! Shared by the `vchan` binary's integration tests: a simulated host embedded in the test, and
//! helpers to run the binary as processes acting as its domains.
#![allow(dead_code)] // each test file uses its own subset

use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use vchan_xenif::DomId;
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;

pub struct Host {
    pub host: SimHost,
    pub dir: tempfile::TempDir,
}

pub fn host(domains: &[u16]) -> Host {
    let dir = tempfile::Builder::new()
        .prefix("vt")
        .tempdir_in("/tmp")
        .unwrap();
    let host = SimHost::builder(dir.path())
        .domains(domains.iter().map(|&d| DomId(d)))
        .broker(BrokerConfig::default())
        .start()
        .unwrap();
    Host { host, dir }
}

impl Host {
    /// `vchan` acting as `domid`.
    pub fn vchan(&self, domid: u16) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vchan"));
        c.env_remove("XENSTORED_PATH");
        for (k, v) in self.host.env(DomId(domid)) {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

pub fn path(port: u32) -> String {
    format!("/local/domain/0/data/vchan/1/{port}")
}

pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn wait_output(child: Child, limit: Duration) -> Output {
    let id = child.id();
    let killer = thread::spawn(move || {
        thread::sleep(limit);
        // Still running after the limit: kill it so the test fails instead of hanging.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(id as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let out = child.wait_with_output().unwrap();
    drop(killer);
    out
}

/// Waits for two children at once (each one's output is drained while the other runs, so a
/// full pipe can never stall them).
pub fn wait_both(a: Child, b: Child, limit: Duration) -> (Output, Output) {
    let ta = thread::spawn(move || wait_output(a, limit));
    let ob = wait_output(b, limit);
    (ta.join().unwrap(), ob)
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn result_fields(out: &Output) -> std::collections::HashMap<String, String> {
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s
        .lines()
        .rev()
        .find(|l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("no result line in {s:?}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `vchan pump` on both sides; returns (server, client) outputs.
pub fn pump(h: &Host, port: u32, extra_server: &[&str], extra_client: &[&str]) -> (Output, Output) {
    let p = path(port);
    let server = h
        .vchan(0)
        .args(["pump", "server", "1", &p])
        .args(extra_server)
        .spawn()
        .unwrap();
    let client = h
        .vchan(1)
        .args(["pump", "client", "0", &p, "--wait", "30"])
        .args(extra_client)
        .spawn()
        .unwrap();
    wait_both(server, client, Duration::from_secs(300))
}
