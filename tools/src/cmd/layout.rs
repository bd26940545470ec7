//! `vchan layout`: the ring geometry a vchan server chooses for given minimum sizes, exactly as
//! libxenvchan does: orders, sizes, where each ring lives (in-page offset or granted pages),
//! the grant list, and the total number of grants.

use std::fmt::Write as _;
use std::process::ExitCode;

use vchan_ring::layout::{GRANT_REF_SIZE, GRANTS_OFFSET};
use vchan_ring::{Geometry, GeometryError, PAGE_SIZE, RingPlacement, Side};

/// Arguments of `vchan layout`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
                        $ vchan layout --read-min 64K --write-min 1M\n  \
                        (prints each ring's order, size and place, the grant list and the \
                        number of grants a server with those sizes uses)\n\n\
                        Exit codes: 0 done, 2 sizes a server would refuse (above 1M) or bad \
                        usage.")]
pub struct Args {
    /// Minimum size of the ring the server reads (the left ring, client to server). Bytes, or
    /// with a K or M suffix (KiB, MiB). At most 1M.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub read_min: usize,
    /// Minimum size of the ring the server writes (the right ring, server to client).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub write_min: usize,
}

/// Parses `4096`, `64K`, `1M` (binary multiples).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1usize << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        _ => (t, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("{s:?} is not a size: use bytes, or a number with K or M (e.g. 4096, 64K, 1M)")
        })
}

fn side_line(g: &Geometry, side: Side) -> String {
    let (name, who) = match side {
        Side::Left => ("left ", "client -> server, the server reads it"),
        Side::Right => ("right", "server -> client, the server writes it"),
    };
    let order = g.order(side);
    let place = match g.placement(side) {
        RingPlacement::InPage { offset } => {
            format!("in the control page at offset {offset} (no grant of its own)")
        }
        RingPlacement::Granted { pages } => {
            let idx = g.grant_indices(side);
            format!(
                "{pages} granted page{}, refs grants[{}..{}]",
                if pages == 1 { "" } else { "s" },
                idx.start,
                idx.end
            )
        }
    };
    format!(
        "{name} ring ({who}): order {order}, {} bytes, {place}",
        order.size()
    )
}

/// The report for `args`, or the reason the server would refuse them.
pub fn render(args: &Args) -> Result<String, GeometryError> {
    let g = Geometry::server_choice(args.read_min, args.write_min)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vchan geometry for --read-min {} --write-min {} (as libxenvchan's server chooses it)",
        args.read_min, args.write_min
    );
    let _ = writeln!(out, "{}", side_line(&g, Side::Left));
    let _ = writeln!(out, "{}", side_line(&g, Side::Right));
    let _ = writeln!(
        out,
        "control page: {PAGE_SIZE} bytes; header bytes 0..{GRANTS_OFFSET}; grant list {} refs \
         of {GRANT_REF_SIZE} bytes at {GRANTS_OFFSET}..{} (must end by {})",
        g.total_grants(),
        g.grants_end(),
        g.grant_limit()
    );
    let _ = writeln!(
        out,
        "grants: {} in total (1 control page + {} left + {} right); shared memory {} bytes",
        1 + g.total_grants(),
        g.grant_count(Side::Left),
        g.grant_count(Side::Right),
        PAGE_SIZE * (1 + g.total_grants())
    );
    Ok(out)
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match render(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vchan layout: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(read_min: usize, write_min: usize) -> Args {
        Args {
            read_min,
            write_min,
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size(" 2k "), Ok(2048));
        for bad in ["", "K", "-1", "1G", "1.5M", "12x"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_is_in_page() {
        let text = render(&args(0, 0)).unwrap();
        assert!(text.contains("left  ring (client -> server, the server reads it): order 10, 1024 bytes, in the control page at offset 1024"), "{text}");
        assert!(text.contains("right ring (server -> client, the server writes it): order 11, 2048 bytes, in the control page at offset 2048"), "{text}");
        assert!(
            text.contains("grants: 1 in total (1 control page + 0 left + 0 right)"),
            "{text}"
        );
    }

    #[test]
    fn granted_rings_list_their_refs() {
        let text = render(&args(64 << 10, 1 << 20)).unwrap();
        assert!(
            text.contains("order 16, 65536 bytes, 16 granted pages, refs grants[0..16]"),
            "{text}"
        );
        assert!(
            text.contains("order 20, 1048576 bytes, 256 granted pages, refs grants[16..272]"),
            "{text}"
        );
        assert!(
            text.contains("grant list 272 refs of 4 bytes at 24..1112 (must end by 4096)"),
            "{text}"
        );
        assert!(text.contains("grants: 273 in total"), "{text}");
    }

    #[test]
    fn one_side_in_page() {
        let text = render(&args(2048, 4097)).unwrap();
        assert!(
            text.contains("order 11, 2048 bytes, in the control page at offset 2048"),
            "{text}"
        );
        assert!(
            text.contains("order 13, 8192 bytes, 2 granted pages, refs grants[0..2]"),
            "{text}"
        );
        assert!(text.contains("(must end by 2048)"), "{text}");
    }

    #[test]
    fn more_than_a_mebibyte_is_refused() {
        let e = render(&args((1 << 20) + 1, 0)).unwrap_err();
        assert!(e.to_string().contains("maximum is 1048576 bytes"), "{e}");
    }
}
