# Error paths on the real devices, dom0 only: every failure must be a clear message.
#  - gntalloc's page limit (1024 by default): sharing 1025 pages names the sysfs parameter
#  - mapping refs the domU never granted (and claiming a domain that does not exist): the
#    message names the domain and the refs
#  - binding to an event port the domU never offered: the message names the port
#  - rmmod xen_gntalloc: sharing fails with a message naming the module (then it is reloaded)
LAB_TIMEOUT=90

dom0() {
  lab_expect_failure 'xen_gntalloc/parameters/limit' xen_smoke share-once --peer "$DOMU" --pages 1025
  lab_expect_failure "domain $DOMU has not granted grant reference 30000" \
    xen_smoke map-refs --peer "$DOMU" --refs 30000,30001
  lab_expect_failure 'domain 999 has not granted' xen_smoke map-refs --peer 999 --refs 5 --ro
  lab_expect_failure "port 1000 of domain $DOMU" xen_smoke bind --peer "$DOMU" --port 1000
  # sharing works, then not without the module, then again once it is back
  xen_smoke share-once --peer "$DOMU" --pages 1 >&2 || lab_fail "sharing one page failed"
  rmmod xen_gntalloc || lab_fail "rmmod xen_gntalloc failed"
  lab_expect_failure '/dev/xen/gntalloc does not exist: load the kernel module with `modprobe xen_gntalloc`' \
    xen_smoke share-once --peer "$DOMU" --pages 1
  modprobe xen_gntalloc || lab_fail "modprobe xen_gntalloc failed"
  lab_wait 10 "/dev/xen/gntalloc to come back" test -c /dev/xen/gntalloc
  xen_smoke share-once --peer "$DOMU" --pages 1 >&2 || lab_fail "sharing failed after reloading xen_gntalloc"
  lab_figure checks=6
}
