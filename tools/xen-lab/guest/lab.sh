# Helpers for the lab's scenario parts and runners, sourced in both guests (dom0: dash with
# coreutils; domU: busybox ash): keep to POSIX sh and to options busybox has.
#
# A scenario part sees (exported by the runner):
#   LAB_SIDE   dom0 | domu              LAB_NAME  the scenario's name
#   DOMU       the domU's domain id     XS        its private XenStore directory (both sides r/w)
#   BIN        /lab/bin (the workspace's release binaries)
#   LAB_TMP    a scratch directory      LAB_FIG   where lab_figure appends
export PATH=/lab/bin:/usr/lib/xen-4.17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BIN=/lab/bin

# Milliseconds since boot (10 ms resolution), the same clock in every process of a guest.
lab_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

lab_log() { echo "[$LAB_NAME $LAB_SIDE $(lab_ms)ms] $*" >&2; }

# Fails the part with a reason (the first FAILED line of a part becomes the scenario's reason),
# after printing the tails of the files registered with lab_show_on_fail (e.g. a program's stderr).
LAB_SHOW_ON_FAIL=
lab_show_on_fail() { LAB_SHOW_ON_FAIL="$LAB_SHOW_ON_FAIL $*"; }
lab_fail() {
  echo "FAILED: $*" >&2
  for _f in $LAB_SHOW_ON_FAIL; do
    [ -f "$_f" ] && { echo "--- tail of $_f:"; tail -n 40 "$_f"; } >&2
  done
  exit 1
}

# Records figures (key=value words) for the scenario's result line.
lab_figure() { echo "$*" >> "$LAB_FIG"; }

# XenStore, relative to the scenario's directory.
lab_put() { xenstore-write "$XS/$1" "$2" || lab_fail "xenstore-write $XS/$1 failed"; }

# Polling backs off from 0.05 s to 0.4 s between tries: every try forks processes, and under
# emulation a guest that polls fast starves the programs it waits for (one vCPU each).
lab_backoff() {
  sleep "$_nap"
  case $_nap in 0.05) _nap=0.1 ;; 0.1) _nap=0.2 ;; *) _nap=0.4 ;; esac
}

# Prints the value of $XS/KEY once it exists, waiting at most SECS (default 60).
lab_get() {
  _deadline=$(( $(lab_ms) + ${2:-60} * 1000 ))
  _nap=0.05
  while ! xenstore-read "$XS/$1" 2>/dev/null; do
    [ "$(lab_ms)" -lt "$_deadline" ] || lab_fail "timed out after ${2:-60}s waiting for XenStore key $XS/$1"
    lab_backoff
  done
}

# Waits until COMMAND succeeds, at most SECS: lab_wait SECS WHAT COMMAND...
# (COMMAND's arguments are expanded once, by the caller: use a function to re-check a value.)
lab_wait() {
  _secs=$1 _what=$2
  shift 2
  _deadline=$(( $(lab_ms) + _secs * 1000 ))
  _nap=0.05
  until "$@"; do
    [ "$(lab_ms)" -lt "$_deadline" ] || lab_fail "timed out after ${_secs}s waiting for $_what"
    lab_backoff
  done
}

# Runs COMMAND in its own session and kills that whole session after SECS; returns COMMAND's
# status, or 124 if it had to be killed. lab_bounded SECS COMMAND...
# Whatever COMMAND left running in its session (background jobs of a failed part) is killed
# when it returns, so that nothing outlives its scenario.
lab_bounded() {
  _secs=$1
  shift
  _rcf=$(mktemp /tmp/lab-rc.XXXXXX)
  rm -f "$_rcf"
  setsid sh -c '"$@"; echo $? > "$0.tmp"; mv "$0.tmp" "$0"' "$_rcf" "$@" &
  _pid=$!
  # 4 tries a second, one fork each (the deadline counts naps: the clock would cost a fork more)
  _tries=$(( _secs * 4 ))
  while [ ! -f "$_rcf" ]; do
    if [ "$_tries" -le 0 ]; then
      kill -KILL -- "-$_pid" 2>/dev/null || kill -KILL "$_pid" 2>/dev/null
      wait "$_pid" 2>/dev/null
      return 124
    fi
    sleep 0.25
    _tries=$((_tries - 1))
  done
  wait "$_pid" 2>/dev/null
  kill -KILL -- "-$_pid" 2>/dev/null
  _rc=$(cat "$_rcf")
  rm -f "$_rcf"
  return "$_rc"
}

# Runs COMMAND, which must fail with output matching the extended regex PATTERN.
# lab_expect_failure PATTERN COMMAND...
lab_expect_failure() {
  _pat=$1
  shift
  if "$@" > "$LAB_TMP/expect.out" 2>&1; then
    cat "$LAB_TMP/expect.out" >&2
    lab_fail "'$*' succeeded but was expected to fail"
  fi
  cat "$LAB_TMP/expect.out" >&2
  grep -E -q -- "$_pat" "$LAB_TMP/expect.out" || lab_fail "'$*' failed without a message matching /$_pat/"
}

# Background processes with a status you can poll (a plain `kill -0` also "sees" zombies):
#   lab_spawn NAME COMMAND... [redirections]  starts COMMAND (keeping the caller's stdin/stdout)
#   lab_running NAME                          true while it runs
#   lab_status NAME [SECS]                    waits (bounded, default 30 s) and prints its status
#   lab_kill NAME [SIGNAL]                    signals it (default TERM)
lab_spawn() {
  _n=$1
  shift
  rm -f "$LAB_TMP/$_n.rc" "$LAB_TMP/$_n.pid"
  # An asynchronous list gets /dev/null as stdin unless it redirects it: pass the caller's along on fd 3.
  { (
    "$@" <&3 3<&- &
    echo $! > "$LAB_TMP/$_n.pid"
    wait $!
    echo $? > "$LAB_TMP/$_n.rc.tmp"
    mv "$LAB_TMP/$_n.rc.tmp" "$LAB_TMP/$_n.rc"
  ) & } 3<&0
  lab_wait 10 "$_n to start" test -s "$LAB_TMP/$_n.pid"
}
lab_running() { [ ! -f "$LAB_TMP/$1.rc" ]; }
lab_status() {
  lab_wait "${2:-30}" "$1 to exit" test -f "$LAB_TMP/$1.rc"
  cat "$LAB_TMP/$1.rc"
}
lab_kill() { kill -"${2:-TERM}" "$(cat "$LAB_TMP/$1.pid")" 2>/dev/null; }

# Size of a file in bytes (0 if missing); whether it has at least N bytes (lab_has_bytes FILE N).
lab_size() { if [ -f "$1" ]; then wc -c < "$1" | tr -d ' '; else echo 0; fi; }
lab_has_bytes() { [ "$(lab_size "$1")" -ge "$2" ]; }
lab_sha() { sha256sum < "$1" | cut -c1-64; }
