//! Sharing pages with another domain: Linux `/dev/xen/gntalloc`.

use core::ptr::NonNull;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;

use super::abi::{
    GNTALLOC_FLAG_WRITABLE, IoctlGntallocAllocGref, IoctlGntallocDeallocGref, IoctlUnmapNotify,
    UNMAP_NOTIFY_CLEAR_BYTE, UNMAP_NOTIFY_SEND_EVENT, VarArg,
};
use super::driver::{Driver, Ioctl, LinuxDriver, Prot};
use super::{Device, GNTALLOC_DEVICE, GNTALLOC_LIMIT_PARAMETER, errno, read_parameter};
use crate::error::{Error, Result};
use crate::grant::{Access, GrantSharer, RegionBackend, SharedPages, UnmapNotify};
use crate::types::{DomId, GrantRef, PAGE_SIZE};

/// Shares pages with other domains through `/dev/xen/gntalloc` (C: `xengntshr_*`).
///
/// Each [`GrantSharer::share`] allocates zeroed pages in this domain, grants them to the peer and
/// maps them here. The pages stay granted until the returned [`SharedPages`] is dropped, and
/// stay allocated until the peer unmaps them too (the kernel waits for it).
///
/// ```no_run
/// use vchan_xenif::xen::XenGrantSharer;
/// use vchan_xenif::{Access, DomId, GrantSharer};
///
/// let sharer = XenGrantSharer::open()?;
/// let pages = sharer.share(DomId(3), 2, Access::ReadWrite)?;
/// println!("give domain 3 the refs {:?}", pages.refs());
/// # Ok::<(), vchan_xenif::Error>(())
/// ```
#[derive(Debug)]
pub struct XenGrantSharer {
    dev: Arc<Device>,
}

impl XenGrantSharer {
    /// Opens `/dev/xen/gntalloc` (a missing device names the `xen_gntalloc` module).
    pub fn open() -> Result<Self> {
        Self::with_driver(Arc::new(LinuxDriver))
    }

    pub(crate) fn with_driver(driver: Arc<dyn Driver>) -> Result<Self> {
        let dev = Device::open(driver, GNTALLOC_DEVICE, "xen_gntalloc", false)?;
        Ok(XenGrantSharer { dev: Arc::new(dev) })
    }
}

impl GrantSharer for XenGrantSharer {
    fn share(&self, peer: DomId, count: usize, access: Access) -> Result<SharedPages> {
        if !peer.is_valid() {
            return Err(Error::InvalidArgument(format!(
                "cannot share pages with domain {peer}: not a valid domain id"
            )));
        }
        let (count32, len) = match (u32::try_from(count), count.checked_mul(PAGE_SIZE)) {
            (Ok(c), Some(l)) if c > 0 => (c, l),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "cannot share {count} pages: the count must be between 1 and {}",
                    u32::MAX
                )));
            }
        };
        let len = NonZeroUsize::new(len).ok_or_else(|| Error::InvalidArgument("empty".into()))?;
        let mut arg = VarArg::<IoctlGntallocAllocGref>::new(count).ok_or_else(|| {
            Error::InvalidArgument(format!("cannot share {count} pages: too many"))
        })?;
        *arg.header_mut() = IoctlGntallocAllocGref {
            domid: peer.0,
            flags: match access {
                Access::ReadWrite => GNTALLOC_FLAG_WRITABLE,
                Access::ReadOnly => 0,
            },
            count: count32,
            ..Default::default()
        };
        if let Err(e) = self.dev.ioctl(Ioctl::GntallocAllocGref(&mut arg)) {
            return Err(alloc_error(&self.dev, peer, count, e));
        }
        let index = arg.header().index;
        let refs: Vec<GrantRef> = arg.elems().iter().map(|&r| GrantRef(r)).collect();
        let ptr = match self
            .dev
            .driver
            .mmap_shared(self.dev.fd(), len, Prot::ReadWrite, index)
        {
            Ok(ptr) => ptr,
            Err(e) => {
                dealloc(&self.dev, index, count32);
                return Err(Error::os(
                    format!(
                        "mmap of {count} shared page(s) of {} at offset {index:#x}",
                        self.dev.path
                    ),
                    e,
                ));
            }
        };
        let region = GntallocRegion {
            dev: Arc::clone(&self.dev),
            index,
            count: count32,
            ptr,
            len: len.get(),
        };
        // SAFETY: `ptr` is a fresh read-write shared mapping of `len` bytes (count pages, page
        // aligned as every mmap), page i granted as refs[i]; it stays mapped until `region`, the
        // backend, is dropped.
        Ok(unsafe { SharedPages::from_raw_parts(ptr, len.get(), refs, peer, Box::new(region)) })
    }
}

