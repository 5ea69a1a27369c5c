#!/usr/bin/env bash
# Our fused CPU network (1 and 2 threads) side by side with the TFLite runtime + XNNPACK on
# 1 thread, same model and photo, landscape and square, interleaved in one run; prints the
# medians and the ratio (issue 9's target: ours / TFLite <= 0.8).
#
#   scripts/vs-tflite.sh [PHOTO]      (default: assets/demo/person.jpg)
#
# Needs Python 3 with venv and the reference models in ../shared/models/mediapipe-selfie.
# Installs ai-edge-litert, numpy and pillow (tools/requirements.txt's versions) into .venv
# with pip, builds target/release/ai-background without libobs.
set -euo pipefail
cd "$(dirname "$0")/.."
photo="${1:-assets/demo/person.jpg}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
pins=$(grep -E '^(ai-edge-litert|numpy|pillow)==' tools/requirements.txt)
# shellcheck disable=SC2086
.venv/bin/pip install -q $pins
cargo build --release --no-default-features --bin ai-background
.venv/bin/python tools/vs_tflite.py --binary target/release/ai-background --photo "$photo" \
    "${@:2}"
