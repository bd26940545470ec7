//! Property tests: random interleavings of random-size operations of both halves, against a
//! `VecDeque` model, over the production path (a heap control page, `RawRing`, `RawIndex`)
//! and over `LocalRing`.
//!
//! The model does not mirror the halves' cached indices, so it states only what must hold
//! whatever the caches contain: partial operations move exactly `min(requested, space/data)`
//! (a half re-reads the shared index whenever its cache falls short), all-or-nothing
//! operations succeed exactly when the real space/data suffices, and every byte read is the
//! next byte of the stream written.

use std::collections::VecDeque;

use proptest::prelude::*;
use vchan_ring::fuzzing::TestVchan;
use vchan_ring::{Consumer, IndexCell, LocalRing, RingError, RingMemory, Role};

#[derive(Clone, Debug)]
enum Op {
    Write(usize),
    WriteAll(usize),
    Stage(usize),
    StageAll(usize),
    Reserve(usize, usize),
    ReserveUpTo(usize, usize),
    Publish,
    Read(usize),
    ReadExact(usize),
    Take(usize),
    Peek(usize, usize),
    ConsumerPublish,
    Space,
    Available,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..max).prop_map(Op::Write),
        (0..max).prop_map(Op::WriteAll),
        (0..max).prop_map(Op::Stage),
        (0..max).prop_map(Op::StageAll),
        (0..max, 0..max).prop_map(|(a, b)| Op::Reserve(a, b)),
        (0..max, 0..max).prop_map(|(a, b)| Op::ReserveUpTo(a, b)),
        Just(Op::Publish),
        (0..max).prop_map(Op::Read),
        (0..max).prop_map(Op::ReadExact),
        (0..max).prop_map(Op::Take),
        (0..max, 0..max).prop_map(|(a, b)| Op::Peek(a, b)),
        Just(Op::ConsumerPublish),
        Just(Op::Space),
        Just(Op::Available),
    ]
}

/// What the ring must look like from outside.
#[derive(Default)]
struct Model {
    size: usize,
    /// Published and not yet taken.
    visible: VecDeque<u8>,
    /// Written but not yet published.
    staged: Vec<u8>,
    /// Taken but their space not yet given back.
    unreleased: usize,
    /// Next byte of the written stream.
    next: u8,
}

impl Model {
    fn free(&self) -> usize {
        self.size - self.visible.len() - self.staged.len() - self.unreleased
    }
    fn data(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| self.next.wrapping_add(i as u8).wrapping_mul(167))
            .collect()
    }
    fn wrote(&mut self, bytes: &[u8]) {
        self.staged.extend_from_slice(bytes);
        self.next = self.next.wrapping_add(bytes.len() as u8);
    }
    fn took(&mut self, bytes: &[u8]) {
        for &b in bytes {
            assert_eq!(self.visible.pop_front(), Some(b), "bytes out of order");
        }
        self.unreleased += bytes.len();
    }
}

