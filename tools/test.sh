#!/usr/bin/env bash
# The project's test command: set-up on a fresh Debian 12 machine, then every check CI runs.
#   tools/test.sh            everything (what .ci/run runs)
#   FUZZ_SECONDS=N           seconds per fuzz target (default 30; 0 skips fuzzing)
#   XEN_LAB=0                skips the real-Xen lab (tools/xen-lab/run.sh, needs root)
#   CI_REQUIRE_XEN=0         the lab says loudly that it cannot run here instead of failing
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The set-up below installs everything the tests use, so a test that finds something missing
# fails instead of skipping (tests skip with a printed reason only when CI is unset, e.g. a
# single `cargo test` on a machine that never ran tools/setup.sh).
export CI=${CI:-true}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; STEP_T0=$(date +%s); }
done_() { printf '    (%ss)\n' "$(( $(date +%s) - STEP_T0 ))"; }

T0=$(date +%s)
step "set-up"; tools/setup.sh; done_

step "cargo fmt --check"; cargo fmt --all --check; done_
step "cargo clippy -D warnings"; cargo clippy --workspace --all-targets -- -D warnings; done_

step "tests (optimised, with debug assertions and overflow checks)"
cargo test --workspace --profile test-opt; done_

step "doc tests and docs build"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q; done_

step "loom models (LOOM_MAX_PREEMPTIONS=2)"
LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p vchan-ring --profile loom --test loom -- --test-threads=2; done_

step "examples (quick runs)"
for ex in "typed_service" "file_transfer" "file_transfer --stream"; do
  # shellcheck disable=SC2086 # the example's name, then its arguments
  set -- $ex
  name=$1; shift
  cargo run -q -p vchan-msg --profile test-opt --example "$name" -- --quick "$@"
done; done_

step "benches compile"; cargo bench --workspace --no-run -q; done_

step "comparison harness, short mode (figures printed, not asserted)"
cargo run -q -p vchan-bench --release -- compare --short; done_

step "vchan-ring is no_std (x86_64-unknown-none)"
cargo build -q -p vchan-ring --target x86_64-unknown-none; done_

# Real Xen 4.17 under QEMU: dom0 and a domU running the release binaries (images cached in
# /var/tmp/vchan-xen-lab; about 7 minutes from scratch, less with the cache).
if [ "${XEN_LAB:-1}" != 0 ]; then
  step "real Xen under QEMU (tools/xen-lab/run.sh)"
  CI_REQUIRE_XEN=${CI_REQUIRE_XEN:-1} tools/xen-lab/run.sh; done_
else
  step "real-Xen lab skipped (XEN_LAB=0)"
fi

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
if [ "$FUZZ_SECONDS" != 0 ] && cargo +nightly fuzz --version >/dev/null 2>&1; then
  mkdir -p target/fuzz-logs
  for t in $(cd fuzz && cargo +nightly fuzz list); do
    step "fuzz $t for ${FUZZ_SECONDS}s"
    log=target/fuzz-logs/$t.log
    # New inputs go to target/, so the committed seed corpus stays as it is.
    out=target/fuzz-corpus/$t; mkdir -p "$out"
    if ! (cd fuzz && cargo +nightly fuzz run "$t" "../$out" "corpus/$t" -- -max_total_time="$FUZZ_SECONDS") >"$log" 2>&1; then
      tail -n 60 "$log"; echo "fuzz target $t failed (full log: $log)"; exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$log" || tail -n 3 "$log"
    done_
  done
else
  step "fuzzing skipped (no nightly toolchain with cargo-fuzz, or FUZZ_SECONDS=0)"
fi

printf '\nAll checks passed in %ss.\n' "$(( $(date +%s) - T0 ))"
