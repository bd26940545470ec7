//! `libxencall.so.1`: hypercalls (`xencall.h`), answered by the simulated host's (very small)
//! hypervisor.
//!
//! Debian's `libxenctrl` opens a hypercall handle in `xc_interface_open`, which fails without
//! `/dev/xen/privcmd`; programs such as `vchan-socket-proxy` (client mode) need it to succeed
//! only to ask whether a domain still exists (`xc_domain_getinfo`). So the hypervisor here
//! implements exactly one hypercall, with Xen 4.17's semantics:
//!
//! * `__HYPERVISOR_domctl` / `XEN_DOMCTL_getdomaininfo`: the first domain with an id at or
//!   above the one asked for (`ESRCH` when there is none, `EINVAL` for a reserved id), with
//!   `domain`, `flags` (running; never dying: a released domain is simply gone) and one
//!   online vCPU filled in, every other field 0. Only the control domain (0) may ask, as under
//!   Xen's default policy: other domains get `EPERM`. A wrong `interface_version` is `EACCES`.
//!
//! Every other hypercall and domctl fails with `ENOSYS` (logged), as on a hypervisor built
//! without it. Hypercall buffers are ordinary anonymous memory (the simulated hypervisor
//! reads this process's memory directly), so they never fault.
//!
//! Which domains exist comes from the host's directory: `<VCHAN_SIM_DIR>/dom<N>/` exists
//! exactly while domain N does (see `vchan_xenif::sim::host`).

