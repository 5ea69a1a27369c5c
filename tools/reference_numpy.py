"""Pure-numpy forward pass of the MediaPipe selfie-segmentation network (NCHW).

This is the executable specification of the architecture the candle engine
implements, using the converted ``models/<preset>.safetensors`` (keys and layouts
as written by ``convert_tflite.py``). Both presets share the same graph; only the
input size differs (``[1, 3, 144, 256]`` landscape, ``[1, 3, 256, 256]`` square).
Input: RGB scaled to 0..1. Output: ``[1, 1, H, W]`` person probability.

Architecture (confirmed op by op against the TFLite graph)::

    stem      x = hswish(conv3x3/s2(input))                          3 -> 16, 1/2
    blocks    8 inverted-residual blocks, see BLOCKS:
                  h = act(expand 1x1(x)); h = act(dw kxk/s(h))
                  h = h * sigmoid(se.expand(relu(se.reduce(mean_hw(h)))))   (SE blocks)
                  y = project 1x1(h)  (linear);  y = y + x  when stride 1 and Cin == Cout
    head      y = relu(head.conv(x)) * sigmoid(head.gate(mean_hw(x)))     32 -> 128, 1/16
    decoder   3 stages j = 0, 1, 2 with skip = blocks.2 output (24 ch, 1/8),
              blocks.0 output (16 ch, 1/4), stem output (16 ch, 1/2):
                  p = proj(up2x(prev)); g = sigmoid(gate.expand(relu(gate.reduce(mean_hw(skip + p)))))
                  y = skip * g + p; c = relu(conv(y)); out = c + relu(dw3x3(c))
    final     sigmoid(conv_transpose 2x2/s2(x) + bias)                16 -> 1, full size

Conventions that matter for exactness:

* TFLite SAME padding: ``pad_total = max((ceil(n/s) - 1) * s + k - n, 0)``, split
  ``(total // 2, total - total // 2)``. Stride 2 on an even size therefore pads
  bottom/right only (k=3 -> (0, 1), k=5 -> (1, 2)); stride 1 pads k//2 each side.
* hswish(x) = x * relu6(x + 3) / 6.
* ``up2x`` is RESIZE_BILINEAR with half_pixel_centers (sample at (o + 0.5) / 2 - 0.5,
  clamped to the border).
* The transposed conv is ``out[2y+dy, 2x+dx] = bias + sum_c in[c, y, x] * W[c, 0, dy, dx]``
  (weight layout ``[Cin, Cout, 2, 2]``, kernel not flipped, no padding/cropping).

Run as a script to compare with the TFLite interpreter on real photos::

    python tools/reference_numpy.py [--preset landscape|square|both] [IMAGE ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from common import PRESETS, REPO_ROOT, TfliteModel, load_rgb, model_input

# (depthwise kernel size, stride, activation, has squeeze-excite) for blocks.0 .. blocks.7.
# Channels come from the weights: 16->16->16, 16->72->24, 24->88->24, 24->96->32,
# 32->128->32, 32->128->32, 32->96->32, 32->96->32 (in -> expanded -> out).
BLOCKS = [
    (3, 2, "relu", True),
    (3, 2, "relu", False),
    (3, 1, "relu", False),
    (5, 2, "hswish", True),
    (5, 1, "hswish", True),
    (5, 1, "hswish", True),
    (5, 1, "hswish", True),
    (5, 1, "hswish", True),
]

DEFAULT_IMAGES = [
    REPO_ROOT.parent / "shared/datasets/ccp-webcam-dev/images/0001.jpg",
    REPO_ROOT.parent / "shared/datasets/ccp-dev/images/0002.jpg",
]


def load_weights(path: Path, dtype=np.float64) -> dict[str, np.ndarray]:
    """Load a converted safetensors file, casting the float16 weights to ``dtype``."""
    return {k: v.astype(dtype) for k, v in load_file(str(path)).items()}


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def hswish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3, 0, 6) / 6


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + exp(-x)) without overflow


ACTIVATIONS = {"relu": relu, "hswish": hswish}


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """TFLite SAME padding (before, after) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: int, stride: int):
    """Yield ``(dy, dx, slice)`` of the SAME-padded input for every kernel tap."""
    _, _, h, w = x.shape
    (pt, pb), (pl, pr) = same_padding(h, k, stride), same_padding(w, k, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = -(-h // stride), -(-w // stride)
    for dy in range(k):
        for dx in range(k):
            yield (
                dy,
                dx,
                xp[:, :, dy : dy + stride * (oh - 1) + 1 : stride, dx : dx + stride * (ow - 1) + 1 : stride],
            )


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1) -> np.ndarray:
    """Regular convolution, weight ``[Cout, Cin, k, k]``, SAME padding."""
    out = sum(np.einsum("oc,nchw->nohw", w[:, :, dy, dx], s) for dy, dx, s in _windows(x, w.shape[2], stride))
    return out + b[None, :, None, None]


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1) -> np.ndarray:
    """Depthwise convolution, weight ``[C, 1, k, k]``, SAME padding."""
    out = sum(w[None, :, 0, dy, dx, None, None] * s for dy, dx, s in _windows(x, w.shape[2], stride))
    return out + b[None, :, None, None]


