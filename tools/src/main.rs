//! `vchan`: the command line of the vchan project.
//!
//! Each subcommand lives in its own module under `cmd/` with an `Args` struct (clap) and a
//! `run` function returning the process exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bridge;
mod chan;
mod cmd;
mod pattern;
mod util;

/// vchan: zero-copy inter-domain channels for Xen, wire-compatible with libxenvchan.
#[derive(Debug, Parser)]
#[command(
    name = "vchan",
    version,
    about,
    long_about = None,
    after_help = "Start with `vchan demo`. On the simulated host, join a domain with \
                  `eval \"$(vchan sim env N)\"`; on Xen, just run the commands.\n\n\
                  Exit codes: 0 success, 1 the transfer failed, 2 bad usage, 3 the channel \
                  could not be set up (no Xen and no sim, no server, wrong domid), 4 data \
                  mismatch."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo: a simulated Xen host, data both ways, throughput and latency.
    Demo(cmd::demo::Args),
    /// One direction of a vchan: stdin → vchan or vchan → stdout.
    Node(cmd::node::Args),
    /// Both directions of a vchan at once, on stdin and stdout.
    Cat(cmd::cat::Args),
    /// A socket, fd or stdio ↔ vchan proxy (Xen's vchan-socket-proxy).
    Proxy(cmd::proxy::Args),
    /// Send verified data both ways and measure throughput, or measure round trips.
    Pump(cmd::pump::Args),
    /// Print facts about the shared-page layout and ring geometry for given sizes.
    Layout(cmd::layout::Args),
    /// Run a simulated Xen host, print how to join it, create and destroy its domains.
    Sim(cmd::sim::Args),
    /// Read, write and watch XenStore.
    Xs(cmd::xs::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Node(args) => cmd::node::run(args),
        Command::Cat(args) => cmd::cat::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Pump(args) => cmd::pump::run(args),
        Command::Layout(args) => cmd::layout::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Xs(args) => cmd::xs::run(args),
    }
}
