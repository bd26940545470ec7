# Peer death, domain level: the domU is destroyed (`xl destroy`) while dom0 runs two `vchan pump`s
# with it mid-transfer, one as server and one as client. No unmap notification can come (the
# domU's kernel never runs again); dom0's pumps must fail promptly saying the domain is gone
# (XenStore @releaseDomain), and let the domain go: once they exit, no mapping of dom0 keeps it
# as a zombie. Figures (dom0's clock, ms from the start of xl destroy): destroy_ms (its run time),
# release_event_ms (xenstored's @releaseDomain, seen by `vchan xs watch`), TAG.destroy_to_error_ms
# (the pump's exit), TAG.release_to_error_ms (from the @releaseDomain event to the pump's exit:
# the detection time proper; may be slightly negative, both are observed by polling processes),
# gone_ms (until `xl list` no longer has the domain).
# Last in file-name order: the runner would create a new domU for any scenario after it.
LAB_TIMEOUT=240
LAB_DESTROYS_DOMU=1
. /lab/guest/vchan.sh

pd_pump() { # TAG COMMAND...: a pump recording its exit time
  pd_t=$1
  shift
  vc_start "$pd_t" sh -c '"$@"; rc=$?; date +%s%N > "$0"; exit $rc' "$LAB_TMP/$pd_t.end" "$@"
}
pd_check() { # TAG T0
  pd_rc=$(vc_finish "$1" 30) || exit 1
  sed "s/^/[$1] /" "$LAB_TMP/$1.out" | grep -v '^\[[^]]*\] progress' >&2
  [ "$pd_rc" = 1 ] || lab_fail "$1: exited with $pd_rc, expected 1 (transfer failed): $(tail -n 2 "$LAB_TMP/$1.out")"
  grep -q "peer domain $DOMU no longer exists" "$LAB_TMP/$1.out" \
    || lab_fail "$1: the error does not say the domain is gone: $(tail -n 1 "$LAB_TMP/$1.out")"
  pd_ms=$(( ($(cat "$LAB_TMP/$1.end") - $2) / 1000000 ))
  lab_figure "$1.destroy_to_error_ms=$pd_ms"
  [ "$pd_ms" -lt 15000 ] || lab_fail "$1: $pd_ms ms from xl destroy to the error"
}
pd_gone() { ! xl list "$DOMU" > /dev/null 2>&1; }

dom0() {
  p=/local/domain/0/data/vchan/$DOMU/dsrv
  pd_pump srv vchan pump server "$DOMU" "$p" --send 1G --progress --read-min 64K --write-min 64K
  lab_wait 60 "the dsrv advertisement" vc_advertised "$p"
  lab_put srv/path "$p"
  pd_pump cli vchan pump client "$DOMU" "$(lab_get cli/path 60)" --send 1G --progress --wait 30
  for t in srv cli; do
    lab_wait 60 "$t to move data both ways" grep -q 'sent=[1-9].*recv=[1-9]' "$LAB_TMP/$t.out"
    lab_running "$t" || lab_fail "$t ended early: $(tail -n 2 "$LAB_TMP/$t.out")"
  done
  # when xenstored announces the release (the first event fires at registration)
  pd_pump rel vchan xs watch @releaseDomain --count 2
  lab_wait 30 "the @releaseDomain watch" grep -q . "$LAB_TMP/rel.out"
  t0=$(vc_now_ns)
  lab_bounded 60 xl destroy "$DOMU" >&2 || lab_fail "xl destroy $DOMU failed"
  lab_figure "destroy_ms=$(( ($(vc_now_ns) - t0) / 1000000 ))"
  pd_check srv "$t0"
  pd_check cli "$t0"
  vc_ok rel 30
  lab_figure "release_event_ms=$(( ($(cat "$LAB_TMP/rel.end") - t0) / 1000000 ))"
  for t in srv cli; do
    lab_figure "$t.release_to_error_ms=$(( ($(cat "$LAB_TMP/$t.end") - $(cat "$LAB_TMP/rel.end")) / 1000000 ))"
  done
  lab_wait 30 "domain $DOMU to disappear (a mapping of its pages would keep it as a zombie)" pd_gone
  lab_figure "gone_ms=$(( ($(vc_now_ns) - t0) / 1000000 ))"
  xenstore-exists "/local/domain/$DOMU" 2>/dev/null && lab_fail "/local/domain/$DOMU outlived the domain"
  :
}

domu() {
  vc_start cli vchan pump client 0 "$(lab_get srv/path 60)" --send 1G --wait 30
  p=/local/domain/$DOMU/data/vchan/0/dcli
  vc_start srv vchan pump server 0 "$p" --send 1G --read-min 1M --write-min 1M
  lab_wait 60 "the dcli advertisement" vc_advertised "$p"
  lab_put cli/path "$p"
  # until the end of the domain
  sleep 600
}
