//! The kernel ABI of Linux's Xen devices (x86-64 and every other Linux target: the layouts use
//! only fixed-size fields).
//!
//! Each struct is a transcription of a uapi header's C struct, named in its doc comment, with
//! compile-time size and offset checks; the ioctl numbers are computed from the sizes, as the
//! C `_IOC(_IOC_NONE, type, nr, sizeof(struct ...))` macros do. The test
//! `xenif/tests/xen_abi.rs` compiles a C program against Debian's `linux-libc-dev` headers and
//! compares every number, size and offset here with the C compiler's.
//!
//! Two requests carry a variable-length array after a fixed header (`gref_ids[]`, `refs[]`): the C
//! structs declare it with one element, so `sizeof` (and hence the ioctl number) includes one
//! element. [`VarArg`] builds the argument buffer for n entries.

use core::marker::PhantomData;
use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The type of an ioctl request number on Linux/glibc (`unsigned long`).
pub type IoctlRequest = libc::c_ulong;

/// `_IOC(_IOC_NONE, ty, nr, size)`: every Xen device ioctl uses direction "none" with the size of
/// its argument encoded (the drivers copy in and out themselves).
macro_rules! xen_ioc {
    ($ty:expr, $nr:expr, $size:expr) => {
        nix::ioc!(nix::sys::ioctl::NONE, $ty, $nr, $size) as IoctlRequest
    };
}

/// `gntalloc`: the page may be written by the peer (`GNTALLOC_FLAG_WRITABLE`).
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// Unmap notification action: clear (set to zero) the byte at `index` (`UNMAP_NOTIFY_CLEAR_BYTE`).
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// Unmap notification action: signal the event channel `event_channel_port` (`UNMAP_NOTIFY_SEND_EVENT`).
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// `include/uapi/xen/gntalloc.h: struct ioctl_gntalloc_alloc_gref` — allocate `count` pages and
/// grant them to `domid`. `gref_ids` is variable-length (one element here, as in C).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlGntallocAllocGref {
    /// In: the domain to be given access.
    pub domid: u16,
    /// In: [`GNTALLOC_FLAG_WRITABLE`] or 0.
    pub flags: u16,
    /// In: number of pages.
    pub count: u32,
    /// Out: the offset to pass to `mmap` (a byte offset, a multiple of the page size).
    pub index: u64,
    /// Out: the grant references, one per page (really `count` entries).
    pub gref_ids: [u32; 1],
    /// Tail padding of the C struct (its alignment is 8).
    pub _pad: u32,
}
const_assert_eq!(size_of::<IoctlGntallocAllocGref>(), 24);
const_assert_eq!(offset_of!(IoctlGntallocAllocGref, domid), 0);
const_assert_eq!(offset_of!(IoctlGntallocAllocGref, flags), 2);
const_assert_eq!(offset_of!(IoctlGntallocAllocGref, count), 4);
const_assert_eq!(offset_of!(IoctlGntallocAllocGref, index), 8);
const_assert_eq!(offset_of!(IoctlGntallocAllocGref, gref_ids), 16);

/// `include/uapi/xen/gntalloc.h: struct ioctl_gntalloc_dealloc_gref` — drop this file's hold on
/// `count` pages starting at `index` (they are freed once nobody maps them).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlGntallocDeallocGref {
    /// The offset the allocation returned.
    pub index: u64,
    /// Number of pages.
    pub count: u32,
    /// Tail padding of the C struct.
    pub _pad: u32,
}
const_assert_eq!(size_of::<IoctlGntallocDeallocGref>(), 16);
const_assert_eq!(offset_of!(IoctlGntallocDeallocGref, index), 0);
const_assert_eq!(offset_of!(IoctlGntallocDeallocGref, count), 8);

/// `include/uapi/xen/gntalloc.h: struct ioctl_gntalloc_unmap_notify` (and
/// `include/uapi/xen/gntdev.h: struct ioctl_gntdev_unmap_notify`, identical) — what to do when the
/// page containing byte `index` is finally released.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlUnmapNotify {
    /// Byte offset in the device file (mmap offset + byte within the region).
    pub index: u64,
    /// [`UNMAP_NOTIFY_CLEAR_BYTE`] | [`UNMAP_NOTIFY_SEND_EVENT`].
    pub action: u32,
    /// The local event-channel port to signal.
    pub event_channel_port: u32,
}
const_assert_eq!(size_of::<IoctlUnmapNotify>(), 16);
const_assert_eq!(offset_of!(IoctlUnmapNotify, index), 0);
const_assert_eq!(offset_of!(IoctlUnmapNotify, action), 8);
const_assert_eq!(offset_of!(IoctlUnmapNotify, event_channel_port), 12);

