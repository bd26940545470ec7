//! `vchan layout`: placeholder filled once the ring crate's geometry exists.

use std::process::ExitCode;

/// Arguments of `vchan layout`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("vchan layout: not available yet");
    ExitCode::from(2)
}
