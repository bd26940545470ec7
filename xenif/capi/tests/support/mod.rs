//! Safe wrappers for calling the C ABI from the tests: each wraps a handle pointer that one of
//! the library's open functions returned (or null, which the functions accept), so every call
//! meets the C functions' contract; `errno` is checked with [`fails`].
#![allow(dead_code)] // each test binary uses a different part

use std::ffi::{c_int, c_void};
use std::path::Path;

use nix::errno::Errno;
use vchan_xen_capi::evtchn::*;
use vchan_xen_capi::foreignmemory::*;
use vchan_xen_capi::gnttab::*;
use vchan_xen_capi::xencall::*;
use vchan_xenif::DomId;

/// Asserts a C-style failure: `ret` is the failure value and `errno` is `want`.
#[track_caller]
pub fn fails<T: PartialEq + std::fmt::Debug>(ret: T, failure: T, want: i32) {
    let errno = Errno::last_raw();
    assert_eq!(ret, failure);
    assert_eq!(
        errno,
        want,
        "errno {} instead of {}",
        Errno::from_raw(errno),
        Errno::from_raw(want)
    );
}

/// An event-channel handle (null, or from `xenevtchn_open`/[`XenevtchnHandle::open`], not
/// closed yet: `close` consumes the wrapper).
#[derive(Clone, Copy, Debug)]
pub struct Ev(pub *mut XenevtchnHandle);

// SAFETY: the handle is `Sync` on the Rust side (its state is behind locks), and the C
// functions may be called from any thread.
unsafe impl Send for Ev {}

impl Ev {
    pub fn new(dir: &Path, domid: u16) -> Ev {
        Ev(Box::into_raw(Box::new(
            XenevtchnHandle::open(dir, DomId(domid)).unwrap(),
        )))
    }

    pub fn open_env(flags: u32) -> Ev {
        // SAFETY: always safe to call.
        Ev(unsafe { xenevtchn_open(std::ptr::null_mut(), flags) })
    }

    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    pub fn fd(self) -> c_int {
        // SAFETY: `self.0` is a live handle (type invariant).
        unsafe { xenevtchn_fd(self.0) }
    }

    pub fn bind_unbound(self, domid: u32) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_bind_unbound_port(self.0, domid) }
    }

    pub fn bind_interdomain(self, domid: u32, port: u32) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_bind_interdomain(self.0, domid, port) }
    }

    pub fn bind_virq(self, virq: u32) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_bind_virq(self.0, virq) }
    }

    pub fn notify(self, port: u32) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_notify(self.0, port) }
    }

    pub fn unbind(self, port: u32) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_unbind(self.0, port) }
    }

    pub fn pending(self) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_pending(self.0) }
    }

    pub fn unmask(self, port: u32) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_unmask(self.0, port) }
    }

    pub fn restrict(self, domid: u16) -> c_int {
        // SAFETY: as in `fd`.
        unsafe { xenevtchn_restrict(self.0, domid) }
    }

    pub fn close(self) -> c_int {
        // SAFETY: as in `fd`; the wrapper is consumed, so the handle is not used again.
        unsafe { xenevtchn_close(self.0) }
    }
}

/// A grant handle of either kind (null, or from an open function, not closed yet).
#[derive(Clone, Copy, Debug)]
pub struct Gnt(pub *mut XengntdevHandle);

impl Gnt {
    pub fn tab(dir: &Path, domid: u16) -> Gnt {
        Gnt(Box::into_raw(Box::new(
            XengntdevHandle::open_gnttab(dir, DomId(domid)).unwrap(),
        )))
    }

    pub fn shr(dir: &Path, domid: u16) -> Gnt {
        Gnt(Box::into_raw(Box::new(
            XengntdevHandle::open_gntshr(dir, DomId(domid)).unwrap(),
        )))
    }

    pub fn tab_env() -> Gnt {
        // SAFETY: always safe to call.
        Gnt(unsafe { xengnttab_open(std::ptr::null_mut(), 0) })
    }

    pub fn shr_env() -> Gnt {
        // SAFETY: always safe to call.
        Gnt(unsafe { xengntshr_open(std::ptr::null_mut(), 0) })
    }

    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    pub fn share(self, domid: u32, refs: &mut [u32], writable: bool) -> *mut c_void {
        let count = refs.len() as c_int;
        // SAFETY: a live handle; `refs` has room for `count` references.
        unsafe { xengntshr_share_pages(self.0, domid, count, refs.as_mut_ptr(), writable.into()) }
    }

