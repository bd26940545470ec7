//! `vchan sim`: run a simulated Xen host (the daemon owning XenStore and the grant/event-channel
//! broker), print the environment that joins it, and create or destroy its domains the way
//! Xen's toolstack does (XenStore `INTRODUCE` / `RELEASE` from dom0).
//!
//! `vchan sim env N` prints `export` lines for `VCHAN_SIM_DIR`, `VCHAN_SIM_DOMID`,
//! `XENSTORED_PATH` and, when the drop-in C libraries can be found, `LD_LIBRARY_PATH` (see
//! [`sim_libs_dir`]); without them it prints a comment saying how to build them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::{SimHost, default_dir, join_env};
use vchan_xenif::xenstore::Client;

use crate::util::{SetupFailed, UsageError, report};

/// Environment variable naming the directory of the drop-in C libraries
/// (`libxengnttab.so.1`, `libxenevtchn.so.1`, … as built by `tools/sim-libs.sh`).
pub const ENV_SIM_LIBS: &str = "VCHAN_SIM_LIBS";

/// The drop-ins a directory must hold to be put in `LD_LIBRARY_PATH`.
const SIM_LIBS: [&str; 2] = ["libxengnttab.so.1", "libxenevtchn.so.1"];

/// Arguments of `vchan sim`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run a simulated Xen host, or manage a running one",
    long_about = "Without a subcommand, runs a simulated Xen host in the foreground until \
                  Ctrl-C. Each OS process then acts as one domain of it: \
                  `eval \"$(vchan sim env N)\"` sets up a shell as domain N.",
    after_help = "Example:\n  \
                  $ vchan sim --domains 1 &\n  \
                  $ eval \"$(vchan sim env 1)\"      # this shell is now domain 1\n  \
                  $ vchan xs domid                  # prints 1\n  \
                  $ vchan sim create 2 --name guest2\n  \
                  $ vchan sim destroy 2\n\n\
                  `env` also prints LD_LIBRARY_PATH for the drop-in C libraries (unmodified C \
                  Xen programs then run on the simulated host) when it finds them: in \
                  $VCHAN_SIM_LIBS, else in the sim-libs directory of the cargo target directory \
                  holding this binary (built by tools/sim-libs.sh); otherwise it prints a \
                  comment saying how to build them.\n\n\
                  Exit codes: 0 done, 1 the operation failed (e.g. the domain exists), 2 bad \
                  usage, 3 no simulated host (or it cannot start)."
)]
pub struct Args {
    /// Host directory [default: $VCHAN_SIM_DIR, else $XDG_RUNTIME_DIR/vchan-sim, else
    /// /tmp/vchan-sim-UID]
    #[arg(long, global = true)]
    dir: Option<PathBuf>,

    /// Domains to create at start, besides dom0 (e.g. --domains 1,2)
    #[arg(long, value_delimiter = ',')]
    domains: Vec<DomId>,

    /// Destroying a domain does not run the unmap notifications of what its processes held,
    /// as on real Xen (a destroyed domain's kernel never runs them): its peers then learn of
    /// the destruction only through XenStore's @releaseDomain
    #[arg(long)]
    xen_like_release: bool,

    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print the `export` lines that make a shell act as domain N
    Env {
        /// The domain to act as
        domid: DomId,
    },
    /// Create domain N (XenStore INTRODUCE from dom0)
    Create {
        /// The new domain's id
        domid: DomId,
        /// Its name (/local/domain/N/name) [default: domN]
        #[arg(long)]
        name: Option<String>,
    },
    /// Destroy domain N (XenStore RELEASE from dom0)
    Destroy {
        /// The domain to destroy
        domid: DomId,
    },
    /// List the domains of the running host
    List,
}

fn resolve_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os(vchan_xenif::sim::ENV_DIR).map(PathBuf::from))
        .unwrap_or_else(default_dir)
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let dir = resolve_dir(args.dir);
    let r = match args.action {
        None => serve(&dir, &args.domains, args.xen_like_release),
        Some(Action::Env { domid }) => env(&dir, domid),
        Some(Action::Create { domid, name }) => create(&dir, domid, name.as_deref()),
        Some(Action::Destroy { domid }) => destroy(&dir, domid),
        Some(Action::List) => list(&dir),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("sim", &e),
    }
}

