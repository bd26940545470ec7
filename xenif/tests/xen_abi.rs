//! Our transcription of Linux's Xen device ABI (`vchan_xenif::xen::abi`) against the C compiler's
//! view of Debian's `linux-libc-dev` headers (`/usr/include/xen/{gntalloc,gntdev,evtchn}.h`):
//! every ioctl number, struct size, field offset and flag is printed by a C program compiled here
//! with gcc and compared with the Rust value.
//!
//! Without gcc or the headers the test is skipped with a reason, unless `CI` is set: then it
//! fails (CI installs both, see `tools/ci/apt-packages`).

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use vchan_xenif::xen::abi::*;

/// (C expression, our value).
// `IoctlRequest` is `c_ulong`: u64 here, u32 on 32-bit targets, hence the casts.
#[allow(clippy::unnecessary_cast)]
fn table() -> Vec<(&'static str, u64)> {
    macro_rules! size {
        ($c:literal, $t:ty) => {
            (concat!("sizeof(struct ", $c, ")"), size_of::<$t>() as u64)
        };
    }
    macro_rules! off {
        ($c:literal, $t:ty, $f:ident, $cf:literal) => {
            (
                concat!("offsetof(struct ", $c, ", ", $cf, ")"),
                offset_of!($t, $f) as u64,
            )
        };
    }
    vec![
        (
            "IOCTL_GNTALLOC_ALLOC_GREF",
            IOCTL_GNTALLOC_ALLOC_GREF as u64,
        ),
        (
            "IOCTL_GNTALLOC_DEALLOC_GREF",
            IOCTL_GNTALLOC_DEALLOC_GREF as u64,
        ),
        (
            "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY",
            IOCTL_GNTALLOC_SET_UNMAP_NOTIFY as u64,
        ),
        (
            "IOCTL_GNTDEV_MAP_GRANT_REF",
            IOCTL_GNTDEV_MAP_GRANT_REF as u64,
        ),
        (
            "IOCTL_GNTDEV_UNMAP_GRANT_REF",
            IOCTL_GNTDEV_UNMAP_GRANT_REF as u64,
        ),
        (
            "IOCTL_GNTDEV_SET_MAX_GRANTS",
            IOCTL_GNTDEV_SET_MAX_GRANTS as u64,
        ),
        (
            "IOCTL_GNTDEV_SET_UNMAP_NOTIFY",
            IOCTL_GNTDEV_SET_UNMAP_NOTIFY as u64,
        ),
        (
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN as u64,
        ),
        (
            "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            IOCTL_EVTCHN_BIND_UNBOUND_PORT as u64,
        ),
        ("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND as u64),
        ("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY as u64),
        ("IOCTL_EVTCHN_RESET", IOCTL_EVTCHN_RESET as u64),
        ("GNTALLOC_FLAG_WRITABLE", GNTALLOC_FLAG_WRITABLE as u64),
        ("UNMAP_NOTIFY_CLEAR_BYTE", UNMAP_NOTIFY_CLEAR_BYTE as u64),
        ("UNMAP_NOTIFY_SEND_EVENT", UNMAP_NOTIFY_SEND_EVENT as u64),
        size!("ioctl_gntalloc_alloc_gref", IoctlGntallocAllocGref),
        off!(
            "ioctl_gntalloc_alloc_gref",
            IoctlGntallocAllocGref,
            domid,
            "domid"
        ),
        off!(
            "ioctl_gntalloc_alloc_gref",
            IoctlGntallocAllocGref,
            flags,
            "flags"
        ),
        off!(
            "ioctl_gntalloc_alloc_gref",
            IoctlGntallocAllocGref,
            count,
            "count"
        ),
        off!(
            "ioctl_gntalloc_alloc_gref",
            IoctlGntallocAllocGref,
            index,
            "index"
        ),
        off!(
            "ioctl_gntalloc_alloc_gref",
            IoctlGntallocAllocGref,
            gref_ids,
            "gref_ids"
        ),
        size!("ioctl_gntalloc_dealloc_gref", IoctlGntallocDeallocGref),
        off!(
            "ioctl_gntalloc_dealloc_gref",
            IoctlGntallocDeallocGref,
            index,
            "index"
        ),
        off!(
            "ioctl_gntalloc_dealloc_gref",
            IoctlGntallocDeallocGref,
            count,
            "count"
        ),
        size!("ioctl_gntalloc_unmap_notify", IoctlUnmapNotify),
        off!(
            "ioctl_gntalloc_unmap_notify",
            IoctlUnmapNotify,
            index,
            "index"
        ),
        off!(
            "ioctl_gntalloc_unmap_notify",
            IoctlUnmapNotify,
            action,
            "action"
        ),
        off!(
            "ioctl_gntalloc_unmap_notify",
            IoctlUnmapNotify,
            event_channel_port,
            "event_channel_port"
        ),
        size!("ioctl_gntdev_unmap_notify", IoctlUnmapNotify),
        off!(
            "ioctl_gntdev_unmap_notify",
            IoctlUnmapNotify,
            index,
            "index"
        ),
        off!(
            "ioctl_gntdev_unmap_notify",
            IoctlUnmapNotify,
            action,
            "action"
        ),
        off!(
            "ioctl_gntdev_unmap_notify",
            IoctlUnmapNotify,
            event_channel_port,
            "event_channel_port"
        ),
        size!("ioctl_gntdev_grant_ref", IoctlGntdevGrantRef),
        off!(
            "ioctl_gntdev_grant_ref",
            IoctlGntdevGrantRef,
            domid,
            "domid"
        ),
        off!("ioctl_gntdev_grant_ref", IoctlGntdevGrantRef, r#ref, "ref"),
        size!("ioctl_gntdev_map_grant_ref", IoctlGntdevMapGrantRef),
        off!(
            "ioctl_gntdev_map_grant_ref",
            IoctlGntdevMapGrantRef,
            count,
            "count"
        ),
        off!(
            "ioctl_gntdev_map_grant_ref",
            IoctlGntdevMapGrantRef,
            pad,
            "pad"
        ),
        off!(
            "ioctl_gntdev_map_grant_ref",
            IoctlGntdevMapGrantRef,
            index,
            "index"
        ),
        off!(
            "ioctl_gntdev_map_grant_ref",
            IoctlGntdevMapGrantRef,
            refs,
            "refs"
        ),
        size!("ioctl_gntdev_unmap_grant_ref", IoctlGntdevUnmapGrantRef),
        off!(
            "ioctl_gntdev_unmap_grant_ref",
            IoctlGntdevUnmapGrantRef,
            index,
            "index"
        ),
        off!(
            "ioctl_gntdev_unmap_grant_ref",
            IoctlGntdevUnmapGrantRef,
            count,
            "count"
        ),
        off!(
            "ioctl_gntdev_unmap_grant_ref",
            IoctlGntdevUnmapGrantRef,
            pad,
            "pad"
        ),
        size!("ioctl_gntdev_set_max_grants", IoctlGntdevSetMaxGrants),
        size!("ioctl_evtchn_bind_interdomain", IoctlEvtchnBindInterdomain),
        off!(
            "ioctl_evtchn_bind_interdomain",
            IoctlEvtchnBindInterdomain,
            remote_domain,
            "remote_domain"
        ),
        off!(
            "ioctl_evtchn_bind_interdomain",
            IoctlEvtchnBindInterdomain,
            remote_port,
            "remote_port"
        ),
        size!("ioctl_evtchn_bind_unbound_port", IoctlEvtchnBindUnboundPort),
        size!("ioctl_evtchn_unbind", IoctlEvtchnPort),
        size!("ioctl_evtchn_notify", IoctlEvtchnPort),
        off!("ioctl_evtchn_notify", IoctlEvtchnPort, port, "port"),
        // The variable-length arrays' element sizes (the buffers VarArg builds).
        (
            "sizeof(((struct ioctl_gntalloc_alloc_gref *)0)->gref_ids[0])",
            size_of::<u32>() as u64,
        ),
        (
            "sizeof(((struct ioctl_gntdev_map_grant_ref *)0)->refs[0])",
            size_of::<IoctlGntdevGrantRef>() as u64,
        ),
    ]
}

/// Skips (returns false) with a reason when a tool is missing outside CI; fails in CI.
fn available(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} is missing, and CI is set: tools/setup.sh installs it (tools/ci/apt-packages)"
        );
    }
    eprintln!("SKIPPED xen_abi: {what} is missing (apt-get install gcc linux-libc-dev)");
    false
}

