//! Opening a channel from command-line arguments: shared by node, cat, pump and proxy.

use std::time::Duration;

use anyhow::{Context, Result};
use vchan_msg::{Client, Server, SpinPolicy, Vchan};
use vchan_xenif::DomId;

use crate::util::{SetupFailed, parse_secs, parse_size};

/// Which end of the channel this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Share the rings and advertise them in XenStore (usually dom0)
    Server,
    /// Map a server's rings
    Client,
}

/// Channel options shared by the subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ChanOpts {
    /// Server: minimum size of the ring the server reads (rounded up to a power of two as
    /// libxenvchan does; 0 = C's default in-page ring; at most 1M)
    #[arg(long, value_parser = parse_size, default_value = "0", value_name = "SIZE")]
    pub read_min: usize,

    /// Server: minimum size of the ring the server writes (at most 1M)
    #[arg(long, value_parser = parse_size, default_value = "0", value_name = "SIZE")]
    pub write_min: usize,

    /// Client: if no live server is advertised at the path yet (none started, or the
    /// entries of one that was killed), wait this many seconds for one instead of failing at
    /// once
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub wait: Option<f64>,

    /// Spin this many microseconds before sleeping on the event channel (0: never spin)
    #[arg(long, value_name = "MICROS", default_value_t = 50)]
    pub spin_us: u64,

    /// Server: persistent mode (C `server_persist`): stay open when the client leaves
    #[arg(long)]
    pub persistent: bool,
}

impl ChanOpts {
    fn spin(&self) -> SpinPolicy {
        if self.spin_us == 0 {
            SpinPolicy::OFF
        } else {
            SpinPolicy::adaptive(Duration::from_micros(self.spin_us))
        }
    }

    /// A reusable server for `peer` at `path`.
    pub fn server(&self, peer: DomId, path: &str) -> Server {
        Server::new(peer, path)
            .read_min(self.read_min)
            .write_min(self.write_min)
            .persistent(self.persistent)
            .spin(self.spin())
    }

    /// A client of the server in domain `server` at `path`.
    pub fn client(&self, server: DomId, path: &str) -> Client {
        let mut c = Client::new(server, path).spin(self.spin());
        if let Some(secs) = self.wait {
            // `parse_secs` admits only what a Duration can hold; saturate anything else (a
            // value set by code, e.g. the proxy's "forever").
            let wait = Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX);
            c = c.wait_for_server(wait);
        }
        c
    }

    /// Opens the channel: a server advertises and returns at once (C semantics: the client
    /// may come later), a client connects. Errors are marked [`SetupFailed`] (exit code 3).
    pub fn open(&self, role: RoleArg, domid: DomId, path: &str) -> Result<Vchan> {
        match role {
            RoleArg::Server => self
                .server(domid, path)
                .listen()
                .with_context(|| SetupFailed(format!("cannot serve domain {domid} at {path}"))),
            RoleArg::Client => self.client(domid, path).connect().with_context(|| {
                SetupFailed(format!("cannot connect to domain {domid} at {path}"))
            }),
        }
    }
}
