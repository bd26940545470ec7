//! What the harness needs besides itself, found or built before measuring: Debian's
//! libxenvchan and `vchan-socket-proxy` (unpacked by `tools/setup.sh`), the simulated host's
//! drop-in C libraries (`tools/sim-libs.sh`), the C driver (`bench/c/vchan_bench.c`, built
//! here with gcc) and the `vchan` command (`cargo build --release -p vchan-tools`).
//!
//! Anything missing disables the rows that need it, with the reason in the report; it never
//! fails the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Paths to the external programs and libraries, or why each is unavailable.
#[derive(Debug)]
pub(crate) struct Externals {
    /// The C driver and the `LD_LIBRARY_PATH` it runs with.
    pub(crate) c_driver: Result<(PathBuf, String)>,
    /// Debian's `vchan-socket-proxy` (with the same `LD_LIBRARY_PATH`).
    pub(crate) c_proxy: Result<PathBuf>,
    /// The `vchan` command.
    pub(crate) vchan_cli: Result<PathBuf>,
    /// gcc's version line, for the report.
    pub(crate) gcc: String,
}

/// The workspace root (this crate's parent directory).
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

/// The cargo target directory this binary was built into (`<target>/<profile>/vchan-bench`).
pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_else(|| workspace().join("target"))
}

fn debian_root() -> PathBuf {
    workspace().join("target/debian/root")
}

fn debian_libs() -> PathBuf {
    debian_root().join("usr/lib/x86_64-linux-gnu")
}

fn require(path: &Path, how: &str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        bail!("{} is missing: {how}", path.display())
    }
}

/// Builds the simulated host's drop-in libraries; returns their directory.
fn sim_libs() -> Result<PathBuf> {
    let out = Command::new(workspace().join("tools/sim-libs.sh"))
        .args(["--profile", "release"])
        .env("CARGO_TARGET_DIR", target_dir())
        .stderr(Stdio::inherit())
        .output()
        .context("running tools/sim-libs.sh")?;
    if !out.status.success() {
        bail!("tools/sim-libs.sh failed ({})", out.status);
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Compiles `bench/c/vchan_bench.c` against Debian's libxenvchan.
fn c_driver(sim_libs: &Path) -> Result<PathBuf> {
    let libs = debian_libs();
    require(
        &libs.join("libxenvchan.so.4.17"),
        "run tools/setup.sh (it unpacks Debian's libxenmisc4.17)",
    )?;
    let include = workspace().join("target/debian/root/usr/include");
    require(
        &include.join("libxenvchan.h"),
        "run tools/setup.sh (it unpacks Debian's libxen-dev)",
    )?;
    let dir = target_dir().join("vchan-bench-c");
    std::fs::create_dir_all(&dir)?;
    let exe = dir.join("vchan_bench");
    let src = workspace().join("bench/c/vchan_bench.c");
    let out = Command::new("gcc")
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg(format!("-I{}", include.display()))
        .arg(format!("-L{}", libs.display()))
        .arg("-l:libxenvchan.so.4.17")
        .arg(format!(
            "-Wl,-rpath-link,{}:{}",
            sim_libs.display(),
            libs.display()
        ))
        .output()
        .context("running gcc (apt-get install gcc)")?;
    if !out.status.success() {
        bail!(
            "gcc failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(exe)
}

/// Builds the `vchan` command into this target directory.
fn vchan_cli() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "vchan-tools",
            "--bin",
            "vchan",
        ])
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .context("running cargo build -p vchan-tools")?;
    if !status.success() {
        bail!("cargo build --release -p vchan-tools failed ({status})");
    }
    let exe = target_dir().join("release/vchan");
    require(&exe, "cargo build did not produce it")?;
    Ok(exe)
}

/// Finds or builds everything; `vchan_cli` overrides the `vchan` command's path.
pub(crate) fn prepare(vchan_override: Option<PathBuf>) -> Externals {
    println!("setup: building the simulated host's drop-in C libraries (tools/sim-libs.sh)");
    let libs = sim_libs();
    let c_driver = match &libs {
        Ok(dir) => {
            println!("setup: compiling bench/c/vchan_bench.c against Debian's libxenvchan");
            c_driver(dir).map(|exe| {
                (
                    exe,
                    format!("{}:{}", dir.display(), debian_libs().display()),
                )
            })
        }
        Err(e) => Err(anyhow::anyhow!("no drop-in libraries: {e}")),
    };
    let c_proxy = debian_root().join("usr/lib/xen-4.17/bin/vchan-socket-proxy");
    let c_proxy = require(
        &c_proxy,
        "run tools/setup.sh (it unpacks Debian's xen-utils-4.17)",
    )
    .and_then(|()| match &c_driver {
        Ok(_) => Ok(c_proxy),
        Err(e) => bail!("the C side is unavailable: {e}"),
    });
    let vchan_cli = match vchan_override {
        Some(p) => require(&p, "given with --vchan").map(|()| p),
        None => {
            println!("setup: building the vchan command (cargo build --release -p vchan-tools)");
            vchan_cli()
        }
    };
    let gcc = Command::new("gcc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "gcc not found".into());
    for (what, r) in [
        ("C driver", c_driver.as_ref().err()),
        ("Debian vchan-socket-proxy", c_proxy.as_ref().err()),
        ("vchan command", vchan_cli.as_ref().err()),
    ] {
        if let Some(e) = r {
            println!("setup: WARNING: {what} unavailable, its rows are skipped: {e:#}");
        }
    }
    Externals {
        c_driver,
        c_proxy,
        vchan_cli,
        gcc,
    }
}
