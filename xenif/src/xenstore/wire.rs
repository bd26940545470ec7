//! The XenStore wire protocol (`xen/include/public/io/xs_wire.h`), shared by the client and the
//! simulated xenstored.
//!
//! A message is a 16-byte header `{u32 type, u32 req_id, u32 tx_id, u32 len}` in native
//! (little-endian on x86) byte order followed by `len` ≤ [`PAYLOAD_MAX`] payload bytes.
//! Payloads are sequences of NUL-terminated strings, except the value of `WRITE` and the reply
//! to `READ`, which are raw bytes.
//!
//! Everything here accepts arbitrary input: a length above [`PAYLOAD_MAX`] is refused before
//! anything is allocated, strings are validated before use, and nothing panics. Two fuzz targets
//! (`xs_request`, `xs_reply`) drive these functions from each direction.

use core::fmt;
use std::io::{self, Read, Write};

use crate::types::DomId;

/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// Largest payload a message may carry (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// The special path whose watchers hear of every domain introduction.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// The special path whose watchers hear of every domain release (death).
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

macro_rules! msg_types {
    ($( $(#[$doc:meta])* $name:ident = $val:literal, $cname:literal; )*) => {
        /// A message type (`enum xsd_sockmsg_type`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MsgType {
            $( $(#[$doc])* $name = $val, )*
        }

        impl MsgType {
            /// The type with this wire number, if it is one.
            pub fn from_u32(v: u32) -> Option<MsgType> {
                match v {
                    $( $val => Some(MsgType::$name), )*
                    _ => None,
                }
            }

            /// The C name (`XS_READ`…), for messages and logs.
            pub fn name(self) -> &'static str {
                match self {
                    $( MsgType::$name => $cname, )*
                }
            }
        }
    };
}

msg_types! {
    /// Debug and control commands (`XS_CONTROL`, formerly `XS_DEBUG`).
    Control = 0, "XS_CONTROL";
    /// List a node's children.
    Directory = 1, "XS_DIRECTORY";
    /// Read a node's value.
    Read = 2, "XS_READ";
    /// Read a node's permissions.
    GetPerms = 3, "XS_GET_PERMS";
    /// Register a watch.
    Watch = 4, "XS_WATCH";
    /// Remove a watch.
    Unwatch = 5, "XS_UNWATCH";
    /// Start a transaction.
    TransactionStart = 6, "XS_TRANSACTION_START";
    /// Commit (`"T"`) or abort (`"F"`) a transaction.
    TransactionEnd = 7, "XS_TRANSACTION_END";
    /// Introduce a new domain (toolstack, dom0 only).
    Introduce = 8, "XS_INTRODUCE";
    /// Release a domain (toolstack, dom0 only).
    Release = 9, "XS_RELEASE";
    /// Ask for a domain's home path.
    GetDomainPath = 10, "XS_GET_DOMAIN_PATH";
    /// Write a node's value, creating it and its parents if needed.
    Write = 11, "XS_WRITE";
    /// Create a node with an empty value (no error if it exists).
    Mkdir = 12, "XS_MKDIR";
    /// Remove a node and its children.
    Rm = 13, "XS_RM";
    /// Replace a node's permissions.
    SetPerms = 14, "XS_SET_PERMS";
    /// A watch fired (server to client only).
    WatchEvent = 15, "XS_WATCH_EVENT";
    /// An error reply (server to client only).
    Error = 16, "XS_ERROR";
    /// Ask whether a domain has been introduced.
    IsDomainIntroduced = 17, "XS_IS_DOMAIN_INTRODUCED";
    /// Resume a domain.
    Resume = 18, "XS_RESUME";
    /// Make a domain the target of another (device models).
    SetTarget = 19, "XS_SET_TARGET";
    /// Remove all watches of the connection.
    ResetWatches = 21, "XS_RESET_WATCHES";
    /// Read a large directory piecewise.
    DirectoryPart = 22, "XS_DIRECTORY_PART";
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! error_codes {
    ($( $name:ident = $errno:ident, $desc:literal; )*) => {
        /// An error a xenstored can answer (`xsd_errors[]`): sent as its name, e.g. `"ENOENT"`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum ErrorCode {
            $( #[doc = $desc] $name, )*
        }

        impl ErrorCode {
            /// Every error name of the protocol.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The name sent on the wire (`"ENOENT"`).
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => stringify!($name), )*
                }
            }

            /// The errno value (Linux).
            pub fn errno(self) -> i32 {
                match self {
                    $( ErrorCode::$name => libc::$errno, )*
                }
            }

            /// What the error means in XenStore terms.
            pub fn description(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $desc, )*
                }
            }

            /// The code with this wire name (without the NUL).
            pub fn from_name(name: &[u8]) -> Option<ErrorCode> {
                match name {
                    $( n if n == stringify!($name).as_bytes() => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }

            /// The code for an errno value; anything not in the protocol maps to `EIO`.
            pub fn from_errno(errno: i32) -> ErrorCode {
                match errno {
                    $( e if e == libc::$errno => ErrorCode::$name, )*
                    _ => ErrorCode::EIO,
                }
            }
        }
    };
}

