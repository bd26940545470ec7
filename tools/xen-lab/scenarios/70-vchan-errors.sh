# Error paths of the `vchan` binary on the real devices: every failure is prompt and says what is
# wrong. Wrong domain ids: a client naming a domain that did not advertise the path, a path
# nobody serves, a server for a domain that does not exist, a loopback channel, a client reading
# a channel advertised for another domain. Missing modules: dom0 without xen_gntalloc cannot
# serve (the message says `modprobe xen_gntalloc`), the domU without xen_gntdev cannot connect
# (`modprobe xen_gntdev`); both work again once the module is back (a real transfer each). The
# domU without xen_evtchn: the message names it. Figures: how long each failure took (ms).
LAB_TIMEOUT=300
. /lab/guest/vchan.sh

# ex TAG REGEX COMMAND...: COMMAND must fail within 60 s, with output matching REGEX.
ex() {
  ex_tag=$1 ex_re=$2
  shift 2
  ex_t0=$(lab_ms)
  lab_bounded 60 "$@" > "$LAB_TMP/$ex_tag.err" 2>&1
  ex_rc=$?
  ex_ms=$(( $(lab_ms) - ex_t0 ))
  sed "s/^/[$ex_tag rc=$ex_rc ${ex_ms}ms] /" "$LAB_TMP/$ex_tag.err" >&2
  [ "$ex_rc" = 124 ] && lab_fail "$ex_tag: '$*' hung (killed after 60 s)"
  [ "$ex_rc" = 0 ] && lab_fail "$ex_tag: '$*' succeeded but was expected to fail"
  grep -E -q -- "$ex_re" "$LAB_TMP/$ex_tag.err" || lab_fail "$ex_tag: '$*' failed without a message matching /$ex_re/"
  lab_figure "$ex_tag=${ex_ms}ms"
}

# small transfers that must work
pump_srv() { # TAG PEER PATH
  vc_start "$1" vchan pump server "$2" "$3" --send 64K --spin-us 20000
  lab_wait 60 "the $1 server's advertisement" vc_advertised "$3"
  lab_put "$1/path" "$3"
  vc_ok "$1" 120
}
pump_cli() { # TAG SERVER
  vc_start "$1" vchan pump client "$2" "$(lab_get "$1/path" 120)" --send 64K --spin-us 20000 --wait 30
  vc_ok "$1" 120
}

dom0() {
  lab_get adv-up 60 > /dev/null
  pu=/local/domain/$DOMU/data/vchan/0/adv
  ex wrong-server 'advertised by domain '"$DOMU"', not by domain 998' vchan pump client 998 "$pu"
  ex no-server 'does not exist: no server is listening there' vchan pump client "$DOMU" "$pu-none"
  lab_put adv-done 1
  ex loopback 'the peer is this domain' vchan pump server 0 /local/domain/0/data/vchan/0/loop
  ex no-peer 'domain 999' vchan pump server 999 /local/domain/0/data/vchan/999/nopeer
  # a channel for another domain (C's server does not check that it exists): the domU may not
  # read its keys
  p=/local/domain/0/data/vchan/$DOMU/other
  vc_start other vchan-socket-proxy -m server "$((DOMU + 1))" "$p" - < /dev/null
  lab_wait 60 "the other-domain server's advertisement" vc_advertised "$p"
  lab_put other/path "$p"
  lab_get other/done 90 > /dev/null
  lab_kill other KILL

  # dom0 without xen_gntalloc
  rmmod xen_gntalloc || lab_fail "rmmod xen_gntalloc failed"
  ex no-gntalloc 'modprobe xen_gntalloc' vchan pump server "$DOMU" "/local/domain/0/data/vchan/$DOMU/nomod"
  modprobe xen_gntalloc || lab_fail "modprobe xen_gntalloc failed"
  lab_wait 10 "/dev/xen/gntalloc to come back" test -c /dev/xen/gntalloc
  pump_srv gntalloc-back "$DOMU" "/local/domain/0/data/vchan/$DOMU/back"
  # the domU without xen_gntdev
  pump_srv gntdev-back "$DOMU" "/local/domain/0/data/vchan/$DOMU/back2"
}

domu() {
  p=/local/domain/$DOMU/data/vchan/0/adv
  vc_start adv vchan pump server 0 "$p" --send 64K
  lab_wait 60 "the adv server's advertisement" vc_advertised "$p"
  lab_put adv-up 1
  lab_get adv-done 120 > /dev/null
  lab_kill adv KILL
  ex other-domain 'not readable by this domain' vchan pump client 0 "$(lab_get other/path 120)"
  lab_put other/done 1
  pump_cli gntalloc-back 0
  rmmod xen_gntdev || lab_fail "rmmod xen_gntdev failed"
  ex no-gntdev 'modprobe xen_gntdev' vchan pump client 0 "$(lab_get gntdev-back/path 120)"
  modprobe xen_gntdev || lab_fail "modprobe xen_gntdev failed"
  lab_wait 10 "/dev/xen/gntdev to come back" test -c /dev/xen/gntdev
  pump_cli gntdev-back 0
  # the domU without xen_evtchn (nothing else in it uses the device)
  rmmod xen_evtchn || lab_fail "rmmod xen_evtchn failed"
  ex no-evtchn 'load xen_evtchn' vchan pump client 0 "/local/domain/0/data/vchan/$DOMU/none"
  modprobe xen_evtchn || lab_fail "modprobe xen_evtchn failed"
  lab_wait 10 "/dev/xen/evtchn to come back" test -c /dev/xen/evtchn
}
