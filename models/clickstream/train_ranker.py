#!/usr/bin/python3
"""Second-stage ranker of the clickstream worker (clickstream.ranker).

Scores (session state, candidate) pairs: an MLP over the concatenation of
the session's GRU hidden state h [n, H] and the candidate's features
x [n, F], one score per pair. The features (version "v1", the layout the
worker builds in common/streams/ranker.c, rk_features):

    [0, E)    the item's embedding row of the GRU model (emb.weight), zeros
              for an item the model has no row for (a new item)
    E + 0     the first-stage relevance (the GRU logit; a new item: the
              pool's lowest)
    E + 1     1 if the model has a row for the item
    E + 2     1 if the item is in the catalogue
    E + 3     log1p(price)                      (catalogue; else 0)
    E + 4     log1p(age in days at the click)   (catalogue; else 0)
    E + 5     1 if its category is the session's last item's
    E + 6     1 if its region is the session's last item's
    E + 7 ... one flag per candidate source that proposed it (10: gru,
              covisit, popular, explore, category, region, cart, new,
              content, explore_new; common/models/session.h)

F = E + 17. Training data: the committed GRU (gru4rec.onnx) replayed over
sessions of the same seeded world as train.py; at every click the pool is
the GRU's top --pool items not in the session (flag gru; popular too when
among the model's 200 most clicked), the label the next clicked item when
it is in the pool (listwise softmax over the pool). Catalogue features come
from catalog.jsonl, clicks at its --now (2026-01-01). Deterministic.

Writes ranker.onnx (inputs "h" [n, H] and "x" [n, F], output "score" [n],
metadata model_name, model_version, ranker_features=v1, hidden, features),
ranker_metrics.json (Recall@10 / MRR@10 in the pool, GRU order against
the ranker's, over the held-out sessions), and the test fixtures:
tests/fixtures/ranker_pairs.txt (pairs with their torch scores),
ranker_price.onnx (score = the log-price feature: a second arm's model)
and ranker_bad.onnx (x one feature short: refused at load).

Another GRU (--model, --catalog, --heldout, --categories; --fixtures ""
writes none): `make models-clickstream-bench-ranker` trains the ranker of
the 100,000-item bench model (random init). Its top --pool items almost
never hold the next click, so --sampled pools are the next item and
--pool - 1 items drawn from the training clicks (popularity-weighted,
seeded), in the GRU's order: the label's place and relevance tell nothing,
the catalogue and embedding features do.
"""
import argparse
import json
import os
import time

import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn as nn

from train import make_world, sessions

NSOURCES = 10
SRC_GRU, SRC_POPULAR = 0, 2
NOW_MS = 1_767_225_600_000
K = 10


def load_gru(path):
    m = onnx.load(path)
    w = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in m.graph.initializer}
    meta = {p.key: p.value for p in m.metadata_props}
    out_w = w["out.weight"]
    if meta.get("out_weight_layout") == "in_out":
        out_w = out_w.T                                   # [items, H]
    popular = [int(v) for v in meta.get("popular", "").split(",") if v]
    return w["emb.weight"], w["gru.W"][0], w["gru.R"][0], w["gru.B"][0], out_w, w["out.bias"], \
        popular


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def gru_step(gru, item, h):
    """One step with ONNX semantics (gate order z, r, h; linear_before_reset=1)."""
    emb, W, R, B, _, _, _ = gru
    H = h.shape[0]
    x = emb[item]
    gx = W @ x + B[:3 * H]
    gh = R @ h + B[3 * H:]
    z = sigmoid(gx[:H] + gh[:H])
    r = sigmoid(gx[H:2 * H] + gh[H:2 * H])
    n = np.tanh(gx[2 * H:] + r * gh[2 * H:])
    return ((1 - z) * n + z * h).astype(np.float32)


def load_catalog(path):
    cat = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            cat[r["id"]] = r
    return cat


