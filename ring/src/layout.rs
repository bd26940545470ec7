//! The shared control page, byte-exact with libxenvchan's C layout.
//!
//! Origin: Xen public header `xen/include/public/io/libxenvchan.h` (Debian `libxen-dev`,
//! `usr/include/xen/io/libxenvchan.h`), `struct ring_shared` and `struct vchan_interface`.
//! `ring/tests/c_layout.rs` compiles a C program against that header and compares every
//! offset and size printed there with the constants below.
//!
//! These types describe the bytes; they are *not* how live shared memory is accessed. A page
//! the peer can write is reached only through [`ControlPage`](crate::ControlPage), which reads
//! and writes each field with a single atomic access and never forms a `&VchanInterface` into
//! it. [`VchanInterface`] values are local copies (for example
//! [`ControlPage::snapshot`](crate::ControlPage::snapshot)), so the zerocopy derives are safe to
//! use on them.

use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a Xen page on x86: the control page is exactly one page.
pub const PAGE_SIZE: usize = 4096;

/// One ring's two free-running indices (C `struct ring_shared`).
///
/// `prod` is written only by the ring's producer, `cons` only by its consumer; each side
/// reads only the other's.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RingShared {
    /// Total bytes consumed so far (mod 2^32).
    pub cons: u32,
    /// Total bytes produced so far (mod 2^32).
    pub prod: u32,
}

/// The fixed-size head of the control page (C `struct vchan_interface` without its
/// flexible `grants[]` array, which starts at [`GRANTS_OFFSET`]).
///
/// "Left" is the ring the client writes and the server reads; "right" the ring the server
/// writes and the client reads.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VchanInterface {
    /// Indices of the left ring (client → server).
    pub left: RingShared,
    /// Indices of the right ring (server → client).
    pub right: RingShared,
    /// log2 of the left ring's size (10..=20).
    pub left_order: u16,
    /// log2 of the right ring's size (10..=20).
    pub right_order: u16,
    /// Client liveness: [`LIVE_EXITED`], [`LIVE_CONNECTED`] or [`LIVE_NOT_YET_CONNECTED`].
    pub cli_live: u8,
    /// Server liveness: [`LIVE_EXITED`] or [`LIVE_CONNECTED`].
    pub srv_live: u8,
    /// Notification requests the *client* must honour: the server sets [`NOTIFY_WRITE`] here
    /// to be told when the client writes, [`NOTIFY_READ`] to be told when it consumes.
    pub cli_notify: u8,
    /// Notification requests the *server* must honour (set by the client).
    pub srv_notify: u8,
}

/// Liveness byte value: that side has exited (or its mapping went away: unmap-notify).
pub const LIVE_EXITED: u8 = 0;
/// Liveness byte value: that side is connected.
pub const LIVE_CONNECTED: u8 = 1;
/// Liveness byte value (client byte only): the server is waiting for a client.
pub const LIVE_NOT_YET_CONNECTED: u8 = 2;

/// Notify bit (C `VCHAN_NOTIFY_WRITE`): "signal me when data is written".
pub const NOTIFY_WRITE: u8 = 0x1;
/// Notify bit (C `VCHAN_NOTIFY_READ`): "signal me when data is read (space is freed)".
pub const NOTIFY_READ: u8 = 0x2;

/// Offset of `left.cons`.
pub const LEFT_CONS_OFFSET: usize = offset_of!(VchanInterface, left) + offset_of!(RingShared, cons);
/// Offset of `left.prod`.
pub const LEFT_PROD_OFFSET: usize = offset_of!(VchanInterface, left) + offset_of!(RingShared, prod);
/// Offset of `right.cons`.
pub const RIGHT_CONS_OFFSET: usize =
    offset_of!(VchanInterface, right) + offset_of!(RingShared, cons);
/// Offset of `right.prod`.
pub const RIGHT_PROD_OFFSET: usize =
    offset_of!(VchanInterface, right) + offset_of!(RingShared, prod);
