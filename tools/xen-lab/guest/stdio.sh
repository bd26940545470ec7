# Helpers of the scenarios that move files through stdio-driven vchan programs (C
# vchan-socket-proxy `-`, `vchan proxy ... -`, `vchan node`): random data in, SHA-256 compared
# across the domains through XenStore ($XS/TAG/...). Sourced by scenario parts in both guests.
. /lab/guest/vchan.sh

# sp_data TAG BYTES ROLE: random data to send ($LAB_TMP/TAG.data), its SHA-256 under
# $XS/TAG/ROLE-sent.
sp_data() {
  head -c "$2" /dev/urandom > "$LAB_TMP/$1.data"
  lab_put "$1/$3-sent" "$(lab_sha "$LAB_TMP/$1.data")"
}

# sp_feed TAG [hold]: a feeder writing TAG.data into the FIFO TAG.in, then (hold) keeping it open
# until killed (vchan-socket-proxy stops at its input's end: it must stay open until both sides
# have everything). The program reading TAG.in is started next, by the caller.
sp_feed() {
  mkfifo "$LAB_TMP/$1.in"
  if [ "${2:-}" = hold ]; then
    lab_spawn "$1-feed" sh -c 'exec > "$1"; cat "$0"; exec sleep 600' "$LAB_TMP/$1.data" "$LAB_TMP/$1.in"
  else
    lab_spawn "$1-feed" sh -c 'exec > "$1"; exec cat "$0"' "$LAB_TMP/$1.data" "$LAB_TMP/$1.in"
  fi
}

# sp_bidi TAG ROLE PEER_ROLE BYTES SECS PATH COMMAND...: one side of a both-ways transfer through
# a stdio program. ROLE server: starts COMMAND, waits for its advertisement at PATH, then says
# $XS/TAG/up. ROLE client: waits for that, then starts COMMAND. Both: wait (SECS at most) until
# BYTES arrived, check them against the peer's SHA-256, wait until the peer has its bytes too,
# then end their input; COMMAND must then exit with status 0.
# Figure: TAG.ROLE-got=KiB/s (from COMMAND's start; at most 0.4 s of polling error).
sp_bidi() {
  sp_tag=$1 sp_role=$2 sp_peer=$3 sp_n=$4 sp_secs=$5 sp_path=$6
  shift 6
  [ "$sp_role" = client ] && lab_get "$sp_tag/up" "$sp_secs" > /dev/null
  sp_data "$sp_tag" "$sp_n" "$sp_role"
  sp_feed "$sp_tag" hold
  sp_t0=$(lab_ms)
  vc_start_io "$sp_tag" "$LAB_TMP/$sp_tag.got" "$@" < "$LAB_TMP/$sp_tag.in"
  if [ "$sp_role" = server ]; then
    lab_wait 60 "the $sp_tag server's advertisement at $sp_path" vc_advertised "$sp_path"
    lab_put "$sp_tag/up" 1
  fi
  lab_wait "$sp_secs" "$sp_n bytes from the $sp_peer ($sp_tag)" lab_has_bytes "$LAB_TMP/$sp_tag.got" "$sp_n"
  sp_ms=$(( $(lab_ms) - sp_t0 + 1 ))
  sp_sha=$(lab_sha "$LAB_TMP/$sp_tag.got")
  lab_put "$sp_tag/$sp_role-got" "$sp_sha"
  [ "$(lab_size "$LAB_TMP/$sp_tag.got")" = "$sp_n" ] || lab_fail "$sp_tag: more than $sp_n bytes arrived"
  [ "$sp_sha" = "$(lab_get "$sp_tag/$sp_peer-sent")" ] || lab_fail "$sp_tag: the $sp_role received corrupt data"
  lab_get "$sp_tag/$sp_peer-got" "$sp_secs" > /dev/null
  lab_kill "$sp_tag-feed" KILL
  vc_ok "$sp_tag" 60
  lab_figure "$sp_tag.$sp_role-got=$(( sp_n * 1000 / sp_ms / 1024 ))KiB/s"
}

