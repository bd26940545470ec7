//! The in-process vchan ring beside `rtrb` (a well-regarded Rust SPSC ring), doing the same
//! work in the same run:
//!
//! * `ring_throughput/<impl>/<ring>/<write>`: a producer thread moves 16 MiB to a consumer
//!   thread in `write`-byte writes (partial writes when the ring is smaller) and the consumer
//!   reads in `write`-byte reads; ring sizes 4 KiB, 64 KiB and 1 MiB, write sizes 64 B to
//!   64 KiB. `vchan` is the production path (`ControlPage` indices, `RawRing` over page-aligned
//!   heap memory); `rtrb` uses its `io::Write`/`io::Read` byte interface (a copy in, a copy
//!   out, like ours). `vchan_notify` (64 KiB ring only) adds the full notify protocol to every
//!   write and read (`publish_and_check`: one locked read-modify-write each), without sleeping.
//! * `ring_round_trip_64B/<impl>`: 64 bytes to an echo thread and back over two rings.
//!
//! Both sides poll (spin, then yield) when stuck, identically for both implementations.
//! `cargo bench -p vchan-bench --bench ring`; medians are what to quote.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io::{Read, Write};
use std::ptr::NonNull;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vchan_ring::{ControlPage, Geometry, PAGE_SIZE, RawRing, RingOrder, RingPlacement, Role, Side};

const TOTAL: usize = 16 << 20;
const RING_SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
const WRITE_SIZES: [usize; 4] = [64, 1 << 10, 16 << 10, 64 << 10];

/// Page-aligned zeroed heap memory, freed on drop.
struct PageAligned {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl PageAligned {
    fn new(len: usize) -> PageAligned {
        let layout = Layout::from_size_align(len.max(1), PAGE_SIZE).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        PageAligned { ptr, layout }
    }
}

impl Drop for PageAligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A server-initialised control page with both rings, in heap memory.
struct Vchan {
    control: ControlPage,
    left: Option<PageAligned>,
    right: Option<PageAligned>,
    geometry: Geometry,
    _page: PageAligned,
}

impl Vchan {
    fn new(left: usize, right: usize) -> Vchan {
        let geometry = Geometry::server_choice(left, right).expect("geometry");
        let page = PageAligned::new(PAGE_SIZE);
        // SAFETY: `page` lives in this struct, which outlives every half built from it (the
        // benches drop the halves first), and is accessed only through `control`.
        let control = unsafe { ControlPage::new(page.ptr) };
        control.init_server(geometry);
        let mem = |side| match geometry.placement(side) {
            RingPlacement::InPage { .. } => None,
            RingPlacement::Granted { .. } => Some(PageAligned::new(geometry.ring_size(side))),
        };
        Vchan {
            control,
            left: mem(Side::Left),
            right: mem(Side::Right),
            geometry,
            _page: page,
        }
    }

    /// The ring memory of `side`. Each call must be for a different half.
    fn ring(&self, side: Side) -> RawRing {
        let order: RingOrder = self.geometry.order(side);
        let mem = match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        };
        match mem {
            // SAFETY: `mem` holds `order.size()` bytes and outlives the half; each side's ring
            // is given to one producer and one consumer.
            Some(m) => unsafe { RawRing::new(m.ptr, order) },
            // SAFETY: as above, inside the control page.
            None => unsafe { self.control.in_page_ring(order) }.expect("in-page ring"),
        }
    }
}

/// Spin a little, then yield: the same back-off for every implementation.
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

fn vchan_transfer(
    tx: &mut vchan_ring::Producer,
    rx: &mut vchan_ring::Consumer,
    write: usize,
    notify: Option<&ControlPage>,
) {
    let src = vec![0x5Au8; write];
    thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; write];
            let own = notify.map(|c| c.notify_flag(Role::Server));
            let mut got = 0;
            let mut spins = 0;
            while got < TOTAL {
                let n = match &own {
                    None => rx.read(&mut buf).expect("ring"),
                    Some(own) => {
                        let n = rx.take(&mut buf).expect("ring");
                        rx.publish_and_check(own);
                        n
                    }
                };
                if n == 0 {
                    backoff(&mut spins);
                } else {
                    spins = 0;
                }
                got += n;
            }
        });
        let own = notify.map(|c| c.notify_flag(Role::Client));
        let mut sent = 0;
        let mut spins = 0;
        while sent < TOTAL {
            let want = write.min(TOTAL - sent);
            let n = match &own {
                None => tx.write(&src[..want]).expect("ring"),
                Some(own) => {
                    let n = tx.stage(&src[..want]).expect("ring");
                    tx.publish_and_check(own);
                    n
                }
            };
            if n == 0 {
                backoff(&mut spins);
            } else {
                spins = 0;
            }
            sent += n;
        }
    });
}

