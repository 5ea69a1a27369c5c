#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (about 10 minutes, most of it the build):
#
#   scripts/gpu-check.sh            builds with --features cuda, then prints
#     1. parity on the GPU: the portable path there against the fused CPU kernels, every
#        fixture of both presets, max abs difference <= 1e-3 (`cargo test --test parity cuda`);
#     2. median inference per preset on the GPU (portable path, upload and read-back included)
#        and on the CPU (fused kernels), interleaved in one run, with tensor ops per frame;
#     3. the whole frame path at 1920x1080 (blur) on the GPU and on the CPU;
#     4. what `--device auto` picks and the timings it logged.
#
# Uses the machine's CUDA toolkit when `nvcc` is on PATH, else installs one from the package
# index with `scripts/cuda-deps.sh --runtime` (needs the network; the driver must be installed).
# The build goes to target/cuda-build, so the default CPU build is left alone. Output also goes
# to target/gpu-check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
exec > >(tee target/gpu-check.log) 2>&1

nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"
if ! command -v nvcc >/dev/null 2>&1; then
  bash scripts/cuda-deps.sh --runtime target/cuda
  . target/cuda/env.sh
fi
nvcc --version | tail -1

# Engine and CLI only: the OBS module is not what is checked here.
flags=(--locked --release --no-default-features --features cuda --target-dir target/cuda-build)
cargo build "${flags[@]}" --bin ai-background
bin=target/cuda-build/release/ai-background

echo "== 1. parity on the GPU"
cargo test "${flags[@]}" --test parity cuda -- --nocapture

echo "== 2. median inference per preset: GPU (portable) vs CPU (fused), 200 frames interleaved"
for preset in landscape square; do
  "$bin" bench --path portable --device cuda --preset "$preset" --frames 200
done
echo "   (for the record, the previous GPU path, stock ops, landscape)"
"$bin" bench --path stock --device cuda --preset landscape --frames 50

echo "== 3. whole frame path, 1920x1080, blur"
for device in cuda cpu; do
  "$bin" bench --size 1920x1080 --mode blur --device "$device" --frames 100
done

echo "== 4. --device auto"
RUST_LOG=info "$bin" bench --size 1280x720 --device auto --frames 10 2>&1 | grep -E "device auto|segmenter|candle"
echo "gpu-check: done (log in target/gpu-check.log)"