def features(gru, cat, item, last, rel, mask):
    emb = gru[0]
    E = emb.shape[1]
    x = np.zeros(E + 7 + NSOURCES, dtype=np.float32)
    if item < emb.shape[0]:
        x[:E] = emb[item]
        x[E + 1] = 1
    x[E] = rel
    c = cat.get(item)
    if c is not None:
        x[E + 2] = 1
        x[E + 3] = np.log1p(c["price"])
        x[E + 4] = np.log1p(max(NOW_MS - c["created"], 0) / 86400000.0)
        lc = cat.get(last)
        if lc is not None and lc["category"] and lc["category"] == c["category"]:
            x[E + 5] = 1
        if lc is not None and lc["region"] and lc["region"] == c["region"]:
            x[E + 6] = 1
    for s in range(NSOURCES):
        if mask & (1 << s):
            x[E + 7 + s] = 1
    return x


def top_of(scores, pool):
    """The pool's best items, best first (ties by id, as a stable sort)."""
    if len(scores) <= 20000:
        return np.argsort(-scores, kind="stable")[:pool]
    part = np.argpartition(-scores, pool)[:pool]    # 100,000 items: no full sort per click
    return part[np.lexsort((part, -scores[part]))]


def sampled_pool(rng, drawn, scores, target, pool):
    """target and pool - 1 items of drawn (not excluded), in the GRU's order."""
    out, seen = [target], {target}
    while len(out) < pool:
        for it in rng.choice(drawn, 2 * pool):
            it = int(it)
            if it not in seen and np.isfinite(scores[it]):
                seen.add(it)
                out.append(it)
                if len(out) == pool:
                    break
    out = np.array(out)
    return out[np.lexsort((out, -scores[out]))]


def examples(gru, cat, sess, pool, keep_misses=False, sample=None):
    """Per click with a next item: (h, X [pool, F], label index or -1, items).
    sample (rng, drawn items): pools drawn around the next item (--sampled)."""
    _, _, _, _, out_w, out_b, popular = gru
    pop = set(popular[:200])
    H = gru[2].shape[1]
    for s in sess:
        h = np.zeros(H, dtype=np.float32)
        for p in range(len(s) - 1):
            h = gru_step(gru, s[p], h)
            scores = out_w @ h + out_b
            scores[list(set(s[:p + 1]))] = -np.inf     # the session's items are excluded
            target = s[p + 1]
            if sample is not None and np.isfinite(scores[target]):
                top = sampled_pool(sample[0], sample[1], scores, target, pool)
            else:
                top = top_of(scores, pool)
            where = np.flatnonzero(top == target)
            if not len(where) and not keep_misses:
                continue
            X = np.stack([features(gru, cat, int(it), s[p], scores[it],
                                   (1 << SRC_GRU) | ((1 << SRC_POPULAR) if int(it) in pop else 0))
                          for it in top])
            yield h, X, (int(where[0]) if len(where) else -1), top, s[p]


class Ranker(nn.Module):
    def __init__(self, H, F, hidden):
        super().__init__()
        self.l1 = nn.Linear(H + F, hidden)
        self.l2 = nn.Linear(hidden, 1)

    def forward(self, h, x):
        return torch.flatten(self.l2(torch.relu(self.l1(torch.cat([h, x], 1)))))


def export(model, path, H, F, version, name="ranker"):
    model.eval()
    torch.onnx.export(model, (torch.zeros(2, H), torch.zeros(2, F)), path, opset_version=13,
                      input_names=["h", "x"], output_names=["score"],
                      dynamic_axes={"h": {0: "n"}, "x": {0: "n"}, "score": {0: "n"}})
    m = onnx.load(path)
    for k, v in {"model_name": name, "model_version": version, "ranker_features": "v1",
                 "hidden": str(H), "features": str(F)}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)