#[test]
fn ioctl_numbers_and_layouts_match_the_linux_headers() {
    let headers = ["gntalloc", "gntdev", "evtchn"].map(|h| format!("/usr/include/xen/{h}.h"));
    let gcc = Command::new("gcc").arg("--version").output().is_ok();
    if !available("gcc", gcc)
        || !available(
            "Debian's linux-libc-dev Xen headers (/usr/include/xen/*.h)",
            headers.iter().all(|h| Path::new(h).exists()),
        )
    {
        return;
    }

    let table = table();
    let mut src = String::from(
        "#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <sys/ioctl.h>\n\
         /* gntdev.h and evtchn.h use Xen's types without defining them */\n\
         typedef uint16_t domid_t;\ntypedef uint32_t grant_ref_t;\n\
         #include <xen/gntalloc.h>\n#include <xen/gntdev.h>\n#include <xen/evtchn.h>\n\
         int main(void) {\n",
    );
    for (expr, _) in &table {
        src.push_str(&format!(
            "    printf(\"%llu\\n\", (unsigned long long)({expr}));\n"
        ));
    }
    src.push_str("    return 0;\n}\n");

    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("abi.c");
    let exe = dir.path().join("abi");
    std::fs::write(&c, &src).unwrap();
    let out = Command::new("gcc")
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc failed:\n{}\n--- source ---\n{src}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let values: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(values.len(), table.len());

    let mismatches: Vec<String> = table
        .iter()
        .zip(&values)
        .filter(|((_, ours), c)| ours != *c)
        .map(|((expr, ours), c)| format!("{expr}: C says {c:#x}, we say {ours:#x}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "ABI mismatches:\n{}",
        mismatches.join("\n")
    );
    println!(
        "{} ioctl numbers, sizes and offsets match the C headers",
        table.len()
    );
}
