//! `vchan cat`: both directions of a vchan at once (the C `node-select` demo).

use std::io;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use vchan_xenif::DomId;

use crate::bridge::{BridgeOpts, bridge};
use crate::chan::{ChanOpts, RoleArg};
use crate::util::{parse_chunk, parse_duration, report};

/// Arguments of `vchan cat`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Connect stdin and stdout to a vchan, both directions at once (C `node-select`)",
    after_help = "stdin → vchan and vchan → stdout run at the same time. When stdin ends, \
                  `cat` waits until the peer has read everything, then keeps printing what the \
                  peer sends until the peer closes (or exits at once with --close-on-eof, or \
                  after --linger seconds of silence from the peer).\n\n\
                  Example:\n  dom0$ vchan cat server 1 /local/domain/0/data/vchan/1/2\n  \
                  dom1$ vchan cat client 0 /local/domain/0/data/vchan/1/2 --wait 10\n\n\
                  Exit codes: 0 done, 1 transfer failed, 3 set-up failed."
)]
pub struct Args {
    /// server or client
    #[arg(value_enum)]
    role: RoleArg,
    /// The peer domain
    domid: DomId,
    /// XenStore base path of the channel
    path: String,
    /// Bytes read from the vchan (and written to stdout) per call, at most 64M
    #[arg(long, value_parser = parse_chunk, default_value = "64K", value_name = "SIZE")]
    read_size: usize,
    /// Bytes read from stdin (and written to the vchan) per call, at most 64M
    #[arg(long, value_parser = parse_chunk, default_value = "64K", value_name = "SIZE")]
    write_size: usize,
    /// Close the channel as soon as stdin has ended and the peer has read it all (what the
    /// peer had already sent is written out first)
    #[arg(long, conflicts_with = "linger")]
    close_on_eof: bool,
    /// After stdin has ended, close once the peer has sent nothing for SECS seconds
    /// (instead of waiting for the peer to close)
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    linger: Option<Duration>,
    #[command(flatten)]
    opts: ChanOpts,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match cat(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("cat", &e),
    }
}

fn cat(args: &Args) -> Result<()> {
    let chan = args.opts.open(args.role, args.domid, &args.path)?;
    let opts = BridgeOpts {
        input_chunk: args.write_size,
        output_chunk: args.read_size,
        close_on_input_eof: args.close_on_eof,
        linger: args.linger,
    };
    let (stdin, stdout) = (io::stdin(), io::stdout());
    bridge(chan, stdin.as_fd(), stdout.as_fd(), opts)?;
    Ok(())
}
