//! `vchan-xenif`: the Xen services a vchan needs — grant tables, event channels and
//! XenStore — behind one interface, with two backends:
//!
//! * [`xen`]: real Xen through Linux's `/dev/xen/{gntalloc,gntdev,evtchn}` and xenstored;
//! * [`sim`]: a simulated Xen host on plain Linux, where each OS process acts as one domain,
//!   so that everything built on top runs and is tested without a hypervisor.
//!
//! Pick a backend with [`Backend::detect`] (environment) or construct one explicitly, then open
//! the services you need from it: [`Backend::grant_sharer`], [`Backend::grant_mapper`],
//! [`Backend::event_channels`].
//!
//! This crate knows nothing of the vchan ring layout (that is `vchan-ring`): it moves pages and
//! events, and never interprets what is inside them.
#![deny(missing_docs)]

mod backend;
mod error;
mod evtchn;
mod grant;
mod types;

pub mod sim;
pub mod xen;
pub mod xenstore;

pub use backend::Backend;
pub use error::{Error, Result};
pub use evtchn::EventChannels;
pub use grant::{
    Access, GrantMapper, GrantSharer, MappedPages, RegionBackend, SharedPages, UnmapNotify,
};
pub use types::{DomId, EventPort, GrantRef, PAGE_SIZE, ParseDomIdError};
