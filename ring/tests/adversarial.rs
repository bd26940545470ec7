//! Adversarial tests: a hostile peer writes arbitrary values into every shared field (and ring
//! byte) between our operations. We must only ever touch bytes inside the ring (guard bytes
//! around each ring stay intact), answer errors rather than panic or hang, report impossible
//! index states as the distinct, sticky `Corrupt` error, and ignore everything else the peer
//! scribbles (our own shared indices, orders, liveness, grants).

use proptest::prelude::*;
use vchan_ring::fuzzing::{TestVchan, hostile};
use vchan_ring::{
    Corruption, Geometry, IndexName, NOTIFY_READ, NOTIFY_WRITE, PAGE_SIZE, RingError, Role, Side,
};

fn corrupt(index: IndexName, observed: u32, low: u32, high: u32, ring_size: u32) -> RingError {
    RingError::Corrupt(Corruption {
        index,
        observed,
        low,
        high,
        ring_size,
    })
}

#[test]
fn consumer_refuses_prod_more_than_a_ring_ahead() {
    let v = TestVchan::new(16, 16);
    let page = v.control();
    let mut rx = v.consumer(Role::Server).unwrap();
    page.store_index(Side::Left, IndexName::Prod, 17);
    let mut buf = [0u8; 8];
    let err = corrupt(IndexName::Prod, 17, 0, 16, 16);
    assert_eq!(rx.read(&mut buf), Err(err));
    // Sticky: every later call repeats it, even after the peer "repairs" the index.
    page.store_index(Side::Left, IndexName::Prod, 4);
    assert_eq!(rx.read(&mut buf), Err(err));
    assert_eq!(rx.available(), Err(err));
    assert!(matches!(rx.peek(1), Err(e) if e == err));
    assert_eq!(rx.consume(0), Err(err));
    assert_eq!(
        rx.corruption(),
        Some(Corruption {
            index: IndexName::Prod,
            observed: 17,
            low: 0,
            high: 16,
            ring_size: 16
        })
    );
    let text = err.to_string();
    assert!(
        text.contains("prod = 17") && text.contains("stop using this channel"),
        "{text}"
    );
    assert!(err.is_corrupt() && !err.is_transient());
}

#[test]
fn consumer_refuses_prod_moving_backwards() {
    let v = TestVchan::new(16, 16);
    let page = v.control();
    let mut rx = v.consumer(Role::Server).unwrap();
    page.store_index(Side::Left, IndexName::Prod, 10);
    let mut buf = [0u8; 4];
    assert_eq!(rx.read(&mut buf), Ok(4)); // sees prod = 10, consumes 4
    page.store_index(Side::Left, IndexName::Prod, 9);
    // 6 bytes are known to be readable, so a 6-byte read needs no reload...
    assert_eq!(rx.read(&mut [0; 6]), Ok(6));
    // ...but the next one reloads and sees prod go from 10 back to 9.
    assert_eq!(
        rx.read(&mut buf),
        Err(corrupt(IndexName::Prod, 9, 10, 4 + 6 + 16, 16))
    );
}

#[test]
fn consumer_refuses_prod_behind_its_cons() {
    // A prod "before" cons wraps to a huge distance: refused, not read as 4 GiB of data.
    let v = TestVchan::new(8, 8);
    let page = v.control();
    page.store_index(Side::Right, IndexName::Cons, 100);
    page.store_index(Side::Right, IndexName::Prod, 100);
    let mut rx = v.consumer(Role::Client).unwrap();
    page.store_index(Side::Right, IndexName::Prod, 99);
    assert_eq!(
        rx.available(),
        Err(corrupt(IndexName::Prod, 99, 100, 108, 8))
    );
}

#[test]
fn producer_refuses_cons_beyond_published() {
    let v = TestVchan::new(16, 16);
    let page = v.control();
    let mut tx = v.producer(Role::Server).unwrap();
    tx.stage_all(&[1; 6]).unwrap();
    tx.publish();
    tx.stage_all(&[2; 4]).unwrap(); // staged, not published: the peer cannot have read it
    page.store_index(Side::Right, IndexName::Cons, 8);
    let err = corrupt(IndexName::Cons, 8, 0, 6, 16);
    assert_eq!(tx.space(), Err(err));
    assert_eq!(tx.write(&[3]), Err(err));
    assert!(matches!(tx.reserve(1), Err(e) if e == err));
    assert_eq!(tx.commit(0), Err(err));
    assert_eq!(tx.corruption().map(|c| c.index), Some(IndexName::Cons));
}

