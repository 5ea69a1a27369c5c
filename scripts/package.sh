#!/usr/bin/env bash
# Release artifacts in one command, into dist/ (replaced as a whole at the end):
#
#   obs-ai-background-<v>-windows-x64.zip         OBS's plugin layout: obs-plugins/64bit/*.dll,
#                                                 data/obs-plugins/obs-ai-background/...
#   obs-ai-background-<v>-windows-x64-setup.exe   NSIS installer (all users, OBS's folder)
#   obs-ai-background_<v>_amd64.deb               Debian/Ubuntu: system OBS plugin folders,
#                                                 plus /usr/bin/ai-background
#   ai-background-<v>-x86_64-windows.exe          the command line, Windows x64
#   ai-background-<v>-x86_64-linux                the command line, Linux x86-64 (glibc)
#   SHA256SUMS
#
#   scripts/package.sh                  release builds (what to publish)
#   scripts/package.sh --profile dev    reuse the debug builds of the tests (CI's check of
#                                       the packaging; dependencies are optimised there too)
#   scripts/package.sh --out DIR        write to DIR instead of dist/
#
# Needs Rust with rustup; installs its system packages (scripts/deps.sh --windows: MinGW-w64,
# NSIS, zip) and the x86_64-pc-windows-gnu target itself.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
profile=release
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "package: --profile is release or dev" >&2; exit 2 ;;
esac

T=x86_64-pc-windows-gnu
name=obs-ai-background
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "package: no version in Cargo.toml" >&2; exit 1; }

scripts/deps.sh --windows

echo "package: building $name $version ($profile) for Linux and Windows x64"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
bin="$stage/bin"
mkdir -p "$bin"
# `--test engine` / `--test cli` only make cargo resolve the dependencies' features with the
# dev-dependencies, as the test builds do, so the packages reuse their dependency builds.
cargo build --locked --profile "$profile" --lib --bin ai-background --test cli
cp "target/$dir/libobs_ai_background.so" "$bin/$name.so"
cp "target/$dir/ai-background" "$bin/ai-background"
cargo build --locked --profile "$profile" --target "$T" --lib --test engine
cp "target/$T/$dir/obs_ai_background.dll" "$bin/$name.dll"
# The Windows CLI without the `obs` feature: MinGW's linker keeps every libobs reference of
# the crate in an executable, which would then need obs.dll.
cargo build --locked --profile "$profile" --target "$T" --no-default-features \
  --bin ai-background --test cli
cp "target/$T/$dir/ai-background.exe" "$bin/ai-background.exe"
linux_so="$bin/$name.so"
linux_cli="$bin/ai-background"
win_dll="$bin/$name.dll"
win_cli="$bin/ai-background.exe"

art="$stage/artifacts"
mkdir -p "$art"

# Module data as OBS installs it: the effect in the data folder, translations in locale/.
module_data() { # DEST
  install -d "$1/locale"
  install -m 0644 data/*.effect "$1/"
  install -m 0644 locale/*.ini "$1/locale/"
}

# --- Windows: zip in OBS's folder layout, NSIS installer, CLI --------------------------------
win="$stage/windows"
install -d "$win/obs-plugins/64bit"
x86_64-w64-mingw32-strip -o "$win/obs-plugins/64bit/$name.dll" "$win_dll"
module_data "$win/data/obs-plugins/$name"
install -m 0644 LICENSE "$win/data/obs-plugins/$name/LICENSE"
install -m 0644 models/LICENSE "$win/data/obs-plugins/$name/LICENSE.model"
(cd "$win" && find . -type f | sort | sed 's|^\./||' | zip -q -X "$art/$name-$version-windows-x64.zip" -@)
makensis -V2 -DVERSION="$version" -DSTAGE="$win" \
  -DOUTFILE="$art/$name-$version-windows-x64-setup.exe" packaging/obs-ai-background.nsi
x86_64-w64-mingw32-strip -o "$art/ai-background-$version-x86_64-windows.exe" "$win_cli"

# --- Debian package (dpkg-deb) ---------------------------------------------------------------
deb="$stage/deb"
libdir=/usr/lib/x86_64-linux-gnu/obs-plugins
install -d "$deb$libdir" "$deb/usr/bin" "$deb/usr/share/doc/$name" "$deb/DEBIAN"
install -m 0644 "$linux_so" "$deb$libdir/$name.so"
strip --strip-unneeded "$deb$libdir/$name.so"
install -m 0755 "$linux_cli" "$deb/usr/bin/ai-background"
strip "$deb/usr/bin/ai-background"
module_data "$deb/usr/share/obs/obs-plugins/$name"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: $name"
  echo "Files: *"
  echo "License: Apache-2.0"
  echo "Comment: The model weights (MediaPipe selfie segmentation) are Apache-2.0, Google."
  echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
} > "$deb/usr/share/doc/$name/copyright"
chmod 0644 "$deb/usr/share/doc/$name/copyright"
# glibc: the newest symbol version the two binaries need.
glibc=$(objdump -T "$deb$libdir/$name.so" "$deb/usr/bin/ai-background" \
  | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
size_kb=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
cat > "$deb/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: amd64
Maintainer: obs-ai-background contributors <maintainers@obs-ai-background.invalid>
Installed-Size: $size_kb
Depends: obs-studio (>= 29), libc6 (>= $glibc), libgcc-s1
Recommends: ffmpeg
Section: video
Priority: optional
Description: AI Background filter for OBS Studio
 An "AI Background" video filter for OBS Studio: finds the person in each
 frame of a webcam with the MediaPipe selfie segmentation network (run in
 Rust with candle, on the CPU) and blurs the background, replaces it with an
 image, a video, another source or a colour, or makes it transparent.
 Also installs the ai-background command line, which runs the same engine on
 image and video files.
EOF
find "$deb" -type d -exec chmod 0755 {} +
dpkg-deb --root-owner-group -Zxz --build "$deb" "$art/${name}_${version}_amd64.deb" >/dev/null
install -m 0755 "$linux_cli" "$art/ai-background-$version-x86_64-linux"
strip "$art/ai-background-$version-x86_64-linux"

# --- Checksums, then replace the output folder as a whole ------------------------------------
(cd "$art" && sha256sum -- * > SHA256SUMS)
rm -rf "$out.tmp"
mv "$art" "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "package: wrote $out/:"
(cd "$out" && ls -l)
