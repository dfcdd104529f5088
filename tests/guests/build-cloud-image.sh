#!/bin/bash
# build-cloud-image.sh OUTDIR - build virtainer's Debian 12 test "cloud image" from Debian packages.
#
# Produces OUTDIR/base.qcow2: 2 GiB virtual, MBR + one ext4 partition (LABEL=cloudimg-rootfs),
# GRUB (i386-pc) in the post-MBR gap, BIOS boot, serial console on ttyS0.  Contents: cloud-init
# (NoCloud datasource, default user "debian"), openssh-server, qemu-guest-agent, DHCP on en*/eth*
# via systemd-networkd.  No loop devices, no mounts: mmdebstrap builds a tree, mkfs.ext4 -d copies
# it into a raw file, grub-mkimage writes a self-contained core.img into sectors 1..2047.
#
# Host prerequisites (Debian 12, run as root):
#   apt-get install -y --no-install-recommends mmdebstrap e2fsprogs fdisk grub-pc-bin qemu-utils
# Env knobs: SOURCES (apt sources file; default the host's), SIZE_MB (2048),
#            COMPRESS=0 (default 1: compressed qcow2, ~150 MiB instead of ~380 MiB, +8 s build;
#            no measurable boot slowdown under TCG, guests write to overlays anyway),
#            EXTRA_PKGS=pkg1,pkg2
# Used by tests/guests/__init__.py (cached by a hash of this file): edit here => rebuild.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
SOURCES=${SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
SIZE_MB=${SIZE_MB:-2048}
LABEL=cloudimg-rootfs
CMDLINE="root=LABEL=$LABEL ro console=tty0 console=ttyS0,115200n8"
T0=$(date +%s)
mkdir -p "$OUTDIR"; chmod 755 "$OUTDIR"
W=$(mktemp -d "$OUTDIR/.work.XXXXXX"); trap 'rm -rf "$W"' EXIT
ROOTFS=$W/rootfs

# ---- 1. root filesystem tree -------------------------------------------------------------
PKGS=linux-image-cloud-amd64,initramfs-tools,zstd,systemd-sysv,udev,dbus,libpam-systemd,kmod,e2fsprogs
PKGS=$PKGS,cloud-init,cloud-guest-utils,openssh-server,qemu-guest-agent,netbase,iproute2,sudo
[ -n "${EXTRA_PKGS:-}" ] && PKGS=$PKGS,$EXTRA_PKGS

# TCG is ~10-20x slower than KVM: skip RSA/DSA host keys (~10-15 s), locale-gen/update-locale
# (en_US.UTF-8 is not generated on minbase => cloud-init status "error"), grub debconf probing
# (~4 s); manage_etc_hosts lets sudo resolve the hostname.
cat > "$W/95_virtainer-fixture.cfg" <<'CFG'
# virtainer test fixture: tuning for TCG (no KVM)
locale: C.UTF-8
manage_etc_hosts: true
ssh_genkeytypes: [ed25519, ecdsa]
grub_dpkg:
  enabled: false
CFG
# Debian's cloud.cfg already names the default user "debian"; pin it so tests never depend on
# the package default (cloud.cfg.d entries are merged key by key over cloud.cfg).
cat > "$W/91_virtainer-default-user.cfg" <<'CFG'
# virtainer test fixture: the default cloud-init user is "debian"
system_info:
  default_user:
    name: debian
CFG
cat > "$W/check.sh" <<'CHK'
#!/bin/sh
# Runs as a customize hook: fail the build if the image lacks what the tests rely on.
set -e
R=$1
fail() { echo "build-cloud-image: CHECK FAILED: $*" >&2; exit 1; }
grep -A2 '^ *default_user:' "$R/etc/cloud/cloud.cfg" | grep -q 'name: debian' \
  || echo "build-cloud-image: note: package cloud.cfg default_user is not debian (pinned in 91_)"
# qemu-guest-agent is started by udev/systemd when the virtio port appears
ls "$R"/lib/udev/rules.d/*qemu-guest-agent* >/dev/null 2>&1 || fail "no qemu-guest-agent udev rule"
grep -q 'org.qemu.guest_agent.0' "$R"/lib/udev/rules.d/*qemu-guest-agent* \
  || fail "udev rule does not match org.qemu.guest_agent.0"
U=$R/lib/systemd/system/qemu-guest-agent.service
grep -q 'BindsTo=dev-virtio' "$U" || fail "qemu-guest-agent.service not bound to the virtio port"
# guest-exec / guest-file-* must not be blocked (no --block-rpcs / allow-rpcs anywhere)
if grep -rqsE 'block-rpcs|allow-rpcs|^ *-b ' "$U" "$R/etc/qemu" "$R/etc/default/qemu-guest-agent" \
     "$R"/etc/systemd/system/qemu-guest-agent.service.d; then
  fail "qemu-guest-agent has an RPC block/allow list"
fi
echo "build-cloud-image: checks ok (default user, qemu-ga udev activation, no RPC blocklist)"
CHK
mmdebstrap --variant=minbase --include="$PKGS" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="echo 'LABEL=$LABEL / ext4 rw,discard,errors=remount-ro 0 1' > \"\$1/etc/fstab\"" \
  --customize-hook='echo debian > "$1/etc/hostname"; printf "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
  --customize-hook='mkdir -p "$1/etc/systemd/network"; printf "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n" > "$1/etc/systemd/network/99-default-dhcp.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
  --customize-hook='printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90_dpkg.cfg"' \
  --customize-hook="install -m 644 '$W/91_virtainer-default-user.cfg' '$W/95_virtainer-fixture.cfg' \"\$1/etc/cloud/cloud.cfg.d/\"" \
  --customize-hook="sh '$W/check.sh' \"\$1\"" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*_key*; : > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
  bookworm "$ROOTFS" "$SOURCES"
T1=$(date +%s)

# ---- 2. grub.cfg inside the image ------------------------------------------------------------
mkdir -p "$ROOTFS/boot/grub"
cat > "$ROOTFS/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry 'Debian GNU/Linux' {
  linux /vmlinuz $CMDLINE
  initrd /initrd.img
}
CFG

# ---- 3. raw disk: MBR + 1 partition, ext4 written at offset 1 MiB straight from the tree -----
RAW=$W/disk.raw
truncate -s "${SIZE_MB}M" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
mkfs.ext4 -q -F -L $LABEL -E offset=1048576,nodiscard -d "$ROOTFS" "$RAW" $(( (SIZE_MB - 1) * 256 ))
rm -rf "$ROOTFS"

# ---- 4. GRUB for BIOS without grub-install: self-contained core.img into sectors 1..2047 ----
printf 'set root=(hd0,msdos1)\nset prefix=($root)/boot/grub\n' > "$W/early.cfg"
grub-mkimage -O i386-pc -o "$W/core.img" -c "$W/early.cfg" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 linux boot normal configfile serial terminal echo test
[ "$(stat -c %s "$W/core.img")" -lt $((2047 * 512)) ]
dd if=/usr/lib/grub/i386-pc/boot.img of="$RAW" bs=440 count=1 conv=notrunc status=none  # keeps partition table
dd if="$W/core.img" of="$RAW" bs=512 seek=1 conv=notrunc status=none

# ---- 5. qcow2 --------------------------------------------------------------------------------
C=(); [ "${COMPRESS:-1}" = 0 ] || C=(-c -m 8 -W)  # -m/-W: compress on both cores
qemu-img convert -f raw -O qcow2 "${C[@]}" "$RAW" "$W/base.qcow2"
chmod 644 "$W/base.qcow2"
mv "$W/base.qcow2" "$OUTDIR/base.qcow2"
T2=$(date +%s)
echo "build-cloud-image: mmdebstrap $((T1 - T0))s, disk+qcow2 $((T2 - T1))s, total $((T2 - T0))s"
qemu-img info "$OUTDIR/base.qcow2" | grep -E 'virtual size|disk size'
