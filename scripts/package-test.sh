#!/usr/bin/env bash
# Tests the release artifacts: runs scripts/package.sh into a temporary folder, then
# - checks SHA256SUMS and the Windows zip's layout (exactly OBS's plugin layout);
# - Windows installer under Wine: a silent install finds "OBS" through the registry key
#   OBS's installer writes, puts the files there and registers the uninstaller; the silent
#   uninstall removes them all (OBS's own files stay) and the registry entry;
# - Debian package: its metadata and file list; as root, `dpkg -i`, then libobs 29 loads it
#   from the system plugin folders and renders with it (tests/deb_install.rs, under Xvfb),
#   then `apt-get remove` removes every file. The .deb part INSTALLS SYSTEM-WIDE for a few
#   seconds (CI runs it on a throwaway machine); --no-deb-install skips that part.
#
#   scripts/package-test.sh [--profile dev|release] [--no-deb-install]
#
# Default profile: dev (reuses the test builds; `--profile release` checks what
# `scripts/package.sh` publishes). Called by .ci/run after scripts/windows-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=dev
deb_install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-deb-install) deb_install=0; shift ;;
    *) echo "usage: $0 [--profile dev|release] [--no-deb-install]" >&2; exit 2 ;;
  esac
done
name=obs-ai-background
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  if [ -n "${installed_deb:-}" ]; then apt-get remove -y -qq "$name" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
dist="$work/dist"
scripts/package.sh --profile "$profile" --out "$dist"
(cd "$dist" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS"
for f in "$name-$version-windows-x64.zip" "$name-$version-windows-x64-setup.exe" \
         "${name}_${version}_amd64.deb" "ai-background-$version-x86_64-windows.exe" \
         "ai-background-$version-x86_64-linux"; do
  grep -q " $f\$" "$dist/SHA256SUMS" || fail "$f not in SHA256SUMS"
done
"$dist/ai-background-$version-x86_64-linux" --version | grep -q "$version" || fail "Linux CLI --version"
# The command lines stand alone: no OBS library needed.
if objdump -p "$dist/ai-background-$version-x86_64-linux" | grep -q 'NEEDED.*libobs'; then fail "Linux CLI needs libobs"; fi
if x86_64-w64-mingw32-objdump -p "$dist/ai-background-$version-x86_64-windows.exe" | grep -qi 'DLL Name: obs'; then
  fail "Windows CLI needs obs.dll"
fi

# --- Windows zip: exactly OBS's layout ---------------------------------------------------------
expected=$( {
  echo "obs-plugins/64bit/$name.dll"
  for f in data/*.effect; do echo "data/obs-plugins/$name/${f#data/}"; done
  for f in locale/*.ini; do echo "data/obs-plugins/$name/$f"; done
  echo "data/obs-plugins/$name/LICENSE"
  echo "data/obs-plugins/$name/LICENSE.model"
} | sort)
zip="$dist/$name-$version-windows-x64.zip"
[ "$(unzip -Z1 "$zip" | sort)" = "$expected" ] || fail "zip layout: $(unzip -Z1 "$zip" | tr '\n' ' ')"
unzip -q "$zip" -d "$work/zip"
echo "package-test: zip layout ok ($(echo "$expected" | wc -l) files)"

# --- Windows installer, silently, under Wine ---------------------------------------------------
# shellcheck source=scripts/wine-env.sh
. scripts/wine-env.sh
wine "$dist/ai-background-$version-x86_64-windows.exe" --version | tr -d '\r' | grep -q "$version" \
  || fail "Windows CLI --version"
obs_win='C:\obs-studio-test'
obs_dir="$WINEPREFIX/drive_c/obs-studio-test"
rm -rf "$obs_dir"
mkdir -p "$obs_dir/bin/64bit"
echo "stands for OBS's own files" > "$obs_dir/bin/64bit/obs64.exe"
key='HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\obs-ai-background'
wine reg add 'HKLM\Software\OBS Studio' /ve /d "$obs_win" /f /reg:64 >/dev/null
cp "$dist/$name-$version-windows-x64-setup.exe" "$work/setup.exe"
wine "$work/setup.exe" /S
wineserver -w
(cd "$work/zip" && find . -type f | sed 's|^\./||') | while read -r f; do
  cmp -s "$work/zip/$f" "$obs_dir/$f" || fail "installer: $f missing or different"
done
[ -f "$obs_dir/uninstall-$name.exe" ] || fail "installer: no uninstaller"
wine reg query "$key" /v DisplayVersion /reg:64 | tr -d '\r' | grep -q "$version" \
  || fail "installer: no uninstall entry"
echo "package-test: silent install ok (into the folder of HKLM\\Software\\OBS Studio)"
wine "$obs_win\\uninstall-$name.exe" /S
wineserver -w
left=$(cd "$obs_dir" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
[ "$left" = "bin/64bit/obs64.exe " ] || fail "uninstall left: $left"
if wine reg query "$key" /reg:64 >/dev/null 2>&1; then fail "uninstall left the registry entry"; fi
wine reg delete 'HKLM\Software\OBS Studio' /f /reg:64 >/dev/null
rm -rf "$obs_dir"
echo "package-test: silent uninstall ok (plugin files and entry gone, OBS's files kept)"

# --- Debian package ----------------------------------------------------------------------------
deb="$dist/${name}_${version}_amd64.deb"
dpkg-deb -f "$deb" Depends | grep -q 'obs-studio (>= 29)' || fail "deb: Depends"
files=$(dpkg-deb -c "$deb" | awk '{print $6}' | grep -v '/$' | sed 's|^\./||' | sort)
for f in "usr/lib/x86_64-linux-gnu/obs-plugins/$name.so" usr/bin/ai-background \
         "usr/share/obs/obs-plugins/$name/ai_background.effect" \
         "usr/share/obs/obs-plugins/$name/locale/en-US.ini" "usr/share/doc/$name/copyright"; do
  echo "$files" | grep -qx "$f" || fail "deb: no /$f"
done
if [ "$deb_install" = 0 ] || [ "$(id -u)" -ne 0 ]; then
  echo "package-test: deb contents ok; install test skipped (needs root; --no-deb-install)"
  echo "package-test: ok"
  exit 0
fi
dpkg -l "$name" 2>/dev/null | grep -q '^ii' && fail "$name is already installed; remove it first"
installed_deb=1
dpkg -i "$deb" >/dev/null
xvfb-run -a -s "-screen 0 1280x720x24" env AI_BG_SYSTEM_MODULE=1 \
  cargo test --locked --test deb_install
apt-get remove -y -qq "$name" >/dev/null
installed_deb=
for f in $files; do
  [ ! -e "/$f" ] || fail "apt-get remove left /$f"
done
[ ! -e "/usr/share/obs/obs-plugins/$name" ] || fail "apt-get remove left the data folder"
echo "package-test: dpkg -i, load from the system folders, apt-get remove ok"
echo "package-test: ok"
