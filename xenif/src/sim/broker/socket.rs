//! `SOCK_SEQPACKET` Unix sockets carrying one message (and optionally descriptors) at a time.
//!
//! Used by both ends of `host.sock`. Every descriptor is created close-on-exec, so a child a
//! test or a tool spawns never inherits a connection (which would hide a process's death
//! from the broker) or a grant.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

use super::wire::MAX_FDS_PER_MESSAGE;

fn unix_addr(path: &Path) -> io::Result<UnixAddr> {
    UnixAddr::new(path).map_err(|e| {
        if e == Errno::ENAMETOOLONG {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket path {} is longer than the 107 bytes a Unix socket path may have: \
                     use a shorter host directory",
                    path.display()
                ),
            )
        } else {
            io::Error::from(e)
        }
    })
}

fn seqpacket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        flags,
        None,
    )?)
}

/// Binds and listens on `path` (non-blocking). A stale socket file nobody serves is replaced;
/// one that answers is an `AddrInUse` error.
pub(crate) fn listen(path: &Path) -> io::Result<OwnedFd> {
    let addr = unix_addr(path)?;
    if path.exists() {
        match connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is already served by another process", path.display()),
                ));
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let sock = seqpacket(true)?;
    socket::bind(sock.as_raw_fd(), &addr)?;
    socket::listen(&sock, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(sock)
}

/// Accepts one connection (non-blocking, close-on-exec); `Ok(None)` when none is waiting.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match socket::accept4(listener, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Connects to `path` (blocking socket).
pub(crate) fn connect(path: &Path) -> io::Result<OwnedFd> {
    let addr = unix_addr(path)?;
    let sock = seqpacket(false)?;
    socket::connect(sock.as_raw_fd(), &addr)?;
    Ok(sock)
}

/// Sends one message with `fds` attached. `nonblocking` makes a full peer queue an
/// `WouldBlock` error instead of a wait. Never raises `SIGPIPE`.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<()> {
    debug_assert!(fds.len() <= MAX_FDS_PER_MESSAGE);
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(bytes)], cmsgs, flags, None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("message sent only in part")),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`recv`] got.
#[derive(Debug)]
pub(crate) enum Received {
    /// A message of this many bytes (in the caller's buffer) and the descriptors that came
    /// with it.
    Message(usize, Vec<OwnedFd>),
    /// The peer closed the connection.
    Closed,
    /// Nothing to read (non-blocking sockets only, or a receive timeout).
    WouldBlock,
}

/// Receives one message into `buf`. With `accept_fds` false no descriptor is ever installed
/// in this process (the kernel drops what a peer attached); with it true, up to
/// [`MAX_FDS_PER_MESSAGE`] are accepted and returned owned. A message longer than `buf` is an
/// `InvalidData` error (its tail is lost).
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    accept_fds: bool,
    nonblocking: bool,
) -> io::Result<Received> {
    let mut cmsg_space = nix::cmsg_space!([i32; 253]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let cmsg = if accept_fds {
            Some(cmsg_space.as_mut_slice())
        } else {
            None
        };
        let msg = match socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, cmsg, flags) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Received::WouldBlock),
            Err(Errno::ECONNRESET) => return Ok(Received::Closed),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        if accept_fds {
            // The buffer holds SCM_MAX_FD descriptors, so a truncated control area can only
            // come from something other than SCM_RIGHTS, which we never ask for.
            let cmsgs = msg
                .cmsgs()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "control data cut"))?;
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: the kernel has just installed `fd` in this process for this
                        // message (SCM_RIGHTS); nothing else knows or owns it, so taking
                        // ownership here is the only owner it will have.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message longer than the protocol allows",
            ));
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Ok(Received::Closed);
        }
        return Ok(Received::Message(msg.bytes, fds));
    }
}

/// Sets send and receive timeouts on a blocking socket.
pub(crate) fn set_timeouts(sock: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(
        timeout.as_secs().try_into().unwrap_or(i64::MAX),
        timeout.subsec_micros().into(),
    );
    socket::setsockopt(&sock, socket::sockopt::ReceiveTimeout, &tv)?;
    socket::setsockopt(&sock, socket::sockopt::SendTimeout, &tv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn messages_keep_their_boundaries_and_carry_descriptors() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        send(a.as_fd(), b"hello", &[r.as_fd(), w.as_fd()], false).unwrap();
        send(a.as_fd(), b"x", &[], false).unwrap();
        let mut buf = [0u8; 16];
        match recv(b.as_fd(), &mut buf, true, false).unwrap() {
            Received::Message(5, fds) => {
                assert_eq!(&buf[..5], b"hello");
                assert_eq!(fds.len(), 2);
                // The received pipe ends work.
                nix::unistd::write(&fds[1], b"!").unwrap();
                let mut one = [0u8; 1];
                nix::unistd::read(&fds[0], &mut one).unwrap();
                assert_eq!(&one, b"!");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            recv(b.as_fd(), &mut buf, true, false).unwrap(),
            Received::Message(1, ref f) if f.is_empty()
        ));
        assert!(matches!(
            recv(b.as_fd(), &mut buf, true, true).unwrap(),
            Received::WouldBlock
        ));
        drop(a);
        assert!(matches!(
            recv(b.as_fd(), &mut buf, true, false).unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn descriptors_are_refused_when_not_wanted() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        send(a.as_fd(), b"m", &[w.as_fd()], false).unwrap();
        drop(w);
        let mut buf = [0u8; 4];
        assert!(matches!(
            recv(b.as_fd(), &mut buf, false, false).unwrap(),
            Received::Message(1, ref f) if f.is_empty()
        ));
        // Had the write end been installed here, the pipe would still have a writer and the
        // read would fail with EAGAIN; it was dropped, so the reader sees end of file.
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut one), Ok(0));
    }

    #[test]
    fn oversized_messages_are_errors() {
        let (a, b) = pair();
        send(a.as_fd(), &[7u8; 32], &[], false).unwrap();
        let mut buf = [0u8; 8];
        let err = recv(b.as_fd(), &mut buf, true, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
