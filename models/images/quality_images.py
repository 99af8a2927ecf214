#!/usr/bin/python3
"""Writes training-distribution fundus images for `streamml quality`.

The images worker's quality limits (models/images/quality.json) come from
good training photographs: these are drawn by the same generator as the
demo model's training set (train.fundus), with grades as in training,
alternately PNG and JPEG (quality 92, as the demo samples), so that the
limits see both codecs. Deterministic (its own seed).

usage: quality_images.py OUT_DIR [--count N]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=200)
    a = ap.parse_args()
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