#[test]
fn producer_refuses_cons_moving_backwards() {
    let v = TestVchan::new(16, 16);
    let page = v.control();
    let mut tx = v.producer(Role::Client).unwrap();
    assert_eq!(tx.write(&[7; 16]), Ok(16));
    page.store_index(Side::Left, IndexName::Cons, 10);
    assert_eq!(tx.space(), Ok(10));
    page.store_index(Side::Left, IndexName::Cons, 3);
    assert_eq!(tx.space(), Err(corrupt(IndexName::Cons, 3, 10, 16, 16)));
}

#[test]
fn attaching_to_an_impossible_ring_fails() {
    let v = TestVchan::new(1024, 2048);
    let page = v.control();
    page.store_index(Side::Right, IndexName::Prod, 5000);
    page.store_index(Side::Right, IndexName::Cons, 0);
    assert_eq!(
        v.producer(Role::Server).map(|_| ()),
        Err(corrupt(IndexName::Cons, 0, 5000 - 2048, 5000, 2048))
    );
    page.store_index(Side::Left, IndexName::Prod, 0);
    page.store_index(Side::Left, IndexName::Cons, 1);
    assert_eq!(
        v.consumer(Role::Server).map(|_| ()),
        Err(corrupt(IndexName::Prod, 0, 1, 1 + 1024, 1024))
    );
}

/// Junk in the fields these halves do not use (the other ring's indices, the orders, the
/// liveness and notify bytes, the grants), and junk in the producer's own shared index, never
/// changes what they do: nothing but the peer's index is ever read back.
#[test]
fn junk_in_fields_we_own_or_do_not_use_is_ignored() {
    let g = Geometry::server_choice(4096, 4096).unwrap();
    let v = TestVchan::with_geometry(g);
    let page = v.control();
    let mut tx = v.producer(Role::Client).unwrap();
    let mut rx = v.consumer(Role::Server).unwrap();
    for round in 0u32..64 {
        // Anyone scribbles over every field but the left ring's two indices, which these
        // halves (client producer, server consumer of the left ring) use.
        page.store_index(
            Side::Right,
            IndexName::Prod,
            round.wrapping_mul(0x9E37_79B9),
        );
        page.store_index(Side::Right, IndexName::Cons, !round);
        for offset in (16..PAGE_SIZE).step_by(7) {
            v.page_set(offset, (round as u8).wrapping_mul(offset as u8));
        }
        let data: Vec<u8> = (0..3000).map(|i| (i as u32 + round) as u8).collect();
        tx.write_all(&data[..1000]).unwrap();
        // Junk in the producer's own published index: its next publish overwrites it from its
        // private copy (a producer that read it back would publish junk, or fail).
        page.store_index(
            Side::Left,
            IndexName::Prod,
            round.wrapping_mul(0x0101_0101) ^ 0xdead,
        );
        tx.write_all(&data[1000..]).unwrap();
        let mut got = vec![0; 3000];
        rx.read_exact(&mut got).unwrap();
        assert_eq!(got, data, "round {round}");
    }
    // The orders on the page are junk by now, yet both halves kept using the geometry they
    // were given: neither re-read it.
    assert_ne!(page.read_geometry(), Ok(g));
    assert!(v.guards_intact());
}

/// The notify protocol tolerates any notify-byte value: at worst a spurious signal.
#[test]
fn notify_bytes_with_junk() {
    let v = TestVchan::new(8, 8);
    let mut tx = v.producer(Role::Server).unwrap();
    let own = v.notify_flag(Role::Server);
    v.page_set(vchan_ring::layout::SRV_NOTIFY_OFFSET, 0xFF);
    tx.write_all(&[1]).unwrap();
    assert!(tx.publish_and_check(&own)); // the peer "asked": signal
    assert!(!tx.publish_and_check(&own)); // cleared: no second signal
    assert_eq!(v.control().notify_bits(Role::Server), !NOTIFY_WRITE);
    assert!(v.control().take_notify_request(Role::Server, NOTIFY_READ));
}

/// A consumer whose peer keeps prod out of range never hangs: a polling loop ends with the
/// error instead of C's "0 bytes, forever".
#[test]
fn corrupt_ring_ends_a_read_loop() {
    let v = TestVchan::new(64, 64);
    let mut rx = v.consumer(Role::Client).unwrap();
    v.control()
        .store_index(Side::Right, IndexName::Prod, u32::MAX / 2);
    let mut buf = [0; 16];
    let mut polls = 0;
    let err = loop {
        polls += 1;
        match rx.read(&mut buf) {
            Ok(0) => continue,
            Ok(_) => panic!("read data from a corrupt ring"),
            Err(e) => break e,
        }
    };
    assert_eq!(polls, 1);
    assert!(err.is_corrupt());
}

