//! `vchan sim`: run a simulated Xen host (the daemon owning XenStore and, once wired in, the
//! grant/event-channel broker), print the environment that joins it, and create or destroy
//! its domains the way Xen's toolstack does (XenStore `INTRODUCE` / `RELEASE` from dom0).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::{SimHost, default_dir, join_env};
use vchan_xenif::xenstore::Client;

/// Arguments of `vchan sim`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run a simulated Xen host, or manage a running one",
    long_about = "Without a subcommand, runs a simulated Xen host in the foreground until \
                  Ctrl-C. Each OS process then acts as one domain of it: \
                  `eval \"$(vchan sim env N)\"` sets up a shell as domain N."
)]
pub struct Args {
    /// Host directory [default: $VCHAN_SIM_DIR, else $XDG_RUNTIME_DIR/vchan-sim, else
    /// /tmp/vchan-sim-UID]
    #[arg(long, global = true)]
    dir: Option<PathBuf>,

    /// Domains to create at start, besides dom0 (e.g. --domains 1,2)
    #[arg(long, value_delimiter = ',')]
    domains: Vec<DomId>,

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
        None => serve(&dir, &args.domains),
        Some(Action::Env { domid }) => env(&dir, domid),
        Some(Action::Create { domid, name }) => create(&dir, domid, name.as_deref()),
        Some(Action::Destroy { domid }) => destroy(&dir, domid),
        Some(Action::List) => list(&dir),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vchan sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(dir: &Path, domains: &[DomId]) -> Result<()> {
    // Block the stop signals before any thread exists, so every thread inherits the mask
    // and the main thread alone receives them through sigwait.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;
    let host = SimHost::builder(dir)
        .broker(BrokerConfig::default())
        .domains(domains.iter().copied())
        .start()?;
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

/// The `export` lines for domain `domid`.
fn env_lines(dir: &Path, domid: DomId) -> String {
    join_env(dir, domid)
        .into_iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(&v)))
        .collect()
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
    print!("{}", env_lines(dir, domid));
    Ok(())
}

fn dom0(dir: &Path) -> Result<Client> {
    Client::connect_sim(dir, DomId::DOM0).with_context(|| {
        format!(
            "no simulated host answers in {}: start one with `vchan sim --dir {}`",
            dir.display(),
            dir.display()
        )
    })
}

fn create(dir: &Path, domid: DomId, name: Option<&str>) -> Result<()> {
    if domid == DomId::DOM0 {
        bail!("dom0 always exists");
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
        let out = env_lines(Path::new("/tmp/my sim"), DomId(3));
        assert_eq!(
            out,
            "export VCHAN_SIM_DIR='/tmp/my sim'\nexport VCHAN_SIM_DOMID=3\n\
             export XENSTORED_PATH='/tmp/my sim/dom3/xenstored.sock'\n"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
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
