//! The `host.sock` protocol between a domain's process and the broker.
//!
//! One request per `SOCK_SEQPACKET` message, answered by exactly one reply message; file
//! descriptors travel as `SCM_RIGHTS` on the reply only (the broker never accepts descriptors
//! from a client). Integers are little-endian.
//!
//! ```text
//! request: u32 op, u32 seq, body (per op)
//! reply:   u32 seq, u8 status (0 ok, 1 error), body (per reply kind, or an error)
//! ```
//!
//! Both ends treat what they receive as untrusted: every decoder checks lengths, ranges and
//! trailing bytes and answers a [`Malformed`] error, never a panic.

use crate::grant::Access;
use crate::types::{DomId, EventPort, GrantRef};

/// Version spoken by this build; a client and a broker of different versions refuse each other.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// Largest message either side sends or accepts.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
/// Most pages one map request may name (16 MiB): keeps every reply within [`MAX_MESSAGE`].
pub(crate) const MAX_MAP_PAGES: usize = 4096;
/// Descriptors per message: below the kernel's `SCM_MAX_FD` (253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 250;
/// Longest error text carried (longer texts are cut).
const MAX_TEXT: usize = 4096;

const OP_HELLO: u32 = 1;
const OP_SHARE: u32 = 2;
const OP_UNSHARE: u32 = 3;
const OP_MAP: u32 = 4;
const OP_MAP_FDS: u32 = 5;
const OP_UNMAP: u32 = 6;
const OP_SET_NOTIFY: u32 = 7;
const OP_BIND_UNBOUND: u32 = 8;
const OP_BIND_INTERDOMAIN: u32 = 9;
const OP_UNBIND: u32 = 10;

const REPLY_HELLO: u8 = 1;
const REPLY_SHARED: u8 = 2;
const REPLY_MAPPED: u8 = 3;
const REPLY_FDS: u8 = 4;
const REPLY_DONE: u8 = 5;
const REPLY_BOUND: u8 = 6;

const ERR_GRANT_LIMIT: u8 = 1;
const ERR_GRANT_DENIED: u8 = 2;
const ERR_PORT: u8 = 3;
const ERR_INVALID: u8 = 4;
const ERR_HOST: u8 = 5;

/// A message that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// A region a client holds: pages it shared, or pages it mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionId {
    /// A share (by the broker's id).
    Share(u64),
    /// A mapping (by the broker's id).
    Map(u64),
}

/// What a client asks the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// First message on a connection: protocol version and the domain the client believes it is.
    Hello { version: u32, domid: DomId },
    /// Allocate `count` zeroed pages granted to `peer`; reply [`Reply::Shared`] + 1 fd (read-write).
    Share {
        peer: DomId,
        count: u32,
        access: Access,
    },
    /// End a share this connection made.
    Unshare { share: u64 },
    /// Map `refs` granted by `granter`; reply [`Reply::Mapped`] + up to
    /// [`MAX_FDS_PER_MESSAGE`] fds (one per distinct share, in `fd_index` order).
    Map {
        granter: DomId,
        access: Access,
        refs: Vec<GrantRef>,
    },
    /// The fds of mapping `map` from index `start` on (when a mapping spans more shares than
    /// one message can carry); reply [`Reply::Fds`].
    MapFds { map: u64, start: u32 },
    /// End a mapping this connection made.
    Unmap { map: u64 },
    /// Register (replace) the unmap notification of a region this connection holds.
    SetNotify {
        region: RegionId,
        clear_byte: Option<u64>,
        port: Option<EventPort>,
    },
    /// Allocate a port `remote` may bind to; reply [`Reply::Bound`] + 2 fds (incoming, outgoing).
    BindUnbound { remote: DomId },
    /// Connect to `remote_port` of `remote`; reply [`Reply::Bound`] + 2 fds (incoming, outgoing).
    BindInterdomain {
        remote: DomId,
        remote_port: EventPort,
    },
    /// Close a port this connection bound.
    Unbind { port: EventPort },
}

