#!/bin/sh
# The lab's scenario runner, domU side (started by the domU's /init).
# Follows dom0: waits for XenStore key data/lab/cmd to name a scenario, runs that scenario's domU
# part (bounded by its LAB_TIMEOUT), and reports its exit status, figures and failure reason under
# the scenario's directory (domu-rc last: dom0 waits for it). Stops at "END".
. /lab/guest/lab.sh
LAB_SIDE=domu LAB_NAME=runner
DOMU=$(xenstore-read domid) || { echo "@@DOMU cannot read my domid from XenStore"; exit 1; }
LABXS=/local/domain/$DOMU/data/lab
XS=$LABXS
lab_get cmd 120 >/dev/null
lab_put domu-ready 1
mkdir -p /tmp/lab
last=none
idle_deadline=$(( $(lab_ms) + 900000 ))
while [ "$(lab_ms)" -lt "$idle_deadline" ]; do
  s=$(xenstore-read "$LABXS/cmd" 2>/dev/null) || s=$last
  if [ "$s" = END ]; then break; fi
  if [ "$s" = "$last" ] || [ ! -f "/lab/scenarios/$s" ]; then sleep 0.2; continue; fi
  last=$s
  name=${s%.sh}
  name=${name#[0-9][0-9]-}
  limit=$(sed -n 's/^LAB_TIMEOUT=\([0-9][0-9]*\).*/\1/p' "/lab/scenarios/$s" | head -n 1)
  XS=$LABXS/$name
  work=/tmp/lab/$name
  mkdir -p "$work/tmp"
  : > "$work/figures"
  export LAB_SIDE=domu LAB_NAME="$name" DOMU XS BIN LAB_TMP="$work/tmp" LAB_FIG="$work/figures"
  echo "@@DOMU start $name t=$(lab_ms)ms"
  lab_bounded "${limit:-120}" sh -c 'dom0() { :; }; domu() { :; }; . /lab/guest/lab.sh; . "$0"; domu' \
    "/lab/scenarios/$s" > "$work/domu.log" 2>&1
  rc=$?
  sed "s/^/[$name domU] /" "$work/domu.log"
  echo "@@DOMU end $name rc=$rc t=$(lab_ms)ms"
  xenstore-write "$XS/domu-figures" "$(cat "$work/figures" | tr '\n' ' ')"
  xenstore-write "$XS/domu-reason" "$(grep -m1 '^FAILED: ' "$work/domu.log" | cut -c9-)"
  xenstore-write "$XS/domu-rc" "$rc"
  idle_deadline=$(( $(lab_ms) + 900000 ))
done
echo "@@DOMU runner done"
