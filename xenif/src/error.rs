//! The error type of the grant, event-channel and backend-selection APIs.
//!
//! Every variant carries what a user needs to act: the device or path, the domain, the limit
//! that was hit, the errno. XenStore has its own error type in [`crate::xenstore`].

use std::io;
use std::path::PathBuf;

use crate::types::{DomId, EventPort, GrantRef};

/// Result alias for this crate's grant/event-channel APIs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from grants, event channels and backend selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Xen device node is missing: the kernel module that provides it is not loaded.
    #[error(
        "{device} does not exist: load the kernel module with `modprobe {module}`{extra}",
        extra = if *.module == "xenfs" { " and mount it: `mount -t xenfs xenfs /proc/xen`" } else { "" }
    )]
    MissingDevice {
        /// The device path that was opened.
        device: PathBuf,
        /// The kernel module that provides it (`xen_gntalloc`, `xen_gntdev`, `xen_evtchn`, `xenfs`).
        module: &'static str,
    },

    /// The grant-allocation limit was reached (gntalloc `ENOSPC`, or the simulated host's limit).
    #[error("cannot share {requested} more page(s): the grant limit is exhausted ({hint})")]
    GrantLimit {
        /// Pages asked for.
        requested: usize,
        /// What to do about it, e.g. raising `/sys/module/xen_gntalloc/parameters/limit`.
        hint: String,
    },

    /// The peer domain has not granted this domain access to that reference (or it does not exist).
    #[error("domain {granter} has not granted grant reference {gref} to this domain ({reason})")]
    GrantDenied {
        /// The domain that should have granted the page.
        granter: DomId,
        /// The reference that was refused.
        gref: GrantRef,
        /// Why (not granted to us, revoked, read-only, unknown reference…).
        reason: String,
    },

    /// An event-channel port is not bound in this handle or on the remote side.
    #[error("event channel port {port}: {reason}")]
    Port {
        /// The port concerned.
        port: EventPort,
        /// What is wrong with it.
        reason: String,
    },

    /// A system call on a Xen device or simulated-host object failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done, e.g. `"ioctl GNTDEV_MAP_GRANT_REF on /dev/xen/gntdev"`.
        op: String,
        /// The underlying error (errno).
        #[source]
        source: io::Error,
    },

    /// The simulated Xen host refused or could not perform a request.
    #[error("simulated Xen host at {dir}: {reason}")]
    Sim {
        /// The host's directory.
        dir: PathBuf,
        /// What went wrong and what to do about it.
        reason: String,
    },

    /// Neither real Xen nor a simulated host is available.
    #[error(
        "no Xen backend: {tried}. On Xen, load xen_evtchn/xen_gntdev/xen_gntalloc; without Xen, \
         start a simulated host with `vchan sim` and set VCHAN_SIM_DIR and VCHAN_SIM_DOMID \
         (`vchan sim env <domid>` prints them)"
    )]
    NoBackend {
        /// What was looked at.
        tried: String,
    },

    /// An argument was out of range (zero pages, too many pages, an invalid domid…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Wraps an OS error with a description of the operation.
    pub fn os(op: impl Into<String>, source: io::Error) -> Self {
        Error::Os {
            op: op.into(),
            source,
        }
    }

    /// The errno behind this error, when there is one (used by the C ABI layer).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            Error::MissingDevice { .. } => Some(libc::ENOENT),
            Error::GrantLimit { .. } => Some(libc::ENOSPC),
            Error::GrantDenied { .. } => Some(libc::EPERM),
            Error::Port { .. } => Some(libc::EINVAL),
            Error::InvalidArgument(_) => Some(libc::EINVAL),
            Error::Sim { .. } | Error::NoBackend { .. } => None,
        }
    }
}