error_codes! {
    EINVAL = EINVAL, "invalid argument (malformed request or path)";
    EACCES = EACCES, "permission denied by the node's permissions";
    EEXIST = EEXIST, "already exists";
    EISDIR = EISDIR, "is a directory";
    ENOENT = ENOENT, "no such node (or transaction)";
    ENOMEM = ENOMEM, "out of memory";
    ENOSPC = ENOSPC, "quota exceeded (nodes, transactions, permissions or value size)";
    EIO = EIO, "input/output error";
    ENOTEMPTY = ENOTEMPTY, "directory not empty";
    ENOSYS = ENOSYS, "operation not supported";
    EROFS = EROFS, "read-only";
    EBUSY = EBUSY, "busy";
    EAGAIN = EAGAIN, "transaction conflict: retry the whole transaction";
    EISCONN = EISCONN, "domain already introduced";
    E2BIG = E2BIG, "too big (watch quota, or reply larger than a message)";
    EPERM = EPERM, "operation not permitted";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message header (`struct xsd_sockmsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type (see [`MsgType`]); kept raw so unknown types can be answered.
    pub msg_type: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside transactions.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Serialises the header (native byte order, as C does).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// Parses a header. Does not validate `len`: [`read_message`] does.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }
}

/// Errors of the codec itself (framing), as opposed to errors a xenstored answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The header announced a payload longer than the protocol allows.
    #[error("message announces a {len}-byte payload; the protocol maximum is {PAYLOAD_MAX}")]
    PayloadTooLong {
        /// The announced length.
        len: u32,
    },
    /// The stream ended in the middle of a message.
    #[error("connection closed in the middle of a message ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received of the current part.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// Reading or writing the connection failed.
    #[error("XenStore connection I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// One XenStore message: header fields and payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type, raw (see [`Message::kind`]).
    pub msg_type: u32,
    /// Request id.
    pub req_id: u32,
    /// Transaction id.
    pub tx_id: u32,
    /// Payload, at most [`PAYLOAD_MAX`] bytes.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind().map(MsgType::name).unwrap_or("unknown");
        f.debug_struct("Message")
            .field("type", &format_args!("{} ({kind})", self.msg_type))
            .field("req_id", &self.req_id)
            .field("tx_id", &self.tx_id)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .finish()
    }
}

impl Message {
    /// Builds a message; fails if the payload is longer than [`PAYLOAD_MAX`].
    pub fn new(
        kind: MsgType,
        req_id: u32,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Message, WireError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong {
                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            });
        }
        Ok(Message {
            msg_type: kind as u32,
            req_id,
            tx_id,
            payload,
        })
    }

    /// The message type, if it is a known one.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u32(self.msg_type)
    }

    /// The header that goes with this message.
    pub fn header(&self) -> Header {
        Header {
            msg_type: self.msg_type,
            req_id: self.req_id,
            tx_id: self.tx_id,
            // Payloads longer than PAYLOAD_MAX cannot be built through `new`/`read_message`;
            // saturate rather than wrap if a caller filled the field by hand.
            len: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
        }
    }

    /// Appends header and payload to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header().to_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Header and payload as one buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut v);
        v
    }

    /// Writes the message with a single `write_all` (one buffer, so that concurrent writers
    /// holding the same lock never interleave).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())
    }

    /// An error reply to a request.
    pub fn error_reply(req_id: u32, tx_id: u32, code: ErrorCode) -> Message {
        let mut payload = code.name().as_bytes().to_vec();
        payload.push(0);
        Message {
            msg_type: MsgType::Error as u32,
            req_id,
            tx_id,
            payload,
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, io::Error> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one message. `Ok(None)` on a clean end of stream (EOF at a message boundary).
///
/// The announced length is validated before the payload buffer is allocated, so a hostile
/// peer cannot make us allocate more than [`PAYLOAD_MAX`] bytes.
pub fn read_message(r: &mut impl Read) -> Result<Option<Message>, WireError> {
    let mut hb = [0u8; HEADER_LEN];
    let got = read_full(r, &mut hb)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(WireError::Truncated {
            got,
            want: HEADER_LEN,
        });
    }
    let h = Header::from_bytes(&hb);
    let len = h.len as usize;
    if len > PAYLOAD_MAX {
        return Err(WireError::PayloadTooLong { len: h.len });
    }
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(WireError::Truncated { got, want: len });
    }
    Ok(Some(Message {
        msg_type: h.msg_type,
        req_id: h.req_id,
        tx_id: h.tx_id,
        payload,
    }))
}

/// Splits a payload made of NUL-terminated strings. Fails (`None`) if the last string is not
/// terminated. An empty payload is an empty list.
pub fn split_strings(payload: &[u8]) -> Option<Vec<&[u8]>> {
    if payload.is_empty() {
        return Some(Vec::new());
    }
    if payload.last() != Some(&0) {
        return None;
    }
    let body = &payload[..payload.len() - 1];
    Some(body.split(|&b| b == 0).collect())
}

/// Builds a payload of NUL-terminated strings.
pub fn join_strings<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_ref());
        v.push(0);
    }
    v
}

/// Access a permission entry grants (`n`, `r`, `w`, `b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PermAccess {
    /// `n`: no access.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl PermAccess {
    /// Whether reading is allowed.
    pub fn can_read(self) -> bool {
        matches!(self, PermAccess::Read | PermAccess::Both)
    }

    /// Whether writing is allowed.
    pub fn can_write(self) -> bool {
        matches!(self, PermAccess::Write | PermAccess::Both)
    }

    /// The wire letter.
    pub fn letter(self) -> char {
        match self {
            PermAccess::None => 'n',
            PermAccess::Read => 'r',
            PermAccess::Write => 'w',
            PermAccess::Both => 'b',
        }
    }
}

/// One permission entry: `<letter><domid>`, e.g. `r5`.
///
/// In a node's permission list the first entry names the owner (who always has full access)
/// and the access of every domain not listed; later entries give specific domains access.
/// Dom0 is privileged and ignores permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain the entry is about.
    pub domid: DomId,
    /// What it may do.
    pub access: PermAccess,
}

impl Perm {
    /// `n<domid>`.
    pub fn none(domid: DomId) -> Perm {
        Perm {
            domid,
            access: PermAccess::None,
        }
    }

    /// `r<domid>`.
    pub fn read(domid: DomId) -> Perm {
        Perm {
            domid,
            access: PermAccess::Read,
        }
    }

    /// `w<domid>`.
    pub fn write(domid: DomId) -> Perm {
        Perm {
            domid,
            access: PermAccess::Write,
        }
    }

    /// `b<domid>`.
    pub fn both(domid: DomId) -> Perm {
        Perm {
            domid,
            access: PermAccess::Both,
        }
    }

    /// Parses `n0`, `r5`, `b12`…
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&letter, rest) = s.split_first()?;
        let access = match letter {
            b'n' => PermAccess::None,
            b'r' => PermAccess::Read,
            b'w' => PermAccess::Write,
            b'b' => PermAccess::Both,
            _ => return None,
        };
        if rest.is_empty() || rest.len() > 5 || !rest.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let domid = core::str::from_utf8(rest).ok()?.parse::<DomId>().ok()?;
        Some(Perm { domid, access })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

impl core::str::FromStr for Perm {
    type Err = String;

    fn from_str(s: &str) -> Result<Perm, String> {
        Perm::parse(s.as_bytes()).ok_or_else(|| {
            format!(
                "invalid permission {s:?}: expected n, r, w or b followed by a domain id, e.g. r5"
            )
        })
    }
}

/// Parses a list of NUL-terminated permission strings (a `GET_PERMS` reply, or the tail of
/// a `SET_PERMS` request). Fails on an empty list or any malformed entry.
pub fn parse_perm_list(payload: &[u8]) -> Option<Vec<Perm>> {
    let parts = split_strings(payload)?;
    if parts.is_empty() {
        return None;
    }
    parts.into_iter().map(Perm::parse).collect()
}

/// Builds the payload for a permission list.
pub fn perm_list_payload(perms: &[Perm]) -> Vec<u8> {
    let strs: Vec<String> = perms.iter().map(Perm::to_string).collect();
    join_strings(&strs)
}

/// Why a path is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    /// Empty string.
    Empty,
    /// Longer than the protocol limit ([`ABS_PATH_MAX`] or [`REL_PATH_MAX`]).
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character other than `A-Za-z0-9-/_@`.
    BadChar,
    /// Two slashes in a row.
    DoubleSlash,
    /// A trailing slash (other than the root `/`).
    TrailingSlash,
    /// A special (`@…`) path where a node path is needed.
    Special,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathProblem::Empty => f.write_str("the path is empty"),
            PathProblem::TooLong { max } => write!(f, "the path is longer than {max} bytes"),
            PathProblem::BadChar => {
                f.write_str("only letters, digits and - / _ @ are allowed in XenStore paths")
            }
            PathProblem::DoubleSlash => f.write_str("the path contains \"//\""),
            PathProblem::TrailingSlash => f.write_str("the path ends with '/'"),
            PathProblem::Special => {
                f.write_str("special @-paths can only be watched, not read or written")
            }
        }
    }
}

