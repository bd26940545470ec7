//! The C functions' semantics (return values, `errno`, masking, ownership of mappings, unmap
//! notifications), called as C would call them, against a real simulated host (the broker,
//! memfd grants, eventfd channels). Handles come from the crate's explicit constructors, so
//! tests in parallel can use different hosts; `env.rs` covers opening from the environment.

mod support;

use std::ffi::c_int;
use std::os::fd::BorrowedFd;
use std::ptr;
use std::time::{Duration, Instant};

use support::{Ev, Gnt, byte, fails, fd_flags, munmap, set_byte};
use vchan_xen_capi::PAGE_SIZE;
use vchan_xen_capi::gnttab::{GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GrantCopySegment};
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::Broker;

fn host(domains: &[u16]) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::Builder::new()
        .prefix("vcc")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = Broker::new(dir.path()).unwrap();
    for &d in domains {
        broker.domain_created(DomId(d)).unwrap();
    }
    (dir, broker)
}

fn set_nonblocking(fd: c_int, on: bool) {
    // SAFETY: `fd` is a handle's descriptor, open while the handle lives.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.set(nix::fcntl::OFlag::O_NONBLOCK, on);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
}

fn readable(fd: c_int, ms: u16) -> bool {
    // SAFETY: as in `set_nonblocking`.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, ms).unwrap() == 1
}

