//! `vchan proxy`: a socket (Unix or TCP), a file descriptor or stdio ↔ vchan, in server or
//! client mode: the role of Xen's `vchan-socket-proxy`, with the same modes.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use vchan_msg::{Error, Vchan};
use vchan_xenif::DomId;

use crate::bridge::{BridgeOpts, Stats, bridge};
use crate::chan::{ChanOpts, RoleArg};
use crate::util::{SetupFailed, UsageError, parse_chunk, report};

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
                  Data goes straight between the socket and the rings (readv/writev into and \
                  out of ring memory): one copy per hop.\n\n\
                  Rings: a proxy server serves 64K rings each way unless --read-min or \
                  --write-min is given (`--read-min 0 --write-min 0`: C's in-page 1K/2K rings, \
                  what vchan-socket-proxy serves). A client, Rust or C, takes the sizes the \
                  server chose.\n\n\
                  How a session ends. A vchan cannot carry a half-close, so when the socket's \
                  input ends (its peer shut down writing), the proxy first waits until the \
                  vchan peer has read everything, then keeps forwarding the vchan to the \
                  socket (answers still arrive) until the vchan peer closes, the socket is \
                  closed both ways, or nothing has come from the vchan for --linger seconds. \
                  Nothing the proxy has read is dropped: a byte read from the socket stays in \
                  the ring until the peer has read it, and a byte read from the ring has been \
                  written to the socket. When the vchan peer closes, everything it sent is \
                  written out, then the socket is closed.\n\n\
                  A failed session (the target socket refuses, an I/O error, a corrupt ring) \
                  is reported on stderr and the proxy serves the next one, except with \
                  --once, `-` or a fd (one session: its failure is the exit status). The \
                  proxy exits when the peer domain is destroyed: there is nothing left to \
                  serve.\n\n\
                  Example (a guest agent reachable from dom0 through a Unix socket):\n  \
                  domU$ vchan proxy server 0 /local/domain/5/data/vchan/0/agent /run/agent.sock\n  \
                  dom0$ vchan proxy client 5 /local/domain/5/data/vchan/0/agent /run/guest5.sock\n\n\
                  Exit codes: 0 done, 1 a transfer failed (one-session modes) or the peer \
                  domain was destroyed, 3 set-up failed."
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
    /// Most bytes moved per system call
    #[arg(long, value_parser = parse_chunk, default_value = "64K", value_name = "SIZE")]
    chunk: usize,
    /// After the socket's input has ended and the vchan peer has read it all, end the
    /// session once nothing has come from the vchan for SECS seconds (0: as soon as what
    /// had arrived is written out, like C's vchan-socket-proxy; `inf`: only when the vchan
    /// peer closes or the socket is closed)
    #[arg(long, value_parser = parse_linger, default_value = "0.5", value_name = "SECS")]
    linger: Linger,
    /// Print one line per session on stderr
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    opts: ChanOpts,
}

/// How long a session lingers after its input ended (`None`: until the peer closes).
#[derive(Debug, Clone, Copy)]
struct Linger(Option<Duration>);

fn parse_linger(s: &str) -> Result<Linger, String> {
    let t = s.trim();
    if matches!(t, "inf" | "infinity" | "forever") {
        return Ok(Linger(None));
    }
    match t.parse::<f64>() {
        Ok(v) if v >= 0.0 => match Duration::try_from_secs_f64(v) {
            Ok(d) => Ok(Linger(Some(d))),
            Err(_) => Ok(Linger(None)),
        },
        _ => Err(format!(
            "{s:?} is not a linger time: give seconds (0, 0.5, 10) or `inf` to wait for the \
             peer to close"
        )),
    }
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

    /// Makes the socket non-blocking, so that a session can always be ended: the bridge
    /// waits for it with `poll(2)`, never inside `read`/`write`.
    fn set_nonblocking(&self) -> Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(true),
            Conn::Tcp(s) => s.set_nonblocking(true),
        }
        .context("making the socket non-blocking")
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
        Endpoint::Stdio | Endpoint::Fd(_) => bail!("internal error: only sockets are connected to"),
    })
}

/// Carries one session between `chan` and a connected socket, then closes both.
fn carry(chan: Vchan, conn: &Conn, opts: BridgeOpts) -> Result<Stats> {
    conn.set_nonblocking()?;
    let stats = bridge(chan, conn.fd(), conn.fd(), opts);
    conn.finish();
    stats
}

/// Whether an error means the peer domain is gone (nothing left to serve).
fn peer_domain_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<Error>(),
            Some(Error::PeerDomainGone { .. })
        )
    })
}

/// Counts and reports the sessions of a listening proxy.
struct Sessions<'a> {
    args: &'a Args,
    count: u64,
}