/// Whether `path` is special (`@introduceDomain`, `@releaseDomain`).
pub fn is_special(path: &str) -> bool {
    path.starts_with('@')
}

/// Checks a path as xenstored does (`is_valid_nodename` plus the length limits): absolute
/// paths start with `/` and are at most [`ABS_PATH_MAX`] bytes, relative ones (resolved
/// against the connection's home `/local/domain/<id>`) at most [`REL_PATH_MAX`]. Special
/// `@…` paths are accepted only with `allow_special` (watches, permissions of special nodes).
pub fn check_path(path: &str, allow_special: bool) -> Result<(), PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if is_special(path) {
        if !allow_special {
            return Err(PathProblem::Special);
        }
        if path.len() > ABS_PATH_MAX {
            return Err(PathProblem::TooLong { max: ABS_PATH_MAX });
        }
        if !path[1..].bytes().all(is_path_byte) || path[1..].contains('@') {
            return Err(PathProblem::BadChar);
        }
        return Ok(());
    }
    let max = if path.starts_with('/') {
        ABS_PATH_MAX
    } else {
        REL_PATH_MAX
    };
    if path.len() > max {
        return Err(PathProblem::TooLong { max });
    }
    if !path.bytes().all(is_path_byte) {
        return Err(PathProblem::BadChar);
    }
    if path.contains("//") {
        return Err(PathProblem::DoubleSlash);
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err(PathProblem::TrailingSlash);
    }
    Ok(())
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// Parses a decimal number as C's `strtoul` users in xenstored expect (digits only).
pub fn parse_decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(s).ok()?.parse().ok()
}