fn alloc_error(dev: &Device, peer: DomId, count: usize, e: io::Error) -> Error {
    if errno(&e) == libc::ENOSPC {
        let limit = match read_parameter(GNTALLOC_LIMIT_PARAMETER) {
            Some(l) => format!("currently {l} pages"),
            None => "1024 pages by default".to_owned(),
        };
        return Error::GrantLimit {
            requested: count,
            hint: format!(
                "the xen_gntalloc module allows a fixed number of shared pages in this domain \
                 ({limit}, counting pages still mapped by peers): raise it with `echo N > \
                 {GNTALLOC_LIMIT_PARAMETER}` (or the module option limit=N), or release shared \
                 pages; if the limit is not reached, Xen's grant table is full (Xen boot option \
                 gnttab_max_frames)"
            ),
        };
    }
    Error::os(
        dev.op(
            "IOCTL_GNTALLOC_ALLOC_GREF",
            format_args!("{count} page(s) for domain {peer}"),
        ),
        e,
    )
}

fn dealloc(dev: &Device, index: u64, count: u32) {
    let arg = IoctlGntallocDeallocGref {
        index,
        count,
        _pad: 0,
    };
    // Nothing useful can be done if this fails (it cannot for a slot we hold): the kernel frees the
    // slot with the file anyway.
    let _ = dev.ioctl(Ioctl::GntallocDeallocGref(&arg));
}

/// The argument of a SET_UNMAP_NOTIFY request for a region registered at `index`.
pub(super) fn unmap_notify_arg(
    index: u64,
    len: usize,
    notify: UnmapNotify,
) -> Result<IoctlUnmapNotify> {
    let mut arg = IoctlUnmapNotify {
        index,
        action: 0,
        event_channel_port: 0,
    };
    if let Some(offset) = notify.clear_byte {
        if offset >= len {
            return Err(Error::InvalidArgument(format!(
                "unmap-notify byte offset {offset} is outside the {len}-byte region"
            )));
        }
        arg.index += offset as u64;
        arg.action |= UNMAP_NOTIFY_CLEAR_BYTE;
    }
    if let Some(port) = notify.event {
        arg.event_channel_port = port.0;
        arg.action |= UNMAP_NOTIFY_SEND_EVENT;
    }
    Ok(arg)
}

/// The error of a SET_UNMAP_NOTIFY request.
pub(super) fn unmap_notify_error(dev: &Device, notify: UnmapNotify, e: io::Error) -> Error {
    match (errno(&e), notify.event) {
        (libc::EINVAL, Some(port)) => Error::Port {
            port,
            reason: format!(
                "cannot signal it on unmap: {} refused it (EINVAL); the port must be bound \
                 through {} in this domain and still open",
                dev.path,
                super::EVTCHN_DEVICE
            ),
        },
        _ => Error::os(dev.op("SET_UNMAP_NOTIFY", format_args!("{notify:?}")), e),
    }
}

/// A gntalloc allocation mapped in this process; dropping it unmaps, then releases the slot.
#[derive(Debug)]
struct GntallocRegion {
    dev: Arc<Device>,
    index: u64,
    count: u32,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the pointer is only used in `drop` to unmap the region, which is valid from any thread;
// the device is Send + Sync.
unsafe impl Send for GntallocRegion {}
// SAFETY: `&self` methods never touch the pointer.
unsafe impl Sync for GntallocRegion {}

impl RegionBackend for GntallocRegion {
    fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        let arg = unmap_notify_arg(self.index, self.len, notify)?;
        self.dev
            .ioctl(Ioctl::GntallocSetUnmapNotify(&arg))
            .map(drop)
            .map_err(|e| unmap_notify_error(&self.dev, notify, e))
    }
}

