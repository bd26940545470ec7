#!/usr/bin/env bash
# Layer 2 of the lab images, built from layer 1 ("$1", see base.sh) into "$2":
#   dom0.cpio            dom0's initramfs: the bookworm rootfs + guest/dom0-init as /init + /lab
#                        (the domU kernel and the domU base initramfs); uncompressed, as TCG
#                        unpacks that fastest
#   domu-base.cpio.gz    the domU's initramfs without the per-run payload: busybox, the Xen modules,
#                        xenstore-* and vchan-socket-proxy with their libraries, guest/domu-init
#   domu-base.files      the paths inside domu-base (run.sh adds missing libraries to the payload)
# Usage: images.sh BASE_DIR OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
base=$1 out=$2
root=$base/rootfs
mkdir -p "$out"

# --- domU base: a busybox system with just what a PV guest needs to use vchan -------------------
u=$out/domu-stage
rm -rf "$u"
mkdir -p "$u"/{bin,sbin,dev,proc,sys,tmp,run,etc,lab,usr/bin,usr/sbin,usr/lib/xen-4.17/bin}
cp "$base/busybox" "$u/bin/busybox"
ln -s busybox "$u/bin/sh"
cp -a "$root/usr/bin/xenstore" "$u/usr/bin/"
for tool in xenstore-read xenstore-write xenstore-rm xenstore-ls xenstore-list xenstore-chmod \
            xenstore-exists xenstore-watch; do
  ln -s xenstore "$u/usr/bin/$tool"
done
cp "$root/usr/lib/xen-4.17/bin/vchan-socket-proxy" "$u/usr/lib/xen-4.17/bin/"
# Shared libraries of those programs, plus what glibc loads at run time without ldd seeing it:
# libgcc_s (pthread_cancel in libxenstore's watch thread; Rust's unwinder).
libs=$(chroot "$root" ldd /usr/bin/xenstore /usr/lib/xen-4.17/bin/vchan-socket-proxy \
       | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | sort -u)
for lib in $libs /usr/lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libm.so.6; do
  mkdir -p "$u$(dirname "$lib")"
  cp -L "$root$lib" "$u$lib"
done
mkdir -p "$u/lib64"
cp -L "$root/lib64/ld-linux-x86-64.so.2" "$u/lib64/"
kver=$(ls "$root/lib/modules")
mkdir -p "$u/lib/modules"
cp -a "$root/lib/modules/$kver" "$u/lib/modules/"
cp "$here/guest/domu-init" "$u/init"
chmod 755 "$u/init"
(cd "$u" && find . | sed 's|^\./|/|' | sort) > "$out/domu-base.files"
(cd "$u" && find . | cpio -o -H newc --quiet | gzip -6) > "$out/domu-base.cpio.gz"
rm -rf "$u"

# --- dom0: the whole rootfs, trimmed of what a diskless test boot never reads --------------------
s=$out/dom0-stage
rm -rf "$s"
mkdir -p "$s"
tar -C "$root" -cf - \
    --exclude=./var/cache/apt --exclude=./var/lib/apt/lists --exclude=./usr/share/doc \
    --exclude=./usr/share/man --exclude=./usr/share/locale --exclude=./usr/share/info \
    --exclude=./usr/share/zoneinfo --exclude=./usr/share/i18n --exclude=./usr/share/common-licenses \
    --exclude='./usr/lib/python3/dist-packages/*/__pycache__' . | tar -C "$s" -xf -
cp "$here/guest/dom0-init" "$s/init"
chmod 755 "$s/init"
mkdir -p "$s/lab"
cp "$base/vmlinuz" "$s/lab/vmlinuz"
cp "$out/domu-base.cpio.gz" "$s/lab/domu-base.cpio.gz"
(cd "$s" && find . | cpio -o -H newc --quiet) > "$out/dom0.cpio"
rm -rf "$s"