fn utf8(s: &[u8]) -> Result<&str, ErrorCode> {
    core::str::from_utf8(s).map_err(|_| ErrorCode::EINVAL)
}

fn domid_arg(s: &[u8]) -> Result<DomId, ErrorCode> {
    let v = parse_decimal(s).ok_or(ErrorCode::EINVAL)?;
    let d = DomId(u16::try_from(v).map_err(|_| ErrorCode::EINVAL)?);
    if d.is_valid() {
        Ok(d)
    } else {
        Err(ErrorCode::EINVAL)
    }
}

/// A request as a xenstored sees it, parsed and validated from a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `READ path`.
    Read {
        /// Node path (absolute or relative).
        path: &'a str,
    },
    /// `WRITE path value`.
    Write {
        /// Node path.
        path: &'a str,
        /// New value (raw bytes).
        value: &'a [u8],
    },
    /// `MKDIR path`.
    Mkdir {
        /// Node path.
        path: &'a str,
    },
    /// `RM path`.
    Rm {
        /// Node path.
        path: &'a str,
    },
    /// `DIRECTORY path`.
    Directory {
        /// Node path.
        path: &'a str,
    },
    /// `DIRECTORY_PART path offset`.
    DirectoryPart {
        /// Node path.
        path: &'a str,
        /// Byte offset into the NUL-separated child list.
        offset: u32,
    },
    /// `GET_PERMS path`.
    GetPerms {
        /// Node path (or special path).
        path: &'a str,
    },
    /// `SET_PERMS path perm…`.
    SetPerms {
        /// Node path (or special path).
        path: &'a str,
        /// New permissions, owner first.
        perms: Vec<Perm>,
    },
    /// `WATCH path token`.
    Watch {
        /// Watched path (or special path).
        path: &'a str,
        /// Caller's token, echoed in events.
        token: &'a str,
    },
    /// `UNWATCH path token`.
    Unwatch {
        /// Watched path.
        path: &'a str,
        /// Token given at registration.
        token: &'a str,
    },
    /// `TRANSACTION_START`.
    TransactionStart,
    /// `TRANSACTION_END T|F`.
    TransactionEnd {
        /// `true` for `"T"` (commit), `false` for `"F"` (abort).
        commit: bool,
    },
    /// `INTRODUCE domid mfn port`.
    Introduce {
        /// The new domain.
        domid: DomId,
        /// Its store page frame (ignored by the simulated host).
        mfn: u64,
        /// Its store event channel (ignored by the simulated host).
        port: u32,
    },
    /// `RELEASE domid`.
    Release {
        /// The domain that is going away.
        domid: DomId,
    },
    /// `GET_DOMAIN_PATH domid`.
    GetDomainPath {
        /// The domain asked about.
        domid: DomId,
    },
    /// `IS_DOMAIN_INTRODUCED domid`.
    IsDomainIntroduced {
        /// The domain asked about.
        domid: DomId,
    },
    /// `RESUME domid`.
    Resume {
        /// The domain.
        domid: DomId,
    },
    /// `SET_TARGET domid target`.
    SetTarget {
        /// The device-model domain.
        domid: DomId,
        /// The domain it serves.
        target: DomId,
    },
    /// `RESET_WATCHES`.
    ResetWatches,
    /// `CONTROL cmd args…`.
    Control {
        /// The command and its arguments.
        args: Vec<&'a str>,
    },
}