/// `include/uapi/xen/gntdev.h: struct ioctl_gntdev_grant_ref` — one page to map.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlGntdevGrantRef {
    /// The granting domain.
    pub domid: u32,
    /// Its grant reference.
    pub r#ref: u32,
}
const_assert_eq!(size_of::<IoctlGntdevGrantRef>(), 8);
const_assert_eq!(offset_of!(IoctlGntdevGrantRef, r#ref), 4);

/// `include/uapi/xen/gntdev.h: struct ioctl_gntdev_map_grant_ref` — register `count` grant
/// references for a later `mmap`. `refs` is variable-length (one element here, as in C).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlGntdevMapGrantRef {
    /// In: number of references.
    pub count: u32,
    /// Padding (C: `pad`).
    pub pad: u32,
    /// Out: the offset to pass to `mmap`.
    pub index: u64,
    /// In: the references (really `count` entries).
    pub refs: [IoctlGntdevGrantRef; 1],
}
const_assert_eq!(size_of::<IoctlGntdevMapGrantRef>(), 24);
const_assert_eq!(offset_of!(IoctlGntdevMapGrantRef, count), 0);
const_assert_eq!(offset_of!(IoctlGntdevMapGrantRef, index), 8);
const_assert_eq!(offset_of!(IoctlGntdevMapGrantRef, refs), 16);

/// `include/uapi/xen/gntdev.h: struct ioctl_gntdev_unmap_grant_ref` — forget `count` references
/// registered at `index` (after `munmap`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlGntdevUnmapGrantRef {
    /// The offset the map request returned.
    pub index: u64,
    /// Number of references.
    pub count: u32,
    /// Padding (C: `pad`).
    pub pad: u32,
}
const_assert_eq!(size_of::<IoctlGntdevUnmapGrantRef>(), 16);
const_assert_eq!(offset_of!(IoctlGntdevUnmapGrantRef, count), 8);

/// `include/uapi/xen/gntdev.h: struct ioctl_gntdev_set_max_grants` — per-file mapping limit
/// (classic Xen kernels only; pv-ops kernels answer `ENOTTY`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlGntdevSetMaxGrants {
    /// The new limit.
    pub count: u32,
}
const_assert_eq!(size_of::<IoctlGntdevSetMaxGrants>(), 4);

/// `include/uapi/xen/evtchn.h: struct ioctl_evtchn_bind_interdomain` — connect to a port the
/// remote domain allocated for us; the ioctl returns the local port.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlEvtchnBindInterdomain {
    /// The remote domain.
    pub remote_domain: u32,
    /// Its port.
    pub remote_port: u32,
}
const_assert_eq!(size_of::<IoctlEvtchnBindInterdomain>(), 8);
const_assert_eq!(offset_of!(IoctlEvtchnBindInterdomain, remote_port), 4);

/// `include/uapi/xen/evtchn.h: struct ioctl_evtchn_bind_unbound_port` — allocate a port that
/// `remote_domain` may bind to; the ioctl returns the local port.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlEvtchnBindUnboundPort {
    /// The domain allowed to connect.
    pub remote_domain: u32,
}
const_assert_eq!(size_of::<IoctlEvtchnBindUnboundPort>(), 4);

/// `include/uapi/xen/evtchn.h: struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`
/// (identical): a local port.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlEvtchnPort {
    /// The local port.
    pub port: u32,
}
const_assert_eq!(size_of::<IoctlEvtchnPort>(), 4);

/// `IOCTL_GNTALLOC_ALLOC_GREF` (`include/uapi/xen/gntalloc.h`).
pub const IOCTL_GNTALLOC_ALLOC_GREF: IoctlRequest =
    xen_ioc!(b'G', 5, size_of::<IoctlGntallocAllocGref>());
