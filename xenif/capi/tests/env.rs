//! Opening handles the way C programs do: from the environment (`VCHAN_SIM_DIR`,
//! `VCHAN_SIM_DOMID`). One test, because it changes this process's environment.

mod support;

use nix::errno::Errno;
use support::{Call, Ev, Fmem, Gnt, fails, fd_flags};
use vchan_xen_capi::xencall::domctl;
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::Broker;

fn set(name: &str, value: Option<&std::ffi::OsStr>) {
    match value {
        // SAFETY: this test binary has a single test, so no other thread reads or writes the
        // environment while it changes.
        Some(v) => unsafe { std::env::set_var(name, v) },
        // SAFETY: as above.
        None => unsafe { std::env::remove_var(name) },
    }
}

fn join(domid: Option<&str>, dir: Option<&std::path::Path>) {
    set("VCHAN_SIM_DIR", dir.map(|d| d.as_os_str()));
    set("VCHAN_SIM_DOMID", domid.map(std::ffi::OsStr::new));
}

#[test]
fn handles_open_from_the_environment_and_refuse_clearly_without_it() {
    let dir = tempfile::Builder::new()
        .prefix("vce")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = Broker::new(dir.path()).unwrap();
    for d in [0, 1, 4] {
        broker.domain_created(DomId(d)).unwrap();
    }

    // No host named: ENOENT, as for a missing /dev/xen device.
    join(None, None);
    fails(Ev::open_env(0).is_null(), true, libc::ENOENT);
    fails(Gnt::tab_env().is_null(), true, libc::ENOENT);
    fails(Gnt::shr_env().is_null(), true, libc::ENOENT);
    fails(Call::open_env().is_null(), true, libc::ENOENT);
    fails(Fmem::open_env().is_null(), true, libc::ENOENT);
    join(None, Some(dir.path()));
    fails(Ev::open_env(0).is_null(), true, libc::ENOENT);
    join(Some("domain one"), Some(dir.path()));
    fails(Ev::open_env(0).is_null(), true, libc::EINVAL);
    // A domain the host does not have cannot be joined.
    join(Some("9"), Some(dir.path()));
    assert!(Ev::open_env(0).is_null());

    // Domain 1.
    join(Some("1"), Some(dir.path()));
    let ev = Ev::open_env(0);
    assert!(!ev.is_null());
    assert_ne!(fd_flags(ev.fd()) & libc::FD_CLOEXEC, 0);
    let inherited = Ev::open_env(1 /* XENEVTCHN_NO_CLOEXEC */);
    assert_eq!(fd_flags(inherited.fd()) & libc::FD_CLOEXEC, 0);
    let (tab, shr) = (Gnt::tab_env(), Gnt::shr_env());
    assert!(!tab.is_null() && !shr.is_null());
    // The hypervisor: a guest may not ask for domain information...
    let xc = Call::open_env();
    assert!(!xc.is_null());
    assert_eq!(xc.never_fault(), 1);
    fails(xc.getdomaininfo(0).0, -1, libc::EPERM);
    fails(xc.call0(17), -1, libc::ENOSYS);
    assert_eq!(xc.close(), 0);
    // ...nor map guest frames.
    let fm = Fmem::open_env();
    assert!(!fm.is_null());
    fails(fm.map(0), std::ptr::null_mut(), libc::EPERM);
    assert_eq!(fm.restrict(4), 0);
    assert_eq!(fm.close(), 0);
    for h in [ev, inherited] {
        assert_eq!(h.close(), 0);
    }
    assert_eq!(tab.close_tab(), 0);
    assert_eq!(shr.close_shr(), 0);

    // Domain 0, privileged: domain information, walking the host's domains.
    join(Some("0"), Some(dir.path()));
    let xc = Call::open_env();
    let mut seen = Vec::new();
    let mut next = 0u16;
    loop {
        let (r, b) = xc.getdomaininfo(next);
        if r != 0 {
            assert_eq!(Errno::last_raw(), libc::ESRCH);
            break;
        }
        let d = u16::from_ne_bytes([b[domctl::DOMAIN], b[domctl::DOMAIN + 1]]);
        assert_eq!(
            u16::from_ne_bytes([b[domctl::UNION], b[domctl::UNION + 1]]),
            d
        );
        seen.push(d);
        next = d + 1;
    }
    assert_eq!(seen, [0, 1, 4]);
    assert_eq!(xc.close(), 0);
    let fm = Fmem::open_env();
    fails(fm.map(1), std::ptr::null_mut(), libc::EOPNOTSUPP);
    assert_eq!(fm.close(), 0);
}
