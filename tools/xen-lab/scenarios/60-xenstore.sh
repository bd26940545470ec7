# `vchan xs` against the real xenstored: in dom0 through its Unix socket, in the domU through
# /dev/xen/xenbus; every operation cross-checked with the C xenstore-* tools. Own domain id in
# both, with the relative `domid` key present and removed (the seed's failure case: Xen 4.2's
# libxenvchan could only read that key, so a dom0 without it could not serve):
#  - dom0 without /local/domain/0/domid: `vchan xs domid` answers 0 (/proc/xen/capabilities
#    says control_d), also with that file hidden (the owner of its own nodes), and a
#    `vchan pump` server in dom0 advertises with the right permissions and serves the domU;
#  - the domU without /local/domain/<id>/domid (removed by dom0): `vchan xs domid` answers its
#    id (the owner of its own `data` node; its capabilities file has no control_d), and a
#    `vchan pump` server in the domU works; with its home's nodes also made dom0's alone, the
#    error lists every source tried.
# The keys are restored with their permissions afterwards.
LAB_TIMEOUT=420
. /lab/guest/vchan.sh

# xs_same WHAT GOT WANT
xs_same() { [ "$2" = "$3" ] || lab_fail "$1: got '$2', expected '$3'"; }

# xs_ops DIR: write/read/ls/perms/chmod/watch/rm in DIR with vchan xs, checked with xenstore-*.
xs_ops() {
  vchan xs write "$1/k" "hello world" || lab_fail "vchan xs write failed"
  xs_same "xenstore-read of vchan xs write" "$(xenstore-read "$1/k")" "hello world"
  xenstore-write "$1/c" v2
  xs_same "vchan xs read" "$(vchan xs read "$1/c")" v2
  xs_same "vchan xs ls" "$(vchan xs ls "$1" | sort | tr '\n' ' ')" "c k "
  vchan xs mkdir "$1/d" || lab_fail "vchan xs mkdir failed"
  xs_same "mkdir'd value" "$(xenstore-read "$1/d")" ""
  vchan xs chmod "$1/k" "n$2" "r$3" || lab_fail "vchan xs chmod failed"
  xs_same "vchan xs perms" "$(vchan xs perms "$1/k")" "n$2 r$3"
  xenstore-ls -p "$1" | grep -q "^k = \"hello world\".*(n$2,r$3)" \
    || lab_fail "xenstore-ls -p does not show k with (n$2,r$3): $(xenstore-ls -p "$1" | tr '\n' ' ')"
  # a watch fires once when set, then once per change
  vc_start watch vchan xs watch "$1/w" --count 2 --token tok
  lab_wait 30 "the first watch event" grep -q "^$1/w tok$" "$LAB_TMP/watch.out"
  xenstore-write "$1/w" changed
  vc_ok watch 30
  xs_same "watch events" "$(wc -l < "$LAB_TMP/watch.out" | tr -d ' ')" 2
  vchan xs rm "$1" || lab_fail "vchan xs rm failed"
  xenstore-exists "$1" 2>/dev/null && lab_fail "vchan xs rm left $1"
  xs_same "vchan xs domain-path" "$(vchan xs domain-path "$DOMU")" "/local/domain/$DOMU"
  lab_figure "$LAB_SIDE.ops=ok"
}

# xs_serve TAG OWN PEER: a vchan pump server, its keys' permissions checked by dom0.
xs_serve() {
  p=/local/domain/$2/data/vchan/$3/$1
  vc_start "$1" vchan pump server "$3" "$p" --send 1M --spin-us 20000
  lab_wait 60 "the $1 server's advertisement" vc_advertised "$p"
  lab_put "$1/path" "$p"
  vc_ok "$1" 120
  lab_get "$1/checked" 60 > /dev/null
}
xs_connect() {
  p=$(lab_get "$1/path" 120)
  [ "$LAB_SIDE" = dom0 ] && xs_same "permissions of $p/ring-ref" "$(vchan xs perms "$p/ring-ref")" "n$3 r0"
  vc_start "$1" vchan pump client "$2" "$p" --send 1M --spin-us 20000 --wait 30
  vc_ok "$1" 120
  lab_put "$1/checked" 1
}