/// `IOCTL_GNTALLOC_DEALLOC_GREF` (`include/uapi/xen/gntalloc.h`).
pub const IOCTL_GNTALLOC_DEALLOC_GREF: IoctlRequest =
    xen_ioc!(b'G', 6, size_of::<IoctlGntallocDeallocGref>());
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY` (`include/uapi/xen/gntalloc.h`).
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: IoctlRequest =
    xen_ioc!(b'G', 7, size_of::<IoctlUnmapNotify>());
/// `IOCTL_GNTDEV_MAP_GRANT_REF` (`include/uapi/xen/gntdev.h`).
pub const IOCTL_GNTDEV_MAP_GRANT_REF: IoctlRequest =
    xen_ioc!(b'G', 0, size_of::<IoctlGntdevMapGrantRef>());
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF` (`include/uapi/xen/gntdev.h`).
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: IoctlRequest =
    xen_ioc!(b'G', 1, size_of::<IoctlGntdevUnmapGrantRef>());
/// `IOCTL_GNTDEV_SET_MAX_GRANTS` (`include/uapi/xen/gntdev.h`).
pub const IOCTL_GNTDEV_SET_MAX_GRANTS: IoctlRequest =
    xen_ioc!(b'G', 3, size_of::<IoctlGntdevSetMaxGrants>());
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY` (`include/uapi/xen/gntdev.h`; the same number as gntalloc's).
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: IoctlRequest =
    xen_ioc!(b'G', 7, size_of::<IoctlUnmapNotify>());
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN` (`include/uapi/xen/evtchn.h`).
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: IoctlRequest =
    xen_ioc!(b'E', 1, size_of::<IoctlEvtchnBindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT` (`include/uapi/xen/evtchn.h`).
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: IoctlRequest =
    xen_ioc!(b'E', 2, size_of::<IoctlEvtchnBindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND` (`include/uapi/xen/evtchn.h`).
pub const IOCTL_EVTCHN_UNBIND: IoctlRequest = xen_ioc!(b'E', 3, size_of::<IoctlEvtchnPort>());
/// `IOCTL_EVTCHN_NOTIFY` (`include/uapi/xen/evtchn.h`).
pub const IOCTL_EVTCHN_NOTIFY: IoctlRequest = xen_ioc!(b'E', 4, size_of::<IoctlEvtchnPort>());
/// `IOCTL_EVTCHN_RESET` (`include/uapi/xen/evtchn.h`): no argument.
pub const IOCTL_EVTCHN_RESET: IoctlRequest = xen_ioc!(b'E', 5, 0);

// The values of DESIGN §9 (x86-64), as a second, independent check of the encoding.
const_assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
const_assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x0010_4706);
const_assert_eq!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, 0x0010_4707);
const_assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
const_assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
const_assert_eq!(IOCTL_GNTDEV_SET_MAX_GRANTS, 0x0004_4703);
const_assert_eq!(IOCTL_GNTDEV_SET_UNMAP_NOTIFY, 0x0010_4707);
const_assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
const_assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
const_assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
const_assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
const_assert_eq!(IOCTL_EVTCHN_RESET, 0x0000_4505);

/// A request struct that ends in a variable-length array.
pub trait VarHeader: FromBytes + IntoBytes + KnownLayout + Immutable + Sized {
    /// The array's element type.
    type Elem: FromBytes + IntoBytes + KnownLayout + Immutable + Copy;
    /// Byte offset of the array in the struct (and in the argument buffer).
    const ELEMS_AT: usize;
}

impl VarHeader for IoctlGntallocAllocGref {
    type Elem = u32;
    const ELEMS_AT: usize = offset_of!(IoctlGntallocAllocGref, gref_ids);
}

impl VarHeader for IoctlGntdevMapGrantRef {
    type Elem = IoctlGntdevGrantRef;
    const ELEMS_AT: usize = offset_of!(IoctlGntdevMapGrantRef, refs);
}

/// The argument buffer of a request with `n` array entries: the header, then the entries from
/// [`VarHeader::ELEMS_AT`] on. Its length is the larger of the C `sizeof` of the struct (the
/// kernel always copies a whole header, which already contains one entry and padding) and
/// `ELEMS_AT + n * size_of::<Elem>()`; it is zero-initialised and 8-byte aligned.
pub struct VarArg<H: VarHeader> {
    words: Vec<u64>,
    len: usize,
    count: usize,
    _header: PhantomData<H>,
}

