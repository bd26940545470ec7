//! One domain's grant table: which references are in use and which share each belongs to.
//!
//! Each share gets a run of consecutive references. References are handed out in increasing
//! order and wrap around only at the end of the 32-bit space, so a reference that was just
//! revoked is not given to the next share (a stale reference a peer still holds then fails
//! to map instead of silently mapping somebody else's pages).

use std::collections::BTreeMap;

/// First reference handed out: Xen reserves 0..8 (`GNTTAB_NR_RESERVED_ENTRIES`) for the
/// console and XenStore rings.
pub(crate) const FIRST_REF: u32 = 8;

/// Identifier of a share in the broker.
pub(crate) type ShareId = u64;

#[derive(Debug, Clone, Copy)]
struct Run {
    count: u32,
    share: ShareId,
}

/// References in use by one granting domain.
#[derive(Debug)]
pub(crate) struct GrantTable {
    runs: BTreeMap<u32, Run>,
    in_use: usize,
    next: u32,
}

impl Default for GrantTable {
    fn default() -> Self {
        GrantTable {
            runs: BTreeMap::new(),
            in_use: 0,
            next: FIRST_REF,
        }
    }
}

impl GrantTable {
    /// Pages currently granted.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Reserves `count` consecutive references for `share`; returns the first, or `None` when
    /// no run of that length is free.
    pub(crate) fn allocate(&mut self, count: u32, share: ShareId) -> Option<u32> {
        if count == 0 {
            return None;
        }
        let mut candidate = self.next;
        let mut wrapped = false;
        // Each failed attempt skips past one existing run; two passes over all runs suffice.
        for _ in 0..=(2 * self.runs.len() + 2) {
            let end = match candidate.checked_add(count) {
                Some(end) => end,
                None => {
                    if wrapped {
                        return None;
                    }
                    wrapped = true;
                    candidate = FIRST_REF;
                    continue;
                }
            };
            // The last run starting before `end` is the only one that can overlap.
            match self.runs.range(..end).next_back() {
                Some((&first, run))
                    if u64::from(first) + u64::from(run.count) > candidate.into() =>
                {
                    // `first + count` fits: it was checked when the run was allocated.
                    candidate = first + run.count;
                }
                _ => {
                    self.runs.insert(candidate, Run { count, share });
                    self.in_use += count as usize;
                    self.next = end;
                    return Some(candidate);
                }
            }
        }
        None
    }

    /// Frees the run starting at `first` (returns its length).
    pub(crate) fn release(&mut self, first: u32) -> Option<u32> {
        let run = self.runs.remove(&first)?;
        self.in_use -= run.count as usize;
        Some(run.count)
    }

    /// The share holding reference `gref`, and the page's index within that share.
    pub(crate) fn lookup(&self, gref: u32) -> Option<(ShareId, u32)> {
        let (&first, run) = self.runs.range(..=gref).next_back()?;
        let index = gref - first;
        (index < run.count).then_some((run.share, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_consecutive_and_looked_up() {
        let mut t = GrantTable::default();
        assert_eq!(t.allocate(1, 100), Some(8));
        assert_eq!(t.allocate(256, 101), Some(9));
        assert_eq!(t.in_use(), 257);
        assert_eq!(t.lookup(8), Some((100, 0)));
        assert_eq!(t.lookup(9), Some((101, 0)));
        assert_eq!(t.lookup(264), Some((101, 255)));
        assert_eq!(t.lookup(265), None);
        assert_eq!(t.lookup(0), None);
        assert_eq!(t.allocate(0, 1), None);
    }

    #[test]
    fn released_references_are_not_reused_at_once() {
        let mut t = GrantTable::default();
        let a = t.allocate(4, 1).unwrap();
        assert_eq!(t.release(a), Some(4));
        assert_eq!(t.release(a), None);
        assert_eq!(t.in_use(), 0);
        let b = t.allocate(4, 2).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.lookup(a), None);
    }

    #[test]
    fn allocation_wraps_around_and_skips_runs_in_use() {
        let mut t = GrantTable::default();
        let low = t.allocate(10, 1).unwrap();
        t.next = u32::MAX - 5;
        // Does not fit before the end of the space: wraps, skips the run at 8..18.
        let wrapped = t.allocate(10, 2).unwrap();
        assert_eq!(wrapped, low + 10);
        assert_eq!(t.lookup(wrapped + 9), Some((2, 9)));
        // The top of the space is still usable for a run that fits.
        t.next = u32::MAX - 5;
        assert_eq!(t.allocate(5, 3), Some(u32::MAX - 5));
        assert_eq!(t.lookup(u32::MAX - 1), Some((3, 4)));
    }

    #[test]
    fn full_space_is_reported() {
        let mut t = GrantTable::default();
        assert_eq!(t.allocate(u32::MAX - FIRST_REF, 1), Some(FIRST_REF));
        assert_eq!(t.allocate(1, 2), None);
    }
}
