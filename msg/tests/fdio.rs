//! File descriptors ↔ ring with no bounce buffer ([`WriteHalf::read_from_fd`],
//! [`ReadHalf::write_to_fd`]) over a real channel between two simulated domains (threads of
//! this process, each its own domain through an explicit backend; the host, its broker and
//! the shared memory are the real simulated-host machinery), with real pipes and Unix
//! sockets: wrap-around at the ring's end, partial writes, end of file, full and empty fds
//! and rings, a closed peer and a closed output.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use vchan_msg::{Client, Error, Mode, ReadHalf, Server, Vchan, WriteHalf, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};

/// The longest any blocking call of these tests may wait.
const LIMIT: Duration = Duration::from_secs(20);

struct Host {
    host: SimHost,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("vfd")
            .tempdir_in("/tmp")
            .unwrap();
        let host = SimHost::builder(dir.path())
            .domains([DomId(1)])
            .broker(BrokerConfig::default())
            .start()
            .unwrap();
        Host { host, _dir: dir }
    }

    fn backend(&self, domid: u16) -> Backend {
        Backend::Sim {
            dir: self.host.dir().to_owned(),
            domid: DomId(domid),
        }
    }

    /// A connected pair on `port`: the server (dom0) writes a ring of `ring` bytes that the
    /// client (domain 1) reads. Returns the server's writing half and the client's reading
    /// half, and the other two halves (kept open).
    fn pair(&self, port: u32, ring: usize) -> (WriteHalf, ReadHalf, (ReadHalf, WriteHalf)) {
        let path = default_path(DomId(0), DomId(1), port);
        let server = Server::new(DomId(1), &path)
            .backend(self.backend(0))
            .write_min(ring)
            .listen()
            .unwrap();
        let client = Client::new(DomId(0), &path)
            .backend(self.backend(1))
            .connect()
            .unwrap();
        assert_eq!(server.write_capacity(), ring.max(2048));
        let (sr, mut sw) = server.split();
        let (mut cr, cw) = client.split();
        // A lost wake-up fails the test instead of hanging it.
        sw.set_timeout(Some(LIMIT));
        cr.set_timeout(Some(LIMIT));
        (sw, cr, (sr, cw))
    }

    /// Like [`Host::pair`], whole channels.
    fn channels(&self, port: u32, ring: usize) -> (Vchan, Vchan) {
        let (sw, cr, (sr, cw)) = self.pair(port, ring);
        let (mut server, mut client) = (
            Vchan::unsplit(sr, sw).unwrap(),
            Vchan::unsplit(cr, cw).unwrap(),
        );
        server.set_timeout(Some(LIMIT));
        client.set_timeout(Some(LIMIT));
        (server, client)
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    (r.into(), w.into())
}

fn set_nonblocking(fd: impl AsFd) {
    let fd = fd.as_fd();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
}

fn is_fd_would_block(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock)
}

/// Pipe → ring → pipe, 3 MiB through a 4 KiB ring in chunk sizes that divide nothing, so
/// that reservations and readable regions keep crossing the ring's end (two iovecs), with
/// the feeding and draining done by other threads writing and reading odd amounts.
#[test]
fn pipe_to_ring_to_pipe_across_the_rings_end() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(1, 4096);
    let data = pattern(1, 3 << 20);
    let (src_r, mut src_w) = pipe();
    let (dst_r, dst_w) = pipe();
    let d = data.clone();
    let feeder = thread::spawn(move || {
        for piece in d.chunks(3331) {
            src_w.write_all(piece).unwrap();
        }
        // Dropped: end of file for the reader of the pipe.
    });
    let sender = thread::spawn(move || {
        let mut moved = 0usize;
        let mut calls = 0u32;
        loop {
            let n = w
                .read_from_fd(src_r.as_fd(), 1000 + (calls as usize % 7) * 333)
                .unwrap();
            calls += 1;
            if n == 0 {
                break;
            }
            moved += n;
        }
        w.drain(Some(Duration::from_secs(30))).unwrap();
        (moved, w)
    });
    let collector = thread::spawn(move || {
        let mut out = Vec::new();
        let mut dst_r = dst_r;
        dst_r.read_to_end(&mut out).unwrap();
        out
    });
    let mut written = 0usize;
    let mut calls = 0usize;
    while written < data.len() {
        let n = r
            .write_to_fd(dst_w.as_fd(), 777 + (calls % 5) * 1001)
            .unwrap();
        assert!(n > 0);
        written += n;
        calls += 1;
    }
    drop(dst_w);
    feeder.join().unwrap();
    let (moved, _w) = sender.join().unwrap();
    assert_eq!(moved, data.len());
    assert_eq!(written, data.len());
    assert!(collector.join().unwrap() == data, "the bytes differ");
}

