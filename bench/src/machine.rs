//! The machine a report was measured on: CPU, cores, kernel, compiler, load, date.
//!
//! Every field is read from `/proc` and `/sys` (or, for the compiler, recorded at build time
//! by `build.rs`), so that a report says where its figures come from. Nothing here fails: a
//! field that cannot be read says so.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the report says about the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Host name (`/proc/sys/kernel/hostname`).
    pub host: String,
    /// CPU model (`model name` in `/proc/cpuinfo`).
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cpus: usize,
    /// Kernel release and version (`/proc/sys/kernel/{osrelease,version}`).
    pub kernel: String,
    /// The compiler that built the harness (`rustc -V`, recorded by `build.rs`).
    pub rustc: String,
    /// Total memory (`MemTotal` in `/proc/meminfo`), in bytes.
    pub memory: u64,
    /// Whether a hypervisor is visible (the `hypervisor` CPU flag): figures from a virtual
    /// machine carry its scheduling noise.
    pub virtualised: bool,
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
        };
        let cpu_model = field("model name").unwrap_or_else(|| "unknown CPU".into());
        let virtualised = field("flags").is_some_and(|f| f.split(' ').any(|x| x == "hypervisor"));
        let kernel = match (
            read_trimmed("/proc/sys/kernel/osrelease"),
            read_trimmed("/proc/sys/kernel/version"),
        ) {
            (Some(r), Some(v)) => format!("Linux {r} ({v})"),
            (Some(r), None) => format!("Linux {r}"),
            _ => "unknown kernel".into(),
        };
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    let rest = l.strip_prefix("MemTotal:")?;
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            })
            .map_or(0, |kb| kb * 1024);
        Machine {
            host: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            rustc: env!("VCHAN_BENCH_RUSTC").to_owned(),
            memory,
            virtualised,
        }
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), if readable.
pub fn load_average() -> Option<[f64; 3]> {
    let s = fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The current time (UTC) as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        (s / 60) % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(today_utc().len(), 10);
    }

    #[test]
    fn describes_this_machine() {
        let m = Machine::describe();
        assert!(m.cpus >= 1);
        assert!(!m.rustc.is_empty());
        assert!(load_average().is_some());
    }
}