#[test]
fn event_channels_bind_notify_mask_and_fail_like_the_linux_driver() {
    let (dir, _broker) = host(&[0, 1]);
    let (h0, h1) = (Ev::new(dir.path(), 0), Ev::new(dir.path(), 1));
    let p0 = h0.bind_unbound(1);
    assert!(p0 > 0, "{p0}");
    let p1 = h1.bind_interdomain(0, p0 as u32);
    assert!(p1 > 0, "{p1}");
    let (p0, p1) = (p0 as u32, p1 as u32);
    // The port is taken now.
    fails(h1.bind_interdomain(0, p0), -1, libc::EINVAL);
    fails(h1.bind_interdomain(0, 999), -1, libc::EINVAL);
    fails(h0.bind_unbound(0x7fff), -1, libc::EINVAL);

    // Ports this handle did not bind.
    fails(h1.notify(999), -1, libc::ENOTCONN);
    fails(h1.unbind(999), -1, libc::ENOTCONN);
    assert_eq!(h1.unmask(999), 0, "ignored, as by the driver");
    fails(h0.bind_virq(3), -1, libc::EOPNOTSUPP);

    // Non-blocking descriptor: nothing pending is EAGAIN.
    let fd0 = h0.fd();
    set_nonblocking(fd0, true);
    fails(h0.pending(), -1, libc::EAGAIN);
    assert!(!readable(fd0, 0));

    // A notification makes the fd readable and the port pending, then masked.
    assert_eq!(h1.notify(p1), 0);
    assert!(readable(fd0, 5000));
    assert_eq!(h0.pending(), p0 as c_int);
    assert_eq!(h1.notify(p1), 0);
    fails(h0.pending(), -1, libc::EAGAIN);
    // Unmasking delivers what came while masked.
    assert_eq!(h0.unmask(p0), 0);
    assert!(readable(fd0, 5000));
    assert_eq!(h0.pending(), p0 as c_int);
    assert_eq!(h0.unmask(p0), 0);

    // A blocking pending waits for the notification.
    set_nonblocking(fd0, false);
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        (h0.pending(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(h1.notify(p1), 0);
    let (p, waited) = waiter.join().unwrap();
    assert_eq!(p, p0 as c_int);
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert_eq!(h0.unmask(p0), 0);

    // Unbinding one end returns the other to unbound: it can be bound again.
    assert_eq!(h1.unbind(p1), 0);
    fails(h1.notify(p1), -1, libc::ENOTCONN);
    assert!(h1.bind_interdomain(0, p0) > 0);
    // DOMID_SELF names the handle's own domain.
    let own = h1.bind_unbound(0x7ff0);
    assert!(own > 0);
    assert!(h1.bind_interdomain(1, own as u32) > 0);

    // Restriction.
    fails(h1.restrict(0), -1, libc::EINVAL);
    assert_eq!(h1.restrict(5), 0);
    fails(h1.restrict(6), -1, libc::EACCES);
    fails(h1.bind_unbound(0), -1, libc::EACCES);
    fails(h1.bind_interdomain(0, p0), -1, libc::EACCES);
    fails(h1.bind_virq(3), -1, libc::EACCES);

    // SAFETY: always safe to call.
    let adopted = unsafe { vchan_xen_capi::evtchn::xenevtchn_fdopen(ptr::null_mut(), 3, 0) };
    fails(adopted, ptr::null_mut(), libc::EOPNOTSUPP);
    assert_eq!(h1.close(), 0);
    assert_eq!(h0.close(), 0);
    let none = Ev(ptr::null_mut());
    fails(none.notify(1), -1, libc::EINVAL);
    assert_eq!(none.close(), 0);
}

#[test]
fn grants_share_map_unmap_and_fail_like_the_linux_drivers() {
    let (dir, broker) = host(&[0, 1, 2]);
    let (shr0, shr2, tab1) = (
        Gnt::shr(dir.path(), 0),
        Gnt::shr(dir.path(), 2),
        Gnt::tab(dir.path(), 1),
    );
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let mut refs = [0u32; 3];
    let a = shr0.share(1, &mut refs, true);
    assert!(!a.is_null());
    assert!(refs.iter().all(|&r| r != 0));
    for page in 0..3 {
        set_byte(a, page * PAGE_SIZE + 7, 10 + page as u8);
    }
    let m = tab1.map_domain(0, &refs, rw);
    assert!(!m.is_null());
    assert_eq!(
        [
            byte(m, 7),
            byte(m, PAGE_SIZE + 7),
            byte(m, 2 * PAGE_SIZE + 7)
        ],
        [10, 11, 12]
    );
    set_byte(m, 100, 0x42);
    assert_eq!(byte(a, 100), 0x42);

    // Unmap: the whole mapping, by its start, with its count.
    fails(tab1.unmap(m, 2), -1, libc::EINVAL);
    fails(
        tab1.unmap(m.cast::<u8>().wrapping_add(PAGE_SIZE).cast(), 2),
        -1,
        libc::EINVAL,
    );
    fails(tab1.unmap(ptr::null_mut(), 1), -1, libc::EINVAL);
    assert_eq!(tab1.unmap(m, 3), 0);
    assert_eq!(broker.stats().mappings, 0);

    // Pages from two domains at consecutive addresses.
    let mut r2 = [0u32; 2];
    let b = shr2.share(1, &mut r2, false);
    set_byte(b, 5, 0xb0);
    set_byte(b, PAGE_SIZE + 5, 0xb1);
    let m = tab1.map_refs(&[2, 0, 2], &[r2[1], refs[0], r2[0]], libc::PROT_READ);
    assert!(!m.is_null());
    assert_eq!(
        [
            byte(m, 5),
            byte(m, PAGE_SIZE + 7),
            byte(m, 2 * PAGE_SIZE + 5)
        ],
        [0xb1, 10, 0xb0]
    );
    assert_eq!(tab1.unmap(m, 3), 0);

    // Refusals: writable map of a read-only grant, unknown refs, others' grants.
    fails(tab1.map(2, r2[0], rw), ptr::null_mut(), libc::EINVAL);
    fails(
        tab1.map(0, 77_777, libc::PROT_READ),
        ptr::null_mut(),
        libc::EINVAL,
    );
    fails(
        tab1.map_domain(0, &[], libc::PROT_READ),
        ptr::null_mut(),
        libc::EINVAL,
    );
    let tab2 = Gnt::tab(dir.path(), 2);
    fails(
        tab2.map(0, refs[0], libc::PROT_READ),
        ptr::null_mut(),
        libc::EINVAL,
    );
    assert_eq!(tab2.close_tab(), 0);
    fails(
        shr0.share_count(1, 0, &mut refs),
        ptr::null_mut(),
        libc::EINVAL,
    );
    fails(
        shr0.share(0x7fff, &mut refs[..1], true),
        ptr::null_mut(),
        libc::EINVAL,
    );
    // The two handle kinds are not interchangeable.
    fails(
        tab1.share(0, &mut refs[..1], true),
        ptr::null_mut(),
        libc::EINVAL,
    );
    fails(
        shr0.map(0, refs[0], libc::PROT_READ),
        ptr::null_mut(),
        libc::EINVAL,
    );

    // Unshare: whole shares only.
    fails(shr0.unshare(a, 2), -1, libc::EINVAL);
    assert_eq!(shr0.unshare(a, 3), 0);
    assert_eq!(shr2.unshare(b, 2), 0);
    assert_eq!(broker.stats().shares, 0);

    assert_eq!(tab1.set_max_grants(4), 0);
    let fd = tab1.fd();
    assert!(fd >= 0 && fd_flags(fd) >= 0);
    fails(tab1.dmabuf_export(0, &refs), -1, libc::EOPNOTSUPP);
    assert_eq!(tab1.close_tab(), 0);
    assert_eq!(shr0.close_shr(), 0);
    assert_eq!(shr2.close_shr(), 0);
    assert_eq!(Gnt(ptr::null_mut()).close_tab(), 0);
}

/// The libxenvchan pattern: notifications registered on the control page fire when the
/// mapping or share ends — by unmap/unshare, by closing the handle (the program's mapping
/// stays until it unmaps it, as after closing the device), or by the process dying.
#[test]
fn unmap_notifications_fire_when_the_host_side_ends() {
    let (dir, broker) = host(&[0, 1]);
    let (ev0, ev1) = (Ev::new(dir.path(), 0), Ev::new(dir.path(), 1));
    let (shr0, tab1) = (Gnt::shr(dir.path(), 0), Gnt::tab(dir.path(), 1));
    let p0 = ev0.bind_unbound(1) as u32;
    let p1 = ev1.bind_interdomain(0, p0) as u32;
    set_nonblocking(ev0.fd(), true);
    set_nonblocking(ev1.fd(), true);

    let mut gref = 0u32;
    let page = shr0.share_notify(1, &mut gref, 21, p0);
    assert!(!page.is_null());
    set_byte(page, 20, 1);
    set_byte(page, 21, 1);
    let m = tab1.map_notify(0, gref, libc::PROT_READ | libc::PROT_WRITE, 20, p1);
    assert!(!m.is_null());
    // An offset beyond the page and port -1: no notification, which is fine.
    let plain = tab1.map_notify(0, gref, libc::PROT_READ, !0, !0);
    assert!(!plain.is_null());
    assert_eq!(tab1.unmap(plain, 1), 0);
    // A port this domain has not bound cannot be registered: nothing is mapped.
    fails(
        tab1.map_notify(0, gref, libc::PROT_READ, 0x10000, 999),
        ptr::null_mut(),
        libc::EINVAL,
    );
    assert_eq!(broker.stats().mappings, 1);

    // Closing the mapping handle without unmapping: byte 20 cleared, event to dom0; the
    // program's mapping still works until it unmaps it.
    assert_eq!(tab1.close_tab(), 0);
    assert_eq!(byte(page, 20), 0);
    assert!(readable(ev0.fd(), 5000));
    assert_eq!(ev0.pending(), p0 as c_int);
    set_byte(m, 300, 9);
    assert_eq!(byte(page, 300), 9);
    assert_eq!(munmap(m, PAGE_SIZE), 0);

    // Unsharing: byte 21 cleared (in the peer's view too), event to dom1.
    let tab1 = Gnt::tab(dir.path(), 1);
    let view = tab1.map(0, gref, libc::PROT_READ);
    assert_eq!(byte(view, 21), 1);
    assert_eq!(shr0.unshare(page, 1), 0);
    assert_eq!(byte(view, 21), 0);
    assert!(readable(ev1.fd(), 5000));
    assert_eq!(ev1.pending(), p1 as c_int);
    assert_eq!(tab1.unmap(view, 1), 0);

    for h in [ev0, ev1] {
        assert_eq!(h.close(), 0);
    }
    assert_eq!(tab1.close_tab(), 0);
    assert_eq!(shr0.close_shr(), 0);
    // The host learns of closed handles on its own thread: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = broker.stats();
        if (stats.shares, stats.mappings, stats.ports) == (0, 0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the host still holds {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn grant_copy_between_grants_and_local_memory() {
    let (dir, _broker) = host(&[0, 1]);
    let (shr0, tab1) = (Gnt::shr(dir.path(), 0), Gnt::tab(dir.path(), 1));
    let mut rw = [0u32];
    let page = shr0.share(1, &mut rw, true);
    let mut ro = [0u32];
    let ro_page = shr0.share(1, &mut ro, false);
    let (rw, ro) = (rw[0], ro[0]);
    for i in 0..64 {
        set_byte(page, 1000 + i, i as u8);
    }
    let foreign = |gref: u32, offset: u16| u64::from(gref) | (u64::from(offset) << 32);
    let mut local = [0u8; 64];
    let src: [u8; 64] = *b"written into a grant by xengnttab_grant_copy, from local memory.";
    let mut segs = [
        // grant -> local
        GrantCopySegment {
            source: foreign(rw, 1000),
            dest: local.as_mut_ptr() as u64,
            len: 64,
            flags: GNTCOPY_SOURCE_GREF,
            status: 99,
        },
        // local -> grant
        GrantCopySegment {
            source: src.as_ptr() as u64,
            dest: foreign(rw, 4000),
            len: 64,
            flags: GNTCOPY_DEST_GREF,
            status: 99,
        },
        // local -> read-only grant
        GrantCopySegment {
            source: src.as_ptr() as u64,
            dest: foreign(ro, 0),
            len: 8,
            flags: GNTCOPY_DEST_GREF,
            status: 99,
        },
        // an unknown reference
        GrantCopySegment {
            source: foreign(55_555, 0),
            dest: local.as_mut_ptr() as u64,
            len: 8,
            flags: GNTCOPY_SOURCE_GREF,
            status: 99,
        },
    ];
    assert_eq!(tab1.copy(&mut segs), 0);
    let status: Vec<i16> = segs.iter().map(|s| s.status).collect();
    assert_eq!(status, [0, 0, -8, -3]);
    assert_eq!(local.to_vec(), (0..64u8).collect::<Vec<_>>());
    let copied: Vec<u8> = (0..64).map(|i| byte(page, 4000 + i)).collect();
    assert_eq!(copied, src);
    assert_eq!(byte(ro_page, 0), 0);

    // A segment running off its grant's page refuses the whole batch.
    let mut bad = [GrantCopySegment {
        source: foreign(rw, 4090),
        dest: local.as_mut_ptr() as u64,
        len: 8,
        flags: GNTCOPY_SOURCE_GREF,
        status: 99,
    }];
    fails(tab1.copy(&mut bad), -1, libc::EINVAL);
    assert_eq!(bad[0].status, 99);

    assert_eq!(shr0.unshare(page, 1), 0);
    assert_eq!(shr0.unshare(ro_page, 1), 0);
    assert_eq!(tab1.close_tab(), 0);
    assert_eq!(shr0.close_shr(), 0);
}

/// A program may `munmap` grant mappings itself (`libxenvchan_close` does, for its rings);
/// when the kernel gives the same addresses to a new mapping of the handle, the old host-side
/// mapping is ended then, not left until the handle closes.
#[test]
fn pages_the_program_unmapped_itself_end_on_the_host_when_their_addresses_return() {
    let (dir, broker) = host(&[0, 1]);
    let (shr0, tab1) = (Gnt::shr(dir.path(), 0), Gnt::tab(dir.path(), 1));
    let mut refs = [0u32; 2];
    let page = shr0.share(1, &mut refs, true);
    let mut reused = 0;
    let mut last = tab1.map_domain(0, &refs, libc::PROT_READ);
    for _ in 0..20 {
        assert_eq!(munmap(last, 2 * PAGE_SIZE), 0);
        let next = tab1.map_domain(0, &refs, libc::PROT_READ);
        assert!(!next.is_null());
        if next == last {
            reused += 1;
            assert_eq!(
                broker.stats().mappings,
                1,
                "the unmapped mapping still held"
            );
        }
        last = next;
    }
    // Linux hands a just-freed range of the same size out again (top-down allocation).
    assert!(
        reused > 0,
        "the kernel never reused an address: nothing was checked"
    );
    assert_eq!(tab1.unmap(last, 2), 0);
    assert_eq!(broker.stats().mappings, 0);
    assert_eq!(shr0.unshare(page, 2), 0);
    assert_eq!(tab1.close_tab(), 0);
    assert_eq!(shr0.close_shr(), 0);
}
