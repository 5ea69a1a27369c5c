"""Reference evaluation of the MediaPipe selfie-segmentation TFLite models.

    python tools/eval_tflite.py --images DIR --masks DIR --preset landscape|square [--json]

For every image ``DIR/<id>.jpg`` (also .jpeg/.png) with ground truth
``MASKS/<id>.png``, runs the TFLite model and scores the prediction. The Rust CLI
implements the same definitions; the two must agree within 0.002 mean IoU.

* Input: the image decoded to RGB (EXIF orientation ignored), resized to the
  preset size with ``common.resize_bilinear`` (stretched, no antialiasing), / 255.
* Prediction: the model's probability resized back to the image size with the
  same ``resize_bilinear``; person where it is >= 0.5. Ground truth: mask >= 128.
  A mask whose size differs from its image is an error.
* IoU per image = |P & G| / |P | G| (1.0 when the union is empty);
  ``mean_iou`` = mean over images, ``pooled_iou`` = sum of intersections / sum of unions.
* Boundary of a mask M: pixels of M with at least one 4-neighbour inside the image
  that is not in M (outside the image does not count). A boundary pixel matches if
  the other mask's boundary has a pixel within Euclidean distance 3 (integer
  offsets with dx*dx + dy*dy <= 9). precision = matched predicted / predicted,
  recall = matched ground truth / ground truth, F = 2PR / (P + R) (0 when P + R = 0);
  F = 1 when both boundaries are empty, 0 when exactly one is.
  ``boundary_f`` = mean of the per-image F.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import DEFAULT_MODEL_DIR, PRESETS, TfliteModel, load_mask, load_rgb, model_input, resize_bilinear

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
BOUNDARY_TOLERANCE_PX = 3
DISK_OFFSETS = [
    (dy, dx)
    for dy in range(-BOUNDARY_TOLERANCE_PX, BOUNDARY_TOLERANCE_PX + 1)
    for dx in range(-BOUNDARY_TOLERANCE_PX, BOUNDARY_TOLERANCE_PX + 1)
    if dy * dy + dx * dx <= BOUNDARY_TOLERANCE_PX**2
]


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour inside the image that is outside ``mask``."""
    p = np.pad(mask, 1, constant_values=True)  # outside the image never makes a boundary
    all_in = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~all_in


def dilate_disk(mask: np.ndarray) -> np.ndarray:
    """Pixels within Euclidean distance ``BOUNDARY_TOLERANCE_PX`` of a pixel of ``mask``."""
    r = BOUNDARY_TOLERANCE_PX
    h, w = mask.shape
    p = np.pad(mask, r, constant_values=False)
    out = np.zeros_like(mask)
    for dy, dx in DISK_OFFSETS:
        out |= p[r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def boundary_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """Boundary F-measure at ``BOUNDARY_TOLERANCE_PX`` between two boolean masks."""
    bp, bg = boundary(pred), boundary(gt)
    n_pred, n_gt = int(bp.sum()), int(bg.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = int((bp & dilate_disk(bg)).sum()) / n_pred
    recall = int((bg & dilate_disk(bp)).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass
class ImageScore:
    id: str
    intersection: int
    union: int
    boundary_f: float

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union


def score(pred: np.ndarray, gt: np.ndarray, image_id: str) -> ImageScore:
    return ImageScore(image_id, int((pred & gt).sum()), int((pred | gt).sum()), boundary_f(pred, gt))


def predict_mask(model: TfliteModel, rgb: np.ndarray) -> np.ndarray:
    """Boolean person mask at the image's size."""
    prob = model.predict(model_input(rgb, model.preset))
    return resize_bilinear(prob, rgb.shape[0], rgb.shape[1]) >= np.float32(0.5)


def evaluate(model: TfliteModel, images: Path, masks: Path) -> list[ImageScore]:
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"error: no images in {images}")
    scores = []
    for path in paths:
        mask_path = masks / f"{path.stem}.png"
        if not mask_path.is_file():
            raise SystemExit(f"error: no mask {mask_path} for {path}")
        rgb, gt = load_rgb(path), load_mask(mask_path)
        if gt.shape != rgb.shape[:2]:
            raise SystemExit(
                f"error: {mask_path} is {gt.shape[1]}x{gt.shape[0]}, image is {rgb.shape[1]}x{rgb.shape[0]}"
            )
        scores.append(score(predict_mask(model, rgb), gt, path.stem))
    return scores


def summarize(scores: list[ImageScore], preset: str) -> dict:
    inter = sum(s.intersection for s in scores)
    union = sum(s.union for s in scores)
    return {
        "mean_iou": float(np.mean([s.iou for s in scores])),
        "pooled_iou": 1.0 if union == 0 else inter / union,
        "boundary_f": float(np.mean([s.boundary_f for s in scores])),
        "count": len(scores),
        "preset": preset,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate a MediaPipe selfie-segmentation TFLite model on images + masks."
    )
    parser.add_argument("--images", type=Path, required=True, help="directory of <id>.jpg images")
    parser.add_argument(
        "--masks", type=Path, required=True, help="directory of <id>.png masks (>= 128 = person)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True, help="which model to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--per-image", type=Path, metavar="CSV", help="also write per-image scores to this CSV file"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="directory of the .tflite files (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    model = TfliteModel(PRESETS[args.preset], args.model_dir)
    scores = evaluate(model, args.images, args.masks)
    result = summarize(scores, args.preset)

    if args.per_image:
        with args.per_image.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "intersection", "union", "iou", "boundary_f"])
            for s in scores:
                writer.writerow([s.id, s.intersection, s.union, f"{s.iou:.6f}", f"{s.boundary_f:.6f}"])
    if args.json:
        print(json.dumps(result))
    else:
        print(f"preset      {result['preset']}")
        print(f"mean IoU    {result['mean_iou']:.4f}")
        print(f"pooled IoU  {result['pooled_iou']:.4f}")
        print(f"boundary F  {result['boundary_f']:.4f}  (3 px)")
        print(f"count       {result['count']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
