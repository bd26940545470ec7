//! Our control-page layout against the C one: compiles a small C program against Xen's
//! `xen/io/libxenvchan.h` (Debian `libxen-dev`, unpacked into `target/debian/root` by `tools/setup.sh`) that prints
//! `offsetof`/`sizeof` of every field and the notify constants, and compares each with ours.
//!
//! Skipped with a printed reason only when no C compiler or header exists and `CI` is not set.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use vchan_ring::layout::{
    CLI_LIVE_OFFSET, CLI_NOTIFY_OFFSET, GRANTS_OFFSET, LEFT_CONS_OFFSET, LEFT_ORDER_OFFSET,
    LEFT_PROD_OFFSET, RIGHT_CONS_OFFSET, RIGHT_ORDER_OFFSET, RIGHT_PROD_OFFSET, SRV_LIVE_OFFSET,
    SRV_NOTIFY_OFFSET,
};
use vchan_ring::{NOTIFY_READ, NOTIFY_WRITE, RingShared, VchanInterface};

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <xen/io/libxenvchan.h>

#define FIELD(type, f) \
    printf(#type "." #f " %zu %zu\n", offsetof(struct type, f), sizeof(((struct type *)0)->f))

int main(void) {
    printf("sizeof.ring_shared %zu\n", sizeof(struct ring_shared));
    printf("sizeof.vchan_interface %zu\n", sizeof(struct vchan_interface));
    FIELD(ring_shared, cons);
    FIELD(ring_shared, prod);
    FIELD(vchan_interface, left);
    FIELD(vchan_interface, right);
    FIELD(vchan_interface, left.cons);
    FIELD(vchan_interface, left.prod);
    FIELD(vchan_interface, right.cons);
    FIELD(vchan_interface, right.prod);
    FIELD(vchan_interface, left_order);
    FIELD(vchan_interface, right_order);
    FIELD(vchan_interface, cli_live);
    FIELD(vchan_interface, srv_live);
    FIELD(vchan_interface, cli_notify);
    FIELD(vchan_interface, srv_notify);
    printf("vchan_interface.grants %zu %zu\n", offsetof(struct vchan_interface, grants),
           sizeof(((struct vchan_interface *)0)->grants[0]));
    printf("const.VCHAN_NOTIFY_WRITE %d\n", VCHAN_NOTIFY_WRITE);
    printf("const.VCHAN_NOTIFY_READ %d\n", VCHAN_NOTIFY_READ);
    return 0;
}
"#;

fn compiler() -> Option<String> {
    let candidates = std::env::var("CC")
        .ok()
        .into_iter()
        .chain(["cc", "gcc", "clang"].map(String::from));
    candidates.into_iter().find(|cc| {
        Command::new(cc)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs the C program and parses `name value [value]` lines.
fn c_facts() -> Option<BTreeMap<String, Vec<usize>>> {
    let Some(cc) = compiler() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no C compiler (tried $CC, cc, gcc, clang) and CI is set: install gcc (tools/setup.sh)"
        );
        eprintln!("SKIPPED c_layout: no C compiler found (tried $CC, cc, gcc, clang)");
        return None;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, PROGRAM).unwrap();
    // Debian's libxen-dev, unpacked by tools/setup.sh (never installed).
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian/root/usr/include");
    let header = include.join("xen/io/libxenvchan.h");
    if !header.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing and CI is set: run tools/setup.sh (it unpacks Debian's libxen-dev)",
            header.display()
        );
        eprintln!(
            "SKIPPED c_layout: {} is missing (run tools/setup.sh)",
            header.display()
        );
        return None;
    }
    let out = Command::new(&cc)
        .arg("-std=c11")
        .arg("-Wall")
        .arg(format!("-I{}", include.display()))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compiling against {} failed:\n{}",
        header.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let text = String::from_utf8(run.stdout).unwrap();
    let facts = text
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap().to_owned();
            (name, words.map(|w| w.parse().unwrap()).collect())
        })
        .collect();
    Some(facts)
}

#[test]
fn layout_matches_libxenvchan_header() {
    let Some(c) = c_facts() else { return };
    let ours: &[(&str, &[usize])] = &[
        ("sizeof.ring_shared", &[size_of::<RingShared>()]),
        ("sizeof.vchan_interface", &[size_of::<VchanInterface>()]),
        ("ring_shared.cons", &[offset_of!(RingShared, cons), 4]),
        ("ring_shared.prod", &[offset_of!(RingShared, prod), 4]),
        (
            "vchan_interface.left",
            &[offset_of!(VchanInterface, left), 8],
        ),
        (
            "vchan_interface.right",
            &[offset_of!(VchanInterface, right), 8],
        ),
        ("vchan_interface.left.cons", &[LEFT_CONS_OFFSET, 4]),
        ("vchan_interface.left.prod", &[LEFT_PROD_OFFSET, 4]),
        ("vchan_interface.right.cons", &[RIGHT_CONS_OFFSET, 4]),
        ("vchan_interface.right.prod", &[RIGHT_PROD_OFFSET, 4]),
        ("vchan_interface.left_order", &[LEFT_ORDER_OFFSET, 2]),
        ("vchan_interface.right_order", &[RIGHT_ORDER_OFFSET, 2]),
        ("vchan_interface.cli_live", &[CLI_LIVE_OFFSET, 1]),
        ("vchan_interface.srv_live", &[SRV_LIVE_OFFSET, 1]),
        ("vchan_interface.cli_notify", &[CLI_NOTIFY_OFFSET, 1]),
        ("vchan_interface.srv_notify", &[SRV_NOTIFY_OFFSET, 1]),
        ("vchan_interface.grants", &[GRANTS_OFFSET, 4]),
        ("const.VCHAN_NOTIFY_WRITE", &[NOTIFY_WRITE as usize]),
        ("const.VCHAN_NOTIFY_READ", &[NOTIFY_READ as usize]),
    ];
    for (name, want) in ours {
        let got = c
            .get(*name)
            .unwrap_or_else(|| panic!("the C program printed no {name}"));
        assert_eq!(
            got.as_slice(),
            *want,
            "{name}: C says {got:?}, we say {want:?}"
        );
    }
    // Every line the C program printed was compared.
    assert_eq!(c.len(), ours.len());
    // Our field sizes agree with the type sizes too.
    assert_eq!(size_of::<VchanInterface>(), GRANTS_OFFSET);
}
