//! A raw view of a mapped control page with one atomic accessor per field.
//!
//! [`ControlPage`] never forms a Rust reference to plain data in the page: every field is a
//! single atomic load or store through `Atomic*::from_ptr`, so each read of a peer-controlled
//! value is one fetch that the compiler cannot repeat, and concurrent writes by the peer are
//! not undefined behaviour. Values read from the page are returned by value; validate them
//! (e.g. [`ControlPage::read_geometry`]) and keep the validated local copy.

use core::fmt;
use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, Ordering, fence};

use crate::error::{IndexName, RingError};
use crate::geometry::{Geometry, GeometryError, RingOrder, RingPlacement, Role, Side};
use crate::layout::{
    CLI_LIVE_OFFSET, CLI_NOTIFY_OFFSET, GRANT_REF_SIZE, GRANTS_OFFSET, LEFT_CONS_OFFSET,
    LEFT_ORDER_OFFSET, LEFT_PROD_OFFSET, LIVE_CONNECTED, LIVE_NOT_YET_CONNECTED, NOTIFY_WRITE,
    PAGE_SIZE, RIGHT_CONS_OFFSET, RIGHT_ORDER_OFFSET, RIGHT_PROD_OFFSET, RingShared,
    SRV_LIVE_OFFSET, SRV_NOTIFY_OFFSET, VchanInterface,
};
use crate::notify;
use crate::shared::{RawFlag, RawIndex, RawRing};
use crate::spsc::{Consumer, Producer};

/// Number of `u32` slots from [`GRANTS_OFFSET`] to the end of the page.
pub const GRANT_SLOTS: usize = (PAGE_SIZE - GRANTS_OFFSET) / GRANT_REF_SIZE;

/// A mapped (or locally allocated) 4096-byte vchan control page.
///
/// ```
/// use std::ptr::NonNull;
/// use vchan_ring::{ControlPage, Geometry, Role, LIVE_NOT_YET_CONNECTED};
///
/// // A page-aligned heap page standing in for a grant mapping.
/// #[repr(C, align(4096))]
/// struct Page([u8; 4096]);
/// let mut page = Box::new(Page([0xAA; 4096]));
/// let ptr = NonNull::from(&mut page.0).cast::<u8>();
/// // SAFETY: the box outlives `control` and everything built from it, and is not otherwise
/// // accessed while they live.
/// let control = unsafe { ControlPage::new(ptr) };
///
/// let geometry = Geometry::server_choice(0, 0)?;
/// control.init_server(geometry);
/// assert_eq!(control.live(Role::Client), LIVE_NOT_YET_CONNECTED);
/// // What a client does: read the orders once and validate them.
/// assert_eq!(control.read_geometry()?, geometry);
/// # Ok::<(), vchan_ring::GeometryError>(())
/// ```
pub struct ControlPage {
    base: NonNull<u8>,
}

// SAFETY: the page is only ever accessed through atomics (see the module docs) and `new`'s
// contract keeps it valid, so sharing or moving the view between threads is sound.
unsafe impl Send for ControlPage {}
// SAFETY: as for `Send`.
unsafe impl Sync for ControlPage {}

impl ControlPage {
    /// Views the page at `base`.
    ///
    /// # Safety
    ///
    /// `base` is 4-byte aligned (page-aligned in practice) and valid for reads and writes of
    /// [`PAGE_SIZE`] bytes for as long as this value, or any [`RawIndex`], [`RawFlag`],
    /// [`RawRing`], [`Producer`] or [`Consumer`] obtained from it, lives; and this process
    /// accesses the page only through such values. The peer may write it at any time.
    pub const unsafe fn new(base: NonNull<u8>) -> ControlPage {
        ControlPage { base }
    }

    /// The page's address.
    pub const fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    #[inline(always)]
    fn u32_at<const OFFSET: usize>(&self) -> &AtomicU32 {
        const { assert!(OFFSET % 4 == 0 && OFFSET + 4 <= PAGE_SIZE) };
        let ptr = self.base.as_ptr().wrapping_add(OFFSET).cast::<u32>();
        // SAFETY: `OFFSET` is 4-aligned and in the page (checked at compile time) and the page
        // is 4-aligned, valid, and only accessed atomically (`new`'s contract).
        unsafe { AtomicU32::from_ptr(ptr) }
    }

