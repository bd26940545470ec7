//! Real threads over the production path (heap control page, `RawRing`, `RawIndex`), both
//! sides sleeping on an "event channel" when they cannot progress and signalling only when
//! the notify protocol says so. A lost wake-up fails the test (the wait times out) instead of
//! hanging it.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use vchan_ring::fuzzing::TestVchan;
use vchan_ring::{Geometry, RingError, Role};

/// One side's event channel: a pending flag with a blocking wait.
#[derive(Default)]
struct EventChannel {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl EventChannel {
    fn signal(&self) {
        *self.pending.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self, who: &str) {
        let guard = self.pending.lock().unwrap();
        let (mut pending, timeout) = self
            .cv
            .wait_timeout_while(guard, Duration::from_secs(20), |p| !*p)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{who}: lost wake-up (no signal in 20 s)"
        );
        *pending = false;
    }
}

/// Deterministic pseudo-random chunk sizes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize + 1
    }
}

fn stream_byte(i: usize) -> u8 {
    (i ^ (i >> 11)).wrapping_mul(131) as u8
}

/// Streams `total` bytes client → server in random-size chunks through a ring of the given
/// geometry, both sides sleeping when stuck.
fn stream_one_way(geometry: Geometry, total: usize, seed: u64) {
    let vchan = TestVchan::with_geometry(geometry);
    let mut tx = vchan.producer(Role::Client).unwrap();
    let mut rx = vchan.consumer(Role::Server).unwrap();
    let client_flag = vchan.notify_flag(Role::Client);
    let server_flag = vchan.notify_flag(Role::Server);
    let client_flag_rx = vchan.notify_flag(Role::Client);
    let server_flag_tx = vchan.notify_flag(Role::Server);
    let (client_ev, server_ev) = (EventChannel::default(), EventChannel::default());
    let cap = tx.capacity();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = XorShift(seed | 1);
            let mut sent = 0;
            let mut chunk = Vec::new();
            while sent < total {
                let n = rng.next(cap * 2).min(total - sent);
                chunk.clear();
                chunk.extend((sent..sent + n).map(stream_byte));
                let mut done = 0;
                while done < n {
                    if tx.space_or_request(1, &server_flag_tx).unwrap() == 0 {
                        client_ev.wait("writer");
                        continue;
                    }
                    done += tx.stage(&chunk[done..]).unwrap();
                    if tx.publish_and_check(&client_flag) {
                        server_ev.signal();
                    }
                }
                sent += n;
            }
        });
        s.spawn(|| {
            let mut rng = XorShift(seed.rotate_left(17) | 1);
            let mut got = 0;
            let mut buf = vec![0u8; cap * 2];
            while got < total {
                if rx.available_or_request(1, &client_flag_rx).unwrap() == 0 {
                    server_ev.wait("reader");
                    continue;
                }
                let want = rng.next(cap * 2);
                let n = rx.take(&mut buf[..want]).unwrap();
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, stream_byte(got + i), "byte {}", got + i);
                }
                got += n;
                if rx.publish_and_check(&server_flag) {
                    client_ev.signal();
                }
            }
        });
    });
    assert!(vchan.guards_intact());
}

#[test]
fn in_page_ring_streams_intact() {
    stream_one_way(Geometry::server_choice(0, 0).unwrap(), 8 << 20, 1);
}

#[test]
fn granted_ring_streams_intact() {
    stream_one_way(Geometry::server_choice(65536, 0).unwrap(), 32 << 20, 2);
}

#[test]
fn largest_ring_streams_intact() {
    stream_one_way(
        Geometry::server_choice(1 << 20, 1 << 20).unwrap(),
        32 << 20,
        3,
    );
}

/// Full duplex: the client sends fixed-size records with `write_all`, the server echoes each
/// one back with zero-copy `peek`/`reserve`, both sleeping on their event channels.
#[test]
fn echo_round_trips_over_both_rings() {
    const RECORD: usize = 100;
    const RECORDS: usize = 50_000;
    let vchan = TestVchan::with_geometry(Geometry::server_choice(2048, 1024).unwrap());
    let mut client_tx = vchan.producer(Role::Client).unwrap();
    let mut client_rx = vchan.consumer(Role::Client).unwrap();
    let mut server_tx = vchan.producer(Role::Server).unwrap();
    let mut server_rx = vchan.consumer(Role::Server).unwrap();
    let (client_ev, server_ev) = (EventChannel::default(), EventChannel::default());
    let (c_own, c_peer) = (
        vchan.notify_flag(Role::Client),
        vchan.notify_flag(Role::Server),
    );
    let (s_own, s_peer) = (
        vchan.notify_flag(Role::Server),
        vchan.notify_flag(Role::Client),
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            // Server: echo every record.
            for _ in 0..RECORDS {
                while server_rx.available_or_request(RECORD, &s_peer).unwrap() < RECORD {
                    server_ev.wait("server read");
                }
                let mut record = [0u8; RECORD];
                let region = server_rx.peek(RECORD).unwrap();
                assert_eq!(region.copy_to(0, &mut record), RECORD);
                region.consume(RECORD).unwrap();
                loop {
                    match server_tx.reserve(RECORD) {
                        Ok(mut out) => {
                            out.copy_from(0, &record);
                            out.commit_all();
                            break;
                        }
                        Err(RingError::NoSpace { .. }) => {
                            if server_tx.space_or_request(RECORD, &s_peer).unwrap() < RECORD {
                                server_ev.wait("server write");
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                let signal_data = server_tx.publish_and_check(&s_own);
                let signal_space = server_rx.publish_and_check(&s_own);
                if signal_data || signal_space {
                    client_ev.signal();
                }
            }
        });
        s.spawn(|| {
            // Client: keep a few records in flight, check each echo.
            let mut sent = 0;
            let mut received = 0;
            while received < RECORDS {
                let mut progressed = false;
                if sent < RECORDS && sent - received < 8 {
                    let record = [(sent % 251) as u8; RECORD];
                    match client_tx.write_all(&record) {
                        Ok(()) => {
                            sent += 1;
                            progressed = true;
                        }
                        Err(RingError::NoSpace { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if client_tx.publish_and_check(&c_own) {
                        server_ev.signal();
                    }
                }
                let mut echo = [0u8; RECORD];
                match client_rx.read_exact(&mut echo) {
                    Ok(()) => {
                        assert_eq!(echo, [(received % 251) as u8; RECORD]);
                        received += 1;
                        progressed = true;
                        if client_rx.publish_and_check(&c_own) {
                            server_ev.signal();
                        }
                    }
                    Err(RingError::NoData { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                if !progressed {
                    let space = client_tx.space_or_request(RECORD, &c_peer).unwrap();
                    let data = client_rx.available_or_request(RECORD, &c_peer).unwrap();
                    let can_send = sent < RECORDS && sent - received < 8 && space >= RECORD;
                    if !can_send && data < RECORD {
                        client_ev.wait("client");
                    }
                }
            }
        });
    });
    assert!(vchan.guards_intact());
}
