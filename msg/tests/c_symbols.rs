//! The drop-in C libraries (`tools/sim-libs.sh`) define every Xen library symbol, at the
//! version it is asked for, that Debian's C programs on the simulated host import:
//! `libxenvchan.so.4.17` (the interop tests' C side), `libxenctrl.so.4.17` and
//! `libxendevicemodel.so.1` (loaded by `vchan-socket-proxy`'s client mode).
//!
//! Debian links these with `BIND_NOW`, so a missing symbol would already make every interop
//! run fail at load time; this test says which symbol, and checks versions too.

#[path = "c/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::{available, debian_libs, sim_libs};

/// The libraries the simulated host replaces, by the prefix of their symbols.
const REPLACED: [(&str, &str); 5] = [
    ("xenevtchn_", "libxenevtchn.so.1"),
    ("xengnttab_", "libxengnttab.so.1"),
    ("xengntshr_", "libxengnttab.so.1"),
    ("xencall", "libxencall.so.1"),
    ("xenforeignmemory_", "libxenforeignmemory.so.1"),
];

/// `name@VERSION` (or a bare `name` when unversioned) of the dynamic symbols `nm` lists.
fn symbols(file: &Path, defined: bool) -> BTreeSet<String> {
    let out = Command::new("nm")
        .args([
            "-D",
            "--with-symbol-versions",
            if defined {
                "--defined-only"
            } else {
                "--undefined-only"
            },
        ])
        .arg(file)
        .output()
        .expect("running nm (binutils)");
    assert!(
        out.status.success(),
        "nm {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        // nm writes a default version as `@@`; a reference binds to it as `@`.
        .map(|s| s.replace("@@", "@"))
        .collect()
}

#[test]
fn the_drop_in_libraries_define_every_symbol_debians_programs_import() {
    let importers = [
        "libxenvchan.so.4.17",
        "libxenctrl.so.4.17",
        "libxendevicemodel.so.1",
    ];
    let debian = debian_libs();
    for lib in importers {
        if !available(
            &debian.join(lib),
            "run tools/setup.sh (apt-get download libxenmisc4.17 libxendevicemodel1)",
        ) {
            return;
        }
    }
    let dir = sim_libs();
    let mut checked = 0;
    let mut missing = Vec::new();
    for importer in importers {
        for wanted in symbols(&debian.join(importer), false) {
            let Some((_, provider)) = REPLACED.iter().find(|(p, _)| wanted.starts_with(p)) else {
                continue;
            };
            checked += 1;
            // An unversioned reference binds to the library's default version of the name.
            let found = symbols(&dir.join(provider), true).iter().any(|have| {
                *have == wanted
                    || (!wanted.contains('@') && have.split('@').next() == Some(wanted.as_str()))
            });
            if !found {
                missing.push(format!(
                    "{wanted} (imported by {importer}, wanted in {provider})"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the drop-in libraries lack:\n  {}",
        missing.join("\n  ")
    );
    assert!(
        checked >= 19,
        "only {checked} imports checked: is nm's output parsed right?"
    );
    eprintln!(
        "{checked} imports of {} resolved by the drop-in libraries in {}",
        importers.join(", "),
        dir.display()
    );
}
