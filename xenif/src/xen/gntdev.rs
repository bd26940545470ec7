//! Mapping pages other domains granted us: Linux `/dev/xen/gntdev`.

use core::ptr::NonNull;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::abi::{
    IoctlGntdevGrantRef, IoctlGntdevMapGrantRef, IoctlGntdevSetMaxGrants, IoctlGntdevUnmapGrantRef,
    VarArg,
};
use super::driver::{Driver, Ioctl, LinuxDriver, Prot};
use super::gntalloc::{unmap_notify_arg, unmap_notify_error};
use super::{Device, GNTDEV_DEVICE, GNTDEV_LIMIT_PARAMETER, errno, read_parameter};
use crate::error::{Error, Result};
use crate::grant::{Access, GrantMapper, MappedPages, RegionBackend, UnmapNotify};
use crate::types::{DomId, GrantRef, PAGE_SIZE};

/// How long `mmap` is retried while Xen answers `EAGAIN` (a granted page being paged in); C
/// retries forever, we give up with an error after this.
const EAGAIN_RETRY_LIMIT: Duration = Duration::from_secs(2);

/// Maps pages other domains granted to this one, through `/dev/xen/gntdev` (C: `xengnttab_*`).
///
/// ```no_run
/// use vchan_xenif::xen::XenGrantMapper;
/// use vchan_xenif::{Access, DomId, GrantMapper, GrantRef};
///
/// let mapper = XenGrantMapper::open()?;
/// let pages = mapper.map(DomId(0), &[GrantRef(8), GrantRef(9)], Access::ReadOnly)?;
/// assert_eq!(pages.len(), 2 * vchan_xenif::PAGE_SIZE);
/// # Ok::<(), vchan_xenif::Error>(())
/// ```
#[derive(Debug)]
pub struct XenGrantMapper {
    dev: Arc<Device>,
}

impl XenGrantMapper {
    /// Opens `/dev/xen/gntdev` (a missing device names the `xen_gntdev` module).
    pub fn open() -> Result<Self> {
        Self::with_driver(Arc::new(LinuxDriver))
    }

    pub(crate) fn with_driver(driver: Arc<dyn Driver>) -> Result<Self> {
        let dev = Device::open(driver, GNTDEV_DEVICE, "xen_gntdev", false)?;
        Ok(XenGrantMapper { dev: Arc::new(dev) })
    }

    /// Raises this handle's limit on mapped grants (`IOCTL_GNTDEV_SET_MAX_GRANTS`, C:
    /// `xengnttab_set_max_grants`). Only classic Xen kernels have the limit; pv-ops kernels
    /// (every current Linux) answer `ENOTTY`, which is ignored as C does.
    pub fn set_max_grants(&self, count: u32) -> Result<()> {
        let arg = IoctlGntdevSetMaxGrants { count };
        match self.dev.ioctl(Ioctl::GntdevSetMaxGrants(&arg)) {
            Ok(_) => Ok(()),
            Err(e) if errno(&e) == libc::ENOTTY => Ok(()),
            Err(e) => Err(Error::os(
                self.dev.op(
                    "IOCTL_GNTDEV_SET_MAX_GRANTS",
                    format_args!("{count} grants"),
                ),
                e,
            )),
        }
    }
}

