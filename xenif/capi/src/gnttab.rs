//! `libxengnttab.so.1`: mapping other domains' grants (`xengnttab_*`, the simulated host's
//! `/dev/xen/gntdev`) and granting pages to them (`xengntshr_*`, its `/dev/xen/gntalloc`).
//!
//! Ownership of the memory follows Linux: the program owns its mappings. It unmaps them with
//! [`xengnttab_unmap`] / [`xengntshr_unshare`] — or with plain `munmap(2)`, as
//! `libxenvchan_close` does for its rings. The host side of pages the program unmapped
//! itself ends when the handle is closed, or earlier when the kernel hands their addresses
//! out again for a new mapping of the handle. Closing a handle ends what the handle still
//! holds on the host (grants, mappings, running their unmap notifications) but, as closing
//! the device does, leaves the process's mappings in place until the program unmaps them.
//! When the process dies the host ends everything and runs the notifications.
//!
//! `errno`s are the drivers': `EINVAL` for zero pages, an unknown address, a count that does
//! not match the mapping, or a grant the domain may not map (the hypervisor's refusal,
//! reported by `mmap` as `EINVAL`); `ENOSPC` when the domain's grant entries are exhausted.
//! dma-bufs do not exist on the simulated host: those calls fail with `EOPNOTSUPP`.

use std::ffi::{c_int, c_void};
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use vchan_xenif::sim::client::{DetachedMap, DetachedShare, SimGrantMapper, SimGrantSharer};
use vchan_xenif::{Access, DomId, Error, EventPort, GrantRef, UnmapNotify};

use crate::common::{
    Opener, PAGE_SIZE, domain_arg, errno_of, fail, fail_with, guard, log, sim_from_env,
};

const LIB: &str = "xengnttab";

/// A grant handle (C `xengnttab_handle` / `xengntshr_handle`, both `struct xengntdev_handle`),
/// opaque to C.
#[derive(Debug)]
pub struct XengntdevHandle {
    kind: Kind,
    domid: DomId,
    opener: Opener,
}

#[derive(Debug)]
enum Kind {
    /// From `xengnttab_open`: maps grants.
    Tab {
        mapper: SimGrantMapper,
        maps: Mutex<Vec<MapRecord>>,
    },
    /// From `xengntshr_open`: shares pages.
    Shr {
        sharer: SimGrantSharer,
        shares: Mutex<Vec<ShareRecord>>,
    },
}

/// One `xengnttab_map_*` result: its address, pages, and the host mappings behind it (several
/// when the pages come from several domains).
#[derive(Debug)]
struct MapRecord {
    addr: usize,
    pages: usize,
    #[expect(
        dead_code,
        reason = "held for its drop, which ends the mappings on the host"
    )]
    parts: Vec<DetachedMap>,
}

/// One `xengntshr_share_*` result.
#[derive(Debug)]
struct ShareRecord {
    addr: usize,
    pages: usize,
    #[expect(
        dead_code,
        reason = "held for its drop, which ends the share on the host"
    )]
    share: DetachedShare,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `munmap` of a range this crate mapped and handed to the program.
///
/// # Safety
/// `addr..addr+len` must be a mapping made by the simulated host's client for this handle,
/// which the program declared it no longer uses (it asked to unmap it, or it is being
/// undone before the program ever saw it).
unsafe fn unmap_range(addr: usize, len: usize) -> Result<(), i32> {
    // SAFETY: the caller's contract above.
    if unsafe { libc::munmap(addr as *mut c_void, len) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    }
}

/// The access a `prot` argument asks for.
fn access_of(prot: c_int) -> Access {
    if prot & libc::PROT_WRITE != 0 {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    }
}

/// The `errno` of a failed mapping: the hypervisor's refusal of a grant is `EINVAL` from
/// `mmap` on Linux.
fn map_errno(e: &Error) -> i32 {
    match e {
        Error::GrantDenied { .. } => libc::EINVAL,
        e => errno_of(e),
    }
}

/// The unmap notification a C `(notify_offset, notify_port)` pair asks for in a region of
/// `len` bytes: an offset beyond the region (the C code passes -1) means no byte, port -1
/// no event.
fn notify_of(offset: u32, port: u32, len: usize) -> Option<UnmapNotify> {
    let clear_byte = usize::try_from(offset).ok().filter(|&o| o < len);
    let event = (port != u32::MAX).then_some(EventPort(port));
    (clear_byte.is_some() || event.is_some()).then_some(UnmapNotify { clear_byte, event })
}

