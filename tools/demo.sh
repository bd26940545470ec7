#!/usr/bin/env bash
# The project's main job. Until the channel exists it runs the in-process ring example.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run -q --release -p vchan-ring --example spsc -- "$@"