/// Unix sockets, non-blocking: an empty socket is a WouldBlock of the fd (nothing moved),
/// a full one too (the bytes stay in the ring and go out once the socket has room), and the
/// stream arrives whole and in order.
#[test]
fn non_blocking_unix_sockets_move_nothing_when_they_cannot() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(2, 65536);
    let (mut app_in, proxy_in) = UnixStream::pair().unwrap();
    let (proxy_out, mut app_out) = UnixStream::pair().unwrap();
    set_nonblocking(&proxy_in);
    set_nonblocking(&proxy_out);
    // Nothing to read yet.
    let e = w.read_from_fd(proxy_in.as_fd(), 4096).unwrap_err();
    assert!(is_fd_would_block(&e), "{e}");
    assert!(e.to_string().contains("readv"), "{e}");
    // Fill the output socket completely before anything comes from the ring.
    let filler = vec![0xEEu8; 4096];
    let mut stuffed = 0usize;
    loop {
        match (&proxy_out).write(&filler) {
            Ok(n) => stuffed += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let data = pattern(2, 200_000);
    app_in.write_all(&data[..50_000]).unwrap();
    let n = w.read_from_fd(proxy_in.as_fd(), 1 << 20).unwrap();
    assert!(n > 0 && n <= 50_000, "{n}");
    let mut sent = n;
    // The output socket is full: nothing leaves the ring.
    let e = r.write_to_fd(proxy_out.as_fd(), 1 << 20).unwrap_err();
    assert!(is_fd_would_block(&e), "{e}");
    assert_eq!(
        r.data_ready().unwrap(),
        n,
        "a refused write consumed ring bytes"
    );
    // Now everything: the app drains its socket while the rest flows.
    let app = thread::spawn(move || {
        let mut got = vec![0u8; stuffed + data.len()];
        app_out.read_exact(&mut got).unwrap();
        assert!(got[..stuffed].iter().all(|&b| b == 0xEE));
        (got[stuffed..].to_vec(), data)
    });
    let feeder = thread::spawn(move || {
        app_in.write_all(&pattern(2, 200_000)[50_000..]).unwrap();
        app_in
    });
    // One thread drives both directions, so neither may wait: a full ring is the channel's
    // WouldBlock, an empty socket the fd's.
    w.set_mode(Mode::NonBlocking);
    r.set_mode(Mode::NonBlocking);
    let mut out = 0usize;
    while out < 200_000 {
        while sent < 200_000 {
            match w.read_from_fd(proxy_in.as_fd(), 1 << 20) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock) => break,
                Err(e) if is_fd_would_block(&e) => break,
                Err(e) => panic!("{e}"),
            }
        }
        match r.write_to_fd(proxy_out.as_fd(), 1 << 20) {
            Ok(n) => out += n,
            // The output socket is full, or the ring empty (the feeder is behind).
            Err(Error::WouldBlock) => thread::sleep(Duration::from_millis(1)),
            Err(e) if is_fd_would_block(&e) => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    let _app_in = feeder.join().unwrap();
    let (got, data) = app.join().unwrap();
    assert!(got == data, "the stream differs");
}

/// A pipe that takes less than what is readable: `write_to_fd` reports the partial write and
/// consumes exactly that much; the rest stays readable and follows in order.
#[test]
fn partial_writes_consume_only_what_the_kernel_took() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(3, 65536);
    let (mut out_r, out_w) = pipe();
    // The smallest pipe buffer: one page.
    nix::fcntl::fcntl(out_w.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    set_nonblocking(&out_w);
    let data = pattern(3, 60_000);
    w.write_all(&data).unwrap();
    let n = r.write_to_fd(out_w.as_fd(), 1 << 20).unwrap();
    assert!(n > 0 && n < data.len(), "{n}");
    assert_eq!(r.data_ready().unwrap(), data.len() - n);
    let mut got = vec![0u8; n];
    out_r.read_exact(&mut got).unwrap();
    assert!(got == data[..n], "the first part differs");
    // The rest, in more partial writes.
    let mut rest = Vec::new();
    while rest.len() < data.len() - n {
        match r.write_to_fd(out_w.as_fd(), 1 << 20) {
            Ok(k) => {
                let mut buf = vec![0u8; k];
                out_r.read_exact(&mut buf).unwrap();
                rest.extend_from_slice(&buf);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(rest == data[n..], "the rest differs");
}

/// End of file: `read_from_fd` returns 0 (and so does `max == 0`, which reads nothing).
#[test]
fn end_of_file_and_empty_requests() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(4, 0);
    let (src_r, mut src_w) = pipe();
    src_w.write_all(b"tail").unwrap();
    assert_eq!(w.read_from_fd(src_r.as_fd(), 0).unwrap(), 0);
    assert_eq!(w.read_from_fd(src_r.as_fd(), 100).unwrap(), 4);
    drop(src_w);
    assert_eq!(w.read_from_fd(src_r.as_fd(), 100).unwrap(), 0);
    let (mut out_r, out_w) = pipe();
    assert_eq!(r.write_to_fd(out_w.as_fd(), 0).unwrap(), 0);
    assert_eq!(r.write_to_fd(out_w.as_fd(), 100).unwrap(), 4);
    drop(out_w);
    let mut got = Vec::new();
    out_r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"tail");
}

/// The ring's own limits in non-blocking mode: a full ring reads nothing from the fd, an
/// empty ring writes nothing to it (both the channel's WouldBlock, the fds untouched).
#[test]
fn a_full_or_empty_ring_leaves_the_fd_alone_in_non_blocking_mode() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(5, 0);
    w.set_mode(Mode::NonBlocking);
    r.set_mode(Mode::NonBlocking);
    let (mut out_r, out_w) = pipe();
    set_nonblocking(&out_r);
    assert!(matches!(
        r.write_to_fd(out_w.as_fd(), 100),
        Err(Error::WouldBlock)
    ));
    let (src_r, mut src_w) = pipe();
    src_w.write_all(&pattern(5, 5000)).unwrap();
    let mut moved = 0;
    loop {
        match w.read_from_fd(src_r.as_fd(), 1 << 20) {
            Ok(n) => moved += n,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(moved, w.capacity(), "the ring is full");
    // The rest is still in the pipe, untouched.
    let mut left = vec![0u8; 5000 - moved];
    let mut src_r = src_r;
    set_nonblocking(&src_r);
    src_r.read_exact(&mut left).unwrap();
    assert!(left == pattern(5, 5000)[moved..]);
    let mut none = [0u8; 1];
    assert!(out_r.read(&mut none).is_err(), "nothing was written out");
}

/// The peer closes: what it wrote is still written out, then `write_to_fd` fails with
/// `PeerClosed`; `read_from_fd` toward a closed peer fails at once and leaves the fd's data
/// where it is.
#[test]
fn a_closed_peer_ends_both_directions_without_losing_data() {
    let host = Host::new();
    let (mut server, mut client) = host.channels(6, 65536);
    let data = pattern(6, 30_000);
    server.write_all(&data).unwrap();
    drop(server);
    let (mut out_r, out_w) = pipe();
    let collector = thread::spawn(move || {
        let mut got = Vec::new();
        out_r.read_to_end(&mut got).unwrap();
        got
    });
    let mut written = 0;
    let end = loop {
        match client.reader().write_to_fd(out_w.as_fd(), 4096) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
    };
    assert!(matches!(end, Error::PeerClosed { .. }), "{end}");
    assert_eq!(written, data.len());
    drop(out_w);
    assert!(collector.join().unwrap() == data);
    let (src_r, mut src_w) = pipe();
    src_w.write_all(b"stays").unwrap();
    let e = client
        .writer()
        .read_from_fd(src_r.as_fd(), 100)
        .unwrap_err();
    assert!(matches!(e, Error::PeerClosed { .. }), "{e}");
    let mut src_r = src_r;
    drop(src_w);
    let mut left = Vec::new();
    src_r.read_to_end(&mut left).unwrap();
    assert_eq!(
        left, b"stays",
        "the fd was read although nothing could be delivered"
    );
}

/// The output's reader is gone: a broken pipe is an I/O error of kind `BrokenPipe`, and the
/// bytes stay in the ring.
#[test]
fn a_closed_output_is_a_broken_pipe_and_consumes_nothing() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(7, 0);
    w.write_all(b"undeliverable").unwrap();
    let (out_r, out_w) = pipe();
    drop(out_r);
    let e = r.write_to_fd(out_w.as_fd(), 100).unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe),
        "{e}"
    );
    assert_eq!(r.data_ready().unwrap(), 13);
    let mut buf = [0u8; 13];
    r.recv(&mut buf).unwrap();
    assert_eq!(&buf, b"undeliverable");
}

