#!/usr/bin/env bash
# Installs a Vulkan driver Dawn (npm `webgpu`) accepts, so the WebGPU backend and its tests run on a
# machine without a GPU (Mesa's lavapipe, a software Vulkan). Idempotent: does nothing when a working
# Vulkan ICD is already present.
#
# Why backports on Debian 12: the stock mesa-vulkan-drivers 22.3 lacks what Dawn requires
# ("shaderUniform*ArrayDynamicIndexing required"), the bookworm-backports one (25.x) works.
# Debian 13 (trixie) ships a new enough Mesa. Both come from Debian's own archive (the mirror the machine is already set up with).
#
# Usage: sudo scripts/setup-vulkan.sh   (or as root, e.g. in CI)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# A working ICD = Dawn finds an adapter. Ask Dawn itself when the package is installed; otherwise
# fall back to "an ICD manifest exists and, if it is Mesa's, Mesa is 23 or newer".
probe_dawn() {
  [ -d "$root/node_modules/webgpu" ] || return 2
  (cd "$root" && node --input-type=module -e "
    import { create, globals } from 'webgpu';
    Object.assign(globalThis, globals);
    const a = await create([]).requestAdapter();
    if (!a) process.exit(1);
    console.log('setup-vulkan: Dawn adapter found:', a.info.vendor || '?', '/', a.info.device || a.info.description || '?');
    process.exit(0);
  ") 2>/dev/null
}

mesa_major() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^[0-9]+://; s/\..*//'
}

have_icd() {
  compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null
}

working() {
  local rc=0
  probe_dawn || rc=$?
  if [ "$rc" -eq 0 ]; then return 0; fi
  if [ "$rc" -eq 1 ]; then return 1; fi
  # No node_modules: judge by the installed packages.
  have_icd || return 1
  local m
  m="$(mesa_major)"
  [ -z "$m" ] || [ "$m" -ge 23 ]
}

if working; then
  echo "setup-vulkan: a working Vulkan driver is already present; nothing to do."
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
  echo "setup-vulkan: run this as root (it installs Debian packages)." >&2
  exit 1
fi

. /etc/os-release
export DEBIAN_FRONTEND=noninteractive
case "${ID:-}:${VERSION_CODENAME:-}" in
  debian:bookworm)
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # Reuse the mirror this machine already uses for bookworm itself (no host is hard-coded here).
      mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | head -n1 | awk '{print $2}')"
      [ -n "$mirror" ] || mirror="$(grep -hsE '^deb [^ ]+ bookworm ' /etc/apt/sources.list | head -n1 | awk '{print $2}')"
      if [ -z "$mirror" ]; then
        echo "setup-vulkan: cannot find this machine's Debian mirror in /etc/apt; add bookworm-backports yourself." >&2
        exit 1
      fi
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
        >/etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt-get update
    apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1
    ;;
  debian:*|ubuntu:*)
    apt-get update
    apt-get install -y mesa-vulkan-drivers libvulkan1
    ;;
  *)
    echo "setup-vulkan: unsupported system ${PRETTY_NAME:-unknown}; install Mesa's Vulkan drivers (lavapipe) with your package manager." >&2
    exit 1
    ;;
esac

if working; then
  echo "setup-vulkan: done."
else
  echo "setup-vulkan: installed mesa-vulkan-drivers but Dawn still finds no adapter." >&2
  exit 1
fi
