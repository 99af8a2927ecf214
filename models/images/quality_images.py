#!/usr/bin/python3
"""Writes training-distribution fundus images for `streamml quality`.

The images worker's quality limits (models/images/quality.json) come from
good training photographs: these are drawn by the same generator as the
demo model's training set (train.fundus), with grades as in training,
alternately PNG and JPEG (quality 92, as the demo samples), so that the
limits see both codecs. Deterministic (its own seed).

usage: quality_images.py OUT_DIR [--count N]
       quality_images.py --damaged SAMPLES_DIR   (the demo's refused images:
           SAMPLES_DIR/lowq/blurred.png and dark.png from fundus_01_g1.png)
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--damaged", metavar="SAMPLES_DIR")
    a = ap.parse_args()
    if a.damaged:
        from PIL import Image, ImageEnhance, ImageFilter
        src = Image.open(os.path.join(a.damaged, "fundus_01_g1.png")).convert("RGB")
        os.makedirs(os.path.join(a.damaged, "lowq"), exist_ok=True)
        src.filter(ImageFilter.GaussianBlur(3)).save(os.path.join(a.damaged, "lowq", "blurred.png"))
        ImageEnhance.Brightness(src).enhance(0.12).save(os.path.join(a.damaged, "lowq", "dark.png"))
        print(f"blurred.png and dark.png written to {a.damaged}/lowq")
        return 0
    if not a.out:
        ap.error("OUT_DIR is required")
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(13)
    grades = train.draw_grades(rng, a.count) if hasattr(train, "draw_grades") \
        else rng.integers(0, train.NCLASS, a.count)
    for k, g in enumerate(grades):
        img = train.fundus(rng, int(g))
        img.save(os.path.join(a.out, f"q_{k:04d}_g{int(g)}.{'png' if k % 2 else 'jpg'}"),
                 quality=92)
    print(f"{a.count} images written to {a.out}")


if __name__ == "__main__":
    sys.exit(main())
