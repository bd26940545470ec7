//! `libxenevtchn.so.1`: event channels (`xenevtchn.h`) over the simulated host.
//!
//! A handle is a [`SimEventChannels`] (its own connection to the host), with the semantics of
//! Linux `/dev/xen/evtchn` as `tools/libs/evtchn/linux.c` exposes them:
//!
//! * a port that fires is delivered once by [`xenevtchn_pending`] and stays masked until
//!   [`xenevtchn_unmask`]; notifications meanwhile are remembered, not lost;
//! * [`xenevtchn_fd`] is pollable: readable while a port is pending. `xenevtchn_pending`
//!   blocks unless that descriptor was made non-blocking (`fcntl(O_NONBLOCK)`), then it fails
//!   with `EAGAIN`, as `read(2)` on the device does;
//! * `errno`s are the driver's: `ENOTCONN` for notify/unbind of a port this handle did not
//!   bind, `EACCES` after [`xenevtchn_restrict`], `EINVAL` for a port or domain that cannot
//!   be bound; unmasking a port that is not bound is ignored, as the driver ignores it.
//!
//! Virtual IRQs do not exist on the simulated host ([`xenevtchn_bind_virq`]), and a device
//! descriptor opened elsewhere cannot be adopted ([`xenevtchn_fdopen`]): both fail with
//! `EOPNOTSUPP`.

use std::ffi::{c_int, c_uint, c_void};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vchan_xenif::sim::client::SimEventChannels;
use vchan_xenif::{DomId, Error, EventChannels, EventPort};

use crate::common::{Opener, domain_arg, fail, fail_with, guard, log, sim_from_env};

const LIB: &str = "xenevtchn";

/// `XENEVTCHN_NO_CLOEXEC`: the handle's descriptor survives `exec`.
pub const XENEVTCHN_NO_CLOEXEC: c_uint = 1;

/// An event-channel handle (C `xenevtchn_handle`), opaque to C.
#[derive(Debug)]
pub struct XenevtchnHandle {
    chans: SimEventChannels,
    domid: DomId,
    /// The only domain ports may be bound to, once restricted.
    restricted: Mutex<Option<DomId>>,
    opener: Opener,
}

impl XenevtchnHandle {
    /// Opens a handle acting as `domid` of the host at `dir` (what [`xenevtchn_open`] does
    /// with the environment's host).
    pub fn open(dir: &std::path::Path, domid: DomId) -> vchan_xenif::Result<Self> {
        Ok(XenevtchnHandle {
            chans: SimEventChannels::connect(dir, domid)?,
            domid,
            restricted: Mutex::new(None),
            opener: Opener::this_process(),
        })
    }

    fn restricted(&self) -> Option<DomId> {
        *self.restricted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `pending` with the device's blocking rules.
    fn pending(&self) -> Result<EventPort, i32> {
        let fd = self.chans.as_fd();
        loop {
            match self.chans.pending() {
                Ok(Some(port)) => return Ok(port),
                Ok(None) => {}
                Err(e) => {
                    log(LIB, format_args!("xenevtchn_pending: {e}"));
                    return Err(crate::common::errno_of(&e));
                }
            }
            let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| e as i32)?;
            if OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK) {
                return Err(libc::EAGAIN);
            }
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                // A blocked read(2) of the device is restarted after a handler installed with
                // SA_RESTART and fails with EINTR otherwise; poll(2) is never restarted, so
                // decide as read(2) would, from the handlers this process installed.
                Err(Errno::EINTR) if !all_handlers_restart() => return Err(libc::EINTR),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e as i32),
            }
        }
    }
}

/// Whether every signal handler this process installed restarts system calls (`SA_RESTART`):
/// then a signal cannot have been meant to interrupt a blocking wait.
fn all_handlers_restart() -> bool {
    (1..libc::SIGRTMAX()).all(|sig| {
        // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a query (null new action) into a local of the right type; invalid signal
        // numbers only make it fail.
        let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
        r != 0
            || old.sa_sigaction == libc::SIG_DFL
            || old.sa_sigaction == libc::SIG_IGN
            || old.sa_flags & libc::SA_RESTART != 0
    })
}

/// Borrows the handle behind a C pointer.
///
/// # Safety
/// `xce` is null or a pointer [`xenevtchn_open`] returned and [`xenevtchn_close`] has not
/// freed.
unsafe fn handle<'a>(xce: *mut XenevtchnHandle, func: &str) -> Result<&'a XenevtchnHandle, i32> {
    // SAFETY: the caller's contract above: null or a live handle we allocated.
    let h = unsafe { xce.as_ref() }.ok_or(libc::EINVAL)?;
    h.opener.check(LIB, func)?;
    Ok(h)
}

