#!/usr/bin/python3
"""The demo item catalogue of the committed model (models/clickstream/catalog.jsonl).

One JSON line per item (schemas/catalog_item.avsc; common/streams/catalog.h):
the model's 5,000 items with the categories train.py gave them (the same
seeded world: make_world), a region, a price, a listing time a year before
--now, and an 8-value content embedding (the category's direction plus
noise, so content neighbours share categories); then --new items the model
has never seen (ids 5000...), listed an hour before --now: the new arrivals
(clickstream.new_item_age_s) of clicks at --now. Deterministic.
usage: make_catalog.py [--out FILE] [--new 50] [--now EPOCH_MS]
"""
import argparse
import json
import os

import numpy as np

from train import make_world

REGIONS = ["eu", "us", "uk", "apac"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "catalog.jsonl"))
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--categories", type=int, default=50)
    ap.add_argument("--new", type=int, default=50)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--now", type=int, default=1_767_225_600_000, help="epoch ms (2026-01-01)")
    a = ap.parse_args()
    _, cat, _, _, _ = make_world(np.random.default_rng(0), a.items, a.categories)
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(a.categories, a.dim))
    with open(a.out, "w") as f:
        for i in range(a.items + a.new):
            c = int(cat[i]) if i < a.items else int(rng.integers(0, a.categories))
            emb = dirs[c] + 0.3 * rng.normal(size=a.dim)
            created = a.now - (365 * 86400000 if i < a.items else 3600000)
            f.write(json.dumps({"id": i, "category": f"cat{c}",
                                "region": REGIONS[int(rng.integers(0, len(REGIONS)))],
                                "price": round(float(rng.uniform(2, 200)), 2),
                                "created": created,
                                "embedding": [round(float(x), 3) for x in emb]},
                               separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
