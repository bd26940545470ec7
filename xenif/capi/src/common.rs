//! What every C entry point needs: joining the simulated host from the environment, `errno`,
//! logging to standard error, catching panics at the boundary, and noticing use after `fork`.

use std::fmt::Display;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use vchan_xenif::{DomId, Error, sim};

/// Xen's page size (the unit of grants and of `count` arguments).
pub const PAGE_SIZE: usize = vchan_xenif::PAGE_SIZE;

/// The simulated host this process joins, from `VCHAN_SIM_DIR` and `VCHAN_SIM_DOMID`; on
/// failure the `errno` to set (`ENOENT`, as for a missing `/dev/xen` device) after logging why.
pub(crate) fn sim_from_env(lib: &str, func: &str) -> Result<(PathBuf, DomId), i32> {
    let Some(dir) = std::env::var_os(sim::ENV_DIR) else {
        log(
            lib,
            format_args!(
                "{func}: {} is not set. This {lib} is vchan's drop-in for a simulated Xen host: \
                 join a host with `eval \"$(vchan sim env <domid>)\"`, or take it out of \
                 LD_LIBRARY_PATH to use real Xen",
                sim::ENV_DIR
            ),
        );
        return Err(libc::ENOENT);
    };
    let domid = match std::env::var(sim::ENV_DOMID) {
        Ok(s) => match s.parse::<DomId>() {
            Ok(d) => d,
            Err(e) => {
                log(lib, format_args!("{func}: {}: {e}", sim::ENV_DOMID));
                return Err(libc::EINVAL);
            }
        },
        Err(_) => {
            log(
                lib,
                format_args!(
                    "{func}: {} is set but {} is not: set it to the domain this process acts \
                     as (`vchan sim env <domid>` prints both)",
                    sim::ENV_DIR,
                    sim::ENV_DOMID
                ),
            );
            return Err(libc::ENOENT);
        }
    };
    Ok((PathBuf::from(dir), domid))
}

/// Writes `lib: error: what` to standard error (the C libraries' default logger does the
/// same); a closed standard error is ignored.
pub(crate) fn log(lib: &str, what: impl Display) {
    let _ = writeln!(std::io::stderr(), "{lib} (vchan sim): error: {what}");
}

/// Sets `errno` and returns `ret`.
pub(crate) fn fail<T>(errno: i32, ret: T) -> T {
    Errno::set_raw(errno);
    ret
}

/// The `errno` for an error of the simulated host (`EIO` when it has none: the host refused
/// or could not be reached, which the log line explains).
pub(crate) fn errno_of(e: &Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Logs `e` and sets `errno` from it; returns `ret`.
pub(crate) fn fail_with<T>(lib: &str, func: &str, e: &Error, ret: T) -> T {
    log(lib, format_args!("{func}: {e}"));
    fail(errno_of(e), ret)
}

/// Runs `f`, turning a panic (a bug here) into `errno = EIO` and `on_panic` instead of
/// unwinding into C (the panic message is already on standard error).
pub(crate) fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fail(libc::EIO, on_panic))
}

/// Children made by `fork(2)` since this library was loaded, as counted in each child by a
/// `pthread_atfork` handler (so noticing a fork costs an atomic load, not a `getpid` per call).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The process that opened a handle. A child after `fork(2)` shares the parent's connections
/// to the host, so it must not use the parent's handles (the C libraries' rule too): only
/// close, which then releases nothing of the parent's.
#[derive(Debug)]
pub(crate) struct Opener {
    pid: u32,
    forks: u64,
}

impl Opener {
    pub(crate) fn this_process() -> Opener {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| {
            // SAFETY: registers a child handler that only increments an atomic (async-signal
            // safe, as a handler running in a forked child must be).
            unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
        });
        Opener {
            pid: std::process::id(),
            forks: FORKS.load(Ordering::Relaxed),
        }
    }

    /// Whether this is a child (or grandchild...) of the process that opened the handle.
    pub(crate) fn forked(&self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.forks
    }

    /// `Err(EBADF)` (logged) in a child after `fork`.
    pub(crate) fn check(&self, lib: &str, func: &str) -> Result<(), i32> {
        if self.forked() {
            log(
                lib,
                format_args!(
                    "{func}: the handle was opened by process {} and cannot be used after \
                     fork(2): open a new one in this process",
                    self.pid
                ),
            );
            return Err(libc::EBADF);
        }
        Ok(())
    }
}

/// The domain a C `uint32_t domid` argument names, with Xen's `DOMID_SELF` (0x7ff0) meaning
/// `own`; `None` for ids that cannot name a domain.
pub(crate) fn domain_arg(domid: u32, own: DomId) -> Option<DomId> {
    const DOMID_SELF: u32 = 0x7ff0;
    if domid == DOMID_SELF {
        return Some(own);
    }
    u16::try_from(domid)
        .ok()
        .map(DomId)
        .filter(|d| d.is_valid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_arguments() {
        assert_eq!(domain_arg(0, DomId(3)), Some(DomId(0)));
        assert_eq!(domain_arg(7, DomId(3)), Some(DomId(7)));
        assert_eq!(domain_arg(0x7ff0, DomId(3)), Some(DomId(3)));
        assert_eq!(domain_arg(0x7ff1, DomId(3)), None);
        assert_eq!(domain_arg(0x1_0000, DomId(3)), None);
    }

    #[test]
    fn errno_is_set_and_panics_stop_at_the_boundary() {
        assert_eq!(fail(libc::ENOTCONN, -1), -1);
        assert_eq!(Errno::last_raw(), libc::ENOTCONN);
        let r = guard(-1, || -> i32 { panic!("a bug") });
        assert_eq!(r, -1);
        assert_eq!(Errno::last_raw(), libc::EIO);
    }
}