fn serve(dir: &Path, domains: &[DomId], xen_like_release: bool) -> Result<()> {
    // Block the stop signals before any thread exists, so every thread inherits the mask
    // and the main thread alone receives them through sigwait.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;
    let host = SimHost::builder(dir)
        .broker(BrokerConfig {
            notify_on_release: !xen_like_release,
            ..BrokerConfig::default()
        })
        .domains(domains.iter().copied())
        .start()
        .with_context(|| {
            SetupFailed(format!(
                "cannot start a simulated host in {}",
                dir.display()
            ))
        })?;
    print!("{}", banner(&host));
    let sig = signals.wait().context("waiting for a signal")?;
    eprintln!("vchan sim: {sig:?}: stopping");
    drop(host);
    Ok(())
}

fn banner(host: &SimHost) -> String {
    let dir = host.dir().display();
    let doms: Vec<String> = host.domains().iter().map(ToString::to_string).collect();
    let dir_arg = shell_quote(&dir.to_string());
    format!(
        "vchan sim: simulated Xen host running in {dir} (pid {pid}); domains: {doms}\n\
         \n\
         Act as domain N in another shell (N must exist):\n\
         \x20   eval \"$(vchan sim --dir {dir_arg} env N)\"\n\
         Create or destroy domains:\n\
         \x20   vchan sim --dir {dir_arg} create N [--name NAME]\n\
         \x20   vchan sim --dir {dir_arg} destroy N\n\
         C programs use XENSTORED_PATH={dom0} (dom0) or {dir}/dom<N>/xenstored.sock.\n\
         Stop with Ctrl-C.\n",
        pid = std::process::id(),
        doms = doms.join(", "),
        dom0 = host.xenstore_socket(DomId::DOM0).display(),
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether `dir` holds the drop-in C libraries.
fn has_sim_libs(dir: &Path) -> bool {
    SIM_LIBS.iter().all(|lib| dir.join(lib).is_file())
}

/// Where the drop-in C libraries are: `$VCHAN_SIM_LIBS` if it is set and not empty (and
/// then only there: a directory the user chose is not second-guessed), else
/// `<target>/sim-libs` where `<target>` is the cargo target directory holding this binary
/// (`<target>/<profile>/vchan`), which is where `tools/sim-libs.sh` puts them. `None` when
/// the directory looked at lacks `libxengnttab.so.1` or `libxenevtchn.so.1`.
pub fn sim_libs_dir(env_value: Option<&std::ffi::OsStr>, exe: Option<&Path>) -> Option<PathBuf> {
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(v);
        return has_sim_libs(&dir).then_some(dir);
    }
    let target = exe?.parent()?.parent()?;
    let dir = target.join("sim-libs");
    has_sim_libs(&dir).then_some(dir)
}

/// The `export` lines for domain `domid`; with `libs`, `LD_LIBRARY_PATH` puts that
/// directory first (keeping what the shell had), else a comment says how to get it.
fn env_lines(dir: &Path, domid: DomId, libs: Option<&Path>) -> String {
    let mut out: String = join_env(dir, domid)
        .into_iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(&v)))
        .collect();
    match libs {
        Some(libs) => out.push_str(&format!(
            "export LD_LIBRARY_PATH={}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"\n",
            shell_quote(&libs.display().to_string())
        )),
        None => out.push_str(&format!(
            "# LD_LIBRARY_PATH not set: the drop-in C libraries ({}) were not found. Build them \
             with tools/sim-libs.sh (or set {ENV_SIM_LIBS} to their directory) to run unmodified \
             C Xen programs on the simulated host.\n",
            SIM_LIBS.join(", ")
        )),
    }
    out
}

fn env(dir: &Path, domid: DomId) -> Result<()> {
    let sock = vchan_xenif::sim::xenstore_socket(dir, domid);
    if !sock.exists() {
        eprintln!(
            "vchan sim: warning: {} does not exist: start the host with `vchan sim --dir {}` \
             and create the domain with `vchan sim --dir {} create {domid}`",
            sock.display(),
            dir.display(),
            dir.display()
        );
    }
    let exe = std::env::current_exe().ok();
    let libs = sim_libs_dir(std::env::var_os(ENV_SIM_LIBS).as_deref(), exe.as_deref());
    print!("{}", env_lines(dir, domid, libs.as_deref()));
    Ok(())
}

fn dom0(dir: &Path) -> Result<Client> {
    Client::connect_sim(dir, DomId::DOM0).with_context(|| {
        SetupFailed(format!(
            "no simulated host answers in {}: start one with `vchan sim --dir {}`",
            dir.display(),
            dir.display()
        ))
    })
}

