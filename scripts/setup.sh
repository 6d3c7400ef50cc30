#!/usr/bin/env bash
# Installs what edgenfv needs on a Debian/Ubuntu machine, then builds it.
#   - Debian packages it lacks (only when run as root; otherwise it says what to install)
#   - npm packages (npm ci when node_modules is missing or older than package-lock.json)
#   - the TypeScript build (tsc -b) and each workspace's extra build step
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary -> Debian package (apt-get install -t bookworm-backports for QEMU >= 8: igb SR-IOV model)
need=(
  "nats-server:nats-server"
  "busybox:busybox-static"
  "crun:crun"
  "ip:iproute2"
  "cpio:cpio"
  "mkfs.erofs:erofs-utils"   # the guest image's read-only system disk (docs/guest-image.md)
  "modprobe:kmod"
  "dpdk-testpmd:dpdk-dev"
  "chromium:chromium"
  "promtool:prometheus"
  "/usr/lib/cni/bridge:containernetworking-plugins"
  "unshare:util-linux"
  "setpriv:util-linux"
  "cc:gcc libc6-dev"    # netplugins' CNI executables are a small C client (a Node.js fallback exists, much slower)
  "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk:openvswitch-switch-dpdk"   # the node's DPDK switch
  "nft:nftables"
  "docker-registry:docker-registry"   # a real OCI registry for the image tests and demo
  "skopeo:skopeo"
  "umoci:umoci"
)
missing=()
for pair in "${need[@]}"; do
  bin=${pair%%:*}; pkg=${pair#*:}
  # shellcheck disable=SC2206 # a binary may need several packages, space-separated
  if [[ $bin == /* ]]; then [[ -e $bin ]] || missing+=($pkg); else command -v "$bin" >/dev/null 2>&1 || missing+=($pkg); fi
done
# librte-net-vhost23: dpdk-testpmd's vhost PMD is a separate package
if [[ " ${missing[*]:-} " == *" dpdk-dev "* ]]; then
  missing+=(librte-net-vhost23 librte-mempool-ring23)
elif command -v dpdk-testpmd >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/dpdk/pmds-*/librte_net_vhost.so* >/dev/null 2>&1; then
  missing+=(librte-net-vhost23 librte-mempool-ring23)
fi
qemu_major=0
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
  qemu_major=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
fi

if [[ ${#missing[@]} -gt 0 || ${qemu_major:-0} -lt 8 ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if [[ ${qemu_major:-0} -lt 8 ]] && grep -qs bookworm /etc/os-release; then
      if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          > /etc/apt/sources.list.d/edgenfv-backports.sources
      fi
    fi
    echo "setup: installing Debian packages: ${missing[*]:-} ${qemu_major:+(qemu $qemu_major)}" >&2
    apt-get update -qq
    if [[ ${#missing[@]} -gt 0 ]]; then apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; fi
    if [[ ${qemu_major:-0} -lt 8 ]]; then
      if grep -qs bookworm /etc/os-release; then
        apt-get install -y -qq -t bookworm-backports --no-install-recommends qemu-system-x86 >/dev/null
      else
        apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
      fi
    fi
  else
    echo "setup: missing Debian packages: ${missing[*]:-} $( [[ ${qemu_major:-0} -lt 8 ]] && echo 'qemu-system-x86 (>= 8, bookworm-backports)')" >&2
    echo "setup: run as root, or: sudo apt-get install ${missing[*]:-}" >&2
    [[ ${EDGENFV_SETUP_STRICT:-1} == 1 ]] && exit 1
  fi
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
