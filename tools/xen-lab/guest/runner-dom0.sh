#!/bin/sh
# The lab's scenario runner, dom0 side (started by /init once the toolstack is up).
# Creates the domU, then for each scenario: tells the domU which one to run (XenStore key
# data/lab/cmd of the domU), runs the dom0 part while the domU runs its part, collects the domU's
# exit status and figures from XenStore, and prints `@@RESULT PASS|FAIL <name> <figures> @@`.
# A scenario that destroys the domU says so with LAB_DESTROYS_DOMU=1: its domU part then
# reports nothing (the dom0 part decides), and the runner creates a fresh domU if another
# scenario follows.
. /lab/guest/lab.sh
. /lab/run.env
LAB_SIDE=dom0 LAB_NAME=runner
mkdir -p /tmp/lab

# One PASS/FAIL line per scenario; '@' is reserved for markers.
result() { echo "@@RESULT $1 $2 $(echo "$3" | tr -d '@\r' | tr '\n' ' ' | tr -s ' ') @@"; }
domu_console() { tr -d '\r' < /var/log/xen/console/guest-lab-domu.log 2>/dev/null | tail -n "${1:-80}"; }
all_fail() {
  for s in $LAB_SCENARIOS; do n=${s%.sh}; n=${n#[0-9][0-9]-}; result FAIL "$n" "$1"; done
  echo "@@BEGIN-LOG domu-console"; domu_console 150; echo "@@END-LOG domu-console"
  exit 1
}
# Whether domain $DOMU exists (the hypervisor's view, not XenStore's: scenarios may edit that).
domu_exists() { xl list "$DOMU" >/dev/null 2>&1; }
scenario_var() { sed -n "s/^$1=\([0-9][0-9]*\).*/\1/p" "/lab/scenarios/$2" | head -n 1; }

cat /lab/domu-base.cpio.gz /lab/domu-payload.cpio.gz > /run/domu-initrd
# create_domu: creates and boots the domU, sets DOMU and LABXS, waits for its runner.
domus=0
create_domu() {
  t0=$(lab_ms)
  if ! lab_bounded 180 xl create /lab/guest/domu.cfg > /tmp/lab/xl-create.log 2>&1; then
    cat /tmp/lab/xl-create.log
    all_fail "xl create of the domU failed"
  fi
  DOMU=$(xl domid lab-domu) || all_fail "xl domid lab-domu failed"
  LABXS=/local/domain/$DOMU/data/lab
  xenstore-write "$LABXS/cmd" none && xenstore-chmod -r "$LABXS" "n$DOMU" || all_fail "cannot create $LABXS"
  XS=$LABXS
  ( lab_get domu-ready 150 >/dev/null ) 2>/tmp/lab/ready.err || { cat /tmp/lab/ready.err; all_fail "the domU did not come up"; }
  domus=$((domus + 1))
  if [ "$domus" = 1 ]; then
    echo "@@LAB domu-up t=$(cut -d' ' -f1 /proc/uptime) domid=$DOMU create+boot=$(( $(lab_ms) - t0 ))ms"
  else
    echo "lab: domU recreated: domid=$DOMU create+boot=$(( $(lab_ms) - t0 ))ms"
  fi
}
create_domu

failed=0
for s in $LAB_SCENARIOS; do
  name=${s%.sh}
  name=${name#[0-9][0-9]-}
  limit=$(scenario_var LAB_TIMEOUT "$s")
  limit=${limit:-120}
  destroys=$(scenario_var LAB_DESTROYS_DOMU "$s")
  if ! domu_exists; then
    create_domu
  fi
  XS=$LABXS/$name
  work=/tmp/lab/$name
  mkdir -p "$work/tmp"
  : > "$work/figures"
  export LAB_SIDE=dom0 LAB_NAME="$name" DOMU XS BIN LAB_TMP="$work/tmp" LAB_FIG="$work/figures"
  t0=$(lab_ms)
  echo "lab: $name start t=${t0}ms"
  xenstore-write "$LABXS/cmd" "$s"
  lab_bounded "$limit" sh -c 'dom0() { :; }; domu() { :; }; . /lab/guest/lab.sh; . "$0"; dom0' \
    "/lab/scenarios/$s" > "$work/dom0.log" 2>&1
  rc0=$?
  t1=$(lab_ms)
  if [ "$destroys" = 1 ] && ! domu_exists; then
    # the domU part died with its domain: the dom0 part's verdict is the scenario's
    rcu=0
    domu_figs=
  else
    # the domU part has the same limit, counted from a little later
    rcu=$( (lab_get domu-rc $((limit + 15))) 2>>"$work/dom0.log") || rcu=timeout
    domu_figs=$(xenstore-read "$XS/domu-figures" 2>/dev/null)
  fi
  ms=$(( $(lab_ms) - t0 ))
  echo "lab: $name dom0 part rc=$rc0 after $((t1 - t0))ms, domU part rc=$rcu after ${ms}ms"
  figs="t=$((ms / 1000)).$(( (ms % 1000) / 100 ))s $(cat "$work/figures") $domu_figs"
  if [ "$rc0" = 0 ] && [ "$rcu" = 0 ]; then
    result PASS "$name" "$figs"
  else
    failed=1
    why=$(grep -m1 '^FAILED: ' "$work/dom0.log" | cut -c9-)
    [ -n "$why" ] || why=$(xenstore-read "$XS/domu-reason" 2>/dev/null)
    [ "$rc0" = 124 ] && why="dom0 part timed out after ${limit}s. $why"
    [ "$rcu" = 124 ] && why="domU part timed out after ${limit}s. $why"
    [ "$rcu" = timeout ] && why="no status from the domU part within $((limit + 15))s. $why"
    result FAIL "$name" "dom0-rc=$rc0 domu-rc=$rcu: ${why:-no reason given}"
  fi
  if [ "$rc0$rcu" != 00 ] || [ "${LAB_VERBOSE:-0}" = 1 ]; then
    echo "@@BEGIN-LOG $name"
    echo "--- dom0 part ---"; tr -d '@' < "$work/dom0.log" | tail -n "${LAB_LOG_LINES:-150}"
    echo "--- domU console ---"; domu_console "${LAB_LOG_LINES:-300}" | tr -d '@'
    echo "@@END-LOG $name"
  fi
  if [ "$destroys" != 1 ] && ! domu_exists; then
    echo "@@LAB the domU is gone"
    all_fail "the domU died during $name"
  fi
  echo "lab: $name reported at $(( $(lab_ms) - t0 ))ms"
done

if domu_exists; then
  xenstore-write "$LABXS/cmd" END
  i=0
  while domu_exists && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
  domu_exists && { echo "@@LAB the domU did not power off: destroying it"; xl destroy "$DOMU"; }
fi
exit $failed
