//! Copying between a vchan and file descriptors in both directions at once: the engine of
//! `vchan cat` (stdin/stdout) and `vchan proxy` (sockets).
//!
//! Bytes move with no bounce buffer: `readv(2)` from the input straight into reserved ring
//! space ([`WriteHalf::read_from_fd`]) and `writev(2)` from readable ring space straight to
//! the output ([`ReadHalf::write_to_fd`]). That is one copy per hop, done by the kernel, where
//! C's `vchan-socket-proxy` copies every byte twice through a buffer of its own.
//!
//! # How a session ends
//!
//! A vchan has no half-close: the peer cannot be told "no more data comes, but keep sending".
//! So the end of the input is handled in steps, and nothing the session already accepted is
//! dropped on the way:
//!
//! 1. **Input ends** (end of file, or the socket's peer shut its sending side down):
//!    everything read from the input is already in the ring (the kernel reads it there), and
//!    the session waits until the peer has read all of it. A peer that leaves before that is
//!    an error ("the peer left before reading all of it"), since accepted bytes were lost.
//! 2. **Lingering**: vchan → output goes on, so that answers to what was sent still arrive,
//!    until the peer closes, or until nothing has come from the vchan for the linger period
//!    ([`BridgeOpts::linger`], counted from the later of the last data and the end of step 1;
//!    an output slow to take data is not silence). With a zero linger, what the peer had
//!    already sent is written out and the session ends.
//! 3. Bytes leave the ring only once the kernel has taken them for the output, and when the
//!    peer closes, everything it sent before closing is written out first.
//!
//! A session also ends, at any time, when the peer closes (normal), when the output is gone
//! (a socket whose peer closed both ways, a pipe with no reader: normal, reported as
//! [`End::OutputGone`]), or with an error: the peer's domain was destroyed
//! ([`vchan_msg::Error::PeerDomainGone`], data may be lost), an I/O error on the input or
//! output, a corrupt ring.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vchan_msg::{Error, ReadHalf, Vchan, WriteHalf};

/// How often a waiting copy thread looks at the session's state (stop requests, the linger
/// clock, an output that went away).
const TICK: Duration = Duration::from_millis(100);

/// How a bridge copies and ends.
#[derive(Debug, Clone, Copy)]
pub struct BridgeOpts {
    /// Most bytes read from the input into the vchan per system call.
    pub input_chunk: usize,
    /// Most bytes written from the vchan to the output per system call.
    pub output_chunk: usize,
    /// Once the input has ended and the peer has read all of it, write out what the peer had
    /// already sent and end the session (the same as a zero [`linger`](BridgeOpts::linger)).
    pub close_on_input_eof: bool,
    /// Once the input has ended and the peer has read all of it, end the session after this
    /// long without data from the peer (`None`: wait for the peer to close).
    pub linger: Option<Duration>,
}

impl BridgeOpts {
    fn effective_linger(&self) -> Option<Duration> {
        if self.close_on_input_eof {
            Some(Duration::ZERO)
        } else {
            self.linger
        }
    }
}

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer closed the channel (everything it sent was written out).
    PeerClosed,
    /// The input ended, the peer read all of it, and then nothing came from the peer for
    /// the linger period.
    Lingered(Duration),
    /// The output went away: nothing can be delivered any more.
    OutputGone,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::PeerClosed => f.write_str("the peer closed the channel"),
            End::Lingered(d) => write!(
                f,
                "the input ended and the peer sent nothing more for {d:?}"
            ),
            End::OutputGone => f.write_str("the output was closed"),
        }
    }
}

/// What a session moved, and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// From the input fd into the vchan.
    pub to_vchan: u64,
    /// From the vchan to the output fd.
    pub from_vchan: u64,
    /// Why the session ended.
    pub end: End,
}

/// How the input → vchan direction ended (without an error).
enum InputEnd {
    /// End of input, and the peer read everything.
    Delivered,
    /// The session is over (the peer left, or we stopped it).
    Stopped,
}

enum Done {
    Input(Result<InputEnd>),
    /// After the input ended: the output fd reports a hang-up or an error.
    OutputHungUp,
    Output(Result<Option<End>>),
}

/// State both copy threads share.
struct Shared {
    /// The session is ending: copy threads stop at their next look.
    stop: AtomicBool,
    /// The read end of a pipe whose write end is closed when the session ends: it wakes a
    /// copy thread waiting in `poll(2)` at once.
    wake: OwnedFd,
    /// When the input had ended and the peer had read all of it.
    delivered_at: OnceLock<Instant>,
    to_vchan: AtomicU64,
    from_vchan: AtomicU64,
}