impl<H: VarHeader> VarArg<H> {
    /// A zeroed buffer for `count` entries, or `None` if its size overflows.
    pub fn new(count: usize) -> Option<Self> {
        let len = count
            .checked_mul(size_of::<H::Elem>())?
            .checked_add(H::ELEMS_AT)?
            .max(size_of::<H>());
        let words = vec![0u64; len.div_ceil(8)];
        Some(VarArg {
            words,
            len,
            count,
            _header: PhantomData,
        })
    }

    /// Number of array entries the buffer holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The buffer's length in bytes (what the kernel may read or write).
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// The whole buffer as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.words.as_bytes()[..self.len]
    }

    fn as_mut_bytes(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.words.as_mut_bytes()[..len]
    }

    /// The fixed header.
    pub fn header(&self) -> &H {
        // The buffer is at least size_of::<H>() bytes and 8-aligned (H's alignment is at most 8).
        H::ref_from_prefix(self.as_bytes())
            .map(|(h, _)| h)
            .unwrap_or_else(|_| unreachable!("VarArg buffer shorter than its header"))
    }

    /// The fixed header, mutably.
    pub fn header_mut(&mut self) -> &mut H {
        H::mut_from_prefix(self.as_mut_bytes())
            .map(|(h, _)| h)
            .unwrap_or_else(|_| unreachable!("VarArg buffer shorter than its header"))
    }

    /// The `count` array entries.
    pub fn elems(&self) -> &[H::Elem] {
        let end = H::ELEMS_AT + self.count * size_of::<H::Elem>();
        <[H::Elem]>::ref_from_bytes(&self.as_bytes()[H::ELEMS_AT..end])
            .unwrap_or_else(|_| unreachable!("VarArg entries misaligned"))
    }

    /// The `count` array entries, mutably.
    pub fn elems_mut(&mut self) -> &mut [H::Elem] {
        let end = H::ELEMS_AT + self.count * size_of::<H::Elem>();
        <[H::Elem]>::mut_from_bytes(&mut self.as_mut_bytes()[H::ELEMS_AT..end])
            .unwrap_or_else(|_| unreachable!("VarArg entries misaligned"))
    }

    /// Pointer to the start of the buffer, for the ioctl.
    pub fn as_mut_ptr(&mut self) -> *mut H {
        self.words.as_mut_ptr().cast()
    }
}

impl<H: VarHeader + core::fmt::Debug> core::fmt::Debug for VarArg<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VarArg")
            .field("header", self.header())
            .field("count", &self.count)
            .field("byte_len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_gref_buffer_always_holds_a_whole_header() {
        // One entry: 16 + 4 = 20 bytes of payload, but the kernel copies sizeof(struct) = 24.
        let one = VarArg::<IoctlGntallocAllocGref>::new(1).unwrap();
        assert_eq!(one.byte_len(), 24);
        let two = VarArg::<IoctlGntallocAllocGref>::new(2).unwrap();
        assert_eq!(two.byte_len(), 24);
        let three = VarArg::<IoctlGntallocAllocGref>::new(3).unwrap();
        assert_eq!(three.byte_len(), 28);
        let big = VarArg::<IoctlGntallocAllocGref>::new(257).unwrap();
        assert_eq!(big.byte_len(), 16 + 4 * 257);
        assert_eq!(big.elems().len(), 257);
    }

    #[test]
    fn map_grant_ref_buffer_layout() {
        let mut arg = VarArg::<IoctlGntdevMapGrantRef>::new(3).unwrap();
        assert_eq!(arg.byte_len(), 16 + 3 * 8);
        arg.header_mut().count = 3;
        for (i, e) in arg.elems_mut().iter_mut().enumerate() {
            *e = IoctlGntdevGrantRef {
                domid: 7,
                r#ref: 100 + i as u32,
            };
        }
        let b = arg.as_bytes();
        assert_eq!(&b[0..4], &3u32.to_ne_bytes());
        assert_eq!(&b[16..20], &7u32.to_ne_bytes());
        assert_eq!(&b[20..24], &100u32.to_ne_bytes());
        assert_eq!(&b[36..40], &102u32.to_ne_bytes());
        // The header's one-element array is the first entry.
        assert_eq!(arg.header().refs[0].r#ref, 100);
    }

    #[test]
    fn oversized_counts_are_refused() {
        assert!(VarArg::<IoctlGntdevMapGrantRef>::new(usize::MAX / 4).is_none());
    }
}