impl XengntdevHandle {
    /// Opens a mapping handle (what [`xengnttab_open`] does) as `domid` of the host at `dir`.
    pub fn open_gnttab(dir: &std::path::Path, domid: DomId) -> vchan_xenif::Result<Self> {
        Ok(XengntdevHandle {
            kind: Kind::Tab {
                mapper: SimGrantMapper::connect(dir, domid)?,
                maps: Mutex::new(Vec::new()),
            },
            domid,
            opener: Opener::this_process(),
        })
    }

    /// Opens a sharing handle (what [`xengntshr_open`] does) as `domid` of the host at `dir`.
    pub fn open_gntshr(dir: &std::path::Path, domid: DomId) -> vchan_xenif::Result<Self> {
        Ok(XengntdevHandle {
            kind: Kind::Shr {
                sharer: SimGrantSharer::connect(dir, domid)?,
                shares: Mutex::new(Vec::new()),
            },
            domid,
            opener: Opener::this_process(),
        })
    }

    fn tab(&self, func: &str) -> Result<(&SimGrantMapper, &Mutex<Vec<MapRecord>>), i32> {
        match &self.kind {
            Kind::Tab { mapper, maps } => Ok((mapper, maps)),
            Kind::Shr { .. } => {
                log(LIB, format_args!("{func}: called with an xengntshr handle"));
                Err(libc::EINVAL)
            }
        }
    }

    fn shr(&self, func: &str) -> Result<(&SimGrantSharer, &Mutex<Vec<ShareRecord>>), i32> {
        match &self.kind {
            Kind::Shr { sharer, shares } => Ok((sharer, shares)),
            Kind::Tab { .. } => {
                log(LIB, format_args!("{func}: called with an xengnttab handle"));
                Err(libc::EINVAL)
            }
        }
    }

    /// Maps `grants` (granting domain, reference) contiguously with `prot`, with an unmap
    /// notification if `notify` asks for one; returns the address.
    fn map(
        &self,
        func: &str,
        grants: &[(u32, u32)],
        prot: c_int,
        notify: (u32, u32),
    ) -> Result<usize, i32> {
        let (mapper, maps) = self.tab(func)?;
        if grants.is_empty() {
            return Err(libc::EINVAL);
        }
        let access = access_of(prot);
        // Runs of consecutive references from the same domain: one host mapping each.
        let mut runs: Vec<(DomId, Vec<GrantRef>)> = Vec::new();
        for &(domid, gref) in grants {
            let dom = domain_arg(domid, self.domid).ok_or(libc::EINVAL)?;
            match runs.last_mut() {
                Some((d, refs)) if *d == dom => refs.push(GrantRef(gref)),
                _ => runs.push((dom, vec![GrantRef(gref)])),
            }
        }
        let len = grants.len() * PAGE_SIZE;
        let mut parts = Vec::with_capacity(runs.len());
        let addr = if let [(dom, refs)] = runs.as_slice() {
            let part = mapper.map_detached(*dom, refs, access).map_err(|e| {
                log(LIB, format_args!("{func}: {e}"));
                map_errno(&e)
            })?;
            let addr = part.as_ptr() as usize;
            parts.push(part);
            addr
        } else {
            // On failure the parts made so far end on the host as they drop.
            map_runs(mapper, &runs, access, len, &mut parts).inspect_err(|_| {
                log(
                    LIB,
                    format_args!("{func}: mapping {} pages failed", grants.len()),
                );
            })?
        };
        if let Some(n) = notify_of(notify.0, notify.1, len) {
            // The byte (if any) lies in one part; the event can go with any: the first.
            let (index, in_part) = match n.clear_byte {
                Some(off) => part_at(&parts, off),
                None => (0, None),
            };
            let n = UnmapNotify {
                clear_byte: in_part,
                event: n.event,
            };
            if let Err(e) = parts[index].set_unmap_notify(n) {
                // SAFETY: the mapping was made just above and never reached the program.
                let _ = unsafe { unmap_range(addr, len) };
                return Err(fail_with(LIB, func, &e, errno_of(&e)));
            }
        }
        let mut maps = lock(maps);
        forget_unmapped(&mut maps, addr, len, |m| (m.addr, m.pages));
        maps.push(MapRecord {
            addr,
            pages: grants.len(),
            parts,
        });
        Ok(addr)
    }