# sp_send TAG BYTES SECS PATH [hold] COMMAND...: the writing side of a one-way transfer; COMMAND
# reads TAG.data on stdin and must exit 0. With PATH (COMMAND serves): waits for the
# advertisement, then says $XS/TAG/up; with PATH "-" (COMMAND connects): waits for $XS/TAG/up.
# hold: stdin is a FIFO that ends only once the reader has every byte (vchan-socket-proxy: see
# the scenario), else the file itself.
sp_send() {
  sp_tag=$1 sp_n=$2 sp_secs=$3 sp_path=$4
  shift 4
  sp_hold=
  [ "$1" = hold ] && { sp_hold=1; shift; }
  [ "$sp_path" = - ] && lab_get "$sp_tag/up" "$sp_secs" > /dev/null
  sp_data "$sp_tag" "$sp_n" writer
  if [ -n "$sp_hold" ]; then
    sp_feed "$sp_tag" hold
    vc_start "$sp_tag" "$@" < "$LAB_TMP/$sp_tag.in"
  else
    vc_start "$sp_tag" "$@" < "$LAB_TMP/$sp_tag.data"
  fi
  if [ "$sp_path" != - ]; then
    lab_wait 60 "the $sp_tag server's advertisement at $sp_path" vc_advertised "$sp_path"
    lab_put "$sp_tag/up" 1
  fi
  if [ -n "$sp_hold" ]; then
    lab_get "$sp_tag/reader-has" "$sp_secs" > /dev/null
    lab_kill "$sp_tag-feed" KILL
  fi
  vc_ok "$sp_tag" "$sp_secs"
  lab_get "$sp_tag/reader-got" "$sp_secs" > /dev/null
}

# sp_recv TAG BYTES SECS PATH [hold] COMMAND...: the reading side; COMMAND writes what it receives
# on stdout and must exit 0 by itself when the writer closes. PATH as for sp_send. hold: its stdin
# is a FIFO kept open meanwhile (vchan-socket-proxy), else /dev/null. Says $XS/TAG/reader-has
# once BYTES arrived.
# Figure: TAG=KiB/s (from COMMAND's start to the last byte; at most 0.4 s of polling error).
sp_recv() {
  sp_tag=$1 sp_n=$2 sp_secs=$3 sp_path=$4
  shift 4
  sp_hold=
  [ "$1" = hold ] && { sp_hold=1; shift; }
  [ "$sp_path" = - ] && lab_get "$sp_tag/up" "$sp_secs" > /dev/null
  sp_t0=$(lab_ms)
  if [ -n "$sp_hold" ]; then
    : > "$LAB_TMP/$sp_tag.data"
    sp_feed "$sp_tag" hold
    vc_start_io "$sp_tag" "$LAB_TMP/$sp_tag.got" "$@" < "$LAB_TMP/$sp_tag.in"
  else
    vc_start_io "$sp_tag" "$LAB_TMP/$sp_tag.got" "$@" < /dev/null
  fi
  if [ "$sp_path" != - ]; then
    lab_wait 60 "the $sp_tag server's advertisement at $sp_path" vc_advertised "$sp_path"
    lab_put "$sp_tag/up" 1
  fi
  lab_wait "$sp_secs" "$sp_n bytes from the writer ($sp_tag)" lab_has_bytes "$LAB_TMP/$sp_tag.got" "$sp_n"
  sp_ms=$(( $(lab_ms) - sp_t0 + 1 ))
  lab_put "$sp_tag/reader-has" 1
  vc_ok "$sp_tag" 60
  [ -n "$sp_hold" ] && lab_kill "$sp_tag-feed" KILL
  sp_sha=$(lab_sha "$LAB_TMP/$sp_tag.got")
  lab_put "$sp_tag/reader-got" "$sp_sha"
  [ "$(lab_size "$LAB_TMP/$sp_tag.got")" = "$sp_n" ] || lab_fail "$sp_tag: $(lab_size "$LAB_TMP/$sp_tag.got") bytes arrived, not $sp_n"
  [ "$sp_sha" = "$(lab_get "$sp_tag/writer-sent")" ] || lab_fail "$sp_tag: the reader received corrupt data"
  lab_figure "$sp_tag=$(( sp_n * 1000 / sp_ms / 1024 ))KiB/s"
}
