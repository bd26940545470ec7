//! Smoke test of the real-Xen backend between two domains (used by `tools/xen-lab`).
//!
//! One domain shares pages and binds an unbound event port; the other maps the pages, checks
//! what the sharer wrote, writes its own pattern and signals the port; the sharer checks that.
//! Grant references and the port travel through XenStore with the `xenstore-write`/`xenstore-read`
//! command-line tools, under a directory both domains can write.
//!
//! ```text
//! xen_smoke share --peer D --pages N --xs DIR [--ro] [--await-unmap] [--timeout SECS]
//! xen_smoke map   --peer D --xs DIR [--ro] [--hold] [--timeout SECS]
//! xen_smoke share-once --peer D --pages N          share, print the refs, release (error paths)
//! xen_smoke map-refs --peer D --refs R1,R2,.. [--ro]  map and release (error paths)
//! xen_smoke bind --peer D --port P                 bind to a remote port (error paths)
//! ```
//!
//! `share --await-unmap` also waits for the mapper's unmap notification (the mapper is killed by
//! the test) and checks that its byte was cleared. `map --ro` also checks that Xen refuses a
//! writable mapping of a read-only grant and that a write through the read-only mapping faults
//! (in a child process). Figures are printed as `FIGURE key=value` lines; errors end the
//! process with status 1 and the error's message.
//!
//! Real Xen only: this program never uses the simulated host.

use std::collections::HashMap;
use std::error::Error;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use vchan_xenif::xen::{XenEventChannels, XenGrantMapper, XenGrantSharer};
use vchan_xenif::{
    Access, DomId, EventChannels, EventPort, GrantMapper, GrantRef, GrantSharer, PAGE_SIZE,
    UnmapNotify,
};

type Res<T> = Result<T, Box<dyn Error>>;

/// Byte offset (in page 0) of the mapper's "alive" byte: the sharer sets it to 1, the mapper's
/// unmap notification clears it. The 8-byte word around it carries no pattern.
const LIVE_BYTE: usize = 16;
const SHARER_SEED: u64 = 0x5348_4152_4552_0001;
const MAPPER_SEED: u64 = 0x4d41_5050_4552_0002;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xen_smoke: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    flags: HashMap<String, Option<String>>,
}

impl Opts {
    fn parse(args: &[String]) -> Res<Opts> {
        let mut flags = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().cloned(),
                _ => None,
            };
            flags.insert(key.to_owned(), value);
        }
        Ok(Opts { flags })
    }

    fn value(&self, key: &str) -> Res<&str> {
        match self.flags.get(key) {
            Some(Some(v)) => Ok(v),
            _ => Err(format!("--{key} VALUE is required").into()),
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.flags.contains_key(key)
    }

    fn peer(&self) -> Res<DomId> {
        Ok(self.value("peer")?.parse()?)
    }

    fn timeout(&self) -> Res<Duration> {
        Ok(match self.flags.get("timeout") {
            Some(Some(v)) => Duration::from_secs(v.parse()?),
            _ => Duration::from_secs(60),
        })
    }

    fn access(&self) -> Access {
        if self.flag("ro") {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        }
    }
}

fn run(args: &[String]) -> Res<()> {
    let (cmd, rest) = args.split_first().ok_or(
        "usage: xen_smoke share|map|share-once|map-refs|bind|poke-ro ... (see the source)",
    )?;
    let opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "share" => share(&opts),
        "map" => map(&opts),
        "share-once" => share_once(&opts),
        "map-refs" => map_refs(&opts),
        "bind" => bind(&opts),
        "poke-ro" => poke_ro(&opts),
        other => Err(format!("unknown command {other:?}").into()),
    }
}

fn figure(key: &str, value: impl std::fmt::Display) {
    println!("FIGURE {key}={value}");
}

fn micros(d: Duration) -> u128 {
    d.as_micros()
}

// ---- XenStore through the command-line tools ---------------------------------------------------

