#!/usr/bin/env bash
# Builds obs-ai-background in release and installs it into OBS Studio's user plugin folder:
#
#   ~/.config/obs-studio/plugins/obs-ai-background/bin/64bit/obs-ai-background.so
#   ~/.config/obs-studio/plugins/obs-ai-background/data/ai_background.effect
#   ~/.config/obs-studio/plugins/obs-ai-background/data/locale/*.ini
#
# and, as a check that the engine works on this machine, runs the `ai-background` command
# line on assets/demo/person.jpg (blur mode) into assets/demo/person-blurred.png.
#
# Usage:
#   scripts/install.sh                 install the system packages it needs (sudo when not
#                                      root), build, install, run the demo
#   scripts/install.sh --features cuda extra cargo arguments are passed to `cargo build`
#   scripts/install.sh --uninstall     remove the installed plugin
#
# Then restart OBS Studio. Works with the native OBS package (not the Flatpak).
set -euo pipefail
cd "$(dirname "$0")/.."

name=obs-ai-background
config="${XDG_CONFIG_HOME:-$HOME/.config}/obs-studio"
dest="$config/plugins/$name"

if [ "${1:-}" = "--uninstall" ]; then
  if [ -d "$dest" ]; then
    rm -rf "$dest"
    echo "Removed $dest. Restart OBS Studio."
  else
    echo "Nothing to remove: $dest does not exist."
  fi
  exit 0
fi

scripts/deps.sh --build
command -v cargo >/dev/null 2>&1 || { echo "install: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

cargo build --release --lib --bin ai-background "$@"
target_dir="${CARGO_TARGET_DIR:-target}"
so="$target_dir/release/libobs_ai_background.so"
if ! grep -q obs_module_load "$so" 2>/dev/null; then
  echo "install: $so is not an OBS module (built without the 'obs' feature?)" >&2
  exit 1
fi

install -d "$dest/bin/64bit" "$dest/data/locale"
install -m 755 "$so" "$dest/bin/64bit/$name.so"
install -m 644 data/*.effect "$dest/data/"
install -m 644 locale/*.ini "$dest/data/locale/"

demo=assets/demo/person-blurred.png
"$target_dir/release/ai-background" apply assets/demo/person.jpg -o "$demo" --mode blur
cat <<MSG
Installed obs-ai-background into $dest
Engine check: $demo is assets/demo/person.jpg with its background blurred.

Next, in OBS Studio (restart it first if it is running):
  1. Right-click your webcam source (e.g. "Video Capture Device") and choose "Filters".
  2. Under "Effect Filters" click "+" and pick "AI Background".
  3. Choose the background: Blur, Image, Video file, OBS source, Color or Transparent.
     "Show mask" helps to tune Threshold and Edge softness.

Uninstall: scripts/install.sh --uninstall
MSG
