//! Grant tables: sharing pages with a peer domain and mapping the pages a peer shares.
//!
//! The memory behind a [`SharedPages`] or [`MappedPages`] is shared with another domain that
//! may write it at any time. This module therefore never hands out `&[u8]` or `&mut [u8]` into
//! it: only a raw pointer and a length. Interpreting the bytes safely (single fetches, volatile
//! or atomic access, bounds checks) is the caller's job (`vchan-ring`).

use core::fmt;
use core::ptr::NonNull;

use crate::error::Result;
use crate::types::{DomId, EventPort, GrantRef};

/// Access a peer gets to shared pages, or we ask for when mapping a peer's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The pages can be read but not written (`PROT_READ`).
    ReadOnly,
    /// The pages can be read and written.
    ReadWrite,
}

/// What happens when a region is unmapped, whether explicitly or because the process holding it
/// exits or is killed (Linux `gntalloc`/`gntdev` `SET_UNMAP_NOTIFY`; the simulated host does the
/// same). This is how a peer learns that we are gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    /// Byte offset (from the start of the region) set to 0 at unmap.
    pub clear_byte: Option<usize>,
    /// Event-channel port (of the handle that bound it, in the same process) signalled at unmap.
    pub event: Option<EventPort>,
}

/// The backend-specific half of a [`SharedPages`] or [`MappedPages`].
///
/// Dropping it unmaps the memory and (for shared pages) ends the grants. Implemented by the
/// [`crate::xen`] and [`crate::sim`] backends.
pub trait RegionBackend: Send + Sync + fmt::Debug {
    /// Registers what to do when this region is unmapped or its process dies.
    fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()>;
}

/// Pages this domain allocated and granted to a peer (C: `xengntshr_share_pages`).
///
/// The local mapping is readable and writable by us; the peer maps it with the access given
/// when sharing. Dropping this value ends the sharing and unmaps the pages locally (on real Xen
/// the pages stay alive until the peer unmaps them too).
pub struct SharedPages {
    ptr: NonNull<u8>,
    len: usize,
    refs: Vec<GrantRef>,
    peer: DomId,
    backend: Box<dyn RegionBackend>,
}

// SAFETY: `SharedPages` owns its mapping (kept alive by `backend`, which is Send + Sync) and
// never dereferences `ptr` itself; moving or sharing the address across threads cannot cause
// a data race in this type.
unsafe impl Send for SharedPages {}
// SAFETY: see `Send` above: all methods taking `&self` only read plain fields.
unsafe impl Sync for SharedPages {}

impl SharedPages {
    /// Assembles a region from a backend's parts.
    ///
    /// # Safety
    ///
    /// `ptr` must be the start of a readable and writable mapping of `len` bytes
    /// (`len == refs.len() * PAGE_SIZE`, page aligned) that stays mapped until `backend` is dropped.
    pub unsafe fn from_raw_parts(
        ptr: NonNull<u8>,
        len: usize,
        refs: Vec<GrantRef>,
        peer: DomId,
        backend: Box<dyn RegionBackend>,
    ) -> Self {
        SharedPages {
            ptr,
            len,
            refs,
            peer,
            backend,
        }
    }

    /// Start of the local mapping (page aligned). Valid for [`Self::len`] bytes while `self` lives;
    /// the peer may write it concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never true for a region a backend returned).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The grant references, one per page, in page order.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// The domain the pages are granted to.
    pub fn peer(&self) -> DomId {
        self.peer
    }

    /// Registers what to do when the region is unmapped or this process dies.
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        self.backend.set_unmap_notify(notify)
    }
}

impl fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPages")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("refs", &self.refs)
            .field("peer", &self.peer)
            .field("backend", &self.backend)
            .finish()
    }
}

/// A peer's granted pages mapped contiguously into this process (C: `xengnttab_map_domain_grant_refs`).
///
/// Dropping it unmaps the pages (and runs the unmap notification, if one was set).
pub struct MappedPages {
    ptr: NonNull<u8>,
    len: usize,
    peer: DomId,
    access: Access,
    backend: Box<dyn RegionBackend>,
}

// SAFETY: as for `SharedPages`: the address is never dereferenced by this type and the mapping
// lives as long as `backend` (Send + Sync).
unsafe impl Send for MappedPages {}
// SAFETY: `&self` methods only read plain fields.
unsafe impl Sync for MappedPages {}

impl MappedPages {
    /// Assembles a mapping from a backend's parts.
    ///
    /// # Safety
    ///
    /// `ptr` must be the start of a page-aligned mapping of `len` bytes, readable, and writable
    /// if `access` is [`Access::ReadWrite`], that stays mapped until `backend` is dropped.
    pub unsafe fn from_raw_parts(
        ptr: NonNull<u8>,
        len: usize,
        peer: DomId,
        access: Access,
        backend: Box<dyn RegionBackend>,
    ) -> Self {
        MappedPages {
            ptr,
            len,
            peer,
            access,
            backend,
        }
    }

    /// Start of the mapping (page aligned), valid for [`Self::len`] bytes while `self` lives.
    /// Writable only if [`Self::access`] is [`Access::ReadWrite`]; the peer may write it concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true for a mapping a backend returned).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The domain that granted the pages.
    pub fn peer(&self) -> DomId {
        self.peer
    }

    /// How the pages are mapped.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Registers what to do when the mapping is unmapped or this process dies.
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        self.backend.set_unmap_notify(notify)
    }
}

impl fmt::Debug for MappedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedPages")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("peer", &self.peer)
            .field("access", &self.access)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Allocates pages and grants them to peers (C: a `xengntshr` handle, Linux `/dev/xen/gntalloc`).
pub trait GrantSharer: Send + Sync + fmt::Debug {
    /// Allocates `count` zeroed pages, grants each to `peer` with `access`, and maps them locally.
    fn share(&self, peer: DomId, count: usize, access: Access) -> Result<SharedPages>;
}

/// Maps pages other domains granted to us (C: a `xengnttab` handle, Linux `/dev/xen/gntdev`).
pub trait GrantMapper: Send + Sync + fmt::Debug {
    /// Maps the pages `refs` granted by `peer`, contiguously and in order, with `access`.
    fn map(&self, peer: DomId, refs: &[GrantRef], access: Access) -> Result<MappedPages>;
}