impl Sessions<'_> {
    /// Reports a session's outcome. A failed session is reported and the proxy goes on,
    /// unless the failure is fatal (the peer domain is gone) or this was the only session
    /// (`--once`): then the error is returned.
    fn done(&mut self, outcome: Result<Stats>) -> Result<()> {
        self.count += 1;
        let n = self.count;
        match outcome {
            Ok(s) => {
                if self.args.verbose {
                    eprintln!(
                        "vchan proxy: session {n}: {} bytes to the vchan, {} bytes from it; {}",
                        s.to_vchan, s.from_vchan, s.end
                    );
                }
                Ok(())
            }
            Err(e) if self.args.once || peer_domain_gone(&e) => Err(e),
            Err(e) => {
                eprintln!("vchan proxy: session {n} failed: {e:#}; serving the next one");
                Ok(())
            }
        }
    }
}

/// The ring size a proxy server serves each way unless told otherwise: C's proxy serves its
/// in-page 1K/2K rings, where every system call moves at most a ring's worth; 64K rings cost
/// 32 granted pages each way and let a `readv`/`writev` move a whole 64K chunk.
const SERVER_RING: usize = 64 << 10;

/// Whether the command line sets a ring size itself (`--read-min`/`--write-min`, also as
/// `--opt=value`): clap fills in the shared options' default (0) otherwise, which for a proxy
/// server means [`SERVER_RING`].
fn rings_given(argv: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    argv.into_iter().any(|a| {
        let a = a.to_string_lossy();
        ["--read-min", "--write-min"]
            .iter()
            .any(|opt| a == *opt || a.starts_with(&format!("{opt}=")))
    })
}

fn proxy(args: &Args) -> Result<()> {
    let ep = parse_endpoint(&args.endpoint).map_err(|e| UsageError(format!("{e:#}")))?;
    let bopts = BridgeOpts {
        input_chunk: args.chunk,
        output_chunk: args.chunk,
        close_on_input_eof: false,
        linger: args.linger.0,
    };
    let log = |s: &Stats| {
        if args.verbose {
            eprintln!(
                "vchan proxy: session: {} bytes to the vchan, {} bytes from it; {}",
                s.to_vchan, s.from_vchan, s.end
            );
        }
    };
    let mut sessions = Sessions { args, count: 0 };
    match args.role {
        RoleArg::Server => {
            let server = if rings_given(std::env::args_os()) {
                args.opts.server(args.domid, &args.path)
            } else {
                let mut opts = args.opts.clone();
                (opts.read_min, opts.write_min) = (SERVER_RING, SERVER_RING);
                opts.server(args.domid, &args.path)
            };
            let mut withdraw = Withdraw::default();
            // Advertise before announcing readiness, so that "running" means "connect now".
            let mut chan = server
                .listen()
                .with_context(|| SetupFailed(format!("cannot serve at {}", args.path)))?;
            write_state(args)?;
            loop {
                chan.wait_connected(None)
                    .context("waiting for a vchan client")?;
                match &ep {
                    Endpoint::Stdio => {
                        let s = bridge(chan, io::stdin().as_fd(), io::stdout().as_fd(), bopts)?;
                        log(&s);
                        return Ok(());
                    }
                    Endpoint::Fd(fd) => {
                        let fd = borrow_fd(*fd)?;
                        let s = bridge(chan, fd, fd, bopts)?;
                        log(&s);
                        return Ok(());
                    }
                    Endpoint::Unix(_) | Endpoint::Tcp(_) => {
                        if !args.opts.persistent {
                            withdraw.advertisement(&args.path);
                        }
                        // A target that refuses fails this session only: the vchan client
                        // sees the channel close, and the next one is served.
                        let outcome = connect(&ep).and_then(|conn| carry(chan, &conn, bopts));
                        sessions.done(outcome)?;
                    }
                }
                if args.once {
                    return Ok(());
                }
                chan = server
                    .listen()
                    .with_context(|| SetupFailed(format!("cannot serve at {}", args.path)))?;
            }
        }
        RoleArg::Client => {
            let client = {
                let mut opts = args.opts.clone();
                // Like the C proxy: wait for the server rather than fail (bounded by --wait).
                opts.wait.get_or_insert(f64::from(u32::MAX));
                opts.client(args.domid, &args.path)
            };
            if !matches!(ep, Endpoint::Stdio) {
                // Sessions connect to the vchan only when a connection arrives: say now, not
                // at every connection, if this machine has neither Xen nor a simulated host.
                vchan_xenif::Backend::detect()
                    .context(SetupFailed("cannot serve connections".into()))?;
            }
            let listener = match &ep {
                Endpoint::Stdio => {
                    write_state(args)?;
                    let chan = client
                        .connect()
                        .context(SetupFailed("cannot connect to the vchan server".into()))?;
                    let s = bridge(chan, io::stdin().as_fd(), io::stdout().as_fd(), bopts)?;
                    log(&s);
                    return Ok(());
                }
                // A listening socket handed to us by number (systemd-style activation).
                Endpoint::Fd(fd) => Listener::Unix(UnixListener::from(owned_fd(*fd)?)),
                Endpoint::Unix(p) => Listener::Unix(listen_unix(p).with_context(|| {
                    SetupFailed(format!(
                        "cannot listen on {} (remove a stale socket file first)",
                        p.display()
                    ))
                })?),
                Endpoint::Tcp(a) => Listener::Tcp(
                    TcpListener::bind(a)
                        .with_context(|| SetupFailed(format!("cannot listen on {a}")))?,
                ),
            };
            write_state(args)?;
            loop {
                let Some(conn) = listener.accept()? else {
                    continue;
                };
                let outcome = client
                    .connect()
                    .context("cannot connect to the vchan server")
                    .and_then(|chan| carry(chan, &conn, bopts));
                // Closes the connection of a session that could not start, too.
                conn.finish();
                sessions.done(outcome)?;
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
    /// The next connection. `Ok(None)`: a failure that concerns this connection only (it
    /// was aborted) or passes (out of file descriptors or memory: reported, and retried
    /// after a pause); other failures (the listening socket is unusable) are errors.
    fn accept(&self) -> Result<Option<Conn>> {
        let r = match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Conn::Tcp(s)),
        };
        match r {
            Ok(c) => Ok(Some(c)),
            Err(e) => match e.raw_os_error() {
                Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => Ok(None),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    eprintln!("vchan proxy: accept: {e}; retrying in a moment");
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(None)
                }
                _ => Err(e).context("accept on the listening socket"),
            },
        }
    }
}

