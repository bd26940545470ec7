//! Copying between a vchan and file descriptors in both directions at once: the engine of
//! `vchan cat` (stdin/stdout) and `vchan proxy` (sockets).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vchan_msg::{Error, ReadHalf, Vchan, WriteHalf};

/// How a bridge ends.
#[derive(Debug, Clone, Copy)]
pub struct BridgeOpts {
    /// Bytes per copy.
    pub chunk: usize,
    /// When the input ends (and the peer has read everything), end the session at once
    /// instead of waiting for the peer to close.
    pub close_on_input_eof: bool,
    /// Once the input has ended, end the session after this long without data from the
    /// peer (`None`: wait for the peer to close).
    pub linger: Option<Duration>,
}

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// From the input fd into the vchan.
    pub to_vchan: u64,
    /// From the vchan to the output fd.
    pub from_vchan: u64,
}

enum Done {
    Input(Result<()>),
    Output(Result<()>),
}

/// Copies `input` → vchan and vchan → `output` until the session ends: the peer closes (after
/// everything it sent was written out), or the input ends and the peer has read it all (with
/// [`BridgeOpts::close_on_input_eof`]). The channel is closed on return.
pub fn bridge(
    chan: Vchan,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    opts: BridgeOpts,
) -> Result<Stats> {
    let shutdown = chan.shutdown_handle();
    let (mut reader, writer) = chan.split();
    if opts.linger.is_some() {
        reader.set_timeout(opts.linger);
    }
    let stop = AtomicBool::new(false);
    let input_done = AtomicBool::new(false);
    let to_vchan = AtomicU64::new(0);
    let from_vchan = AtomicU64::new(0);
    let chunk = opts.chunk.max(1);
    let (done_tx, done_rx) = mpsc::channel();
    let result = thread::scope(|s| {
        let done = done_tx.clone();
        let (stop_ref, counter, input_done_ref) = (&stop, &to_vchan, &input_done);
        s.spawn(move || {
            let r = input_to_vchan(input, writer, chunk, stop_ref, counter);
            input_done_ref.store(true, Ordering::Release);
            let _ = done.send(Done::Input(r));
        });
        let (counter, input_done_ref) = (&from_vchan, &input_done);
        s.spawn(move || {
            let r = vchan_to_output(reader, output, chunk, counter, input_done_ref);
            let _ = done_tx.send(Done::Output(r));
        });
        let result = loop {
            match done_rx.recv() {
                Ok(Done::Output(r)) => break r,
                Ok(Done::Input(Err(e))) => break Err(e),
                Ok(Done::Input(Ok(()))) if opts.close_on_input_eof => break Ok(()),
                Ok(Done::Input(Ok(()))) => {}
                Err(_) => break Err(anyhow!("internal error: both copy threads vanished")),
            }
        };
        // End whichever copy still runs: the vchan one through the shutdown handle, the fd one
        // through the flag it polls.
        stop.store(true, Ordering::Release);
        shutdown.shutdown();
        result
    });
    result.map(|()| Stats {
        to_vchan: to_vchan.load(Ordering::Relaxed),
        from_vchan: from_vchan.load(Ordering::Relaxed),
    })
}

fn input_to_vchan(
    input: BorrowedFd<'_>,
    mut writer: WriteHalf,
    chunk: usize,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> Result<()> {
    let mut buf = vec![0u8; chunk];
    loop {
        // Poll with a timeout so that a session ended by the other direction does not leave
        // this thread stuck in read(2) (stdin cannot be interrupted otherwise).
        let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(Errno::EINTR) => {
                if stop.load(Ordering::Acquire) || !writer.is_open() {
                    return Ok(());
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => return Err(e).context("poll on the input"),
        }
        let n = match nix::unistd::read(input, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(e).context("reading the input"),
        };
        match writer.write_all(&buf[..n]) {
            Ok(()) => {}
            // The peer left (or the session ended): nothing more can be delivered.
            Err(Error::PeerClosed { .. } | Error::PeerDomainGone { .. } | Error::Closed) => {
                return Ok(());
            }
            Err(e) => return Err(e).context("writing to the vchan"),
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    match writer.drain(None) {
        Ok(()) | Err(Error::Closed) => Ok(()),
        Err(e) => Err(e).context("the peer left before reading everything"),
    }
}

fn vchan_to_output(
    mut reader: ReadHalf,
    output: BorrowedFd<'_>,
    chunk: usize,
    counter: &AtomicU64,
    input_done: &AtomicBool,
) -> Result<()> {
    let mut buf = vec![0u8; chunk];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            // Lingering after the input ended: the peer has been silent long enough.
            Err(Error::Timeout(_)) if input_done.load(Ordering::Acquire) => return Ok(()),
            Err(Error::Timeout(_)) => continue,
            Err(Error::PeerClosed { .. } | Error::PeerDomainGone { .. } | Error::Closed) => {
                return Ok(());
            }
            Err(e) => return Err(e).context("reading the vchan"),
        };
        write_all_fd(output, &buf[..n]).context("writing the output")?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// `write(2)` until everything is written, waiting for a non-blocking fd to become writable.
pub fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                poll(&mut fds, PollTimeout::NONE)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
