//! The XenStore client's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::wire::{ErrorCode, MsgType, PathProblem, WireError};

/// Result alias of the XenStore client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the XenStore client.
///
/// Every variant says which operation failed and, when there is one, on which path, so that a
/// message like `XS_READ /local/domain/5/data/x: ENOENT (no such node)` is enough to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// xenstored answered the request with an error.
    #[error("{op} {path}: {code} ({}){}", code.description(), hint(*code))]
    Xenstored {
        /// The request that failed.
        op: MsgType,
        /// The path (or argument) it was about; empty when none.
        path: String,
        /// The error xenstored answered.
        code: ErrorCode,
    },

    /// No way of reaching xenstored worked.
    #[error("cannot connect to xenstored; tried: {}. {}", list_tried(.tried), CONNECT_HINT)]
    Connect {
        /// Each place tried and why it failed.
        tried: Vec<(PathBuf, io::Error)>,
    },

    /// A path was refused before sending it.
    #[error("invalid XenStore path {path:?}: {problem}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },

    /// A value or argument was refused before sending it.
    #[error("{op} {path}: {reason}")]
    InvalidArgument {
        /// The request it was for.
        op: MsgType,
        /// The path concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// No reply arrived in time.
    #[error(
        "{op} {path}: no reply from xenstored within {timeout:?} (is the daemon alive? \
         raise the limit with Client::set_timeout)"
    )]
    Timeout {
        /// The request that timed out.
        op: MsgType,
        /// Its path.
        path: String,
        /// The limit that was hit.
        timeout: Duration,
    },

    /// The connection to xenstored is gone (daemon stopped, or our domain was released).
    #[error("{op} {path}: the connection to xenstored is closed ({reason})")]
    Closed {
        /// The request that could not complete.
        op: MsgType,
        /// Its path.
        path: String,
        /// Why the connection ended, as far as known.
        reason: String,
    },

    /// xenstored sent something that violates the protocol.
    #[error("{op} {path}: protocol violation by xenstored: {reason}")]
    Protocol {
        /// The request being answered.
        op: MsgType,
        /// Its path.
        path: String,
        /// What was wrong.
        reason: String,
    },

    /// Reading or writing the connection failed.
    #[error("XenStore connection: {0}")]
    Wire(#[from] WireError),

    /// Own domain id could not be discovered.
    #[error(
        "cannot find out which domain this is; tried: {}. On a domU check that the toolstack \
         wrote /local/domain/<id>/domid; in dom0 check /proc/xen/capabilities (needs xenfs mounted); \
         on the simulated host set VCHAN_SIM_DIR and VCHAN_SIM_DOMID",
        .tried.join("; ")
    )]
    UnknownDomId {
        /// Each method tried and its outcome.
        tried: Vec<String>,
    },

    /// A watch's event queue overflowed because events were not consumed; some were dropped.
    #[error(
        "watch {path} (token {token}): {lost} event(s) dropped because the queue was full; \
         re-read the watched nodes"
    )]
    EventsLost {
        /// The watched path.
        path: String,
        /// The token.
        token: String,
        /// How many events were dropped.
        lost: u64,
    },

    /// A transaction still conflicted after the retry limit.
    #[error("transaction still conflicting (EAGAIN) after {attempts} attempts")]
    TooManyRetries {
        /// Attempts made.
        attempts: u32,
    },
}

const CONNECT_HINT: &str = "Set XENSTORED_PATH to a xenstored socket (on the simulated host: \
    `eval $(vchan sim env <domid>)`), run xenstored in dom0, or load xen-evtchn/xenfs in a domU";

fn list_tried(tried: &[(PathBuf, io::Error)]) -> String {
    tried
        .iter()
        .map(|(p, e)| format!("{} ({e})", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::EACCES => {
            ": this domain lacks permission; the owner (or dom0) must grant it with set_perms"
        }
        ErrorCode::E2BIG => ": too many watches for this domain, or the reply does not fit",
        ErrorCode::ENOSPC => ": a quota was hit (nodes, transactions, permissions or value size)",
        _ => "",
    }
}

impl Error {
    /// The XenStore error code when xenstored answered one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Xenstored { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether xenstored answered `ENOENT` (no such node).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::ENOENT)
    }

    /// Whether xenstored answered `EAGAIN` (transaction conflict: retry).
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(ErrorCode::EAGAIN)
    }

    /// Whether xenstored answered `EACCES` (permission denied).
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(ErrorCode::EACCES)
    }

    /// The closest errno value, for C-style callers.
    pub fn raw_os_error(&self) -> i32 {
        match self {
            Error::Xenstored { code, .. } => code.errno(),
            Error::Connect { .. } => libc::ENOENT,
            Error::InvalidPath { .. } | Error::InvalidArgument { .. } => libc::EINVAL,
            Error::Timeout { .. } => libc::ETIMEDOUT,
            Error::Closed { .. } => libc::EPIPE,
            Error::Protocol { .. } | Error::Wire(_) => libc::EIO,
            Error::UnknownDomId { .. } => libc::ENOENT,
            Error::EventsLost { .. } => libc::EOVERFLOW,
            Error::TooManyRetries { .. } => libc::EAGAIN,
        }
    }
}
