# The reverse of 10-grants-dom0-shares: the domU shares (1 and 257 pages read-write, 1 page
# read-only) and binds the port, dom0 maps. Same checks, same figures.
LAB_TIMEOUT=180
. /lab/guest/grants.sh

dom0() {
  grants_map "$DOMU" 1 rw
  grants_map "$DOMU" 257 rw
  grants_map "$DOMU" 1 ro
}

domu() {
  grants_share 0 1 rw
  grants_share 0 257 rw
  grants_share 0 1 ro
}
