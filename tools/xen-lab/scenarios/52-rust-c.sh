# Rust <-> C: the `vchan` binary opposite Debian's C vchan-socket-proxy (libxenvchan 4.17), both
# roles, both placements; random data, SHA-256 compared across the domains.
#  rs-cc    dom0 `vchan proxy server` (64 KiB rings, multi-page) <-> domU C client, both ways
#  cs-rc    domU C server (C's in-page rings)                    <-> dom0 `vchan proxy client`
#  urs-cc   domU `vchan proxy server` (in-page)                  <-> dom0 C client
#  ucs-rc   dom0 C server                                        <-> domU `vchan proxy client`
#  node-rs  dom0 `vchan node server write` (1 MiB rings) -> domU C client (one way)
#  node-cs  domU C server -> dom0 `vchan node client read` (one way; it ends when C closes)
# The C proxy stops at its input's end, so both sides keep their input open until both have
# everything (see guest/stdio.sh). That also avoids a bug of the C proxy (Xen 4.17 and master):
# when its input ends while it still holds unsent bytes, it writes them and then waits for one
# more event (`while (insiz) { vchan_wr(); libxenvchan_wait(); }`) that a peer which asked for
# nothing never sends: it hangs in evtchn_read with every byte delivered, opposite a C client as
# opposite ours (seen 6 times in 6 tries). Ending its input once the reader has everything means
# it has nothing buffered and closes at once.
# Figures: KiB/s as each receiver saw it (emulation: sanity only).
LAB_TIMEOUT=600
. /lab/guest/stdio.sh
N=2097152
BIG=4194304
VSP=vchan-socket-proxy

dom0() {
  p=/local/domain/0/data/vchan/$DOMU/rs-cc
  sp_bidi rs-cc server client $BIG 180 "$p" vchan proxy server "$DOMU" "$p" - --read-min 64K --write-min 64K
  sp_bidi cs-rc client server $N 180 - vchan proxy client "$DOMU" "/local/domain/$DOMU/data/vchan/0/cs-rc" -
  sp_bidi urs-cc client server $N 180 - $VSP -m client "$DOMU" "/local/domain/$DOMU/data/vchan/0/urs-cc" -
  p=/local/domain/0/data/vchan/$DOMU/ucs-rc
  sp_bidi ucs-rc server client $N 180 "$p" $VSP -m server "$DOMU" "$p" -
  p=/local/domain/0/data/vchan/$DOMU/node-rs
  sp_send node-rs $BIG 180 "$p" vchan node server write "$DOMU" "$p" --read-min 1M --write-min 1M
  sp_recv node-cs $N 180 - vchan node client read "$DOMU" "/local/domain/$DOMU/data/vchan/0/node-cs"
}

domu() {
  sp_bidi rs-cc client server $BIG 180 - $VSP -m client 0 "/local/domain/0/data/vchan/$DOMU/rs-cc" -
  p=/local/domain/$DOMU/data/vchan/0/cs-rc
  sp_bidi cs-rc server client $N 180 "$p" $VSP -m server 0 "$p" -
  p=/local/domain/$DOMU/data/vchan/0/urs-cc
  sp_bidi urs-cc server client $N 180 "$p" vchan proxy server 0 "$p" -
  sp_bidi ucs-rc client server $N 180 - vchan proxy client 0 "/local/domain/0/data/vchan/$DOMU/ucs-rc" -
  sp_recv node-rs $BIG 180 - hold $VSP -m client 0 "/local/domain/0/data/vchan/$DOMU/node-rs" -
  p=/local/domain/$DOMU/data/vchan/0/node-cs
  sp_send node-cs $N 180 "$p" hold $VSP -m server 0 "$p" -
}
