# Throughput sanity check, Rust against C in the same boot and the same harness (stdio programs,
# in-page rings of C's default size, dom0 serves, 1 MiB each way, SHA-256 checked):
#  c-c  C vchan-socket-proxy on both sides
#  r-r  `vchan proxy` on both sides, default settings
# Figures: KiB/s as each receiver saw it (at most 0.4 s of polling error). Under software
# emulation every event-channel wake-up costs about 10 ms, so both are slow: this is not a
# benchmark (50-/51- print `vchan pump`'s own figures for every ring size, spinning or not).
LAB_TIMEOUT=300
. /lab/guest/stdio.sh
N=1048576

dom0() {
  p=/local/domain/0/data/vchan/$DOMU/tp
  sp_bidi c-c server client $N 120 "$p-cc" vchan-socket-proxy -m server "$DOMU" "$p-cc" -
  sp_bidi r-r server client $N 120 "$p-rr" vchan proxy server "$DOMU" "$p-rr" -
}

domu() {
  p=/local/domain/0/data/vchan/$DOMU/tp
  sp_bidi c-c client server $N 120 - vchan-socket-proxy -m client 0 "$p-cc" -
  sp_bidi r-r client server $N 120 - vchan proxy client 0 "$p-rr" -
}