    /// Shares `count` pages although `refs` holds fewer (for `count <= 0`, which must fail
    /// before writing anything).
    pub fn share_count(self, domid: u32, count: c_int, refs: &mut [u32]) -> *mut c_void {
        assert!(count <= refs.len() as c_int);
        // SAFETY: a live handle; `refs` has room for `count` references.
        unsafe { xengntshr_share_pages(self.0, domid, count, refs.as_mut_ptr(), 1) }
    }

    pub fn share_notify(self, domid: u32, gref: &mut u32, offset: u32, port: u32) -> *mut c_void {
        // SAFETY: a live handle; `gref` has room for one reference.
        unsafe { xengntshr_share_page_notify(self.0, domid, gref, 1, offset, port) }
    }

    /// Unshares; the pages must not be used afterwards.
    pub fn unshare(self, addr: *mut c_void, count: u32) -> c_int {
        // SAFETY: a live handle; the test no longer uses the pages.
        unsafe { xengntshr_unshare(self.0, addr, count) }
    }

    pub fn map(self, domid: u32, gref: u32, prot: c_int) -> *mut c_void {
        // SAFETY: a live handle.
        unsafe { xengnttab_map_grant_ref(self.0, domid, gref, prot) }
    }

    pub fn map_domain(self, domid: u32, refs: &[u32], prot: c_int) -> *mut c_void {
        // SAFETY: a live handle; `refs` holds `len` references.
        unsafe {
            xengnttab_map_domain_grant_refs(self.0, refs.len() as u32, domid, refs.as_ptr(), prot)
        }
    }

    pub fn map_refs(self, domids: &[u32], refs: &[u32], prot: c_int) -> *mut c_void {
        assert_eq!(domids.len(), refs.len());
        // SAFETY: a live handle; both arrays hold `len` values.
        unsafe {
            xengnttab_map_grant_refs(
                self.0,
                refs.len() as u32,
                domids.as_ptr(),
                refs.as_ptr(),
                prot,
            )
        }
    }

    pub fn map_notify(
        self,
        domid: u32,
        gref: u32,
        prot: c_int,
        offset: u32,
        port: u32,
    ) -> *mut c_void {
        // SAFETY: a live handle.
        unsafe { xengnttab_map_grant_ref_notify(self.0, domid, gref, prot, offset, port) }
    }

    /// Unmaps; the pages must not be used afterwards.
    pub fn unmap(self, addr: *mut c_void, count: u32) -> c_int {
        // SAFETY: a live handle; the test no longer uses the pages.
        unsafe { xengnttab_unmap(self.0, addr, count) }
    }

    pub fn set_max_grants(self, n: u32) -> c_int {
        // SAFETY: a live handle.
        unsafe { xengnttab_set_max_grants(self.0, n) }
    }

    pub fn fd(self) -> c_int {
        // SAFETY: a live handle.
        unsafe { xengnttab_fd(self.0) }
    }

    pub fn copy(self, segs: &mut [GrantCopySegment]) -> c_int {
        // SAFETY: a live handle; the segments' local sides are valid (the tests build them
        // from live buffers of at least `len` bytes).
        unsafe { xengnttab_grant_copy(self.0, segs.len() as u32, segs.as_mut_ptr()) }
    }

    pub fn dmabuf_export(self, domid: u32, refs: &[u32]) -> c_int {
        let mut fd = 0u32;
        // SAFETY: a live handle; valid arrays.
        unsafe {
            xengnttab_dmabuf_exp_from_refs(
                self.0,
                domid,
                0,
                refs.len() as u32,
                refs.as_ptr(),
                &mut fd,
            )
        }
    }

    /// Closes a gnttab handle.
    pub fn close_tab(self) -> c_int {
        // SAFETY: a live handle, not used again.
        unsafe { xengnttab_close(self.0) }
    }

    /// Closes a gntshr handle.
    pub fn close_shr(self) -> c_int {
        // SAFETY: a live handle, not used again.
        unsafe { xengntshr_close(self.0) }
    }
}

/// A hypercall handle from `xencall_open` (or null).
#[derive(Clone, Copy, Debug)]
pub struct Call(pub *mut XencallHandle);

