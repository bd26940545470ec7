//! The simulated Xen host: each OS process acts as one domain of a host rooted at a directory.
//!
//! Directory layout (every component of the project relies on these names):
//!
//! ```text
//! <dir>/host.lock               flock held by the running host; a second host is refused
//! <dir>/dom<N>/xenstored.sock   XenStore wire protocol; a connection here acts as domain N
//! <dir>/dom<N>/host.sock        grants and event channels for domain N (our own protocol)
//! ```
//!
//! A process joins as domain N with `VCHAN_SIM_DIR=<dir>` and `VCHAN_SIM_DOMID=N`
//! (and `XENSTORED_PATH=<dir>/dom<N>/xenstored.sock` for C programs).

use std::path::{Path, PathBuf};

pub mod broker;
pub mod client;
pub mod host;
pub mod xenstored;

use crate::error::Result;
use crate::evtchn::EventChannels;
use crate::grant::{GrantMapper, GrantSharer};
use crate::types::DomId;

/// Environment variable naming the simulated host's directory.
pub const ENV_DIR: &str = "VCHAN_SIM_DIR";
/// Environment variable naming the domain this process acts as.
pub const ENV_DOMID: &str = "VCHAN_SIM_DOMID";

/// The lock file a running host holds.
pub fn lock_file(dir: &Path) -> PathBuf {
    dir.join("host.lock")
}

/// The directory of domain `domid`'s sockets.
pub fn domain_dir(dir: &Path, domid: DomId) -> PathBuf {
    dir.join(format!("dom{}", domid.0))
}

/// The XenStore socket through which a process acts as `domid`.
pub fn xenstore_socket(dir: &Path, domid: DomId) -> PathBuf {
    domain_dir(dir, domid).join("xenstored.sock")
}

/// The grant/event-channel socket through which a process acts as `domid`.
pub fn host_socket(dir: &Path, domid: DomId) -> PathBuf {
    domain_dir(dir, domid).join("host.sock")
}

pub(crate) fn grant_sharer(dir: &Path, domid: DomId) -> Result<Box<dyn GrantSharer>> {
    Ok(Box::new(client::SimGrantSharer::connect(dir, domid)?))
}

pub(crate) fn grant_mapper(dir: &Path, domid: DomId) -> Result<Box<dyn GrantMapper>> {
    Ok(Box::new(client::SimGrantMapper::connect(dir, domid)?))
}

pub(crate) fn event_channels(dir: &Path, domid: DomId) -> Result<Box<dyn EventChannels>> {
    Ok(Box::new(client::SimEventChannels::connect(dir, domid)?))
}
