//! XenStore: the wire codec, a client, and (in [`crate::sim`]) the simulated xenstored.
//!
//! Filled by the XenStore issue.
