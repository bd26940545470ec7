//! Options shared by servers and clients, and the XenStore path convention.

use std::time::Duration;

use vchan_xenif::xenstore::{self, wire};
use vchan_xenif::{Backend, DomId};

use crate::error::{Error, Result};

/// How long a blocking operation spins, re-checking the ring, before it sleeps on the event
/// channel.
///
/// A wake-up through the event channel costs a system call on each side and, on a machine
/// like a 2-core VM, tens of microseconds before the sleeper runs again (on Xen: a hypercall
/// and an interrupt). When the peer is actively producing or consuming, a short spin usually
/// sees its progress first and avoids that cost. Spinning is bounded by [`SpinPolicy::max`];
/// with [`SpinPolicy::adaptive`] each channel half shrinks its spin when its waits take longer
/// than `max` (the peer is idle, so spinning only burns CPU) and grows it back as soon as a
/// wait ends within `max` of its start, spinning or sleeping (a spin of `max` would have
/// paid); every 16th wait below `max` spins the full `max` as a probe, so the budget also
/// recovers where a wake-up from sleep takes longer than `max` itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinPolicy {
    /// The longest spin before sleeping. `Duration::ZERO` never spins.
    pub max: Duration,
    /// Adapt the spin between `max / 64` and `max` to how long waits take (see the type's
    /// documentation).
    pub adaptive: bool,
}

impl SpinPolicy {
    /// Never spin: sleep on the event channel at once (lowest CPU use, C's behaviour).
    pub const OFF: SpinPolicy = SpinPolicy {
        max: Duration::ZERO,
        adaptive: false,
    };

    /// Spin up to `max`, adaptively.
    pub const fn adaptive(max: Duration) -> SpinPolicy {
        SpinPolicy {
            max,
            adaptive: true,
        }
    }

    /// Always spin for `max` before sleeping.
    pub const fn fixed(max: Duration) -> SpinPolicy {
        SpinPolicy {
            max,
            adaptive: false,
        }
    }
}

impl Default for SpinPolicy {
    /// Adaptive, up to 50 µs: about the cost of one cross-core wake-up on the machines we
    /// measured, so spinning never costs more than the sleep it may avoid.
    fn default() -> Self {
        SpinPolicy::adaptive(Duration::from_micros(50))
    }
}

/// Whether operations wait for data or space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Operations wait (with the channel's timeout, if one is set). The default: unlike C,
    /// where the flag is left uninitialised, the mode is always defined.
    #[default]
    Blocking,
    /// Operations never wait: they move what they can or fail with
    /// [`Error::WouldBlock`](crate::Error::WouldBlock).
    NonBlocking,
}

/// The conventional XenStore base path of a vchan:
/// `/local/domain/<server>/data/vchan/<client>/<port>`.
///
/// ```
/// use vchan_msg::default_path;
/// use vchan_xenif::DomId;
/// assert_eq!(default_path(DomId(0), DomId(7), 5000), "/local/domain/0/data/vchan/7/5000");
/// ```
pub fn default_path(server: DomId, client: DomId, port: u32) -> String {
    format!("/local/domain/{server}/data/vchan/{client}/{port}")
}

/// The key under `path` holding the control page's grant reference.
pub(crate) fn ring_ref_key(path: &str) -> String {
    format!("{path}/ring-ref")
}

/// The key under `path` holding the server's event-channel port.
pub(crate) fn event_channel_key(path: &str) -> String {
    format!("{path}/event-channel")
}

/// Checks that `path` can serve as a vchan base path: both keys below it must be valid
/// XenStore paths within xenstored's length limits (no fixed-size buffer truncates them,
/// unlike C's 64-byte one).
pub fn check_path(path: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("the path is empty".into()));
    }
    if path.starts_with('@') {
        return Err(bad(
            "special paths (starting with @) cannot hold keys".into()
        ));
    }
    for key in [ring_ref_key(path), event_channel_key(path)] {
        if let Err(problem) = wire::check_path(&key, false) {
            return Err(bad(format!("the key {key:?} would be invalid: {problem}")));
        }
    }
    Ok(())
}

