//! `vchan proxy` between Unix sockets, run as real processes acting as domains of a simulated
//! host embedded in the test.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

#[test]
fn proxy_bridges_unix_sockets_and_serves_one_connection_after_another() {
    let h = host(&[1]);
    let dir = h.dir.path();
    // The service behind the guest-side proxy: an echo server.
    let target = dir.join("echo.sock");
    let listener = UnixListener::bind(&target).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            thread::spawn(move || {
                let mut rd = conn.try_clone().unwrap();
                std::io::copy(&mut rd, &mut conn).unwrap();
            });
        }
    });
    let front = dir.join("front.sock");
    let mut server = h
        .vchan(1)
        .args([
            "proxy",
            "server",
            "0",
            "/local/domain/1/data/vchan/0/40",
            target.to_str().unwrap(),
            "--read-min",
            "64K",
            "--write-min",
            "64K",
        ])
        .spawn()
        .unwrap();
    let mut client = h
        .vchan(0)
        .args([
            "proxy",
            "client",
            "1",
            "/local/domain/1/data/vchan/0/40",
            front.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !front.exists() {
        assert!(Instant::now() < deadline, "the client proxy never listened");
        thread::sleep(Duration::from_millis(20));
    }
    for round in 0..3u8 {
        let data = pattern(10 + round, 1 << 20);
        let mut conn = UnixStream::connect(&front).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut w = conn.try_clone().unwrap();
        let d = data.clone();
        let feeder = thread::spawn(move || {
            w.write_all(&d).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        feeder.join().unwrap();
        assert!(
            got == data,
            "round {round}: {} of {} bytes echoed, or content differs",
            got.len(),
            data.len()
        );
    }
    client.kill().unwrap();
    server.kill().unwrap();
    client.wait().unwrap();
    server.wait().unwrap();
}
