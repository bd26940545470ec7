//! Ring geometry: where each ring lives, how many grants it takes, which sizes the server
//! chooses, and validation of orders written by a peer.
//!
//! The rules (DESIGN §3, and what libxenvchan's `init.c` does):
//!
//! * order 10: the ring is inside the control page at offset 1024; order 11: at offset 2048;
//!   orders 12..=20: the ring is 2^(order-12) separately granted pages;
//! * both rings may not be in-page at the same offset (two 10s or two 11s);
//! * the grant list (left ring's refs, then right ring's) starts at byte 24 and must end
//!   before the first in-page ring and inside the page. The C client does not check this;
//!   we do, so a hostile server cannot make us read grant refs out of ring data.
//!
//! A [`Geometry`] value is always valid: every constructor checks these rules.

use core::fmt;
use core::ops::Range;

use crate::layout::{
    GRANT_REF_SIZE, GRANTS_OFFSET, LARGE_RING_OFFSET, PAGE_SIZE, SMALL_RING_OFFSET,
};

/// One of the two rings of a vchan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The ring the client writes and the server reads (`left` in C).
    Left,
    /// The ring the server writes and the client reads (`right` in C).
    Right,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Left => "left (client-to-server)",
            Side::Right => "right (server-to-client)",
        })
    }
}

/// Which end of a vchan we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Allocates and shares the pages, chooses the sizes, publishes them in XenStore.
    Server,
    /// Maps the server's pages.
    Client,
}

impl Role {
    /// The other end.
    pub const fn peer(self) -> Role {
        match self {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        }
    }

    /// The ring this end produces into.
    pub const fn write_side(self) -> Side {
        match self {
            Role::Server => Side::Right,
            Role::Client => Side::Left,
        }
    }

    /// The ring this end consumes from.
    pub const fn read_side(self) -> Side {
        match self {
            Role::Server => Side::Left,
            Role::Client => Side::Right,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// Where a ring's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingPlacement {
    /// Inside the control page, starting at `offset` (1024 or 2048).
    InPage {
        /// Byte offset of the ring inside the control page.
        offset: usize,
    },
    /// In `pages` separately granted pages, mapped contiguously.
    Granted {
        /// Number of 4 KiB pages (and grant references).
        pages: usize,
    },
}

/// A valid ring order: log2 of the ring size, 10..=20 (1 KiB to 1 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingOrder(u8);

impl RingOrder {
    /// Smallest order (1 KiB, in-page at offset 1024).
    pub const MIN: u8 = 10;
    /// Largest order (1 MiB, 256 granted pages).
    pub const MAX: u8 = 20;
    /// First order whose ring lives in granted pages.
    pub const FIRST_GRANTED: u8 = 12;
    /// Order 10: 1 KiB, in the control page at offset 1024.
    pub const SMALL: RingOrder = RingOrder(10);
    /// Order 11: 2 KiB, in the control page at offset 2048.
    pub const LARGE: RingOrder = RingOrder(11);
    /// Largest ring size in bytes (1 MiB).
    pub const MAX_SIZE: usize = 1 << Self::MAX;

    /// Validates a raw order (as stored in the shared page's u16 fields).
    pub const fn new(order: u16) -> Option<RingOrder> {
        if order >= Self::MIN as u16 && order <= Self::MAX as u16 {
            Some(RingOrder(order as u8))
        } else {
            None
        }
    }

    /// The smallest granted-page order whose ring holds `min_size` bytes (libxenvchan's
    /// `min_order`: never below 12), or `None` above 1 MiB.
    pub const fn granted_for(min_size: usize) -> Option<RingOrder> {
        let mut order = Self::FIRST_GRANTED;
        while order <= Self::MAX {
            if min_size <= 1 << order {
                return Some(RingOrder(order));
            }
            order += 1;
        }
        None
    }

    /// The order as a number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The ring size in bytes, `2^order`.
    pub const fn size(self) -> usize {
        1 << self.0
    }

    /// Where a ring of this order lives.
    pub const fn placement(self) -> RingPlacement {
        match self.0 {
            10 => RingPlacement::InPage {
                offset: SMALL_RING_OFFSET,
            },
            11 => RingPlacement::InPage {
                offset: LARGE_RING_OFFSET,
            },
            _ => RingPlacement::Granted {
                pages: 1 << (self.0 - Self::FIRST_GRANTED),
            },
        }
    }

    /// Number of grant references (pages) this ring needs in `grants[]`: 0 when in-page.
    pub const fn grant_count(self) -> usize {
        match self.placement() {
            RingPlacement::InPage { .. } => 0,
            RingPlacement::Granted { pages } => pages,
        }
    }
}

impl fmt::Display for RingOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a geometry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// A ring order outside 10..=20 (as read from a peer's page).
    #[error(
        "{side} ring order {order} is outside {min}..={max} (1 KiB to 1 MiB): the control page \
         was not written by a vchan server or is corrupt; refusing to map it",
        min = RingOrder::MIN,
        max = RingOrder::MAX
    )]
    OrderOutOfRange {
        /// Which ring.
        side: Side,
        /// The order found.
        order: u16,
    },
    /// Both rings claim the same in-page slot.
    #[error(
        "both rings have order {order}: only one ring fits in the control page at offset \
         {offset}; the control page is corrupt"
    )]
    InPageCollision {
        /// The shared order (10 or 11).
        order: u8,
        /// The in-page offset both would use.
        offset: usize,
    },
    /// The grant list would run into an in-page ring or off the page.
    #[error(
        "the grant list ({grants} refs, bytes {GRANTS_OFFSET}..{end}) runs past byte {limit} \
         (an in-page ring or the end of the page); the control page is corrupt"
    )]
    GrantListOverlap {
        /// Number of grant references the orders imply.
        grants: usize,
        /// End offset of the grant list.
        end: usize,
        /// First byte the list may not reach.
        limit: usize,
    },
    /// A grant list of the wrong length was given for a ring.
    #[error(
        "the {side} ring needs {expected} grant references (its order), but {given} were given"
    )]
    GrantCountMismatch {
        /// Which ring.
        side: Side,
        /// References the geometry implies.
        expected: usize,
        /// References given.
        given: usize,
    },
    /// The server was asked for a ring larger than 1 MiB.
    #[error(
        "a {side} ring of at least {requested} bytes was requested; the maximum is {max} bytes \
         (1 MiB, order 20): ask for less",
        max = RingOrder::MAX_SIZE
    )]
    TooLarge {
        /// Which ring.
        side: Side,
        /// The requested minimum size.
        requested: usize,
    },
}

