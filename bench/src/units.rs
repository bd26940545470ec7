//! The units the report is written in: sizes as `64`, `4K`, `1M` (powers of 1024, as ring
//! sizes are given), rates in MB/s (10^6 bytes per second, as `dd` and the issue's targets
//! say) and times in µs or ns.

/// A size in bytes as `64`, `4K`, `256K`, `1M` (exact powers of 1024 only get a suffix).
///
/// ```
/// use vchan_bench::units::size;
/// assert_eq!(size(64), "64");
/// assert_eq!(size(4096), "4K");
/// assert_eq!(size(1 << 20), "1M");
/// assert_eq!(size(1500), "1500");
/// ```
pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{}M", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{}K", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// Parses `64`, `4K`, `4k`, `1M`, `2G` into bytes.
///
/// ```
/// use vchan_bench::units::parse_size;
/// assert_eq!(parse_size("64K"), Some(65536));
/// assert_eq!(parse_size("1m"), Some(1 << 20));
/// assert_eq!(parse_size("x"), None);
/// ```
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    num.parse::<usize>().ok()?.checked_mul(1 << shift)
}

/// A rate in MB/s (10^6 bytes per second) with a sensible number of digits.
///
/// ```
/// use vchan_bench::units::mbps;
/// assert_eq!(mbps(1234.4), "1234");
/// assert_eq!(mbps(12.34), "12.3");
/// assert_eq!(mbps(0.1234), "0.12");
/// ```
pub fn mbps(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A duration given in nanoseconds, as `850 ns`, `1.25 µs`, `48.1 µs` or `2.50 ms`.
///
/// ```
/// use vchan_bench::units::time_ns;
/// assert_eq!(time_ns(850.0), "850 ns");
/// assert_eq!(time_ns(1250.0), "1.25 µs");
/// assert_eq!(time_ns(48_100.0), "48.1 µs");
/// assert_eq!(time_ns(2_500_000.0), "2.50 ms");
/// ```
pub fn time_ns(ns: f64) -> String {
    if ns < 1000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// A ratio as `3.21×`.
pub fn times(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}
