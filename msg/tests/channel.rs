//! Channel semantics between two simulated domains (threads of this process, each acting as
//! its own domain through an explicit backend; the host, its broker and the shared memory
//! are the real simulated-host machinery).

use std::thread;
use std::time::{Duration, Instant};

use vchan_msg::{Client, Error, Mode, Server, Vchan, default_path};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::sim::host::SimHost;
use vchan_xenif::{Backend, DomId};

struct Host {
    host: SimHost,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new(domains: &[u16]) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("vc")
            .tempdir_in("/tmp")
            .unwrap();
        let host = SimHost::builder(dir.path())
            .domains(domains.iter().map(|&d| DomId(d)))
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
    // The client names the wrong server domain.
    let _s2 = host.server(0, 1, 57).listen().unwrap();
    let path = default_path(DomId(0), DomId(1), 57);
    let e = Client::new(DomId(2), &path)
        .backend(host.backend(1))
        .connect()
        .unwrap_err()
        .to_string();
    assert!(e.contains("domain 2"), "{e}");
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
