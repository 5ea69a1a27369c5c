#!/usr/bin/env bash
# What blurring the background saves in the stream: encodes each clip twice with the same x264
# settings (CRF 23, preset veryfast, yuv420p, no audio), once as it is and once through the
# filter's engine (`ai-background apply --mode blur`, default settings), and prints both sizes.
#
#   scripts/bitrate.sh ../shared/videos/*.mp4
#   AI_BG=target/debug/ai-background scripts/bitrate.sh clip.mp4    # another build of the CLI
#   BLUR=20 scripts/bitrate.sh clip.mp4                             # another blur sigma (px)
#
# Both paths go through the same intermediate encode (x264 CRF 18 veryfast, what `apply` writes
# for .mkv), so the only difference between them is the filter. Not part of scripts/test.sh
# (it encodes every clip three times). Needs ffmpeg with libx264.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || { echo "usage: scripts/bitrate.sh CLIP..." >&2; exit 1; }
command -v ffmpeg >/dev/null 2>&1 || { echo "bitrate: ffmpeg not found (sudo apt install ffmpeg)" >&2; exit 1; }
AI_BG=${AI_BG:-target/release/ai-background}
if [ ! -x "$AI_BG" ]; then
    cargo build --locked --release --bin ai-background
    AI_BG=target/release/ai-background
fi
BLUR=${BLUR:-12}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

x264() { # IN OUT CRF
    ffmpeg -v error -nostdin -y -i "$1" -map 0:v:0 -an -c:v libx264 -preset veryfast \
        -crf "$3" -pix_fmt yuv420p "$2"
}
size() { stat -c %s "$1"; }

printf '| %s | %s | %s | %s |\n' clip "raw (bytes)" "blurred (bytes)" "smaller by"
printf '|---|---|---|---|\n'
for clip in "$@"; do
    name=$(basename "$clip")
    x264 "$clip" "$tmp/raw-18.mkv" 18
    "$AI_BG" apply "$clip" -o "$tmp/blur-18.mkv" --mode blur --blur "$BLUR" 2>"$tmp/log" \
        || { cat "$tmp/log" >&2; exit 1; }
    x264 "$tmp/raw-18.mkv" "$tmp/raw.mp4" 23
    x264 "$tmp/blur-18.mkv" "$tmp/blur.mp4" 23
    raw=$(size "$tmp/raw.mp4")
    blur=$(size "$tmp/blur.mp4")
    pct=$(awk -v a="$raw" -v b="$blur" 'BEGIN { printf "%.0f %%", 100 * (a - b) / a }')
    printf '| %s | %s | %s | %s |\n' "$name" "$raw" "$blur" "$pct"
done
