//! `vchan-ring`: the libxenvchan shared-page layout and the lock-free SPSC byte ring.
//!
//! `#![no_std]`, no allocation, no OS calls: this crate interprets memory that someone else
//! (`vchan-xenif`) mapped, and nothing more.
//!
//! # What is here
//!
//! * [`layout`]: the control page byte-for-byte as C `struct vchan_interface`, with
//!   compile-time offset assertions and constants ([`NOTIFY_WRITE`], [`LIVE_CONNECTED`], …).
//! * [`Geometry`]: ring orders and placement (in-page at 1024/2048, or granted pages), the
//!   server's size choice exactly as libxenvchan makes it, grant counts, and validation of
//!   orders found in a peer's page.
//! * [`ControlPage`]: a raw view of a mapped control page, one atomic access per field, no
//!   references into it; builds the ring halves for a [`Role`].
//! * [`Producer`] / [`Consumer`]: the two halves of a ring: partial ([`Producer::write`]) and
//!   all-or-nothing ([`Producer::write_all`]) copies, in-place [`Producer::reserve`] +
//!   [`WriteRegion::commit`], [`Consumer::peek`] + [`ReadRegion::consume`], batching
//!   (stage many, [`Producer::publish`] once), and the notify protocol
//!   ([`Producer::publish_and_check`], [`Consumer::available_or_request`], …).
//! * [`LocalRing`]: a self-contained in-process ring (examples, tests, loom models).
//!
//! # Trust model
//!
//! The peer is another domain and may be hostile. Everything it can write — both indices of
//! both rings, the orders, the grant list, the liveness and notify bytes, and the ring bytes
//! themselves — is treated as input:
//!
//! * each peer-written value is loaded **once** (an atomic load, which the compiler cannot
//!   repeat), validated, and only the local copy is used (XSA-155);
//! * each half keeps **its own index privately** and only ever *writes* the shared copy; the
//!   peer scribbling over it changes nothing for us;
//! * a peer index outside the range an honest peer could have produced (`prod - cons > size`,
//!   an index moving backwards, `cons` passing `prod`) is reported as the distinct
//!   [`RingError::Corrupt`], which then sticks to that half. We never hang on it (C's
//!   libxenvchan answers "0 bytes" forever) and never panic;
//! * every byte offset we touch is computed from our private index and our validated cache,
//!   masked by `size - 1`, and bounded by the validated free/readable count, so no access
//!   leaves the ring, whatever the peer writes (`ring/tests/adversarial.rs` and the fuzz target
//!   `ring_hostile` check this with guard bytes);
//! * no safe API hands out a `&[u8]`/`&T` into peer-writable memory: bytes are copied with
//!   raw-pointer copies, or handed out as raw pointers. A borrowing zero-copy read
//!   ([`ReadRegion::as_slices`]) exists only as an `unsafe` trusted-peer opt-in.
//!
//! A hostile peer can of course send garbage *data* or stop making progress; detecting a
//! stalled peer is the channel's job (timeouts, liveness bytes, `@releaseDomain`).
//!
//! # Memory ordering
//!
//! The ring is the classic SPSC hand-over of byte ownership through two indices:
//!
//! * the producer copies bytes into free space, then publishes with `prod.store(tail,
//!   Release)`; the consumer loads `prod` with `Acquire` before copying those bytes out, so
//!   the data writes happen-before the data reads;
//! * the consumer copies bytes out, then publishes with `cons.store(head, Release)`; the
//!   producer loads `cons` with `Acquire` before writing into the freed space, so the data
//!   reads happen-before the overwrite;
//! * each half loads the peer's index only when its cached copy cannot satisfy the request
//!   (a stale cache is always safe: it under-reports data or space), and publishes a whole
//!   batch with one release store;
//! * the notify bytes use `SeqCst` read-modify-writes; why this cannot lose a wake-up is
//!   argued in [`notify`]. The event-channel signal itself is the caller's job.
//!
//! On x86 the loads and stores above are plain `mov`s; the only locked instruction on the hot
//! path is the clear-and-test of the notify bit after a publish, once per batch.
//!
//! # Verification
//!
//! * unit tests next to the code, property tests against a `VecDeque` model
//!   (`ring/tests/model.rs`), adversarial tests (`ring/tests/adversarial.rs`), threads
//!   (`ring/tests/threads.rs`), the C layout check (`ring/tests/c_layout.rs`, against
//!   Debian `libxen-dev`'s `xen/io/libxenvchan.h`);
//! * loom models (`ring/tests/loom.rs`):
//!   `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p vchan-ring --profile loom --test loom -- --test-threads=2`;
//! * fuzz targets `ring_hostile`, `ring_diff`, `ring_page` (`cd fuzz && cargo +nightly fuzz
//!   run ring_hostile ../target/fuzz-corpus/ring_hostile corpus/ring_hostile --
//!   -max_total_time=60`: new inputs go to the first directory, the committed seeds stay as
//!   they are), whose committed corpora `cargo test` replays through the same harness
//!   functions;
//! * `cargo build -p vchan-ring --target x86_64-unknown-none` proves `no_std`.
#![cfg_attr(not(any(test, loom)), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(any(test, feature = "fuzzing"))]
extern crate alloc;

mod control;
mod error;
mod geometry;
pub mod layout;
mod local;
pub mod notify;
mod shared;
mod spsc;
mod sync;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use control::{ControlPage, GRANT_SLOTS, GrantRefs};
pub use error::{Corruption, IndexName, RingError};
pub use geometry::{Geometry, GeometryError, RingOrder, RingPlacement, Role, Side};
pub use layout::{
    LIVE_CONNECTED, LIVE_EXITED, LIVE_NOT_YET_CONNECTED, NOTIFY_READ, NOTIFY_WRITE, PAGE_SIZE,
    RingShared, VchanInterface,
};
pub use local::{LocalBytes, LocalConsumer, LocalFlag, LocalIndex, LocalProducer, LocalRing};
pub use notify::{request_notify, take_notify_request};
pub use shared::{
    ContiguousRingMemory, FlagCell, IndexCell, RawFlag, RawIndex, RawRing, RingMemory,
};
pub use spsc::{Consumer, MAX_RING_SIZE, Producer, ReadRegion, WriteRegion};
