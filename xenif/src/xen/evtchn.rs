//! Event channels: Linux `/dev/xen/evtchn`.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::abi::{IoctlEvtchnBindInterdomain, IoctlEvtchnBindUnboundPort, IoctlEvtchnPort};
use super::driver::{Driver, Ioctl, LinuxDriver};
use super::{Device, EVTCHN_DEVICE, errno};
use crate::error::{Error, Result};
use crate::evtchn::EventChannels;
use crate::types::{DomId, EventPort};

/// An event-channel handle on `/dev/xen/evtchn` (C: `xenevtchn_handle`).
///
/// The device is opened non-blocking: [`EventChannels::pending`] never sleeps, and
/// [`EventChannels::wait`] sleeps in `poll`. A port that fires is masked by the kernel until
/// [`EventChannels::unmask`]. Closing the handle (dropping it) unbinds every port it bound.
///
/// If the kernel's queue of pending ports overflows (`read` fails with `EFBIG`, possible only with
/// more ports bound than the queue holds), the handle resets the queue (`IOCTL_EVTCHN_RESET`) and
/// reports every port it has bound as pending, once: a spurious wake-up is harmless to a
/// protocol that re-checks its state, a lost one is not. These reports come from the handle, not
/// the device, so they do not make the fd readable: after an overflow, call `pending` until it
/// answers `None` before polling the fd again (`wait` does this).
///
/// ```no_run
/// use std::time::Duration;
/// use vchan_xenif::xen::XenEventChannels;
/// use vchan_xenif::{DomId, EventChannels};
///
/// let evtchn = XenEventChannels::open()?;
/// let port = evtchn.bind_unbound(DomId(5))?;
/// // ... publish `port` for domain 5, which binds to it and signals it ...
/// if let Some(p) = evtchn.wait(Some(Duration::from_secs(1)))? {
///     evtchn.unmask(p)?;
/// }
/// # Ok::<(), vchan_xenif::Error>(())
/// ```
#[derive(Debug)]
pub struct XenEventChannels {
    dev: Device,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Ports bound through this handle.
    bound: BTreeSet<u32>,
    /// Ports to report as pending after a queue overflow.
    replay: VecDeque<u32>,
}

impl XenEventChannels {
    /// Opens `/dev/xen/evtchn` (a missing device names the `xen_evtchn` module).
    pub fn open() -> Result<Self> {
        Self::with_driver(Arc::new(LinuxDriver))
    }

