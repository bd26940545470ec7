//! The simulated Xen host: the one daemon that owns all bookkeeping of a simulated machine
//! rooted at a directory — XenStore (the simulated xenstored) and, through [`DomainHooks`],
//! the grant/event-channel broker.
//!
//! It runs embedded ([`SimHost::start`]: threads in the calling process, stopped on drop; for
//! tests and demos) or as a daemon (`vchan sim`). Domains are created and destroyed the way
//! Xen's toolstack does it, with XenStore `INTRODUCE` / `RELEASE` from dom0 — from any
//! client, the `vchan sim create`/`destroy` commands, or [`SimHost::create_domain`] /
//! [`SimHost::destroy_domain`]:
//!
//! * creation makes `<dir>/dom<N>/`, binds `<dir>/dom<N>/xenstored.sock`, calls every hook's
//!   [`DomainHooks::domain_created`] (the broker binds `<dir>/dom<N>/host.sock` there), writes
//!   `/local/domain/<N>/{domid,name}` (perms `n0 r<N>`) and `/local/domain/<N>/data` (owned
//!   by N) and fires `@introduceDomain`;
//! * release closes the domain's connections, removes its nodes, calls
//!   [`DomainHooks::domain_released`], removes `<dir>/dom<N>/` with everything in it, and
//!   fires `@releaseDomain`.
//!
//! Dom0 always exists. One host per directory: the host holds an `flock` on
//! `<dir>/host.lock`, so a second one is refused; sockets a crashed host left behind are
//! removed at start.
//!
//! ```
//! use vchan_xenif::sim::host::SimHost;
//! use vchan_xenif::DomId;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("vchan-doc-{}", std::process::id()));
//! let host = SimHost::builder(&dir).domain(DomId(1), "guest").start()?;
//! let dom0 = host.client(DomId::DOM0)?;
//! assert_eq!(dom0.read_string("/local/domain/1/name")?, "guest");
//! let guest = host.client(DomId(1))?;
//! assert_eq!(guest.own_domid()?, DomId(1));
//! drop(host); // stops the threads, removes the sockets
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};

use super::broker::{Broker, BrokerConfig, BrokerStats};
use super::xenstored::{Quotas, Xenstored};
use crate::error::{Error, Result};
use crate::types::DomId;
use crate::xenstore;

/// What the simulated host calls when domains come and go: the extension point for the
/// grant/event-channel broker (or anything else that needs per-domain set-up).
///
/// Both methods are called with the host's XenStore locked, so they must not talk to
/// XenStore synchronously; they should be quick (bind a socket, start a thread).
/// `domain_created` is called for dom0 at start and for every introduced domain, before its
/// XenStore nodes are written; `domain_released` is called once for each created domain, at
/// release or when the host stops, in reverse order of hooks.
pub trait DomainHooks: Send + Sync {
    /// Domain `domid` is being created; `dir` is `<host dir>/dom<domid>`, which exists.
    /// An error makes the creation fail (XenStore answers `EIO` to the `INTRODUCE`).
    fn domain_created(&self, domid: DomId, dir: &Path) -> io::Result<()>;

    /// Domain `domid` is gone: tear down everything set up for it.
    fn domain_released(&self, domid: DomId);
}

/// The default host directory: `$XDG_RUNTIME_DIR/vchan-sim`, else `/tmp/vchan-sim-<uid>`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("vchan-sim"),
        _ => PathBuf::from(format!("/tmp/vchan-sim-{}", nix::unistd::getuid())),
    }
}

/// The environment a process needs to act as `domid` of the host at `dir`:
/// `VCHAN_SIM_DIR`, `VCHAN_SIM_DOMID` and `XENSTORED_PATH` (for C programs).
pub fn join_env(dir: &Path, domid: DomId) -> Vec<(&'static str, String)> {
    vec![
        (super::ENV_DIR, dir.display().to_string()),
        (super::ENV_DOMID, domid.to_string()),
        (
            xenstore::ENV_XENSTORED_PATH,
            super::xenstore_socket(dir, domid).display().to_string(),
        ),
    ]
}

/// Builds a [`SimHost`].
#[derive(Clone)]
pub struct SimHostBuilder {
    dir: PathBuf,
    domains: Vec<(DomId, Option<String>)>,
    hooks: Vec<Arc<dyn DomainHooks>>,
    broker: Option<BrokerConfig>,
    quotas: Quotas,
}

impl std::fmt::Debug for SimHostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHostBuilder")
            .field("dir", &self.dir)
            .field("domains", &self.domains)
            .field("hooks", &self.hooks.len())
            .field("broker", &self.broker)
            .field("quotas", &self.quotas)
            .finish()
    }
}

impl SimHostBuilder {
    /// Also creates domain `domid` named `name` at start.
    pub fn domain(mut self, domid: DomId, name: &str) -> Self {
        self.domains.push((domid, Some(name.to_owned())));
        self
    }

    /// Also creates these domains (named `dom<N>`) at start.
    pub fn domains(mut self, ids: impl IntoIterator<Item = DomId>) -> Self {
        self.domains.extend(ids.into_iter().map(|d| (d, None)));
        self
    }

    /// Adds a hook told of every domain's creation and release (the broker).
    pub fn hooks(mut self, hooks: Arc<dyn DomainHooks>) -> Self {
        self.hooks.push(hooks);
        self
    }