#[derive(Clone, Debug)]
enum Hostile {
    /// An arbitrary value into one of the four shared indices.
    Index(Side, bool, u32),
    /// An arbitrary byte anywhere in the control page outside the indices.
    PageByte(usize, u8),
    /// An arbitrary byte into a ring.
    RingByte(Side, usize, u8),
    /// One of our operations.
    Ours(u8, usize),
}

fn hostile_op() -> impl Strategy<Value = Hostile> {
    let side = prop_oneof![Just(Side::Left), Just(Side::Right)];
    prop_oneof![
        (side.clone(), any::<bool>(), any::<u32>()).prop_map(|(s, p, v)| Hostile::Index(s, p, v)),
        (16..PAGE_SIZE, any::<u8>()).prop_map(|(o, b)| Hostile::PageByte(o, b)),
        (side, any::<usize>(), any::<u8>()).prop_map(|(s, i, b)| Hostile::RingByte(s, i, b)),
        (any::<u8>(), 0usize..100).prop_map(|(o, n)| Hostile::Ours(o, n)),
        (any::<u8>(), 0usize..100).prop_map(|(o, n)| Hostile::Ours(o, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary peer writes interleaved with every operation of both our halves: no panic,
    /// guard bytes intact, only `Corrupt` (sticky) or ordinary transient/usage errors, and
    /// nothing but the ring's own bytes returned.
    #[test]
    fn arbitrary_peer_writes(role_client in any::<bool>(), ops in prop::collection::vec(hostile_op(), 1..120)) {
        let role = if role_client { Role::Client } else { Role::Server };
        let v = TestVchan::new(32, 64);
        let page = v.control();
        let mut tx = v.producer(role).unwrap();
        let mut rx = v.consumer(role).unwrap();
        let (mut tx_err, mut rx_err) = (None, None);
        for op in ops {
            match op {
                Hostile::Index(side, prod, value) => {
                    let which = if prod { IndexName::Prod } else { IndexName::Cons };
                    page.store_index(side, which, value);
                }
                Hostile::PageByte(offset, b) => v.page_set(offset, b),
                Hostile::RingByte(side, i, b) => v.ring_set(side, i % v.ring_size(side), b),
                Hostile::Ours(code, n) => {
                    let read_ring = v.ring_snapshot(role.read_side());
                    // Which half ran, and its result.
                    let (tx_result, rx_result) = match code % 8 {
                        0 => (Some(tx.write(&vec![code; n]).map(|_| ())), None),
                        1 => (Some(tx.write_all(&vec![code; n])), None),
                        2 => (Some(tx.reserve_up_to(n).map(|r| r.commit_all())), None),
                        3 => (Some(tx.space().map(|_| ())), None),
                        4 => {
                            let mut buf = vec![0; n];
                            let r = rx.read(&mut buf);
                            if let Ok(k) = r {
                                // Only ring bytes come back: each one is somewhere in the ring.
                                for b in &buf[..k] {
                                    prop_assert!(read_ring.contains(b));
                                }
                            }
                            (None, Some(r.map(|_| ())))
                        }
                        5 => (None, Some(rx.read_exact(&mut vec![0; n]))),
                        6 => (None, Some(rx.peek(n).and_then(|r| { let k = r.len(); r.consume(k) }))),
                        _ => (None, Some(rx.available().map(|_| ()))),
                    };
                    for (result, seen) in [(tx_result, &mut tx_err), (rx_result, &mut rx_err)] {
                        let Some(result) = result else { continue };
                        match (result, *seen) {
                            (Err(e @ RingError::Corrupt(_)), None) => *seen = Some(e),
                            (Err(e), Some(prev)) => prop_assert_eq!(e, prev),
                            (Ok(()), Some(prev)) => prop_assert!(false, "worked after {}", prev),
                            (Err(e), None) => prop_assert!(
                                e.is_transient() || matches!(e, RingError::TooLarge { .. }),
                                "unexpected {e}"
                            ),
                            (Ok(()), None) => {}
                        }
                    }
                }
            }
            prop_assert!(v.guards_intact());
        }
    }

    /// The fuzz harness itself, on random inputs (it checks far more per step).
    #[test]
    fn hostile_harness_on_random_inputs(data in prop::collection::vec(any::<u8>(), 0..600)) {
        hostile(&data);
    }
}
