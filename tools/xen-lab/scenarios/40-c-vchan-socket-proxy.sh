# Sanity check of the lab itself: Debian's C vchan-socket-proxy (libxenvchan 4.17) passes 1 MiB
# each way between dom0 and the domU, once with the domU as vchan server and once with dom0 as
# server. Figures: MB/s each way (software emulation: a sanity check, not a benchmark).
LAB_TIMEOUT=150
VSP_BYTES=1048576

# vsp_server TAG PEER PATH: serve PATH to PEER, send VSP_BYTES, expect as many back.
vsp_server() {
  tag=$1 peer=$2 path=$3
  head -c $VSP_BYTES /dev/urandom > "$LAB_TMP/$tag.out"
  lab_put "$tag/server-sha" "$(lab_sha "$LAB_TMP/$tag.out")"
  mkfifo "$LAB_TMP/$tag.in"
  lab_show_on_fail "$LAB_TMP/$tag.err"
  # the feeder opens the FIFO itself (opening it here would block until a reader exists)
  lab_spawn feed sh -c 'exec > "$1"; cat "$0"; exec sleep 300' "$LAB_TMP/$tag.out" "$LAB_TMP/$tag.in"
  lab_spawn proxy vchan-socket-proxy -m server "$peer" "$path" - \
    < "$LAB_TMP/$tag.in" > "$LAB_TMP/$tag.got" 2> "$LAB_TMP/$tag.err"
  lab_wait 30 "the server's $path/event-channel" xenstore-exists "$path/event-channel"
  lab_put "$tag/server-up" 1
  t0=$(lab_ms)
  lab_wait 90 "$VSP_BYTES bytes from the client" lab_has_bytes "$LAB_TMP/$tag.got" $VSP_BYTES
  ms=$(( $(lab_ms) - t0 + 1 ))
  lab_put "$tag/server-got" "$(lab_sha "$LAB_TMP/$tag.got")"
  rc=$(lab_status proxy 60)
  lab_kill feed KILL
  cat "$LAB_TMP/$tag.err" >&2
  [ "$rc" = 0 ] || lab_fail "$tag: vchan-socket-proxy server exited with status $rc"
  [ "$(lab_get "$tag/client-sha")" = "$(lab_sha "$LAB_TMP/$tag.got")" ] || lab_fail "$tag: server received corrupt data"
  lab_figure "$tag-to-server=$(( VSP_BYTES * 1000 / ms / 1024 ))KiB/s"
}

# vsp_client TAG PEER PATH: connect to PEER's PATH, send VSP_BYTES, expect as many back.
vsp_client() {
  tag=$1 peer=$2 path=$3
  head -c $VSP_BYTES /dev/urandom > "$LAB_TMP/$tag.out"
  lab_put "$tag/client-sha" "$(lab_sha "$LAB_TMP/$tag.out")"
  lab_get "$tag/server-up" 60 >/dev/null
  mkfifo "$LAB_TMP/$tag.in"
  lab_show_on_fail "$LAB_TMP/$tag.err"
  # the feeder opens the FIFO itself (opening it here would block until a reader exists)
  lab_spawn feed sh -c 'exec > "$1"; cat "$0"; exec sleep 300' "$LAB_TMP/$tag.out" "$LAB_TMP/$tag.in"
  t0=$(lab_ms)
  lab_spawn proxy vchan-socket-proxy -m client "$peer" "$path" - \
    < "$LAB_TMP/$tag.in" > "$LAB_TMP/$tag.got" 2> "$LAB_TMP/$tag.err"
  lab_wait 90 "$VSP_BYTES bytes from the server" lab_has_bytes "$LAB_TMP/$tag.got" $VSP_BYTES
  ms=$(( $(lab_ms) - t0 + 1 ))
  # The proxy stops reading the vchan at stdin EOF: close stdin only once both sides have it all.
  lab_get "$tag/server-got" 90 >/dev/null
  lab_kill feed KILL
  rc=$(lab_status proxy 60)
  cat "$LAB_TMP/$tag.err" >&2
  [ "$rc" = 0 ] || lab_fail "$tag: vchan-socket-proxy client exited with status $rc"
  [ "$(lab_get "$tag/server-sha")" = "$(lab_sha "$LAB_TMP/$tag.got")" ] || lab_fail "$tag: client received corrupt data"
  lab_figure "$tag-to-client=$(( VSP_BYTES * 1000 / ms / 1024 ))KiB/s"
}

dom0() {
  # A: the domU serves, dom0 connects. B: dom0 serves, the domU connects.
  vsp_client domu-srv "$DOMU" "/local/domain/$DOMU/data/vsp-a"
  vsp_server dom0-srv "$DOMU" "/local/domain/0/data/vsp-b"
}

domu() {
  vsp_server domu-srv 0 "/local/domain/$DOMU/data/vsp-a"
  vsp_client dom0-srv 0 "/local/domain/0/data/vsp-b"
}
