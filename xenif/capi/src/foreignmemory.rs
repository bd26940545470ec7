//! `libxenforeignmemory.so.1`: mapping other domains' memory by frame number
//! (`xenforeignmemory.h`), which the simulated host does not have.
//!
//! Debian's `libxenctrl` opens a foreign-memory handle in `xc_interface_open` and fails
//! without `/dev/xen/privcmd`, so programs that only need `libxenctrl` for a domain query
//! (`vchan-socket-proxy`'s client mode) could not start. Opening a handle therefore
//! succeeds (as on any Xen system, privileged or not); mapping does not: simulated domains
//! are processes, with no guest frames to map. A domain other than 0 gets `EPERM`, as an
//! unprivileged domain does from Xen; domain 0 gets `EOPNOTSUPP`, with a log line saying why.
//! `xenforeignmemory_restrict` is recorded and succeeds, as the driver's does.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::ptr;

use vchan_xenif::DomId;

use crate::common::{Opener, fail, guard, log, sim_from_env};

const LIB: &str = "xenforeignmemory";

/// A foreign-memory handle (C `xenforeignmemory_handle`), opaque to C.
#[derive(Debug)]
pub struct XenforeignmemoryHandle {
    domid: DomId,
    _opener: Opener,
}

/// Borrows the handle behind a C pointer.
///
/// # Safety
/// `h` is null or a live handle from [`xenforeignmemory_open`].
unsafe fn handle<'a>(h: *mut XenforeignmemoryHandle) -> Result<&'a XenforeignmemoryHandle, i32> {
    // SAFETY: the caller's contract: null or a live handle we allocated.
    unsafe { h.as_ref() }.ok_or(libc::EINVAL)
}

/// The refusal of every mapping request, for the handle's domain.
fn refuse(h: *mut XenforeignmemoryHandle, func: &str) -> i32 {
    // SAFETY: the public functions' contract: `h` is null or a live handle.
    match unsafe { handle(h) } {
        Err(errno) => errno,
        Ok(h) if h.domid != DomId::DOM0 => libc::EPERM,
        Ok(_) => {
            log(
                LIB,
                format_args!(
                    "{func}: simulated domains have no guest frames to map (grants work: \
                     libxengnttab)"
                ),
            );
            libc::EOPNOTSUPP
        }
    }
}

/// Opens a handle as the domain `VCHAN_SIM_DOMID` of the simulated host at `VCHAN_SIM_DIR`.
/// `logger` and `open_flags` are ignored. `NULL` with `ENOENT` when the environment names no
/// host.
///
/// # Safety
/// Always safe to call; free the result with [`xenforeignmemory_close`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_open(
    _logger: *mut c_void,
    _open_flags: c_uint,
) -> *mut XenforeignmemoryHandle {
    guard(ptr::null_mut(), || {
        match sim_from_env(LIB, "xenforeignmemory_open") {
            Ok((_, domid)) => Box::into_raw(Box::new(XenforeignmemoryHandle {
                domid,
                _opener: Opener::this_process(),
            })),
            Err(errno) => fail(errno, ptr::null_mut()),
        }
    })
}

/// Frees a handle (`NULL` is accepted). Returns 0.
///
/// # Safety
/// `fmem` is null or a live handle from [`xenforeignmemory_open`]; it is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_close(fmem: *mut XenforeignmemoryHandle) -> c_int {
    guard(-1, || {
        if !fmem.is_null() {
            // SAFETY: the caller's contract: a live handle (a leaked Box), freed once here.
            drop(unsafe { Box::from_raw(fmem) });
        }
        0
    })
}

/// No guest frames on the simulated host: `NULL` with `EPERM` (domains other than 0) or
/// `EOPNOTSUPP` (domain 0).
///
/// # Safety
/// `fmem` is null or a live handle from [`xenforeignmemory_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_map(
    fmem: *mut XenforeignmemoryHandle,
    _dom: u32,
    _prot: c_int,
    _pages: usize,
    _arr: *const c_ulong,
    _err: *mut c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        fail(refuse(fmem, "xenforeignmemory_map"), ptr::null_mut())
    })
}

/// As [`xenforeignmemory_map`].
///
/// # Safety
/// `fmem` is null or a live handle from [`xenforeignmemory_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_map2(
    fmem: *mut XenforeignmemoryHandle,
    _dom: u32,
    _addr: *mut c_void,
    _prot: c_int,
    _flags: c_int,
    _pages: usize,
    _arr: *const c_ulong,
    _err: *mut c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        fail(refuse(fmem, "xenforeignmemory_map2"), ptr::null_mut())
    })
}

/// Nothing is ever mapped through this library: -1 with `EINVAL`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_unmap(
    _fmem: *mut XenforeignmemoryHandle,
    _addr: *mut c_void,
    _pages: usize,
) -> c_int {
    fail(libc::EINVAL, -1)
}

/// Records the restriction (mappings fail anyway); 0.
///
/// # Safety
/// `fmem` is null or a live handle from [`xenforeignmemory_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_restrict(
    fmem: *mut XenforeignmemoryHandle,
    _domid: u16,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        match unsafe { handle(fmem) } {
            Ok(_) => 0,
            Err(errno) => fail(errno, -1),
        }
    })
}

/// No resources on the simulated host: `NULL` with `EPERM` / `EOPNOTSUPP` (see
/// [`xenforeignmemory_map`]).
///
/// # Safety
/// `fmem` is null or a live handle from [`xenforeignmemory_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_map_resource(
    fmem: *mut XenforeignmemoryHandle,
    _domid: u16,
    _type: c_uint,
    _id: c_uint,
    _frame: c_ulong,
    _nr_frames: c_ulong,
    _paddr: *mut *mut c_void,
    _prot: c_int,
    _flags: c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        fail(
            refuse(fmem, "xenforeignmemory_map_resource"),
            ptr::null_mut(),
        )
    })
}

/// Nothing to unmap (a `NULL` resource is accepted, as in C): 0.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_unmap_resource(
    _fmem: *mut XenforeignmemoryHandle,
    fres: *mut c_void,
) -> c_int {
    if fres.is_null() {
        0
    } else {
        fail(libc::EINVAL, -1)
    }
}

/// No resources on the simulated host: -1 with `EPERM` / `EOPNOTSUPP`.
///
/// # Safety
/// `fmem` is null or a live handle from [`xenforeignmemory_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenforeignmemory_resource_size(
    fmem: *mut XenforeignmemoryHandle,
    _domid: u16,
    _type: c_uint,
    _id: c_uint,
    _size: *mut usize,
) -> c_int {
    guard(-1, || {
        fail(refuse(fmem, "xenforeignmemory_resource_size"), -1)
    })
}