/// Blocking on both sides: `read_from_fd` waits for ring space while the reader is slow, and
/// `write_to_fd` waits for data while the writer is slow, across another process-like
/// thread pair; everything arrives.
#[test]
fn blocking_halves_wait_for_space_and_data() {
    let host = Host::new();
    let (mut w, mut r, _rest) = host.pair(8, 0);
    let data = pattern(8, 1 << 20);
    let (src_r, mut src_w) = pipe();
    let d = data.clone();
    let feeder = thread::spawn(move || {
        for (i, piece) in d.chunks(100_000).enumerate() {
            if i % 3 == 0 {
                thread::sleep(Duration::from_millis(5)); // the reader waits for data
            }
            src_w.write_all(piece).unwrap();
        }
    });
    let sender = thread::spawn(move || {
        while w.read_from_fd(src_r.as_fd(), 1 << 16).unwrap() > 0 {}
        w
    });
    let (mut out_r, out_w) = pipe();
    let collector = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 50_000];
        loop {
            thread::sleep(Duration::from_micros(200)); // the writer waits for space
            match out_r.read(&mut buf).unwrap() {
                0 => break got,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let mut written = 0;
    while written < data.len() {
        written += r.write_to_fd(out_w.as_fd(), 1 << 16).unwrap();
    }
    drop(out_w);
    feeder.join().unwrap();
    let _w = sender.join().unwrap();
    assert!(collector.join().unwrap() == data, "the bytes differ");
}

/// `read_from_fd_prefer` holds out for free space only while it spins: a reader that waits
/// for a packet larger than what is in the ring (so it frees nothing) still gets the rest,
/// which arrives in the fd while the ring has less free space than preferred.
#[test]
fn preferring_free_space_never_starves_a_reader_waiting_for_more() {
    let host = Host::new();
    let (mut tx, mut rx, _keep) = host.pair(90, 2048);
    let data = pattern(90, 1900);
    let (pipe_r, mut pipe_w) = pipe();
    let feeder = {
        let data = data.clone();
        thread::spawn(move || {
            // 1200 bytes now: the ring then has 848 free, fewer than the 1024 preferred; the
            // reader waits for all 1900 and frees nothing meanwhile.
            pipe_w.write_all(&data[..1200]).unwrap();
            thread::sleep(Duration::from_millis(50));
            pipe_w.write_all(&data[1200..]).unwrap();
        })
    };
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 1900];
        rx.recv(&mut got).unwrap();
        got
    });
    let mut moved = 0;
    while moved < data.len() {
        let n = tx.read_from_fd_prefer(pipe_r.as_fd(), 2048, 1024).unwrap();
        assert!(n > 0, "end of file after {moved} bytes");
        moved += n;
    }
    feeder.join().unwrap();
    assert_eq!(reader.join().unwrap(), data);
}