/// Settings both ends share: where Xen services come from, and how operations wait.
#[derive(Clone, Debug, Default)]
pub(crate) struct Common {
    pub(crate) backend: Option<Backend>,
    pub(crate) xenstore: Option<xenstore::Client>,
    pub(crate) mode: Mode,
    pub(crate) spin: SpinPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) watch_peer_domain: Option<bool>,
}

impl Common {
    /// The backend: the one given, or [`Backend::detect`].
    pub(crate) fn backend(&self) -> Result<Backend> {
        match &self.backend {
            Some(b) => Ok(b.clone()),
            None => Ok(Backend::detect()?),
        }
    }

    /// The XenStore client: the one given, or a connection matching the backend.
    pub(crate) fn xenstore(&self, backend: &Backend) -> Result<xenstore::Client> {
        if let Some(c) = &self.xenstore {
            return Ok(c.clone());
        }
        Ok(match backend {
            Backend::Sim { dir, domid } => xenstore::Client::connect_sim(dir, *domid)?,
            _ => xenstore::Client::connect()?,
        })
    }
}

macro_rules! common_setters {
    () => {
        /// Uses this backend instead of [`Backend::detect`](vchan_xenif::Backend::detect).
        pub fn backend(mut self, backend: vchan_xenif::Backend) -> Self {
            self.common.backend = Some(backend);
            self
        }

        /// Uses this XenStore connection instead of opening one that matches the backend.
        pub fn xenstore(mut self, client: vchan_xenif::xenstore::Client) -> Self {
            self.common.xenstore = Some(client);
            self
        }

        /// Blocking (the default) or non-blocking operations.
        pub fn mode(mut self, mode: $crate::Mode) -> Self {
            self.common.mode = mode;
            self
        }

        /// How long blocking operations spin before sleeping (default: adaptive, ≤ 50 µs).
        pub fn spin(mut self, spin: $crate::SpinPolicy) -> Self {
            self.common.spin = spin;
            self
        }

        /// A limit on every blocking operation (default: none); see [`Vchan::set_timeout`](crate::Vchan::set_timeout).
        pub fn timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.common.timeout = timeout;
            self
        }

        /// Watch XenStore's `@releaseDomain` so that the peer *domain*'s destruction ends
        /// blocked calls even when no unmap notification can come (a destroyed VM's kernel
        /// never runs its unmap handlers). It costs one of the domain's XenStore watches per
        /// channel, and is never set up when the peer is dom0 (never destroyed).
        ///
        /// * `true`: the watch is required; if it cannot be registered (an unprivileged domain
        ///   not allowed to watch `@releaseDomain`, the watch quota used up), opening the
        ///   channel fails with [`Error::Handshake`](crate::Error::Handshake).
        /// * `false`: no watch.
        /// * not called (the default): the watch where it can be registered; where it cannot,
        ///   the channel opens without it and prints one warning on stderr saying so
        ///   ([`Vchan::watches_peer_domain`](crate::Vchan::watches_peer_domain) tells).
        pub fn watch_peer_domain(mut self, watch: bool) -> Self {
            self.common.watch_peer_domain = Some(watch);
            self
        }
    };
}
pub(crate) use common_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        check_path("/local/domain/0/data/vchan/1/5").unwrap();
        check_path("data/vchan/1/5").unwrap();
        for bad in ["", "/", "/a//b", "/a/b/", "@releaseDomain", "/a b", "/a.b"] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        // Long paths: fine up to xenstored's limit for the longest key, refused beyond.
        let suffix = "/event-channel".len();
        let ok = format!("/{}", "a".repeat(3072 - suffix - 1));
        check_path(&ok).unwrap();
        let too_long = format!("/{}", "a".repeat(3072 - suffix));
        let err = check_path(&too_long).unwrap_err().to_string();
        assert!(err.contains("event-channel"), "{err}");
        let rel = "a".repeat(2048 - suffix + 1);
        assert!(check_path(&rel).is_err());
    }
}
