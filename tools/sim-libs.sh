#!/usr/bin/env bash
# Builds the simulated Xen host's drop-in C libraries — libxengnttab.so.1, libxenevtchn.so.1,
# libxencall.so.1 and libxenforeignmemory.so.1, from the crate xenif/capi (vchan-xen-capi) —
# and prints the directory holding them. With that directory first in LD_LIBRARY_PATH, and the environment of a
# simulated domain (`eval "$(vchan sim env N)"`), unmodified dynamically linked C Xen
# programs (Debian's libxenvchan.so.4.17, vchan-socket-proxy, ...) run on the simulated host:
#
#   LD_LIBRARY_PATH=$(tools/sim-libs.sh) vchan-socket-proxy ...
#
# Usage: tools/sim-libs.sh [--profile PROFILE] [--out DIR]
#   --profile  cargo profile to build with (default: release; the tests pass their own)
#   --out      where to put the libraries (default: <target dir>/sim-libs, where the target
#              dir is $CARGO_TARGET_DIR or the workspace's target/)
#
# Why a script: rustc gives every cdylib its own (anonymous) linker version script, which
# cannot be combined with the versioned one (VERS_1.0, ...) that the C programs' symbol
# references need. So cargo builds a static library, and gcc links it once per C library with
# that library's version script (xenif/capi/maps/*.map) and SONAME. Only the listed symbols
# are exported; the rest of the Rust code stays private to each library.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

profile=release
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "sim-libs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
out=${out:-$target_dir/sim-libs}
case "$profile" in dev|test) profile_dir=debug ;; bench) profile_dir=release ;; *) profile_dir=$profile ;; esac

(cd "$root" && "${CARGO:-cargo}" build -q --profile "$profile" -p vchan-xen-capi)
archive=$target_dir/$profile_dir/libvchan_xen_capi.a
[ -f "$archive" ] || { echo "sim-libs.sh: cargo did not produce $archive" >&2; exit 1; }

command -v "${CC:-gcc}" >/dev/null || {
  echo "sim-libs.sh: ${CC:-gcc} not found: apt-get install gcc" >&2; exit 1; }

mkdir -p "$out"
for lib in xengnttab xenevtchn xencall xenforeignmemory; do
  map=$root/xenif/capi/maps/lib$lib.map
  so=$out/lib$lib.so.1
  if [ -f "$so" ] && [ "$so" -nt "$archive" ] && [ "$so" -nt "$map" ] && [ "$so" -nt "$0" ]; then
    continue
  fi
  # The map's global symbols are the roots: pull their objects out of the archive (-u) and
  # let --gc-sections drop everything they do not reach.
  undef=()
  for sym in $(sed -n 's/^[[:space:]]*\([a-z][a-z0-9_]*\);.*/\1/p' "$map"); do
    undef+=("-Wl,-u,$sym")
  done
  # Write next to the target and rename: a process loading the library never sees half a file,
  # and concurrent builds (parallel test binaries) cannot interleave.
  tmp=$(mktemp "$out/.lib$lib.XXXXXX")
  "${CC:-gcc}" -shared -o "$tmp" \
    -Wl,-soname,"lib$lib.so.1" -Wl,--version-script="$map" -Wl,--gc-sections \
    -Wl,-z,now -Wl,-z,relro -Wl,--no-undefined \
    "${undef[@]}" "$archive" \
    -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
  chmod 755 "$tmp"
  mv -f "$tmp" "$so"
done
echo "$out"
