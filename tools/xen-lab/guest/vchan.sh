# Helpers of the scenarios that run the `vchan` binary (50-* and later), sourced by scenario parts
# in both guests (dom0: dash; domU: busybox ash).
#
# Spin: under QEMU's software emulation a wake-up through an event channel costs about 10 ms
# (measured: in-page rings move 0.1-0.2 MB/s without spinning, C vchan-socket-proxy included), so
# the bulk transfers spin before sleeping; both domains have their own vCPU, so a spinning side
# sees the other's progress. The spin is adaptive (vchan's --spin-us is its maximum; it shrinks
# to max/64 while spinning fails and grows back when it succeeds): with a maximum of 5-20 ms the
# floor (80-300 us) is shorter than the peer's turnaround here, so after a bad patch (the host
# busy with other work) spinning never succeeds again and a round falls back to 0.2 MB/s
# (measured); a maximum of 100 ms keeps the floor at 1.5 ms, which recovers. Every ring size is
# also run with --spin-us 0, where each ring-full goes through a real event-channel wake-up.
VC_SPIN_US=${VC_SPIN_US:-100000}

# vc_start NAME COMMAND...: starts COMMAND in the background, stdout and stderr to
# $LAB_TMP/NAME.out (shown if the part fails).
vc_start() {
  _vn=$1
  shift
  lab_show_on_fail "$LAB_TMP/$_vn.out"
  lab_spawn "$_vn" "$@" > "$LAB_TMP/$_vn.out" 2>&1
}

# vc_start_io NAME OUT COMMAND...: the same with stdout to OUT (stderr to $LAB_TMP/NAME.out).
vc_start_io() {
  _vn=$1 _vo=$2
  shift 2
  lab_show_on_fail "$LAB_TMP/$_vn.out"
  lab_spawn "$_vn" "$@" > "$_vo" 2> "$LAB_TMP/$_vn.out"
}

# vc_finish NAME SECS [STALL_SECS]: waits at most SECS for NAME to exit and prints its status;
# if it is still running then, kills it (TERM, then KILL) and fails the part. With STALL_SECS,
# for a program printing `progress ...` lines (`vchan pump --progress`, every 0.25 s): also
# fails, killing it, once its last output line has not changed for STALL_SECS. A hang is then
# caught in STALL_SECS while SECS can allow for a slow host (under emulation, with other work
# on the machine, a round's rate varies tenfold).
vc_finish() {
  _vd=$(( $(lab_ms) + $2 * 1000 ))
  _vlast=
  _vsince=$(lab_ms)
  _nap=0.05
  while lab_running "$1"; do
    _vnow=$(lab_ms)
    _vwhy=
    if [ -n "${3:-}" ]; then
      _vp=$(tail -n 1 "$LAB_TMP/$1.out")
      if [ "$_vp" != "$_vlast" ]; then
        _vlast=$_vp
        _vsince=$_vnow
      fi
      [ $(( _vnow - _vsince )) -ge $(( $3 * 1000 )) ] && _vwhy="made no progress for $3 s"
    fi
    [ "$_vnow" -ge "$_vd" ] && _vwhy="did not finish within $2 s"
    if [ -n "$_vwhy" ]; then
      lab_kill "$1" TERM
      sleep 1
      lab_kill "$1" KILL
      lab_fail "$1 $_vwhy: $(tail -n 2 "$LAB_TMP/$1.out" | tr '\n' ' ')"
    fi
    lab_backoff
  done
  cat "$LAB_TMP/$1.rc"
}

# vc_ok NAME SECS [STALL_SECS]: vc_finish, and the status must be 0.
vc_ok() {
  _vs=$(vc_finish "$1" "$2" "${3:-}") || exit 1
  [ "$_vs" = 0 ] || lab_fail "$1 exited with status $_vs: $(tail -n 3 "$LAB_TMP/$1.out" | tr '\n' ' ')"
}

# vc_field FILE KEY: the value of KEY in the last `result key=value ...` line of FILE.
vc_field() {
  grep '^result ' "$1" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# vc_advertised PATH: the vchan server has written PATH/event-channel (its last key).
vc_advertised() { xenstore-exists "$1/event-channel" 2>/dev/null; }

# vc_map_bytes PID DEVICE: total bytes PID has mapped from DEVICE (/dev/xen/gntdev: the peer's
# pages a client maps; /dev/xen/gntalloc: the pages a server shares), from /proc/PID/maps.
vc_map_bytes() {
  _vt=0
  # shellcheck disable=SC2034
  while read -r _vr _vp _vo _vdev _vi _vpath; do
    [ "$_vpath" = "$2" ] || continue
    _vt=$(( _vt + 0x${_vr#*-} - 0x${_vr%-*} ))
  done < "/proc/$1/maps"
  echo "$_vt"
}
vc_has_map() { [ "$(vc_map_bytes "$1" "$2" 2>/dev/null)" -gt 0 ] 2>/dev/null; }

# vc_ring_bytes READ_MIN WRITE_MIN: the bytes of shared memory a vchan server with these
# minimum sizes uses, as the client maps it: the control page, plus both rings unless they live
# inside the control page (sizes of 2048 and below; the layout rules of DESIGN.md).
vc_ring_bytes() {
  _vl=$(vc_ring_size "$1") _vR=$(vc_ring_size "$2")
  _vT=4096
  [ "$_vl" -gt 2048 ] && _vT=$((_vT + _vl))
  [ "$_vR" -gt 2048 ] && _vT=$((_vT + _vR))
  echo "$_vT"
}
# vc_ring_size SIZE: whether a --read-min/--write-min of SIZE (bytes, or K/M) gives an in-page
# ring (prints 2048 or less) or the ring's size (a power of two from 4096).
vc_ring_size() {
  case $1 in
    *K) _vb=$(( ${1%K} * 1024 )) ;;
    *M) _vb=$(( ${1%M} * 1048576 )) ;;
    *) _vb=$1 ;;
  esac
  [ "$_vb" -le 1024 ] && { echo 1024; return; }
  [ "$_vb" -le 2048 ] && { echo 2048; return; }
  _vp2=4096
  while [ "$_vp2" -lt "$_vb" ]; do _vp2=$((_vp2 * 2)); done
  echo "$_vp2"
}

# vc_now_ns: wall-clock nanoseconds (dom0 only: coreutils date).
vc_now_ns() { date +%s%N; }