    #[inline(always)]
    fn u16_at<const OFFSET: usize>(&self) -> &AtomicU16 {
        const { assert!(OFFSET % 2 == 0 && OFFSET + 2 <= PAGE_SIZE) };
        let ptr = self.base.as_ptr().wrapping_add(OFFSET).cast::<u16>();
        // SAFETY: as in `u32_at`, with 2-byte alignment.
        unsafe { AtomicU16::from_ptr(ptr) }
    }

    #[inline(always)]
    fn u8_at<const OFFSET: usize>(&self) -> &AtomicU8 {
        const { assert!(OFFSET < PAGE_SIZE) };
        let ptr = self.base.as_ptr().wrapping_add(OFFSET);
        // SAFETY: `OFFSET` is in the page (checked at compile time); the page is valid and
        // only accessed atomically (`new`'s contract).
        unsafe { AtomicU8::from_ptr(ptr) }
    }

    /// The `grants[index]` slot, if it lies inside the page.
    #[inline]
    fn grant_at(&self, index: usize) -> Option<&AtomicU32> {
        if index >= GRANT_SLOTS {
            return None;
        }
        let ptr = self
            .base
            .as_ptr()
            .wrapping_add(GRANTS_OFFSET + index * GRANT_REF_SIZE)
            .cast::<u32>();
        // SAFETY: `index < GRANT_SLOTS` keeps the slot inside the page; `GRANTS_OFFSET` and
        // the slot size are multiples of 4, so it is aligned; valid and atomic-only by `new`.
        Some(unsafe { AtomicU32::from_ptr(ptr) })
    }

    #[inline(always)]
    fn index_at(&self, side: Side, which: IndexName) -> &AtomicU32 {
        match (side, which) {
            (Side::Left, IndexName::Cons) => self.u32_at::<LEFT_CONS_OFFSET>(),
            (Side::Left, IndexName::Prod) => self.u32_at::<LEFT_PROD_OFFSET>(),
            (Side::Right, IndexName::Cons) => self.u32_at::<RIGHT_CONS_OFFSET>(),
            (Side::Right, IndexName::Prod) => self.u32_at::<RIGHT_PROD_OFFSET>(),
        }
    }

    #[inline(always)]
    fn notify_at(&self, role: Role) -> &AtomicU8 {
        match role {
            Role::Server => self.u8_at::<SRV_NOTIFY_OFFSET>(),
            Role::Client => self.u8_at::<CLI_NOTIFY_OFFSET>(),
        }
    }

    #[inline(always)]
    fn live_at(&self, role: Role) -> &AtomicU8 {
        match role {
            Role::Server => self.u8_at::<SRV_LIVE_OFFSET>(),
            Role::Client => self.u8_at::<CLI_LIVE_OFFSET>(),
        }
    }

    /// A handle on one shared ring index, for building ring halves by hand.
    pub fn index(&self, side: Side, which: IndexName) -> RawIndex {
        let ptr = NonNull::from(self.index_at(side, which)).cast::<u32>();
        // SAFETY: the index lies in the page, is 4-aligned, and stays valid as long as values
        // derived from this page do (`new`'s contract); it is only accessed atomically.
        unsafe { RawIndex::new(ptr) }
    }

    /// Loads a shared ring index once (acquire). For diagnostics and tests: the ring halves
    /// keep their own copies.
    pub fn load_index(&self, side: Side, which: IndexName) -> u32 {
        self.index_at(side, which).load(Ordering::Acquire)
    }

    /// Stores a shared ring index (release). For tests and tools that play the peer.
    pub fn store_index(&self, side: Side, which: IndexName, value: u32) {
        self.index_at(side, which).store(value, Ordering::Release);
    }

    /// Reads `left_order` and `right_order` once each and validates them (what a client does
    /// with a page a possibly hostile server wrote). Keep the result; never re-read the orders.
    pub fn read_geometry(&self) -> Result<Geometry, GeometryError> {
        let left = self.u16_at::<LEFT_ORDER_OFFSET>().load(Ordering::Acquire);
        let right = self.u16_at::<RIGHT_ORDER_OFFSET>().load(Ordering::Acquire);
        Geometry::from_raw_orders(left, right)
    }