/// The validated sizes and placement of both rings of one vchan.
///
/// Each end keeps its own `Geometry` (the server from [`Geometry::server_choice`], the client
/// from [`ControlPage::read_geometry`](crate::ControlPage::read_geometry), which reads the
/// peer's orders once) and never consults the shared orders again.
///
/// ```
/// use vchan_ring::{Geometry, RingPlacement, Side};
///
/// // The C library's default: 1 KiB read ring and 2 KiB write ring inside the control page.
/// let g = Geometry::server_choice(0, 0)?;
/// assert_eq!(g.placement(Side::Left), RingPlacement::InPage { offset: 1024 });
/// assert_eq!(g.ring_size(Side::Right), 2048);
/// assert_eq!(g.total_grants(), 0);
///
/// // 64 KiB each way: 16 granted pages per ring.
/// let g = Geometry::server_choice(65536, 65536)?;
/// assert_eq!(g.grant_indices(Side::Right), 16..32);
/// # Ok::<(), vchan_ring::GeometryError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    left: RingOrder,
    right: RingOrder,
}

impl Geometry {
    /// Checks that two orders can coexist in one control page.
    pub const fn new(left: RingOrder, right: RingOrder) -> Result<Geometry, GeometryError> {
        if left.0 == right.0 && left.0 < RingOrder::FIRST_GRANTED {
            let offset = match left.placement() {
                RingPlacement::InPage { offset } => offset,
                RingPlacement::Granted { .. } => 0,
            };
            return Err(GeometryError::InPageCollision {
                order: left.0,
                offset,
            });
        }
        let g = Geometry { left, right };
        let end = g.grants_end();
        let limit = g.grant_limit();
        if end > limit {
            return Err(GeometryError::GrantListOverlap {
                grants: g.total_grants(),
                end,
                limit,
            });
        }
        Ok(g)
    }