    /// Unmaps the mapping at `addr` of `count` pages and ends it on the host.
    fn unmap(&self, addr: usize, count: u32) -> Result<(), i32> {
        let (_, maps) = self.tab("xengnttab_unmap")?;
        if addr == 0 {
            return Err(libc::EINVAL);
        }
        let mut maps = lock(maps);
        let i = maps
            .iter()
            .position(|m| m.addr == addr)
            .ok_or(libc::EINVAL)?;
        if maps[i].pages as u64 != u64::from(count) {
            return Err(libc::EINVAL);
        }
        // SAFETY: the record says this range is a mapping we handed out, and the program
        // asks to unmap it.
        unsafe { unmap_range(addr, maps[i].pages * PAGE_SIZE) }?;
        // Ending the host mapping runs its unmap notification, after the unmap (Linux order).
        drop(maps.swap_remove(i));
        Ok(())
    }

    /// Shares `count` pages with `domid`, with an unmap notification if asked; returns the
    /// address and the references.
    fn share(
        &self,
        func: &str,
        domid: u32,
        count: c_int,
        writable: bool,
        notify: (u32, u32),
    ) -> Result<(usize, Vec<GrantRef>), i32> {
        let (sharer, shares) = self.shr(func)?;
        let count = usize::try_from(count)
            .ok()
            .filter(|&c| c > 0)
            .ok_or(libc::EINVAL)?;
        let peer = domain_arg(domid, self.domid).ok_or(libc::EINVAL)?;
        let access = if writable {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let share = sharer.share_detached(peer, count, access).map_err(|e| {
            log(LIB, format_args!("{func}: {e}"));
            errno_of(&e)
        })?;
        let (addr, len) = (share.as_ptr() as usize, share.len());
        if let Some(n) = notify_of(notify.0, notify.1, len) {
            if let Err(e) = share.set_unmap_notify(n) {
                // SAFETY: the mapping was made just above and never reached the program.
                let _ = unsafe { unmap_range(addr, len) };
                return Err(fail_with(LIB, func, &e, errno_of(&e)));
            }
        }
        let refs = share.refs().to_vec();
        let mut shares = lock(shares);
        forget_unmapped(&mut shares, addr, len, |s| (s.addr, s.pages));
        shares.push(ShareRecord {
            addr,
            pages: count,
            share,
        });
        Ok((addr, refs))
    }

    /// Unmaps the shared pages at `addr` and ends the grants.
    fn unshare(&self, addr: usize, count: u32) -> Result<(), i32> {
        let (_, shares) = self.shr("xengntshr_unshare")?;
        let mut shares = lock(shares);
        let i = shares
            .iter()
            .position(|s| s.addr == addr)
            .ok_or(libc::EINVAL)?;
        if shares[i].pages as u64 != u64::from(count) {
            return Err(libc::EINVAL);
        }
        // SAFETY: the record says this range is a share we handed out, and the program asks
        // to unmap it.
        unsafe { unmap_range(addr, shares[i].pages * PAGE_SIZE) }?;
        drop(shares.swap_remove(i));
        Ok(())
    }

    /// Copies between grants and local memory, one segment at a time.
    ///
    /// # Safety
    /// Every segment's local (`virt`) side must be valid for `len` bytes (read for a source,
    /// written for a destination).
    unsafe fn grant_copy(&self, segs: &mut [GrantCopySegment]) -> Result<(), i32> {
        let (mapper, _) = self.tab("xengnttab_grant_copy")?;
        // The driver refuses the whole batch when a segment cannot fit a page.
        for s in segs.iter() {
            let fits = |foreign: u64| {
                u64::from(foreign_offset(foreign)) + u64::from(s.len) <= PAGE_SIZE as u64
            };
            if usize::from(s.len) > PAGE_SIZE
                || (s.flags & GNTCOPY_SOURCE_GREF != 0 && !fits(s.source))
                || (s.flags & GNTCOPY_DEST_GREF != 0 && !fits(s.dest))
            {
                return Err(libc::EINVAL);
            }
        }
        for s in segs.iter_mut() {
            // SAFETY: forwarded from the caller.
            s.status = unsafe { self.copy_segment(mapper, s) };
        }
        Ok(())
    }

    /// One segment of [`Self::grant_copy`]; returns its `GNTST_*` status.
    ///
    /// # Safety
    /// As for [`Self::grant_copy`].
    unsafe fn copy_segment(&self, mapper: &SimGrantMapper, s: &GrantCopySegment) -> i16 {
        // Maps the grant side of a segment (one page, for this copy only).
        let grant_side = |foreign: u64, access: Access| -> Result<(DetachedMap, usize), i16> {
            let dom = domain_arg(u32::from(foreign_domid(foreign)), self.domid)
                .ok_or(GNTST_BAD_DOMAIN)?;
            let gref = [GrantRef(foreign_ref(foreign))];
            match mapper.map_detached(dom, &gref, access) {
                Ok(m) => Ok((m, usize::from(foreign_offset(foreign)))),
                // Mappable, but only read-only: not enough privilege to write it.
                Err(_)
                    if access == Access::ReadWrite
                        && mapper
                            .map_detached(dom, &gref, Access::ReadOnly)
                            .map(release)
                            .is_ok() =>
                {
                    Err(GNTST_PERMISSION_DENIED)
                }
                Err(_) => Err(GNTST_BAD_GNTREF),
            }
        };
        let src = if s.flags & GNTCOPY_SOURCE_GREF != 0 {
            match grant_side(s.source, Access::ReadOnly) {
                Ok(side) => Some(side),
                Err(status) => return status,
            }
        } else {
            None
        };
        let dst = if s.flags & GNTCOPY_DEST_GREF != 0 {
            match grant_side(s.dest, Access::ReadWrite) {
                Ok(side) => Some(side),
                Err(status) => {
                    if let Some((m, _)) = src {
                        release(m);
                    }
                    return status;
                }
            }
        } else {
            None
        };
        let from = match &src {
            Some((m, off)) => m.as_ptr().wrapping_add(*off).cast_const(),
            None => s.source as usize as *const u8,
        };
        let to = match &dst {
            Some((m, off)) => m.as_ptr().wrapping_add(*off),
            None => s.dest as usize as *mut u8,
        };
        // SAFETY: a grant side is `len` bytes inside a one-page mapping just made (checked:
        // offset + len <= page); a local side is valid for `len` bytes by the caller's
        // contract. `ptr::copy` tolerates overlap (both sides could be the same memory).
        unsafe { ptr::copy(from, to, usize::from(s.len)) };
        for (m, _) in src.into_iter().chain(dst) {
            release(m);
        }
        GNTST_OKAY
    }

    /// Frees the handle: ends everything it still holds on the host, leaving the program's
    /// mappings mapped (they are the program's, as after closing the device). In a child
    /// after `fork`, ends nothing: the host objects are the parent's.
    fn close(self) {
        if self.opener.forked() {
            match self.kind {
                Kind::Tab { maps, .. } => {
                    for m in maps.into_inner().unwrap_or_else(|e| e.into_inner()) {
                        std::mem::forget(m);
                    }
                }
                Kind::Shr { shares, .. } => {
                    for s in shares.into_inner().unwrap_or_else(|e| e.into_inner()) {
                        std::mem::forget(s);
                    }
                }
            }
        }
    }
}

/// Ends, on the host, the records whose pages overlap a range the kernel just gave us: the
/// program must have `munmap`ed them itself (as `libxenvchan_close` does with its rings), so
/// they are gone from this process already.
fn forget_unmapped<T>(
    records: &mut Vec<T>,
    addr: usize,
    len: usize,
    range: impl Fn(&T) -> (usize, usize),
) {
    records.retain(|r| {
        let (a, pages) = range(r);
        a + pages * PAGE_SIZE <= addr || addr + len <= a
    });
}

/// Unmaps and ends a mapping made for the library's own use (never handed to the program).
fn release(m: DetachedMap) {
    // SAFETY: `m` is a mapping this library made for itself and no longer uses.
    let _ = unsafe { unmap_range(m.as_ptr() as usize, m.len()) };
    drop(m);
}

/// Maps several runs (pages from several domains, or several calls' worth) at consecutive
/// addresses: each run is mapped on its own, then moved into one reservation.
fn map_runs(
    mapper: &SimGrantMapper,
    runs: &[(DomId, Vec<GrantRef>)],
    access: Access,
    len: usize,
    parts: &mut Vec<DetachedMap>,
) -> Result<usize, i32> {
    // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's choosing; it
    // touches no existing mapping.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOMEM));
    }
    let base = base as usize;
    let mut at = 0;
    for (dom, refs) in runs {
        let part = match mapper.map_detached(*dom, refs, access) {
            Ok(p) => p,
            Err(e) => {
                log(LIB, format_args!("{e}"));
                // SAFETY: the reservation (and the runs moved into it) are ours alone.
                let _ = unsafe { unmap_range(base, len) };
                return Err(map_errno(&e));
            }
        };
        let target = base + at;
        // SAFETY: moves a mapping we just made (never handed out) to `target..target+len`,
        // which lies inside our own reservation (`at + part.len() <= len`).
        let moved = unsafe {
            libc::mremap(
                part.as_ptr().cast(),
                part.len(),
                part.len(),
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target as *mut c_void,
            )
        };
        if moved == libc::MAP_FAILED {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOMEM);
            // SAFETY: the unmoved part and the reservation are ours alone, never handed out.
            let _ = unsafe { unmap_range(part.as_ptr() as usize, part.len()) };
            // SAFETY: as just above.
            let _ = unsafe { unmap_range(base, len) };
            return Err(errno);
        }
        at += part.len();
        parts.push(part);
    }
    Ok(base)
}

