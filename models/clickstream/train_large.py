#!/usr/bin/python3
"""A large-catalog GRU4Rec for the IVF benchmark (bench/clickstream.sh).

train.py's full softmax over 100,000 items costs about 10 s per batch on one
core, so a 100k-item model cannot be trained that way in minutes; random
weights (make models-clickstream-bench) are fine for speed but have no
structure, so approximate search recall measured on them means nothing.
This script trains the same network (train.py's world, sessions, GRU4Rec
class and ONNX export) with a sampled softmax: each batch scores its
positives against NEG items drawn uniformly, with sparse embeddings and
SparseAdam, for --seconds. It is a partly trained model (its Recall@20 and
MRR@20 against popularity are in metrics.json), trained enough that item
vectors cluster by what sessions do, which is what IVF recall depends on.

Writes --out/gru4rec.onnx, metrics.json and sessions_heldout.jsonl (300
held-out sessions). Fixed seeds, but training stops at a time budget, so the
number of steps (in metrics.json) depends on the machine.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

import train as T

NEG = 4096


def sampled_loss(hq, tgt, ow, ob, rng, n_items):
    """Cross-entropy of each row's positive against shared uniform negatives;
    a negative equal to a row's positive is masked out."""
    neg = torch.from_numpy(rng.integers(0, n_items, NEG))
    cand = torch.cat([tgt, neg])
    logits = hq @ ow(cand).T + ob(cand).T
    lab = torch.arange(len(tgt))
    same = tgt[:, None] == cand[None, :]
    same[lab, lab] = False
    return nn.functional.cross_entropy(logits.masked_fill(same, -1e9), lab)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", type=int, default=100000)
    ap.add_argument("--categories", type=int, default=50)
    ap.add_argument("--emb", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--sessions", type=int, default=40000)
    ap.add_argument("--seconds", type=float, default=120, help="training time cap")
    args = ap.parse_args()
    n, e, h = args.items, args.emb, args.hidden
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    world = T.make_world(rng, n, args.categories)
    sess = T.sessions(rng, world, args.sessions, args.categories)
    cut = int(0.95 * len(sess))
    train, test = sess[:cut], sess[cut:]
    counts = np.bincount(np.concatenate([np.array(s) for s in train]), minlength=n)
    popular = np.argsort(-counts, kind="stable")

    emb, gru = nn.Embedding(n, e, sparse=True), nn.GRU(e, h, batch_first=True)
    ow, ob = nn.Embedding(n, h, sparse=True), nn.Embedding(n, 1, sparse=True)
    nn.init.normal_(ow.weight, std=0.05)
    nn.init.zeros_(ob.weight)
    sparse = torch.optim.SparseAdam([emb.weight, ow.weight, ob.weight], lr=3e-3)
    dense = torch.optim.Adam(gru.parameters(), lr=3e-3)
    t0, steps = time.time(), 0
    while time.time() - t0 < args.seconds:
        for x, y in T.batches(train, 256, rng):
            out, _ = gru(emb(x), torch.zeros(1, x.shape[0], h))
            mask = y >= 0
            loss = sampled_loss(out[mask], y[mask], ow, ob, rng, n)
            sparse.zero_grad()
            dense.zero_grad()
            loss.backward()
            sparse.step()
            dense.step()
            steps += 1
            if time.time() - t0 > args.seconds:
                break
    model = T.GRU4Rec(n, e, h)
    with torch.no_grad():
        model.emb.weight.copy_(emb.weight)
        model.gru.load_state_dict(gru.state_dict())
        model.out.weight.copy_(ow.weight)
        model.out.bias.copy_(ob.weight[:, 0])
    metrics = T.evaluate(model, test[:1000], popular, h)
    metrics.update({"items": n, "hidden": h, "emb": e, "train_sessions": len(train),
                    "steps": steps, "train_seconds": round(time.time() - t0, 1),
                    "loss": "sampled softmax, %d uniform negatives" % NEG})
    os.makedirs(args.out, exist_ok=True)
    T.export(model, os.path.join(args.out, "gru4rec.onnx"), n, h, popular)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "sessions_heldout.jsonl"), "w") as f:
        for s in test[:300]:
            f.write(json.dumps(s) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