/// Withdraws a served channel's XenStore advertisement once its client has connected.
///
/// Each session has a channel of its own, advertised at the same path. A client that
/// connects while a session is still ending (its client gone, the proxy not yet aware) would
/// otherwise find the entries of that used channel and join it, only to see it close. With
/// the entries gone it waits for the next session's channel instead. (Not in persistent
/// mode, whose point is that clients reconnect to the same rings.)
#[derive(Default)]
struct Withdraw {
    xs: Option<vchan_xenif::xenstore::Client>,
    warned: bool,
}

impl Withdraw {
    fn advertisement(&mut self, path: &str) {
        let result = match &self.xs {
            Some(xs) => xs.rm(path),
            None => vchan_xenif::xenstore::Client::connect().and_then(|xs| {
                let r = xs.rm(path);
                self.xs = Some(xs);
                r
            }),
        };
        if let Err(e) = result {
            if !self.warned {
                self.warned = true;
                eprintln!(
                    "vchan proxy: warning: cannot withdraw the advertisement at {path} while a \
                     session runs ({e}); a client connecting as a session ends may join the \
                     ending one and see it close"
                );
            }
        }
    }
}

/// Listens on a Unix socket at `path` that appears in the file system only once it is
/// listening. A plain `bind` creates the file before `listen` runs, and a program that waits
/// for the file and connects at once can be refused in between. The socket is bound and
/// listening under a temporary name in the same directory first, then hard-linked to `path`
/// (which, unlike `rename`, fails instead of replacing a file already there).
fn listen_unix(path: &std::path::Path) -> io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let tmp = dir.join(format!(".vchan-proxy-{}.sock", std::process::id()));
    // A name too long for sun_path (108 bytes) where `path` itself fits: bind in place.
    if tmp.as_os_str().len() >= 108 {
        return UnixListener::bind(path);
    }
    // Left over from a process of our pid that died between bind and link.
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map(|()| listener)
}

fn write_state(args: &Args) -> Result<()> {
    if let Some(p) = &args.state_path {
        let xs = vchan_xenif::xenstore::Client::connect().with_context(|| {
            SetupFailed(format!(
                "cannot connect to XenStore to write \"running\" to {p}"
            ))
        })?;
        xs.write(p, "running")
            .with_context(|| SetupFailed(format!("writing \"running\" to {p}")))?;
    }
    Ok(())
}

/// Checks that a descriptor number given on the command line is open (bad usage if not).
fn check_fd(fd: i32) -> Result<()> {
    if fd < 0 {
        bail!(UsageError(format!("{fd} is not a file descriptor")));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is a valid argument (a
    // number that is not an open descriptor answers EBADF).
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = io::Error::last_os_error();
        bail!(UsageError(format!(
            "file descriptor {fd} is not open ({e})"
        )));
    }
    Ok(())
}

/// Borrows a descriptor number given on the command line, after checking that it is open.
fn borrow_fd(fd: i32) -> Result<BorrowedFd<'static>> {
    check_fd(fd)?;
    // SAFETY: the descriptor is open (checked) and came from our command line, which hands
    // it to this process for its whole life; we never close it, so it stays valid for
    // 'static.
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
    fn ring_options_are_recognised_in_both_forms() {
        let argv = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(!rings_given(argv(&[
            "vchan", "proxy", "server", "1", "/p", "/s"
        ])));
        assert!(rings_given(argv(&["vchan", "proxy", "--read-min", "0"])));
        assert!(rings_given(argv(&["vchan", "proxy", "--write-min=2K"])));
        assert!(!rings_given(argv(&["vchan", "proxy", "--read-minimal"])));
    }

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