fn create(dir: &Path, domid: DomId, name: Option<&str>) -> Result<()> {
    if domid == DomId::DOM0 {
        return Err(UsageError("dom0 always exists: create domains 1 and up".into()).into());
    }
    let xs = dom0(dir)?;
    xs.introduce(domid, 0, 0)
        .with_context(|| format!("creating domain {domid}"))?;
    if let Some(name) = name {
        xs.write(&format!("/local/domain/{domid}/name"), name)?;
    }
    println!(
        "domain {domid} created; join it with: eval \"$(vchan sim --dir {} env {domid})\"",
        shell_quote(&dir.display().to_string())
    );
    Ok(())
}

fn destroy(dir: &Path, domid: DomId) -> Result<()> {
    if domid == DomId::DOM0 {
        return Err(UsageError("dom0 cannot be destroyed: stop the host instead".into()).into());
    }
    let xs = dom0(dir)?;
    xs.release(domid)
        .with_context(|| format!("destroying domain {domid}"))?;
    println!("domain {domid} destroyed");
    Ok(())
}

fn list(dir: &Path) -> Result<()> {
    let xs = dom0(dir)?;
    let mut ids: Vec<DomId> = xs
        .directory("/local/domain")?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    ids.sort();
    for d in ids {
        let name = xs
            .read_string(&format!("/local/domain/{d}/name"))
            .unwrap_or_default();
        println!("{d}\t{name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_shell_safe() {
        let base = "export VCHAN_SIM_DIR='/tmp/my sim'\nexport VCHAN_SIM_DOMID=3\n\
                    export XENSTORED_PATH='/tmp/my sim/dom3/xenstored.sock'\n";
        let out = env_lines(Path::new("/tmp/my sim"), DomId(3), None);
        assert!(out.starts_with(base), "{out}");
        let hint = &out[base.len()..];
        assert!(
            hint.starts_with("# ") && hint.contains("tools/sim-libs.sh"),
            "{hint}"
        );
        assert_eq!(hint.lines().count(), 1, "{hint}");
        let out = env_lines(
            Path::new("/tmp/my sim"),
            DomId(3),
            Some(Path::new("/l i b")),
        );
        assert_eq!(
            &out[base.len()..],
            "export LD_LIBRARY_PATH='/l i b'\"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\"\n"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn sim_libs_are_found_where_documented() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        let exe = target.join("release").join("vchan");
        let libs = target.join("sim-libs");
        std::fs::create_dir_all(&libs).unwrap();
        // Not there yet, or only one of the two.
        assert_eq!(sim_libs_dir(None, Some(&exe)), None);
        std::fs::write(libs.join("libxengnttab.so.1"), "").unwrap();
        assert_eq!(sim_libs_dir(None, Some(&exe)), None);
        std::fs::write(libs.join("libxenevtchn.so.1"), "").unwrap();
        assert_eq!(sim_libs_dir(None, Some(&exe)), Some(libs.clone()));
        // The variable wins, and only when it holds them; empty means unset.
        let other = root.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(sim_libs_dir(Some(other.as_os_str()), Some(&exe)), None);
        for lib in SIM_LIBS {
            std::fs::write(other.join(lib), "").unwrap();
        }
        assert_eq!(
            sim_libs_dir(Some(other.as_os_str()), Some(&exe)),
            Some(other.clone())
        );
        assert_eq!(
            sim_libs_dir(Some(std::ffi::OsStr::new("")), Some(&exe)),
            Some(libs)
        );
        assert_eq!(sim_libs_dir(None, None), None);
    }

    #[test]
    fn create_list_destroy_through_the_cli_functions() {
        let dir = std::env::temp_dir().join(format!("vchan-sim-cli-{}", std::process::id()));
        let host = SimHost::builder(&dir)
            .broker(BrokerConfig::default())
            .start()
            .unwrap();
        create(&dir, DomId(4), Some("four")).unwrap();
        assert!(vchan_xenif::sim::host_socket(&dir, DomId(4)).exists());
        let xs = host.client(DomId::DOM0).unwrap();
        assert_eq!(xs.read_string("/local/domain/4/name").unwrap(), "four");
        assert!(banner(&host).contains("0, 4"));
        assert!(create(&dir, DomId(4), None).is_err());
        destroy(&dir, DomId(4)).unwrap();
        assert!(!xs.exists("/local/domain/4").unwrap());
        assert!(!vchan_xenif::sim::xenstore_socket(&dir, DomId(4)).exists());
        drop(host);
        let err = create(&dir, DomId(5), None).unwrap_err();
        assert!(format!("{err:#}").contains("start one with"), "{err:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
