# Peer death, process level: a `vchan` process in the domU is killed (SIGKILL) while dom0's
# `vchan pump` is blocked on the channel; dom0's call must fail at once with "closed" (the
# domU kernel's unmap notification clears the live byte and signals the event channel).
#  idle-srv  dom0 serves, blocked in a read (the domU client sends nothing); the client dies
#  busy-cli  dom0 is the client, mid-transfer both ways (blocked writes and reads); the domU
#            server dies
# Measured on dom0's clock: from dom0's request (a XenStore write; in the domU the exit of a
# `vchan xs watch` on it starts `kill` at once) to the pump's exit. That includes the request's
# trip (figure xs_rtt_ms: a round trip dom0 -> domU -> dom0 through the same kind of watches), so
# it bounds the detection time from above; about half the round trip is the request.
LAB_TIMEOUT=300
. /lab/guest/vchan.sh

# pk_pump TAG COMMAND...: starts COMMAND (a vchan pump), recording its exit time (ns).
pk_pump() {
  pk_t=$1
  shift
  vc_start "$pk_t" sh -c '"$@"; rc=$?; date +%s%N > "$0"; exit $rc' "$LAB_TMP/$pk_t.end" "$@"
}

# pk_kill_and_time TAG: asks the domU to kill its side of TAG, waits for dom0's pump to fail,
# checks the error and records the time.
pk_kill_and_time() {
  lab_get "$1/kill-armed" 60 > /dev/null
  pk_t0=$(vc_now_ns)
  lab_put "$1/kill" 1
  pk_rc=$(vc_finish "$1" 30) || exit 1
  [ "$pk_rc" = 1 ] || lab_fail "$1: dom0's pump exited with $pk_rc, expected 1 (transfer failed): $(tail -n 2 "$LAB_TMP/$1.out")"
  grep -q 'closed the channel' "$LAB_TMP/$1.out" || lab_fail "$1: the error does not say the peer closed: $(tail -n 2 "$LAB_TMP/$1.out")"
  pk_ms=$(( ($(cat "$LAB_TMP/$1.end") - pk_t0) / 1000000 ))
  sed "s/^/[$1] /" "$LAB_TMP/$1.out" >&2
  lab_figure "$1.kill_to_error_ms=$pk_ms"
  [ "$pk_ms" -lt 10000 ] || lab_fail "$1: $pk_ms ms from the kill request to the error"
}

dom0() {
  # XenStore round trip dom0 -> domU -> dom0, watches on both sides
  lab_get ping-armed 60 > /dev/null
  pk_pump pong vchan xs watch "$XS/pong" --count 2
  lab_wait 30 "the watch on $XS/pong" grep -q . "$LAB_TMP/pong.out"
  t0=$(vc_now_ns)
  lab_put ping 1
  vc_ok pong 30
  lab_figure "xs_rtt_ms=$(( ($(cat "$LAB_TMP/pong.end") - t0) / 1000000 ))"

  p=/local/domain/0/data/vchan/$DOMU/idle
  pk_pump idle-srv vchan pump server "$DOMU" "$p" --send 0 --expect 1G
  lab_wait 60 "the idle server's advertisement" vc_advertised "$p"
  lab_put idle-srv/path "$p"
  lab_get idle-srv/connected 60 > /dev/null
  sleep 2 # blocked in its read by now
  lab_running idle-srv || lab_fail "idle-srv ended early: $(tail -n 2 "$LAB_TMP/idle-srv.out")"
  pk_kill_and_time idle-srv

  pk_pump busy-cli vchan pump client "$DOMU" "$(lab_get busy-cli/path 60)" --send 1G --wait 30 --progress
  lab_wait 60 "busy-cli to move data" grep -q 'recv=[1-9]' "$LAB_TMP/busy-cli.out"
  lab_running busy-cli || lab_fail "busy-cli ended early: $(tail -n 2 "$LAB_TMP/busy-cli.out")"
  pk_kill_and_time busy-cli
}

# pk_on KEY NAME COMMAND...: runs COMMAND as soon as $XS/KEY is written (a `vchan xs watch`
# whose exit starts it: no polling in between); returns once the watch is set, then says
# $XS/KEY-armed.
pk_on() {
  pk_k=$1 pk_n=$2
  shift 2
  vc_start "$pk_n" sh -c 'f=$1; shift; vchan xs watch "$0" --count 2 > "$f" && exec "$@"' \
    "$XS/$pk_k" "$LAB_TMP/$pk_n.ev" "$@"
  lab_wait 30 "the watch on $XS/$pk_k" grep -q . "$LAB_TMP/$pk_n.ev"
  lab_put "$pk_k-armed" 1
}

# pk_victim TAG: kills TAG (SIGKILL) as soon as dom0 writes $XS/TAG/kill.
pk_victim() {
  pk_on "$1/kill" "$1-killer" kill -KILL "$(cat "$LAB_TMP/$1.pid")"
  vc_ok "$1-killer" 60
  pk_rc=$(vc_finish "$1" 10) || exit 1
  [ "$pk_rc" = 137 ] || lab_fail "$1: ended with $pk_rc before it was killed: $(tail -n 2 "$LAB_TMP/$1.out")"
}

domu() {
  pk_on ping pong xenstore-write "$XS/pong" 1
  vc_ok pong 60

  vc_start idle-srv vchan node client read 0 "$(lab_get idle-srv/path 60)" --wait 30
  lab_wait 60 "idle-srv to map the rings" vc_has_map "$(cat "$LAB_TMP/idle-srv.pid")" /dev/xen/gntdev
  lab_put idle-srv/connected 1
  pk_victim idle-srv

  p=/local/domain/$DOMU/data/vchan/0/busy
  vc_start busy-cli vchan pump server 0 "$p" --send 1G
  lab_wait 60 "the busy server's advertisement" vc_advertised "$p"
  lab_put busy-cli/path "$p"
  pk_victim busy-cli
}
