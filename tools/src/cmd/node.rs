//! `vchan node`: one direction of a vchan, stdin → vchan or vchan → stdout (the C `node` demo).

use std::io::{self, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use vchan_msg::{Error, Vchan};
use vchan_xenif::DomId;

use crate::chan::{ChanOpts, RoleArg};
use crate::util::{parse_chunk, report};

/// Which way the data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// vchan → stdout, until the peer closes
    Read,
    /// stdin → vchan, until stdin ends (then wait until the peer has read everything)
    Write,
}

/// Arguments of `vchan node`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Move bytes one way: stdin → vchan, or vchan → stdout (C libxenvchan's `node` demo)",
    after_help = "Examples (on the simulated host: `vchan sim --domains 1`, then in two shells \
                  `eval \"$(vchan sim env 0)\"` and `eval \"$(vchan sim env 1)\"`):\n  \
                  dom0$ vchan node server read 1 /local/domain/0/data/vchan/1/1 > received\n  \
                  dom1$ vchan node client write 0 /local/domain/0/data/vchan/1/1 < file\n\n\
                  Exit codes: 0 done, 1 transfer failed (peer left early…), 3 set-up failed \
                  (no server, wrong domid, no Xen and no sim)."
)]
pub struct Args {
    /// server or client
    #[arg(value_enum)]
    role: RoleArg,
    /// read (vchan → stdout) or write (stdin → vchan)
    #[arg(value_enum)]
    direction: Direction,
    /// The peer domain (a server names its client; a client names its server)
    domid: DomId,
    /// XenStore base path of the channel
    path: String,
    /// Bytes moved per read/write call (at most 64M)
    #[arg(long, value_parser = parse_chunk, default_value = "64K", value_name = "SIZE")]
    chunk: usize,
    #[command(flatten)]
    opts: ChanOpts,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match node(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("node", &e),
    }
}

fn node(args: &Args) -> Result<()> {
    let mut chan = args.opts.open(args.role, args.domid, &args.path)?;
    let chunk = args.chunk.max(1);
    match args.direction {
        Direction::Read => vchan_to(&mut chan, &mut io::stdout().lock(), chunk).map(|_| ()),
        Direction::Write => to_vchan(&mut io::stdin().lock(), &mut chan, chunk).map(|_| ()),
    }
}

/// Copies the channel to `out` until the peer closes; returns the byte count.
pub fn vchan_to(chan: &mut Vchan, out: &mut impl Write, chunk: usize) -> Result<u64> {
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        match chan.read(&mut buf) {
            Ok(n) => {
                out.write_all(&buf[..n]).context("writing to stdout")?;
                total += n as u64;
            }
            Err(Error::PeerClosed { .. }) => break,
            Err(e) => {
                return Err(e).with_context(|| format!("reading the vchan after {total} bytes"));
            }
        }
        // Flush per read so that a pipeline downstream sees data as it arrives.
        out.flush().context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(total)
}

/// Copies `input` into the channel until it ends, then waits until the peer has read it all.
pub fn to_vchan(input: &mut impl Read, chan: &mut Vchan, chunk: usize) -> Result<u64> {
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading stdin"),
        };
        chan.write_all(&buf[..n])
            .with_context(|| format!("writing to the vchan after {total} bytes"))?;
        total += n as u64;
    }
    chan.drain(None)
        .with_context(|| format!("the peer left before reading all {total} bytes"))?;
    Ok(total)
}