fn run<M, X, N, Y>(
    size: usize,
    ops: &[Op],
    tx: &mut vchan_ring::Producer<M, X>,
    rx: &mut Consumer<N, Y>,
) where
    M: RingMemory,
    X: IndexCell,
    N: RingMemory,
    Y: IndexCell,
{
    let mut m = Model {
        size,
        ..Model::default()
    };
    for op in ops {
        match *op {
            Op::Write(len) | Op::Stage(len) => {
                let src = m.data(len);
                let expect = len.min(m.free());
                let n = if matches!(op, Op::Write(_)) {
                    tx.write(&src)
                } else {
                    tx.stage(&src)
                };
                assert_eq!(n, Ok(expect), "{op:?}");
                m.wrote(&src[..expect]);
                if matches!(op, Op::Write(_)) {
                    m.visible.extend(m.staged.drain(..));
                }
            }
            Op::WriteAll(len) | Op::StageAll(len) => {
                let src = m.data(len);
                let result = if matches!(op, Op::WriteAll(_)) {
                    tx.write_all(&src)
                } else {
                    tx.stage_all(&src)
                };
                if len > size {
                    assert_eq!(
                        result,
                        Err(RingError::TooLarge {
                            requested: len,
                            capacity: size
                        })
                    );
                } else if len > m.free() {
                    assert_eq!(
                        result,
                        Err(RingError::NoSpace {
                            requested: len,
                            free: m.free()
                        })
                    );
                } else {
                    assert_eq!(result, Ok(()));
                    m.wrote(&src);
                }
                if matches!(op, Op::WriteAll(_)) && result.is_ok() {
                    m.visible.extend(m.staged.drain(..));
                }
            }
            Op::Reserve(len, commit) | Op::ReserveUpTo(len, commit) => {
                let exact = matches!(op, Op::Reserve(..));
                let region = if exact {
                    tx.reserve(len)
                } else {
                    tx.reserve_up_to(len)
                };
                if exact && (len > size || len > m.free()) {
                    assert!(region.is_err(), "{op:?}");
                    continue;
                }
                let mut region = region.unwrap();
                let rlen = region.len();
                assert_eq!(rlen, len.min(m.free()), "{op:?}");
                let src = m.data(rlen);
                assert_eq!(region.copy_from(0, &src), rlen);
                let k = commit.min(rlen);
                region.commit(k).unwrap();
                m.wrote(&src[..k]);
            }
            Op::Publish => {
                assert_eq!(tx.publish(), !m.staged.is_empty());
                m.visible.extend(m.staged.drain(..));
            }
            Op::Read(len) | Op::Take(len) => {
                let mut dst = vec![0; len];
                let expect = len.min(m.visible.len());
                let n = if matches!(op, Op::Read(_)) {
                    rx.read(&mut dst)
                } else {
                    rx.take(&mut dst)
                };
                assert_eq!(n, Ok(expect), "{op:?}");
                m.took(&dst[..expect]);
                if matches!(op, Op::Read(_)) {
                    m.unreleased = 0;
                }
            }
            Op::ReadExact(len) => {
                let mut dst = vec![0; len];
                let result = rx.read_exact(&mut dst);
                if len > size {
                    assert!(matches!(result, Err(RingError::TooLarge { .. })));
                } else if len > m.visible.len() {
                    assert_eq!(
                        result,
                        Err(RingError::NoData {
                            requested: len,
                            available: m.visible.len()
                        })
                    );
                } else {
                    assert_eq!(result, Ok(()));
                    m.took(&dst);
                    m.unreleased = 0;
                }
            }
            Op::Peek(want, consume) => {
                let region = rx.peek(want).unwrap();
                let rlen = region.len();
                assert!(rlen <= m.visible.len());
                assert!(rlen >= want.min(m.visible.len()), "{op:?}: {rlen}");
                let mut copy = vec![0; rlen];
                assert_eq!(region.copy_to(0, &mut copy), rlen);
                assert!(m.visible.iter().take(rlen).eq(copy.iter()));
                let k = consume.min(rlen);
                region.consume(k).unwrap();
                m.took(&copy[..k]);
            }
            Op::ConsumerPublish => {
                assert_eq!(rx.publish(), m.unreleased != 0);
                m.unreleased = 0;
            }
            Op::Space => assert_eq!(tx.space(), Ok(m.free())),
            Op::Available => assert_eq!(rx.available(), Ok(m.visible.len())),
        }
        assert_eq!(tx.staged(), m.staged.len());
        assert_eq!(rx.unreleased(), m.unreleased);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The production path: heap control page, raw ring of 2^k bytes (1 B to 4 KiB).
    #[test]
    fn raw_ring_matches_model(order in 0u32..=12, ops in prop::collection::vec(op(9000), 1..200)) {
        let size = 1usize << order;
        let vchan = TestVchan::new(size, 1);
        let mut tx = vchan.producer(Role::Client).unwrap();
        let mut rx = vchan.consumer(Role::Server).unwrap();
        let ops: Vec<Op> = ops.into_iter().map(|o| scale(o, 3 * size + 2)).collect();
        run(size, &ops, &mut tx, &mut rx);
        prop_assert!(vchan.guards_intact());
    }

    /// The same over a `LocalRing` (the type the loom models use).
    #[test]
    fn local_ring_matches_model(ops in prop::collection::vec(op(20), 1..300)) {
        let ring = LocalRing::<8>::new();
        let (mut tx, mut rx) = LocalRing::split(&ring).unwrap();
        run(8, &ops, &mut tx, &mut rx);
    }

    /// Indices start anywhere (a resumed channel), including across the 2^32 wrap.
    #[test]
    fn any_start_index(start in any::<u32>(), ops in prop::collection::vec(op(40), 1..200)) {
        let vchan = TestVchan::new(16, 1);
        vchan.control().store_index(vchan_ring::Side::Left, vchan_ring::IndexName::Prod, start);
        vchan.control().store_index(vchan_ring::Side::Left, vchan_ring::IndexName::Cons, start);
        let mut tx = vchan.producer(Role::Client).unwrap();
        let mut rx = vchan.consumer(Role::Server).unwrap();
        run(16, &ops, &mut tx, &mut rx);
    }
}

/// Scales an operation's sizes (generated up to 9000) to `max`.
fn scale(op: Op, max: usize) -> Op {
    let s = |v: usize| v % max;
    match op {
        Op::Write(a) => Op::Write(s(a)),
        Op::WriteAll(a) => Op::WriteAll(s(a)),
        Op::Stage(a) => Op::Stage(s(a)),
        Op::StageAll(a) => Op::StageAll(s(a)),
        Op::Reserve(a, b) => Op::Reserve(s(a), s(b)),
        Op::ReserveUpTo(a, b) => Op::ReserveUpTo(s(a), s(b)),
        Op::Read(a) => Op::Read(s(a)),
        Op::ReadExact(a) => Op::ReadExact(s(a)),
        Op::Take(a) => Op::Take(s(a)),
        Op::Peek(a, b) => Op::Peek(s(a), s(b)),
        other => other,
    }
}
