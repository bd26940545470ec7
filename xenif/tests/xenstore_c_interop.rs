//! The simulated xenstored with clients nobody here wrote: Debian's `xenstore-utils` (C
//! libxenstore), Xen's own `test-xenstore` (from `xen-utils-4.17`, unpacked by
//! `tools/setup.sh` into `target/debian/root`) and `python3-pyxs` (pure Python).
//!
//! A missing tool skips its test with a printed reason, except under `CI`, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vchan_xenif::DomId;
use vchan_xenif::sim::host::SimHost;

fn debian_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian/root")
}

/// Whether `tool` is there; a clear skip (or, under CI, a failure) otherwise.
fn available(tool: &Path, how: &str) -> bool {
    if tool.exists() {
        return true;
    }
    let msg = format!("{} is missing: {how}", tool.display());
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure: run tools/setup.sh)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn host(domains: &[u16]) -> (tempfile::TempDir, SimHost) {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::builder(dir.path())
        .domains(domains.iter().map(|&d| DomId(d)))
        .start()
        .unwrap();
    (dir, host)
}

/// Runs a `xenstore-*` tool as `domid`; returns (success, stdout, stderr).
fn xs_tool(host: &SimHost, domid: u16, tool: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(format!("/usr/bin/{tool}"))
        .args(args)
        .env("XENSTORED_PATH", host.xenstore_socket(DomId(domid)))
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn xs_ok(host: &SimHost, domid: u16, tool: &str, args: &[&str]) -> String {
    let (ok, out, err) = xs_tool(host, domid, tool, args);
    assert!(ok, "{tool} {args:?} as dom{domid} failed: {err}");
    out
}

#[test]
fn debian_xenstore_utils_against_the_sim() {
    if !available(
        Path::new("/usr/bin/xenstore-write"),
        "apt-get install xenstore-utils",
    ) {
        return;
    }
    let (_d, host) = host(&[5, 6]);
    let ours = host.client(DomId::DOM0).unwrap();

    // C writes, we read; we write, C reads.
    xs_ok(
        &host,
        0,
        "xenstore-write",
        &["/interop/c", "from C", "/interop/d", "2"],
    );
    assert_eq!(ours.read_string("/interop/c").unwrap(), "from C");
    ours.write("/interop/rust", "from Rust").unwrap();
    assert_eq!(
        xs_ok(&host, 0, "xenstore-read", &["/interop/rust"]),
        "from Rust\n"
    );
    let list = xs_ok(&host, 0, "xenstore-list", &["/interop"]);
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    assert_eq!(names, ["c", "d", "rust"]);
    assert!(xs_tool(&host, 0, "xenstore-exists", &["/interop/c"]).0);
    assert!(!xs_tool(&host, 0, "xenstore-exists", &["/interop/nope"]).0);

    // xenstore-ls walks the tree with permissions.
    let ls = xs_ok(&host, 0, "xenstore-ls", &["-p", "/local/domain/5"]);
    assert!(
        ls.contains("domid = \"5\"") && ls.contains("(n0,r5)"),
        "{ls}"
    );
    assert!(ls.contains("data = \"\"") && ls.contains("(n5)"), "{ls}");

    // chmod through C, checked by both.
    xs_ok(&host, 0, "xenstore-chmod", &["/interop/c", "n0", "r6"]);
    assert_eq!(
        ours.get_perms("/interop/c").unwrap(),
        vec![
            vchan_xenif::xenstore::Perm::none(DomId(0)),
            vchan_xenif::xenstore::Perm::read(DomId(6))
        ]
    );
    assert_eq!(
        xs_ok(&host, 6, "xenstore-read", &["/interop/c"]),
        "from C\n"
    );
    let (ok, _, err) = xs_tool(&host, 5, "xenstore-read", &["/interop/c"]);
    assert!(!ok, "dom5 read a node only dom6 may read");
    assert!(err.contains("couldn't read"), "{err}");

    // A domU through C: relative paths, its own data directory, nothing of dom6's.
    assert_eq!(xs_ok(&host, 5, "xenstore-read", &["domid"]), "5\n");
    xs_ok(&host, 5, "xenstore-write", &["data/k", "v5"]);
    assert_eq!(ours.read_string("/local/domain/5/data/k").unwrap(), "v5");
    assert!(!xs_tool(&host, 5, "xenstore-write", &["/local/domain/6/data/k", "x"]).0);
    assert!(!xs_tool(&host, 5, "xenstore-write", &["domid", "7"]).0);

    // rm through C.
    xs_ok(&host, 0, "xenstore-rm", &["/interop"]);
    assert!(!ours.exists("/interop").unwrap());

    // xenstore-watch: the registration event, then our writes.
    let mut child = Command::new("/usr/bin/xenstore-watch")
        .args(["-n", "3", "/local/domain/5/data"])
        .env("XENSTORED_PATH", host.xenstore_socket(DomId(5)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/5/data");
    ours.write("/local/domain/5/data/w1", "1").unwrap();
    ours.rm("/local/domain/5/data/k").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/5/data/w1");
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/5/data/k");
    assert!(child.wait().unwrap().success());
}

#[test]
fn xen_test_xenstore_passes_every_test() {
    let root = debian_root();
    let bin = root.join("usr/lib/xen-4.17/bin/test-xenstore");
    if !available(
        &bin,
        "tools/setup.sh unpacks xen-utils-4.17 and libxenstore4 (tools/ci/apt-download)",
    ) {
        return;
    }
    let (_d, host) = host(&[]);
    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"))
            .env("XENSTORED_PATH", host.xenstore_socket(DomId::DOM0))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, list) = run(&["--list-tests"]);
    assert!(ok, "{list}");
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .collect();
    assert_eq!(names.len(), 12, "{list}");

    let (ok, results) = run(&[]);
    println!("test-xenstore against the simulated xenstored:\n{results}");
    assert!(ok, "test-xenstore failed:\n{results}");
    for name in &names {
        let line = results
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no result for {name:?}:\n{results}"));
        assert!(
            line.ends_with(" ns") && !line.contains("failed"),
            "{name}: {line}"
        );
    }
    // Each test repeated, and the random mix for a second.
    let (ok, results) = run(&["--iterations", "20"]);
    assert!(ok, "{results}");
    let (ok, results) = run(&["--random", "1"]);
    assert!(ok, "{results}");
    // test-xenstore cleans up after itself.
    let xs = host.client(DomId::DOM0).unwrap();
    assert!(!xs.exists("/local/domain/0/xenstore-test").unwrap());
}

#[test]
fn python_pyxs_reads_writes_and_watches() {
    let python = Path::new("/usr/bin/python3");
    if !available(python, "apt-get install python3") {
        return;
    }
    let probe = Command::new(python)
        .args(["-c", "import pyxs"])
        .output()
        .unwrap();
    if !probe.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "pyxs missing under CI: apt-get install python3-pyxs"
        );
        eprintln!("SKIPPED: python3-pyxs is not installed (apt-get install python3-pyxs)");
        return;
    }
    let (_d, host) = host(&[5]);
    let ours = host.client(DomId::DOM0).unwrap();
    ours.write("/py/from-rust", "r").unwrap();
    let script = r#"
import sys, pyxs
with pyxs.Client(unix_socket_path=sys.argv[1]) as c:
    c[b"/py/from-python"] = b"p"
    assert c[b"/py/from-rust"] == b"r"
    assert sorted(c.list(b"/py")) == [b"from-python", b"from-rust"]
    assert c.get_perms(b"/local/domain/5") == [b"n0", b"r5"]
    c.set_perms(b"/py/from-python", [b"n0", b"r5"])
    assert c.get_domain_path(5) == b"/local/domain/5"
    assert c.is_domain_introduced(5)
    assert not c.is_domain_introduced(77)
    c.transaction()
    c[b"/py/tx"] = b"in-tx"
    assert c.commit()
    assert c[b"/py/tx"] == b"in-tx"
    c.delete(b"/py/tx")
    assert not c.exists(b"/py/tx")
    with c.monitor() as m:
        m.watch(b"/py", b"tok")
        events = m.wait()
        assert next(events) == (b"/py", b"tok")
        c[b"/py/w"] = b"1"
        assert next(events) == (b"/py/w", b"tok")
print("PYXS-OK")
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(host.xenstore_socket(DomId::DOM0))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("PYXS-OK"), "{text}");
    assert_eq!(ours.read_string("/py/from-python").unwrap(), "p");
    let dom5 = host.client(DomId(5)).unwrap();
    assert_eq!(dom5.read_string("/py/from-python").unwrap(), "p");
}
