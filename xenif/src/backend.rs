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
    /// 1. `VCHAN_SIM_DIR` set and not empty: the simulated host there, as domain
    ///    `VCHAN_SIM_DOMID` (required, decimal);
    /// 2. else `/dev/xen/evtchn` exists: real Xen (an empty `VCHAN_SIM_DIR` counts as unset,
    ///    so `VCHAN_SIM_DIR= cmd` runs `cmd` on Xen from a shell that joined a sim);
    /// 3. else an error that says both were tried and how to get either.
    pub fn detect() -> Result<Backend> {
        Self::detect_from(
            |name| std::env::var_os(name),
            std::path::Path::new(xen::EVTCHN_DEVICE).exists(),
        )
    }

    /// [`detect`](Backend::detect) over a given environment and device check.
    fn detect_from(
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
        evtchn_exists: bool,
    ) -> Result<Backend> {
        if let Some(dir) = env(sim::ENV_DIR).filter(|d| !d.is_empty()) {
            let domid = match env(sim::ENV_DOMID) {
                Some(s) => s
                    .to_str()
                    .ok_or_else(|| format!("{:?} is not a number", s))
                    .and_then(|s| s.parse::<DomId>().map_err(|e| e.to_string()))
                    .map_err(|e| {
                        Error::InvalidArgument(format!(
                            "{}: {e} (set it to the domain this process acts as: \
                             `vchan sim env <domid>` prints it)",
                            sim::ENV_DOMID
                        ))
                    })?,
                None => {
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
        if evtchn_exists {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;

    fn detect(vars: &[(&str, &str)], evtchn: bool) -> Result<Backend> {
        let env: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Backend::detect_from(|name| env.get(name).cloned(), evtchn)
    }

    #[test]
    fn the_sim_when_configured_wins_over_xen() {
        let b = detect(&[(sim::ENV_DIR, "/run/h"), (sim::ENV_DOMID, "7")], true).unwrap();
        assert_eq!(
            b,
            Backend::Sim {
                dir: PathBuf::from("/run/h"),
                domid: DomId(7)
            }
        );
    }

    #[test]
    fn xen_when_its_device_exists_and_no_sim_is_configured() {
        assert_eq!(detect(&[], true).unwrap(), Backend::Xen);
        // An empty directory counts as unset (the domid is then irrelevant).
        assert_eq!(
            detect(&[(sim::ENV_DIR, ""), (sim::ENV_DOMID, "x")], true).unwrap(),
            Backend::Xen
        );
    }

    #[test]
    fn neither_is_an_error_naming_both_and_how_to_get_them() {
        let e = detect(&[(sim::ENV_DIR, "")], false).unwrap_err();
        assert!(matches!(e, Error::NoBackend { .. }), "{e:?}");
        let msg = e.to_string();
        for needle in [sim::ENV_DIR, xen::EVTCHN_DEVICE, "vchan sim", "xen_evtchn"] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
    }

    #[test]
    fn a_sim_without_a_valid_domid_is_an_error_saying_what_to_set() {
        for (vars, needle) in [
            (&[(sim::ENV_DIR, "/run/h")][..], "is not:"),
            (
                &[(sim::ENV_DIR, "/run/h"), (sim::ENV_DOMID, "dom1")][..],
                "vchan sim env",
            ),
            (
                &[(sim::ENV_DIR, "/run/h"), (sim::ENV_DOMID, "70000")][..],
                "vchan sim env",
            ),
        ] {
            let e = detect(vars, true).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(sim::ENV_DOMID) && msg.contains(needle),
                "{msg}"
            );
        }
    }
}
