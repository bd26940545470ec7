//! Small helpers shared by the subcommands: sizes, exit codes, error reporting.

use std::process::ExitCode;

use vchan_msg::Error;

/// Exit codes scripts can rely on besides 0 (success) and 2 (bad usage, from clap); all are
/// listed in `vchan --help`.
pub mod exit {
    /// The transfer failed (peer closed early, I/O error, corrupt ring, timeout).
    pub const FAILED: u8 = 1;
    /// The channel could not be set up (no Xen and no sim, no server, wrong domid…).
    pub const SETUP: u8 = 3;
    /// Received data did not match what was expected (`vchan pump`).
    pub const MISMATCH: u8 = 4;
    /// Bad usage (clap's own code for unknown options and invalid values).
    pub const USAGE: u8 = 2;
}

/// Parses `4096`, `64K`, `1M`, `2G` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1usize << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!(
                "{s:?} is not a size: use bytes, or a number with K, M or G (e.g. 4096, 64K, 1M)"
            )
        })
}

/// Formats a byte count for people.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints `vchan <cmd>: <error>` with its causes and returns the matching exit code.
pub fn report(cmd: &str, err: &anyhow::Error) -> ExitCode {
    eprintln!("vchan {cmd}: {err:#}");
    ExitCode::from(code_for(err))
}

/// Marks an error as a failure to set the channel (or the host, or XenStore) up: attach it
/// with `anyhow::Context::context` around everything done before data moves, and
/// [`code_for`] answers [`exit::SETUP`] whatever the cause. Errors without it count as set-up
/// failures only when their kind says so on its own (no server, wrong domain, no Xen…).
#[derive(Debug)]
pub struct SetupFailed(pub String);

impl std::fmt::Display for SetupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Marks an error as bad usage detected after parsing (exit code [`exit::USAGE`], as clap's
/// own refusals).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Whether a Xen-services error can only happen while setting up (no Xen, no device, no
/// grant left): those answer [`exit::SETUP`] even without [`SetupFailed`].
fn xen_setup_only(e: &vchan_xenif::Error) -> bool {
    matches!(
        e,
        vchan_xenif::Error::NoBackend { .. }
            | vchan_xenif::Error::MissingDevice { .. }
            | vchan_xenif::Error::GrantLimit { .. }
    )
}

/// The exit code for an error: [`exit::MISMATCH`] for wrong data, [`exit::SETUP`] for an
/// error marked [`SetupFailed`] or one that only set-up can cause, [`exit::FAILED`] for
/// everything else — a XenStore or event-channel failure in the middle of a transfer is a
/// failed transfer, not a set-up problem.
pub fn code_for(err: &anyhow::Error) -> u8 {
    // `downcast_ref` on the error itself also sees through `.context(...)` layers, which
    // `chain()` hands back as their wrapper type.
    if err.downcast_ref::<Mismatch>().is_some()
        || err.chain().any(|c| c.downcast_ref::<Mismatch>().is_some())
    {
        return exit::MISMATCH;
    }
    if err.downcast_ref::<UsageError>().is_some()
        || err
            .chain()
            .any(|c| c.downcast_ref::<UsageError>().is_some())
    {
        return exit::USAGE;
    }
    if err.downcast_ref::<SetupFailed>().is_some() {
        return exit::SETUP;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::Handshake { .. }
                | Error::BadGeometry { .. }
                | Error::Geometry(_)
                | Error::InvalidPath { .. } => exit::SETUP,
                Error::Xen(x) if xen_setup_only(x) => exit::SETUP,
                _ => exit::FAILED,
            };
        }
        if let Some(x) = cause.downcast_ref::<vchan_xenif::Error>() {
            return if xen_setup_only(x) {
                exit::SETUP
            } else {
                exit::FAILED
            };
        }
    }
    exit::FAILED
}