/// One run of consecutive pages of one share inside a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Which of the reply's descriptors holds the pages.
    pub(crate) fd_index: u32,
    /// First page of the run within that descriptor's file.
    pub(crate) page_offset: u32,
    /// Number of pages.
    pub(crate) pages: u32,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Answer to [`Request::Hello`]: the domain this socket belongs to.
    Hello { domid: DomId },
    /// Answer to [`Request::Share`]: the share's id and its first (consecutive) grant reference.
    Shared { share: u64, first_ref: GrantRef },
    /// Answer to [`Request::Map`]: the mapping's id, how many fds it needs in all, and its
    /// pieces in page order.
    Mapped {
        map: u64,
        fd_count: u32,
        pieces: Vec<Piece>,
    },
    /// Answer to [`Request::MapFds`]: only descriptors.
    Fds,
    /// Answer to requests that return nothing.
    Done,
    /// Answer to the bind requests: our end's port number.
    Bound { port: EventPort },
}

/// A refusal, mapped onto [`crate::Error`] by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The granting domain's grant limit would be exceeded.
    GrantLimit { requested: u64, hint: String },
    /// A reference is not granted to the requesting domain (or not with that access).
    GrantDenied {
        granter: DomId,
        gref: GrantRef,
        reason: String,
    },
    /// A port is unknown, not ours, or in the wrong state.
    Port { port: EventPort, reason: String },
    /// An argument out of range.
    InvalidArgument(String),
    /// Anything else the host could not do (limits, OS errors, protocol problems).
    Host(String),
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(Vec::with_capacity(64))
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn text(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(MAX_TEXT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &s.as_bytes()[..end];
        // `end <= MAX_TEXT`, so the length fits a u32.
        self.u32(bytes.len() as u32);
        self.0.extend_from_slice(bytes);
        self
    }
    fn domid(&mut self, d: DomId) -> &mut Self {
        self.u16(d.0)
    }
    fn access(&mut self, a: Access) -> &mut Self {
        self.u8(match a {
            Access::ReadOnly => 0,
            Access::ReadWrite => 1,
        })
    }
    fn option_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).u64(v),
            None => self.u8(0).u64(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(Malformed("message too short"))?;
        self.buf = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn text(&mut self) -> Result<String, Malformed> {
        let len = self.u32()? as usize;
        if len > MAX_TEXT || len > self.buf.len() {
            return Err(Malformed("text length out of range"));
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
    fn domid(&mut self) -> Result<DomId, Malformed> {
        Ok(DomId(self.u16()?))
    }
    fn access(&mut self) -> Result<Access, Malformed> {
        match self.u8()? {
            0 => Ok(Access::ReadOnly),
            1 => Ok(Access::ReadWrite),
            _ => Err(Malformed("unknown access mode")),
        }
    }
    fn option_u64(&mut self) -> Result<Option<u64>, Malformed> {
        let present = self.u8()?;
        let v = self.u64()?;
        match present {
            0 => Ok(None),
            1 => Ok(Some(v)),
            _ => Err(Malformed("bad option tag")),
        }
    }
    fn finish(self) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed("trailing bytes"))
        }
    }
}

