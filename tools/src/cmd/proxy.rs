//! `vchan proxy`: a socket (Unix or TCP), a file descriptor or stdio ↔ vchan, in server or
//! client mode: the role of Xen's `vchan-socket-proxy`, with the same modes.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use vchan_xenif::DomId;

use crate::bridge::{BridgeOpts, Stats, bridge};
use crate::chan::{ChanOpts, RoleArg};
use crate::util::{parse_size, report};

/// Arguments of `vchan proxy`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Proxy between a vchan and a Unix or TCP socket, a file descriptor or stdio \
             (Xen's vchan-socket-proxy)",
    after_help = "ENDPOINT is `-` (stdin/stdout), a file-descriptor number, a Unix socket path \
                  (or `unix:PATH`), or `tcp:HOST:PORT`.\n\n\
                  server: serve a vchan; for each client that connects, connect to ENDPOINT \
                  (a socket) and carry the data both ways; then serve the next client. With \
                  `-` or a fd, carry one session and exit.\n\
                  client: listen on ENDPOINT (a socket; a fd is a listening socket already); \
                  for each accepted connection, connect to the vchan server (waiting for it) \
                  and carry the data; with `-`, connect at once, carry stdin/stdout, and exit.\n\n\
                  A session ends when either side closes: the socket's end of input is \
                  delivered to the peer first, then the vchan is closed.\n\n\
                  Example (a guest agent reachable from dom0 through a Unix socket):\n  \
                  domU$ vchan proxy server 0 /local/domain/5/data/vchan/0/agent /run/agent.sock\n  \
                  dom0$ vchan proxy client 5 /local/domain/5/data/vchan/0/agent /run/guest5.sock\n\n\
                  Exit codes: 0 done, 1 transfer failed, 3 set-up failed."
)]
pub struct Args {
    /// server or client (vchan role)
    #[arg(value_enum)]
    role: RoleArg,
    /// The peer domain
    domid: DomId,
    /// XenStore base path of the channel
    path: String,
    /// `-`, a fd number, a Unix socket path (or unix:PATH), or tcp:HOST:PORT
    endpoint: String,
    /// XenStore path where "running" is written once the proxy is ready (as the C proxy's -s)
    #[arg(short = 's', long, value_name = "XS_PATH")]
    state_path: Option<String>,
    /// Serve a single session, then exit
    #[arg(long)]
    once: bool,
    /// Bytes per copy
    #[arg(long, value_parser = parse_size, default_value = "64K", value_name = "SIZE")]
    chunk: usize,
    /// Print one line per session on stderr
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    opts: ChanOpts,
}

/// Where the non-vchan side of the proxy is.
#[derive(Debug)]
enum Endpoint {
    Stdio,
    Fd(i32),
    Unix(PathBuf),
    Tcp(String),
}

fn parse_endpoint(s: &str) -> Result<Endpoint> {
    if s == "-" {
        return Ok(Endpoint::Stdio);
    }
    if let Some(rest) = s.strip_prefix("tcp:") {
        if rest
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            bail!("{s:?}: a TCP endpoint is tcp:HOST:PORT, e.g. tcp:127.0.0.1:5000");
        }
        return Ok(Endpoint::Tcp(rest.to_owned()));
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        return Ok(Endpoint::Unix(rest.into()));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Endpoint::Fd(s.parse().context("file descriptor number")?));
    }
    if s.is_empty() {
        bail!("the endpoint is empty: give -, a fd number, a socket path or tcp:HOST:PORT");
    }
    Ok(Endpoint::Unix(s.into()))
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match proxy(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("proxy", &e),
    }
}

