#!/usr/bin/env bash
# The project's main job: `vchan demo`, a simulated Xen host with a dom0 and a domU process
# streaming verified data both ways through a vchan, then measuring round trips.
#   tools/demo.sh                       the defaults (512 MiB each way through 1 MiB rings)
#   tools/demo.sh --bytes 1G --ring 64K  any `vchan demo` option (tools/demo.sh --help)
# Needs only Rust (cargo) on Debian 12: nothing else to install.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building the vchan binary (release)…" >&2
cargo build -q --release -p vchan-tools --bin vchan
exec "${CARGO_TARGET_DIR:-target}/release/vchan" demo "$@"