/// Copies `input` → vchan and vchan → `output` until the session ends (see the module docs)
/// and closes the channel. `input` and `output` may be the same fd (a socket).
///
/// Non-blocking fds are fine (the copies wait for them with `poll(2)`); with blocking ones a
/// copy may sit in `write(2)` while the output does not take data, as any copy would.
pub fn bridge(
    chan: Vchan,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    opts: BridgeOpts,
) -> Result<Stats> {
    let shutdown = chan.shutdown_handle();
    let (reader, writer) = chan.split();
    let linger = opts.effective_linger();
    let (input_chunk, output_chunk) = (opts.input_chunk.max(1), opts.output_chunk.max(1));
    let (wake, wake_on_drop) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating the session's wake-up pipe")?;
    let shared = Shared {
        stop: AtomicBool::new(false),
        wake,
        delivered_at: OnceLock::new(),
        to_vchan: AtomicU64::new(0),
        from_vchan: AtomicU64::new(0),
    };
    let (done_tx, done_rx) = mpsc::channel();
    let end = thread::scope(|s| {
        let done = done_tx.clone();
        let sh = &shared;
        s.spawn(move || {
            let mut writer = writer;
            let r = input_to_vchan(input, &mut writer, input_chunk, sh);
            let delivered = matches!(r, Ok(InputEnd::Delivered));
            if delivered {
                let _ = sh.delivered_at.set(Instant::now());
            }
            let _ = done.send(Done::Input(r));
            if delivered && watch_for_hang_up(output, sh) {
                let _ = done.send(Done::OutputHungUp);
            }
        });
        let done = done_tx;
        s.spawn(move || {
            let mut reader = reader;
            let r = vchan_to_output(&mut reader, output, output_chunk, linger, sh);
            let _ = done.send(Done::Output(r));
        });
        let end = loop {
            match done_rx.recv() {
                Ok(Done::Output(Ok(Some(end)))) => break Ok(end),
                // Only this thread stops a session, and it has not yet.
                Ok(Done::Output(Ok(None))) => {
                    break Err(anyhow!("the channel was shut down on this side"));
                }
                Ok(Done::Output(Err(e)) | Done::Input(Err(e))) => break Err(e),
                Ok(Done::OutputHungUp) => break Ok(End::OutputGone),
                // The input ended (the output lingers), or the peer left (the output thread
                // writes out what it sent, then sees it).
                Ok(Done::Input(Ok(_))) => {}
                Err(_) => break Err(anyhow!("internal error: both copy threads vanished")),
            }
        };
        // End whichever copy still runs: a vchan wait through the shutdown handle, an fd
        // wait through the flag it polls.
        shared.stop.store(true, Ordering::Release);
        drop(wake_on_drop);
        shutdown.shutdown();
        end
    });
    end.map(|end| Stats {
        to_vchan: shared.to_vchan.load(Ordering::Relaxed),
        from_vchan: shared.from_vchan.load(Ordering::Relaxed),
        end,
    })
}

fn is_would_block(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
}

/// Waits up to [`TICK`] for `events` on `fd`, or until the session ends; `Ok(None)` when
/// nothing happened on `fd`.
fn poll_tick(sh: &Shared, fd: BorrowedFd<'_>, events: PollFlags) -> io::Result<Option<PollFlags>> {
    let mut fds = [
        PollFd::new(fd, events),
        PollFd::new(sh.wake.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16)) {
        Ok(0) | Err(Errno::EINTR) => Ok(None),
        Ok(_) => Ok(fds[0].revents().filter(|r| !r.is_empty())),
        Err(e) => Err(e.into()),
    }
}

/// Whether `fd` is in non-blocking mode (`O_NONBLOCK`); `false` if that cannot be told.
fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
        .is_ok_and(|flags| OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK))
}

/// How much free ring space the input copy holds out for, while the peer is actively
/// reading, before it reads the input into the ring: half the ring (or a chunk, if smaller).
/// A nearly full ring is then not filled a few bytes per `readv(2)`; see
/// [`WriteHalf::read_from_fd_prefer`], which takes any space rather than wait longer than
/// its spin (no deadlock with a peer that waits for more data before it reads).
fn preferred_space(writer: &WriteHalf, chunk: usize) -> usize {
    chunk.min(writer.capacity() / 2).max(1)
}

