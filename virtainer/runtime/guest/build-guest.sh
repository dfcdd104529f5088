#!/bin/bash
# build-guest.sh OUTDIR - the kernel and initramfs every `--runtime=virtainer` VM boots.
#
#   OUTDIR/vmlinux    a kernel built here from Debian's linux-source-6.1 with kernel.config (next to
#                     this script): everything the VMs need built in, no modules, so the guest loads
#                     none and the kernel initialises only what the VMs have (see kernel.config).
#                     Uncompressed, with its PVH entry point: QEMU loads the ELF and jumps in, no
#                     decompression under TCG (stripped: the symbol table is no use to QEMU)
#   OUTDIR/initrd.gz  virtainer's guest init (init.c next to this script, static) and nothing else
#                     (the kernel unpacks every byte of it under TCG: busybox, 1 MB, is used here
#                     to build it, not in the guest)
# The launcher appends a small cpio with /virtainer/config per container. Nothing comes from the
# image being run. Needs: the linux-source-6.1 package and the kernel's build tools (make, gcc,
# bc, flex, bison, libelf-dev), apt-get (current apt lists, for busybox-static), dpkg-deb, gzip,
# libc6-dev. The kernel takes minutes to compile (nice, all cores): the caller caches OUTDIR under a
# hash of this file, init.c, kernel.config and the source package's checksums.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
HERE=$(dirname "$(realpath "$0")")
SOURCE=/usr/src/linux-source-6.1.tar.xz
[ -f "$SOURCE" ] || { echo "build-guest: no $SOURCE (apt-get install linux-source-6.1)" >&2; exit 1; }
mkdir -p "$OUTDIR"
W=$(mktemp -d "$OUTDIR/.work.XXXXXX"); trap 'rm -rf "$W"' EXIT
cd "$W"

mkdir dl
(cd dl && apt-get -q -o APT::Sandbox::User=root download busybox-static >/dev/null)
dpkg-deb -x dl/busybox-static_*.deb bb
BB=$W/bb/bin/busybox

mkdir -p rootfs/virtainer rootfs/newroot
gcc -static -Os -s -Wall -o rootfs/init "$HERE/init.c"
(cd rootfs && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null | gzip -9 -n) > initrd.gz

tar -xf "$SOURCE"
cd linux-source-6.1
make -s KCONFIG_ALLCONFIG="$HERE/kernel.config" allnoconfig
# an option whose dependencies are not met is dropped silently: say which
for option in $(grep -oE '^CONFIG_[A-Z0-9_]+=.*' "$HERE/kernel.config"); do
  grep -qx "$option" .config || { echo "build-guest: kernel.config: $option did not take" >&2; exit 1; }
done
start=$(date +%s)
nice -n 10 make -s -j"$(nproc)" vmlinux >/dev/null
echo "build-guest: kernel $(make -s kernelrelease) compiled in $(( $(date +%s) - start )) s"
cd ..
strip -s -o vmlinux linux-source-6.1/vmlinux
chmod 644 vmlinux initrd.gz
mv vmlinux initrd.gz "$OUTDIR/"