/// Parses a number of seconds (`10`, `0.5`): finite and not negative, so that it always
/// makes a [`std::time::Duration`]. For clap's `value_parser` (a refusal is exit code 2).
pub fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && std::time::Duration::try_from_secs_f64(v).is_ok() => {
            Ok(v)
        }
        _ => Err(format!(
            "{s:?} is not a number of seconds: use a finite, non-negative number such as 10 or \
             0.5"
        )),
    }
}

/// [`parse_secs`] as a [`std::time::Duration`].
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    parse_secs(s).map(std::time::Duration::from_secs_f64)
}

/// The largest buffer a `--chunk`-like option may ask for: the rings are at most 1 MiB, so
/// larger buffers gain nothing, and an absurd size must be refused, not abort the process.
pub const MAX_CHUNK: usize = 64 << 20;

/// Parses a buffer size (see [`parse_size`]) between 1 byte and [`MAX_CHUNK`].
pub fn parse_chunk(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        0 => Err(format!("{s:?}: the size must be at least 1 byte")),
        n if n > MAX_CHUNK => Err(format!(
            "{s:?} is larger than the {} this option allows (the rings hold at most 1 MiB)",
            human(MAX_CHUNK as u64)
        )),
        n => Ok(n),
    }
}

/// Received data differs from the expected pattern.
#[derive(Debug, thiserror::Error)]
#[error("received data differs from what the peer should have sent, first at byte {offset}")]
pub struct Mismatch {
    /// Absolute offset of the first wrong byte.
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size(&format!("{}G", usize::MAX)).is_err());
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }

    #[test]
    fn seconds_and_chunks_are_validated() {
        assert_eq!(parse_secs("10"), Ok(10.0));
        assert_eq!(parse_secs("0.5"), Ok(0.5));
        assert_eq!(parse_secs("0"), Ok(0.0));
        for bad in ["inf", "-inf", "NaN", "-1", "", "1e300", "ten"] {
            assert!(parse_secs(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_duration("1.5"),
            Ok(std::time::Duration::from_millis(1500))
        );
        assert_eq!(parse_chunk("64K"), Ok(65536));
        assert!(parse_chunk("0").is_err());
        assert!(parse_chunk("65M").unwrap_err().contains("64.0 MiB"));
        assert!(parse_chunk("1000000G").is_err());
    }

    #[test]
    fn exit_codes_follow_the_phase_not_the_layer() {
        use anyhow::Context;
        let xs_err = || -> anyhow::Error {
            Error::XenStore(vchan_xenif::xenstore::Error::TooManyRetries { attempts: 3 }).into()
        };
        // A XenStore failure while setting up is a set-up failure…
        let setup = Err::<(), _>(xs_err())
            .context(SetupFailed("cannot connect".into()))
            .context("outer")
            .unwrap_err();
        assert_eq!(code_for(&setup), exit::SETUP);
        // …and one in the middle of a transfer a failed transfer.
        let mid = Err::<(), _>(xs_err()).context("receiving").unwrap_err();
        assert_eq!(code_for(&mid), exit::FAILED);
        let handshake: anyhow::Error = Error::Handshake {
            peer: vchan_xenif::DomId(0),
            path: "/p".into(),
            reason: "r".into(),
        }
        .into();
        assert_eq!(code_for(&handshake), exit::SETUP);
        let closed = anyhow::Error::from(Error::PeerClosed {
            peer: vchan_xenif::DomId(1),
        })
        .context("sending");
        assert_eq!(code_for(&closed), exit::FAILED);
        let mismatch = anyhow::Error::from(Mismatch { offset: 3 }).context("x");
        assert_eq!(code_for(&mismatch), exit::MISMATCH);
        // A usage error given as the context of a lower-level one is still a usage error.
        let usage = Err::<(), _>(std::io::Error::other("bad fd"))
            .context(UsageError("--fd 9 is not open".into()))
            .unwrap_err();
        assert_eq!(code_for(&usage), exit::USAGE);
        let no_xen: anyhow::Error =
            Error::Xen(vchan_xenif::Error::InvalidArgument("x".into())).into();
        assert_eq!(code_for(&no_xen), exit::FAILED);
    }
}
