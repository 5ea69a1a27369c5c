"""Median inference time of the TFLite runtime with XNNPACK (1 thread) against our fused CPU
network (1 and 2 threads), interleaved in one run, on the same photo.

Run by ``scripts/vs-tflite.sh``. Our side is ``ai-background bench --threads 1,2`` (the fused
network alone, slices in and out), run twice per round: with ``--block`` (each thread count's
frames in a row, as the TFLite side runs its frames) and frame by frame (each frame after the
other count's: the figure of the runs before 3 December); the TFLite
side is ``Interpreter.invoke()`` after ``set_tensor`` (XNNPACK, ``num_threads=1``). The sides
are interleaved in blocks: a block of ``--block`` TFLite frames, then our two ``bench`` runs
of ``--block`` frames, ``--rounds`` times per preset, so drift of a shared machine affects
both alike. Medians are over all timed frames of a side (TFLite) or over the block medians
(``bench`` prints one median per run). Prints one table; ours / TFLite uses our 1-thread
median in blocks.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_MODEL_DIR, PRESETS, load_rgb, model_input  # noqa: E402


def tflite(preset, model_dir: Path) -> Interpreter:
    interp = Interpreter(model_path=str(model_dir / preset.tflite_file), num_threads=1)
    interp.allocate_tensors()
    return interp


def ours(binary: Path, preset: str, photo: Path, frames: int, block: int) -> dict[int, float]:
    """Median ms per thread count from one ``bench --threads 1,2 --block BLOCK`` run."""
    out = subprocess.run(
        [str(binary), "bench", "--threads", "1,2", "--preset", preset,
         "--frames", str(frames), "--block", str(block), "--image", str(photo)],
        check=True, capture_output=True, text=True,
    ).stdout
    medians = {}
    for line in out.splitlines():
        m = re.match(r"^(\d)\s+([\d.]+)\s", line)
        if m:
            medians[int(m.group(1))] = float(m.group(2))
    if set(medians) != {1, 2}:
        raise SystemExit(f"unexpected bench output:\n{out}")
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, required=True, help="target/release/ai-background")
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=40)
    args = ap.parse_args()
    rgb = load_rgb(args.photo)
    print(f"photo {args.photo.name}, {args.rounds} rounds of {args.block} frames per side, "
          "interleaved (TFLite block, then ours)")
    print(f"{'preset':<10} {'TFLite+XNNPACK 1t':>18} {'ours 1t':>9} {'ours 2t':>9} "
          f"{'ours 1t / TFLite':>17} {'2t speed-up':>12}   "
          f"{'frame by frame: 1t':>18} {'2t':>9} {'speed-up':>9}")
    for name in ("landscape", "square"):
        preset = PRESETS[name]
        interp = tflite(preset, args.model_dir)
        (inp,) = interp.get_input_details()
        (out,) = interp.get_output_details()
        x = np.ascontiguousarray(model_input(rgb, preset), dtype=np.float32)
        for _ in range(10):  # warm-up
            interp.set_tensor(inp["index"], x)
            interp.invoke()
        lite: list[float] = []
        mine: dict[int, list[float]] = {1: [], 2: []}
        alt: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for _ in range(args.block):
                t = time.perf_counter()
                interp.set_tensor(inp["index"], x)
                interp.invoke()
                interp.get_tensor(out["index"])
                lite.append((time.perf_counter() - t) * 1e3)
            for n, ms in ours(args.binary, name, args.photo, args.block, args.block).items():
                mine[n].append(ms)
            for n, ms in ours(args.binary, name, args.photo, args.block, 1).items():
                alt[n].append(ms)
        lt, m1, m2 = statistics.median(lite), statistics.median(mine[1]), statistics.median(mine[2])
        a1, a2 = statistics.median(alt[1]), statistics.median(alt[2])
        print(f"{name:<10} {lt:>15.3f} ms {m1:>6.3f} ms {m2:>6.3f} ms {m1 / lt:>16.2f}x "
              f"{m1 / m2:>11.2f}x   {a1:>15.3f} ms {a2:>6.3f} ms {a1 / a2:>8.2f}x")


if __name__ == "__main__":
    main()