/// Offset of `left_order`.
pub const LEFT_ORDER_OFFSET: usize = offset_of!(VchanInterface, left_order);
/// Offset of `right_order`.
pub const RIGHT_ORDER_OFFSET: usize = offset_of!(VchanInterface, right_order);
/// Offset of `cli_live` (the client maps the page with unmap-notify clearing this byte).
pub const CLI_LIVE_OFFSET: usize = offset_of!(VchanInterface, cli_live);
/// Offset of `srv_live` (the server shares the page with unmap-notify clearing this byte).
pub const SRV_LIVE_OFFSET: usize = offset_of!(VchanInterface, srv_live);
/// Offset of `cli_notify`.
pub const CLI_NOTIFY_OFFSET: usize = offset_of!(VchanInterface, cli_notify);
/// Offset of `srv_notify`.
pub const SRV_NOTIFY_OFFSET: usize = offset_of!(VchanInterface, srv_notify);
/// Offset of the flexible `grants[]` array (u32 grant references: left ring's pages first).
pub const GRANTS_OFFSET: usize = size_of::<VchanInterface>();
/// Size in bytes of one grant reference in `grants[]`.
pub const GRANT_REF_SIZE: usize = size_of::<u32>();

/// In-page offset of a ring of order 10 (1 KiB).
pub const SMALL_RING_OFFSET: usize = 1024;
/// In-page offset of a ring of order 11 (2 KiB).
pub const LARGE_RING_OFFSET: usize = 2048;

// C `struct ring_shared`: two u32, no padding.
const_assert_eq!(size_of::<RingShared>(), 8);
const_assert_eq!(offset_of!(RingShared, cons), 0);
const_assert_eq!(offset_of!(RingShared, prod), 4);
// C `struct vchan_interface` (sizeof excludes the zero-length grants[]).
const_assert_eq!(size_of::<VchanInterface>(), 24);
const_assert_eq!(core::mem::align_of::<VchanInterface>(), 4);
const_assert_eq!(LEFT_CONS_OFFSET, 0);
const_assert_eq!(LEFT_PROD_OFFSET, 4);
const_assert_eq!(RIGHT_CONS_OFFSET, 8);
const_assert_eq!(RIGHT_PROD_OFFSET, 12);
const_assert_eq!(LEFT_ORDER_OFFSET, 16);
const_assert_eq!(RIGHT_ORDER_OFFSET, 18);
const_assert_eq!(CLI_LIVE_OFFSET, 20);
const_assert_eq!(SRV_LIVE_OFFSET, 21);
const_assert_eq!(CLI_NOTIFY_OFFSET, 22);
const_assert_eq!(SRV_NOTIFY_OFFSET, 23);
const_assert_eq!(GRANTS_OFFSET, 24);
// Every shared u32 must be 4-byte aligned inside a page-aligned page (atomics need it).
const_assert_eq!(GRANTS_OFFSET % 4, 0);
const_assert_eq!(LEFT_ORDER_OFFSET % 2, 0);
const_assert_eq!(RIGHT_ORDER_OFFSET % 2, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_bytes_round_trip_in_native_order() {
        let v = VchanInterface {
            left: RingShared { cons: 1, prod: 2 },
            right: RingShared { cons: 3, prod: 4 },
            left_order: 10,
            right_order: 11,
            cli_live: LIVE_NOT_YET_CONNECTED,
            srv_live: LIVE_CONNECTED,
            cli_notify: NOTIFY_WRITE,
            srv_notify: NOTIFY_READ,
        };
        let bytes = v.as_bytes();
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[RIGHT_CONS_OFFSET..][..4], &3u32.to_ne_bytes());
        assert_eq!(&bytes[RIGHT_ORDER_OFFSET..][..2], &11u16.to_ne_bytes());
        assert_eq!(bytes[CLI_LIVE_OFFSET], 2);
        assert_eq!(bytes[SRV_NOTIFY_OFFSET], NOTIFY_READ);
        let back = VchanInterface::read_from_bytes(bytes).unwrap();
        assert_eq!(back, v);
    }
}
