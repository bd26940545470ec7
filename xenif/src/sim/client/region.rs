//! Mappings of shared pages, and the regions ([`RegionBackend`]s) that own them.
//!
//! The only `unsafe` of the client lives here: `mmap`/`munmap` of pages received from the
//! host, and handing the resulting address to [`SharedPages`]/[`MappedPages`]. The invariant
//! that makes it sound is simple: a [`Mapping`] owns its address range from creation until
//! drop, and a region owns its mapping, and `SharedPages`/`MappedPages` own their region.
//! A mapping can also be *detached* (the C ABI's model, `DetachedShare`/`DetachedMap`): it is
//! then never unmapped here, and the address range belongs to whoever received it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use super::Connection;
use crate::error::Result;
use crate::grant::{Access, MappedPages, RegionBackend, SharedPages, UnmapNotify};
use crate::sim::broker::wire::{RegionId, Reply, Request};
use crate::types::{DomId, GrantRef};

/// Where one run of pages comes from.
#[derive(Debug)]
pub(crate) struct PieceSource<'a> {
    /// The file holding the pages.
    pub(crate) fd: BorrowedFd<'a>,
    /// Byte offset of the run in the file (page aligned).
    pub(crate) offset: u64,
    /// Length of the run in bytes (whole pages).
    pub(crate) len: usize,
}

/// An address range this value mapped and will unmap.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is an owned address range; it is never dereferenced through this type,
// and `munmap` may be called from any thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` gives out only the address and the length.
unsafe impl Sync for Mapping {}

fn prot(writable: bool) -> libc::c_int {
    if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    }
}

