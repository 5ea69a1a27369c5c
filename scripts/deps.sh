#!/usr/bin/env bash
# Installs the system packages obs-ai-background needs (Debian 12+, Ubuntu 23.04+: libobs >= 29).
#
#   scripts/deps.sh           build + test packages (what `cargo build` and `cargo test` need:
#                             OBS headers and plugins, libclang for bindgen, Xvfb + Mesa for
#                             the headless tests, ffmpeg for the recording smoke test)
#   scripts/deps.sh --build   only what building and running the plugin needs
#   scripts/deps.sh --windows the build packages plus the Windows cross build, its tests
#                             under Wine and the packaging (MinGW-w64, Wine, NSIS, zip),
#                             and the Rust target x86_64-pc-windows-gnu (rustup)
#   scripts/deps.sh --aarch64 the build packages plus the aarch64 cross build and qemu-user
#                             (scripts/aarch64-test.sh), and the Rust target
#                             aarch64-unknown-linux-gnu (rustup)
#
# Idempotent and quick when everything is installed (no apt-get call at all then).
# Uses sudo when not run as root.
set -euo pipefail

build_pkgs=(pkg-config libclang-dev libobs-dev obs-studio)
test_pkgs=(obs-plugins xvfb xauth libgl1-mesa-dri libegl1 libegl-mesa0 ffmpeg)
windows_pkgs=(mingw-w64 wine64 wine nsis zip)
aarch64_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)

pkgs=("${build_pkgs[@]}")
case "${1:-}" in
  --build) ;;
  "") pkgs+=("${test_pkgs[@]}") ;;
  --windows) pkgs+=("${windows_pkgs[@]}") ;;
  --aarch64) pkgs+=("${aarch64_pkgs[@]}") ;;
  *) echo "usage: $0 [--build|--windows|--aarch64]" >&2; exit 2 ;;
esac
# Rust needs a C linker; a machine with "only Rust" may lack one.
command -v cc >/dev/null 2>&1 || pkgs+=(build-essential)

# The cross builds also need Rust's standard library for the target (from rustup).
target=""
case "${1:-}" in
  --windows) target=x86_64-pc-windows-gnu ;;
  --aarch64) target=aarch64-unknown-linux-gnu ;;
esac
if [ -n "$target" ]; then
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target" || {
      echo "deps: 'rustup target add $target' failed (rustup missing, or no access to" >&2
      echo "      static.rust-lang.org); the ${1#--} build needs it." >&2
      exit 1
    }
  fi
fi

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing ${missing[*]}, and this is not a Debian/Ubuntu system (no apt-get)." >&2
  echo "      Install the OBS Studio development files (libobs >= 29), libclang and pkg-config." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

version=$(pkg-config --modversion libobs 2>/dev/null || echo 0)
if [ "${version%%.*}" -lt 29 ]; then
  echo "deps: libobs $version is too old; obs-ai-background needs OBS Studio 29 or newer" >&2
  echo "      (Debian 12, Ubuntu 23.04 or newer ship it)." >&2
  exit 1
fi
echo "deps: done (libobs $version)"