impl<'a> Request<'a> {
    /// Parses a request message. The error is what a xenstored answers: `EINVAL` for a
    /// malformed payload or path, `ENOSYS` for types a client may not send.
    pub fn parse(msg: &'a Message) -> Result<Request<'a>, ErrorCode> {
        let kind = msg.kind().ok_or(ErrorCode::EINVAL)?;
        let p = msg.payload.as_slice();
        let one = || -> Result<&'a [u8], ErrorCode> {
            match split_strings(p) {
                Some(v) if v.len() == 1 => Ok(v[0]),
                _ => Err(ErrorCode::EINVAL),
            }
        };
        let path = |s: &'a [u8], special: bool| -> Result<&'a str, ErrorCode> {
            let s = utf8(s)?;
            check_path(s, special).map_err(|_| ErrorCode::EINVAL)?;
            Ok(s)
        };
        let strings = |n: usize| -> Result<Vec<&'a [u8]>, ErrorCode> {
            match split_strings(p) {
                Some(v) if v.len() == n => Ok(v),
                _ => Err(ErrorCode::EINVAL),
            }
        };
        Ok(match kind {
            MsgType::Read => Request::Read {
                path: path(one()?, false)?,
            },
            MsgType::Mkdir => Request::Mkdir {
                path: path(one()?, false)?,
            },
            MsgType::Rm => Request::Rm {
                path: path(one()?, false)?,
            },
            MsgType::Directory => Request::Directory {
                path: path(one()?, false)?,
            },
            MsgType::GetPerms => Request::GetPerms {
                path: path(one()?, true)?,
            },
            MsgType::Write => {
                let nul = p.iter().position(|&b| b == 0).ok_or(ErrorCode::EINVAL)?;
                Request::Write {
                    path: path(&p[..nul], false)?,
                    value: &p[nul + 1..],
                }
            }
            MsgType::DirectoryPart => {
                let v = strings(2)?;
                Request::DirectoryPart {
                    path: path(v[0], false)?,
                    offset: parse_decimal(v[1]).ok_or(ErrorCode::EINVAL)?,
                }
            }
            MsgType::SetPerms => {
                let nul = p.iter().position(|&b| b == 0).ok_or(ErrorCode::EINVAL)?;
                let perms = parse_perm_list(&p[nul + 1..]).ok_or(ErrorCode::EINVAL)?;
                Request::SetPerms {
                    path: path(&p[..nul], true)?,
                    perms,
                }
            }
            MsgType::Watch | MsgType::Unwatch => {
                let v = strings(2)?;
                let wpath = path(v[0], true)?;
                let token = utf8(v[1])?;
                if kind == MsgType::Watch {
                    Request::Watch { path: wpath, token }
                } else {
                    Request::Unwatch { path: wpath, token }
                }
            }
            MsgType::TransactionStart => Request::TransactionStart,
            MsgType::TransactionEnd => match one()? {
                b"T" => Request::TransactionEnd { commit: true },
                b"F" => Request::TransactionEnd { commit: false },
                _ => return Err(ErrorCode::EINVAL),
            },
            MsgType::Introduce => {
                let v = strings(3)?;
                let mfn = core::str::from_utf8(v[1])
                    .ok()
                    .filter(|s| {
                        !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(ErrorCode::EINVAL)?;
                Request::Introduce {
                    domid: domid_arg(v[0])?,
                    mfn,
                    port: parse_decimal(v[2]).ok_or(ErrorCode::EINVAL)?,
                }
            }
            MsgType::Release => Request::Release {
                domid: domid_arg(one()?)?,
            },
            MsgType::GetDomainPath => Request::GetDomainPath {
                domid: domid_arg(one()?)?,
            },
            MsgType::IsDomainIntroduced => Request::IsDomainIntroduced {
                domid: domid_arg(one()?)?,
            },
            MsgType::Resume => Request::Resume {
                domid: domid_arg(one()?)?,
            },
            MsgType::SetTarget => {
                let v = strings(2)?;
                Request::SetTarget {
                    domid: domid_arg(v[0])?,
                    target: domid_arg(v[1])?,
                }
            }
            MsgType::ResetWatches => Request::ResetWatches,
            MsgType::Control => {
                let v = split_strings(p).ok_or(ErrorCode::EINVAL)?;
                if v.is_empty() {
                    return Err(ErrorCode::EINVAL);
                }
                Request::Control {
                    args: v.into_iter().map(utf8).collect::<Result<_, _>>()?,
                }
            }
            MsgType::WatchEvent | MsgType::Error => return Err(ErrorCode::EINVAL),
        })
    }
}

/// A message as a client sees it: a reply (to be matched by `req_id`), an error reply, or a
/// watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A successful reply to request `req_id`.
    Reply {
        /// The request it answers.
        req_id: u32,
        /// The request type echoed by the server.
        kind: MsgType,
        /// The payload.
        payload: Vec<u8>,
    },
    /// An error reply to request `req_id`.
    Error {
        /// The request it answers.
        req_id: u32,
        /// The error, or `None` if the name is not one of the protocol's.
        code: Option<ErrorCode>,
    },
    /// A watch fired.
    WatchEvent {
        /// The path that changed (relative if the watch was registered relative).
        path: String,
        /// The watch's token.
        token: String,
    },
}