impl Request {
    /// Encodes the request with sequence number `seq`.
    pub(crate) fn encode(&self, seq: u32) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Hello { version, domid } => {
                w.u32(OP_HELLO).u32(seq).u32(*version).domid(*domid);
            }
            Request::Share {
                peer,
                count,
                access,
            } => {
                w.u32(OP_SHARE)
                    .u32(seq)
                    .domid(*peer)
                    .u32(*count)
                    .access(*access);
            }
            Request::Unshare { share } => {
                w.u32(OP_UNSHARE).u32(seq).u64(*share);
            }
            Request::Map {
                granter,
                access,
                refs,
            } => {
                w.u32(OP_MAP)
                    .u32(seq)
                    .domid(*granter)
                    .access(*access)
                    .u32(u32::try_from(refs.len()).unwrap_or(u32::MAX));
                for r in refs {
                    w.u32(r.0);
                }
            }
            Request::MapFds { map, start } => {
                w.u32(OP_MAP_FDS).u32(seq).u64(*map).u32(*start);
            }
            Request::Unmap { map } => {
                w.u32(OP_UNMAP).u32(seq).u64(*map);
            }
            Request::SetNotify {
                region,
                clear_byte,
                port,
            } => {
                w.u32(OP_SET_NOTIFY).u32(seq);
                match region {
                    RegionId::Share(id) => w.u8(0).u64(*id),
                    RegionId::Map(id) => w.u8(1).u64(*id),
                };
                w.option_u64(*clear_byte)
                    .option_u64(port.map(|p| u64::from(p.0)));
            }
            Request::BindUnbound { remote } => {
                w.u32(OP_BIND_UNBOUND).u32(seq).domid(*remote);
            }
            Request::BindInterdomain {
                remote,
                remote_port,
            } => {
                w.u32(OP_BIND_INTERDOMAIN)
                    .u32(seq)
                    .domid(*remote)
                    .u32(remote_port.0);
            }
            Request::Unbind { port } => {
                w.u32(OP_UNBIND).u32(seq).u32(port.0);
            }
        }
        w.0
    }

    /// Decodes a request; returns it with its sequence number. When only the body is bad, the
    /// sequence number is still returned so that the refusal can be matched to the request.
    pub(crate) fn decode(buf: &[u8]) -> (Option<u32>, Result<Request, Malformed>) {
        let mut r = Reader::new(buf);
        let (op, seq) = match (r.u32(), r.u32()) {
            (Ok(op), Ok(seq)) => (op, seq),
            _ => return (None, Err(Malformed("request header too short"))),
        };
        (Some(seq), Self::decode_body(op, r))
    }

    fn decode_body(op: u32, mut r: Reader<'_>) -> Result<Request, Malformed> {
        let req = match op {
            OP_HELLO => Request::Hello {
                version: r.u32()?,
                domid: r.domid()?,
            },
            OP_SHARE => Request::Share {
                peer: r.domid()?,
                count: r.u32()?,
                access: r.access()?,
            },
            OP_UNSHARE => Request::Unshare { share: r.u64()? },
            OP_MAP => {
                let granter = r.domid()?;
                let access = r.access()?;
                let n = r.u32()? as usize;
                if n > MAX_MAP_PAGES {
                    return Err(Malformed("too many grant references in one map request"));
                }
                if r.buf.len() != n * 4 {
                    return Err(Malformed("grant reference list does not match its count"));
                }
                let mut refs = Vec::with_capacity(n);
                for _ in 0..n {
                    refs.push(GrantRef(r.u32()?));
                }
                Request::Map {
                    granter,
                    access,
                    refs,
                }
            }
            OP_MAP_FDS => Request::MapFds {
                map: r.u64()?,
                start: r.u32()?,
            },
            OP_UNMAP => Request::Unmap { map: r.u64()? },
            OP_SET_NOTIFY => {
                let region = match r.u8()? {
                    0 => RegionId::Share(r.u64()?),
                    1 => RegionId::Map(r.u64()?),
                    _ => return Err(Malformed("unknown region kind")),
                };
                let clear_byte = r.option_u64()?;
                let port = match r.option_u64()? {
                    None => None,
                    Some(p) => Some(EventPort(
                        u32::try_from(p).map_err(|_| Malformed("port number out of range"))?,
                    )),
                };
                Request::SetNotify {
                    region,
                    clear_byte,
                    port,
                }
            }
            OP_BIND_UNBOUND => Request::BindUnbound { remote: r.domid()? },
            OP_BIND_INTERDOMAIN => Request::BindInterdomain {
                remote: r.domid()?,
                remote_port: EventPort(r.u32()?),
            },
            OP_UNBIND => Request::Unbind {
                port: EventPort(r.u32()?),
            },
            _ => return Err(Malformed("unknown operation")),
        };
        r.finish()?;
        Ok(req)
    }
}