/// The part of a multi-run mapping holding byte `off`, and the offset inside it.
fn part_at(parts: &[DetachedMap], off: usize) -> (usize, Option<usize>) {
    let mut first = 0;
    for (i, p) in parts.iter().enumerate() {
        if off < first + p.len() {
            return (i, Some(off - first));
        }
        first += p.len();
    }
    (0, None)
}

/// `struct xengnttab_grant_copy_segment` (`xengnttab.h`): the unions are kept as their raw 8
/// bytes (a pointer, or `{uint32_t ref; uint16_t offset; uint16_t domid;}`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GrantCopySegment {
    /// `source.virt` or `source.foreign`.
    pub source: u64,
    /// `dest.virt` or `dest.foreign`.
    pub dest: u64,
    /// Bytes to copy.
    pub len: u16,
    /// `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// `GNTST_*` result.
    pub status: i16,
}

const _: () = assert!(std::mem::size_of::<GrantCopySegment>() == 24);

/// `GNTCOPY_source_gref` (`xen/grant_table.h`).
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// `GNTCOPY_dest_gref`.
pub const GNTCOPY_DEST_GREF: u16 = 2;
const GNTST_OKAY: i16 = 0;
const GNTST_BAD_DOMAIN: i16 = -2;
const GNTST_BAD_GNTREF: i16 = -3;
const GNTST_PERMISSION_DENIED: i16 = -8;