impl GrantMapper for XenGrantMapper {
    fn map(&self, peer: DomId, refs: &[GrantRef], access: Access) -> Result<MappedPages> {
        let count = refs.len();
        if !peer.is_valid() {
            return Err(Error::InvalidArgument(format!(
                "cannot map pages of domain {peer}: not a valid domain id"
            )));
        }
        let (count32, len) = match (u32::try_from(count), count.checked_mul(PAGE_SIZE)) {
            (Ok(c), Some(l)) if c > 0 => (c, l),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "cannot map {count} grant references: the count must be between 1 and {}",
                    u32::MAX
                )));
            }
        };
        let len = NonZeroUsize::new(len).ok_or_else(|| Error::InvalidArgument("empty".into()))?;
        let mut arg = VarArg::<IoctlGntdevMapGrantRef>::new(count)
            .ok_or_else(|| Error::InvalidArgument(format!("cannot map {count} pages: too many")))?;
        arg.header_mut().count = count32;
        for (slot, r) in arg.elems_mut().iter_mut().zip(refs) {
            *slot = IoctlGntdevGrantRef {
                domid: u32::from(peer.0),
                r#ref: r.0,
            };
        }
        if let Err(e) = self.dev.ioctl(Ioctl::GntdevMapGrantRef(&mut arg)) {
            return Err(map_ioctl_error(&self.dev, peer, count, e));
        }
        let index = arg.header().index;
        let prot = match access {
            Access::ReadOnly => Prot::Read,
            Access::ReadWrite => Prot::ReadWrite,
        };
        // The grant mapping itself happens here: a refused grant fails the mmap.
        let started = std::time::Instant::now();
        let mapped = loop {
            match self.dev.driver.mmap_shared(self.dev.fd(), len, prot, index) {
                Err(e) if errno(&e) == libc::EAGAIN && started.elapsed() < EAGAIN_RETRY_LIMIT => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => break other,
            }
        };
        let ptr = match mapped {
            Ok(ptr) => ptr,
            Err(e) => {
                unmap_grant_refs(&self.dev, index, count32);
                return Err(mmap_error(peer, refs, access, e));
            }
        };
        let region = GntdevRegion {
            dev: Arc::clone(&self.dev),
            index,
            count: count32,
            ptr,
            len: len.get(),
            access,
        };
        // SAFETY: `ptr` is a fresh shared mapping of `len` bytes (page aligned), readable, and
        // writable if `access` is ReadWrite (PROT_WRITE was asked for); it stays mapped until
        // `region`, the backend, is dropped.
        Ok(unsafe { MappedPages::from_raw_parts(ptr, len.get(), peer, access, Box::new(region)) })
    }
}

fn map_ioctl_error(dev: &Device, peer: DomId, count: usize, e: io::Error) -> Error {
    if errno(&e) == libc::EINVAL {
        if let Some(limit) = read_parameter(GNTDEV_LIMIT_PARAMETER) {
            return Error::InvalidArgument(format!(
                "{} refused to map {count} grant references of domain {peer} (EINVAL): its limit \
                 per request is {limit} (raise it with `echo N > {GNTDEV_LIMIT_PARAMETER}`)",
                dev.path
            ));
        }
    }
    Error::os(
        dev.op(
            "IOCTL_GNTDEV_MAP_GRANT_REF",
            format_args!("{count} grant reference(s) of domain {peer}"),
        ),
        e,
    )
}

fn mmap_error(peer: DomId, refs: &[GrantRef], access: Access, e: io::Error) -> Error {
    match errno(&e) {
        libc::EINVAL | libc::EPERM | libc::EFAULT | libc::ENOENT | libc::EAGAIN => {
            let shown: Vec<String> = refs.iter().take(8).map(|r| r.0.to_string()).collect();
            let more = if refs.len() > 8 {
                format!(" and {} more", refs.len() - 8)
            } else {
                String::new()
            };
            let how = match access {
                Access::ReadOnly => "",
                Access::ReadWrite => " writable (a read-only grant cannot be mapped read-write)",
            };
            Error::GrantDenied {
                granter: peer,
                gref: refs[0],
                reason: format!(
                    "Xen refused to map {} page(s) ({e}): domain {peer} must have granted refs \
                     [{}{more}] to this domain{how}, and still be running",
                    refs.len(),
                    shown.join(", ")
                ),
            }
        }
        _ => Error::os(
            format!(
                "mmap of {} grant reference(s) of domain {peer} through {GNTDEV_DEVICE}",
                refs.len()
            ),
            e,
        ),
    }
}

fn unmap_grant_refs(dev: &Device, index: u64, count: u32) {
    let arg = IoctlGntdevUnmapGrantRef {
        index,
        count,
        pad: 0,
    };
    // Cannot fail for a slot we hold; the kernel releases it with the file anyway.
    let _ = dev.ioctl(Ioctl::GntdevUnmapGrantRef(&arg));
}