dom0() {
  xs_same "xenstore-read domid" "$(xenstore-read domid)" 0
  xs_same "vchan xs domid (key present)" "$(vchan xs domid)" 0
  xs_ops "$XS/d0" 0 "$DOMU"
  vchan xs watch @releaseDomain --count 1 > "$LAB_TMP/rel.out" || lab_fail "watching @releaseDomain failed"
  xs_same "first @releaseDomain event" "$(cat "$LAB_TMP/rel.out")" "@releaseDomain vchan-xs"

  # the seed's failure case: no /local/domain/0/domid
  perms=$(vchan xs perms /local/domain/0/domid)
  xenstore-rm /local/domain/0/domid
  xenstore-exists /local/domain/0/domid 2>/dev/null && lab_fail "xenstore-rm /local/domain/0/domid did not remove it"
  xs_same "vchan xs domid (no key, control_d)" "$(vchan xs domid)" 0
  : > "$LAB_TMP/empty"
  d=$(unshare -m sh -c 'mount --bind "$0" /proc/xen/capabilities && exec vchan xs domid' "$LAB_TMP/empty") \
    || lab_fail "vchan xs domid failed without the key and with capabilities hidden: $d"
  xs_same "vchan xs domid (no key, no capabilities)" "$d" 0
  p=/local/domain/0/data/vchan/$DOMU/nokey
  vc_start nokey vchan pump server "$DOMU" "$p" --send 1M --spin-us 20000
  lab_wait 60 "the nokey server's advertisement" vc_advertised "$p"
  xs_same "permissions of $p/ring-ref" "$(vchan xs perms "$p/ring-ref")" "n0 r$DOMU"
  lab_put nokey/path "$p"
  vc_ok nokey 120
  lab_get nokey/checked 60 > /dev/null
  xenstore-write /local/domain/0/domid 0
  # shellcheck disable=SC2086 # one word per permission
  xenstore-chmod /local/domain/0/domid $perms
  xs_same "restored perms" "$(vchan xs perms /local/domain/0/domid)" "$perms"

  # the domU without its key: dom0 removes it, the domU finds its id and serves
  lab_get domu-ops-done 120 > /dev/null
  k=/local/domain/$DOMU/domid
  perms=$(vchan xs perms "$k")
  xenstore-rm "$k"
  lab_put domid-removed 1
  xs_connect ukey "$DOMU" "$DOMU"
  lab_get domu-nokey-done 120 > /dev/null
  # ... and with every fallback hidden (its home's nodes made dom0's alone), the error lists
  # what was tried
  hidden=
  for n in data device control name; do
    if pn=$(vchan xs perms "/local/domain/$DOMU/$n" 2>/dev/null); then
      hidden="$hidden $n"
      echo "$pn" > "$LAB_TMP/perms-$n"
      xenstore-chmod "/local/domain/$DOMU/$n" n0
    fi
  done
  lab_put fallbacks-hidden 1
  lab_get fallbacks-checked 120 > /dev/null
  for n in $hidden; do
    # shellcheck disable=SC2046 # one word per permission
    xenstore-chmod "/local/domain/$DOMU/$n" $(cat "$LAB_TMP/perms-$n")
    xs_same "restored perms of $n" "$(vchan xs perms "/local/domain/$DOMU/$n")" "$(cat "$LAB_TMP/perms-$n")"
  done
  xenstore-write "$k" "$DOMU"
  # shellcheck disable=SC2086 # one word per permission
  xenstore-chmod "$k" $perms
  xs_same "restored perms of $k" "$(vchan xs perms "$k")" "$perms"
  lab_figure "domid-perms-restored=$(echo "$perms" | tr ' ' ,)"
}

domu() {
  xs_same "xenstore-read domid" "$(xenstore-read domid)" "$DOMU"
  xs_same "vchan xs domid (key present)" "$(vchan xs domid)" "$DOMU"
  xs_ops "$XS/du" "$DOMU" 0
  lab_expect_failure 'EACCES' vchan xs read /local/domain/0/name
  lab_expect_failure 'EACCES' vchan xs write /local/domain/0/data/x y
  xs_connect nokey 0 0
  lab_put domu-ops-done 1
  lab_get domid-removed 120 > /dev/null
  xenstore-read domid > /dev/null 2>&1 && lab_fail "my domid key is still there"
  # which fallback answers: not /proc/xen/capabilities (no control_d here), the owner of `data`
  grep -q control_d /proc/xen/capabilities && lab_fail "/proc/xen/capabilities says control_d in the domU"
  xs_same "owner of my data node" "$(vchan xs perms data | cut -d' ' -f1)" "n$DOMU"
  xs_same "vchan xs domid (no key)" "$(vchan xs domid)" "$DOMU"
  xs_serve ukey "$DOMU" 0
  lab_put domu-nokey-done 1
  lab_get fallbacks-hidden 120 > /dev/null
  lab_expect_failure 'cannot find out which domain this is; tried: relative key `domid`.*/proc/xen/capabilities: no `control_d`.*owner of relative `data`' \
    vchan xs domid
  lab_put fallbacks-checked 1
}