    /// Validates raw orders as found in a peer-written control page (`left_order`,
    /// `right_order`). The caller must have read each value exactly once.
    pub const fn from_raw_orders(left: u16, right: u16) -> Result<Geometry, GeometryError> {
        let Some(l) = RingOrder::new(left) else {
            return Err(GeometryError::OrderOutOfRange {
                side: Side::Left,
                order: left,
            });
        };
        let Some(r) = RingOrder::new(right) else {
            return Err(GeometryError::OrderOutOfRange {
                side: Side::Right,
                order: right,
            });
        };
        Geometry::new(l, r)
    }

    /// The sizes a server chooses for minimum ring sizes `read_min` (the left ring, which the
    /// server reads) and `write_min` (the right ring), exactly as libxenvchan's
    /// `libxenvchan_server_init` does: round up to a power of two of at least one page, but
    /// prefer the in-page slots when the request fits them (1 KiB + 2 KiB in-page if
    /// possible, else one side in the 2 KiB slot). Requests above 1 MiB fail.
    pub const fn server_choice(
        read_min: usize,
        write_min: usize,
    ) -> Result<Geometry, GeometryError> {
        let Some(mut left) = RingOrder::granted_for(read_min) else {
            return Err(GeometryError::TooLarge {
                side: Side::Left,
                requested: read_min,
            });
        };
        let Some(mut right) = RingOrder::granted_for(write_min) else {
            return Err(GeometryError::TooLarge {
                side: Side::Right,
                requested: write_min,
            });
        };
        let small = RingOrder::SMALL.size();
        let large = RingOrder::LARGE.size();
        if read_min <= small && write_min <= large {
            left = RingOrder::SMALL;
            right = RingOrder::LARGE;
        } else if read_min <= large && write_min <= small {
            left = RingOrder::LARGE;
            right = RingOrder::SMALL;
        } else if read_min <= large {
            left = RingOrder::LARGE;
        } else if write_min <= large {
            right = RingOrder::LARGE;
        }
        Geometry::new(left, right)
    }

    /// Order of the left ring (client → server).
    pub const fn left(self) -> RingOrder {
        self.left
    }

    /// Order of the right ring (server → client).
    pub const fn right(self) -> RingOrder {
        self.right
    }

    /// Order of the given ring.
    pub const fn order(self, side: Side) -> RingOrder {
        match side {
            Side::Left => self.left,
            Side::Right => self.right,
        }
    }

    /// Size in bytes of the given ring.
    pub const fn ring_size(self, side: Side) -> usize {
        self.order(side).size()
    }

    /// Where the given ring lives.
    pub const fn placement(self, side: Side) -> RingPlacement {
        self.order(side).placement()
    }

    /// Grant references (pages) of the given ring.
    pub const fn grant_count(self, side: Side) -> usize {
        self.order(side).grant_count()
    }

    /// Grant references of both rings: the length of `grants[]`.
    pub const fn total_grants(self) -> usize {
        self.left.grant_count() + self.right.grant_count()
    }

    /// Indices into `grants[]` of the given ring's references (left first, then right).
    pub const fn grant_indices(self, side: Side) -> Range<usize> {
        let l = self.left.grant_count();
        match side {
            Side::Left => 0..l,
            Side::Right => l..l + self.right.grant_count(),
        }
    }

    /// Byte offset just past the grant list.
    pub const fn grants_end(self) -> usize {
        GRANTS_OFFSET + self.total_grants() * GRANT_REF_SIZE
    }

    /// First byte the grant list may not reach: the lowest in-page ring, else the page end.
    pub const fn grant_limit(self) -> usize {
        const fn in_page_or_end(order: RingOrder) -> usize {
            match order.placement() {
                RingPlacement::InPage { offset } => offset,
                RingPlacement::Granted { .. } => PAGE_SIZE,
            }
        }
        let l = in_page_or_end(self.left);
        let r = in_page_or_end(self.right);
        if l < r { l } else { r }
    }

    /// Order of the ring `role` reads.
    pub const fn read_order(self, role: Role) -> RingOrder {
        self.order(role.read_side())
    }

