//! Choosing between real Xen and the simulated host.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::evtchn::EventChannels;
use crate::grant::{GrantMapper, GrantSharer};
use crate::sim;
use crate::types::DomId;
use crate::xen;

/// Where grants and event channels come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Real Xen, through Linux's `/dev/xen/*` devices.
    Xen,
    /// A simulated Xen host rooted at `dir`, this process acting as domain `domid`.
    Sim {
        /// The host's directory (`VCHAN_SIM_DIR`).
        dir: PathBuf,
        /// The domain this process acts as (`VCHAN_SIM_DOMID`).
        domid: DomId,
    },
}

impl Backend {
    /// Picks the backend from the environment:
    ///
    /// 1. `VCHAN_SIM_DIR` set: the simulated host there, as domain `VCHAN_SIM_DOMID`
    ///    (required, decimal);
    /// 2. else `/dev/xen/evtchn` exists: real Xen;
    /// 3. else an error that says both were tried and how to get either.
    pub fn detect() -> Result<Backend> {
        if let Some(dir) = std::env::var_os(sim::ENV_DIR) {
            let domid = match std::env::var(sim::ENV_DOMID) {
                Ok(s) => s
                    .parse::<DomId>()
                    .map_err(|e| Error::InvalidArgument(format!("{}: {e}", sim::ENV_DOMID)))?,
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "{} is set but {} is not: set it to the domain this process acts as \
                         (`vchan sim env <domid>` prints both)",
                        sim::ENV_DIR,
                        sim::ENV_DOMID
                    )));
                }
            };
            return Ok(Backend::Sim {
                dir: PathBuf::from(dir),
                domid,
            });
        }
        if std::path::Path::new(xen::EVTCHN_DEVICE).exists() {
            return Ok(Backend::Xen);
        }
        Err(Error::NoBackend {
            tried: format!(
                "{} is not set and {} does not exist",
                sim::ENV_DIR,
                xen::EVTCHN_DEVICE
            ),
        })
    }

    /// Opens a handle that shares pages with peers.
    pub fn grant_sharer(&self) -> Result<Box<dyn GrantSharer>> {
        match self {
            Backend::Xen => xen::grant_sharer(),
            Backend::Sim { dir, domid } => sim::grant_sharer(dir, *domid),
        }
    }

    /// Opens a handle that maps peers' pages.
    pub fn grant_mapper(&self) -> Result<Box<dyn GrantMapper>> {
        match self {
            Backend::Xen => xen::grant_mapper(),
            Backend::Sim { dir, domid } => sim::grant_mapper(dir, *domid),
        }
    }

    /// Opens an event-channel handle.
    pub fn event_channels(&self) -> Result<Box<dyn EventChannels>> {
        match self {
            Backend::Xen => xen::event_channels(),
            Backend::Sim { dir, domid } => sim::event_channels(dir, *domid),
        }
    }
}