/// Encodes a reply (or refusal) to request `seq`.
pub(crate) fn encode_reply(seq: u32, reply: &Result<Reply, WireError>) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(seq);
    match reply {
        Ok(reply) => {
            w.u8(0);
            match reply {
                Reply::Hello { domid } => {
                    w.u8(REPLY_HELLO).domid(*domid);
                }
                Reply::Shared { share, first_ref } => {
                    w.u8(REPLY_SHARED).u64(*share).u32(first_ref.0);
                }
                Reply::Mapped {
                    map,
                    fd_count,
                    pieces,
                } => {
                    w.u8(REPLY_MAPPED)
                        .u64(*map)
                        .u32(*fd_count)
                        .u32(u32::try_from(pieces.len()).unwrap_or(u32::MAX));
                    for p in pieces {
                        w.u32(p.fd_index).u32(p.page_offset).u32(p.pages);
                    }
                }
                Reply::Fds => {
                    w.u8(REPLY_FDS);
                }
                Reply::Done => {
                    w.u8(REPLY_DONE);
                }
                Reply::Bound { port } => {
                    w.u8(REPLY_BOUND).u32(port.0);
                }
            }
        }
        Err(e) => {
            w.u8(1);
            match e {
                WireError::GrantLimit { requested, hint } => {
                    w.u8(ERR_GRANT_LIMIT).u64(*requested).text(hint);
                }
                WireError::GrantDenied {
                    granter,
                    gref,
                    reason,
                } => {
                    w.u8(ERR_GRANT_DENIED)
                        .domid(*granter)
                        .u32(gref.0)
                        .text(reason);
                }
                WireError::Port { port, reason } => {
                    w.u8(ERR_PORT).u32(port.0).text(reason);
                }
                WireError::InvalidArgument(msg) => {
                    w.u8(ERR_INVALID).text(msg);
                }
                WireError::Host(msg) => {
                    w.u8(ERR_HOST).text(msg);
                }
            }
        }
    }
    w.0
}

