#!/usr/bin/env bash
# Install and start everything virtainer and its tests need on a Debian 12 host. Idempotent:
# a second run installs nothing and starts only what is not running.
#   sudo scripts/setup-host.sh            # packages, daemons, Python venv in .venv
#   NO_DOCKER=1 scripts/setup-host.sh     # skip the Docker engine
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "setup-host.sh: run as root (libvirt system daemon, qemu, docker)" >&2; exit 2; }

PACKAGES=(
  qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools          # the hypervisor
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base iptables
  libvirt-dev pkg-config python3-dev python3-venv gcc         # to build libvirt-python
  mmdebstrap e2fsprogs fdisk grub-pc-bin                      # test guest images, no loop devices
  openssh-client iproute2 procps ca-certificates curl tini
  genisoimage acl                                             # benchmarks/peers.py: testcloud uses both
  prometheus chromium                                         # metrics and web UI tests (real Prometheus, real browser)
  linux-source-6.1 make bc flex bison libelf-dev xz-utils     # the runtime's guest kernel (runtime/guest/build-kernel.sh)
)
[ -n "${NO_DOCKER:-}" ] || PACKAGES+=(docker.io podman docker-compose docker-registry)  # podman: the rootful-Podman container test; docker-compose: the compose examples; docker-registry: a loopback registry for the image tests
command -v npm >/dev/null || PACKAGES+=(npm)  # vendors the web UI's noVNC and xterm.js (scripts/build-ui.sh)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  # wait for a package manager run elsewhere on this machine instead of failing at its lock
  apt_wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${apt_wait[@]}" update -q
  # policy-rc.d: on hosts without systemd, package scripts must not try to start services
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- /dev/kvm ------------------------------------------------------------------------------
# Debian's udev rule makes /dev/kvm 0660 root:kvm. Without udev it can stay 0600 root:root: then
# libvirt (running QEMU as libvirt-qemu, in group kvm) finds its cached QEMU capabilities
# "probed with KVM, KVM now unavailable" at every call and re-probes QEMU: ~10 s per define.
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] && getent group kvm >/dev/null; then
  log "giving /dev/kvm udev's usual permissions (0660 root:kvm)"
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# ---- daemons --------------------------------------------------------------------------------
has_systemd() { [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; }
wait_for() { # wait_for SECONDS COMMAND... : poll a condition with a deadline
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.2; done
}
running() { ps -C "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }  # zombies do not count
# Without systemd, PID 1 may not reap orphans (containers, sandboxes): libvirt's QEMU probes then
# linger as zombies and every libvirt call stalls for a minute or more. So each daemon runs under
# `tini -s`, a child subreaper that reaps what the daemon double-forks (QEMU, dnsmasq).
reaped() { # reaped NAME: true when NAME runs with tini as its parent
  local pid; pid=$(ps -C "$1" -o pid=,stat= | awk '$2 !~ /^Z/ {print $1; exit}'); [ -n "$pid" ] || return 1
  [ "$(ps -o comm= -p "$(ps -o ppid= -p "$pid" | tr -d ' ')")" = tini ]
}
start_reaped() { # start_reaped NAME ARGS...: (re)start a daemon under a subreaper
  local name=$1; shift
  reaped "$name" && return 0
  if running "$name"; then log "restarting $name under a subreaper"; pkill -x "$name"; wait_for 30 bash -c "! ps -C $name -o stat= | grep -qv '^Z'"; fi
  log "starting $name"
  setsid tini -s -- "$name" "$@" </dev/null >>"/var/log/virtainer/$name.log" 2>&1 &
}

if has_systemd; then
  systemctl start virtlogd.socket libvirtd.service
  [ -n "${NO_DOCKER:-}" ] || systemctl start docker.service
else
  mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/log/virtainer
  start_reaped virtlogd
  start_reaped libvirtd
  [ -n "${NO_DOCKER:-}" ] || start_reaped dockerd
fi
wait_for 30 virsh -q -c qemu:///system version || { log "libvirtd did not come up"; exit 1; }
# libvirt's `default` network is not started here: `virtainer up` starts the network it uses,
# and the tests make a network of their own (tests/conftest.py nat_network)
if [ -z "${NO_DOCKER:-}" ]; then
  wait_for 60 docker info || { log "dockerd did not come up (see /var/log/virtainer/dockerd.log)"; exit 1; }
fi

# ---- Python ---------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.virtainer-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing virtainer into .venv"
  .venv/bin/pip install -q --upgrade pip
  # libvirt-python is built against the host's libvirt; pin to its version for a matching API
  libvirt_version=$(pkg-config --modversion libvirt)
  .venv/bin/pip install -q "libvirt-python==${libvirt_version}" -e ".[api,test]"
  echo "$want" > "$stamp"
fi
scripts/build-ui.sh  # the web UI's browser assets, pinned in ui/package-lock.json
log "ready: libvirt $(virsh -c qemu:///system version --daemon 2>/dev/null | awk '/daemon/{print $NF}'), $(.venv/bin/python --version)"