/// Classifies a message received by a client. `None` if it is malformed (unknown type, a
/// watch event without path and token, non-UTF-8 strings): a protocol violation.
pub fn classify_incoming(msg: Message) -> Option<Incoming> {
    let kind = msg.kind()?;
    match kind {
        MsgType::WatchEvent => {
            let parts = split_strings(&msg.payload)?;
            if parts.len() < 2 {
                return None;
            }
            let path = core::str::from_utf8(parts[0]).ok()?.to_owned();
            let token = core::str::from_utf8(parts[1]).ok()?.to_owned();
            Some(Incoming::WatchEvent { path, token })
        }
        MsgType::Error => {
            let name = msg.payload.strip_suffix(&[0]).unwrap_or(&msg.payload);
            Some(Incoming::Error {
                req_id: msg.req_id,
                code: ErrorCode::from_name(name),
            })
        }
        _ => Some(Incoming::Reply {
            req_id: msg.req_id,
            kind,
            payload: msg.payload,
        }),
    }
}

/// Parses a reply made of NUL-terminated UTF-8 strings (`DIRECTORY`).
pub fn parse_string_list(payload: &[u8]) -> Option<Vec<String>> {
    split_strings(payload)?
        .into_iter()
        .map(|s| core::str::from_utf8(s).ok().map(str::to_owned))
        .collect()
}

/// Parses a `DIRECTORY_PART` reply: the node's generation, the names in this part, and
/// whether this part ends the list (it then carries an extra empty string).
pub fn parse_directory_part(payload: &[u8]) -> Option<(String, Vec<String>, bool)> {
    let mut parts = parse_string_list(payload)?;
    if parts.is_empty() {
        return None;
    }
    let generation = parts.remove(0);
    let done = parts.last().is_some_and(String::is_empty);
    if done {
        parts.pop();
    }
    if parts.iter().any(String::is_empty) {
        return None;
    }
    Some((generation, parts, done))
}