fn port_result(r: Result<EventPort, i32>) -> c_int {
    match r {
        Ok(p) => c_int::try_from(p.0).unwrap_or_else(|_| fail(libc::EOVERFLOW, -1)),
        Err(errno) => fail(errno, -1),
    }
}

fn unit_result(r: Result<(), i32>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(errno) => fail(errno, -1),
    }
}

/// Opens an event-channel handle as the domain named by `VCHAN_SIM_DOMID` of the simulated
/// host at `VCHAN_SIM_DIR` (the drop-in's `/dev/xen/evtchn`). `logger` is ignored; errors go
/// to standard error. `flags` may contain `XENEVTCHN_NO_CLOEXEC`.
///
/// Returns `NULL` with `errno` set on failure: `ENOENT` when the environment names no host,
/// the connection's `errno` (or `EIO`) when the host cannot be reached.
///
/// # Safety
/// Always safe to call; the result must be freed with [`xenevtchn_close`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_open(
    _logger: *mut c_void,
    flags: c_uint,
) -> *mut XenevtchnHandle {
    guard(std::ptr::null_mut(), || {
        let (dir, domid) = match sim_from_env(LIB, "xenevtchn_open") {
            Ok(v) => v,
            Err(errno) => return fail(errno, std::ptr::null_mut()),
        };
        let h = match XenevtchnHandle::open(&dir, domid) {
            Ok(h) => h,
            Err(e) => return fail_with(LIB, "xenevtchn_open", &e, std::ptr::null_mut()),
        };
        if flags & XENEVTCHN_NO_CLOEXEC != 0 {
            if let Err(e) = fcntl(h.chans.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())) {
                log(
                    LIB,
                    format_args!("xenevtchn_open: clearing FD_CLOEXEC: {e}"),
                );
                return fail(e as i32, std::ptr::null_mut());
            }
        }
        Box::into_raw(Box::new(h))
    })
}

/// Would adopt an already open `/dev/xen/evtchn` descriptor; the simulated host has none, so
/// this fails with `EOPNOTSUPP` (use [`xenevtchn_open`]).
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_fdopen(
    _logger: *mut c_void,
    fd: c_int,
    _flags: c_uint,
) -> *mut XenevtchnHandle {
    log(
        LIB,
        format_args!(
            "xenevtchn_fdopen({fd}): the simulated host has no /dev/xen/evtchn descriptors to \
             adopt: use xenevtchn_open"
        ),
    );
    fail(libc::EOPNOTSUPP, std::ptr::null_mut())
}

/// Closes a handle, unbinding its ports (the remote ends return to unbound, as on Xen).
/// `NULL` is accepted. In a child after `fork`, frees only this process's copy. Returns 0.
///
/// # Safety
/// `xce` is null or a handle from [`xenevtchn_open`] not closed yet; it is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_close(xce: *mut XenevtchnHandle) -> c_int {
    guard(-1, || {
        if xce.is_null() {
            return 0;
        }
        // SAFETY: the caller's contract: a live handle from `xenevtchn_open` (a leaked Box),
        // freed exactly once here.
        let h = unsafe { Box::from_raw(xce) };
        // Dropping closes the descriptors; in a forked child that closes only its copies, so
        // the parent's ports stay as they are.
        drop(h);
        0
    })
}

/// The handle's pollable descriptor: readable while a port is pending. It may be made
/// non-blocking with `fcntl`, which makes [`xenevtchn_pending`] fail with `EAGAIN` instead of
/// waiting.
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_fd(xce: *mut XenevtchnHandle) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        match unsafe { handle(xce, "xenevtchn_fd") } {
            Ok(h) => h.chans.as_fd().as_raw_fd(),
            Err(errno) => fail(errno, -1),
        }
    })
}

/// Signals the remote end of `port`. 0, or -1 with `ENOTCONN` if this handle has not bound
/// `port`.
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_notify(xce: *mut XenevtchnHandle, port: u32) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_notify") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        unit_result(h.chans.notify(EventPort(port)).map_err(|e| match e {
            Error::Port { .. } => libc::ENOTCONN,
            e => {
                log(LIB, format_args!("xenevtchn_notify: {e}"));
                crate::common::errno_of(&e)
            }
        }))
    })
}

