//! In-process vchan ring demo: a client thread streams bytes to a server thread through the
//! left ring of a heap-allocated control page, exactly as they would through Xen-shared pages
//! (the same `ControlPage`, `RawRing`, notify protocol), sleeping when stuck and waking each
//! other only when the notify bits say so. Prints progress and the final throughput.
//!
//! ```sh
//! cargo run --release -p vchan-ring --example spsc -- [--ring BYTES] [--write BYTES] [--total MiB]
//! ```

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vchan_ring::{ControlPage, Geometry, PAGE_SIZE, RawRing, RingPlacement, Role, Side};

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

struct Args {
    ring: usize,
    write: usize,
    total: u64,
}

fn parse_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        ring: 64 << 10,
        write: 16 << 10,
        total: 4 << 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let size = parse_size(&value).ok_or(format!("{flag}: not a size: {value:?}"))?;
        match flag.as_str() {
            "--ring" => a.ring = size,
            "--write" => a.write = size.max(1),
            "--total" => a.total = size as u64 * (1 << 20),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "spsc: {e}\nusage: spsc [--ring BYTES] [--write BYTES] [--total MiB] (sizes take K/M)"
            );
            std::process::exit(2);
        }
    };
    // The server reads the left ring: ask for a read ring of at least `--ring` bytes.
    let geometry = match Geometry::server_choice(args.ring, 0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("spsc: {e}");
            std::process::exit(2);
        }
    };
    let order = geometry.left();
    let page_mem = PageAligned::new(PAGE_SIZE);
    // SAFETY: `page_mem` outlives `control` and every ring half built from it (all are dropped
    // at the end of `main`, after the threads are joined), and nothing else accesses it.
    let control = unsafe { ControlPage::new(page_mem.ptr) };
    control.init_server(geometry);
    control.connect_client();
    let ring_mem = PageAligned::new(order.size());
    let ring = |_: ()| match geometry.placement(Side::Left) {
        // SAFETY: the left in-page ring is used by exactly one producer and one consumer.
        RingPlacement::InPage { .. } => unsafe { control.in_page_ring(order) }.expect("in-page"),
        // SAFETY: `ring_mem` holds `order.size()` bytes, outlives both halves, and is used by
        // exactly one producer and one consumer (the two built below).
        RingPlacement::Granted { .. } => unsafe { RawRing::new(ring_mem.ptr, order) },
    };
    let mut tx = control
        .producer(Role::Client, ring(()))
        .expect("fresh ring");
    let mut rx = control
        .consumer(Role::Server, ring(()))
        .expect("fresh ring");

    println!(
        "vchan-ring spsc: {} MiB client -> server through a {} ring ({}), {}-byte writes",
        args.total >> 20,
        human(order.size() as u64),
        match geometry.placement(Side::Left) {
            RingPlacement::InPage { offset } => format!("in the control page at offset {offset}"),
            RingPlacement::Granted { pages } => format!("{pages} separate pages"),
        },
        args.write
    );

    let received = AtomicU64::new(0);
    let signals = [AtomicU64::new(0), AtomicU64::new(0)]; // to the client, to the server
    let start = Instant::now();
    let total = args.total;
    // Each side's "event channel" is its thread's park/unpark token; each thread learns the
    // other's handle before it starts.
    let (to_server, server_peer) = mpsc::channel::<thread::Thread>();
    let (to_client, client_peer) = mpsc::channel::<thread::Thread>();
    let (control, received, signals, write) = (&control, &received, &signals, args.write);
    thread::scope(|s| {
        let server = s.spawn(move || {
            let client = server_peer.recv().expect("client handle");
            let own = control.notify_flag(Role::Server);
            let peer = control.notify_flag(Role::Client);
            let mut buf = vec![0u8; 256 << 10];
            let mut got = 0u64;
            // The stream is `pattern` repeated: check every byte against it.
            let pattern = pattern(write);
            while got < total {
                if rx.available().expect("ring") == 0
                    && !spin_until(|| rx.available().expect("ring") > 0)
                {
                    if rx.available_or_request(1, &peer).expect("ring") == 0 {
                        thread::park(); // sleep until the client signals
                    }
                    continue;
                }
                let n = rx.take(&mut buf).expect("ring");
                let mut checked = 0;
                while checked < n {
                    let at = ((got + checked as u64) % write as u64) as usize;
                    let len = (write - at).min(n - checked);
                    assert_eq!(
                        &buf[checked..checked + len],
                        &pattern[at..at + len],
                        "data corrupted in the ring near byte {}",
                        got + checked as u64
                    );
                    checked += len;
                }
                got += n as u64;
                received.store(got, Ordering::Relaxed);
                if rx.publish_and_check(&own) {
                    signals[0].fetch_add(1, Ordering::Relaxed);
                    client.unpark();
                }
            }
        });
        let client = s.spawn(move || {
            let server = client_peer.recv().expect("server handle");
            let own = control.notify_flag(Role::Client);
            let peer = control.notify_flag(Role::Server);
            let chunk = pattern(write);
            let mut sent = 0u64;
            while sent < total {
                let want = chunk.len().min((total - sent) as usize);
                let mut done = 0;
                while done < want {
                    if tx.space().expect("ring") == 0
                        && !spin_until(|| tx.space().expect("ring") > 0)
                    {
                        if tx.space_or_request(1, &peer).expect("ring") == 0 {
                            thread::park(); // sleep until the server signals
                        }
                        continue;
                    }
                    done += tx.stage(&chunk[done..want]).expect("ring");
                    if tx.publish_and_check(&own) {
                        signals[1].fetch_add(1, Ordering::Relaxed);
                        server.unpark();
                    }
                }
                sent += want as u64;
            }
        });
        to_server
            .send(client.thread().clone())
            .expect("server alive");
        to_client
            .send(server.thread().clone())
            .expect("client alive");
        // Progress, twice a second.
        let mut last = (Instant::now(), 0u64);
        while received.load(Ordering::Relaxed) < total && !server.is_finished() {
            thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            if now.duration_since(last.0) >= Duration::from_millis(500) {
                let got = received.load(Ordering::Relaxed);
                let rate = (got - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                println!(
                    "  {:>5.1} s  {:>10} moved  {:>10}/s",
                    start.elapsed().as_secs_f64(),
                    human(got),
                    human(rate as u64)
                );
                last = (now, got);
            }
        }
        client.join().expect("client thread");
        server
            .join()
            .expect("server thread (a panic here means corrupted data)");
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "done: {} in {:.2} s = {:.0} MB/s ({}/s); every byte verified; event-channel signals: {} to the client, {} to the server",
        human(total),
        secs,
        total as f64 / secs / 1e6,
        human((total as f64 / secs) as u64),
        signals[0].load(Ordering::Relaxed),
        signals[1].load(Ordering::Relaxed),
    );
}

/// Polls `ready` briefly before a caller commits to sleeping (a sleep and a wake-up cost
/// microseconds; the peer is often about to make progress).
fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// The bytes each write sends.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
