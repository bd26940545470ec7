//! The real-Xen backend on a machine without Xen: every service fails to open with an error
//! that names the device and the kernel module to load, through the public API and the real
//! system calls (no fake). On a Xen machine this test has nothing to check and says so; the
//! real devices are exercised by `tools/xen-lab` (scenarios `grants-*`, `device-errors`).

use std::path::Path;

use vchan_xenif::xen::{EVTCHN_DEVICE, GNTALLOC_DEVICE, GNTDEV_DEVICE};
use vchan_xenif::{Backend, Error};

fn expect_missing<T: std::fmt::Debug>(result: Result<T, Error>, device: &str, module: &str) {
    let e = result.expect_err("opened a Xen device that does not exist");
    let msg = e.to_string();
    match &e {
        Error::MissingDevice {
            device: d,
            module: m,
        } => {
            assert_eq!(d, Path::new(device));
            assert_eq!(*m, module);
        }
        other => panic!("expected MissingDevice, got {other:?}"),
    }
    assert!(msg.contains(device), "{msg}");
    assert!(msg.contains(&format!("modprobe {module}")), "{msg}");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn each_service_names_its_module() {
    if Path::new("/dev/xen").exists() {
        println!(
            "SKIPPED: /dev/xen exists (this is a Xen domain); see tools/xen-lab for real devices"
        );
        return;
    }
    expect_missing(Backend::Xen.grant_sharer(), GNTALLOC_DEVICE, "xen_gntalloc");
    expect_missing(Backend::Xen.grant_mapper(), GNTDEV_DEVICE, "xen_gntdev");
    expect_missing(Backend::Xen.event_channels(), EVTCHN_DEVICE, "xen_evtchn");
}