/// Allocates a port that domain `domid` may bind to; returns the local port, or -1 with
/// `errno`: `EACCES` after [`xenevtchn_restrict`], `EINVAL` for a domain that does not exist
/// or an invalid id, `EIO` when the host refuses (for example no free port; logged).
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_bind_unbound_port(
    xce: *mut XenevtchnHandle,
    domid: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_bind_unbound_port") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        if h.restricted().is_some() {
            return fail(libc::EACCES, -1);
        }
        let Some(remote) = domain_arg(domid, h.domid) else {
            return fail(libc::EINVAL, -1);
        };
        port_result(h.chans.bind_unbound(remote).map_err(|e| {
            log(LIB, format_args!("xenevtchn_bind_unbound_port: {e}"));
            crate::common::errno_of(&e)
        }))
    })
}

/// Connects to `remote_port`, a port domain `domid` allocated for this domain; returns the
/// local port, or -1 with `errno`: `EACCES` if restricted to another domain, `EINVAL` if the
/// remote port is not unbound for this domain (or the domain does not exist).
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_bind_interdomain(
    xce: *mut XenevtchnHandle,
    domid: u32,
    remote_port: u32,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_bind_interdomain") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        let Some(remote) = domain_arg(domid, h.domid) else {
            return fail(libc::EINVAL, -1);
        };
        if h.restricted().is_some_and(|r| r != remote) {
            return fail(libc::EACCES, -1);
        }
        port_result(
            h.chans
                .bind_interdomain(remote, EventPort(remote_port))
                .map_err(|e| {
                    log(LIB, format_args!("xenevtchn_bind_interdomain: {e}"));
                    crate::common::errno_of(&e)
                }),
        )
    })
}

/// Would bind a virtual IRQ; the simulated host has none: -1 with `EOPNOTSUPP` (`EACCES`
/// after [`xenevtchn_restrict`], as the driver checks that first).
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_bind_virq(xce: *mut XenevtchnHandle, virq: c_uint) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_bind_virq") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        if h.restricted().is_some() {
            return fail(libc::EACCES, -1);
        }
        log(
            LIB,
            format_args!("xenevtchn_bind_virq({virq}): the simulated host has no virtual IRQs"),
        );
        fail(libc::EOPNOTSUPP, -1)
    })
}

/// Closes `port`; its remote end returns to unbound (for this domain), as on Xen. 0, or -1
/// with `ENOTCONN` if this handle has not bound `port`.
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_unbind(xce: *mut XenevtchnHandle, port: u32) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_unbind") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        unit_result(h.chans.unbind(EventPort(port)).map_err(|e| match e {
            Error::Port { .. } => libc::ENOTCONN,
            e => {
                log(LIB, format_args!("xenevtchn_unbind: {e}"));
                crate::common::errno_of(&e)
            }
        }))
    })
}

/// The next pending port (now masked until [`xenevtchn_unmask`]). Blocks until one is
/// pending, unless [`xenevtchn_fd`] was made non-blocking: then -1 with `EAGAIN`. A signal
/// interrupts the wait (-1, `EINTR`) exactly when it would interrupt `read(2)`: when its
/// handler was installed without `SA_RESTART`.
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_pending(xce: *mut XenevtchnHandle) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        match unsafe { handle(xce, "xenevtchn_pending") } {
            Ok(h) => port_result(h.pending()),
            Err(errno) => fail(errno, -1),
        }
    })
}

/// Re-enables delivery of `port`; a notification that arrived while it was masked is
/// delivered now. Unmasking a port this handle has not bound is ignored (0), as by the driver.
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_unmask(xce: *mut XenevtchnHandle, port: u32) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_unmask") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        unit_result(match h.chans.unmask(EventPort(port)) {
            Ok(()) | Err(Error::Port { .. }) => Ok(()),
            Err(e) => {
                log(LIB, format_args!("xenevtchn_unmask: {e}"));
                Err(crate::common::errno_of(&e))
            }
        })
    })
}

/// Restricts the handle to ports connected to `domid` from now on (binding an unbound port or
/// a virtual IRQ, or connecting to another domain, then fail with `EACCES`). -1 with
/// `EACCES` if already restricted, `EINVAL` for domain 0 or a reserved id.
///
/// # Safety
/// `xce` is a live handle from [`xenevtchn_open`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_restrict(xce: *mut XenevtchnHandle, domid: u16) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let h = match unsafe { handle(xce, "xenevtchn_restrict") } {
            Ok(h) => h,
            Err(errno) => return fail(errno, -1),
        };
        let mut restricted = h.restricted.lock().unwrap_or_else(|e| e.into_inner());
        if restricted.is_some() {
            return fail(libc::EACCES, -1);
        }
        if domid == 0 || !DomId(domid).is_valid() {
            return fail(libc::EINVAL, -1);
        }
        *restricted = Some(DomId(domid));
        0
    })
}
