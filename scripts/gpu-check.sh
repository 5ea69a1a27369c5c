#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (about 10 minutes, most of it the build):
#
#   scripts/gpu-check.sh            builds with --features cuda, then prints
#     1. parity on the GPU: the portable path there against the fused CPU kernels, every
#        fixture of both presets, max abs difference <= 1e-3 (`cargo test --test parity cuda`);
#     2. median inference per preset on the GPU (portable path, upload and read-back included)
#        and on the CPU (fused kernels), interleaved in one run, with tensor ops per frame;
#     3. the whole frame path at 1920x1080 (blur) on the GPU and on the CPU;
#     4. what `--device auto` picks and the timings it logged;
#     5. training on the GPU and on one CPU core: 20 steps of 8 on the 8 fixture photos with
#        human masks (`train --json`; seconds per image, loss first and last).
#
# Uses the machine's CUDA toolkit when `nvcc` is on PATH, else installs one from the package
# index with `scripts/cuda-deps.sh --runtime` (needs the network; the driver must be installed).
# The build goes to target/cuda-build (target/cuda130-build with CUDA_WHEELS=13.0), so the
# default CPU build is left alone. Output also goes
# to target/gpu-check.log (and to $OUT/gpu-check.log when OUT is set).
#
#   scripts/gpu-check.sh --build DIR      no GPU needed: builds the CLI and the parity test
#     with the package index's CUDA (CUDA_WHEELS=13.0 makes PTX that drivers from 580 on load;
#     PTX from the default 13.4 needs a 13.4 driver) and puts them in DIR, stripped and
#     xz-compressed (15 MB: a lent machine takes 64 MiB of files a call);
#   scripts/gpu-check.sh --prebuilt DIR   on a GPU machine with no Rust and no network: steps
#     1-5 with those binaries (unpacked into target/), cuBLAS, cuRAND and the CUDA runtime
#     13 found in that machine's toolkit or Python packages. DIR must travel with the
#     working tree (a folder of the checkout that .git/info/exclude ignores, say).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
parity_failed=0
dir="${2:-}"
# The toolkit folder cuda-deps.sh uses for this CUDA_WHEELS, and a build folder beside it.
tk=target/cuda
[[ "${CUDA_WHEELS:-13.4}" == 13.4 ]] || tk="target/cuda$(echo "$CUDA_WHEELS" | tr -d .)"
# Engine and CLI only: the OBS module is not what is checked here.
flags=(--locked --release --no-default-features --features cuda --target-dir "$tk-build")

if [[ "$mode" == "--build" ]]; then
  [[ -n "$dir" ]] || { echo "error: --build needs a folder" >&2; exit 2; }
  bash scripts/cuda-deps.sh "$tk"
  . "$tk/env.sh"
  cargo build "${flags[@]}" --bin ai-background --test parity
  test_bin="$(cargo test "${flags[@]}" --test parity --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*parity-[^"]*\)".*/\1/p' | tail -1)"
  mkdir -p "$dir"
  cp "$tk-build/release/ai-background" "$dir/ai-background"
  cp "$test_bin" "$dir/parity"
  strip "$dir/ai-background" "$dir/parity"
  xz -f -T2 -6 "$dir/ai-background" "$dir/parity"
  echo "$PWD" >"$dir/built-in"
  echo "gpu-check: built into $dir (tests read fixtures under $PWD/tests)"
  exit 0
fi

mkdir -p target
exec > >(tee target/gpu-check.log ${OUT:+"$OUT/gpu-check.log"}) 2>&1
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"

if [[ "$mode" == "--prebuilt" ]]; then
  mkdir -p target/gpu-prebuilt
  for f in ai-background parity; do
    xz -dc "$dir/$f.xz" >"target/gpu-prebuilt/$f"
    chmod +x "target/gpu-prebuilt/$f"
  done
  bin=target/gpu-prebuilt/ai-background
  # The test binary finds its fixtures under the folder it was built in.
  built_in="$(cat "$dir/built-in")"
  if [[ -n "$built_in" && ! -e "$built_in/tests/fixtures/parity" ]]; then
    mkdir -p "$(dirname "$built_in")" && ln -sfn "$PWD" "$built_in"
  fi
  libs=""
  for so in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    ldconfig -p | grep -q "$so " && continue
    found="$(find /usr/local/nvidia /usr/local/cuda*/ /usr/lib /usr/lib64 /opt -name "$so" 2>/dev/null |
      grep -v -e stubs -e compat | head -1 || true)"
    [[ -n "$found" ]] && libs="$libs:$(dirname "$found")"
  done
  export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$bin" | grep -E "cu|nvrtc" || true
  echo "== 1. parity on the GPU"
  # Not fatal here: one run on a lent machine should still bring back the timings.
  target/gpu-prebuilt/parity cuda --nocapture || { parity_failed=1; echo "gpu-check: PARITY FAILED"; }
else
  if ! command -v nvcc >/dev/null 2>&1; then
    bash scripts/cuda-deps.sh --runtime "$tk"
    . "$tk/env.sh"
  fi
  nvcc --version | tail -1
  cargo build "${flags[@]}" --bin ai-background
  bin="$tk-build/release/ai-background"
  echo "== 1. parity on the GPU"
  cargo test "${flags[@]}" --test parity cuda -- --nocapture
fi

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
echo "== 5. training: 20 steps of 8 on the fixture photos, on the GPU then on one CPU core"
data=target/gpu-check-train
rm -rf "$data" && mkdir -p "$data/images" "$data/masks"
for mask in tests/fixtures/photos/*.mask.png tests/fixtures/obs/*.mask.png; do
  id="$(basename "$mask" .mask.png)"
  cp "${mask%.mask.png}.jpg" "$data/images/$id.jpg"
  cp "$mask" "$data/masks/$id.png"
done
for device in cuda cpu; do
  if "$bin" train --data "$data" --out "target/gpu-check-$device.safetensors" --steps 20 \
    --batch 8 --no-keep --device "$device" --json >"target/gpu-check-train-$device.json"; then
    python3 - "$device" "target/gpu-check-train-$device.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
t = d["seconds"]
print(f"{sys.argv[1]:5} {d['seconds_per_image']:.4f} s per image; loss {d['loss_first10']:.3f}"
      f" -> {d['loss_last10']:.3f}; forward {t['forward']:.2f} s, backward {t['backward']:.2f} s,"
      f" update {t['update']:.2f} s")
PY
  else
    echo "$device: train failed"
  fi
done
echo "gpu-check: done (log in target/gpu-check.log)"
exit "$parity_failed"