fn offset(o: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(o).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

impl Mapping {
    /// Maps `src` shared, contiguously: one `mmap` for a single run; for several, a
    /// `PROT_NONE` reservation of the whole length filled run by run with `MAP_FIXED`.
    fn new(sources: &[PieceSource<'_>], writable: bool) -> io::Result<Mapping> {
        let total: usize = sources.iter().map(|s| s.len).sum();
        if total == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if let [only] = sources {
            let off = offset(only.offset)?;
            // SAFETY: a fresh shared mapping at an address of the kernel's choosing (no
            // MAP_FIXED): it cannot alias or replace any memory this process uses. The result
            // is checked before use.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    total,
                    prot(writable),
                    libc::MAP_SHARED,
                    only.fd.as_raw_fd(),
                    off,
                )
            };
            return Self::from_mmap(p, total);
        }
        // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's choosing;
        // it touches no existing mapping.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        // From here `reserved` owns the whole range, so an error below unmaps all of it.
        let reserved = Self::from_mmap(p, total)?;
        let mut at = 0usize;
        for s in sources {
            let off = offset(s.offset)?;
            let target = reserved.ptr.as_ptr().wrapping_add(at);
            // SAFETY: `at + s.len <= total`, so the target lies inside `reserved`, a range this
            // function mapped and nothing else uses yet: MAP_FIXED replaces only our own
            // reservation.
            let q = unsafe {
                libc::mmap(
                    target.cast(),
                    s.len,
                    prot(writable),
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    s.fd.as_raw_fd(),
                    off,
                )
            };
            if q == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            at += s.len;
        }
        Ok(reserved)
    }

    /// Gives up ownership of the address range without unmapping it: from here on unmapping
    /// it is the caller's business (the C ABI, where the program owns its mappings).
    fn detach(self) -> (NonNull<u8>, usize) {
        let parts = (self.ptr, self.len);
        std::mem::forget(self);
        parts
    }

    fn from_mmap(p: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` was mapped by `Mapping::new` and is owned by this value
        // alone; no reference into it outlives the `SharedPages`/`MappedPages` that owns us.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Pages this process shared: the local mapping and the share on the host.
#[derive(Debug)]
pub(crate) struct SharedRegion {
    conn: Arc<Connection>,
    share: u64,
    mapping: Option<Mapping>,
}

impl SharedRegion {
    /// Takes charge of share `share` on the host (dropping this ends it).
    pub(crate) fn new(conn: Arc<Connection>, share: u64) -> Self {
        SharedRegion {
            conn,
            share,
            mapping: None,
        }
    }

    /// Maps the share's file (`len` bytes) read-write and wraps it up. On error `self` is
    /// dropped, which ends the share.
    pub(crate) fn into_shared_pages(
        mut self,
        fd: &OwnedFd,
        len: usize,
        refs: Vec<GrantRef>,
        peer: DomId,
    ) -> io::Result<SharedPages> {
        let src = PieceSource {
            fd: fd.as_fd(),
            offset: 0,
            len,
        };
        let mapping = Mapping::new(&[src], true)?;
        let (ptr, len) = (mapping.ptr, mapping.len);
        self.mapping = Some(mapping);
        // SAFETY: `ptr..ptr+len` is the read-write mapping just made and now owned by
        // `self.mapping`, which the boxed backend keeps until the `SharedPages` is dropped;
        // `len` is `refs.len()` pages (the caller asked the host for that many).
        Ok(unsafe { SharedPages::from_raw_parts(ptr, len, refs, peer, Box::new(self)) })
    }

    /// Maps the share's file (`len` bytes) read-write and hands the mapping over to the
    /// caller, who becomes responsible for unmapping it; `self` then owns only the share on
    /// the host (dropping it ends the share, and never unmaps).
    pub(crate) fn map_detached(
        &self,
        fd: &OwnedFd,
        len: usize,
    ) -> io::Result<(NonNull<u8>, usize)> {
        let src = PieceSource {
            fd: fd.as_fd(),
            offset: 0,
            len,
        };
        Ok(Mapping::new(&[src], true)?.detach())
    }
}

impl RegionBackend for SharedRegion {
    fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        set_notify(&self.conn, RegionId::Share(self.share), notify)
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // Unmap first, then end the share: the unmap notification fires after we are gone.
        drop(self.mapping.take());
        let _ = self.conn.call(&Request::Unshare { share: self.share });
    }
}

/// A peer's pages this process mapped: the local mapping and the mapping on the host.
#[derive(Debug)]
pub(crate) struct MappedRegion {
    conn: Arc<Connection>,
    map: u64,
    access: Access,
    mapping: Option<Mapping>,
}

impl MappedRegion {
    /// Takes charge of mapping `map` on the host (dropping this ends it).
    pub(crate) fn new(conn: Arc<Connection>, map: u64, access: Access) -> Self {
        MappedRegion {
            conn,
            map,
            access,
            mapping: None,
        }
    }

    /// Maps the pieces contiguously, in order, with the region's access, and wraps it up. On
    /// error `self` is dropped, which ends the mapping on the host.
    pub(crate) fn into_mapped_pages(
        mut self,
        sources: &[PieceSource<'_>],
        peer: DomId,
    ) -> io::Result<MappedPages> {
        let mapping = Mapping::new(sources, self.access == Access::ReadWrite)?;
        let (ptr, len, access) = (mapping.ptr, mapping.len, self.access);
        self.mapping = Some(mapping);
        // SAFETY: `ptr..ptr+len` is the mapping just made, writable only if `access` is
        // ReadWrite, owned by `self.mapping`, which the boxed backend keeps until the
        // `MappedPages` is dropped.
        Ok(unsafe { MappedPages::from_raw_parts(ptr, len, peer, access, Box::new(self)) })
    }

    /// Maps the pieces contiguously, in order, with the region's access, and hands the mapping
    /// over to the caller, who becomes responsible for unmapping it; `self` then owns only the
    /// mapping on the host (dropping it ends that, and never unmaps).
    pub(crate) fn map_detached(
        &self,
        sources: &[PieceSource<'_>],
    ) -> io::Result<(NonNull<u8>, usize)> {
        Ok(Mapping::new(sources, self.access == Access::ReadWrite)?.detach())
    }
}

impl RegionBackend for MappedRegion {
    fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        set_notify(&self.conn, RegionId::Map(self.map), notify)
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        drop(self.mapping.take());
        let _ = self.conn.call(&Request::Unmap { map: self.map });
    }
}

fn set_notify(conn: &Connection, region: RegionId, notify: UnmapNotify) -> Result<()> {
    let (reply, _) = conn.call(&Request::SetNotify {
        region,
        clear_byte: notify.clear_byte.map(|b| b as u64),
        port: notify.event,
    })?;
    match reply {
        Reply::Done => Ok(()),
        _ => Err(conn.sim_error("unexpected answer to SET_NOTIFY")),
    }
}
