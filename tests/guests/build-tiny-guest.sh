#!/bin/bash
# build-tiny-guest.sh OUTDIR - virtainer's tiny test guest (boots in a few seconds under TCG).
#
# Produces:
#   OUTDIR/vmlinuz    Debian cloud kernel (the linux-image-* that linux-image-cloud-amd64 depends on)
#   OUTDIR/initrd.gz  busybox-static initramfs: tiny-rootfs/ (next to this script) + busybox +
#                     the kernel modules for ACPI button, evdev, virtio-pci/-net/-blk (with deps)
#   OUTDIR/disk.qcow2 64 MiB base disk: zeroes (bytes 0..15 = boot counter, starts at 0) and the
#                     marker line "VIRTAINER-TINY-DISK v1" at offset 4096; use it as an overlay base
# Boot: direct kernel boot, cmdline "console=ttyS0 guestmode=serve" (see tiny-rootfs/init).
# Needs: apt-get (host apt lists up to date: `apt-get update`), dpkg-deb, gzip, qemu-img, gcc and
# libc6-dev (tiny-tools/udpecho.c, built static: busybox has no UDP server).
# Used by tests/guests/__init__.py (cached by a hash of this file and tiny-rootfs/).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
HERE=$(dirname "$(realpath "$0")")
SRC=$HERE/tiny-rootfs
MODULES="button evdev virtio_pci virtio_blk virtio_net"
mkdir -p "$OUTDIR"; chmod 755 "$OUTDIR"
W=$(mktemp -d "$OUTDIR/.work.XXXXXX"); trap 'rm -rf "$W"' EXIT
cd "$W"

# ---- 1. packages --------------------------------------------------------------------------
K=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$K" ] || { echo "build-tiny-guest: linux-image-cloud-amd64 unknown (run apt-get update)" >&2; exit 1; }
mkdir dl
(cd dl && apt-get -q -o APT::Sandbox::User=root download "$K" busybox-static)
dpkg-deb -x dl/linux-image-*.deb k
dpkg-deb -x dl/busybox-static_*.deb bb
BB=$W/bb/bin/busybox
KVER=$(ls k/lib/modules)
cp "k/boot/vmlinuz-$KVER" vmlinuz

# ---- 2. initramfs tree ----------------------------------------------------------------------
mkdir rootfs
cp -a "$SRC/." rootfs/
chmod 755 rootfs/init rootfs/etc/udhcpc.script rootfs/etc/acpi/PWRF/*
mkdir -p rootfs/bin
cp "$BB" rootfs/bin/busybox
gcc -static -Os -s -Wall -o rootfs/bin/udpecho "$HERE/tiny-tools/udpecho.c"
# wanted modules + their dependencies (closure over modules.dep), same paths, own modules.dep
"$BB" depmod -b k "$KVER"
DEP=k/lib/modules/$KVER/modules.dep
todo=""
for m in $MODULES; do
  p=$(grep -oE "^[^:]*/$m\.ko(\.[a-z]+)?:" "$DEP" | tr -d :) || { echo "no module $m" >&2; exit 1; }
  todo="$todo $p"
done
done_=""
while [ -n "${todo// /}" ]; do
  set -- $todo; p=$1; shift; todo="$*"
  case " $done_ " in *" $p "*) continue;; esac
  done_="$done_ $p"
  todo="$todo $(grep -E "^$p:" "$DEP" | cut -d: -f2)"
done
for p in $done_; do
  mkdir -p "rootfs/lib/modules/$KVER/$(dirname "$p")"
  cp "k/lib/modules/$KVER/$p" "rootfs/lib/modules/$KVER/$p"
done
"$BB" depmod -b rootfs "$KVER"
echo "build-tiny-guest: kernel $KVER, modules:$(for p in $done_; do basename "$p" .ko; done | tr '\n' ' ')"
(cd rootfs && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null | gzip -9 -n) > initrd.gz

# ---- 3. base disk ---------------------------------------------------------------------------
truncate -s 64M disk.raw
printf 'VIRTAINER-TINY-DISK v1\n' | dd of=disk.raw bs=512 seek=8 conv=notrunc status=none
qemu-img convert -q -f raw -O qcow2 disk.raw disk.qcow2

chmod 644 vmlinuz initrd.gz disk.qcow2
mv vmlinuz initrd.gz disk.qcow2 "$OUTDIR/"
ls -l "$OUTDIR"