fn foreign_ref(raw: u64) -> u32 {
    raw as u32
}
fn foreign_offset(raw: u64) -> u16 {
    (raw >> 32) as u16
}
fn foreign_domid(raw: u64) -> u16 {
    (raw >> 48) as u16
}

/// Borrows the handle behind a C pointer, refusing use after `fork`.
///
/// # Safety
/// `h` is null or a live handle from [`xengnttab_open`] / [`xengntshr_open`].
unsafe fn handle<'a>(h: *mut XengntdevHandle, func: &str) -> Result<&'a XengntdevHandle, i32> {
    // SAFETY: the caller's contract: null or a live handle we allocated.
    let h = unsafe { h.as_ref() }.ok_or(libc::EINVAL)?;
    h.opener.check(LIB, func)?;
    Ok(h)
}

fn open_with(
    func: &str,
    open: fn(&std::path::Path, DomId) -> vchan_xenif::Result<XengntdevHandle>,
) -> *mut XengntdevHandle {
    guard(ptr::null_mut(), || {
        let (dir, domid) = match sim_from_env(LIB, func) {
            Ok(v) => v,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        match open(&dir, domid) {
            Ok(h) => Box::into_raw(Box::new(h)),
            Err(e) => fail_with(LIB, func, &e, ptr::null_mut()),
        }
    })
}

fn close_with(h: *mut XengntdevHandle) -> c_int {
    guard(-1, || {
        if h.is_null() {
            return 0;
        }
        // SAFETY: the caller's contract: a live handle from an `_open` (a leaked Box), freed
        // exactly once here.
        let h = unsafe { Box::from_raw(h) };
        h.close();
        0
    })
}

fn fd_with(h: *mut XengntdevHandle, func: &str) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        match unsafe { handle(h, func) } {
            Ok(h) => match &h.kind {
                Kind::Tab { mapper, .. } => mapper.as_fd().as_raw_fd(),
                Kind::Shr { sharer, .. } => sharer.as_fd().as_raw_fd(),
            },
            Err(errno) => fail(errno, -1),
        }
    })
}

