//! File descriptor ↔ ring with no bounce buffer, for byte streams (`vchan proxy`):
//! [`WriteHalf::read_from_fd`] reads straight into reserved ring space with `readv(2)`, and
//! [`ReadHalf::write_to_fd`] writes straight from readable ring space with `writev(2)`. One
//! copy per hop, done by the kernel; C's `vchan-socket-proxy` copies through a user buffer.
//!
//! The ring regions are handed to the kernel as raw `iovec`s: no Rust reference into shared
//! memory is made. The peer may change readable bytes while the kernel copies them; that only
//! changes which bytes are forwarded, never where they are read from or written to.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use crate::channel::{ReadHalf, WriteHalf};
use crate::error::{Error, Result};

/// The non-empty pieces of a ring region, clipped to `max` bytes in total, as `iovec`s.
fn iovecs(parts: [(NonNull<u8>, usize); 2], max: usize) -> ([libc::iovec; 2], usize) {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2];
    let mut count = 0;
    let mut left = max;
    for (ptr, len) in parts {
        let len = len.min(left);
        if len == 0 {
            continue;
        }
        iov[count] = libc::iovec {
            iov_base: ptr.as_ptr().cast(),
            iov_len: len,
        };
        count += 1;
        left -= len;
    }
    (iov, count)
}

fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn io_error(op: &str, fd: BorrowedFd<'_>, source: io::Error) -> Error {
    Error::Io {
        op: format!("{op} fd {}", fd.as_raw_fd()),
        source,
    }
}

impl WriteHalf {
    /// Reads up to `max` bytes from `fd` straight into the ring (`readv(2)` into reserved
    /// ring space: no bounce buffer), publishes them and signals the peer if it waits.
    /// Returns the bytes moved; `Ok(0)` means end of file on `fd` (or `max == 0`).
    ///
    /// Waiting: for ring space, as the half's [`Mode`](crate::Mode) says (blocking: until
    /// at least one byte is free; non-blocking: [`Error::WouldBlock`] when the ring is
    /// full); for data, as the fd says (a blocking fd blocks in `readv`; a non-blocking one
    /// with nothing to read fails with [`Error::Io`] of kind
    /// [`io::ErrorKind::WouldBlock`], nothing moved). `EINTR` is retried. Fails with
    /// [`Error::PeerClosed`] once the peer has left.
    ///
    /// ```no_run
    /// # fn demo(mut tx: vchan_msg::WriteHalf, sock: std::net::TcpStream) -> vchan_msg::Result<()> {
    /// use std::os::fd::AsFd;
    /// loop {
    ///     if tx.read_from_fd(sock.as_fd(), 1 << 16)? == 0 {
    ///         break; // the socket reached end of file
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_from_fd(&mut self, fd: BorrowedFd<'_>, max: usize) -> Result<usize> {
        self.read_from_fd_prefer(fd, max, 1)
    }

    /// [`read_from_fd`](WriteHalf::read_from_fd), holding out for `prefer` bytes of free
    /// space (clamped to `1..=max` and to the ring size) while it spins: a ring that is
    /// nearly full is not read into a few bytes at a time (one system call per handful of
    /// bytes) while the peer is about to free more. The holding out ends with the spin (the
    /// half's [`SpinPolicy`](crate::SpinPolicy)): before sleeping, and in non-blocking
    /// mode, any free byte will do, exactly as for `read_from_fd`. So it waits no longer
    /// than `read_from_fd` would have for a peer that frees space only after it got more
    /// data (one reading exact packets larger than the free space, say), and never
    /// deadlocks where `read_from_fd` would not.
    pub fn read_from_fd_prefer(
        &mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        prefer: usize,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let prefer = prefer.clamp(1, max.min(self.tx.capacity()));
        let (waiting, tx) = self.waiting();
        let ep = waiting.ep;
        waiting.run(|request| {
            if let Some(failure) = ep.peer_failure() {
                return Err(failure);
            }
            let space = if request {
                tx.space_or_request(1, &ep.peer_flag())
            } else {
                tx.space()
            }
            .map_err(|e| ep.corrupt(e))?;
            // Spinning (no request made): hold out for `prefer`; about to sleep: take any.
            if space == 0 || (!request && space < prefer) {
                return Ok(None);
            }
            let region = tx.reserve_up_to(max).map_err(|e| ep.corrupt(e))?;
            let (iov, count) = iovecs(region.as_raw_parts(), max);
            let n = retry_eintr(|| {
                // SAFETY: each iovec is a piece of the reservation: free ring space, which
                // the ring protocol gives to this producer (held `&mut` through `region`),
                // valid for writes; `count <= 2` entries of `iov` are initialised. The
                // kernel writes at most their total length.
                unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), count as libc::c_int) }
            })
            .map_err(|e| io_error("readv(2) into the ring from", fd, e))?;
            region.commit(n).map_err(|e| ep.corrupt(e))?;
            if n > 0 && tx.publish_and_check(&ep.own_flag()) {
                ep.waiter.notify_peer()?;
            }
            Ok(Some(n))
        })
    }
}

