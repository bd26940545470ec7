//! Channel semantics between two simulated domains (threads of this process, each acting as
//! its own domain through an explicit backend; the host, its broker and the shared memory
//! are the real simulated-host machinery).

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::thread;
use std::time::{Duration, Instant};

use vchan_msg::{Client, Error, Mode, Server, Vchan, default_path};
use vchan_ring::{ControlPage, IndexName, Side};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::sim::xenstored::Quotas;
use vchan_xenif::{Access, Backend, DomId, GrantRef, MappedPages};

struct Host {
    host: SimHost,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new(domains: &[u16]) -> Host {
        Self::with_quotas(domains, Quotas::default())
    }

    fn with_quotas(domains: &[u16], quotas: Quotas) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("vc")
            .tempdir_in("/tmp")
            .unwrap();
        let host = SimHost::builder(dir.path())
            .domains(domains.iter().map(|&d| DomId(d)))
            .broker(BrokerConfig::default())
            .quotas(quotas)
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

    fn server(&self, own: u16, peer: u16, port: u32) -> Server {
        Server::new(DomId(peer), default_path(DomId(own), DomId(peer), port))
            .backend(self.backend(own))
    }

    fn client(&self, own: u16, server: u16, port: u32) -> Client {
        Client::new(DomId(server), default_path(DomId(server), DomId(own), port))
            .backend(self.backend(own))
    }

