//! `vchan`: the command line of the vchan project.
//!
//! Each subcommand lives in its own module under `cmd/` with an `Args` struct (clap) and a
//! `run` function returning the process exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// vchan: zero-copy inter-domain channels for Xen, wire-compatible with libxenvchan.
#[derive(Debug, Parser)]
#[command(name = "vchan", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Command::Layout(args) => cmd::layout::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Xs(args) => cmd::xs::run(args),
    }
}