    /// Also runs the grant/event-channel broker ([`Broker`]) with `config`, as the first
    /// hook: then the host serves grants and event channels as well (`<dir>/dom<N>/host.sock`).
    /// The broker starts once the directory's lock is held.
    pub fn broker(mut self, config: BrokerConfig) -> Self {
        self.broker = Some(config);
        self
    }

    /// Sets XenStore quotas (default: Xen 4.17's).
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Starts the host: takes the directory's lock, cleans what a dead host left, binds
    /// dom0's socket and creates the requested domains.
    pub fn start(self) -> Result<SimHost> {
        let dir = self.dir;
        let sim_err = |reason: String| Error::Sim {
            dir: dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::os(format!("create {}", dir.display()), e))?;
        let lock_path = super::lock_file(&dir);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::os(format!("open {}", lock_path.display()), e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, errno)) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(sim_err(if errno == nix::errno::Errno::EWOULDBLOCK {
                    format!(
                        "another simulated host is already running on this directory{}; \
                         stop it first or choose another directory with --dir",
                        if pid.is_empty() {
                            String::new()
                        } else {
                            format!(" (pid {pid})")
                        }
                    )
                } else {
                    format!("cannot lock {}: {errno}", lock_path.display())
                }));
            }
        };
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(lock, "{}", std::process::id());
        clean_stale(&dir);
        let mut hooks = self.hooks;
        let mut broker = None;
        if let Some(config) = self.broker {
            let b =
                Arc::new(Broker::with_config(&dir, config).map_err(|e| {
                    sim_err(format!("starting the grant/event-channel broker: {e}"))
                })?);
            hooks.insert(0, b.clone());
            broker = Some(b);
        }
        let xenstored = Xenstored::start(&dir, self.quotas, hooks)
            .map_err(|reason| sim_err(format!("starting xenstored: {reason}")))?;
        let host = SimHost {
            dir,
            xenstored,
            broker,
            _lock: lock,
        };
        for (domid, name) in self.domains {
            host.create_domain(domid, name.as_deref())?;
        }
        Ok(host)
    }
}

/// Removes `dom<N>/` directories (and their sockets) left by a host that did not stop
/// cleanly. Only called while holding the lock, so nobody else owns them.
fn clean_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_dom = name
            .strip_prefix("dom")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_dom && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A running simulated Xen host (see the [module docs](self)). Dropping it stops it.
pub struct SimHost {
    dir: PathBuf,
    xenstored: Xenstored,
    /// The broker, when the host runs one (it is also the first hook).
    broker: Option<Arc<Broker>>,
    _lock: Flock<File>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("dir", &self.dir).finish()
    }
}

impl SimHost {
    /// A builder for a host rooted at `dir` (created if missing).
    pub fn builder(dir: impl Into<PathBuf>) -> SimHostBuilder {
        SimHostBuilder {
            dir: dir.into(),
            domains: Vec::new(),
            hooks: Vec::new(),
            broker: None,
            quotas: Quotas::default(),
        }
    }

    /// Starts a host rooted at `dir` with only dom0 (XenStore only; see
    /// [`SimHostBuilder::broker`] for grants and event channels).
    pub fn start(dir: impl Into<PathBuf>) -> Result<SimHost> {
        Self::builder(dir).start()
    }

    /// The host's directory (`VCHAN_SIM_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The XenStore socket of `domid`.
    pub fn xenstore_socket(&self, domid: DomId) -> PathBuf {
        super::xenstore_socket(&self.dir, domid)
    }

    /// The environment a process needs to act as `domid` (see [`join_env`]).
    pub fn env(&self, domid: DomId) -> Vec<(&'static str, String)> {
        join_env(&self.dir, domid)
    }

    /// Creates domain `domid` (as dom0's `INTRODUCE` does), named `name` (default `dom<N>`).
    pub fn create_domain(&self, domid: DomId, name: Option<&str>) -> Result<()> {
        self.xenstored
            .introduce(domid, name)
            .map_err(|code| Error::Sim {
                dir: self.dir.clone(),
                reason: format!(
                    "cannot create domain {domid}: {code} ({})",
                    code.description()
                ),
            })
    }

    /// Destroys domain `domid` (as dom0's `RELEASE` does).
    pub fn destroy_domain(&self, domid: DomId) -> Result<()> {
        self.xenstored.release(domid).map_err(|code| Error::Sim {
            dir: self.dir.clone(),
            reason: format!(
                "cannot destroy domain {domid}: {code} ({})",
                code.description()
            ),
        })
    }

    /// The domains that exist, dom0 first.
    pub fn domains(&self) -> Vec<DomId> {
        self.xenstored.domains()
    }

    /// Open XenStore connections (all domains).
    pub fn connection_count(&self) -> usize {
        self.xenstored.connection_count()
    }

    /// What the grant/event-channel broker holds right now (grants, mappings, ports,
    /// connections), or `None` if the host runs without one ([`SimHostBuilder::broker`]).
    /// For status displays and leak checks.
    pub fn broker_stats(&self) -> Option<BrokerStats> {
        self.broker.as_ref().map(|b| b.stats())
    }

    /// A XenStore client acting as `domid`.
    pub fn client(&self, domid: DomId) -> xenstore::Result<xenstore::Client> {
        xenstore::Client::connect_sim(&self.dir, domid)
    }

    /// Stops the host (also done on drop).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        // The lock file stays (others may hold it open); the lock goes with the descriptor.
        self.xenstored.stop();
    }
}
