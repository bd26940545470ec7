//! The structures and numbers this crate hand-writes, checked against Debian's Xen headers
//! (`libxen-dev`) by a small C program compiled here with gcc. Missing gcc or headers skip
//! the test with a printed reason, except under `CI`, where they fail it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use vchan_xen_capi::{evtchn, gnttab, xencall};

const PROBE: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <xenctrl.h>
#include <xen/domctl.h>
#include <xengnttab.h>
#include <xenevtchn.h>
#define P(name, value) printf("%s %lld\n", name, (long long)(value))
int main(void)
{
    P("domctl.size", sizeof(struct xen_domctl));
    P("domctl.cmd", offsetof(struct xen_domctl, cmd));
    P("domctl.interface_version", offsetof(struct xen_domctl, interface_version));
    P("domctl.domain", offsetof(struct xen_domctl, domain));
    P("domctl.u", offsetof(struct xen_domctl, u));
    P("getdomaininfo.size", sizeof(struct xen_domctl_getdomaininfo));
    P("getdomaininfo.domain", offsetof(struct xen_domctl_getdomaininfo, domain));
    P("getdomaininfo.flags", offsetof(struct xen_domctl_getdomaininfo, flags));
    P("getdomaininfo.nr_online_vcpus",
      offsetof(struct xen_domctl_getdomaininfo, nr_online_vcpus));
    P("XEN_DOMCTL_INTERFACE_VERSION", XEN_DOMCTL_INTERFACE_VERSION);
    P("XEN_DOMCTL_getdomaininfo", XEN_DOMCTL_getdomaininfo);
    P("XEN_DOMINF_running", XEN_DOMINF_running);
    P("__HYPERVISOR_domctl", __HYPERVISOR_domctl);
    P("seg.size", sizeof(xengnttab_grant_copy_segment_t));
    P("seg.source", offsetof(xengnttab_grant_copy_segment_t, source));
    P("seg.dest", offsetof(xengnttab_grant_copy_segment_t, dest));
    P("seg.len", offsetof(xengnttab_grant_copy_segment_t, len));
    P("seg.flags", offsetof(xengnttab_grant_copy_segment_t, flags));
    P("seg.status", offsetof(xengnttab_grant_copy_segment_t, status));
    P("foreign.ref", offsetof(xengnttab_grant_copy_segment_t, source.foreign.ref));
    P("foreign.offset", offsetof(xengnttab_grant_copy_segment_t, source.foreign.offset));
    P("foreign.domid", offsetof(xengnttab_grant_copy_segment_t, source.foreign.domid));
    P("GNTCOPY_source_gref", GNTCOPY_source_gref);
    P("GNTCOPY_dest_gref", GNTCOPY_dest_gref);
    P("XENEVTCHN_NO_CLOEXEC", XENEVTCHN_NO_CLOEXEC);
    return 0;
}
"#;

fn available(what: &Path, how: &str) -> bool {
    if what.exists() {
        return true;
    }
    let msg = format!("{} is missing: {how}", what.display());
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure: run tools/setup.sh)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

#[test]
fn hand_written_layouts_match_debians_xen_headers() {
    // Debian's libxen-dev, unpacked by tools/setup.sh (never installed).
    let include =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debian/root/usr/include");
    if !available(Path::new("/usr/bin/gcc"), "apt-get install gcc")
        || !available(
            &include.join("xen/domctl.h"),
            "run tools/setup.sh (it unpacks Debian's libxen-dev)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&src, PROBE).unwrap();
    let out = Command::new("gcc")
        .arg("-D__XEN_TOOLS__")
        .arg(format!("-I{}", include.display()))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    let c: HashMap<String, i64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    let ours: [(&str, i64); 25] = [
        ("domctl.size", xencall::domctl::SIZE as i64),
        ("domctl.cmd", xencall::domctl::CMD as i64),
        (
            "domctl.interface_version",
            xencall::domctl::INTERFACE_VERSION as i64,
        ),
        ("domctl.domain", xencall::domctl::DOMAIN as i64),
        ("domctl.u", xencall::domctl::UNION as i64),
        ("getdomaininfo.size", xencall::getdomaininfo::SIZE as i64),
        (
            "getdomaininfo.domain",
            xencall::getdomaininfo::DOMAIN as i64,
        ),
        ("getdomaininfo.flags", xencall::getdomaininfo::FLAGS as i64),
        (
            "getdomaininfo.nr_online_vcpus",
            xencall::getdomaininfo::NR_ONLINE_VCPUS as i64,
        ),
        (
            "XEN_DOMCTL_INTERFACE_VERSION",
            xencall::XEN_DOMCTL_INTERFACE_VERSION.into(),
        ),
        (
            "XEN_DOMCTL_getdomaininfo",
            xencall::XEN_DOMCTL_GETDOMAININFO.into(),
        ),
        ("XEN_DOMINF_running", xencall::XEN_DOMINF_RUNNING.into()),
        ("__HYPERVISOR_domctl", xencall::HYPERVISOR_DOMCTL.into()),
        (
            "seg.size",
            std::mem::size_of::<gnttab::GrantCopySegment>() as i64,
        ),
        (
            "seg.source",
            std::mem::offset_of!(gnttab::GrantCopySegment, source) as i64,
        ),
        (
            "seg.dest",
            std::mem::offset_of!(gnttab::GrantCopySegment, dest) as i64,
        ),
        (
            "seg.len",
            std::mem::offset_of!(gnttab::GrantCopySegment, len) as i64,
        ),
        (
            "seg.flags",
            std::mem::offset_of!(gnttab::GrantCopySegment, flags) as i64,
        ),
        (
            "seg.status",
            std::mem::offset_of!(gnttab::GrantCopySegment, status) as i64,
        ),
        // The foreign side is read as a u64: ref in bits 0..32, offset 32..48, domid 48..64.
        ("foreign.ref", 0),
        ("foreign.offset", 4),
        ("foreign.domid", 6),
        ("GNTCOPY_source_gref", gnttab::GNTCOPY_SOURCE_GREF.into()),
        ("GNTCOPY_dest_gref", gnttab::GNTCOPY_DEST_GREF.into()),
        ("XENEVTCHN_NO_CLOEXEC", evtchn::XENEVTCHN_NO_CLOEXEC.into()),
    ];
    for (name, value) in ours {
        assert_eq!(c.get(name).copied(), Some(value), "{name}");
    }
    assert_eq!(c.len(), ours.len());
}