/// A gntdev mapping; dropping it unmaps, then releases the slot.
#[derive(Debug)]
struct GntdevRegion {
    dev: Arc<Device>,
    index: u64,
    count: u32,
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
}

// SAFETY: the pointer is only used in `drop` to unmap the region, valid from any thread.
unsafe impl Send for GntdevRegion {}
// SAFETY: `&self` methods never touch the pointer.
unsafe impl Sync for GntdevRegion {}

impl RegionBackend for GntdevRegion {
    fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        if notify.clear_byte.is_some() && self.access == Access::ReadOnly {
            return Err(Error::InvalidArgument(
                "cannot clear a byte of a read-only mapping on unmap (gntdev refuses it): map \
                 the page read-write, or ask only for the event"
                    .into(),
            ));
        }
        let arg = unmap_notify_arg(self.index, self.len, notify)?;
        self.dev
            .ioctl(Ioctl::GntdevSetUnmapNotify(&arg))
            .map(drop)
            .map_err(|e| unmap_notify_error(&self.dev, notify, e))
    }
}

impl Drop for GntdevRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is the mapping made in `map`, unmapped only here; the owning
        // `MappedPages` is being dropped and never handed out references into it.
        let _ = unsafe { self.dev.driver.munmap(self.ptr, self.len) };
        // Then release the driver's slot (C order: munmap, then IOCTL_GNTDEV_UNMAP_GRANT_REF).
        unmap_grant_refs(&self.dev, self.index, self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::abi::{UNMAP_NOTIFY_CLEAR_BYTE, UNMAP_NOTIFY_SEND_EVENT};
    use super::super::fake::{Call, FakeXen};
    use super::*;
    use crate::types::EventPort;

    fn mapper(fake: &FakeXen) -> XenGrantMapper {
        let m = XenGrantMapper::with_driver(fake.driver()).unwrap();
        fake.take_calls();
        m
    }

    fn grant(fake: &FakeXen, domid: u32, refs: &[u32], writable: bool) {
        for &r in refs {
            fake.state().granted.insert((domid, r), writable);
        }
    }

    #[test]
    fn map_registers_refs_then_maps_and_releases_in_c_order() {
        let fake = FakeXen::new();
        grant(&fake, 3, &[40, 17, 99], true);
        let mapper = mapper(&fake);
        let refs = [GrantRef(40), GrantRef(17), GrantRef(99)];
        let pages = mapper.map(DomId(3), &refs, Access::ReadWrite).unwrap();
        assert_eq!(pages.len(), 3 * PAGE_SIZE);
        assert_eq!(
            (pages.peer(), pages.access()),
            (DomId(3), Access::ReadWrite)
        );
        let registered: Vec<(u32, u32)> = fake.state().maps[&0]
            .refs
            .iter()
            .map(|r| (r.domid, r.r#ref))
            .collect();
        assert_eq!(registered, [(3, 40), (3, 17), (3, 99)]);
        assert_eq!(
            fake.take_calls(),
            [
                Call::Ioctl("IOCTL_GNTDEV_MAP_GRANT_REF"),
                Call::Mmap {
                    offset: 0,
                    len: 3 * PAGE_SIZE,
                    prot: Prot::ReadWrite
                }
            ]
        );
        drop(pages);
        assert_eq!(
            fake.take_calls(),
            [
                Call::Munmap { len: 3 * PAGE_SIZE },
                Call::Ioctl("IOCTL_GNTDEV_UNMAP_GRANT_REF")
            ]
        );
        assert!(fake.state().maps.is_empty());
    }

    #[test]
    fn a_large_map_carries_every_ref() {
        let fake = FakeXen::new();
        let refs: Vec<u32> = (1000..1257).collect();
        grant(&fake, 0, &refs, false);
        let mapper = mapper(&fake);
        let grefs: Vec<GrantRef> = refs.iter().map(|&r| GrantRef(r)).collect();
        let pages = mapper.map(DomId(0), &grefs, Access::ReadOnly).unwrap();
        assert_eq!(pages.len(), 257 * PAGE_SIZE);
        let registered: Vec<u32> = fake.state().maps[&0].refs.iter().map(|r| r.r#ref).collect();
        assert_eq!(registered, refs);
        assert!(matches!(
            fake.take_calls()[1],
            Call::Mmap {
                prot: Prot::Read,
                ..
            }
        ));
    }

    #[test]
    fn refused_grants_name_the_domain_and_refs_and_release_the_slot() {
        let fake = FakeXen::new();
        grant(&fake, 5, &[8], false);
        let mapper = mapper(&fake);
        // read-only grant mapped writable
        let e = mapper
            .map(DomId(5), &[GrantRef(8)], Access::ReadWrite)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                Error::GrantDenied {
                    granter: DomId(5),
                    gref: GrantRef(8),
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("read-only grant"), "{msg}");
        assert!(fake.state().maps.is_empty(), "slot leaked");
        assert_eq!(
            fake.take_calls().last(),
            Some(&Call::Ioctl("IOCTL_GNTDEV_UNMAP_GRANT_REF"))
        );
        // a ref never granted (the wrong domain, say)
        let e = mapper
            .map(DomId(6), &[GrantRef(8)], Access::ReadOnly)
            .unwrap_err();
        assert!(e.to_string().contains("domain 6"), "{e}");
        assert!(e.to_string().contains("refs [8]"), "{e}");
    }

    #[test]
    fn eagain_is_retried() {
        let fake = FakeXen::new();
        grant(&fake, 1, &[3], true);
        fake.state().mmap_eagain = 3;
        let mapper = mapper(&fake);
        let pages = mapper
            .map(DomId(1), &[GrantRef(3)], Access::ReadWrite)
            .unwrap();
        let mmaps = fake
            .take_calls()
            .iter()
            .filter(|c| matches!(c, Call::Mmap { .. }))
            .count();
        assert_eq!(mmaps, 4);
        drop(pages);
    }

    #[test]
    fn unmap_notify_of_mappings() {
        let fake = FakeXen::new();
        grant(&fake, 2, &[10, 11], true);
        fake.state().bound.insert(12, 2);
        let mapper = mapper(&fake);
        let rw = mapper
            .map(DomId(2), &[GrantRef(10), GrantRef(11)], Access::ReadWrite)
            .unwrap();
        rw.set_unmap_notify(UnmapNotify {
            clear_byte: Some(PAGE_SIZE + 1),
            event: Some(EventPort(12)),
        })
        .unwrap();
        let n = fake.state().maps[&0].notify.unwrap();
        assert_eq!(n.index, (PAGE_SIZE + 1) as u64);
        assert_eq!(n.action, UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT);
        assert_eq!(n.event_channel_port, 12);
        drop(rw);
        grant(&fake, 2, &[13], false);
        let ro = mapper
            .map(DomId(2), &[GrantRef(13)], Access::ReadOnly)
            .unwrap();
        let e = ro
            .set_unmap_notify(UnmapNotify {
                clear_byte: Some(0),
                event: None,
            })
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        ro.set_unmap_notify(UnmapNotify {
            clear_byte: None,
            event: Some(EventPort(12)),
        })
        .unwrap();
    }

    #[test]
    fn set_max_grants_ignores_enotty_only() {
        let fake = FakeXen::new();
        let mapper = mapper(&fake);
        mapper.set_max_grants(513).unwrap();
        fake.state().set_max_grants_errno = None;
        mapper.set_max_grants(513).unwrap();
        fake.state().set_max_grants_errno = Some(libc::EINVAL);
        let e = mapper.set_max_grants(1 << 20).unwrap_err();
        assert!(e.to_string().contains("IOCTL_GNTDEV_SET_MAX_GRANTS"), "{e}");
    }

    #[test]
    fn bad_arguments_never_reach_the_kernel() {
        let fake = FakeXen::new();
        let mapper = mapper(&fake);
        assert!(matches!(
            mapper.map(DomId(1), &[], Access::ReadOnly),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            mapper.map(DomId(0x7FF2), &[GrantRef(1)], Access::ReadOnly),
            Err(Error::InvalidArgument(_))
        ));
        assert!(fake.take_calls().is_empty());
    }
}
