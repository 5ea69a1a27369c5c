"""Shared definitions for the Python reference tooling.

Everything here mirrors a contract that the Rust engine implements as well, so the
numbers produced by ``eval_tflite.py`` and the fixtures written by
``make_parity_fixtures.py`` can be compared with the candle port bit-for-bit in
intent (and within float tolerance in practice):

* ``PRESETS``: the two MediaPipe selfie-segmentation models and their input sizes.
* ``resize_bilinear``: the one resize used everywhere (image -> model input and
  probability -> image size). Half-pixel-centre bilinear, clamped at the border,
  no antialiasing, computed in float32 in a fixed order (see the function).
* ``load_rgb`` / ``model_input``: image decoding and normalisation (RGB, 0..1).
* ``TfliteModel``: the reference runtime (ai-edge-litert, default XNNPACK delegate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT.parent / "shared" / "models" / "mediapipe-selfie"


@dataclass(frozen=True)
class Preset:
    """One model variant: its TFLite file name and its fixed input size."""

    name: str
    tflite_file: str
    height: int
    width: int


PRESETS: dict[str, Preset] = {
    "landscape": Preset("landscape", "selfie_segmentation_landscape.tflite", 144, 256),
    "square": Preset("square", "selfie_segmentation.tflite", 256, 256),
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _axis_coords(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample indices and weights along one axis for ``resize_bilinear``.

    For output index ``d``: ``s = (d + 0.5) * src / dst - 0.5`` (float32, evaluated
    left to right), clamped to ``[0, src - 1]``; ``i0 = floor(s)``,
    ``i1 = min(i0 + 1, src - 1)``, ``f = s - i0``.
    """
    d = np.arange(dst, dtype=np.float32)
    s = (d + np.float32(0.5)) * np.float32(src) / np.float32(dst) - np.float32(0.5)
    s = np.clip(s, np.float32(0.0), np.float32(src - 1))
    i0 = np.floor(s).astype(np.intp)
    i1 = np.minimum(i0 + 1, src - 1)
    f = s - i0.astype(np.float32)
    return i0, i1, f


def resize_bilinear(src: np.ndarray, dst_h: int, dst_w: int) -> np.ndarray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` array to ``(dst_h, dst_w[, C])``.

    The contract shared with the Rust side: output pixel ``(x, y)`` samples the
    source at ``sx = (x + 0.5) * src_w / dst_w - 0.5`` (and ``sy`` likewise),
    clamped to ``[0, src_w - 1]``; ``x0 = floor(sx)``, ``x1 = min(x0 + 1, src_w - 1)``,
    ``fx = sx - x0``. Interpolation is done in float32 on the raw values (u8
    pixel values are *not* divided by 255 here), in this order::

        top    = v[y0, x0] * (1 - fx) + v[y0, x1] * fx
        bottom = v[y1, x0] * (1 - fx) + v[y1, x1] * fx
        out    = top * (1 - fy) + bottom * fy

    No antialiasing, whatever the scale factor. Returns float32.
    """
    v = np.asarray(src, dtype=np.float32)
    y0, y1, fy = _axis_coords(v.shape[0], dst_h)
    x0, x1, fx = _axis_coords(v.shape[1], dst_w)
    extra = (1,) * (v.ndim - 2)
    fx = fx.reshape((1, dst_w) + extra)
    fy = fy.reshape((dst_h, 1) + extra)
    one = np.float32(1.0)
    rows0, rows1 = v[y0], v[y1]
    top = rows0[:, x0] * (one - fx) + rows0[:, x1] * fx
    bottom = rows1[:, x0] * (one - fx) + rows1[:, x1] * fx
    return top * (one - fy) + bottom * fy


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image to ``(H, W, 3)`` uint8 RGB. EXIF orientation is ignored."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_mask(path: Path) -> np.ndarray:
    """Decode a ground-truth mask to a boolean ``(H, W)`` array (person = value >= 128)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8) >= 128


def model_input(rgb: np.ndarray, preset: Preset) -> np.ndarray:
    """Resize a uint8 RGB image to the preset's size and scale it to 0..1.

    Returns the float32 NHWC tensor ``[1, H, W, 3]`` the TFLite model takes.
    The aspect ratio is not preserved (the image is stretched), as MediaPipe does.
    """
    resized = resize_bilinear(rgb, preset.height, preset.width)
    return (resized / np.float32(255.0))[np.newaxis]


class TfliteModel:
    """The reference runtime: ai-edge-litert's interpreter with its default delegate (XNNPACK).

    XNNPACK is required: it implements MediaPipe's ``Convolution2DTransposeBias``
    custom op, which the builtin kernels do not.
    """

    def __init__(self, preset: Preset, model_dir: Path = DEFAULT_MODEL_DIR):
        self.preset = preset
        self.path = Path(model_dir) / preset.tflite_file
        self._interpreter = Interpreter(model_path=str(self.path))
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        (out,) = self._interpreter.get_output_details()
        expected_in = [1, preset.height, preset.width, 3]
        expected_out = [1, preset.height, preset.width, 1]
        if list(inp["shape"]) != expected_in or list(out["shape"]) != expected_out:
            raise ValueError(
                f"{self.path}: unexpected I/O shapes {list(inp['shape'])} -> {list(out['shape'])}"
            )
        self._in_index = inp["index"]
        self._out_index = out["index"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run on a float32 NHWC ``[1, H, W, 3]`` input; return the ``(H, W)`` float32 probability."""
        self._interpreter.set_tensor(self._in_index, np.ascontiguousarray(x, dtype=np.float32))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._out_index)[0, :, :, 0].copy()
