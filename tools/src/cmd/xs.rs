//! `vchan xs`: a XenStore command line on top of `vchan_xenif::xenstore::Client`, talking to
//! real xenstored or the simulated host (same connection rules as the library:
//! `XENSTORED_PATH`, then `VCHAN_SIM_DIR`/`VCHAN_SIM_DOMID`, then the dom0 socket, then
//! `/dev/xen/xenbus`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use vchan_xenif::DomId;
use vchan_xenif::xenstore::{Client, Perm};

use crate::util::{SetupFailed, report};

/// Arguments of `vchan xs`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Read, write and watch XenStore (real Xen or the simulated host)",
    after_help = "Examples (on the simulated host, in a shell joined with \
                  `eval \"$(vchan sim env 1)\"`):\n  \
                  $ vchan xs write data/greeting hello   # relative: /local/domain/1/data/…\n  \
                  $ vchan xs read data/greeting\n  \
                  $ vchan xs chmod data/greeting n1 r0\n  \
                  $ vchan xs watch @releaseDomain --count 2\n\n\
                  Exit codes: 0 done, 1 the operation failed (ENOENT, EACCES…), 2 bad usage, \
                  3 no XenStore to talk to."
)]
pub struct Args {
    /// Request timeout in seconds (0: wait forever)
    #[arg(long, default_value_t = 30)]
    timeout: u64,

    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, clap::Subcommand)]
enum Op {
    /// Print a node's value
    Read {
        /// Node path (relative paths are under /local/domain/OWN_ID)
        path: String,
    },
    /// Write a node's value (creating it and its parents)
    Write {
        /// Node path
        path: String,
        /// The value
        value: String,
    },
    /// Create a node with an empty value
    Mkdir {
        /// Node path
        path: String,
    },
    /// Remove a node and everything below it
    Rm {
        /// Node path
        path: String,
    },
    /// List a node's children
    Ls {
        /// Node path
        path: String,
    },
    /// Print a subtree with values and permissions
    Tree {
        /// Node path
        #[arg(default_value = "/")]
        path: String,
    },
    /// Print a node's permissions (owner first)
    Perms {
        /// Node path
        path: String,
    },
    /// Replace a node's permissions, owner first (e.g. `n0 r5`)
    Chmod {
        /// Node path
        path: String,
        /// Permissions: n, r, w or b followed by a domain id
        #[arg(required = true)]
        perms: Vec<Perm>,
    },
    /// Print events of a watch (path, or @introduceDomain / @releaseDomain)
    Watch {
        /// Watched path
        path: String,
        /// Token
        #[arg(long, default_value = "vchan-xs")]
        token: String,
        /// Stop after this many events (the first fires at registration)
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print this domain's id (with the fallbacks of Client::own_domid)
    Domid,
    /// Print a domain's home path
    DomainPath {
        /// The domain
        domid: DomId,
    },
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match exec(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("xs", &e),
    }
}

fn exec(args: Args) -> Result<()> {
    let xs = Client::connect().context(SetupFailed("cannot connect to XenStore".into()))?;
    xs.set_timeout((args.timeout > 0).then(|| Duration::from_secs(args.timeout)));
    exec_on(&xs, args.op)
}

fn exec_on(xs: &Client, op: Op) -> Result<()> {
    match op {
        Op::Read { path } => {
            let v = xs.read(&path)?;
            println!("{}", String::from_utf8_lossy(&v));
        }
        Op::Write { path, value } => xs.write(&path, value)?,
        Op::Mkdir { path } => xs.mkdir(&path)?,
        Op::Rm { path } => xs.rm(&path)?,
        Op::Ls { path } => {
            for name in xs.directory(&path)? {
                println!("{name}");
            }
        }
        Op::Tree { path } => tree(xs, &path, 0)?,
        Op::Perms { path } => println!("{}", perms_line(&xs.get_perms(&path)?)),
        Op::Chmod { path, perms } => xs.set_perms(&path, &perms)?,
        Op::Watch { path, token, count } => {
            let w = xs.watch(&path, &token)?;
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let ev = w.next_event().context("waiting for watch events")?;
                println!("{} {}", ev.path, ev.token);
                seen += 1;
            }
        }
        Op::Domid => println!("{}", xs.own_domid()?),
        Op::DomainPath { domid } => println!("{}", xs.get_domain_path(domid)?),
    }
    Ok(())
}

fn perms_line(perms: &[Perm]) -> String {
    perms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn tree(xs: &Client, path: &str, depth: usize) -> Result<()> {
    let value = xs.read(path).unwrap_or_default();
    let perms = xs
        .get_perms(path)
        .map(|p| perms_line(&p))
        .unwrap_or_default();
    let name = if depth == 0 {
        path
    } else {
        path.rsplit('/').next().unwrap_or(path)
    };
    println!(
        "{:indent$}{name} = {:?}  ({perms})",
        "",
        String::from_utf8_lossy(&value),
        indent = depth * 2
    );
    for child in xs.directory(path)? {
        let p = if path == "/" {
            format!("/{child}")
        } else {
            format!("{path}/{child}")
        };
        tree(xs, &p, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vchan_xenif::sim::host::SimHost;

    #[test]
    fn operations_against_the_simulated_host() {
        let dir = std::env::temp_dir().join(format!("vchan-xs-cli-{}", std::process::id()));
        let host = SimHost::builder(&dir).domains([DomId(3)]).start().unwrap();
        let xs = host.client(DomId(3)).unwrap();
        let path = || "data/k".to_string();
        exec_on(
            &xs,
            Op::Write {
                path: path(),
                value: "v".into(),
            },
        )
        .unwrap();
        exec_on(&xs, Op::Read { path: path() }).unwrap();
        exec_on(
            &xs,
            Op::Chmod {
                path: path(),
                perms: vec!["n3".parse().unwrap(), "r0".parse().unwrap()],
            },
        )
        .unwrap();
        exec_on(&xs, Op::Perms { path: path() }).unwrap();
        exec_on(
            &xs,
            Op::Tree {
                path: "/local/domain/3".into(),
            },
        )
        .unwrap();
        exec_on(
            &xs,
            Op::Watch {
                path: "data".into(),
                token: "t".into(),
                count: Some(1),
            },
        )
        .unwrap();
        exec_on(&xs, Op::Domid).unwrap();
        exec_on(&xs, Op::Rm { path: path() }).unwrap();
        let err = exec_on(&xs, Op::Read { path: path() }).unwrap_err();
        assert!(format!("{err:#}").contains("ENOENT"), "{err:#}");
        let err = exec_on(
            &xs,
            Op::Read {
                path: "/local/domain/0/name".into(),
            },
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("EACCES"), "{err:#}");
        drop(host);
        std::fs::remove_dir_all(&dir).ok();
    }
}