def conv1x1(x: np.ndarray, p: dict[str, np.ndarray], key: str) -> np.ndarray:
    return conv2d(x, p[f"{key}.weight"], p[f"{key}.bias"])


def mean_hw(x: np.ndarray) -> np.ndarray:
    """Global average pool keeping dims: ``[N, C, 1, 1]``."""
    return x.mean(axis=(2, 3), keepdims=True)


def squeeze_excite(x: np.ndarray, p: dict[str, np.ndarray], key: str) -> np.ndarray:
    """``x * sigmoid(expand(relu(reduce(mean_hw(x)))))``."""
    g = sigmoid(conv1x1(relu(conv1x1(mean_hw(x), p, f"{key}.reduce")), p, f"{key}.expand"))
    return x * g


def _upsample_axis(x: np.ndarray, axis: int) -> np.ndarray:
    n = x.shape[axis]
    s = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
    i0 = np.floor(s).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    f = (s - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, i0, axis=axis) * (1 - f) + np.take(x, i1, axis=axis) * f


def upsample2x(x: np.ndarray) -> np.ndarray:
    """RESIZE_BILINEAR to twice the size, half_pixel_centers=True, align_corners=False."""
    return _upsample_axis(_upsample_axis(x, 2), 3)


def conv_transpose2x2(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x2 stride-2 transposed conv, weight ``[Cin, Cout, 2, 2]``: out[2y+dy, 2x+dx] = b + sum_c in*W."""
    n, _, h, wd = x.shape
    out = np.empty((n, w.shape[1], 2 * h, 2 * wd), dtype=x.dtype)
    for dy in range(2):
        for dx in range(2):
            out[:, :, dy::2, dx::2] = np.einsum("co,nchw->nohw", w[:, :, dy, dx], x) + b[None, :, None, None]
    return out


def inverted_residual(x: np.ndarray, p: dict[str, np.ndarray], i: int) -> np.ndarray:
    _, stride, act_name, has_se = BLOCKS[i]
    act, key = ACTIVATIONS[act_name], f"blocks.{i}"
    h = act(conv1x1(x, p, f"{key}.expand"))
    h = act(depthwise_conv2d(h, p[f"{key}.dw.weight"], p[f"{key}.dw.bias"], stride))
    if has_se:
        h = squeeze_excite(h, p, f"{key}.se")
    y = conv1x1(h, p, f"{key}.project")
    return y + x if y.shape == x.shape else y


def decoder_stage(x: np.ndarray, skip: np.ndarray, p: dict[str, np.ndarray], j: int) -> np.ndarray:
    key = f"decoder.{j}"
    up = conv1x1(upsample2x(x), p, f"{key}.proj")
    g = sigmoid(conv1x1(relu(conv1x1(mean_hw(skip + up), p, f"{key}.gate.reduce")), p, f"{key}.gate.expand"))
    c = relu(conv1x1(skip * g + up, p, f"{key}.conv"))
    return c + relu(depthwise_conv2d(c, p[f"{key}.dw.weight"], p[f"{key}.dw.bias"]))


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Run the network: ``x`` is NCHW RGB in 0..1, returns the ``[N, 1, H, W]`` probability."""
    stem = hswish(conv2d(x, p["stem.weight"], p["stem.bias"], stride=2))
    h, skips = stem, {}
    for i in range(len(BLOCKS)):
        h = inverted_residual(h, p, i)
        skips[i] = h
    h = relu(conv1x1(h, p, "head.conv")) * sigmoid(conv1x1(mean_hw(h), p, "head.gate"))
    for j, skip in enumerate([skips[2], skips[0], stem]):
        h = decoder_stage(h, skip, p, j)
    return sigmoid(conv_transpose2x2(h, p["final.weight"], p["final.bias"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare the numpy reference with the TFLite interpreter.")
    parser.add_argument(
        "images", nargs="*", type=Path, default=DEFAULT_IMAGES, help="photos to run (default: %(default)s)"
    )
    parser.add_argument(
        "--preset", choices=[*PRESETS, "both"], default="both", help="model preset (default: both)"
    )
    parser.add_argument(
        "--models", type=Path, default=REPO_ROOT / "models", help="directory of the converted safetensors"
    )
    parser.add_argument(
        "--tol", type=float, default=1e-4, help="maximum allowed mean abs difference (default: %(default)g)"
    )
    args = parser.parse_args(argv)

    worst = 0.0
    for preset in PRESETS.values() if args.preset == "both" else [PRESETS[args.preset]]:
        weights = load_weights(args.models / f"{preset.name}.safetensors")
        tfl = TfliteModel(preset)
        for image in args.images:
            x = model_input(load_rgb(image), preset)
            expected = tfl.predict(x)
            got = forward(weights, x.transpose(0, 3, 1, 2).astype(np.float64))[0, 0]
            diff = np.abs(got - expected)
            worst = max(worst, float(diff.mean()))
            print(
                f"{preset.name:9s} {image}: mean|diff| {diff.mean():.3e}  max|diff| {diff.max():.3e}  "
                f"mask agreement {np.mean((got >= 0.5) == (expected >= 0.5)):.5f}"
            )
    ok = worst < args.tol
    print(f"worst mean|diff| {worst:.3e} -> {'OK' if ok else 'FAIL'} (tolerance {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