fn xs_write(path: &str, value: &str) -> Res<()> {
    let out = Command::new("xenstore-write")
        .arg(path)
        .arg(value)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "xenstore-write {path} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

fn xs_try_read(path: &str) -> Res<Option<String>> {
    let out = Command::new("xenstore-read").arg(path).output()?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// Waits (polling, bounded) until `path` exists; returns its value. The polls back off: each
/// spawns a process, which a single emulated vCPU feels.
fn xs_wait(path: &str, timeout: Duration) -> Res<String> {
    let start = Instant::now();
    let mut nap = Duration::from_millis(20);
    loop {
        if let Some(v) = xs_try_read(path)? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(
                format!("timed out after {timeout:?} waiting for XenStore key {path}").into(),
            );
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(400));
    }
}

// ---- page patterns (volatile word accesses: the peer may write the pages at any time) ----------

fn pattern(seed: u64, word: usize) -> u64 {
    (word as u64 ^ seed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
}

/// Words of a region, skipping the word holding the live byte.
fn pattern_words(len: usize) -> impl Iterator<Item = usize> {
    (0..len / 8).filter(|&w| w != LIVE_BYTE / 8)
}

fn fill(base: *mut u8, len: usize, seed: u64) {
    let words = base.cast::<u64>();
    for w in pattern_words(len) {
        // SAFETY: `base` is a page-aligned, writable mapping of `len` bytes, alive for this call;
        // `w < len / 8`, so the aligned word is inside it.
        unsafe { words.wrapping_add(w).write_volatile(pattern(seed, w)) };
    }
}

/// Checks every word; returns a description of the first mismatch.
fn check(base: *const u8, len: usize, seed: u64) -> Res<()> {
    let words = base.cast::<u64>();
    for w in pattern_words(len) {
        // SAFETY: `base` is a page-aligned, readable mapping of `len` bytes alive for this call;
        // the word is inside it. The value is read once and only compared.
        let got = unsafe { words.wrapping_add(w).read_volatile() };
        if got != pattern(seed, w) {
            return Err(format!(
                "pattern mismatch at byte {} (page {}): {got:#018x} instead of {:#018x}",
                w * 8,
                w * 8 / PAGE_SIZE,
                pattern(seed, w)
            )
            .into());
        }
    }
    Ok(())
}

fn read_byte(base: *const u8, offset: usize) -> u8 {
    // SAFETY: callers pass an offset inside a live mapping (LIVE_BYTE < PAGE_SIZE <= len).
    unsafe { base.wrapping_add(offset).read_volatile() }
}

fn write_byte(base: *mut u8, offset: usize, value: u8) {
    // SAFETY: as for `read_byte`, on a writable mapping.
    unsafe { base.wrapping_add(offset).write_volatile(value) }
}

/// Waits for `port` to fire (bounded), then unmasks it.
fn await_event(evtchn: &XenEventChannels, port: EventPort, timeout: Duration) -> Res<Duration> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match evtchn.wait(Some(left))? {
            Some(p) => {
                evtchn.unmask(p)?;
                if p == port {
                    return Ok(start.elapsed());
                }
            }
            None => return Err(format!("no event on port {port} within {timeout:?}").into()),
        }
    }
}

// ---- the sharing side -------------------------------------------------------------------------

fn share(o: &Opts) -> Res<()> {
    let (peer, xs, timeout, access) = (o.peer()?, o.value("xs")?, o.timeout()?, o.access());
    let count: usize = o.value("pages")?.parse()?;
    let evtchn = XenEventChannels::open()?;
    let port = evtchn.bind_unbound(peer)?;
    let sharer = XenGrantSharer::open()?;
    let t = Instant::now();
    let pages = sharer.share(peer, count, access)?;
    figure("share_us", micros(t.elapsed()));
    fill(pages.as_ptr(), pages.len(), SHARER_SEED);
    write_byte(pages.as_ptr(), LIVE_BYTE, 1);
    let refs: Vec<String> = pages.refs().iter().map(|r| r.to_string()).collect();
    let refs = refs.join(",");
    if refs.len() > 2000 {
        return Err(format!("{} bytes of refs do not fit one XenStore value", refs.len()).into());
    }
    xs_write(&format!("{xs}/refs"), &refs)?;
    xs_write(&format!("{xs}/port"), &port.to_string())?;
    println!("shared {count} page(s) with domain {peer} ({access:?}), port {port}, refs {refs}");

    let waited = await_event(&evtchn, port, timeout)?;
    figure("event_wait_ms", waited.as_millis());
    let mapped = xs_wait(&format!("{xs}/mapped"), Duration::from_secs(5))?;
    if mapped != "ok" {
        return Err(format!("the mapper reported {mapped:?}").into());
    }
    match access {
        Access::ReadWrite => check(pages.as_ptr(), pages.len(), MAPPER_SEED)
            .map_err(|e| format!("the mapper's pattern: {e}"))?,
        Access::ReadOnly => check(pages.as_ptr(), pages.len(), SHARER_SEED)
            .map_err(|e| format!("read-only pages changed: {e}"))?,
    }
    println!("verified the mapper's view of {count} page(s)");
    xs_write(&format!("{xs}/verified"), "1")?;

    if o.flag("await-unmap") {
        let waited = await_event(&evtchn, port, timeout)
            .map_err(|e| format!("waiting for the mapper's unmap notification: {e}"))?;
        figure("unmap_notify_ms", waited.as_millis());
        if access == Access::ReadWrite {
            let live = read_byte(pages.as_ptr(), LIVE_BYTE);
            if live != 0 {
                return Err(
                    format!("unmap notification came but the live byte is {live}, not 0").into(),
                );
            }
            println!("unmap notification: event received and live byte cleared");
        } else {
            println!("unmap notification: event received");
        }
    }
    Ok(())
}

// ---- the mapping side -------------------------------------------------------------------------

fn parse_refs(s: &str) -> Res<Vec<GrantRef>> {
    s.split(',')
        .map(|r| Ok(GrantRef(r.trim().parse()?)))
        .collect()
}

