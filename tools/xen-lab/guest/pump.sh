# Helpers of the Rust <-> Rust scenarios (50-*, 51-*): one round = a `vchan pump` server in one
# domain and a `vchan pump` client in the other, data both ways at once, every byte checked
# against the sender's pattern (pump exits 4 on the first wrong byte). Each side also checks,
# in /proc/PID/maps, that it shares (server: gntalloc) or maps (client: gntdev) exactly the
# memory the ring sizes call for: the control page alone for in-page rings, plus both rings
# for multi-page ones.
. /lab/guest/vchan.sh

# pump_serve TAG PEER RMIN WMIN BYTES SPIN_US SECS: serves a pump at
# /local/domain/<own>/data/vchan/PEER/TAG, announces it under $XS/TAG/path, checks the
# shared memory and the result.
pump_serve() {
  pu_tag=$1 pu_peer=$2 pu_rmin=$3 pu_wmin=$4 pu_bytes=$5 pu_spin=$6 pu_secs=$7
  pu_own=0
  [ "$LAB_SIDE" = domu ] && pu_own=$DOMU
  pu_path=/local/domain/$pu_own/data/vchan/$pu_peer/$pu_tag
  vc_start "$pu_tag" vchan pump server "$pu_peer" "$pu_path" --send "$pu_bytes" \
    --read-min "$pu_rmin" --write-min "$pu_wmin" --spin-us "$pu_spin" --progress
  lab_wait 60 "the $pu_tag server's advertisement at $pu_path" vc_advertised "$pu_path"
  pu_pid=$(cat "$LAB_TMP/$pu_tag.pid")
  pu_want=$(vc_ring_bytes "$pu_rmin" "$pu_wmin")
  pu_got=$(vc_map_bytes "$pu_pid" /dev/xen/gntalloc)
  [ "$pu_got" = "$pu_want" ] || lab_fail "$pu_tag: the server shares $pu_got bytes through gntalloc, expected $pu_want"
  lab_put "$pu_tag/path" "$pu_path"
  lab_put "$pu_tag/bytes" "$pu_want"
  vc_ok "$pu_tag" "$pu_secs" 60
  [ "$(vc_field "$LAB_TMP/$pu_tag.out" verified)" = yes ] || lab_fail "$pu_tag: no verified result"
  lab_figure "$pu_tag=$(vc_field "$LAB_TMP/$pu_tag.out" send_MBps)/$(vc_field "$LAB_TMP/$pu_tag.out" recv_MBps)MBps"
  # the server removes its keys when it closes
  xenstore-exists "$pu_path/ring-ref" 2>/dev/null && lab_fail "$pu_tag: $pu_path/ring-ref left behind"
  lab_get "$pu_tag/client-done" 60 >/dev/null
}

# pump_connect TAG SERVER BYTES SPIN_US SECS MAPCHECK: the client of pump_serve's round TAG;
# MAPCHECK yes: check its gntdev mappings while it runs (only for transfers that last seconds:
# the mappings exist from the connection to the end of the transfer).
pump_connect() {
  pu_tag=$1 pu_server=$2 pu_bytes=$3 pu_spin=$4 pu_secs=$5 pu_check=$6
  pu_path=$(lab_get "$pu_tag/path" "$pu_secs")
  pu_want=$(lab_get "$pu_tag/bytes")
  vc_start "$pu_tag" vchan pump client "$pu_server" "$pu_path" --send "$pu_bytes" --spin-us "$pu_spin" \
    --wait 30 --progress
  pu_pid=$(cat "$LAB_TMP/$pu_tag.pid")
  if [ "$pu_check" = yes ]; then
    lab_wait 60 "the $pu_tag client's mapping of the rings" vc_has_map "$pu_pid" /dev/xen/gntdev
    pu_got=$(vc_map_bytes "$pu_pid" /dev/xen/gntdev)
    [ "$pu_got" = "$pu_want" ] || lab_fail "$pu_tag: the client maps $pu_got bytes through gntdev, expected $pu_want"
  fi
  vc_ok "$pu_tag" "$pu_secs" 60
  [ "$(vc_field "$LAB_TMP/$pu_tag.out" verified)" = yes ] || lab_fail "$pu_tag: no verified result"
  lab_put "$pu_tag/client-done" 1
}

# The rounds of a scenario: TAG RMIN WMIN BYTES(each way) SPIN_US SECS CLIENT-MAPCHECK.
# SECS allows 0.1 MB/s for the bulk in-page round (measured: 0.2-6 MB/s, depending on the
# host's other work) and 0.5 MB/s for the others; a round that stops moving fails after 60 s.
pump_rounds() {
  cat <<EOF
inpage 0 0 64M $VC_SPIN_US 1300 yes
inpage-ev 0 0 1M 0 120 no
p64k 64K 64K 64M $VC_SPIN_US 300 yes
p64k-ev 64K 64K 1M 0 60 no
p1m 1M 1M 64M $VC_SPIN_US 300 yes
p1m-ev 1M 1M 1M 0 60 no
EOF
}

# pump_server_side PEER / pump_client_side SERVER: all rounds, one side.
pump_server_side() {
  pump_rounds > "$LAB_TMP/rounds"
  while read -r pr_t pr_r pr_w pr_b pr_s pr_l pr_c; do
    pump_serve "$pr_t" "$1" "$pr_r" "$pr_w" "$pr_b" "$pr_s" "$pr_l" < /dev/null
  done < "$LAB_TMP/rounds"
}
pump_client_side() {
  pump_rounds > "$LAB_TMP/rounds"
  while read -r pr_t pr_r pr_w pr_b pr_s pr_l pr_c; do
    pump_connect "$pr_t" "$1" "$pr_b" "$pr_s" "$pr_l" "$pr_c" < /dev/null
  done < "$LAB_TMP/rounds"
}