fn addr_result(r: Result<usize, i32>) -> *mut c_void {
    match r {
        Ok(a) => a as *mut c_void,
        Err(errno) => fail(errno, ptr::null_mut()),
    }
}

fn unit_result(r: Result<(), i32>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(errno) => fail(errno, -1),
    }
}

/// Opens a handle for mapping grants, as the domain `VCHAN_SIM_DOMID` of the simulated host
/// at `VCHAN_SIM_DIR`. `logger` and `open_flags` are ignored. `NULL` with `ENOENT` when the
/// environment names no host.
///
/// # Safety
/// Always safe to call; free the result with [`xengnttab_close`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_open(
    _logger: *mut c_void,
    _open_flags: u32,
) -> *mut XengntdevHandle {
    open_with("xengnttab_open", XengntdevHandle::open_gnttab)
}

/// Closes a mapping handle: mappings it still holds end on the host (their unmap
/// notifications run) but stay mapped in this process until it unmaps them. `NULL` is
/// accepted. Returns 0.
///
/// # Safety
/// `xgt` is null or a live handle from [`xengnttab_open`]; it is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_close(xgt: *mut XengntdevHandle) -> c_int {
    close_with(xgt)
}

/// The handle's internal descriptor (its connection to the host): fine for `fcntl`, useless
/// for `poll`, as the C documentation says of the device's.
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_fd(xgt: *mut XengntdevHandle) -> c_int {
    fd_with(xgt, "xengnttab_fd")
}

/// Maps grant `ref` of domain `domid` (one page) with `prot` (`PROT_READ`, optionally
/// `PROT_WRITE`). `NULL` with `errno` on failure.
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_grant_ref(
    xgt: *mut XengntdevHandle,
    domid: u32,
    gref: u32,
    prot: c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgt, "xengnttab_map_grant_ref") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        addr_result(h.map(
            "xengnttab_map_grant_ref",
            &[(domid, gref)],
            prot,
            (u32::MAX, u32::MAX),
        ))
    })
}

/// Maps `count` grants, `refs[i]` of domain `domids[i]`, at consecutive addresses. On any
/// failure nothing stays mapped; `NULL` with `errno`.
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`]; `domids` and `refs` point to `count`
/// values each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_grant_refs(
    xgt: *mut XengntdevHandle,
    count: u32,
    domids: *const u32,
    refs: *const u32,
    prot: c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgt, "xengnttab_map_grant_refs") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        if count == 0 || domids.is_null() || refs.is_null() {
            return fail(libc::EINVAL, ptr::null_mut());
        }
        // SAFETY: the caller's contract: both arrays hold `count` values.
        let domids = unsafe { std::slice::from_raw_parts(domids, count as usize) };
        // SAFETY: as just above.
        let refs = unsafe { std::slice::from_raw_parts(refs, count as usize) };
        let grants: Vec<(u32, u32)> = domids.iter().copied().zip(refs.iter().copied()).collect();
        addr_result(h.map(
            "xengnttab_map_grant_refs",
            &grants,
            prot,
            (u32::MAX, u32::MAX),
        ))
    })
}

/// Maps `count` grants of domain `domid` at consecutive addresses (one host mapping).
/// `NULL` with `errno` on failure.
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`]; `refs` points to `count` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_domain_grant_refs(
    xgt: *mut XengntdevHandle,
    count: u32,
    domid: u32,
    refs: *const u32,
    prot: c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgt, "xengnttab_map_domain_grant_refs") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        if count == 0 || refs.is_null() {
            return fail(libc::EINVAL, ptr::null_mut());
        }
        // SAFETY: the caller's contract: `refs` holds `count` values.
        let refs = unsafe { std::slice::from_raw_parts(refs, count as usize) };
        let grants: Vec<(u32, u32)> = refs.iter().map(|&r| (domid, r)).collect();
        addr_result(h.map(
            "xengnttab_map_domain_grant_refs",
            &grants,
            prot,
            (u32::MAX, u32::MAX),
        ))
    })
}

