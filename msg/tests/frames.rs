//! Frames over a real channel between two simulated domains (threads of this process, each
//! acting as its own domain through an explicit backend; the host, its broker and the shared
//! memory are the real simulated-host machinery).

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use vchan_msg::frame::{FIRST_RESERVED_TAG, FrameError, FrameReader, Malformation, TAG_SKIP};
use vchan_msg::{Client, Error, Mode, Server, SpinPolicy, Vchan, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

struct Host {
    host: SimHost,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("vf")
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

    /// A connected (server in dom0, client in domain 1) pair on `port`. The server reads
    /// `read_min` and writes `write_min` bytes rings.
    fn pair(&self, port: u32, read_min: usize, write_min: usize) -> (Vchan, Vchan) {
        self.pair_spinning(port, read_min, write_min, SpinPolicy::default())
    }

    /// [`Host::pair`] with both ends spinning as `spin` says before they sleep.
    fn pair_spinning(
        &self,
        port: u32,
        read_min: usize,
        write_min: usize,
        spin: SpinPolicy,
    ) -> (Vchan, Vchan) {
        let server = Server::new(DomId(1), default_path(DomId(0), DomId(1), port))
            .backend(self.backend(0))
            .read_min(read_min)
            .write_min(write_min)
            .spin(spin)
            .listen()
            .unwrap();
        let client = Client::new(DomId(0), default_path(DomId(0), DomId(1), port))
            .backend(self.backend(1))
            .spin(spin)
            .connect()
            .unwrap();
        (server, client)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Msg {
    seq: u64,
    kind: u32,
    flags: u32,
    body: [u8; 48],
}

fn msg(seq: u64) -> Msg {
    let mut body = [0u8; 48];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    Msg {
        seq,
        kind: (seq % 7) as u32,
        flags: 0xA5A5_0000 | seq as u32 & 0xFFFF,
        body,
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

#[test]
fn typed_and_variable_frames_stream_across_ring_sizes() {
    let host = Host::new();
    for (k, &ring) in [0usize, 4096, 65536, 1 << 20].iter().enumerate() {
        let (server, client) = host.pair(10 + k as u32, ring, ring);
        let (_sr, mut w) = server.into_frames().unwrap();
        let (mut r, _cw) = client.into_frames().unwrap();
        let max = w.max_payload();
        assert_eq!(max, r.max_payload());
        let count = 20_000u64;
        let writer = thread::spawn(move || {
            for seq in 0..count {
                match seq % 3 {
                    0 => w.send(1, &msg(seq)).unwrap(),
                    1 => {
                        // Lengths sweep the whole range so that frames end everywhere and
                        // skip markers occur at every offset.
                        let len = (seq as usize * 7919) % (max + 1);
                        let body = pattern(seq, len);
                        let n = w
                            .send_with(2, len, |buf| {
                                buf.write_at(0, &body)?;
                                Ok::<_, FrameError>(len)
                            })
                            .unwrap();
                        assert_eq!(n, len);
                    }
                    _ => w.send(3, &seq.to_le_bytes()).unwrap(),
                }
            }
            w
        });
        for seq in 0..count {
            match seq % 3 {
                0 => {
                    let (tag, m): (u32, Msg) = r.recv_copy().unwrap();
                    assert_eq!((tag, m), (1, msg(seq)));
                }
                1 => {
                    let f = r.recv().unwrap();
                    let len = (seq as usize * 7919) % (max + 1);
                    assert_eq!((f.tag(), f.len()), (2, len));
                    assert!(f.to_vec() == pattern(seq, len), "frame {seq} differs");
                }
                _ => {
                    let f = r.recv().unwrap();
                    assert_eq!((f.tag(), f.read::<u64>(0).unwrap()), (3, seq));
                }
            }
        }
        writer.join().unwrap();
    }
}

#[test]
fn frames_fill_the_ring_and_wrap_with_skip_markers() {
    let host = Host::new();
    let (server, client) = host.pair(20, 0, 0); // the server writes a 2 KiB ring
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    assert_eq!(w.capacity(), 2048);
    w.set_mode(Mode::NonBlocking);
    r.set_mode(Mode::NonBlocking);
    let mut expected = std::collections::VecDeque::new();
    let mut seq = 0u64;
    for round in 0..200 {
        // Fill until the ring refuses, with sizes that do not divide the ring.
        loop {
            let len = [100, 333, 1016 - 8, 7, 0, 600][(seq % 6) as usize];
            let body = pattern(seq, len);
            match w.send(9, body.as_slice()) {
                Ok(()) => expected.push_back(body),
                Err(e) if e.is_would_block() => break,
                Err(e) => panic!("{e}"),
            }
            seq += 1;
        }
        assert!(!expected.is_empty());
        // Drain some (all on even rounds).
        let keep = if round % 2 == 0 {
            0
        } else {
            expected.len() / 2
        };
        while expected.len() > keep {
            let f = r.recv().unwrap();
            assert_eq!(f.to_vec(), expected.pop_front().unwrap());
        }
    }
    while let Some(body) = expected.pop_front() {
        assert_eq!(r.recv().unwrap().to_vec(), body);
    }
    assert!(r.try_recv().unwrap().is_none());
    assert!(matches!(
        r.recv(),
        Err(FrameError::Channel(Error::WouldBlock))
    ));
    // The largest frame fills the whole ring exactly.
    let big = pattern(1, w.max_payload());
    w.send(4, big.as_slice()).unwrap();
    assert!(w.send(4, &[0u8; 0][..]).unwrap_err().is_would_block());
    assert_eq!(r.recv().unwrap().to_vec(), big);
}

#[test]
fn a_borrowed_frame_reads_every_way_and_gives_space_back_when_dropped() {
    let host = Host::new();
    let (server, client) = host.pair(30, 0, 0);
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    let m = msg(77);
    w.send(5, &m).unwrap();
    let frame = r.recv().unwrap();
    assert_eq!(frame.tag(), 5);
    assert_eq!(frame.len(), 64);
    assert_eq!(frame.header().len, 64);
    assert!(!frame.is_empty());
    // Typed single-fetch reads at offsets, bounds-checked.
    assert_eq!(frame.read::<u64>(0).unwrap(), 77);
    assert_eq!(frame.read::<u32>(12).unwrap(), m.flags);
    assert_eq!(frame.read::<[u8; 48]>(16).unwrap(), m.body);
    let e = frame.read::<u64>(60).unwrap_err();
    assert!(
        matches!(
            e,
            FrameError::OutOfBounds {
                offset: 60,
                size: 8,
                len: 64
            }
        ),
        "{e}"
    );
    // Copies.
    let mut part = [0u8; 4];
    frame.read_into(8, &mut part).unwrap();
    assert_eq!(u32::from_ne_bytes(part), m.kind);
    assert_eq!(frame.to_vec(), m.as_bytes());
    // The volatile view.
    let view = frame.bytes();
    assert_eq!(view.len(), 64);
    assert_eq!(view.get(16), Some(m.body[0]));
    assert_eq!(view.get(64), None);
    assert_eq!(view.subslice(16, 48).unwrap().to_vec(), m.body);
    assert!(view.subslice(16, 49).is_err());
    let mut small = [0u8; 10];
    assert_eq!(view.copy_to(&mut small), 10);
    // Writing out: to an io::Write, and to a pipe straight from the ring.
    let mut out = Vec::new();
    frame.write_to(&mut out).unwrap();
    assert_eq!(out, m.as_bytes());
    let (rd, wr) = nix::unistd::pipe().unwrap();
    frame.write_all_to_fd(wr.as_fd()).unwrap();
    drop(wr);
    let mut piped = Vec::new();
    std::fs::File::from(rd).read_to_end(&mut piped).unwrap();
    assert_eq!(piped, m.as_bytes());
    // The trusted-peer opt-in: a slice and a zerocopy Ref (payloads are 8-byte aligned).
    // SAFETY: the writer is this test's own endpoint on the same thread: nothing writes the
    // frame while the views live.
    let slice = unsafe { frame.as_slice_trusted() };
    // SAFETY: as above.
    let typed = unsafe { frame.as_ref_trusted::<Msg>() };
    assert_eq!(slice, m.as_bytes());
    assert_eq!(*typed.unwrap(), m);
    // SAFETY: as above.
    let wrong = unsafe { frame.as_ref_trusted::<[u8; 63]>() };
    assert!(matches!(wrong, Err(FrameError::Cast { len: 64, .. })));
    // Unread: it comes again; dropped: its space goes back.
    frame.unread();
    let again = r.recv().unwrap();
    assert_eq!(again.read::<u64>(0).unwrap(), 77);
    w.set_mode(Mode::NonBlocking);
    let filler = vec![0u8; 2048 - 72 - 8];
    w.send(6, filler.as_slice()).unwrap(); // the ring is now full
    assert!(w.send(6, &0u8).unwrap_err().is_would_block());
    drop(again);
    w.send(6, &0u64).unwrap(); // 16 bytes fit in the 72 given back
    assert_eq!(r.recv().unwrap().len(), filler.len());
    again_finish(&mut r);
}

fn again_finish(r: &mut FrameReader) {
    let f = r.recv().unwrap();
    assert_eq!(f.read::<u64>(0).unwrap(), 0);
    f.finish().unwrap();
}

#[test]
fn typed_receive_of_the_wrong_size_leaves_the_frame() {
    let host = Host::new();
    let (server, client) = host.pair(40, 0, 0);
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    w.send(8, &[1u16, 2, 3]).unwrap();
    let e = r.recv_copy::<u64>().unwrap_err();
    assert!(
        matches!(
            e,
            FrameError::LengthMismatch {
                tag: 8,
                len: 6,
                expected: 8
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("left unread"), "{e}");
    assert!(!e.is_fatal());
    let (tag, v) = r.recv_copy::<[u16; 3]>().unwrap();
    assert_eq!((tag, v), (8, [1, 2, 3]));
}

#[test]
fn a_batch_is_published_at_once_and_may_exceed_the_ring() {
    let host = Host::new();
    let (server, client) = host.pair(50, 0, 0);
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    r.set_mode(Mode::NonBlocking);
    let mut batch = w.batch().unwrap();
    for i in 0..20u64 {
        batch.send(1, &i).unwrap();
    }
    assert_eq!(batch.len(), 20);
    assert!(
        r.try_recv().unwrap().is_none(),
        "staged frames are invisible"
    );
    assert_eq!(batch.finish().unwrap(), 20);
    let mut got = Vec::new();
    let n = r
        .recv_batch(usize::MAX, |f| got.push(f.read::<u64>(0).unwrap()))
        .unwrap();
    assert_eq!(n, 20);
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    // recv_batch stops at `max`; the rest stays.
    let mut batch = w.batch().unwrap();
    for i in 0..5u64 {
        batch.send(1, &i).unwrap();
    }
    drop(batch); // dropping publishes too
    assert_eq!(r.recv_batch(3, |_| {}).unwrap(), 3);
    assert_eq!(r.recv_batch(3, |_| {}).unwrap(), 2);
    assert!(r.recv_batch(3, |_| {}).unwrap_err().is_would_block());

    // A batch of 1 MiB through a 2 KiB ring: staged frames are published whenever the ring
    // is full, so the blocked writer and the reader make progress.
    r.set_mode(Mode::Blocking);
    let reader = thread::spawn(move || {
        let mut next = 0u64;
        while next < 16_384 {
            r.recv_batch(64, |f| {
                assert_eq!(f.read::<u64>(0).unwrap(), next);
                assert_eq!(f.len(), 64);
                next += 1;
            })
            .unwrap();
        }
        r
    });
    let mut batch = w.batch().unwrap();
    for i in 0..16_384u64 {
        let mut m = [0u64; 8];
        m[0] = i;
        batch.send(2, &m).unwrap();
    }
    batch.finish().unwrap();
    reader.join().unwrap();
}

#[test]
fn impossible_sends_are_refused_with_what_to_do() {
    let host = Host::new();
    let (server, client) = host.pair(60, 0, 0);
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    let e = w.send(1, vec![0u8; 2041].as_slice()).unwrap_err();
    assert!(
        matches!(
            e,
            FrameError::TooLarge {
                len: 2041,
                max: 2040
            }
        ),
        "{e}"
    );
    let s = e.to_string();
    assert!(s.contains("Split") && s.contains("larger ring"), "{s}");
    for tag in [TAG_SKIP, FIRST_RESERVED_TAG] {
        let e = w.send(tag, &0u8).unwrap_err();
        assert!(matches!(e, FrameError::ReservedTag { .. }), "{e}");
    }
    // A fill closure's own error sends nothing; reporting more than reserved is refused.
    let e = w
        .send_with(1, 8, |_buf| Err::<usize, _>("disk on fire"))
        .unwrap_err();
    assert!(matches!(&e, FrameError::Fill(inner) if inner.to_string() == "disk on fire"));
    let e = w.send_with(1, 8, |_| Ok::<_, FrameError>(9)).unwrap_err();
    assert!(
        matches!(e, FrameError::FillOverrun { written: 9, max: 8 }),
        "{e}"
    );
    // A FrameError from inside the closure comes out as itself.
    let e = w
        .send_with(1, 8, |buf| buf.write_at(4, &[0; 8]).map(|_| 8))
        .unwrap_err();
    assert!(
        matches!(e, FrameError::OutOfBounds { offset: 4, .. }),
        "{e}"
    );
    // Nothing of the above reached the reader.
    assert!(r.try_recv().unwrap().is_none());
}
#[test]
fn blocking_receives_wake_up_time_out_and_end_with_the_peer() {
    let host = Host::new();
    let (server, client) = host.pair(70, 0, 0);
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    r.set_timeout(Some(Duration::from_millis(50)));
    let t = Instant::now();
    let e = r.recv().unwrap_err();
    assert!(matches!(e, FrameError::Channel(Error::Timeout(_))), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(50));
    r.set_timeout(None);
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        w.send(1, &42u64).unwrap();
        thread::sleep(Duration::from_millis(30));
        w.send(2, &43u64).unwrap();
        w.send(3, &44u64).unwrap();
        // Closing: the frames sent before are still delivered.
        drop(w);
        drop(_sr);
    });
    assert_eq!(r.recv_copy::<u64>().unwrap(), (1, 42));
    assert_eq!(r.recv_copy::<u64>().unwrap(), (2, 43));
    sender.join().unwrap();
    assert_eq!(r.recv_copy::<u64>().unwrap(), (3, 44));
    let e = r.recv().unwrap_err();
    assert!(
        matches!(e, FrameError::Channel(Error::PeerClosed { .. })),
        "{e}"
    );
    assert!(e.is_fatal());
}

/// A peer that writes raw bytes: each malformation is a distinct, sticky error that shuts
/// the channel down, never a panic or a hang.
#[test]
fn a_hostile_peers_malformed_frames_are_errors() {
    let host = Host::new();
    let header = |tag: u32, len: u32| {
        let mut h = tag.to_le_bytes().to_vec();
        h.extend_from_slice(&len.to_le_bytes());
        h
    };
    // The client writes the server's 1 KiB read ring.
    type Case = (&'static str, Vec<u8>, fn(&Malformation) -> bool);
    let cases: Vec<Case> = vec![
        (
            "reserved tag",
            header(FIRST_RESERVED_TAG + 3, 0),
            |m| matches!(m, Malformation::ReservedTag { tag } if *tag == FIRST_RESERVED_TAG + 3),
        ),
        ("length beyond the ring", header(1, 1017), |m| {
            matches!(
                m,
                Malformation::LengthBeyondRing {
                    len: 1017,
                    max: 1016
                }
            )
        }),
        ("half a header", vec![1, 0, 0, 0], |m| {
            matches!(m, Malformation::ShortHeader { available: 4 })
        }),
        ("frame longer than published", header(1, 100), |m| {
            matches!(
                m,
                Malformation::BeyondPublished {
                    footprint: 112,
                    available: 8
                }
            )
        }),
        ("skip marker at offset 0", header(TAG_SKIP, 1016), |m| {
            matches!(m, Malformation::SkipAtRingStart)
        }),
        (
            "bad skip marker",
            [header(1, 0), header(TAG_SKIP, 5)].concat(),
            |m| {
                matches!(
                    m,
                    Malformation::BadSkip {
                        len: 5,
                        expected: 1008
                    }
                )
            },
        ),
        (
            "frame across the ring's end",
            [header(1, 0), header(1, 1010), vec![0; 1008]].concat(),
            |m| {
                matches!(
                    m,
                    Malformation::CrossesRingEnd {
                        len: 1010,
                        room: 1016
                    }
                )
            },
        ),
    ];
    for (k, (what, bytes, check)) in cases.into_iter().enumerate() {
        let (server, mut client) = host.pair(100 + k as u32, 0, 0);
        client.write_all(&bytes).unwrap();
        let (mut r, mut sw) = server.into_frames().unwrap();
        r.set_timeout(Some(Duration::from_secs(5)));
        // A leading valid empty frame in some cases.
        let first = loop {
            match r.recv() {
                Ok(f) => {
                    assert_eq!(f.len(), 0, "{what}");
                }
                Err(e) => break e,
            }
        };
        match &first {
            FrameError::Malformed { problem, .. } => assert!(check(problem), "{what}: {first}"),
            other => panic!("{what}: {other}"),
        }
        assert!(first.is_fatal());
        // Sticky, and the channel is shut down on this side.
        assert!(
            matches!(r.recv(), Err(FrameError::Malformed { .. })),
            "{what}"
        );
        assert!(
            matches!(r.try_recv(), Err(FrameError::Malformed { .. })),
            "{what}"
        );
        let e = sw.send(1, &0u8).unwrap_err();
        assert!(
            matches!(e, FrameError::Channel(Error::Closed)),
            "{what}: {e}"
        );
        assert!(!sw.is_open());
    }
}

#[test]
fn frames_need_a_channel_that_carried_no_stream_bytes() {
    let host = Host::new();
    let (mut server, client) = host.pair(200, 0, 0);
    server.write_all(b"abc").unwrap();
    let e = server.into_frames().unwrap_err();
    assert!(matches!(e, FrameError::Unsuitable { .. }), "{e}");
    assert!(e.to_string().contains("ring offset 3"), "{e}");
    drop(client);
}

#[test]
fn frames_from_and_to_file_descriptors() {
    let host = Host::new();
    let (server, client) = host.pair(210, 65536, 65536);
    let (_sr, mut w) = server.into_frames().unwrap();
    let (mut r, _cw) = client.into_frames().unwrap();
    let data = pattern(9, 3 << 20);
    let mut src = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut src, &data).unwrap();
    std::io::Seek::rewind(&mut src).unwrap();
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let writer = thread::spawn(move || {
        // File -> frames: read(2) straight into the ring, 60000 bytes per frame; an empty
        // frame at end of file.
        loop {
            let n = w.send_from_fd(1, src.as_fd(), 60_000).unwrap();
            if n == 0 {
                break;
            }
        }
    });
    let drain = thread::spawn(move || {
        let mut out = Vec::new();
        std::fs::File::from(rd).read_to_end(&mut out).unwrap();
        out
    });
    // Frames -> pipe: write(2) straight from the ring.
    loop {
        let f = r.recv().unwrap();
        if f.is_empty() {
            break;
        }
        f.write_all_to_fd(wr.as_fd()).unwrap();
    }
    drop(wr);
    writer.join().unwrap();
    assert!(drain.join().unwrap() == data, "file contents differ");
}

/// Payload length of frame `seq` in [`frames_over_half_the_ring_with_both_sides_blocking`]:
/// two of three are larger than half the ring, so that after most skip markers the writer
/// needs the marker's space back before its frame fits.
fn over_half_len(seq: u64, max: usize) -> usize {
    let half = max / 2 + 8;
    match seq % 3 {
        0 => (seq as usize * 37) % 200,
        _ => half + (seq as usize * 7919) % (max - half + 1),
    }
}

/// Both sides block, sleeping at once (no spin) or after the default spin, with frames of
/// more than half the ring, so that lone skip markers are published at every moment of the
/// reader's protocol. A lost wake-up fails the test through the timeouts instead of hanging.
#[test]
fn frames_over_half_the_ring_with_both_sides_blocking() {
    let host = Host::new();
    let limit = Some(Duration::from_secs(20));
    for (k, spin) in [SpinPolicy::OFF, SpinPolicy::default()]
        .into_iter()
        .enumerate()
    {
        // The server writes a 2 KiB ring, the client a 4 KiB one (for the acknowledgements).
        let (server, client) = host.pair_spinning(300 + k as u32, 4096, 0, spin);
        let (mut acks, mut w) = server.into_frames().unwrap();
        let (mut r, mut ack_w) = client.into_frames().unwrap();
        for t in [&mut r as &mut dyn SetLimit, &mut w, &mut acks, &mut ack_w] {
            t.limit(limit);
        }
        let max = w.max_payload();
        assert_eq!(max, 2040);
        let count = 30_000u64;
        let started = Instant::now();
        let writer = thread::spawn(move || {
            for seq in 0..count {
                let len = over_half_len(seq, max);
                let r = if seq % 5 == 4 {
                    // Through a batch (its own wait-for-space path, then one publish).
                    let mut batch = w.batch().unwrap();
                    let r = batch.send_with(7, len, |buf| fill_frame(buf, seq, len));
                    batch.finish().and(r)
                } else {
                    w.send_with(7, len, |buf| fill_frame(buf, seq, len))
                };
                if let Err(e) = r {
                    panic!("sending frame {seq} ({len} bytes): {e}");
                }
                if seq % 1000 == 999 {
                    // Some back-pressure the other way: the reader acknowledges.
                    let (_, got): (u32, u64) = acks.recv_copy().unwrap();
                    assert_eq!(got, seq);
                }
            }
            (w, acks)
        });
        for seq in 0..count {
            let f = match r.recv() {
                Ok(f) => f,
                Err(e) => panic!("spin {spin:?}: receiving frame {seq}: {e}"),
            };
            let len = over_half_len(seq, max);
            assert_eq!((f.tag(), f.len()), (7, len), "frame {seq}");
            if len >= 16 {
                assert_eq!(f.read::<u64>(0).unwrap(), seq);
                assert_eq!(f.read::<u64>(len - 8).unwrap(), !seq);
            }
            drop(f);
            if seq % 1000 == 999 {
                ack_w.send(1, &seq).unwrap();
            }
        }
        let _ends = writer.join().unwrap();
        eprintln!("{count} frames, spin {spin:?}: {:.2?}", started.elapsed());
    }
}

trait SetLimit {
    fn limit(&mut self, t: Option<Duration>);
}

impl SetLimit for FrameReader {
    fn limit(&mut self, t: Option<Duration>) {
        self.set_timeout(t);
    }
}

impl SetLimit for vchan_msg::frame::FrameWriter {
    fn limit(&mut self, t: Option<Duration>) {
        self.set_timeout(t);
    }
}

/// Writes `seq` at the start and `!seq` at the end of a payload of `len` (at least 16) bytes.
fn fill_frame(
    buf: &mut vchan_msg::frame::FrameBuf<'_>,
    seq: u64,
    len: usize,
) -> Result<usize, FrameError> {
    if len >= 16 {
        buf.write_at(0, &seq.to_le_bytes())?;
        buf.write_at(len - 8, &(!seq).to_le_bytes())?;
    }
    Ok(len)
}

fn raw_header(tag: u32, len: u32) -> Vec<u8> {
    let mut h = tag.to_le_bytes().to_vec();
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// Channel level, reader side: a hand-driven writer (raw stream bytes on the other end)
/// publishes a lone skip marker while the frame reader waits (asleep, spinning, or between
/// looks, as the pause before it varies), and then waits itself for the marker's space,
/// which its next frame needs. The reader must step over the marker, give its space back
/// and signal, and still be woken by the frame that follows. A lost wake-up on either side
/// is a timeout, and fails the test.
#[test]
fn a_lone_skip_marker_meets_a_waiting_frame_reader() {
    let host = Host::new();
    for (k, spin) in [SpinPolicy::OFF, SpinPolicy::default()]
        .into_iter()
        .enumerate()
    {
        // The server reads the 1 KiB ring the client writes.
        let (server, mut client) = host.pair_spinning(400 + k as u32, 0, 0, spin);
        let (mut r, _sw) = server.into_frames().unwrap();
        r.set_timeout(Some(Duration::from_secs(10)));
        assert_eq!(r.capacity(), 1024);
        let (tx_frames, rx_frames) = std::sync::mpsc::channel();
        let reader = thread::spawn(move || {
            loop {
                let f = match r.recv() {
                    Ok(f) => f,
                    Err(e) => return Err(e),
                };
                let got = (f.tag(), f.to_vec());
                drop(f); // gives the space back (and signals a waiting writer)
                if got.0 == 0 {
                    return Ok(());
                }
                tx_frames.send(got).unwrap();
            }
        });
        let pauses = [0u64, 0, 10, 100, 1000, 20_000];
        let expect = |what: &str, round: u32, frame: (u32, Vec<u8>)| match rx_frames
            .recv_timeout(Duration::from_secs(10))
        {
            Ok(got) => assert!(got == frame, "spin {spin:?}, round {round}: {what} differs"),
            Err(e) => panic!("spin {spin:?}, round {round}: {what} never arrived: {e}"),
        };
        // Where the hand-driven writer is in the ring.
        let mut at = 0usize;
        for round in 0..60u32 {
            if at > 512 {
                // A frame that ends exactly at the ring's end (no skip marker).
                let body = pattern(2000 + u64::from(round), 1024 - at - 8);
                client
                    .write_all(&[raw_header(3, body.len() as u32), body.clone()].concat())
                    .unwrap();
                expect("the filler frame", round, (3, body));
                at = 0;
            }
            let small = 16 + 8 * (round as usize % 8);
            let body = pattern(u64::from(round), small);
            client
                .write_all(&[raw_header(1, small as u32), body.clone()].concat())
                .unwrap();
            expect("the small frame", round, (1, body));
            at += small + 8;
            // The reader waits for the next frame now (or soon).
            thread::sleep(Duration::from_micros(pauses[round as usize % pauses.len()]));
            let room = 1024 - at;
            let mut skip = raw_header(TAG_SKIP, (room - 8) as u32);
            skip.resize(room, 0xAB);
            client.write_all(&skip).unwrap();
            // The next frame goes at offset 0 and is larger than the `at` bytes free: the
            // marker's space must come back first.
            let footprint = at + 8 + 8 * (round as usize % 5);
            client
                .writer()
                .wait_writable(footprint, Some(Duration::from_secs(10)))
                .unwrap_or_else(|e| {
                    panic!(
                        "spin {spin:?}, round {round}: the skip marker's space never came \
                         back: {e}"
                    )
                });
            let body = pattern(1000 + u64::from(round), footprint - 8);
            client
                .write_all(&[raw_header(2, body.len() as u32), body.clone()].concat())
                .unwrap();
            expect("the frame after the skip marker", round, (2, body));
            at = footprint;
        }
        client.write_all(&raw_header(0, 0)).unwrap();
        reader.join().unwrap().unwrap();
    }
}

/// Channel level, writer side: a frame that does not fit before the ring's end makes the
/// frame writer publish a skip marker and wait for space; a hand-driven reader (raw stream
/// reads on the other end) sees the marker exactly as the wire format says, consumes it
/// with the frames before it, and the waiting writer is woken and places its frame at
/// offset 0.
#[test]
fn a_frame_writer_waiting_behind_its_skip_marker_is_woken() {
    let host = Host::new();
    // The server writes the 2 KiB ring the client reads.
    let (server, mut client) = host.pair(410, 0, 0);
    let (_sr, mut w) = server.into_frames().unwrap();
    w.set_timeout(Some(Duration::from_secs(10)));
    assert_eq!(w.capacity(), 2048);
    let writer = thread::spawn(move || {
        for round in 0..100u64 {
            // 600 + 1400: the big one never fits after the small one without the marker's
            // space (and the small one's) coming back.
            w.send(1, pattern(round, 592).as_slice())?;
            w.send(2, pattern(round + 7, 1392).as_slice())?;
        }
        Ok::<_, FrameError>(w)
    });
    let at = std::cell::Cell::new(0usize);
    let mut read = |n: usize| {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            got += client.read(&mut buf[got..]).unwrap();
        }
        at.set((at.get() + n) % 2048);
        buf
    };
    for round in 0..100u64 {
        for (tag, len, seed) in [(1u32, 592usize, round), (2, 1392, round + 7)] {
            let mut head = read(8);
            let mut htag = u32::from_le_bytes(head[..4].try_into().unwrap());
            if htag == TAG_SKIP {
                let skip_len = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
                let room = skip_len + 8;
                // The marker says "the rest of the ring", exactly.
                let _ = read(skip_len);
                assert_eq!(at.get(), 0, "round {round}: a skip marker of {room} bytes");
                head = read(8);
                htag = u32::from_le_bytes(head[..4].try_into().unwrap());
            }
            let hlen = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
            assert_eq!((htag, hlen), (tag, len), "round {round}");
            let body = read(len.div_ceil(8) * 8);
            assert!(
                body[..len] == pattern(seed, len)[..],
                "round {round}, tag {tag}"
            );
        }
    }
    writer.join().unwrap().unwrap();
}