    pub(crate) fn with_driver(driver: Arc<dyn Driver>) -> Result<Self> {
        let dev = Device::open(driver, EVTCHN_DEVICE, "xen_evtchn", true)?;
        Ok(XenEventChannels {
            dev,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a set and a queue: still consistent if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bound(&self, result: io::Result<i32>) -> io::Result<EventPort> {
        let port = result?;
        let port = u32::try_from(port)
            .map_err(|_| io::Error::other(format!("the kernel returned port {port}")))?;
        self.state().bound.insert(port);
        Ok(EventPort(port))
    }

    fn not_bound(&self, port: EventPort) -> Error {
        Error::Port {
            port,
            reason: format!("not bound through this {EVTCHN_DEVICE} handle"),
        }
    }
}

impl AsFd for XenEventChannels {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.fd()
    }
}

impl EventChannels for XenEventChannels {
    fn bind_unbound(&self, remote: DomId) -> Result<EventPort> {
        if !remote.is_valid() {
            return Err(Error::InvalidArgument(format!(
                "cannot allocate an event channel for domain {remote}: not a valid domain id"
            )));
        }
        let arg = IoctlEvtchnBindUnboundPort {
            remote_domain: u32::from(remote.0),
        };
        self.bound(self.dev.ioctl(Ioctl::EvtchnBindUnboundPort(&arg)))
            .map_err(|e| {
                Error::os(
                    self.dev.op(
                        "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
                        format_args!("a port for domain {remote}"),
                    ),
                    e,
                )
            })
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: EventPort) -> Result<EventPort> {
        if !remote.is_valid() {
            return Err(Error::InvalidArgument(format!(
                "cannot connect to an event channel of domain {remote}: not a valid domain id"
            )));
        }
        let arg = IoctlEvtchnBindInterdomain {
            remote_domain: u32::from(remote.0),
            remote_port: remote_port.0,
        };
        self.bound(self.dev.ioctl(Ioctl::EvtchnBindInterdomain(&arg)))
            .map_err(|e| match errno(&e) {
                libc::EINVAL | libc::ESRCH | libc::EPERM | libc::EACCES => Error::Port {
                    port: remote_port,
                    reason: format!(
                        "cannot connect to port {remote_port} of domain {remote} ({e}): that \
                         domain must exist and have an unbound port {remote_port} reserved for \
                         this domain"
                    ),
                },
                _ => Error::os(
                    self.dev.op(
                        "IOCTL_EVTCHN_BIND_INTERDOMAIN",
                        format_args!("port {remote_port} of domain {remote}"),
                    ),
                    e,
                ),
            })
    }

    fn unbind(&self, port: EventPort) -> Result<()> {
        let mut st = self.state();
        if !st.bound.contains(&port.0) {
            return Err(self.not_bound(port));
        }
        let arg = IoctlEvtchnPort { port: port.0 };
        self.dev.ioctl(Ioctl::EvtchnUnbind(&arg)).map_err(|e| {
            Error::os(
                self.dev
                    .op("IOCTL_EVTCHN_UNBIND", format_args!("port {port}")),
                e,
            )
        })?;
        st.bound.remove(&port.0);
        st.replay.retain(|p| *p != port.0);
        Ok(())
    }

    fn notify(&self, port: EventPort) -> Result<()> {
        // The hot path: no lock, the kernel checks the port belongs to this handle.
        let arg = IoctlEvtchnPort { port: port.0 };
        match self.dev.ioctl(Ioctl::EvtchnNotify(&arg)) {
            Ok(_) => Ok(()),
            Err(e) if matches!(errno(&e), libc::ENOTCONN | libc::EINVAL) => {
                Err(self.not_bound(port))
            }
            Err(e) => Err(Error::os(
                self.dev
                    .op("IOCTL_EVTCHN_NOTIFY", format_args!("port {port}")),
                e,
            )),
        }
    }

    fn pending(&self) -> Result<Option<EventPort>> {
        let mut st = self.state();
        if let Some(p) = st.replay.pop_front() {
            return Ok(Some(EventPort(p)));
        }
        let mut buf = [0u8; 4];
        match self.dev.driver.read(self.dev.fd(), &mut buf) {
            Ok(4) => Ok(Some(EventPort(u32::from_ne_bytes(buf)))),
            Ok(n) => Err(Error::os(
                format!("read of {EVTCHN_DEVICE}"),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{n} bytes instead of one 4-byte port"),
                ),
            )),
            Err(e) if errno(&e) == libc::EAGAIN => Ok(None),
            Err(e) if errno(&e) == libc::EFBIG => {
                // The queue overflowed and events were dropped: start afresh and report every
                // bound port once (see the type's documentation).
                self.dev.ioctl(Ioctl::EvtchnReset).map_err(|e| {
                    Error::os(
                        self.dev
                            .op("IOCTL_EVTCHN_RESET", format_args!("after EFBIG")),
                        e,
                    )
                })?;
                let all: VecDeque<u32> = st.bound.iter().copied().collect();
                st.replay = all;
                Ok(st.replay.pop_front().map(EventPort))
            }
            Err(e) => Err(Error::os(format!("read of {EVTCHN_DEVICE}"), e)),
        }
    }

    fn unmask(&self, port: EventPort) -> Result<()> {
        if !self.state().bound.contains(&port.0) {
            return Err(self.not_bound(port));
        }
        match self.dev.driver.write(self.dev.fd(), &port.0.to_ne_bytes()) {
            Ok(4) => Ok(()),
            Ok(n) => Err(Error::os(
                format!("write of port {port} to {EVTCHN_DEVICE}"),
                io::Error::new(io::ErrorKind::WriteZero, format!("{n} of 4 bytes written")),
            )),
            Err(e) if errno(&e) == libc::EINVAL => Err(Error::Port {
                port,
                reason: "the kernel does not know this port".into(),
            }),
            Err(e) => Err(Error::os(
                format!("write of port {port} to {EVTCHN_DEVICE}"),
                e,
            )),
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Option<EventPort>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(port) = self.pending()? {
                return Ok(Some(port));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let readable = self
                .dev
                .driver
                .poll_readable(self.dev.fd(), left)
                .map_err(|e| Error::os(format!("poll of {EVTCHN_DEVICE}"), e))?;
            if !readable {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Call, FakeXen};
    use super::*;

    fn handle(fake: &FakeXen) -> XenEventChannels {
        let h = XenEventChannels::with_driver(fake.driver()).unwrap();
        fake.take_calls();
        h
    }

    #[test]
    fn bind_notify_pending_unmask() {
        let fake = FakeXen::new();
        let h = handle(&fake);
        let port = h.bind_unbound(DomId(4)).unwrap();
        assert_eq!(fake.state().bound.get(&port.0), Some(&4));
        h.notify(port).unwrap();
        assert_eq!(fake.state().notified, [port.0]);
        assert_eq!(h.pending().unwrap(), None);
        fake.fire(port.0);
        fake.fire(port.0); // masked: no second report
        assert_eq!(h.pending().unwrap(), Some(port));
        assert_eq!(h.pending().unwrap(), None);
        h.unmask(port).unwrap();
        assert!(fake.state().masked.is_empty());
        assert!(fake.take_calls().contains(&Call::Write(vec![port.0])));
        fake.fire(port.0);
        assert_eq!(h.wait(Some(Duration::from_millis(10))).unwrap(), Some(port));
    }

    #[test]
    fn wait_times_out() {
        let fake = FakeXen::new();
        let h = handle(&fake);
        h.bind_unbound(DomId(1)).unwrap();
        fake.take_calls();
        assert_eq!(h.wait(Some(Duration::from_millis(5))).unwrap(), None);
        assert_eq!(h.wait(Some(Duration::ZERO)).unwrap(), None);
        let calls = fake.take_calls();
        assert_eq!(calls.first(), Some(&Call::Read));
        assert!(calls.contains(&Call::Poll));
    }

    #[test]
    fn bind_interdomain_needs_an_offer() {
        let fake = FakeXen::new();
        fake.state().offers.insert((0, 17));
        let h = handle(&fake);
        let e = h.bind_interdomain(DomId(0), EventPort(18)).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                Error::Port {
                    port: EventPort(18),
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("domain 0"), "{msg}");
        let local = h.bind_interdomain(DomId(0), EventPort(17)).unwrap();
        h.notify(local).unwrap();
        h.unbind(local).unwrap();
        assert!(matches!(h.notify(local), Err(Error::Port { .. })));
        assert!(matches!(h.unbind(local), Err(Error::Port { .. })));
        assert!(matches!(h.unmask(local), Err(Error::Port { .. })));
    }

    #[test]
    fn overflow_resets_and_reports_every_bound_port_once() {
        let fake = FakeXen::new();
        let h = handle(&fake);
        let a = h.bind_unbound(DomId(1)).unwrap();
        let b = h.bind_unbound(DomId(2)).unwrap();
        fake.state().overflow = true;
        fake.take_calls();
        let mut got = vec![
            h.wait(Some(Duration::from_millis(1))).unwrap(),
            h.pending().unwrap(),
        ];
        got.sort();
        assert_eq!(got, [Some(a), Some(b)]);
        assert_eq!(h.pending().unwrap(), None);
        assert!(
            fake.take_calls()
                .contains(&Call::Ioctl("IOCTL_EVTCHN_RESET"))
        );
        assert!(!fake.state().overflow);
    }

    #[test]
    fn read_errors_are_reported() {
        let fake = FakeXen::new();
        let h = handle(&fake);
        fake.fail_next("read", libc::EIO);
        let e = h.pending().unwrap_err();
        assert!(e.to_string().contains("read of /dev/xen/evtchn"), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn invalid_domains_never_reach_the_kernel() {
        let fake = FakeXen::new();
        let h = handle(&fake);
        assert!(matches!(
            h.bind_unbound(DomId(0x7FF0)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            h.bind_interdomain(DomId(0xFFFF), EventPort(1)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(fake.take_calls().is_empty());
    }
}
