//! Real Xen through Linux's `/dev/xen/{gntalloc,gntdev,evtchn}` devices.
//!
//! * [`XenGrantSharer`] (`/dev/xen/gntalloc`, module `xen_gntalloc`) allocates pages and grants
//!   them to a peer: `IOCTL_GNTALLOC_ALLOC_GREF`, then `mmap(fd, offset = index)`;
//! * [`XenGrantMapper`] (`/dev/xen/gntdev`, module `xen_gntdev`) maps a peer's grants:
//!   `IOCTL_GNTDEV_MAP_GRANT_REF`, then `mmap(fd, offset = index)`;
//! * [`XenEventChannels`] (`/dev/xen/evtchn`, module `xen_evtchn`): bind/notify ioctls, `read()`
//!   of pending ports, `write()` of ports to unmask, `poll()` to wait.
//!
//! The semantics follow Xen's C `libxengnttab`/`libxenevtchn` (Linux back ends), with two
//! deliberate differences: a shared region keeps its gntalloc slot until it is dropped (C gives it
//! up at once), so that [`crate::SharedPages::set_unmap_notify`] can still be called after
//! sharing; and the event-channel device is non-blocking, so [`crate::EventChannels::pending`]
//! never sleeps. Releasing follows C's order: `munmap` first, then the dealloc/unmap ioctl.
//!
//! What this module must never do: hand out references into granted memory (only raw pointers
//! leave it, through [`crate::SharedPages`]/[`crate::MappedPages`]), or leave a mapping or a grant
//! behind on an error path.
//!
//! The system calls go through a small internal trait, so that unit tests run the device code
//! against a model of the three kernel drivers on machines without Xen; the kernel ABI (structs
//! and ioctl numbers) is public in [`abi`] and checked against Debian's headers by a test.

pub mod abi;
mod driver;
mod evtchn;
#[cfg(test)]
mod fake;
mod gntalloc;
mod gntdev;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

pub use evtchn::XenEventChannels;
pub use gntalloc::XenGrantSharer;
pub use gntdev::XenGrantMapper;

use crate::error::{Error, Result};
use crate::evtchn::EventChannels;
use crate::grant::{GrantMapper, GrantSharer};
use driver::{Driver, Ioctl};

/// The Linux event-channel device; its presence means "running on Xen".
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";
/// The Linux grant-allocation device (pages this domain shares).
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";
/// The Linux grant-mapping device (pages other domains share with us).
pub const GNTDEV_DEVICE: &str = "/dev/xen/gntdev";

/// The gntalloc module's global limit on allocated pages (default 1024), in sysfs.
pub const GNTALLOC_LIMIT_PARAMETER: &str = "/sys/module/xen_gntalloc/parameters/limit";
/// The gntdev module's limit on pages per mapping request, in sysfs.
pub const GNTDEV_LIMIT_PARAMETER: &str = "/sys/module/xen_gntdev/parameters/limit";

pub(crate) fn grant_sharer() -> Result<Box<dyn GrantSharer>> {
    Ok(Box::new(XenGrantSharer::open()?))
}

pub(crate) fn grant_mapper() -> Result<Box<dyn GrantMapper>> {
    Ok(Box::new(XenGrantMapper::open()?))
}

pub(crate) fn event_channels() -> Result<Box<dyn EventChannels>> {
    Ok(Box::new(XenEventChannels::open()?))
}

/// An open Xen device and the driver its system calls go through.
#[derive(Debug)]
struct Device {
    fd: OwnedFd,
    path: &'static str,
    driver: Arc<dyn Driver>,
}

impl Device {
    /// Opens `path`; a missing node names the kernel `module` to load.
    fn open(
        driver: Arc<dyn Driver>,
        path: &'static str,
        module: &'static str,
        nonblocking: bool,
    ) -> Result<Device> {
        match driver.open(Path::new(path), nonblocking) {
            Ok(fd) => Ok(Device { fd, path, driver }),
            Err(e) => Err(open_error(path, module, e)),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn ioctl(&self, call: Ioctl<'_>) -> io::Result<i32> {
        self.driver.ioctl(self.fd(), call)
    }

    /// "ioctl NAME on PATH (CONTEXT)", the `op` of an [`Error::Os`].
    fn op(&self, request: &str, context: std::fmt::Arguments<'_>) -> String {
        format!("ioctl {request} on {} ({context})", self.path)
    }
}

fn open_error(path: &'static str, module: &'static str, e: io::Error) -> Error {
    match e.raw_os_error() {
        // No node (ENOENT), or a stale node whose driver is gone (ENXIO, ENODEV).
        Some(libc::ENOENT | libc::ENXIO | libc::ENODEV) => Error::MissingDevice {
            device: path.into(),
            module,
        },
        Some(libc::EACCES | libc::EPERM) => Error::os(
            format!("opening {path} (needs root, or read-write access to the device node)"),
            e,
        ),
        _ => Error::os(format!("opening {path}"), e),
    }
}

/// The errno of an I/O error (0 if it has none).
fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Reads a module parameter from sysfs, if it is there.
fn read_parameter(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_devices_name_their_module() {
        for (path, module) in [
            (GNTALLOC_DEVICE, "xen_gntalloc"),
            (GNTDEV_DEVICE, "xen_gntdev"),
            (EVTCHN_DEVICE, "xen_evtchn"),
        ] {
            for errno in [libc::ENOENT, libc::ENXIO, libc::ENODEV] {
                let e = open_error(path, module, io::Error::from_raw_os_error(errno));
                let msg = e.to_string();
                assert!(matches!(e, Error::MissingDevice { .. }), "{msg}");
                assert!(
                    msg.contains(path) && msg.contains(&format!("modprobe {module}")),
                    "{msg}"
                );
            }
        }
        let e = open_error(
            GNTDEV_DEVICE,
            "xen_gntdev",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(e.to_string().contains("needs root"), "{e}");
    }
}
