#!/bin/bash
# build-kernel.sh OUTDIR - the guest kernel every `--runtime=virtainer` VM boots.
#
#   OUTDIR/vmlinux    built here from Debian's linux-source-6.1 with kernel.config (next to this
#                     script): everything the VMs need built in, no modules, so the guest loads
#                     none and the kernel initialises only what the VMs have (see kernel.config).
#                     Uncompressed, with its PVH entry point: QEMU loads the ELF and jumps in, no
#                     decompression under TCG (stripped: the symbol table is no use to QEMU)
# Needs: the linux-source-6.1 package and the kernel's build tools (make, gcc, bc, flex, bison,
# libelf-dev). Minutes to compile (nice, all cores): the caller caches OUTDIR under a hash of this
# file, kernel.config and the source package's checksums.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
HERE=$(dirname "$(realpath "$0")")
SOURCE=/usr/src/linux-source-6.1.tar.xz
[ -f "$SOURCE" ] || { echo "build-kernel: no $SOURCE (apt-get install linux-source-6.1)" >&2; exit 1; }
mkdir -p "$OUTDIR"
W=$(mktemp -d "$OUTDIR/.work.XXXXXX"); trap 'rm -rf "$W"' EXIT
cd "$W"

tar -xf "$SOURCE"
cd linux-source-6.1
make -s KCONFIG_ALLCONFIG="$HERE/kernel.config" allnoconfig
# an option whose dependencies are not met is dropped silently: say which
for option in $(grep -oE '^CONFIG_[A-Z0-9_]+=.*' "$HERE/kernel.config"); do
  grep -qx "$option" .config || { echo "build-kernel: kernel.config: $option did not take" >&2; exit 1; }
done
start=$(date +%s)
nice -n 10 make -s -j"$(nproc)" vmlinux >/dev/null
echo "build-kernel: kernel $(make -s kernelrelease) compiled in $(( $(date +%s) - start )) s"
cd ..
strip -s -o vmlinux linux-source-6.1/vmlinux
chmod 644 vmlinux
mv vmlinux "$OUTDIR/"
