# Helpers of the grant scenarios (10-*, 20-*): one round = one domain shares pages with the other
# through xen_smoke, the other maps them. Sourced by scenario parts in both guests.

# Appends xen_smoke's FIGURE lines from FILE as figures named TAG.key=value.
grants_figures() {
  sed -n "s/^FIGURE /$2./p" "$1" > "$LAB_TMP/fig.tmp"
  while read -r _f; do lab_figure "$_f"; done < "$LAB_TMP/fig.tmp"
}

# grants_share PEER PAGES rw|ro: shares, waits for the mapper's signal, checks its writes, then
# waits for its unmap notification (event, and the live byte cleared when read-write).
grants_share() {
  _tag=share$2$3
  _ro=
  [ "$3" = ro ] && _ro=--ro
  lab_show_on_fail "$LAB_TMP/$_tag.out"
  xen_smoke share --peer "$1" --pages "$2" $_ro --xs "$XS/$2$3" --await-unmap --timeout 60 \
    > "$LAB_TMP/$_tag.out" 2>&1 || lab_fail "xen_smoke share ($2 pages, $3) failed: $(tail -n 1 "$LAB_TMP/$_tag.out")"
  grep -q 'unmap notification: event received' "$LAB_TMP/$_tag.out" || lab_fail "$_tag: no unmap notification"
  grants_figures "$LAB_TMP/$_tag.out" "$_tag"
}

# grants_map PEER PAGES rw|ro: maps and checks the pages. Read-write: the mapper is then killed
# with SIGKILL (its unmap notification tells the sharer). Read-only: it exits normally after
# checking that Xen refuses a writable mapping and that a write faults.
grants_map() {
  _tag=map$2$3
  lab_show_on_fail "$LAB_TMP/$_tag.out"
  if [ "$3" = rw ]; then
    lab_spawn "$_tag" xen_smoke map --peer "$1" --xs "$XS/$2$3" --hold --timeout 90 > "$LAB_TMP/$_tag.out" 2>&1
    lab_get "$2$3/verified" 90 >/dev/null
    lab_kill "$_tag" KILL
    _rc=$(lab_status "$_tag" 10)
    [ "$_rc" = 137 ] || lab_fail "$_tag: the mapper ended with status $_rc before it was killed"
    grep -q 'mapped and verified' "$LAB_TMP/$_tag.out" || lab_fail "$_tag: the mapper did not verify the pages"
  else
    xen_smoke map --peer "$1" --xs "$XS/$2$3" --ro --timeout 90 > "$LAB_TMP/$_tag.out" 2>&1 \
      || lab_fail "xen_smoke map ($2 pages, ro) failed: $(tail -n 1 "$LAB_TMP/$_tag.out")"
    grep -q 'read-only grant refused' "$LAB_TMP/$_tag.out" || lab_fail "$_tag: writable mapping not refused"
  fi
  grants_figures "$LAB_TMP/$_tag.out" "$_tag"
}