impl Call {
    pub fn open_env() -> Call {
        // SAFETY: always safe to call.
        Call(unsafe { xencall_open(std::ptr::null_mut(), 0) })
    }

    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// `XEN_DOMCTL_getdomaininfo` of `domain` through a hypercall buffer: the result and
    /// the buffer afterwards.
    pub fn getdomaininfo(self, domain: u16) -> (c_int, [u8; domctl::SIZE]) {
        // SAFETY: a live handle (or null, accepted).
        let buf =
            unsafe { xencall_alloc_buffer(self.0, domctl::SIZE) }.cast::<[u8; domctl::SIZE]>();
        assert!(!buf.is_null());
        let mut b = [0u8; domctl::SIZE];
        b[domctl::CMD..][..4].copy_from_slice(&XEN_DOMCTL_GETDOMAININFO.to_ne_bytes());
        b[domctl::INTERFACE_VERSION..][..4]
            .copy_from_slice(&XEN_DOMCTL_INTERFACE_VERSION.to_ne_bytes());
        b[domctl::DOMAIN..][..2].copy_from_slice(&domain.to_ne_bytes());
        // SAFETY: the buffer holds `domctl::SIZE` bytes.
        unsafe { buf.write(b) };
        // SAFETY: a live handle; the argument is a whole `struct xen_domctl`.
        let r = unsafe { xencall1(self.0, HYPERVISOR_DOMCTL, buf as u64) };
        let errno = Errno::last_raw();
        // SAFETY: as for the write.
        let out = unsafe { buf.read() };
        // SAFETY: from `xencall_alloc_buffer`, not used again.
        unsafe { xencall_free_buffer(self.0, buf.cast()) };
        Errno::set_raw(errno);
        (r, out)
    }

    pub fn call0(self, op: u32) -> c_int {
        // SAFETY: a live handle; no pointer argument.
        unsafe { xencall0(self.0, op) }
    }

    pub fn never_fault(self) -> c_int {
        // SAFETY: always safe.
        unsafe { xencall_buffers_never_fault(self.0) }
    }

    pub fn close(self) -> c_int {
        // SAFETY: a live handle, not used again.
        unsafe { xencall_close(self.0) }
    }
}

/// A foreign-memory handle from `xenforeignmemory_open` (or null).
#[derive(Clone, Copy, Debug)]
pub struct Fmem(pub *mut XenforeignmemoryHandle);

impl Fmem {
    pub fn open_env() -> Fmem {
        // SAFETY: always safe to call.
        Fmem(unsafe { xenforeignmemory_open(std::ptr::null_mut(), 0) })
    }

    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    pub fn map(self, domid: u32) -> *mut c_void {
        let pfns = [0 as libc::c_ulong];
        let mut err = [0 as c_int];
        // SAFETY: a live handle; one frame number, room for one error.
        unsafe {
            xenforeignmemory_map(
                self.0,
                domid,
                libc::PROT_READ,
                1,
                pfns.as_ptr(),
                err.as_mut_ptr(),
            )
        }
    }

    pub fn restrict(self, domid: u16) -> c_int {
        // SAFETY: a live handle.
        unsafe { xenforeignmemory_restrict(self.0, domid) }
    }

    pub fn close(self) -> c_int {
        // SAFETY: a live handle, not used again.
        unsafe { xenforeignmemory_close(self.0) }
    }
}

/// Byte `at` of a mapping the test has not unmapped.
pub fn byte(p: *const c_void, at: usize) -> u8 {
    // SAFETY: callers pass mappings they have not unmapped, and `at` inside them.
    unsafe { p.cast::<u8>().wrapping_add(at).read_volatile() }
}

/// Writes byte `at` of a writable mapping the test has not unmapped.
pub fn set_byte(p: *mut c_void, at: usize, v: u8) {
    // SAFETY: as for `byte`, on a writable mapping.
    unsafe { p.cast::<u8>().wrapping_add(at).write_volatile(v) }
}

/// `munmap` of a mapping the test no longer uses.
pub fn munmap(p: *mut c_void, len: usize) -> c_int {
    // SAFETY: callers pass a whole mapping they no longer use.
    unsafe { libc::munmap(p, len) }
}

/// The descriptor flags (`F_GETFD`) of `fd`.
pub fn fd_flags(fd: c_int) -> c_int {
    // SAFETY: fcntl on a descriptor number has no memory effects.
    unsafe { libc::fcntl(fd, libc::F_GETFD) }
}
