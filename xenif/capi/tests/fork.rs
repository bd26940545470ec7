//! After `fork(2)` a child must not use its parent's handles (the C libraries' rule): here it
//! gets `EBADF` instead of acting on the parent's grants and ports, and closing them in the
//! child releases nothing of the parent's. One test: it forks.

mod support;

use std::ffi::c_int;

use support::{Ev, Gnt};
use vchan_xenif::DomId;
use vchan_xenif::sim::broker::Broker;

#[test]
fn a_forked_child_cannot_use_or_release_the_parents_handles() {
    let dir = tempfile::Builder::new()
        .prefix("vcf")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = Broker::new(dir.path()).unwrap();
    broker.domain_created(DomId(0)).unwrap();
    broker.domain_created(DomId(1)).unwrap();
    let (shr, tab, ev) = (
        Gnt::shr(dir.path(), 0),
        Gnt::tab(dir.path(), 1),
        Ev::new(dir.path(), 0),
    );
    let mut gref = [0u32];
    let page = shr.share(1, &mut gref, true);
    let m = tab.map(0, gref[0], libc::PROT_READ);
    assert!(!page.is_null() && !m.is_null());
    let port = ev.bind_unbound(1);
    assert!(port > 0);

    // SAFETY: the child only calls the library (async-signal-safe enough for a test: it
    // takes no lock another thread could hold, see `Opener`) and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ebadf = |r: c_int| r == -1 && nix::errno::Errno::last_raw() == libc::EBADF;
        let ok = ebadf(tab.unmap(m, 1))
            && ebadf(shr.unshare(page, 1))
            && ebadf(ev.unbind(port as u32))
            && tab.map(0, gref[0], libc::PROT_READ).is_null()
            && tab.close_tab() == 0
            && shr.close_shr() == 0
            && ev.close() == 0;
        // SAFETY: ends the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child into a local.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );

    // The parent's handles and what they hold are intact.
    let stats = broker.stats();
    assert_eq!((stats.shares, stats.mappings, stats.ports), (1, 1, 1));
    assert_eq!(tab.unmap(m, 1), 0);
    assert_eq!(shr.unshare(page, 1), 0);
    assert_eq!(ev.unbind(port as u32), 0);
    assert_eq!(tab.close_tab(), 0);
    assert_eq!(shr.close_shr(), 0);
    assert_eq!(ev.close(), 0);
}
