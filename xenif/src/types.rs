//! Small identifier types shared by every backend.

use core::fmt;
use core::str::FromStr;

/// Size of a Xen page (x86), the unit of grants.
pub const PAGE_SIZE: usize = 4096;

/// A Xen domain id (`domid_t`).
///
/// Valid domain ids are below `DOMID_FIRST_RESERVED` (0x7FF0); parsing rejects the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomId(pub u16);

impl DomId {
    /// The control domain.
    pub const DOM0: DomId = DomId(0);
    /// First id Xen reserves for special meanings (`DOMID_FIRST_RESERVED`); real domains are below.
    pub const FIRST_RESERVED: u16 = 0x7FF0;

    /// Whether this id can name a real domain.
    pub fn is_valid(self) -> bool {
        self.0 < Self::FIRST_RESERVED
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Error returned when a string is not a valid domain id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid domain id {input:?}: expected a decimal number below {}",
    DomId::FIRST_RESERVED
)]
pub struct ParseDomIdError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for DomId {
    type Err = ParseDomIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDomIdError {
            input: s.to_owned(),
        };
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let v: u16 = t.parse().map_err(|_| err())?;
        let id = DomId(v);
        if id.is_valid() { Ok(id) } else { Err(err()) }
    }
}

/// A grant reference: the number a granting domain gives a peer so it can map one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantRef(pub u32);

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A local event-channel port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventPort(pub u32);

impl fmt::Display for EventPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domid_parsing() {
        assert_eq!("0".parse::<DomId>(), Ok(DomId(0)));
        assert_eq!(" 17\n".parse::<DomId>(), Ok(DomId(17)));
        assert_eq!("32751".parse::<DomId>(), Ok(DomId(0x7FEF)));
        for bad in [
            "", "-1", "+3", "0x10", "32752", "65535", "65536", "1 2", "abc",
        ] {
            assert!(bad.parse::<DomId>().is_err(), "{bad:?} accepted");
        }
    }
}