    /// Writes both orders.
    pub fn write_orders(&self, geometry: Geometry) {
        let left = u16::from(geometry.left().get());
        let right = u16::from(geometry.right().get());
        self.u16_at::<LEFT_ORDER_OFFSET>()
            .store(left, Ordering::Release);
        self.u16_at::<RIGHT_ORDER_OFFSET>()
            .store(right, Ordering::Release);
    }

    /// The liveness byte of `role` ([`LIVE_EXITED`](crate::LIVE_EXITED),
    /// [`LIVE_CONNECTED`], [`LIVE_NOT_YET_CONNECTED`]; a hostile peer may write anything).
    pub fn live(&self, role: Role) -> u8 {
        self.live_at(role).load(Ordering::Acquire)
    }

    /// Sets the liveness byte of `role` (our own, or on close).
    pub fn set_live(&self, role: Role, state: u8) {
        self.live_at(role).store(state, Ordering::Release);
    }

    /// Whether the peer of `role` is open, as C `libxenvchan_is_open` decides: its liveness
    /// byte is non-zero.
    pub fn peer_is_open(&self, role: Role) -> bool {
        self.live(role.peer()) != 0
    }

    /// The notify byte `role` honours (`srv_notify` for the server, `cli_notify` for the
    /// client): it holds the peer's requests, and `role` clears bits in it after acting.
    pub fn notify_flag(&self, role: Role) -> RawFlag {
        let ptr = NonNull::from(self.notify_at(role)).cast::<u8>();
        // SAFETY: the byte lies in the page and stays valid as long as values derived from
        // this page do (`new`'s contract); it is only accessed atomically.
        unsafe { RawFlag::new(ptr) }
    }

    /// Loads the notify byte `role` honours.
    pub fn notify_bits(&self, role: Role) -> u8 {
        self.notify_at(role).load(Ordering::Acquire)
    }

    /// Stores the notify byte `role` honours (set-up only; use the functions below later).
    pub fn set_notify_bits(&self, role: Role, bits: u8) {
        self.notify_at(role).store(bits, Ordering::Release);
    }

    /// `role` asks its peer for a signal after the peer's next write
    /// ([`NOTIFY_WRITE`]) or consume ([`NOTIFY_READ`](crate::NOTIFY_READ)); see
    /// [`request_notify`](crate::request_notify). Re-check the ring before sleeping.
    pub fn request_notify(&self, role: Role, bit: u8) {
        notify::request_notify(&self.notify_flag(role.peer()), bit);
    }

    /// After `role` published an index: clears `bit` in its own notify byte and returns
    /// whether the peer had asked for it (then signal the event channel); see
    /// [`take_notify_request`](crate::take_notify_request).
    pub fn take_notify_request(&self, role: Role, bit: u8) -> bool {
        notify::take_notify_request(&self.notify_flag(role), bit)
    }

