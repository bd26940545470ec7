#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian 12 machine with Rust:
# Debian packages (tools/ci/apt-packages), unpacked-only Debian packages (tools/ci/apt-download,
# into target/debian/root), the no_std target, and (when a nightly toolchain exists) cargo-fuzz.
# Idempotent: a second run does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

list() { grep -v -E '^\s*(#|$)' "$1" | tr '\n' ' '; }

sudo_=""
if [ "$(id -u)" != 0 ]; then sudo_="sudo"; fi

want=()
for p in $(list tools/ci/apt-packages); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
done
if [ ${#want[@]} -gt 0 ]; then
  log "apt-get install ${want[*]}"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

dl=$(list tools/ci/apt-download)
if [ -n "$dl" ]; then
  mkdir -p target/debian/debs target/debian/root
  for p in $dl; do
    if ! ls target/debian/debs/"${p}"_*.deb >/dev/null 2>&1; then
      log "apt-get download $p"
      (cd target/debian/debs && apt-get download -qq "$p" 2>/dev/null) || {
        $sudo_ apt-get update -qq
        (cd target/debian/debs && apt-get download -qq "$p")
      }
      rm -f "target/debian/root/.unpacked-$p"
    fi
    # A stamp per package, so that a deleted or partly unpacked tree is unpacked again.
    if [ ! -f "target/debian/root/.unpacked-$p" ]; then
      dpkg -x target/debian/debs/"${p}"_*.deb target/debian/root
      touch "target/debian/root/.unpacked-$p"
    fi
  done
fi

if ! rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-none$'; then
  log "rustup target add x86_64-unknown-none"
  rustup target add x86_64-unknown-none >/dev/null
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    log "cargo install cargo-fuzz"
    cargo install -q cargo-fuzz
  fi
fi
log "done"