/// Maps one grant with an unmap notification: when the mapping ends (unmap, close, or this
/// process dies) the byte at `notify_offset` is zeroed (unless the offset is -1 / beyond the
/// page) and `notify_port` (a port this domain bound; -1 for none) is signalled. If the
/// notification cannot be set up, nothing is mapped: `NULL` with `errno`.
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_grant_ref_notify(
    xgt: *mut XengntdevHandle,
    domid: u32,
    gref: u32,
    prot: c_int,
    notify_offset: u32,
    notify_port: u32,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgt, "xengnttab_map_grant_ref_notify") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        addr_result(h.map(
            "xengnttab_map_grant_ref_notify",
            &[(domid, gref)],
            prot,
            (notify_offset, notify_port),
        ))
    })
}

/// Unmaps the `count` pages at `start_address` (a whole mapping this handle made) and ends the
/// mapping, running its unmap notification. -1 with `EINVAL` for an address this handle did
/// not return or a count that is not the mapping's. Never logs.
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`]; the program no longer uses the pages.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_unmap(
    xgt: *mut XengntdevHandle,
    start_address: *mut c_void,
    count: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgt, "xengnttab_unmap") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        unit_result(h.unmap(start_address as usize, count))
    })
}

/// Accepted and ignored (returns 0), as Linux pv-ops kernels do: the simulated host bounds
/// mapped pages per domain instead (`BrokerConfig::max_mapped_pages_per_domain`).
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_set_max_grants(
    xgt: *mut XengntdevHandle,
    _nr_grants: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        match unsafe { handle(xgt, "xengnttab_set_max_grants") } {
            Ok(_) => 0,
            Err(errno) => fail(errno, -1),
        }
    })
}

/// Copies `count` segments between grants and local memory. Returns 0 with each segment's
/// `status` set (`GNTST_okay`, `GNTST_bad_gntref`, `GNTST_bad_domain`,
/// `GNTST_permission_denied` for writing a read-only grant), or -1 with `EINVAL` if a segment
/// is longer than a page or runs off its grant's page (nothing is copied then).
///
/// # Safety
/// `xgt` is a live handle from [`xengnttab_open`]; `segs` points to `count` segments whose
/// local sides are valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_grant_copy(
    xgt: *mut XengntdevHandle,
    count: u32,
    segs: *mut GrantCopySegment,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgt, "xengnttab_grant_copy") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        if count == 0 {
            return 0;
        }
        if segs.is_null() {
            return fail(libc::EINVAL, -1);
        }
        // SAFETY: the caller's contract: `count` segments, ours to update until we return.
        let segs = unsafe { std::slice::from_raw_parts_mut(segs, count as usize) };
        // SAFETY: forwarded from the caller's contract.
        unit_result(unsafe { h.grant_copy(segs) })
    })
}

fn no_dmabuf(func: &str) -> c_int {
    log(
        LIB,
        format_args!(
            "{func}: the simulated host has no dma-bufs (Linux without CONFIG_XEN_GNTDEV_DMABUF)"
        ),
    );
    fail(libc::EOPNOTSUPP, -1)
}

/// Not available on the simulated host: -1 with `EOPNOTSUPP`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_dmabuf_exp_from_refs(
    _xgt: *mut XengntdevHandle,
    _domid: u32,
    _flags: u32,
    _count: u32,
    _refs: *const u32,
    _fd: *mut u32,
) -> c_int {
    no_dmabuf("xengnttab_dmabuf_exp_from_refs")
}

/// Not available on the simulated host: -1 with `EOPNOTSUPP`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_dmabuf_exp_wait_released(
    _xgt: *mut XengntdevHandle,
    _fd: u32,
    _wait_to_ms: u32,
) -> c_int {
    no_dmabuf("xengnttab_dmabuf_exp_wait_released")
}

/// Not available on the simulated host: -1 with `EOPNOTSUPP`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_dmabuf_imp_to_refs(
    _xgt: *mut XengntdevHandle,
    _domid: u32,
    _fd: u32,
    _count: u32,
    _refs: *mut u32,
) -> c_int {
    no_dmabuf("xengnttab_dmabuf_imp_to_refs")
}

/// Not available on the simulated host: -1 with `EOPNOTSUPP`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_dmabuf_imp_release(
    _xgt: *mut XengntdevHandle,
    _fd: u32,
) -> c_int {
    no_dmabuf("xengnttab_dmabuf_imp_release")
}

/// Opens a handle for sharing pages, as the domain `VCHAN_SIM_DOMID` of the simulated host at
/// `VCHAN_SIM_DIR`. `logger` and `open_flags` are ignored. `NULL` with `ENOENT` when the
/// environment names no host.
///
/// # Safety
/// Always safe to call; free the result with [`xengntshr_close`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_open(
    _logger: *mut c_void,
    _open_flags: u32,
) -> *mut XengntdevHandle {
    open_with("xengntshr_open", XengntdevHandle::open_gntshr)
}

/// Closes a sharing handle: shares it still holds end (their unmap notifications run), but
/// stay mapped in this process until it unmaps them. `NULL` is accepted. Returns 0.
///
/// # Safety
/// `xgs` is null or a live handle from [`xengntshr_open`]; it is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_close(xgs: *mut XengntdevHandle) -> c_int {
    close_with(xgs)
}

/// The handle's internal descriptor (see [`xengnttab_fd`]).
///
/// # Safety
/// `xgs` is a live handle from [`xengntshr_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_fd(xgs: *mut XengntdevHandle) -> c_int {
    fd_with(xgs, "xengntshr_fd")
}