fn input_to_vchan(
    input: BorrowedFd<'_>,
    writer: &mut WriteHalf,
    chunk: usize,
    sh: &Shared,
) -> Result<InputEnd> {
    // A non-blocking input (the proxy's sockets) is read until it has nothing, and polled
    // only then: one system call per chunk while data flows, instead of a poll(2) before
    // every read. A blocking one (stdin of `vchan cat`) is polled before every read, so that
    // a session ended by the other direction never leaves this thread in read(2) (stdin
    // cannot be interrupted otherwise).
    let nonblocking = is_nonblocking(input);
    let prefer = preferred_space(writer, chunk);
    let mut ready = false;
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return Ok(InputEnd::Stopped);
        }
        // Wait for input with a timeout, so that the stop flag is seen.
        if !ready
            && poll_tick(sh, input, PollFlags::POLLIN)
                .context("poll on the input")?
                .is_none()
        {
            continue;
        }
        match writer.read_from_fd_prefer(input, chunk, prefer) {
            Ok(0) => break,
            Ok(n) => {
                sh.to_vchan.fetch_add(n as u64, Ordering::Relaxed);
                ready = nonblocking;
            }
            // A non-blocking input that has nothing (now): wait for it.
            Err(e) if is_would_block(&e) => ready = false,
            // The peer left (the output direction reports it once it has written out what
            // the peer sent), or the session is ending.
            Err(Error::PeerClosed { .. } | Error::Closed) => return Ok(InputEnd::Stopped),
            Err(e) => return Err(e).context("forwarding the input to the vchan"),
        }
    }
    match writer.drain(None) {
        Ok(()) => Ok(InputEnd::Delivered),
        Err(Error::Closed) => Ok(InputEnd::Stopped),
        Err(e) => Err(e).context("the input ended, but the peer left before reading all of it"),
    }
}

/// After the input was delivered: whether the output fd hangs up (a socket closed both ways,
/// a pipe whose reader left) before the session ends otherwise. Only a hang-up counts: a
/// socket whose peer merely stopped sending (a half-close) still takes data.
fn watch_for_hang_up(output: BorrowedFd<'_>, sh: &Shared) -> bool {
    while !sh.stop.load(Ordering::Acquire) {
        match poll_tick(sh, output, PollFlags::empty()) {
            Ok(Some(r)) if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) => return true,
            // An fd poll(2) cannot watch (POLLNVAL) or a failed poll: give up watching, the
            // output copy still sees errors when it writes.
            Ok(Some(r)) if r.contains(PollFlags::POLLNVAL) => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// `Ok(None)`: stopped by the session ending.
fn vchan_to_output(
    reader: &mut ReadHalf,
    output: BorrowedFd<'_>,
    chunk: usize,
    linger: Option<Duration>,
    sh: &Shared,
) -> Result<Option<End>> {
    // With a linger, wake up now and then to see whether the input was delivered and the
    // vchan has been silent long enough (a timeout loses no data).
    if let Some(l) = linger {
        reader.set_timeout(Some(l.clamp(Duration::from_millis(1), TICK)));
    }
    let mut last_data = Instant::now();
    loop {
        match reader.write_to_fd(output, chunk) {
            Ok(n) => {
                sh.from_vchan.fetch_add(n as u64, Ordering::Relaxed);
                last_data = Instant::now();
            }
            // A non-blocking output that is full: wait until it takes data.
            Err(e) if is_would_block(&e) => loop {
                if sh.stop.load(Ordering::Acquire) {
                    return Ok(None);
                }
                if poll_tick(sh, output, PollFlags::POLLOUT)
                    .context("poll on the output")?
                    .is_some()
                {
                    break;
                }
            },
            Err(Error::Timeout(_)) => {
                if let (Some(l), Some(&delivered)) = (linger, sh.delivered_at.get()) {
                    if last_data.max(delivered).elapsed() >= l {
                        return Ok(Some(End::Lingered(l)));
                    }
                }
            }
            Err(Error::PeerClosed { .. }) => return Ok(Some(End::PeerClosed)),
            Err(Error::Closed) => return Ok(None),
            Err(Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) && sh.delivered_at.get().is_some() =>
            {
                // The output's reader left after our input ended: a normal end.
                return Ok(Some(End::OutputGone));
            }
            Err(e) => return Err(e).context("forwarding the vchan to the output"),
        }
    }
}