impl Drop for GntallocRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is the mapping made in `share`, unmapped only here; the owning
        // `SharedPages` is being dropped and never handed out references into it.
        let _ = unsafe { self.dev.driver.munmap(self.ptr, self.len) };
        // Then give up the file's hold on the pages (C order); the unmap notification runs when
        // the peer has unmapped them too.
        dealloc(&self.dev, self.index, self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Call, FakeXen};
    use super::*;
    use crate::types::EventPort;

    fn sharer(fake: &FakeXen) -> XenGrantSharer {
        let s = XenGrantSharer::with_driver(fake.driver()).unwrap();
        fake.take_calls();
        s
    }

    #[test]
    fn share_allocates_maps_and_releases_in_c_order() {
        let fake = FakeXen::new();
        let sharer = sharer(&fake);
        let pages = sharer.share(DomId(7), 3, Access::ReadWrite).unwrap();
        assert_eq!(pages.len(), 3 * PAGE_SIZE);
        assert_eq!(pages.peer(), DomId(7));
        let arg = fake.state().alloc_args[0];
        assert_eq!(
            (arg.domid, arg.flags, arg.count),
            (7, GNTALLOC_FLAG_WRITABLE, 3)
        );
        // the refs the kernel wrote after the header, in page order
        let grefs = fake.state().allocs[&0].grefs.clone();
        assert_eq!(pages.refs().iter().map(|r| r.0).collect::<Vec<_>>(), grefs);
        assert_eq!(
            fake.take_calls(),
            [
                Call::Ioctl("IOCTL_GNTALLOC_ALLOC_GREF"),
                Call::Mmap {
                    offset: 0,
                    len: 3 * PAGE_SIZE,
                    prot: Prot::ReadWrite
                }
            ]
        );
        // The pages are ours to write, zeroed.
        let base = pages.as_ptr();
        // SAFETY: in bounds of the 3-page mapping, which nothing else uses.
        let byte = unsafe { base.wrapping_add(PAGE_SIZE + 5).read_volatile() };
        assert_eq!(byte, 0);
        // SAFETY: as above (the last byte of the mapping).
        unsafe { base.wrapping_add(3 * PAGE_SIZE - 1).write_volatile(0xA5) };
        // A second share gets the next slot.
        let second = sharer.share(DomId(7), 1, Access::ReadOnly).unwrap();
        assert_eq!(fake.state().alloc_args[1].flags, 0);
        assert!(fake.state().allocs.contains_key(&(3 * PAGE_SIZE as u64)));
        drop(second);
        fake.take_calls();
        drop(pages);
        assert_eq!(
            fake.take_calls(),
            [
                Call::Munmap { len: 3 * PAGE_SIZE },
                Call::Ioctl("IOCTL_GNTALLOC_DEALLOC_GREF")
            ]
        );
        assert!(fake.state().allocs.is_empty());
        assert!(fake.state().mappings.is_empty());
    }

    #[test]
    fn unmap_notify_targets_the_byte_in_its_page() {
        let fake = FakeXen::new();
        fake.state().bound.insert(9, 7);
        let sharer = sharer(&fake);
        let _first = sharer.share(DomId(7), 1, Access::ReadWrite).unwrap();
        let pages = sharer.share(DomId(7), 2, Access::ReadWrite).unwrap();
        pages
            .set_unmap_notify(UnmapNotify {
                clear_byte: Some(PAGE_SIZE + 21),
                event: Some(EventPort(9)),
            })
            .unwrap();
        let notify = fake.state().allocs[&(PAGE_SIZE as u64)].notify.unwrap();
        assert_eq!(notify.index, (2 * PAGE_SIZE + 21) as u64);
        assert_eq!(
            notify.action,
            UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT
        );
        assert_eq!(notify.event_channel_port, 9);
        // out of the region: refused before the kernel sees it
        let e = pages
            .set_unmap_notify(UnmapNotify {
                clear_byte: Some(2 * PAGE_SIZE),
                event: None,
            })
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        // a port not bound through evtchn: the kernel's EINVAL becomes a port error
        let e = pages
            .set_unmap_notify(UnmapNotify {
                clear_byte: None,
                event: Some(EventPort(33)),
            })
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Port {
                    port: EventPort(33),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn enospc_explains_the_gntalloc_limit() {
        let fake = FakeXen::new();
        fake.state().gntalloc_limit = 4;
        let sharer = sharer(&fake);
        let _held = sharer.share(DomId(1), 3, Access::ReadWrite).unwrap();
        fake.take_calls();
        let e = sharer.share(DomId(1), 2, Access::ReadWrite).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::GrantLimit { requested: 2, .. }), "{msg}");
        assert!(msg.contains(GNTALLOC_LIMIT_PARAMETER), "{msg}");
        // nothing mapped after the failed allocation
        assert_eq!(
            fake.take_calls(),
            [Call::Ioctl("IOCTL_GNTALLOC_ALLOC_GREF")]
        );
    }

    #[test]
    fn failed_mmap_gives_the_slot_back() {
        let fake = FakeXen::new();
        let sharer = sharer(&fake);
        fake.fail_next("mmap", libc::ENOMEM);
        let e = sharer.share(DomId(2), 4, Access::ReadWrite).unwrap_err();
        assert!(matches!(e, Error::Os { .. }), "{e}");
        assert!(e.to_string().contains("mmap of 4 shared page(s)"), "{e}");
        assert!(fake.state().allocs.is_empty(), "slot leaked");
        assert_eq!(
            fake.take_calls().last(),
            Some(&Call::Ioctl("IOCTL_GNTALLOC_DEALLOC_GREF"))
        );
    }

    #[test]
    fn bad_arguments_never_reach_the_kernel() {
        let fake = FakeXen::new();
        let sharer = sharer(&fake);
        for (peer, count) in [(DomId(1), 0), (DomId(0x7FF0), 1), (DomId(0xFFFF), 1)] {
            let e = sharer.share(peer, count, Access::ReadWrite).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
        assert!(fake.take_calls().is_empty());
    }

    #[test]
    fn other_errors_say_which_request_failed() {
        let fake = FakeXen::new();
        let sharer = sharer(&fake);
        fake.fail_next("IOCTL_GNTALLOC_ALLOC_GREF", libc::ENOMEM);
        let e = sharer.share(DomId(4), 1, Access::ReadWrite).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("IOCTL_GNTALLOC_ALLOC_GREF on /dev/xen/gntalloc"),
            "{msg}"
        );
        assert!(msg.contains("domain 4"), "{msg}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOMEM));
    }

    #[test]
    fn missing_device_names_the_module() {
        let fake = FakeXen::new();
        fake.fail_next("open", libc::ENOENT);
        let e = XenGrantSharer::with_driver(fake.driver()).unwrap_err();
        assert!(e.to_string().contains("modprobe xen_gntalloc"), "{e}");
    }
}
