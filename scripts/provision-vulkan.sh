#!/usr/bin/env bash
# Provisions what the `vulkan` feature needs on Debian 12 (bookworm), from
# Debian's package registry only:
#
# - glslc, SPIRV-Headers and the Vulkan loader (bookworm's own packages);
# - Mesa's Vulkan drivers from bookworm-backports (Mesa 25.x): bookworm's
#   lavapipe (Mesa 22.3.6) segfaults inside libvulkan_lvp.so on several MoE
#   models once the whole model is on its device (see docs/BUILDING.md, "Vulkan");
# - Vulkan headers new enough for the pinned ggml-vulkan (it needs
#   VK_EXT_layer_settings, which bookworm's 1.3.239 headers lack): Debian 13's
#   libvulkan-dev, downloaded with apt into a folder of its own and unpacked
#   there, not installed over the system's.
#
# Usage: scripts/provision-vulkan.sh [PREFIX]
# Prints `VULKAN_SDK=...` last: export it for the build (the build script
# reads it, and it is part of the build-cache key).
set -euo pipefail

prefix=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-safe/vulkan-sdk}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

. /etc/os-release
echo "provision-vulkan: ${PRETTY_NAME:-unknown system}" >&2

if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  list=/etc/apt/sources.list.d/llama-safe-bookworm-backports.sources
  if [ ! -f "$list" ]; then
    as_root tee "$list" >/dev/null <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  as_root apt-get update -qq
  apt_install glslc libvulkan1 spirv-headers
  apt_install -t bookworm-backports mesa-vulkan-drivers
else
  as_root apt-get update -qq
  apt_install glslc libvulkan1 libvulkan-dev spirv-headers mesa-vulkan-drivers
fi

has_layer_settings() { grep -q VK_EXT_layer_settings "$1/vulkan/vulkan_core.h" 2>/dev/null; }
if has_layer_settings /usr/include; then
  echo "provision-vulkan: the system's Vulkan headers are new enough" >&2
  echo "VULKAN_SDK=/usr"
  exit 0
fi

# Debian 13's headers, through apt with lists and cache of their own (the
# system's sources stay as they are).
if ! has_layer_settings "$prefix/include"; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/parts" "$work/lists/partial" "$work/cache/archives/partial"
  cat >"$work/parts/trixie.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts"
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
        -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" download libvulkan-dev >/dev/null)
  rm -rf "$prefix"
  mkdir -p "$prefix"
  dpkg -x "$work"/libvulkan-dev_*.deb "$prefix/root"
  ln -s root/usr/include "$prefix/include"
  # The loader library: the system's (the headers are what was too old).
  mkdir -p "$prefix/lib"
  loader=$(ls /usr/lib/*/libvulkan.so.1 | head -1)
  ln -s "$loader" "$prefix/lib/libvulkan.so"
fi
has_layer_settings "$prefix/include"
echo "provision-vulkan: headers $(grep -m1 -o 'VK_HEADER_VERSION [0-9]*' "$prefix/include/vulkan/vulkan_core.h") in $prefix" >&2
echo "VULKAN_SDK=$prefix"