def metrics(rows):
    hits = rr = 0
    for rank in rows:
        if rank < K:
            hits += 1
            rr += 1.0 / (rank + 1)
    return {"recall@10": hits / max(len(rows), 1), "mrr@10": rr / max(len(rows), 1)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=here)
    ap.add_argument("--fixtures", default=os.path.join(root, "tests", "fixtures"))
    ap.add_argument("--sessions", type=int, default=1500, help="training sessions")
    ap.add_argument("--pool", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--model", default=os.path.join(here, "gru4rec.onnx"))
    ap.add_argument("--catalog", default=os.path.join(here, "catalog.jsonl"))
    ap.add_argument("--heldout", default=os.path.join(here, "sessions_heldout.jsonl"))
    ap.add_argument("--categories", type=int, default=50, help="of train.py's world")
    ap.add_argument("--sampled", action="store_true",
                    help="pools drawn around the next item (a GRU whose top misses it)")
    ap.add_argument("--name", default="ranker")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    t0 = time.time()
    gru = load_gru(a.model)
    cat = load_catalog(a.catalog)
    H, E = gru[2].shape[1], gru[0].shape[1]
    F = E + 7 + NSOURCES
    rng = np.random.default_rng(0)                    # the world and sessions of train.py
    world = make_world(rng, gru[0].shape[0], a.categories)
    train = sessions(rng, world, a.sessions, a.categories)
    with open(a.heldout) as f:
        held = [json.loads(line) for line in f]
    drawn = np.concatenate([np.array(s) for s in train])
    sample = (lambda seed: (np.random.default_rng(seed), drawn) if a.sampled else None)
    ex = list(examples(gru, cat, train, a.pool, sample=sample(3)))
    hs = torch.from_numpy(np.stack([e[0] for e in ex]))
    xs = torch.from_numpy(np.stack([e[1] for e in ex]))            # [B, pool, F]
    ys = torch.tensor([e[2] for e in ex])
    model = Ranker(H, F, a.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for epoch in range(a.epochs):
        perm = torch.randperm(len(ex), generator=g)
        total = 0.0
        for b in range(0, len(ex), 64):
            idx = perm[b:b + 64]
            B, P = len(idx), xs.shape[1]
            hh = hs[idx].unsqueeze(1).expand(B, P, H).reshape(B * P, H)
            s = model(hh, xs[idx].reshape(B * P, F)).reshape(B, P)
            loss = nn.functional.cross_entropy(s, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * B
        print(f"epoch {epoch}: loss {total / len(ex):.4f} ({time.time() - t0:.0f} s)")
    model.eval()
    gru_rank, rk_rank, fix = [], [], []
    with torch.no_grad():
        for h, X, y, top, last in examples(gru, cat, held, a.pool, keep_misses=True,
                                           sample=sample(4)):
            if y < 0:
                gru_rank.append(a.pool)
                rk_rank.append(a.pool)
                continue
            s = model(torch.from_numpy(np.tile(h, (len(X), 1))), torch.from_numpy(X)).numpy()
            order = np.argsort(-s, kind="stable")
            gru_rank.append(y)
            rk_rank.append(int(np.flatnonzero(order == y)[0]))
            if len(fix) < 40:                       # pairs for the C parity test
                for j in (0, y, len(X) - 1):
                    fix.append((h, X[j], float(s[j]), int(top[j]), int(last)))
    m = {"gru_in_pool": metrics(gru_rank), "ranker": metrics(rk_rank), "pool": a.pool,
         "held_out_clicks": len(gru_rank), "train_examples": len(ex),
         "train_seconds": round(time.time() - t0, 1)}
    if a.sampled:
        m["pools"] = "sampled: the next item and pool - 1 drawn from the training clicks"
    print(json.dumps(m, indent=2))
    os.makedirs(a.out, exist_ok=True)
    export(model, os.path.join(a.out, "ranker.onnx"), H, F, "1", a.name)
    with open(os.path.join(a.out, "ranker_metrics.json"), "w") as f:
        json.dump(m, f, indent=2)
        f.write("\n")
    if not a.fixtures:
        return
    os.makedirs(a.fixtures, exist_ok=True)
    with open(os.path.join(a.fixtures, "ranker_pairs.txt"), "w") as f:
        # n H F now_ms; then per pair: item last score, h (H), x (F)
        f.write(f"{len(fix)} {H} {F} {NOW_MS}\n")
        for h, x, s, item, last in fix:
            f.write(f"{item} {last} {s:.9g}\n")
            f.write(" ".join(f"{v:.9g}" for v in h) + "\n")
            f.write(" ".join(f"{v:.9g}" for v in x) + "\n")
    price = Ranker(H, F, 1)                         # score = log1p(price): another arm's model
    with torch.no_grad():
        for p in price.parameters():
            p.zero_()
        price.l1.weight[0, H + E + 3] = 1.0
        price.l2.weight[0, 0] = 1.0
    export(price, os.path.join(a.fixtures, "ranker_price.onnx"), H, F, "1", "ranker_price")
    export(Ranker(H, F - 1, 2), os.path.join(a.fixtures, "ranker_bad.onnx"), H, F - 1, "1",
           "ranker_bad")


if __name__ == "__main__":
    main()