/// Decodes a reply: its sequence number and the answer or refusal.
pub(crate) fn decode_reply(buf: &[u8]) -> Result<(u32, Result<Reply, WireError>), Malformed> {
    let mut r = Reader::new(buf);
    let seq = r.u32()?;
    let result = match r.u8()? {
        0 => Ok(match r.u8()? {
            REPLY_HELLO => Reply::Hello { domid: r.domid()? },
            REPLY_SHARED => Reply::Shared {
                share: r.u64()?,
                first_ref: GrantRef(r.u32()?),
            },
            REPLY_MAPPED => {
                let map = r.u64()?;
                let fd_count = r.u32()?;
                let n = r.u32()? as usize;
                if n > MAX_MAP_PAGES || r.buf.len() != n * 12 {
                    return Err(Malformed("piece list does not match its count"));
                }
                let mut pieces = Vec::with_capacity(n);
                for _ in 0..n {
                    pieces.push(Piece {
                        fd_index: r.u32()?,
                        page_offset: r.u32()?,
                        pages: r.u32()?,
                    });
                }
                Reply::Mapped {
                    map,
                    fd_count,
                    pieces,
                }
            }
            REPLY_FDS => Reply::Fds,
            REPLY_DONE => Reply::Done,
            REPLY_BOUND => Reply::Bound {
                port: EventPort(r.u32()?),
            },
            _ => return Err(Malformed("unknown reply kind")),
        }),
        1 => Err(match r.u8()? {
            ERR_GRANT_LIMIT => WireError::GrantLimit {
                requested: r.u64()?,
                hint: r.text()?,
            },
            ERR_GRANT_DENIED => WireError::GrantDenied {
                granter: r.domid()?,
                gref: GrantRef(r.u32()?),
                reason: r.text()?,
            },
            ERR_PORT => WireError::Port {
                port: EventPort(r.u32()?),
                reason: r.text()?,
            },
            ERR_INVALID => WireError::InvalidArgument(r.text()?),
            ERR_HOST => WireError::Host(r.text()?),
            _ => return Err(Malformed("unknown error kind")),
        }),
        _ => return Err(Malformed("bad reply status")),
    };
    r.finish()?;
    Ok((seq, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Hello {
                version: PROTOCOL_VERSION,
                domid: DomId(7),
            },
            Request::Share {
                peer: DomId(1),
                count: 257,
                access: Access::ReadOnly,
            },
            Request::Unshare { share: u64::MAX },
            Request::Map {
                granter: DomId(0),
                access: Access::ReadWrite,
                refs: vec![GrantRef(8), GrantRef(9), GrantRef(u32::MAX)],
            },
            Request::MapFds { map: 3, start: 250 },
            Request::Unmap { map: 9 },
            Request::SetNotify {
                region: RegionId::Map(4),
                clear_byte: Some(21),
                port: Some(EventPort(5)),
            },
            Request::SetNotify {
                region: RegionId::Share(4),
                clear_byte: None,
                port: None,
            },
            Request::BindUnbound { remote: DomId(2) },
            Request::BindInterdomain {
                remote: DomId(0),
                remote_port: EventPort(1),
            },
            Request::Unbind {
                port: EventPort(1023),
            },
        ]
    }

    #[test]
    fn requests_round_trip() {
        for (i, req) in requests().into_iter().enumerate() {
            let bytes = req.encode(i as u32);
            assert_eq!(Request::decode(&bytes), (Some(i as u32), Ok(req)));
        }
    }

    #[test]
    fn truncated_or_extended_requests_are_refused() {
        for req in requests() {
            let bytes = req.encode(1);
            for cut in 0..bytes.len() {
                let (_, r) = Request::decode(&bytes[..cut]);
                assert!(r.is_err(), "{req:?} cut at {cut} accepted");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(
                Request::decode(&longer).1.is_err(),
                "{req:?} + 1 byte accepted"
            );
        }
    }

    #[test]
    fn hostile_request_fields_are_refused() {
        // A map request claiming more references than allowed.
        let mut w = Writer::new();
        w.u32(OP_MAP).u32(1).u16(0).u8(1).u32(u32::MAX);
        assert_eq!(
            Request::decode(&w.0).1,
            Err(Malformed("too many grant references in one map request"))
        );
        // An unknown access mode and an unknown operation.
        let mut w = Writer::new();
        w.u32(OP_SHARE).u32(1).u16(1).u32(1).u8(9);
        assert!(Request::decode(&w.0).1.is_err());
        let mut w = Writer::new();
        w.u32(99).u32(5);
        assert_eq!(
            Request::decode(&w.0),
            (Some(5), Err(Malformed("unknown operation")))
        );
        // A port number wider than 32 bits.
        let mut w = Writer::new();
        w.u32(OP_SET_NOTIFY)
            .u32(1)
            .u8(0)
            .u64(1)
            .option_u64(None)
            .option_u64(Some(1 << 40));
        assert!(Request::decode(&w.0).1.is_err());
    }

    #[test]
    fn replies_round_trip() {
        let replies: Vec<Result<Reply, WireError>> = vec![
            Ok(Reply::Hello { domid: DomId(3) }),
            Ok(Reply::Shared {
                share: 1,
                first_ref: GrantRef(8),
            }),
            Ok(Reply::Mapped {
                map: 2,
                fd_count: 2,
                pieces: vec![
                    Piece {
                        fd_index: 0,
                        page_offset: 0,
                        pages: 1,
                    },
                    Piece {
                        fd_index: 1,
                        page_offset: 3,
                        pages: 256,
                    },
                ],
            }),
            Ok(Reply::Fds),
            Ok(Reply::Done),
            Ok(Reply::Bound { port: EventPort(4) }),
            Err(WireError::GrantLimit {
                requested: 5,
                hint: "raise it".into(),
            }),
            Err(WireError::GrantDenied {
                granter: DomId(0),
                gref: GrantRef(12),
                reason: "granted to domain 1".into(),
            }),
            Err(WireError::Port {
                port: EventPort(3),
                reason: "not bound".into(),
            }),
            Err(WireError::InvalidArgument("zero pages".into())),
            Err(WireError::Host("no".into())),
        ];
        for (i, reply) in replies.into_iter().enumerate() {
            let bytes = encode_reply(i as u32, &reply);
            assert_eq!(decode_reply(&bytes), Ok((i as u32, reply.clone())));
            for cut in 0..bytes.len() {
                assert!(
                    decode_reply(&bytes[..cut]).is_err(),
                    "{reply:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let bytes = encode_reply(1, &Err(WireError::Host(long)));
        let (_, r) = decode_reply(&bytes).unwrap();
        match r {
            Err(WireError::Host(s)) => {
                assert!(s.len() <= MAX_TEXT);
                assert!(s.chars().all(|c| c == 'é'));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
