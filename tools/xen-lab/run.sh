#!/usr/bin/env bash
# vchan on a real hypervisor, on any Linux box: Debian's Xen 4.17 with a PV dom0 and a PV domU
# under QEMU (software emulation), running the scenarios in tools/xen-lab/scenarios/ with this
# workspace's release binaries inside the guests. See tools/xen-lab/README.md.
#
#   tools/xen-lab/run.sh                      everything: packages, images (cached), build, boot, scenarios
#   XEN_LAB_SCENARIOS='grant|errors' run.sh   only scenarios whose name matches this extended regex
#   XEN_LAB_REBUILD=1 run.sh                  rebuild the cached images from scratch
#
# Prints one line per scenario, `PASS <name> <figures>` or `FAIL <name> <reason>`, and exits
#   0 every scenario passed, 1 a scenario failed (or the guests hung or crashed),
#   2 the lab cannot run on this machine (not root, no QEMU package, no Debian mirror) and
#     CI_REQUIRE_XEN=1; without CI_REQUIRE_XEN=1 that case prints a loud SKIPPED banner, exits 0.
# Other knobs: XEN_LAB_DIR (cache, default /var/tmp/vchan-xen-lab), XEN_LAB_SMP (2), XEN_LAB_MEM
# (3072, MiB), XEN_LAB_TIMEOUT (hard limit for the whole boot, seconds; default: computed from the
# scenarios' own limits), CARGO_TARGET_DIR.
# The whole script is one compound command, parsed before it runs: editing this file during a
# run (bash reads scripts as it goes) cannot break that run.
{
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lab=${XEN_LAB_DIR:-/var/tmp/vchan-xen-lab}
smp=${XEN_LAB_SMP:-2}
mem=${XEN_LAB_MEM:-3072}
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac

# The workspace binaries the scenarios use, relative to target/release, and how to build them.
# Scenarios find them in /lab/bin/<file name> in both guests.
lab_binaries=(examples/xen_smoke vchan)
lab_cargo_builds=("-p vchan-xenif --example xen_smoke" "-p vchan-tools --bin vchan")

say() { printf '[xen-lab] %s\n' "$*" >&2; }
cannot_run() {
  printf '\n*** XEN LAB NOT RUN: %s ***\n\n' "$*" >&2
  if [ "${CI_REQUIRE_XEN:-0}" = 1 ]; then exit 2; fi
  echo "SKIPPED xen-lab: $* (set CI_REQUIRE_XEN=1 to make this an error)"
  exit 0
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs_since() { local d=$(( $(now_ms) - $1 )); printf '%d.%01d' $((d / 1000)) $(((d % 1000) / 100)); }
phase() { printf '@@PHASE %-18s %6ss\n' "$1" "$(secs_since "$2")"; }
t_start=$(now_ms)

[ "$(id -u)" = 0 ] || cannot_run "must run as root (debootstrap, chroot and apt-get need it)"
[ "$(uname -m)" = x86_64 ] || cannot_run "needs an x86_64 host (the guests are x86_64 PV domains)"
command -v apt-get >/dev/null || cannot_run "needs a Debian host (apt-get)"
mkdir -p "$lab"
# One run at a time per cache directory (the payload and serial log live there).
exec 9>"$lab/.lock"
flock -w 3600 9 || cannot_run "another run has held $lab/.lock for an hour"

# --- 1. host packages --------------------------------------------------------------------------
t=$(now_ms)
want=()
command -v qemu-system-x86_64 >/dev/null || want+=(qemu-system-x86)
command -v debootstrap >/dev/null || want+=(debootstrap)
command -v cpio >/dev/null || want+=(cpio)
command -v strip >/dev/null || want+=(binutils)
if [ ${#want[@]} -gt 0 ]; then
  # Some images carry qemu-utils 10 from bookworm-backports, which Breaks bookworm's
  # qemu-system-common (< 8): take qemu-utils back to bookworm's version (nothing needs the newer).
  if v=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null) && dpkg --compare-versions "$v" ge 1:8; then
    want+=(qemu-utils/bookworm)
  fi
  say "apt-get install ${want[*]}"
  apt-get update -qq || cannot_run "apt-get update failed (no Debian mirror reachable?)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "${want[@]}" >/dev/null || cannot_run "apt-get install ${want[*]} failed"
fi
phase host-packages "$t"

# --- 2. images, cached under $lab and keyed by the recipe that builds them ----------------------
t=$(now_ms)
kver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n 1)
if [ -z "$kver" ]; then
  apt-get update -qq || cannot_run "apt-get update failed"
  kver=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n 1)
fi
[ -n "$kver" ] || cannot_run "apt-cache does not know linux-image-amd64"
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1 || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
key1=$( (cat "$here/host/base.sh"; echo "$kver $mirror") | sha256sum | cut -c1-12)
key2=$( (echo "$key1"; cat "$here/host/images.sh" "$here/guest/dom0-init" "$here/guest/domu-init") | sha256sum | cut -c1-12)
base=$lab/base-$key1
img=$base/img-$key2
mkdir -p "$lab"
if [ "${XEN_LAB_REBUILD:-0}" = 1 ]; then rm -rf "$base"; fi
if [ ! -f "$base/.complete" ]; then
  # a recipe change: drop older caches (about 1 GB each) and build afresh
  find "$lab" -mindepth 1 -maxdepth 1 -name 'base-*' ! -name "base-$key1" -exec rm -rf {} +
  rm -rf "$base"
  tb=$(now_ms)
  "$here/host/base.sh" "$base" "$kver" "$mirror"
  touch "$base/.complete"
  phase image-base-build "$tb"
fi
if [ ! -f "$img/.complete" ]; then
  find "$base" -mindepth 1 -maxdepth 1 -name 'img-*' ! -name "img-$key2" -exec rm -rf {} +
  rm -rf "$img"
  ti=$(now_ms)
  "$here/host/images.sh" "$base" "$img"
  touch "$img/.complete"
  phase image-initramfs "$ti"
fi
phase images "$t"

# --- 3. the workspace's release binaries (bookworm glibc on the host = in the guests) -----------
t=$(now_ms)
for b in "${lab_cargo_builds[@]}"; do
  # shellcheck disable=SC2086 # the entries are argument lists
  (cd "$root" && CARGO_TARGET_DIR=$target cargo build -q --release $b) || { echo "FAIL build cargo build --release $b"; exit 1; }
done
phase cargo-build "$t"

# --- 4. the per-run payload: binaries, scenarios, runners (an extra cpio appended to dom0's) ----
t=$(now_ms)
# scenarios/*.sh, plus XEN_LAB_EXTRA_SCENARIOS (a directory of scenario files kept outside the
# repository, e.g. while writing one), filtered by XEN_LAB_SCENARIOS; run in file-name order.
mapfile -t scenario_files < <(find "$here/scenarios" ${XEN_LAB_EXTRA_SCENARIOS:+"$XEN_LAB_EXTRA_SCENARIOS"} \
                                -maxdepth 1 -name '*.sh' | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2)
scenarios=()
declare -A scenario_path=()
for f in "${scenario_files[@]}"; do
  name=$(basename "$f" .sh)
  name=${name#[0-9][0-9]-}
  if [ -z "${XEN_LAB_SCENARIOS:-}" ] || [[ $name =~ ${XEN_LAB_SCENARIOS} ]]; then
    [ -z "${scenario_path[$(basename "$f")]:-}" ] || { say "two scenario files named $(basename "$f")"; exit 1; }
    scenarios+=("$(basename "$f")")
    scenario_path[$(basename "$f")]=$f
  fi
done
[ ${#scenarios[@]} -gt 0 ] || { say "no scenario matches XEN_LAB_SCENARIOS='${XEN_LAB_SCENARIOS:-}'"; exit 1; }
run=$lab/run
rm -rf "$run"
p0=$run/dom0-payload pu=$run/domu-payload
mkdir -p "$p0/lab/bin" "$p0/lab/guest" "$p0/lab/scenarios" "$pu/lab/bin" "$pu/lab/guest" "$pu/lab/scenarios"
# add_program SRC: puts a program into /lab/bin of both guests, with the shared libraries the
# guests lack (from the guests' own rootfs, else, for XEN_LAB_EXTRA_BIN, from this host)
add_program() {
  local src=$1 name lib from dest
  name=$(basename "$src")
  strip -o "$p0/lab/bin/$name" "$src" 2>/dev/null || cp "$src" "$p0/lab/bin/$name"
  cp "$p0/lab/bin/$name" "$pu/lab/bin/"
  for lib in $(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do
    from=$base/rootfs$lib
    [ -e "$from" ] || from=$lib
    if ! grep -qxF "$lib" "$img/domu-base.files" && [ ! -e "$pu$lib" ]; then
      mkdir -p "$pu$(dirname "$lib")"
      cp -L "$from" "$pu$lib"
    fi
    # dom0's /lib is a symlink to usr/lib (merged /usr): never put a directory in its place
    dest=$p0/usr${lib#/usr}
    if [ ! -e "$base/rootfs$lib" ] && [ ! -e "$dest" ]; then
      mkdir -p "$(dirname "$dest")"
      cp -L "$from" "$dest"
    fi
  done
}
for b in "${lab_binaries[@]}"; do
  src=$target/release/$b
  [ -x "$src" ] || { echo "FAIL build $src missing after cargo build"; exit 1; }
  add_program "$src"
done
# XEN_LAB_EXTRA_BIN: a directory of extra programs for debugging (e.g. a copy of strace)
if [ -n "${XEN_LAB_EXTRA_BIN:-}" ]; then
  for f in "$XEN_LAB_EXTRA_BIN"/*; do [ -x "$f" ] && add_program "$f"; done
fi
# guest/*.sh: the runners and helper files scenarios may source (/lab/guest/NAME.sh)
cp "$here"/guest/*.sh "$here/guest/domu.cfg" "$p0/lab/guest/"
cp "$here"/guest/*.sh "$pu/lab/guest/"
for s in "${scenarios[@]}"; do cp "${scenario_path[$s]}" "$p0/lab/scenarios/"; cp "${scenario_path[$s]}" "$pu/lab/scenarios/"; done
# Every wait is bounded: the scenarios' own limits (LAB_TIMEOUT, default 120 s) plus the boots.
budget=120
for s in "${scenarios[@]}"; do
  lt=$(sed -n 's/^LAB_TIMEOUT=\([0-9][0-9]*\).*/\1/p' "${scenario_path[$s]}" | head -n 1)
  budget=$((budget + ${lt:-120} + 15))
  # a scenario that destroys the domU costs a new one if another scenario follows
  if grep -q '^LAB_DESTROYS_DOMU=1' "${scenario_path[$s]}"; then budget=$((budget + 330)); fi
done
hard_limit=${XEN_LAB_TIMEOUT:-$((budget + 120))}
printf 'LAB_SCENARIOS="%s"\nLAB_WATCHDOG=%s\nLAB_VERBOSE=%s\n' "${scenarios[*]}" "$budget" "${XEN_LAB_VERBOSE:-0}" > "$p0/lab/run.env"
[ -z "${XEN_LAB_LOG_LINES:-}" ] || echo "LAB_LOG_LINES=$XEN_LAB_LOG_LINES" >> "$p0/lab/run.env"
(cd "$pu" && find . | cpio -o -H newc --quiet | gzip -1) > "$p0/lab/domu-payload.cpio.gz"
(cd "$p0" && find . | cpio -o -H newc --quiet) > "$run/payload.cpio"
cat "$img/dom0.cpio" "$run/payload.cpio" > "$run/dom0-initrd.cpio"
phase payload "$t"

# --- 5. boot: Xen + dom0 (which creates the domU and runs the scenarios), bounded ---------------
t=$(now_ms)
log=$run/serial.log
xen_args="console=com1 com1=115200,8n1 dom0_mem=1536M,max:1536M dom0_max_vcpus=1 loglvl=warning guest_loglvl=warning"
dom0_args="console=hvc0 earlyprintk=xen panic=-1 loglevel=4"
# -cpu max,-smap: with SMAP visible, Xen 4.17 under TCG kills a PV dom0 at its first exception
# bounce. KVM is not used: Xen needs real (or properly nested) hardware virtualisation under it.
qemu-system-x86_64 -accel tcg -cpu max,-smap -smp "$smp" -m "$mem" -nographic -no-reboot -nic none \
  -kernel "$base/xen" -append "$xen_args" \
  -initrd "$base/vmlinuz $dom0_args,$run/dom0-initrd.cpio" </dev/null >"$log" 2>&1 &
qemu=$!
trap 'kill -9 $qemu 2>/dev/null || true' EXIT
say "booting (qemu pid $qemu, serial log $log, hard limit ${hard_limit}s)"

declare -A reported=()
results=$run/results
: > "$results"
report_new() { # print scenario result lines as they appear in the serial log (complete lines end in ' @@')
  local line name
  while IFS= read -r line; do
    name=$(awk '{print $2}' <<<"$line")
    [ -n "${reported[$name]:-}" ] && continue
    reported[$name]=1
    echo "$line" | tee -a "$results"
  done < <(tr -d '\r' <"$log" 2>/dev/null | grep -a -o '@@RESULT \(PASS\|FAIL\) [^@]* @@' | sed -e 's/^@@RESULT //' -e 's/ @@$//')
}
marks_seen=""
mark() { # host-side time of the first appearance of a guest marker
  if [[ " $marks_seen " != *" $1 "* ]] && grep -a -q -F "@@LAB $1" "$log" 2>/dev/null; then
    marks_seen="$marks_seen $1"
    printf '@@PHASE %-18s %6ss\n' "$1" "$(secs_since "$t")"
  fi
}
verdict=""
while kill -0 "$qemu" 2>/dev/null; do
  for m in dom0-up domu-up; do mark "$m"; done
  report_new
  el=$(( ($(now_ms) - t) / 1000 ))
  if [ -z "$verdict" ] && [[ " $marks_seen " != *" dom0-up "* ]] && [ "$el" -gt 240 ]; then
    verdict="dom0 did not come up within 240 s"
  fi
  if [ -z "$verdict" ] && [ "$el" -gt "$hard_limit" ]; then
    verdict="the run exceeded its hard limit of ${hard_limit} s"
  fi
  if [ -n "$verdict" ]; then
    say "$verdict: stopping qemu"
    kill "$qemu" 2>/dev/null; sleep 2; kill -9 "$qemu" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qemu" 2>/dev/null || true
trap - EXIT
report_new
phase boot-and-scenarios "$t"

# --- 6. verdict ---------------------------------------------------------------------------------
failed=0
for s in "${scenarios[@]}"; do
  name=$(basename "$s" .sh)
  name=${name#[0-9][0-9]-}
  if [ -z "${reported[$name]:-}" ]; then
    why=${verdict:-"no result: the guests stopped before reporting it"}
    echo "FAIL $name $why" | tee -a "$results"
    failed=1
  elif grep -q "^FAIL $name " "$results"; then
    failed=1
  fi
done
if ! grep -a -q '@@LAB dom0-done rc=0' "$log"; then failed=1; fi
if [ "$failed" != 0 ] || [ "${XEN_LAB_VERBOSE:-0}" = 1 ]; then
  echo "----- guest log excerpts (full serial log: $log) -----"
  # the blocks the dom0 runner printed for failed scenarios, else the end of the log
  if grep -a -q '@@BEGIN-LOG' "$log"; then
    sed -n '/@@BEGIN-LOG/,/@@END-LOG/p' "$log" | tr -d '\r' | tail -n "${XEN_LAB_LOG_LINES:-400}"
  else
    tr -d '\r' < "$log" | tail -n 120
  fi
  grep -a '@@LAB' "$log" | tr -d '\r' | tail -n 20
fi
printf '@@PHASE %-18s %6ss\n' total "$(secs_since "$t_start")"
summary=$(awk '{print $1}' "$results" | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}')
say "summary: $summary(results in $results)"
exit "$failed"
}