    /// The grant references of `side`'s ring, each read once as the iterator reaches it
    /// (iterate once and keep the values). Empty for an in-page ring.
    pub fn grant_refs(&self, geometry: &Geometry, side: Side) -> GrantRefs<'_> {
        GrantRefs {
            page: self,
            indices: geometry.grant_indices(side),
        }
    }

    /// Writes the grant references of `side`'s ring (server set-up).
    pub fn write_grant_refs(
        &self,
        geometry: &Geometry,
        side: Side,
        refs: &[u32],
    ) -> Result<(), GeometryError> {
        let indices = geometry.grant_indices(side);
        if refs.len() != indices.len() {
            return Err(GeometryError::GrantCountMismatch {
                side,
                expected: indices.len(),
                given: refs.len(),
            });
        }
        for (index, &value) in indices.zip(refs) {
            // A valid geometry keeps every index inside the page.
            if let Some(slot) = self.grant_at(index) {
                slot.store(value, Ordering::Release);
            }
        }
        Ok(())
    }

    /// The ring of `order` inside the control page, for orders 10 and 11.
    ///
    /// # Safety
    ///
    /// As for [`RawRing::new`]: within this process, at most one producer and one consumer
    /// may use the in-page ring of each order of this page.
    pub unsafe fn in_page_ring(&self, order: RingOrder) -> Option<RawRing> {
        let RingPlacement::InPage { offset } = order.placement() else {
            return None;
        };
        // SAFETY: in-page offsets (1024, 2048) are inside the page, and non-null since `base`
        // is; `offset + order.size()` is 2048 or 4096, so the ring ends inside the page.
        let base = unsafe { self.base.add(offset) };
        // SAFETY: `base..base + size` is inside the page, valid as long as values derived from
        // the page are (`new`'s contract); single producer/consumer per the caller's contract.
        Some(unsafe { RawRing::new(base, order) })
    }

    /// Server set-up (libxenvchan `init_gnt_srv`): zeroes the page, writes the orders,
    /// `cli_live = 2` (not yet connected), `srv_live = 1`, `cli_notify = NOTIFY_WRITE` (the
    /// server wants to hear about the client's first write). Write the grant references next.
    pub fn init_server(&self, geometry: Geometry) {
        for index in 0..PAGE_SIZE / 4 {
            let ptr = self.base.as_ptr().wrapping_add(index * 4).cast::<u32>();
            // SAFETY: `index * 4 + 4 <= PAGE_SIZE`, 4-aligned in a valid page accessed only
            // atomically (`new`'s contract).
            unsafe { AtomicU32::from_ptr(ptr) }.store(0, Ordering::Relaxed);
        }
        self.write_orders(geometry);
        self.set_live(Role::Client, LIVE_NOT_YET_CONNECTED);
        self.set_live(Role::Server, LIVE_CONNECTED);
        self.set_notify_bits(Role::Client, NOTIFY_WRITE);
        fence(Ordering::Release);
    }

    /// Client connection (end of libxenvchan `libxenvchan_client_init`): `cli_live = 1`,
    /// `srv_notify = NOTIFY_WRITE` (the client wants to hear about the server's writes).
    /// Signal the event channel afterwards.
    pub fn connect_client(&self) {
        self.set_live(Role::Client, LIVE_CONNECTED);
        self.set_notify_bits(Role::Server, NOTIFY_WRITE);
        fence(Ordering::SeqCst);
    }

    /// The producer half of the ring `role` writes, over `ring` (its bytes). Reads the
    /// ring's shared indices once to start from.
    pub fn producer(
        &self,
        role: Role,
        ring: RawRing,
    ) -> Result<Producer<RawRing, RawIndex>, RingError> {
        let side = role.write_side();
        Producer::new(
            ring,
            self.index(side, IndexName::Prod),
            self.index(side, IndexName::Cons),
        )
    }

    /// The consumer half of the ring `role` reads, over `ring` (its bytes).
    pub fn consumer(
        &self,
        role: Role,
        ring: RawRing,
    ) -> Result<Consumer<RawRing, RawIndex>, RingError> {
        let side = role.read_side();
        Consumer::new(
            ring,
            self.index(side, IndexName::Prod),
            self.index(side, IndexName::Cons),
        )
    }

    /// A copy of the fixed fields, each read once (diagnostics, `vchan` tools).
    pub fn snapshot(&self) -> VchanInterface {
        let ring = |side| RingShared {
            cons: self.load_index(side, IndexName::Cons),
            prod: self.load_index(side, IndexName::Prod),
        };
        VchanInterface {
            left: ring(Side::Left),
            right: ring(Side::Right),
            left_order: self.u16_at::<LEFT_ORDER_OFFSET>().load(Ordering::Acquire),
            right_order: self.u16_at::<RIGHT_ORDER_OFFSET>().load(Ordering::Acquire),
            cli_live: self.live(Role::Client),
            srv_live: self.live(Role::Server),
            cli_notify: self.notify_bits(Role::Client),
            srv_notify: self.notify_bits(Role::Server),
        }
    }
}

impl fmt::Debug for ControlPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPage")
            .field("base", &self.base)
            .finish()
    }
}

/// Iterator over a ring's grant references; see [`ControlPage::grant_refs`].
#[derive(Debug)]
pub struct GrantRefs<'a> {
    page: &'a ControlPage,
    indices: Range<usize>,
}

impl Iterator for GrantRefs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let index = self.indices.next()?;
        self.page
            .grant_at(index)
            .map(|slot| slot.load(Ordering::Acquire))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.indices.size_hint()
    }
}

impl ExactSizeIterator for GrantRefs<'_> {}
