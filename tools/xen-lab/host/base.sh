#!/usr/bin/env bash
# Layer 1 of the lab images (the slow, rarely changing part), built into "$1":
#   xen          the Xen 4.17 hypervisor as an uncompressed ELF (QEMU's multiboot loader takes it)
#   vmlinuz      Debian's 6.1 kernel, used by dom0 and the domU alike (both PV)
#   rootfs/      debootstrap'd bookworm (minbase) with Xen's toolstack, plus the kernel's Xen modules
#   busybox      a static busybox for the domU
# Nothing is installed on the host: packages are downloaded and unpacked.
# Usage: base.sh OUT_DIR KERNEL_VERSION MIRROR        (run.sh calls it when the cache key changes)
set -euo pipefail
out=$1 kver=$2 mirror=$3
mkdir -p "$out/debs"

say() { printf '[xen-lab] %s\n' "$*" >&2; }
quiet_download() { # apt-get download prints a harmless sandbox warning as root
  (cd "$out/debs" && apt-get download -q "$@" 2>&1 | grep -v -e 'Download is performed unsandboxed' -e '^Get:' || true)
  for p in "$@"; do
    ls "$out/debs/${p}"_*.deb >/dev/null 2>&1 || { say "apt-get download $p failed"; exit 1; }
  done
}

say "downloading xen-hypervisor-4.17-amd64, linux-image-$kver, busybox-static"
quiet_download xen-hypervisor-4.17-amd64 "linux-image-$kver" busybox-static

rm -rf "$out/unpacked"
mkdir -p "$out/unpacked"
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$out/unpacked"; done
zcat "$out/unpacked/boot/xen-4.17-amd64.gz" > "$out/xen"
cp "$out/unpacked/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$out/unpacked/bin/busybox" "$out/busybox"

say "debootstrap bookworm (minbase + Xen toolstack) from $mirror"
rm -rf "$out/rootfs"
if ! debootstrap --variant=minbase --include=xen-utils-4.17,xenstore-utils,kmod,procps \
     bookworm "$out/rootfs" "$mirror" >"$out/debootstrap.log" 2>&1; then
  tail -n 30 "$out/debootstrap.log" >&2
  say "debootstrap failed (full log: $out/debootstrap.log)"
  exit 1
fi
rm -rf "$out/rootfs/var/cache/apt/archives"/*.deb "$out/rootfs/var/lib/apt/lists"/*_Packages

# Only the Xen drivers of the kernel's module tree (the whole tree is ~400 MB).
mods=lib/modules/$kver
mkdir -p "$out/rootfs/$mods/kernel/drivers"
cp -a "$out/unpacked/$mods/kernel/drivers/xen" "$out/rootfs/$mods/kernel/drivers/"
cp "$out/unpacked/$mods"/modules.order "$out/unpacked/$mods"/modules.builtin* "$out/rootfs/$mods/"
chroot "$out/rootfs" depmod "$kver"
for m in xen-gntalloc xen-gntdev xen-evtchn xenfs; do
  chroot "$out/rootfs" modinfo -k "$kver" -F filename "$m" >/dev/null \
    || { say "kernel $kver has no module $m"; exit 1; }
done
rm -rf "$out/unpacked"