fn rtrb_transfer(tx: &mut rtrb::Producer<u8>, rx: &mut rtrb::Consumer<u8>, write: usize) {
    let src = vec![0x5Au8; write];
    thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; write];
            let mut got = 0;
            let mut spins = 0;
            while got < TOTAL {
                let n = rx.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    backoff(&mut spins);
                } else {
                    spins = 0;
                }
                got += n;
            }
        });
        let mut sent = 0;
        let mut spins = 0;
        while sent < TOTAL {
            let want = write.min(TOTAL - sent);
            let n = tx.write(&src[..want]).unwrap_or(0);
            if n == 0 {
                backoff(&mut spins);
            } else {
                spins = 0;
            }
            sent += n;
        }
    });
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for ring in RING_SIZES {
        let vchan = Vchan::new(ring, 0);
        let mut vtx = vchan
            .control
            .producer(Role::Client, vchan.ring(Side::Left))
            .unwrap();
        let mut vrx = vchan
            .control
            .consumer(Role::Server, vchan.ring(Side::Left))
            .unwrap();
        assert_eq!(vtx.capacity(), ring);
        let (mut rtx, mut rrx) = rtrb::RingBuffer::<u8>::new(ring);
        for write in WRITE_SIZES {
            let id = format!("{}/{}", size_name(ring), size_name(write));
            group.bench_function(BenchmarkId::new("vchan", &id), |b| {
                b.iter(|| vchan_transfer(&mut vtx, &mut vrx, write, None));
            });
            group.bench_function(BenchmarkId::new("rtrb", &id), |b| {
                b.iter(|| rtrb_transfer(&mut rtx, &mut rrx, write));
            });
            if ring == 64 << 10 {
                group.bench_function(BenchmarkId::new("vchan_notify", &id), |b| {
                    b.iter(|| vchan_transfer(&mut vtx, &mut vrx, write, Some(&vchan.control)));
                });
            }
        }
    }
    group.finish();
}

const MSG: usize = 64;

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_round_trip_64B");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));

    let vchan = Vchan::new(4096, 4096);
    let mut client_tx = vchan
        .control
        .producer(Role::Client, vchan.ring(Side::Left))
        .unwrap();
    let mut server_rx = vchan
        .control
        .consumer(Role::Server, vchan.ring(Side::Left))
        .unwrap();
    let mut server_tx = vchan
        .control
        .producer(Role::Server, vchan.ring(Side::Right))
        .unwrap();
    let mut client_rx = vchan
        .control
        .consumer(Role::Client, vchan.ring(Side::Right))
        .unwrap();
    group.bench_function("vchan", |b| {
        b.iter_custom(|iters| {
            thread::scope(|s| {
                s.spawn(|| {
                    let mut msg = [0u8; MSG];
                    for _ in 0..iters {
                        let mut spins = 0;
                        while server_rx.read_exact(&mut msg).is_err() {
                            backoff(&mut spins);
                        }
                        server_tx.write_all(&msg).expect("echo fits");
                    }
                });
                let msg = [7u8; MSG];
                let mut back = [0u8; MSG];
                let start = Instant::now();
                for _ in 0..iters {
                    client_tx.write_all(&msg).expect("fits");
                    let mut spins = 0;
                    while client_rx.read_exact(&mut back).is_err() {
                        backoff(&mut spins);
                    }
                }
                start.elapsed()
            })
        });
    });

    let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<u8>::new(4096);
    let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<u8>::new(4096);
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            thread::scope(|s| {
                s.spawn(|| {
                    let mut msg = [0u8; MSG];
                    for _ in 0..iters {
                        let mut spins = 0;
                        while ping_rx.slots() < MSG {
                            backoff(&mut spins);
                        }
                        ping_rx.read_exact(&mut msg).expect("available");
                        pong_tx.write_all(&msg).expect("echo fits");
                    }
                });
                let msg = [7u8; MSG];
                let mut back = [0u8; MSG];
                let start = Instant::now();
                for _ in 0..iters {
                    ping_tx.write_all(&msg).expect("fits");
                    let mut spins = 0;
                    while pong_rx.slots() < MSG {
                        backoff(&mut spins);
                    }
                    pong_rx.read_exact(&mut back).expect("available");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

criterion_group!(benches, throughput, round_trip);
criterion_main!(benches);