impl ReadHalf {
    /// Writes up to `max` readable bytes straight from the ring to `fd` (`writev(2)` from
    /// readable ring space: no bounce buffer), consumes what the kernel took, and signals the
    /// peer if it waits for space. Returns the bytes moved (`Ok(0)` only for `max == 0`).
    ///
    /// Waiting: for data, as the half's [`Mode`](crate::Mode) says (blocking: until at least
    /// one byte is readable; non-blocking: [`Error::WouldBlock`] when the ring is empty);
    /// for the fd, as the fd says (a non-blocking fd that is full fails with [`Error::Io`]
    /// of kind [`io::ErrorKind::WouldBlock`], nothing moved). `EINTR` is retried. Fails with
    /// [`Error::PeerClosed`] when the peer has left and everything it sent was written out.
    /// A closed pipe or socket on the other side is [`Error::Io`] of kind
    /// [`io::ErrorKind::BrokenPipe`] (`SIGPIPE` is ignored by Rust programs).
    pub fn write_to_fd(&mut self, fd: BorrowedFd<'_>, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let (waiting, rx) = self.waiting();
        let ep = waiting.ep;
        waiting.run(|request| {
            if ep.is_shut_down() {
                return Err(Error::Closed);
            }
            let available = if request {
                rx.available_or_request(1, &ep.peer_flag())
            } else {
                rx.available()
            }
            .map_err(|e| ep.corrupt(e))?;
            if available == 0 {
                match ep.peer_failure() {
                    None => return Ok(None),
                    // The peer publishes before it leaves: look once more.
                    Some(failure) => {
                        if rx.available().map_err(|e| ep.corrupt(e))? == 0 {
                            return Err(failure);
                        }
                    }
                }
            }
            let region = rx.peek(1).map_err(|e| ep.corrupt(e))?;
            let (iov, count) = iovecs(region.as_raw_parts(), max);
            let n = retry_eintr(|| {
                // SAFETY: each iovec is a piece of the readable region, which the ring
                // protocol gives to this consumer (held `&mut` through `region`) until it
                // publishes past it, valid for reads; `count <= 2` entries are initialised.
                // The kernel only reads them.
                unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), count as libc::c_int) }
            })
            .map_err(|e| io_error("writev(2) from the ring to", fd, e))?;
            region.consume(n).map_err(|e| ep.corrupt(e))?;
            if rx.publish_and_check(&ep.own_flag()) {
                ep.waiter.notify_peer()?;
            }
            Ok(Some(n))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_skip_empty_pieces_and_clip() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let pa = NonNull::new(a.as_mut_ptr()).unwrap();
        let pb = NonNull::new(b.as_mut_ptr()).unwrap();
        let (iov, n) = iovecs([(pa, 5), (pb, 0)], 100);
        assert_eq!((n, iov[0].iov_len), (1, 5));
        let (iov, n) = iovecs([(pa, 5), (pb, 3)], 100);
        assert_eq!((n, iov[0].iov_len, iov[1].iov_len), (2, 5, 3));
        let (iov, n) = iovecs([(pa, 5), (pb, 3)], 6);
        assert_eq!((n, iov[0].iov_len, iov[1].iov_len), (2, 5, 1));
        let (iov, n) = iovecs([(pa, 5), (pb, 3)], 2);
        assert_eq!((n, iov[0].iov_len), (1, 2));
        let (_, n) = iovecs([(pa, 0), (pb, 0)], 2);
        assert_eq!(n, 0);
    }
}