use std::ffi::{c_int, c_long, c_uint, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use vchan_xenif::DomId;

use crate::common::{Opener, PAGE_SIZE, fail, guard, log, sim_from_env};

const LIB: &str = "xencall";

/// `__HYPERVISOR_domctl` (`xen/xen.h`).
pub const HYPERVISOR_DOMCTL: c_uint = 36;
/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17 (`xen/domctl.h`).
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;
/// `XEN_DOMCTL_getdomaininfo`.
pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
/// `XEN_DOMINF_running`.
pub const XEN_DOMINF_RUNNING: u32 = 1 << 5;

/// Offsets in `struct xen_domctl` (`xen/domctl.h`, x86-64; checked against Debian's header
/// by `tests/layout.rs`).
pub mod domctl {
    /// `cmd`.
    pub const CMD: usize = 0;
    /// `interface_version`.
    pub const INTERFACE_VERSION: usize = 4;
    /// `domain`.
    pub const DOMAIN: usize = 8;
    /// `u`, the union of the commands' arguments.
    pub const UNION: usize = 16;
    /// `sizeof(struct xen_domctl)`.
    pub const SIZE: usize = 144;
}

/// Offsets in `struct xen_domctl_getdomaininfo` (`xen/domctl.h`, x86-64), inside the union.
pub mod getdomaininfo {
    /// `domain`.
    pub const DOMAIN: usize = 0;
    /// `flags`.
    pub const FLAGS: usize = 4;
    /// `nr_online_vcpus`.
    pub const NR_ONLINE_VCPUS: usize = 64;
    /// `sizeof(struct xen_domctl_getdomaininfo)`.
    pub const SIZE: usize = 112;
}

/// A hypercall handle (C `xencall_handle`), opaque to C.
#[derive(Debug)]
pub struct XencallHandle {
    dir: PathBuf,
    domid: DomId,
    _opener: Opener,
}

impl XencallHandle {
    /// A handle acting as `domid` of the host at `dir` (what [`xencall_open`] makes from the
    /// environment).
    pub fn new(dir: &Path, domid: DomId) -> Self {
        XencallHandle {
            dir: dir.to_owned(),
            domid,
            _opener: Opener::this_process(),
        }
    }

    /// The domains of the host, in id order.
    fn domains(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("dom")?.parse().ok())
            .filter(|&d: &u16| DomId(d).is_valid())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The hypervisor: one hypercall; 0 or a negative errno, as Xen answers.
    ///
    /// # Safety
    /// For `__HYPERVISOR_domctl`, `args[0]` is null or the address of a `struct xen_domctl`
    /// the caller lets us read and write.
    unsafe fn hypercall(&self, op: c_uint, args: &[u64]) -> Result<c_long, i32> {
        if op != HYPERVISOR_DOMCTL {
            log(
                LIB,
                format_args!("hypercall {op}: not implemented by the simulated hypervisor"),
            );
            return Err(libc::ENOSYS);
        }
        let op = args.first().copied().unwrap_or(0) as usize as *mut u8;
        if op.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: the caller's contract: `op` is a `struct xen_domctl`, `domctl::SIZE` bytes,
        // ours to read and write during the call (the C library's bounce buffer).
        let buf = unsafe { std::slice::from_raw_parts_mut(op, domctl::SIZE) };
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let cmd = u32_at(buf, domctl::CMD);
        if u32_at(buf, domctl::INTERFACE_VERSION) != XEN_DOMCTL_INTERFACE_VERSION {
            return Err(libc::EACCES);
        }
        if self.domid != DomId::DOM0 {
            return Err(libc::EPERM);
        }
        if cmd != XEN_DOMCTL_GETDOMAININFO {
            log(
                LIB,
                format_args!("domctl {cmd}: not implemented by the simulated hypervisor"),
            );
            return Err(libc::ENOSYS);
        }
        let want = u16::from_ne_bytes([buf[domctl::DOMAIN], buf[domctl::DOMAIN + 1]]);
        if !DomId(want).is_valid() {
            return Err(libc::EINVAL);
        }
        let found = self
            .domains()
            .into_iter()
            .find(|&d| d >= want)
            .ok_or(libc::ESRCH)?;
        let info = &mut buf[domctl::UNION..domctl::UNION + getdomaininfo::SIZE];
        info.fill(0);
        info[getdomaininfo::DOMAIN..][..2].copy_from_slice(&found.to_ne_bytes());
        info[getdomaininfo::FLAGS..][..4].copy_from_slice(&XEN_DOMINF_RUNNING.to_ne_bytes());
        info[getdomaininfo::NR_ONLINE_VCPUS..][..4].copy_from_slice(&1u32.to_ne_bytes());
        buf[domctl::DOMAIN..][..2].copy_from_slice(&found.to_ne_bytes());
        Ok(0)
    }
}

/// Borrows the handle behind a C pointer.
///
/// # Safety
/// `h` is null or a live handle from [`xencall_open`].
unsafe fn handle<'a>(h: *mut XencallHandle) -> Result<&'a XencallHandle, i32> {
    // SAFETY: the caller's contract: null or a live handle we allocated.
    unsafe { h.as_ref() }.ok_or(libc::EINVAL)
}

/// # Safety
/// As for [`XencallHandle::hypercall`], and `h` as for [`handle`].
unsafe fn call(h: *mut XencallHandle, op: c_uint, args: &[u64]) -> c_long {
    guard(-1, || {
        // SAFETY: forwarded from the caller.
        let r = unsafe { handle(h) }.and_then(|h| unsafe { h.hypercall(op, args) });
        match r {
            Ok(v) => v,
            Err(errno) => fail(errno, -1),
        }
    })
}

/// Opens a hypercall handle as the domain `VCHAN_SIM_DOMID` of the simulated host at
/// `VCHAN_SIM_DIR`. `logger` and `open_flags` are ignored. `NULL` with `ENOENT` when the
/// environment names no host.
///
/// # Safety
/// Always safe to call; free the result with [`xencall_close`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_open(
    _logger: *mut c_void,
    _open_flags: c_uint,
) -> *mut XencallHandle {
    guard(ptr::null_mut(), || {
        match sim_from_env(LIB, "xencall_open") {
            Ok((dir, domid)) => Box::into_raw(Box::new(XencallHandle::new(&dir, domid))),
            Err(errno) => fail(errno, ptr::null_mut()),
        }
    })
}

/// Frees a handle (`NULL` is accepted). Returns 0.
///
/// # Safety
/// `xcall` is null or a live handle from [`xencall_open`]; it is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_close(xcall: *mut XencallHandle) -> c_int {
    guard(-1, || {
        if !xcall.is_null() {
            // SAFETY: the caller's contract: a live handle from `xencall_open` (a leaked
            // Box), freed exactly once here.
            drop(unsafe { Box::from_raw(xcall) });
        }
        0
    })
}

/// The simulated hypervisor has no device descriptor: -1 with `EOPNOTSUPP`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_fd(_xcall: *mut XencallHandle) -> c_int {
    log(
        LIB,
        "xencall_fd: the simulated hypervisor has no privcmd descriptor",
    );
    fail(libc::EOPNOTSUPP, -1)
}

/// Hypercall `op` without arguments: -1 with `errno` (see the module documentation).
///
/// # Safety
/// `xcall` is a live handle from [`xencall_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall0(xcall: *mut XencallHandle, op: c_uint) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[]) as c_int }
}