/// A connected stream socket of either family.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }

    /// Tells the socket's peer that no more data comes.
    fn finish(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

fn connect(ep: &Endpoint) -> Result<Conn> {
    Ok(match ep {
        Endpoint::Unix(p) => Conn::Unix(
            UnixStream::connect(p).with_context(|| format!("connecting to {}", p.display()))?,
        ),
        Endpoint::Tcp(a) => {
            Conn::Tcp(TcpStream::connect(a).with_context(|| format!("connecting to {a}"))?)
        }
        _ => unreachable!("only sockets are connected to"),
    })
}

fn proxy(args: &Args) -> Result<()> {
    let ep = parse_endpoint(&args.endpoint)?;
    let bopts = BridgeOpts {
        chunk: args.chunk,
        close_on_input_eof: true,
        linger: None,
    };
    let log = |what: &str, s: &Stats| {
        if args.verbose {
            eprintln!(
                "vchan proxy: {what}: {} bytes to the vchan, {} bytes from it",
                s.to_vchan, s.from_vchan
            );
        }
    };
    match args.role {
        RoleArg::Server => {
            let server = args.opts.server(args.domid, &args.path);
            // Advertise before announcing readiness, so that "running" means "connect now".
            let mut chan = server
                .listen()
                .with_context(|| format!("cannot serve at {}", args.path))?;
            write_state(args)?;
            loop {
                chan.wait_connected(None)
                    .context("waiting for a vchan client")?;
                match &ep {
                    Endpoint::Stdio => {
                        let s = bridge(chan, io::stdin().as_fd(), io::stdout().as_fd(), bopts)?;
                        log("session", &s);
                        return Ok(());
                    }
                    Endpoint::Fd(fd) => {
                        let fd = borrow_fd(*fd)?;
                        let s = bridge(chan, fd, fd, bopts)?;
                        log("session", &s);
                        return Ok(());
                    }
                    _ => {
                        let conn = connect(&ep)?;
                        let s = bridge(chan, conn.fd(), conn.fd(), bopts)?;
                        conn.finish();
                        log("session", &s);
                    }
                }
                if args.once {
                    return Ok(());
                }
                chan = server
                    .listen()
                    .with_context(|| format!("cannot serve at {}", args.path))?;
            }
        }
        RoleArg::Client => {
            let client = {
                let mut opts = args.opts.clone();
                // Like the C proxy: wait for the server rather than fail (bounded by --wait).
                opts.wait.get_or_insert(f64::from(u32::MAX));
                opts.client(args.domid, &args.path)
            };
            let listener = match &ep {
                Endpoint::Stdio => {
                    write_state(args)?;
                    let chan = client
                        .connect()
                        .context("cannot connect to the vchan server")?;
                    let s = bridge(chan, io::stdin().as_fd(), io::stdout().as_fd(), bopts)?;
                    log("session", &s);
                    return Ok(());
                }
                // A listening socket handed to us by number (systemd-style activation).
                Endpoint::Fd(fd) => Listener::Unix(UnixListener::from(owned_fd(*fd)?)),
                Endpoint::Unix(p) => Listener::Unix(UnixListener::bind(p).with_context(|| {
                    format!(
                        "cannot listen on {} (remove a stale socket file first)",
                        p.display()
                    )
                })?),
                Endpoint::Tcp(a) => Listener::Tcp(
                    TcpListener::bind(a).with_context(|| format!("cannot listen on {a}"))?,
                ),
            };
            write_state(args)?;
            loop {
                let conn = listener.accept()?;
                let chan = client
                    .connect()
                    .context("cannot connect to the vchan server")?;
                let s = bridge(chan, conn.fd(), conn.fd(), bopts)?;
                conn.finish();
                log("session", &s);
                if args.once {
                    return Ok(());
                }
            }
        }
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> Result<Conn> {
        Ok(match self {
            Listener::Unix(l) => Conn::Unix(l.accept().context("accept")?.0),
            Listener::Tcp(l) => Conn::Tcp(l.accept().context("accept")?.0),
        })
    }
}

fn write_state(args: &Args) -> Result<()> {
    if let Some(p) = &args.state_path {
        let xs = vchan_xenif::xenstore::Client::connect()?;
        xs.write(p, "running")
            .with_context(|| format!("writing \"running\" to {p}"))?;
    }
    Ok(())
}

fn check_fd(fd: i32) -> Result<()> {
    nix::fcntl::fcntl(unsafe_free_borrow(fd)?, nix::fcntl::FcntlArg::F_GETFD)
        .with_context(|| format!("file descriptor {fd} is not open"))?;
    Ok(())
}

/// Borrows a descriptor number given on the command line, after checking that it is open.
fn borrow_fd(fd: i32) -> Result<BorrowedFd<'static>> {
    check_fd(fd)?;
    unsafe_free_borrow(fd)
}

fn unsafe_free_borrow(fd: i32) -> Result<BorrowedFd<'static>> {
    if fd < 0 {
        bail!("{fd} is not a file descriptor");
    }
    // SAFETY: the descriptor number came from our command line, which hands it to this
    // process for its whole life; we never close it, so it stays valid for 'static.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Takes ownership of a listening socket's descriptor given on the command line.
fn owned_fd(fd: i32) -> Result<OwnedFd> {
    check_fd(fd)?;
    // SAFETY: the descriptor is open (checked) and was handed to this process on its command
    // line for this purpose; nothing else in the process owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(matches!(parse_endpoint("-").unwrap(), Endpoint::Stdio));
        assert!(matches!(parse_endpoint("3").unwrap(), Endpoint::Fd(3)));
        assert!(matches!(
            parse_endpoint("/run/a.sock").unwrap(),
            Endpoint::Unix(_)
        ));
        assert!(matches!(
            parse_endpoint("unix:rel.sock").unwrap(),
            Endpoint::Unix(_)
        ));
        assert!(matches!(
            parse_endpoint("tcp:127.0.0.1:80").unwrap(),
            Endpoint::Tcp(_)
        ));
        for bad in ["", "tcp:", "tcp:host", "tcp::80", "tcp:h:99999"] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