fn map(o: &Opts) -> Res<()> {
    let (peer, xs, timeout, access) = (o.peer()?, o.value("xs")?, o.timeout()?, o.access());
    let refs = parse_refs(&xs_wait(&format!("{xs}/refs"), timeout)?)?;
    let port: u32 = xs_wait(&format!("{xs}/port"), timeout)?.parse()?;
    let evtchn = XenEventChannels::open()?;
    let local = evtchn.bind_interdomain(peer, EventPort(port))?;
    let mapper = XenGrantMapper::open()?;
    let t = Instant::now();
    let pages = mapper.map(peer, &refs, access)?;
    figure("map_us", micros(t.elapsed()));
    let t = Instant::now();
    check(pages.as_ptr(), pages.len(), SHARER_SEED)
        .map_err(|e| format!("the sharer's pattern: {e}"))?;
    let live = read_byte(pages.as_ptr(), LIVE_BYTE);
    if live != 1 {
        return Err(format!("live byte is {live}, expected 1").into());
    }
    figure("verify_us", micros(t.elapsed()));
    println!(
        "mapped and verified {} page(s) of domain {peer} ({access:?})",
        refs.len()
    );

    match access {
        Access::ReadWrite => {
            pages.set_unmap_notify(UnmapNotify {
                clear_byte: Some(LIVE_BYTE),
                event: Some(local),
            })?;
            fill(pages.as_ptr(), pages.len(), MAPPER_SEED);
        }
        Access::ReadOnly => {
            pages.set_unmap_notify(UnmapNotify {
                clear_byte: None,
                event: Some(local),
            })?;
            // Xen enforces read-only grants: a writable mapping must be refused...
            match mapper.map(peer, &refs, Access::ReadWrite) {
                Err(e @ vchan_xenif::Error::GrantDenied { .. }) => {
                    println!("writable mapping of a read-only grant refused: {e}")
                }
                Err(e) => {
                    return Err(
                        format!("writable mapping refused with the wrong error: {e}").into(),
                    );
                }
                Ok(_) => return Err("a read-only grant was mapped writable".into()),
            }
            // ...and a write through the read-only mapping faults (in a child process).
            poke_read_only_in_child(peer, &refs)?;
        }
    }
    xs_write(&format!("{xs}/mapped"), "ok")?;
    evtchn.notify(local)?;

    if o.flag("hold") {
        // Keep the mapping until the test kills us (the unmap notification then fires).
        println!("holding the mapping until killed");
        std::thread::sleep(timeout);
        return Err("--hold: not killed in time".into());
    }
    xs_wait(&format!("{xs}/verified"), timeout)?;
    drop(pages);
    Ok(())
}

fn poke_read_only_in_child(peer: DomId, refs: &[GrantRef]) -> Res<()> {
    let list: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    let out = Command::new(std::env::current_exe()?)
        .args([
            "poke-ro",
            "--peer",
            &peer.to_string(),
            "--refs",
            &list.join(","),
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("read-ok") {
        return Err(format!(
            "the child could not map the pages read-only: {} {}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    match out.status.signal() {
        Some(sig) if sig == libc::SIGSEGV || sig == libc::SIGBUS => {
            figure("ro_write", "faulted");
            println!("a write through the read-only mapping faulted (signal {sig})");
            Ok(())
        }
        _ => Err(format!(
            "a write through a read-only mapping did not fault: {}",
            out.status
        )
        .into()),
    }
}

/// Child of `map --ro`: maps the pages read-only itself, reads them, then writes (must fault).
fn poke_ro(o: &Opts) -> Res<()> {
    let (peer, refs) = (o.peer()?, parse_refs(o.value("refs")?)?);
    let pages = XenGrantMapper::open()?.map(peer, &refs, Access::ReadOnly)?;
    check(pages.as_ptr(), pages.len(), SHARER_SEED)?;
    println!("read-ok");
    use std::io::Write;
    std::io::stdout().flush()?;
    write_byte(pages.as_ptr(), pages.len() - 1, 0x55);
    println!("wrote to a read-only mapping");
    Ok(())
}

// ---- error paths ------------------------------------------------------------------------------

fn share_once(o: &Opts) -> Res<()> {
    let (peer, count) = (o.peer()?, o.value("pages")?.parse()?);
    let pages = XenGrantSharer::open()?.share(peer, count, o.access())?;
    println!(
        "shared {count} page(s) with domain {peer}: first ref {}",
        pages.refs()[0]
    );
    Ok(())
}

fn map_refs(o: &Opts) -> Res<()> {
    let (peer, refs) = (o.peer()?, parse_refs(o.value("refs")?)?);
    let pages = XenGrantMapper::open()?.map(peer, &refs, o.access())?;
    println!(
        "mapped {} page(s) of domain {peer}",
        pages.len() / PAGE_SIZE
    );
    Ok(())
}

fn bind(o: &Opts) -> Res<()> {
    let (peer, port) = (o.peer()?, o.value("port")?.parse()?);
    let local = XenEventChannels::open()?.bind_interdomain(peer, EventPort(port))?;
    println!("bound port {port} of domain {peer} as local port {local}");
    Ok(())
}
