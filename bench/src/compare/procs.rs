//! Child processes of the harness and the pairs they form.
//!
//! A [`Member`] is one child that speaks the worker protocol (see [`super::worker`]); a
//! [`Pair`] is the members (and silent helpers, such as proxies) that together make one
//! measured implementation. The orchestrator only writes commands and blocks reading
//! answers; every read has a deadline, so a stuck child fails the run instead of hanging it.
//! Children are killed (by their own pid) when dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long a child may take to answer a command.
pub(crate) const ANSWER_DEADLINE: Duration = Duration::from_secs(120);

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (clock-tick
/// resolution: 10 ms on a usual kernel).
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    (ticks(11) + ticks(12)) * 1_000_000_000 / hz
}

/// A child that speaks the worker protocol.
pub(crate) struct Member {
    pub(crate) name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Member {
    /// Starts `cmd` with piped stdin/stdout (stderr inherited).
    pub(crate) fn spawn(name: impl Into<String>, mut cmd: Command) -> Result<Member> {
        let name = name.into();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Member {
            name,
            child,
            stdin,
            lines,
        })
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one command line.
    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} is gone (writing {line:?})", self.name))
    }

    /// The next line, which must start with `word`; returns the rest.
    pub(crate) fn expect(&mut self, word: &str, within: Duration) -> Result<String> {
        match self.lines.recv_timeout(within) {
            Ok(line) => {
                let (w, rest) = line.split_once(' ').unwrap_or((&line, ""));
                if w != word {
                    bail!("{} said {line:?} instead of {word}", self.name);
                }
                Ok(rest.to_owned())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{} did not say {word} within {within:?}", self.name)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                bail!(
                    "{} ended ({}) before saying {word}",
                    self.name,
                    status.map_or("?".into(), |s| s.to_string())
                )
            }
        }
    }

    /// Tells the child to stop, waits a little, then kills it.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child that does not speak the protocol (a proxy): killed by its pid when dropped.
pub(crate) struct Helper {
    pub(crate) name: String,
    pub(crate) child: Child,
    log: PathBuf,
}

impl Helper {
    /// Starts `cmd` with stdin and stdout closed and stderr going to `log` (a proxy's
    /// complaints when its peer goes away at the end are not the harness's output).
    pub(crate) fn spawn(name: impl Into<String>, mut cmd: Command, log: &Path) -> Result<Helper> {
        let name = name.into();
        let err =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Helper {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// Fails if the helper has exited (with the end of what it said).
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => {
                let said = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = said.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(anyhow!(
                    "{} exited ({status}): {}",
                    self.name,
                    tail.join(" / ")
                ))
            }
            None => Ok(()),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one command to a pair measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trial {
    /// The reporter's wall time for the command.
    pub(crate) wall_ns: u64,
    /// CPU time all processes of the pair used during the command.
    pub(crate) cpu_ns: u64,
    /// Per-round-trip times (latency pairs).
    pub(crate) samples: Vec<f64>,
}

/// The processes that make one measured implementation.
pub(crate) struct Pair {
    /// The members; `members[reporter]` times the work.
    pub(crate) members: Vec<Member>,
    /// Index of the member whose `done` time is the measurement.
    pub(crate) reporter: usize,
    /// Processes outside the protocol that carry the data (proxies).
    pub(crate) helpers: Vec<Helper>,
}

impl Pair {
    /// A pair of members; the second one reports.
    pub(crate) fn new(members: Vec<Member>, reporter: usize) -> Pair {
        Pair {
            members,
            reporter,
            helpers: Vec::new(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .map(Member::pid)
            .chain(self.helpers.iter().map(|h| h.child.id()))
            .collect()
    }

    /// Sends `cmd MSG COUNT` to every member and collects the answers. For throughput the
    /// reporter (the receiver) gets the command first, so its clock starts before any data
    /// can move; for latency (`samples`) the echo side gets it first, so that the first
    /// round trip does not include the echo's start.
    pub(crate) fn command(
        &mut self,
        cmd: &str,
        msg: usize,
        count: u64,
        latency: bool,
    ) -> Result<Trial> {
        for h in &mut self.helpers {
            h.check_alive()?;
        }
        let pids = self.pids();
        let cpu0: u64 = pids.iter().map(|&p| cpu_ns(p)).sum();
        let line = format!("{cmd} {msg} {count}");
        let n = self.members.len();
        let mut order: Vec<usize> = (0..n).filter(|&i| i != self.reporter).collect();
        if latency {
            order.push(self.reporter);
        } else {
            order.insert(0, self.reporter);
        }
        for &i in &order {
            self.members[i].send(&line)?;
        }
        let mut trial = Trial::default();
        for i in 0..n {
            let m = &mut self.members[i];
            if i == self.reporter && latency {
                let s = m.expect("samples", ANSWER_DEADLINE)?;
                trial.samples = s
                    .split_whitespace()
                    .filter_map(|v| v.parse::<f64>().ok())
                    .collect();
            }
            let done = m.expect("done", ANSWER_DEADLINE)?;
            if i == self.reporter {
                trial.wall_ns = done
                    .trim()
                    .parse()
                    .with_context(|| format!("{}: bad done line {done:?}", m.name))?;
            }
        }
        let cpu1: u64 = pids.iter().map(|&p| cpu_ns(p)).sum();
        trial.cpu_ns = cpu1.saturating_sub(cpu0);
        Ok(trial)
    }

    /// `run MSG COUNT`.
    pub(crate) fn run(&mut self, msg: usize, count: u64, latency: bool) -> Result<Trial> {
        self.command("run", msg, count, latency)
    }
}

/// Waits for every member in `members` to say `ready`, in order.
pub(crate) fn expect_ready(m: &mut Member) -> Result<()> {
    m.expect("ready", Duration::from_secs(60)).map(|_| ())
}