    /// A connected (server, client) pair, server in dom0 and client in domain 1.
    fn pair(&self, read_min: usize, write_min: usize) -> (Vchan, Vchan) {
        let server = self
            .server(0, 1, 7)
            .read_min(read_min)
            .write_min(write_min)
            .listen()
            .unwrap();
        let client = self.client(1, 0, 7).connect().unwrap();
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

#[test]
fn handshake_and_default_geometry() {
    let host = Host::new(&[1]);
    let (mut server, mut client) = host.pair(0, 0);
    assert_eq!(server.read_capacity(), 1024);
    assert_eq!(server.write_capacity(), 2048);
    assert_eq!(client.read_capacity(), 2048);
    assert_eq!(client.write_capacity(), 1024);
    assert!(server.is_connected() && server.is_open() && client.is_open());

    // The XenStore entries: decimal, readable by the client only.
    let dom0 = host.host.client(DomId(0)).unwrap();
    let path = default_path(DomId(0), DomId(1), 7);
    let rr: u32 = dom0
        .read_string(&format!("{path}/ring-ref"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(rr, 0);
    let perms = dom0.get_perms(&format!("{path}/event-channel")).unwrap();
    assert_eq!(
        perms.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["n0", "r1"]
    );

    server.send(b"hello").unwrap();
    let mut buf = [0; 5];
    client.recv(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    client.write_all(b"world!").unwrap();
    let mut buf = [0; 16];
    let n = server.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"world!");

    // Close: the server removes its path; the client sees the close.
    drop(server);
    assert!(!dom0.exists(&path).unwrap());
    assert!(!client.is_open());
    assert!(matches!(
        client.read(&mut buf),
        Err(Error::PeerClosed { peer: DomId(0) })
    ));
    assert!(matches!(client.write(b"x"), Err(Error::PeerClosed { .. })));
}

#[test]
fn streams_both_ways_for_every_ring_size_pair() {
    let host = Host::new(&[1]);
    let sizes = [
        (0, 0),
        (1024, 2048),
        (2048, 1024),
        (4096, 4096),
        (65536, 1024),
        (1 << 20, 1 << 20),
    ];
    for (k, &(rmin, wmin)) in sizes.iter().enumerate() {
        let port = 100 + k as u32;
        let server = host
            .server(0, 1, port)
            .read_min(rmin)
            .write_min(wmin)
            .listen()
            .unwrap();
        let client = host.client(1, 0, port).connect().unwrap();
        let len = 3 << 20;
        let (a, b) = (pattern(1 + k as u64, len), pattern(100 + k as u64, len));
        let (s_r, mut s_w) = server.split();
        let (c_r, mut c_w) = client.split();
        let (a2, b2) = (a.clone(), b.clone());
        let w1 = thread::spawn(move || s_w.write_all(&a2).unwrap());
        let w2 = thread::spawn(move || c_w.write_all(&b2).unwrap());
        let read_all = |mut r: vchan_msg::ReadHalf, len: usize| {
            thread::spawn(move || {
                let mut got = vec![0; len];
                let mut at = 0;
                // Odd read sizes so that reads straddle the wrap at many offsets.
                let mut step = 1;
                while at < len {
                    let end = (at + step).min(len);
                    at += r.read(&mut got[at..end]).unwrap();
                    step = step % 4093 + 7;
                }
                got
            })
        };
        let g1 = read_all(c_r, len);
        let g2 = read_all(s_r, len);
        w1.join().unwrap();
        w2.join().unwrap();
        assert!(
            g1.join().unwrap() == a,
            "server->client data differs for {rmin}/{wmin}"
        );
        assert!(
            g2.join().unwrap() == b,
            "client->server data differs for {rmin}/{wmin}"
        );
    }
}

#[test]
fn packets_are_all_or_nothing_and_never_larger_than_the_ring() {
    let host = Host::new(&[1]);
    let (mut server, mut client) = host.pair(0, 0);
    // Server writes into a 2 KiB ring.
    let big = vec![7u8; 2049];
    assert!(matches!(
        server.send(&big),
        Err(Error::TooLarge {
            len: 2049,
            capacity: 2048
        })
    ));
    let mut buf = vec![0; 4096];
    assert!(matches!(
        client.recv(&mut buf),
        Err(Error::TooLarge {
            len: 4096,
            capacity: 2048
        })
    ));

    server.set_mode(Mode::NonBlocking);
    server.send(&[1; 1500]).unwrap();
    assert!(matches!(server.send(&[2; 600]), Err(Error::WouldBlock)));
    assert_eq!(server.write(&[3; 600]).unwrap(), 548);
    assert!(matches!(server.write(&[4; 1]), Err(Error::WouldBlock)));

    client.set_mode(Mode::NonBlocking);
    let mut p = vec![0; 1500];
    client.recv(&mut p).unwrap();
    assert!(p.iter().all(|&b| b == 1));
    let mut q = vec![0; 549];
    assert!(matches!(client.recv(&mut q), Err(Error::WouldBlock)));
    assert_eq!(client.data_ready().unwrap(), 548);
    client.recv(&mut q[..548]).unwrap();
    assert!(matches!(client.read(&mut q), Err(Error::WouldBlock)));
    assert_eq!(server.buffer_space().unwrap(), 2048);
}

#[test]
fn blocking_calls_time_out_without_losing_data() {
    let host = Host::new(&[1]);
    let (mut server, mut client) = host.pair(0, 0);
    client.set_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0; 8];
    let t = Instant::now();
    assert!(matches!(client.recv(&mut buf), Err(Error::Timeout(_))));
    assert!(t.elapsed() >= Duration::from_millis(50));
    server.send(b"abc").unwrap();
    // recv of 8 times out again, and the 3 bytes stay.
    assert!(matches!(client.recv(&mut buf), Err(Error::Timeout(_))));
    assert_eq!(client.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
}

#[test]
fn a_blocked_reader_is_woken_by_the_peer_closing() {
    let host = Host::new(&[1]);
    let (server, mut client) = host.pair(0, 0);
    let t = thread::spawn(move || {
        let mut buf = [0; 8];
        let start = Instant::now();
        let r = client.read(&mut buf);
        (r, start.elapsed())
    });
    thread::sleep(Duration::from_millis(100));
    let closed_at = Instant::now();
    drop(server);
    let (r, _) = t.join().unwrap();
    assert!(matches!(r, Err(Error::PeerClosed { .. })), "{r:?}");
    assert!(
        closed_at.elapsed() < Duration::from_millis(100),
        "{:?}",
        closed_at.elapsed()
    );
}

#[test]
fn data_sent_before_closing_is_delivered() {
    let host = Host::new(&[1]);
    let (server, mut client) = host.pair(0, 0);
    let mut server = server;
    server.write_all(b"last words").unwrap();
    drop(server);
    let mut buf = [0; 64];
    let n = client.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"last words");
    assert!(matches!(
        client.read(&mut buf),
        Err(Error::PeerClosed { .. })
    ));
    // std::io::Read sees EOF.
    assert_eq!(std::io::Read::read(&mut client, &mut buf).unwrap(), 0);
}

#[test]
fn server_accepts_a_new_client_after_the_previous_left() {
    let host = Host::new(&[1]);
    let server = host.server(0, 1, 9).read_min(8192).write_min(8192);
    for round in 0..3u8 {
        let srv = server.clone();
        let accept = thread::spawn(move || srv.accept(Some(Duration::from_secs(10))));
        // The client may come before the server has advertised: let it wait.
        let mut client = host
            .client(1, 0, 9)
            .wait_for_server(Duration::from_secs(10))
            .connect()
            .unwrap();
        let mut chan = accept.join().unwrap().unwrap();
        chan.send(&[round; 100]).unwrap();
        let mut buf = [0; 100];
        client.recv(&mut buf).unwrap();
        assert_eq!(buf, [round; 100]);
        drop(client);
        let mut b = [0; 1];
        assert!(matches!(chan.read(&mut b), Err(Error::PeerClosed { .. })));
        drop(chan);
    }
}

#[test]
fn wrong_domains_and_missing_servers_give_clear_errors() {
    let host = Host::new(&[1, 2]);
    // Nothing at the path.
    let e = host.client(1, 0, 55).connect().unwrap_err().to_string();
    assert!(e.contains("no server is listening"), "{e}");
    // A server for domain 2; domain 1 tries to use it.
    let _server = host.server(0, 2, 56).listen().unwrap();
    let path = default_path(DomId(0), DomId(2), 56);
    let e = Client::new(DomId(0), &path)
        .backend(host.backend(1))
        .connect()
        .unwrap_err()
        .to_string();
    assert!(e.contains("not readable by this domain"), "{e}");
    // The client names the wrong server domain: the error says who the server really is
    // (the owner of the entries), which only the owner check knows; and waiting for a
    // server cannot fix it, so it fails at once even when asked to wait.
    let _s2 = host.server(0, 1, 57).listen().unwrap();
    let path = default_path(DomId(0), DomId(1), 57);
    let t = Instant::now();
    let e = Client::new(DomId(2), &path)
        .backend(host.backend(1))
        .wait_for_server(Duration::from_secs(30))
        .connect()
        .unwrap_err();
    assert!(matches!(e, Error::Handshake { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("advertised by domain 0, not by domain 2"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Waiting for a server that never comes ends at the deadline.
    let t = Instant::now();
    let e = host
        .client(1, 0, 58)
        .wait_for_server(Duration::from_millis(200))
        .connect()
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(e.to_string().contains("no server is listening"), "{e}");
    // Over-long paths and impossible sizes.
    let long = format!("/{}", "a".repeat(3100));
    let e = Server::new(DomId(1), long)
        .backend(host.backend(0))
        .listen()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidPath { .. }), "{e}");
    let e = host
        .server(0, 1, 59)
        .read_min((1 << 20) + 1)
        .listen()
        .unwrap_err();
    assert!(e.to_string().contains("1 MiB"), "{e}");
    let e = host.server(0, 0, 60).listen().unwrap_err();
    assert!(e.to_string().contains("this domain"), "{e}");
}

#[test]
fn destroying_the_peer_domain_ends_blocked_calls() {
    let host = Host::new(&[1]);
    let (mut server, client) = host.pair(0, 0);
    let t = thread::spawn(move || {
        let mut buf = [0; 8];
        server.read(&mut buf)
    });
    thread::sleep(Duration::from_millis(50));
    let at = Instant::now();
    host.host.destroy_domain(DomId(1)).unwrap();
    let r = t.join().unwrap();
    assert!(
        matches!(
            r,
            Err(Error::PeerDomainGone { .. } | Error::PeerClosed { .. })
        ),
        "{r:?}"
    );
    assert!(
        at.elapsed() < Duration::from_millis(500),
        "{:?}",
        at.elapsed()
    );
    drop(client);
}

#[test]
fn shutdown_ends_blocked_calls_and_closes() {
    let host = Host::new(&[1]);
    let (server, mut client) = host.pair(0, 0);
    let handle = server.shutdown_handle();
    let (mut r, mut w) = server.split();
    let reader = thread::spawn(move || {
        let mut buf = [0; 4];
        r.read(&mut buf)
    });
    // Fill the server's write ring so that the writer blocks too.
    let writer = thread::spawn(move || w.write_all(&[0u8; 8192]));
    thread::sleep(Duration::from_millis(100));
    let at = Instant::now();
    handle.shutdown();
    assert!(matches!(reader.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(writer.join().unwrap(), Err(Error::Closed)));
    assert!(
        at.elapsed() < Duration::from_millis(100),
        "{:?}",
        at.elapsed()
    );
    // Both halves are gone: the channel is closed and the client sees it (after the data).
    let mut buf = vec![0; 2048];
    let mut got = 0;
    loop {
        match client.read(&mut buf) {
            Ok(n) => got += n,
            Err(Error::PeerClosed { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, 2048);
    handle.shutdown(); // harmless once closed
}

/// Raw access to the control page of a real channel, as a hostile peer has it: a second
/// mapping of the page the server granted to domain `grantee`, taken from XenStore like any
/// client's.
struct RawPage {
    page: ControlPage,
    _map: MappedPages,
}

impl RawPage {
    fn map(host: &Host, grantee: u16, server: u16, path: &str) -> RawPage {
        let xs = host.host.client(DomId(grantee)).unwrap();
        let rr: u32 = xs
            .read_string(&format!("{path}/ring-ref"))
            .unwrap()
            .parse()
            .unwrap();
        let map = host
            .backend(grantee)
            .grant_mapper()
            .unwrap()
            .map(DomId(server), &[GrantRef(rr)], Access::ReadWrite)
            .unwrap();
        let ptr = NonNull::new(map.as_ptr()).unwrap();
        // SAFETY: `map` is a page-aligned, writable one-page mapping that `_map` keeps alive as
        // long as `page`; this process reaches the page's words only atomically (through this
        // view and the channel's own views of its own mapping).
        let page = unsafe { ControlPage::new(ptr) };
        RawPage { page, _map: map }
    }
}

fn assert_corrupt<T: std::fmt::Debug>(what: &str, r: vchan_msg::Result<T>) {
    match r {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("{what}: expected Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn a_hostile_peer_writing_impossible_indices_gets_a_sticky_corrupt_error() {
    let host = Host::new(&[1]);
    let path = default_path(DomId(0), DomId(1), 7);
    // Default geometry: the server reads the 1 KiB left ring, writes the 2 KiB right one.
    // Each case: which side is attacked, which index (the one the *peer* owns), and the value
    // written relative to what the victim knows.
    type Case = (&'static str, Side, IndexName, fn(u32) -> u32);
    let cases: [Case; 6] = [
        // Server reading: the client's `prod` claims more than the ring holds …
        (
            "left.prod = cons + 1025",
            Side::Left,
            IndexName::Prod,
            |c| c.wrapping_add(1025),
        ),
        (
            "left.prod = cons + 2^31",
            Side::Left,
            IndexName::Prod,
            |c| c.wrapping_add(1 << 31),
        ),
        // … or moves backwards.
        ("left.prod = cons - 1", Side::Left, IndexName::Prod, |c| {
            c.wrapping_sub(1)
        }),
        // Client writing: the server's `cons` claims to have consumed more than was written …
        ("left.cons = prod + 1", Side::Left, IndexName::Cons, |p| {
            p.wrapping_add(1)
        }),
        ("left.cons = u32::MAX", Side::Left, IndexName::Cons, |_| {
            u32::MAX
        }),
        // Client reading: the server's `prod` far ahead.
        (
            "right.prod = cons + 4097",
            Side::Right,
            IndexName::Prod,
            |c| c.wrapping_add(4097),
        ),
    ];
    for (name, side, index, bad) in cases {
        let (mut server, mut client) = host.pair(0, 0);
        for c in [&mut server, &mut client] {
            // A regression would then fail with Timeout instead of hanging the test.
            c.set_timeout(Some(Duration::from_secs(5)));
        }
        // Some honest traffic first, so the indices are not all zero.
        client.write_all(&[9; 700]).unwrap();
        let mut buf = [0u8; 300];
        server.recv(&mut buf).unwrap();
        server.write_all(&[8; 500]).unwrap();
        client.recv(&mut buf).unwrap();

        let raw = RawPage::map(&host, 1, 0, &path);
        let base = match index {
            IndexName::Prod => raw.page.load_index(side, IndexName::Cons),
            IndexName::Cons => raw.page.load_index(side, IndexName::Prod),
        };
        // `prod - 1` relative to cons for a backwards prod: use the victim's own consumer
        // position, which the shared cons equals (the victim published it).
        raw.page.store_index(side, index, bad(base));
        let (victim, other) = match (side, index) {
            (Side::Left, IndexName::Prod) | (Side::Right, IndexName::Cons) => {
                (&mut server, &mut client)
            }
            _ => (&mut client, &mut server),
        };
        let mut b = [0u8; 16];
        // The operation that reads the bad index reports it …
        match (side, index, victim.role()) {
            (Side::Left, IndexName::Cons, _) => assert_corrupt(name, victim.write(b"x")),
            _ => assert_corrupt(name, victim.read(&mut b)),
        }
        // … and from then on every operation says so, on both halves, never Closed.
        assert_corrupt(name, victim.read(&mut b));
        assert_corrupt(name, victim.recv(&mut b));
        assert_corrupt(name, victim.write(b"y"));
        assert_corrupt(name, victim.send(b"y"));
        assert_corrupt(name, victim.data_ready());
        assert_corrupt(name, victim.buffer_space());
        assert_corrupt(name, victim.reader().wait_readable(Some(Duration::ZERO)));
        assert_corrupt(name, victim.writer().wait_writable(1, Some(Duration::ZERO)));
        assert_corrupt(name, victim.wait(Some(Duration::ZERO)));
        victim.set_mode(Mode::NonBlocking);
        assert_corrupt(name, victim.read(&mut b));
        assert!(!victim.is_open(), "{name}: a corrupt channel reports open");
        let io = std::io::Read::read(victim, &mut b).unwrap_err();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData, "{name}");
        // A shutdown afterwards does not hide the cause.
        victim.shutdown_handle().shutdown();
        assert_corrupt(name, victim.read(&mut b));
        // The honest side is unaffected until the victim closes.
        assert!(other.is_open(), "{name}");
    }
}

#[test]
fn corruption_seen_by_one_half_ends_the_other_half_blocked_in_another_thread() {
    let host = Host::new(&[1]);
    let path = default_path(DomId(0), DomId(1), 7);
    let (server, client) = host.pair(0, 0);
    let (mut reader, mut writer) = server.split();
    writer.set_timeout(Some(Duration::from_secs(10)));
    // Fill the 2 KiB ring the client never reads: the writer blocks.
    let blocked = thread::spawn(move || {
        let r = writer.write_all(&[1; 4096]);
        (r, Instant::now())
    });
    thread::sleep(Duration::from_millis(100));
    let raw = RawPage::map(&host, 1, 0, &path);
    let cons = raw.page.load_index(Side::Left, IndexName::Cons);
    raw.page
        .store_index(Side::Left, IndexName::Prod, cons.wrapping_add(5000));
    let mut b = [0u8; 8];
    assert_corrupt("reader", reader.read(&mut b));
    let seen = Instant::now();
    let (r, ended) = blocked.join().unwrap();
    assert_corrupt("blocked writer", r);
    let took = ended.saturating_duration_since(seen);
    assert!(
        took < Duration::from_millis(500),
        "the writer took {took:?}"
    );
    drop(client);
}

#[test]
fn listening_again_before_dropping_the_old_channel_keeps_the_new_advertisement() {
    let host = Host::new(&[1]);
    let server = host.server(0, 1, 11);
    let old = server.listen().unwrap();
    let new = server.listen().unwrap();
    let dom0 = host.host.client(DomId(0)).unwrap();
    let path = default_path(DomId(0), DomId(1), 11);
    let entries = || {
        (
            dom0.read_string(&format!("{path}/ring-ref")).unwrap(),
            dom0.read_string(&format!("{path}/event-channel")).unwrap(),
        )
    };
    let advertised = entries();
    drop(old);
    // The old channel's close left the new channel's entries alone …
    assert_eq!(entries(), advertised);
    // … so a client reaches the new channel.
    let mut client = host.client(1, 0, 11).connect().unwrap();
    let mut new = new;
    new.wait_connected(Some(Duration::from_secs(5))).unwrap();
    new.send(b"new").unwrap();
    let mut b = [0u8; 3];
    client.recv(&mut b).unwrap();
    assert_eq!(&b, b"new");
    // And its own close removes them.
    drop(new);
    assert!(!dom0.exists(&path).unwrap());
}

#[test]
fn a_client_started_before_the_server_connects_once_it_comes() {
    let host = Host::new(&[1]);
    let client = host
        .client(1, 0, 12)
        .wait_for_server(Duration::from_secs(30));
    let started = Instant::now();
    let waiting = thread::spawn(move || {
        let r = client.connect();
        (r, started.elapsed())
    });
    // However late the thread runs, the server comes only after this delay, so a connection
    // that took less proves nothing waited; a failure is a failure whatever the timing.
    let delay = Duration::from_millis(300);
    thread::sleep(delay);
    let mut server = host.server(0, 1, 12).listen().unwrap();
    let (r, took) = waiting.join().unwrap();
    let mut client = r.expect("the waiting client did not connect");
    assert!(
        took >= delay,
        "connected after {took:?}, before the server existed"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    server.wait_connected(Some(Duration::from_secs(5))).unwrap();
    client.send(b"late").unwrap();
    let mut b = [0u8; 4];
    server.recv(&mut b).unwrap();
    assert_eq!(&b, b"late");
}

#[test]
fn persistent_server_outlives_its_clients_and_serves_the_next_on_the_same_rings() {
    let host = Host::new(&[1]);
    let mut server = host.server(0, 1, 13).persistent(true).listen().unwrap();
    server.set_timeout(Some(Duration::from_millis(100)));
    let path = default_path(DomId(0), DomId(1), 13);
    let dom0 = host.host.client(DomId(0)).unwrap();
    for round in 0..3u8 {
        let mut client = host.client(1, 0, 13).connect().unwrap();
        client.send(&[round; 10]).unwrap();
        let mut b = [0u8; 10];
        server.recv(&mut b).unwrap();
        assert_eq!(b, [round; 10]);
        // Written while the client is there, read by the next one (the rings persist).
        server.send(&[100 + round; 5]).unwrap();
        if round > 0 {
            let mut b = [0u8; 5];
            client.recv(&mut b).unwrap();
            assert_eq!(b, [100 + round - 1; 5], "round {round}");
        }
        drop(client);
        // The client left: a persistent server stays open, and reads wait (here until the
        // timeout) instead of failing with PeerClosed.
        assert!(server.is_open());
        let mut b = [0u8; 1];
        assert!(matches!(server.read(&mut b), Err(Error::Timeout(_))));
        server.set_mode(Mode::NonBlocking);
        assert!(matches!(server.read(&mut b), Err(Error::WouldBlock)));
        server.set_mode(Mode::Blocking);
        // Its entries stay for the next client.
        assert!(dom0.exists(&format!("{path}/ring-ref")).unwrap());
    }
    // A non-persistent server, by contrast, fails once its client left.
    let (mut plain, client) = host.pair(0, 0);
    drop(client);
    let mut b = [0u8; 1];
    assert!(matches!(plain.read(&mut b), Err(Error::PeerClosed { .. })));
}

fn poll_readable(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: u16) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(timeout_ms)).unwrap() > 0
}

#[test]
fn non_blocking_edge_cases() {
    let host = Host::new(&[1]);
    let (mut server, mut client) = host.pair(0, 0);
    server.set_mode(Mode::NonBlocking);
    client.set_mode(Mode::NonBlocking);
    let mut b = [0u8; 4096];

    // TooLarge wins over WouldBlock: the packet could never fit, waiting would not help.
    assert!(matches!(
        client.send(&[0; 1025]),
        Err(Error::TooLarge {
            len: 1025,
            capacity: 1024
        })
    ));
    assert!(matches!(
        server.recv(&mut b[..1025]),
        Err(Error::TooLarge {
            len: 1025,
            capacity: 1024
        })
    ));
    assert!(matches!(
        client.recv(&mut b[..2049]),
        Err(Error::TooLarge { .. })
    ));

    // The fd: nothing pending, not readable; readable once the peer signals; drained by the
    // operation that consumes the event, so it does not stay readable for nothing.
    assert!(matches!(server.read(&mut b), Err(Error::WouldBlock)));
    assert!(!poll_readable(server.as_fd(), 0));
    client.write_all(b"ping").unwrap();
    assert!(
        poll_readable(server.as_fd(), 2000),
        "no readiness after a write"
    );
    assert_eq!(server.read(&mut b).unwrap(), 4);
    assert!(matches!(server.read(&mut b), Err(Error::WouldBlock)));
    assert!(!poll_readable(server.as_fd(), 0), "stale readiness");

    // wait(): times out with nothing happening, returns true when the peer signals.
    let t = Instant::now();
    assert!(!server.wait(Some(Duration::from_millis(50))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(50));
    let (mut cw, cr) = {
        let (r, w) = client.split();
        (w, r)
    };
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        cw.write_all(b"more").unwrap();
        cw
    });
    assert!(server.wait(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(server.recv(&mut b[..4]).map(|()| &b[..4]).unwrap(), b"more");
    let cw = writer.join().unwrap();
    let mut client = Vchan::unsplit(cr, cw).unwrap();

    // A half-sent packet does not come out as one, and after the peer closed:
    // - what it sent is still delivered, then reads fail with PeerClosed (not WouldBlock);
    // - a recv larger than what is left fails with PeerClosed;
    // - writes fail with PeerClosed;
    // - wait() returns at once: true while data is left, then PeerClosed.
    client.write_all(b"tail").unwrap();
    drop(client);
    assert!(matches!(
        server.recv(&mut b[..5]),
        Err(Error::PeerClosed { .. })
    ));
    assert!(server.wait(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(server.read(&mut b[..2]).unwrap(), 2);
    assert_eq!(server.read(&mut b).unwrap(), 2);
    assert!(matches!(server.read(&mut b), Err(Error::PeerClosed { .. })));
    assert!(matches!(
        server.recv(&mut b[..1]),
        Err(Error::PeerClosed { .. })
    ));
    assert!(matches!(server.write(b"x"), Err(Error::PeerClosed { .. })));
    assert!(matches!(server.send(b"x"), Err(Error::PeerClosed { .. })));
    let t = Instant::now();
    assert!(matches!(
        server.wait(Some(Duration::from_secs(5))),
        Err(Error::PeerClosed { .. })
    ));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "wait slept on a dead channel"
    );
    assert!(!server.is_open());

    // After shutdown: Closed everywhere, including wait().
    let (server2, _client2) = {
        let s = host.server(0, 1, 8).listen().unwrap();
        let c = host.client(1, 0, 8).connect().unwrap();
        (s, c)
    };
    let mut server2 = server2;
    server2.set_mode(Mode::NonBlocking);
    server2.shutdown_handle().shutdown();
    assert!(matches!(server2.read(&mut b), Err(Error::Closed)));
    assert!(matches!(server2.write(b"x"), Err(Error::Closed)));
    assert!(matches!(server2.wait(None), Err(Error::Closed)));
}

#[test]
fn wraparound_at_every_offset_of_small_rings() {
    let host = Host::new(&[1]);
    // (read_min, write_min): the in-page 1 KiB and 2 KiB rings, and one-page granted rings.
    for (k, (rmin, wmin)) in [(0, 0), (4096, 4096)].into_iter().enumerate() {
        let port = 200 + k as u32;
        let mut server = host
            .server(0, 1, port)
            .read_min(rmin)
            .write_min(wmin)
            .listen()
            .unwrap();
        let mut client = host.client(1, 0, port).connect().unwrap();
        let raw = RawPage::map(&host, 1, 0, &default_path(DomId(0), DomId(1), port));
        // Both directions: client→server on the left ring, server→client on the right.
        for (side, size) in [
            (Side::Left, server.read_capacity()),
            (Side::Right, client.read_capacity()),
        ] {
            let (tx, rx) = match side {
                Side::Left => (&mut client, &mut server),
                Side::Right => (&mut server, &mut client),
            };
            let mut got = vec![0u8; size];
            for offset in 0..size {
                // Place both indices at `offset`, by moving the needed bytes through.
                let pos = raw.page.load_index(side, IndexName::Prod) as usize % size;
                let step = (offset + size - pos) % size;
                if step > 0 {
                    tx.send(&vec![0xee; step]).unwrap();
                    rx.recv(&mut got[..step]).unwrap();
                }
                assert_eq!(
                    raw.page.load_index(side, IndexName::Prod) as usize % size,
                    offset
                );
                assert_eq!(
                    raw.page.load_index(side, IndexName::Cons) as usize % size,
                    offset
                );
                // A full ring from there crosses the end (for every offset but 0), written in
                // one packet and read back in two pieces that split at another place.
                let data: Vec<u8> = (0..size)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(offset as u8))
                    .collect();
                tx.send(&data).unwrap();
                let cut = (offset * 7 + 1) % size;
                rx.recv(&mut got[..cut]).unwrap();
                rx.recv(&mut got[cut..]).unwrap();
                assert!(
                    got == data,
                    "{side:?} ring of {size} bytes at offset {offset}"
                );
            }
        }
    }
}

#[test]
fn requiring_the_peer_domain_watch_fails_clearly_when_it_cannot_be_had() {
    // No watches at all for unprivileged domains: domain 2 serves domain 1.
    let host = Host::with_quotas(
        &[1, 2],
        Quotas {
            watches_per_domain: 0,
            ..Quotas::default()
        },
    );
    let server = host.server(2, 1, 14).listen().unwrap();
    assert!(!server.watches_peer_domain());
    let e = host
        .client(1, 2, 14)
        .watch_peer_domain(true)
        .connect()
        .unwrap_err();
    assert!(matches!(e, Error::Handshake { .. }), "{e:?}");
    assert!(e.to_string().contains("@releaseDomain"), "{e}");
    // By default the channel opens without the watch (and warns on stderr) …
    let client = host.client(1, 2, 14).connect().unwrap();
    assert!(!client.watches_peer_domain());
    // … and with it switched off, silently.
    drop(client);
    let client = host
        .client(1, 2, 14)
        .watch_peer_domain(false)
        .connect()
        .unwrap();
    assert!(!client.watches_peer_domain());
    // Dom0 serving watches domain 1 (dom0 may); a client of dom0 never needs to.
    let (s, c) = host.pair(0, 0);
    assert!(s.watches_peer_domain());
    assert!(!c.watches_peer_domain());
}
