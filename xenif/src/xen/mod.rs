//! Real Xen through Linux's `/dev/xen/{gntalloc,gntdev,evtchn}` devices.
//!
//! Filled by the grants/event-channels issue.

use crate::error::{Error, Result};
use crate::evtchn::EventChannels;
use crate::grant::{GrantMapper, GrantSharer};

/// The Linux event-channel device; its presence means "running on Xen".
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

fn not_yet() -> Error {
    Error::InvalidArgument("the real-Xen backend is not built yet".into())
}

pub(crate) fn grant_sharer() -> Result<Box<dyn GrantSharer>> {
    Err(not_yet())
}

pub(crate) fn grant_mapper() -> Result<Box<dyn GrantMapper>> {
    Err(not_yet())
}

pub(crate) fn event_channels() -> Result<Box<dyn EventChannels>> {
    Err(not_yet())
}