    /// Order of the ring `role` writes.
    pub const fn write_order(self, role: Role) -> RingOrder {
        self.order(role.write_side())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = 1024;

    #[test]
    fn order_table() {
        // (order, size, placement, grants)
        let table = [
            (10, K, RingPlacement::InPage { offset: 1024 }, 0),
            (11, 2 * K, RingPlacement::InPage { offset: 2048 }, 0),
            (12, 4 * K, RingPlacement::Granted { pages: 1 }, 1),
            (13, 8 * K, RingPlacement::Granted { pages: 2 }, 2),
            (16, 64 * K, RingPlacement::Granted { pages: 16 }, 16),
            (20, 1024 * K, RingPlacement::Granted { pages: 256 }, 256),
        ];
        for (order, size, placement, grants) in table {
            let o = RingOrder::new(order).unwrap();
            assert_eq!(o.get() as u16, order);
            assert_eq!(o.size(), size, "order {order}");
            assert_eq!(o.placement(), placement, "order {order}");
            assert_eq!(o.grant_count(), grants, "order {order}");
        }
        for bad in [0u16, 1, 9, 21, 32, 255, 256, 1024, u16::MAX] {
            assert_eq!(RingOrder::new(bad), None, "order {bad}");
        }
    }

    #[test]
    fn granted_for_rounds_up_to_a_page_at_least() {
        let table = [
            (0, Some(12)),
            (1, Some(12)),
            (4096, Some(12)),
            (4097, Some(13)),
            (8192, Some(13)),
            (65535, Some(16)),
            (65536, Some(16)),
            (65537, Some(17)),
            (1 << 20, Some(20)),
            ((1 << 20) + 1, None),
            (usize::MAX, None),
        ];
        for (size, order) in table {
            assert_eq!(
                RingOrder::granted_for(size).map(RingOrder::get),
                order,
                "size {size}"
            );
        }
    }

    /// Every branch of libxenvchan's server size choice, and the boundaries around it.
    #[test]
    fn server_choice_matches_libxenvchan() {
        // (read_min = left, write_min = right) -> (left order, right order)
        let table: &[(usize, usize, u8, u8)] = &[
            // Default and both-fit-in-page: left 1 KiB @1024, right 2 KiB @2048.
            (0, 0, 10, 11),
            (1024, 2048, 10, 11),
            (1, 1, 10, 11),
            // Swapped in-page: left 2 KiB, right 1 KiB.
            (1025, 0, 11, 10),
            (2048, 1024, 11, 10),
            // Left fits the 2 KiB slot, right needs pages.
            (1024, 2049, 11, 12),
            (2048, 2048, 11, 12),
            (0, 1 << 20, 11, 20),
            (2048, 4097, 11, 13),
            // Right fits the 2 KiB slot, left needs pages.
            (2049, 1025, 12, 11),
            (2049, 0, 12, 11),
            (1 << 20, 2048, 20, 11),
            // Both need pages.
            (2049, 2049, 12, 12),
            (4096, 4096, 12, 12),
            (4097, 65536, 13, 16),
            (1 << 20, 1 << 20, 20, 20),
        ];
        for &(read_min, write_min, l, r) in table {
            let g = Geometry::server_choice(read_min, write_min)
                .unwrap_or_else(|e| panic!("({read_min}, {write_min}): {e}"));
            assert_eq!(
                (g.left().get(), g.right().get()),
                (l, r),
                "server_choice({read_min}, {write_min})"
            );
            assert!(g.ring_size(Side::Left) >= read_min);
            assert!(g.ring_size(Side::Right) >= write_min);
        }
    }

    #[test]
    fn server_choice_refuses_more_than_a_mebibyte() {
        let too_big = (1 << 20) + 1;
        assert_eq!(
            Geometry::server_choice(too_big, 0),
            Err(GeometryError::TooLarge {
                side: Side::Left,
                requested: too_big
            })
        );
        assert_eq!(
            Geometry::server_choice(0, usize::MAX),
            Err(GeometryError::TooLarge {
                side: Side::Right,
                requested: usize::MAX
            })
        );
        let msg = Geometry::server_choice(0, too_big).unwrap_err().to_string();
        assert!(msg.contains("1048577") && msg.contains("maximum"), "{msg}");
    }

    #[test]
    fn roles_map_to_sides() {
        assert_eq!(Role::Server.read_side(), Side::Left);
        assert_eq!(Role::Server.write_side(), Side::Right);
        assert_eq!(Role::Client.read_side(), Side::Right);
        assert_eq!(Role::Client.write_side(), Side::Left);
        assert_eq!(Role::Client.peer(), Role::Server);
        let g = Geometry::server_choice(1025, 0).unwrap();
        assert_eq!(g.read_order(Role::Server).get(), 11);
        assert_eq!(g.write_order(Role::Client).get(), 11);
        assert_eq!(g.read_order(Role::Client).get(), 10);
    }

    /// Validation of peer-written orders: every rule, with its distinct error.
    #[test]
    fn raw_order_validation_table() {
        use GeometryError::*;
        let table: &[(u16, u16, Result<usize, GeometryError>)] = &[
            // Ok(total grants)
            (10, 11, Ok(0)),
            (11, 10, Ok(0)),
            (12, 12, Ok(2)),
            (20, 20, Ok(512)),
            (11, 20, Ok(256)),
            (20, 11, Ok(256)),
            (10, 12, Ok(1)),
            (10, 19, Ok(128)),
            (19, 10, Ok(128)),
            // Order range, left checked first.
            (
                9,
                11,
                Err(OrderOutOfRange {
                    side: Side::Left,
                    order: 9,
                }),
            ),
            (
                0,
                0,
                Err(OrderOutOfRange {
                    side: Side::Left,
                    order: 0,
                }),
            ),
            (
                21,
                10,
                Err(OrderOutOfRange {
                    side: Side::Left,
                    order: 21,
                }),
            ),
            (
                10,
                21,
                Err(OrderOutOfRange {
                    side: Side::Right,
                    order: 21,
                }),
            ),
            (
                12,
                u16::MAX,
                Err(OrderOutOfRange {
                    side: Side::Right,
                    order: u16::MAX,
                }),
            ),
            // Same in-page slot.
            (
                10,
                10,
                Err(InPageCollision {
                    order: 10,
                    offset: 1024,
                }),
            ),
            (
                11,
                11,
                Err(InPageCollision {
                    order: 11,
                    offset: 2048,
                }),
            ),
            // Grant list runs into the ring at 1024: 24 + 4 * 256 = 1048 > 1024.
            (
                10,
                20,
                Err(GrantListOverlap {
                    grants: 256,
                    end: 1048,
                    limit: 1024,
                }),
            ),
            (
                20,
                10,
                Err(GrantListOverlap {
                    grants: 256,
                    end: 1048,
                    limit: 1024,
                }),
            ),
        ];
        for &(l, r, ref want) in table {
            let got = Geometry::from_raw_orders(l, r).map(Geometry::total_grants);
            assert_eq!(&got, want, "orders ({l}, {r})");
        }
    }

    /// Exhaustively: every pair of valid orders either fits or is refused for a stated reason,
    /// and every accepted geometry keeps the grant list inside its limit.
    #[test]
    fn every_order_pair_is_consistent() {
        for l in 0..=25u16 {
            for r in 0..=25u16 {
                match Geometry::from_raw_orders(l, r) {
                    Ok(g) => {
                        assert!(g.grants_end() <= g.grant_limit());
                        assert!(g.grant_limit() <= PAGE_SIZE);
                        let li = g.grant_indices(Side::Left);
                        let ri = g.grant_indices(Side::Right);
                        assert_eq!(li.end, ri.start);
                        assert_eq!(ri.end, g.total_grants());
                        assert!(l != r || l >= 12);
                    }
                    Err(GeometryError::OrderOutOfRange { .. }) => {
                        assert!(!(10..=20).contains(&l) || !(10..=20).contains(&r));
                    }
                    Err(GeometryError::InPageCollision { order, .. }) => {
                        assert_eq!(l, r);
                        assert!(order == 10 || order == 11);
                    }
                    Err(GeometryError::GrantListOverlap { end, limit, .. }) => {
                        assert!(end > limit);
                    }
                    Err(
                        e @ (GeometryError::TooLarge { .. }
                        | GeometryError::GrantCountMismatch { .. }),
                    ) => panic!("unexpected {e}"),
                }
            }
        }
    }

    #[test]
    fn every_server_choice_is_a_valid_geometry() {
        let sizes = [
            0,
            1,
            1023,
            1024,
            1025,
            2047,
            2048,
            2049,
            4096,
            4097,
            1 << 16,
            1 << 20,
        ];
        for &a in &sizes {
            for &b in &sizes {
                let g = Geometry::server_choice(a, b).unwrap();
                assert_eq!(Geometry::new(g.left(), g.right()), Ok(g));
                assert!(g.ring_size(Side::Left) >= a && g.ring_size(Side::Right) >= b);
            }
        }
    }
}
