# dom0 shares pages with the domU (1 and 257 pages read-write, 1 page read-only) and binds an
# unbound event port; the refs and the port travel through XenStore (xenstore-write/-read). The
# domU maps them, checks dom0's pattern, writes its own and signals; dom0 waits for the event and
# checks. Read-write: the domU's mapper is then killed (SIGKILL) and dom0 sees its unmap
# notification (event + byte cleared). Read-only: Xen refuses a writable mapping, a write faults.
# Figures: share/map times (us), event waits (ms) under emulation.
LAB_TIMEOUT=180
. /lab/guest/grants.sh

dom0() {
  grants_share "$DOMU" 1 rw
  grants_share "$DOMU" 257 rw
  grants_share "$DOMU" 1 ro
}

domu() {
  grants_map 0 1 rw
  grants_map 0 257 rw
  grants_map 0 1 ro
}