/// Allocates `count` zeroed pages, grants them to `domid` (writable if `writable`), writes
/// the references to `refs` and returns the local (read-write) mapping. `NULL` with `errno`:
/// `EINVAL` for `count <= 0` or an invalid domain, `ENOSPC` when the grant entries are
/// exhausted.
///
/// # Safety
/// `xgs` is a live handle from [`xengntshr_open`]; `refs` has room for `count` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_share_pages(
    xgs: *mut XengntdevHandle,
    domid: u32,
    count: c_int,
    refs: *mut u32,
    writable: c_int,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgs, "xengntshr_share_pages") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        if refs.is_null() {
            return fail(libc::EINVAL, ptr::null_mut());
        }
        match h.share(
            "xengntshr_share_pages",
            domid,
            count,
            writable != 0,
            (u32::MAX, u32::MAX),
        ) {
            Ok((addr, grefs)) => {
                // SAFETY: the caller's contract: `refs` has room for `count` values, and
                // there are `count` references.
                let out = unsafe { std::slice::from_raw_parts_mut(refs, grefs.len()) };
                for (o, g) in out.iter_mut().zip(&grefs) {
                    *o = g.0;
                }
                addr as *mut c_void
            }
            Err(errno) => fail(errno, ptr::null_mut()),
        }
    })
}

/// Shares one page like [`xengntshr_share_pages`], with an unmap notification: when the
/// share ends (unshare, close, or this process dies) the byte at `notify_offset` is zeroed
/// (unless -1 / beyond the page) and `notify_port` (-1 for none) is signalled. If the
/// notification cannot be set up, nothing is shared: `NULL` with `errno`.
///
/// # Safety
/// `xgs` is a live handle from [`xengntshr_open`]; `gref` points to room for one value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_share_page_notify(
    xgs: *mut XengntdevHandle,
    domid: u32,
    gref: *mut u32,
    writable: c_int,
    notify_offset: u32,
    notify_port: u32,
) -> *mut c_void {
    guard(ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgs, "xengntshr_share_page_notify") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, ptr::null_mut()),
        };
        if gref.is_null() {
            return fail(libc::EINVAL, ptr::null_mut());
        }
        match h.share(
            "xengntshr_share_page_notify",
            domid,
            1,
            writable != 0,
            (notify_offset, notify_port),
        ) {
            Ok((addr, grefs)) => {
                // SAFETY: the caller's contract: room for one value; one page was shared.
                unsafe { gref.write(grefs[0].0) };
                addr as *mut c_void
            }
            Err(errno) => fail(errno, ptr::null_mut()),
        }
    })
}

/// Unmaps the `count` shared pages at `start_address` (a whole share this handle made) and
/// ends the grants, running the unmap notification. -1 with `EINVAL` for an address this
/// handle did not return or a count that is not the share's. Never logs.
///
/// # Safety
/// `xgs` is a live handle from [`xengntshr_open`]; the program no longer uses the pages.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_unshare(
    xgs: *mut XengntdevHandle,
    start_address: *mut c_void,
    count: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xgs, "xengntshr_unshare") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        unit_result(h.unshare(start_address as usize, count))
    })
}
