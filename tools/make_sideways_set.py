#!/usr/bin/env python3
"""Makes a phone-style copy of an annotated set: each photo stored sideways with EXIF orientation.

    python3 tools/make_sideways_set.py ../shared/datasets/ccp-dev /tmp/sets 40

writes /tmp/sets/upright/{images,masks} and /tmp/sets/sideways/{images,masks} from the first N
images (sorted by name). Upright: the photo re-encoded by ffmpeg at -q:v 2. Sideways: the same
photo turned 90 degrees anticlockwise (ffmpeg transpose=2, -q:v 2) with an EXIF APP1 segment
holding Orientation = 6 ("turn 90 degrees clockwise to display"), as phones store portraits.
Masks are copied unchanged: they fit the photo as displayed. `ai-background eval` on both sets
shows whether EXIF orientation is applied (docs/robustness.md). Needs only Python 3 and ffmpeg.
"""
import shutil
import struct
import subprocess
import sys
from pathlib import Path

# APP1 "Exif": big-endian TIFF header, one IFD entry 0x0112 Orientation, SHORT, count 1, value 6.
EXIF = (
    b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01"
    + bytes([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0])
    + b"\0\0\0\0"
)


def ffmpeg_jpeg(src: Path, dst: Path, *filters: str) -> bytes:
    args = ["ffmpeg", "-v", "error", "-y", "-i", str(src)]
    if filters:
        args += ["-vf", ",".join(filters)]
    subprocess.run(args + ["-q:v", "2", str(dst)], check=True)
    return dst.read_bytes()


def main() -> None:
    src, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    for d in ("upright", "sideways"):
        for sub in ("images", "masks"):
            (out / d / sub).mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in (src / "images").iterdir() if p.suffix.lower() == ".jpg")[:n]
    for img in images:
        mask = src / "masks" / f"{img.stem}.png"
        ffmpeg_jpeg(img, out / "upright" / "images" / img.name)
        side = out / "sideways" / "images" / img.name
        data = ffmpeg_jpeg(img, side, "transpose=2")
        app1 = b"\xff\xe1" + struct.pack(">H", len(EXIF) + 2) + EXIF
        side.write_bytes(data[:2] + app1 + data[2:])
        for d in ("upright", "sideways"):
            shutil.copy(mask, out / d / "masks" / mask.name)
    print(f"{len(images)} images in {out}/upright and {out}/sideways")


if __name__ == "__main__":
    main()
