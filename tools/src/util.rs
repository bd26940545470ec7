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

/// The exit code for an error: set-up failures differ from transfer failures.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::Handshake { .. }
                | Error::BadGeometry { .. }
                | Error::Geometry(_)
                | Error::InvalidPath { .. }
                | Error::Xen(_)
                | Error::XenStore(_) => exit::SETUP,
                _ => exit::FAILED,
            };
        }
        if cause.downcast_ref::<vchan_xenif::Error>().is_some()
            || cause
                .downcast_ref::<vchan_xenif::xenstore::Error>()
                .is_some()
        {
            return exit::SETUP;
        }
        if cause.downcast_ref::<Mismatch>().is_some() {
            return exit::MISMATCH;
        }
    }
    exit::FAILED
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
}