/// Hypercall `op` with one argument (for `__HYPERVISOR_domctl`, the address of a
/// `struct xen_domctl`). 0, or -1 with `errno`.
///
/// # Safety
/// `xcall` is a live handle from [`xencall_open`]; a domctl's argument is the address of a
/// `struct xen_domctl` (normally in a buffer from [`xencall_alloc_buffer`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall1(xcall: *mut XencallHandle, op: c_uint, arg1: u64) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[arg1]) as c_int }
}

/// Hypercall `op` with two arguments (see [`xencall1`]).
///
/// # Safety
/// As for [`xencall1`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall2(
    xcall: *mut XencallHandle,
    op: c_uint,
    arg1: u64,
    arg2: u64,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[arg1, arg2]) as c_int }
}

/// Hypercall `op` with two arguments and a `long` result (see [`xencall1`]).
///
/// # Safety
/// As for [`xencall1`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall2L(
    xcall: *mut XencallHandle,
    op: c_uint,
    arg1: u64,
    arg2: u64,
) -> c_long {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[arg1, arg2]) }
}

/// Hypercall `op` with three arguments (see [`xencall1`]).
///
/// # Safety
/// As for [`xencall1`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall3(
    xcall: *mut XencallHandle,
    op: c_uint,
    arg1: u64,
    arg2: u64,
    arg3: u64,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[arg1, arg2, arg3]) as c_int }
}

/// Hypercall `op` with four arguments (see [`xencall1`]).
///
/// # Safety
/// As for [`xencall1`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall4(
    xcall: *mut XencallHandle,
    op: c_uint,
    arg1: u64,
    arg2: u64,
    arg3: u64,
    arg4: u64,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[arg1, arg2, arg3, arg4]) as c_int }
}

/// Hypercall `op` with five arguments (see [`xencall1`]).
///
/// # Safety
/// As for [`xencall1`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall5(
    xcall: *mut XencallHandle,
    op: c_uint,
    arg1: u64,
    arg2: u64,
    arg3: u64,
    arg4: u64,
    arg5: u64,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { call(xcall, op, &[arg1, arg2, arg3, arg4, arg5]) as c_int }
}

/// `nr_pages` zeroed pages of hypercall buffer; `NULL` with `ENOMEM` on failure.
///
/// # Safety
/// Always safe to call; free with [`xencall_free_buffer_pages`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_alloc_buffer_pages(
    _xcall: *mut XencallHandle,
    nr_pages: usize,
) -> *mut c_void {
    let Some(len) = nr_pages.checked_mul(PAGE_SIZE).filter(|&l| l > 0) else {
        return fail(libc::EINVAL, ptr::null_mut());
    };
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return fail(libc::ENOMEM, ptr::null_mut());
    }
    p
}

/// Frees pages from [`xencall_alloc_buffer_pages`] (`NULL` is ignored).
///
/// # Safety
/// `p` is null or from [`xencall_alloc_buffer_pages`] with the same `nr_pages`, not used
/// any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_free_buffer_pages(
    _xcall: *mut XencallHandle,
    p: *mut c_void,
    nr_pages: usize,
) {
    if !p.is_null() {
        // SAFETY: the caller's contract: our mapping of `nr_pages` pages, unused from now on.
        unsafe { libc::munmap(p, nr_pages.saturating_mul(PAGE_SIZE)) };
    }
}

/// Bytes before a [`xencall_alloc_buffer`] result, holding its page count (16 keeps the
/// result aligned for any C type).
const HEADER: usize = 16;

/// A hypercall buffer of `size` bytes; `NULL` with `ENOMEM` on failure.
///
/// # Safety
/// Always safe to call; free with [`xencall_free_buffer`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_alloc_buffer(
    xcall: *mut XencallHandle,
    size: usize,
) -> *mut c_void {
    let Some(pages) = size
        .checked_add(HEADER + PAGE_SIZE - 1)
        .map(|n| n / PAGE_SIZE)
    else {
        return fail(libc::ENOMEM, ptr::null_mut());
    };
    // SAFETY: always safe.
    let p = unsafe { xencall_alloc_buffer_pages(xcall, pages) };
    if p.is_null() {
        return p;
    }
    // SAFETY: `p` is a fresh mapping of at least one page, page aligned: room for the header.
    unsafe { p.cast::<usize>().write(pages) };
    p.cast::<u8>().wrapping_add(HEADER).cast()
}