/// Parses a one-string reply (`"OK"`, a transaction id, a domain path, `"T"`/`"F"`). A
/// missing terminator is tolerated, as libxenstore does.
pub fn parse_single_string(payload: &[u8]) -> Option<&str> {
    let s = payload.strip_suffix(&[0]).unwrap_or(payload);
    if s.contains(&0) {
        return None;
    }
    core::str::from_utf8(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let h = Header {
            msg_type: 11,
            req_id: 0x0102_0304,
            tx_id: 7,
            len: 9,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..4], &11u32.to_ne_bytes());
        assert_eq!(&b[12..16], &9u32.to_ne_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn message_types_match_xs_wire() {
        let expected = [
            (MsgType::Control, 0),
            (MsgType::Directory, 1),
            (MsgType::Read, 2),
            (MsgType::GetPerms, 3),
            (MsgType::Watch, 4),
            (MsgType::Unwatch, 5),
            (MsgType::TransactionStart, 6),
            (MsgType::TransactionEnd, 7),
            (MsgType::Introduce, 8),
            (MsgType::Release, 9),
            (MsgType::GetDomainPath, 10),
            (MsgType::Write, 11),
            (MsgType::Mkdir, 12),
            (MsgType::Rm, 13),
            (MsgType::SetPerms, 14),
            (MsgType::WatchEvent, 15),
            (MsgType::Error, 16),
            (MsgType::IsDomainIntroduced, 17),
            (MsgType::Resume, 18),
            (MsgType::SetTarget, 19),
            (MsgType::ResetWatches, 21),
            (MsgType::DirectoryPart, 22),
        ];
        for (t, v) in expected {
            assert_eq!(t as u32, v);
            assert_eq!(MsgType::from_u32(v), Some(t));
        }
        assert_eq!(MsgType::from_u32(20), None);
        assert_eq!(MsgType::from_u32(23), None);
    }

    #[test]
    fn error_names() {
        assert_eq!(ErrorCode::ALL.len(), 16);
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(c.name().as_bytes()), Some(c));
            assert_eq!(ErrorCode::from_errno(c.errno()), c);
        }
        assert_eq!(ErrorCode::from_name(b"EWHAT"), None);
        assert_eq!(ErrorCode::from_errno(libc::ETIMEDOUT), ErrorCode::EIO);
    }

    #[test]
    fn read_message_limits() {
        let m = Message::new(MsgType::Read, 3, 0, b"/a\0".to_vec()).unwrap();
        let bytes = m.encode();
        assert_eq!(read_message(&mut &bytes[..]).unwrap(), Some(m));
        assert!(read_message(&mut &[][..]).unwrap().is_none());
        assert!(matches!(
            read_message(&mut &bytes[..10]),
            Err(WireError::Truncated { got: 10, want: 16 })
        ));
        assert!(matches!(
            read_message(&mut &bytes[..17]),
            Err(WireError::Truncated { got: 1, want: 3 })
        ));
        let huge = Header {
            msg_type: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        assert!(matches!(
            read_message(&mut &huge.to_bytes()[..]),
            Err(WireError::PayloadTooLong { len: 4097 })
        ));
        assert!(Message::new(MsgType::Write, 0, 0, vec![0; 4097]).is_err());
        assert!(Message::new(MsgType::Write, 0, 0, vec![0; 4096]).is_ok());
    }

    #[test]
    fn paths() {
        assert!(check_path("/", false).is_ok());
        assert!(check_path("/local/domain/0", false).is_ok());
        assert!(check_path("data/vchan-1_x", false).is_ok());
        assert_eq!(check_path("", false), Err(PathProblem::Empty));
        assert_eq!(check_path("/a//b", false), Err(PathProblem::DoubleSlash));
        assert_eq!(check_path("/a/", false), Err(PathProblem::TrailingSlash));
        assert_eq!(check_path("/a b", false), Err(PathProblem::BadChar));
        assert_eq!(check_path("/a.b", false), Err(PathProblem::BadChar));
        assert_eq!(
            check_path("@releaseDomain", false),
            Err(PathProblem::Special)
        );
        assert!(check_path("@releaseDomain", true).is_ok());
        let abs = format!("/{}", "a".repeat(ABS_PATH_MAX - 1));
        assert!(check_path(&abs, false).is_ok());
        assert_eq!(
            check_path(&format!("{abs}b"), false),
            Err(PathProblem::TooLong { max: ABS_PATH_MAX })
        );
        let rel = "a".repeat(REL_PATH_MAX);
        assert!(check_path(&rel, false).is_ok());
        assert_eq!(
            check_path(&format!("{rel}b"), false),
            Err(PathProblem::TooLong { max: REL_PATH_MAX })
        );
    }

    #[test]
    fn perms() {
        let p = parse_perm_list(b"n0\0r5\0b7\0").unwrap();
        assert_eq!(
            p,
            vec![
                Perm::none(DomId(0)),
                Perm::read(DomId(5)),
                Perm::both(DomId(7))
            ]
        );
        assert_eq!(perm_list_payload(&p), b"n0\0r5\0b7\0");
        for bad in [
            &b""[..],
            b"n0",
            b"x0\0",
            b"r\0",
            b"r-1\0",
            b"r99999\0",
            b"r0x1\0",
        ] {
            assert!(parse_perm_list(bad).is_none(), "{bad:?}");
        }
    }

    fn req(kind: MsgType, payload: &[u8]) -> Message {
        Message::new(kind, 1, 0, payload.to_vec()).unwrap()
    }

    #[test]
    fn request_parsing() {
        let m = req(MsgType::Write, b"/a/b\0va\0lue");
        assert_eq!(
            Request::parse(&m),
            Ok(Request::Write {
                path: "/a/b",
                value: b"va\0lue"
            })
        );
        let m = req(MsgType::Watch, b"@releaseDomain\0tok\0");
        assert_eq!(
            Request::parse(&m),
            Ok(Request::Watch {
                path: "@releaseDomain",
                token: "tok"
            })
        );
        let m = req(MsgType::SetPerms, b"/x\0n0\0r3\0");
        assert!(matches!(Request::parse(&m), Ok(Request::SetPerms { .. })));
        let m = req(MsgType::Introduce, b"3\x00123\x004\x00");
        assert_eq!(
            Request::parse(&m),
            Ok(Request::Introduce {
                domid: DomId(3),
                mfn: 123,
                port: 4
            })
        );
        for (k, p) in [
            (MsgType::Read, &b"/a"[..]),
            (MsgType::Read, b"/a\0/b\0"),
            (MsgType::Read, b"@releaseDomain\0"),
            (MsgType::Write, b"/a"),
            (MsgType::Watch, b"/a\0"),
            (MsgType::TransactionEnd, b"X\0"),
            (MsgType::Release, b"65535\0"),
            (MsgType::SetPerms, b"/a\0"),
            (MsgType::WatchEvent, b"/a\0t\0"),
            (MsgType::Read, b"/\xff\0"),
        ] {
            assert_eq!(
                Request::parse(&req(k, p)),
                Err(ErrorCode::EINVAL),
                "{k} {p:?}"
            );
        }
        let unknown = Message {
            msg_type: 20,
            req_id: 0,
            tx_id: 0,
            payload: vec![],
        };
        assert_eq!(Request::parse(&unknown), Err(ErrorCode::EINVAL));
    }

    #[test]
    fn incoming_classification() {
        let ev = req(MsgType::WatchEvent, b"/a/b\0tok\0");
        assert_eq!(
            classify_incoming(ev),
            Some(Incoming::WatchEvent {
                path: "/a/b".into(),
                token: "tok".into()
            })
        );
        let err = Message::error_reply(9, 0, ErrorCode::EAGAIN);
        assert_eq!(
            classify_incoming(err),
            Some(Incoming::Error {
                req_id: 9,
                code: Some(ErrorCode::EAGAIN)
            })
        );
        assert_eq!(
            parse_directory_part(b"12\0a\0b\0\0"),
            Some(("12".into(), vec!["a".into(), "b".into()], true))
        );
        assert_eq!(
            parse_directory_part(b"12\0a\0b\0"),
            Some(("12".into(), vec!["a".into(), "b".into()], false))
        );
        assert_eq!(parse_single_string(b"OK\0"), Some("OK"));
        assert_eq!(parse_single_string(b"OK"), Some("OK"));
        assert_eq!(parse_single_string(b"O\0K\0"), None);
    }
}