/// Frees a buffer from [`xencall_alloc_buffer`] (`NULL` is ignored).
///
/// # Safety
/// `p` is null or from [`xencall_alloc_buffer`], not used any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_free_buffer(xcall: *mut XencallHandle, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let base = p.cast::<u8>().wrapping_sub(HEADER).cast::<c_void>();
    // SAFETY: the caller's contract: `p` came from `xencall_alloc_buffer`, so the page count
    // is at `p - HEADER`, the start of the mapping.
    let pages = unsafe { base.cast::<usize>().read() };
    // SAFETY: that mapping, of that many pages, unused from now on.
    unsafe { xencall_free_buffer_pages(xcall, base, pages) };
}

/// 1: hypercall buffers here are ordinary memory the simulated hypervisor reads directly.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xencall_buffers_never_fault(_xcall: *mut XencallHandle) -> c_int {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domctl(cmd: u32, domain: u16) -> Vec<u8> {
        let mut b = vec![0u8; domctl::SIZE];
        b[domctl::CMD..][..4].copy_from_slice(&cmd.to_ne_bytes());
        b[domctl::INTERFACE_VERSION..][..4]
            .copy_from_slice(&XEN_DOMCTL_INTERFACE_VERSION.to_ne_bytes());
        b[domctl::DOMAIN..][..2].copy_from_slice(&domain.to_ne_bytes());
        b
    }

    fn ask(h: &XencallHandle, b: &mut [u8]) -> Result<c_long, i32> {
        let arg = b.as_mut_ptr() as u64;
        // SAFETY: `b` is a whole `struct xen_domctl`.
        unsafe { h.hypercall(HYPERVISOR_DOMCTL, &[arg]) }
    }

    #[test]
    fn getdomaininfo_walks_the_domains_of_the_host_directory() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["dom0", "dom3", "dom12", "domx", "other"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("dom5"), b"").unwrap(); // not a directory
        let h = XencallHandle::new(dir.path(), DomId(0));
        let mut found = Vec::new();
        let mut next = 0u16;
        loop {
            let mut b = domctl(XEN_DOMCTL_GETDOMAININFO, next);
            match ask(&h, &mut b) {
                Ok(0) => {}
                Err(e) => {
                    assert_eq!(e, libc::ESRCH);
                    break;
                }
                other => panic!("{other:?}"),
            }
            let d = u16::from_ne_bytes([b[domctl::DOMAIN], b[domctl::DOMAIN + 1]]);
            let info = &b[domctl::UNION..];
            assert_eq!(u16::from_ne_bytes([info[0], info[1]]), d);
            assert_eq!(
                u32::from_ne_bytes(info[4..8].try_into().unwrap()),
                XEN_DOMINF_RUNNING
            );
            found.push(d);
            next = d + 1;
        }
        assert_eq!(found, [0, 3, 12]);

        let mut b = domctl(XEN_DOMCTL_GETDOMAININFO, 0x7ff0);
        assert_eq!(ask(&h, &mut b), Err(libc::EINVAL));
        let mut b = domctl(1, 0);
        assert_eq!(ask(&h, &mut b), Err(libc::ENOSYS));
        let mut b = domctl(XEN_DOMCTL_GETDOMAININFO, 0);
        b[domctl::INTERFACE_VERSION] ^= 1;
        assert_eq!(ask(&h, &mut b), Err(libc::EACCES));
        // A guest may not ask.
        let guest = XencallHandle::new(dir.path(), DomId(3));
        let mut b = domctl(XEN_DOMCTL_GETDOMAININFO, 0);
        assert_eq!(ask(&guest, &mut b), Err(libc::EPERM));
        // SAFETY: no pointer argument is read for other hypercalls.
        assert_eq!(unsafe { h.hypercall(17, &[]) }, Err(libc::ENOSYS));
    }

    #[test]
    fn buffers_keep_their_size() {
        for size in [1, 100, PAGE_SIZE - HEADER, PAGE_SIZE, 3 * PAGE_SIZE + 5] {
            // SAFETY: always safe.
            let p = unsafe { xencall_alloc_buffer(ptr::null_mut(), size) };
            assert!(!p.is_null());
            assert_eq!(p as usize % 16, 0);
            // SAFETY: the buffer holds `size` bytes.
            unsafe { ptr::write_bytes(p.cast::<u8>(), 0xa5, size) };
            // SAFETY: from `xencall_alloc_buffer`, unused from now on.
            unsafe { xencall_free_buffer(ptr::null_mut(), p) };
        }
    }
}
