#!/usr/bin/python3
"""GRU4Rec-style next-click model of the clickstream worker.

Synthetic sessions: items have Zipf popularity (s = 1.1 over a random
permutation) and a category; sessions walk a sparse category-to-category
transition matrix, pick items by popularity within the category, and with
probability 0.35 follow an item's fixed "successor" (a complementary item):
sequence structure a popularity ranking cannot see. Sessions are split by
session (90% train, 10% held out).

Model: item embedding -> GRU (batch_first, one layer) -> Linear over the
catalog; trained with cross-entropy on every next click. Exported to ONNX
(opset 13) with inputs `items` int64 [N, T] and `h0` float [1, N, H], outputs
`scores` [N, T, items] and `h` [1, N, H]. The initializers are renamed to
stable names the C runtime reads (common/models/session.h): emb.weight [items, E],
gru.W [1, 3H, E], gru.R [1, 3H, H], gru.B [1, 6H] (ONNX gate order z, r, h;
linear_before_reset=1), out.weight (layout in metadata out_weight_layout:
"in_out" = [H, items] for a MatMul, "out_in" = [items, H] for a Gemm) and
out.bias [items]. Metadata also carries model_name, model_version, items,
hidden, and popular (the 100 most clicked training items, for cold start).

Writes --out/gru4rec.onnx and --out/metrics.json: Recall@20 and MRR@20 of
the GRU and of the popularity baseline over every next click of the
held-out sessions. Deterministic (fixed seeds).
"""
import argparse
import json
import os
import time

import numpy as np
import onnx
import torch
import torch.nn as nn

MODEL_NAME = "gru4rec"
MODEL_VERSION = "1"
MAX_LEN = 20
K = 20


def make_world(rng, n_items, n_cats):
    rank = rng.permutation(n_items)                      # rank[i]: popularity rank of item i
    pop = 1.0 / np.power(rank + 1.0, 1.1)
    cat = rng.integers(0, n_cats, n_items)
    trans = np.zeros((n_cats, n_cats))
    for c in range(n_cats):                              # each category leads to 3 others
        nxt = rng.choice(n_cats, 3, replace=False)
        trans[c, nxt] = rng.dirichlet([1.0, 1.0, 1.0])
        trans[c] = 0.4 * np.eye(n_cats)[c] + 0.6 * trans[c]
    members = [np.flatnonzero(cat == c) for c in range(n_cats)]
    succ = np.empty(n_items, dtype=np.int64)
    for i in range(n_items):                             # a complementary item, next category
        c2 = rng.choice(n_cats, p=trans[cat[i]])
        m = members[c2] if len(members[c2]) else np.arange(n_items)
        succ[i] = m[rng.integers(0, len(m))]
    return pop, cat, trans, members, succ


def sessions(rng, world, n, n_cats):
    pop, cat, trans, members, succ = world
    cat_pop = np.array([pop[m].sum() for m in members])
    cat_pop /= cat_pop.sum()
    in_cat = [pop[m] / pop[m].sum() if len(m) else None for m in members]
    out = []
    for _ in range(n):
        length = min(MAX_LEN, 2 + rng.geometric(1 / 5.0))
        c = rng.choice(n_cats, p=cat_pop)
        item = members[c][rng.choice(len(members[c]), p=in_cat[c])]
        s = [int(item)]
        while len(s) < length:
            if rng.random() < 0.35:
                item = succ[item]
            else:
                c = rng.choice(n_cats, p=trans[cat[item]])
                item = members[c][rng.choice(len(members[c]), p=in_cat[c])]
            s.append(int(item))
        out.append(s)
    return out


class GRU4Rec(nn.Module):
    def __init__(self, n_items, emb, hidden):
        super().__init__()
        self.emb = nn.Embedding(n_items, emb)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_items)

    def forward(self, items, h0):
        y, h = self.gru(self.emb(items), h0)
        return self.out(y), h


def batches(sess, bs, rng):
    idx = rng.permutation(len(sess))
    for b in range(0, len(idx), bs):
        chunk = [sess[i] for i in idx[b:b + bs]]
        t = max(len(s) for s in chunk) - 1
        x = np.zeros((len(chunk), t), dtype=np.int64)
        y = np.full((len(chunk), t), -100, dtype=np.int64)  # -100: ignored by the loss
        for j, s in enumerate(chunk):
            x[j, :len(s) - 1] = s[:-1]
            y[j, :len(s) - 1] = s[1:]
        yield torch.from_numpy(x), torch.from_numpy(y)


def evaluate(model, test, popular, hidden):
    """Recall@20 and MRR@20 over every next click, GRU and popularity."""
    hits = rr = phits = prr = n = 0
    top_pop = popular[:K]
    pop_rank = {int(it): r for r, it in enumerate(top_pop)}
    model.eval()
    with torch.no_grad():
        for b in range(0, len(test), 512):
            chunk = test[b:b + 512]
            t = max(len(s) for s in chunk) - 1
            x = np.zeros((len(chunk), t), dtype=np.int64)
            for j, s in enumerate(chunk):
                x[j, :len(s) - 1] = s[:-1]
            scores, _ = model(torch.from_numpy(x), torch.zeros(1, len(chunk), hidden))
            top = torch.topk(scores, K, dim=2).indices.numpy()
            for j, s in enumerate(chunk):
                for p in range(len(s) - 1):
                    target = s[p + 1]
                    n += 1
                    where = np.flatnonzero(top[j, p] == target)
                    if len(where):
                        hits += 1
                        rr += 1.0 / (where[0] + 1)
                    if target in pop_rank:
                        phits += 1
                        prr += 1.0 / (pop_rank[target] + 1)
    return {"recall@20": hits / n, "mrr@20": rr / n, "popularity_recall@20": phits / n,
            "popularity_mrr@20": prr / n, "held_out_clicks": n}


def rename_initializers(path, model_proto):
    """Stable initializer names for the C runtime; returns out_weight_layout."""
    g = model_proto.graph
    ren = {}
    layout = None
    for node in g.node:
        if node.op_type == "Gather" and len(node.input) == 2:
            ren[node.input[0]] = "emb.weight"
        elif node.op_type == "GRU":
            ren[node.input[1]] = "gru.W"
            ren[node.input[2]] = "gru.R"
            ren[node.input[3]] = "gru.B"
        elif node.op_type == "MatMul":
            ren[node.input[1]] = "out.weight"
            layout = "in_out"
        elif node.op_type == "Gemm":
            ren[node.input[1]] = "out.weight"
            ren[node.input[2]] = "out.bias"
            layout = "out_in"
        elif node.op_type == "Add":
            inits = {i.name for i in g.initializer}
            for name in node.input:
                if name in inits:
                    ren[name] = "out.bias"
    inits = {i.name for i in g.initializer}
    missing = [v for k, v in ren.items() if k not in inits]
    if missing or layout is None or len(set(ren.values())) != 6:
        raise SystemExit(f"{path}: unexpected export graph (renames {ren})")
    for i in g.initializer:
        if i.name in ren:
            i.name = ren[i.name]
    for node in g.node:
        for k, name in enumerate(node.input):
            if name in ren:
                node.input[k] = ren[name]
    return layout


def export(model, path, n_items, hidden, popular):
    model.eval()
    x = torch.zeros(2, 3, dtype=torch.int64)
    h0 = torch.zeros(1, 2, hidden)
    torch.onnx.export(model, (x, h0), path, opset_version=13, input_names=["items", "h0"],
                      output_names=["scores", "h"],
                      dynamic_axes={"items": {0: "n", 1: "t"}, "h0": {1: "n"},
                                    "scores": {0: "n", 1: "t"}, "h": {1: "n"}})
    m = onnx.load(path)
    layout = rename_initializers(path, m)
    meta = {"model_name": MODEL_NAME, "model_version": MODEL_VERSION, "items": str(n_items),
            "hidden": str(hidden), "out_weight_layout": layout,
            "popular": ",".join(str(int(i)) for i in popular[:100])}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--categories", type=int, default=50)
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=40000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=150, help="training time cap")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    world = make_world(rng, args.items, args.categories)
    sess = sessions(rng, world, args.sessions, args.categories)
    cut = int(0.9 * len(sess))
    train, test = sess[:cut], sess[cut:]
    counts = np.bincount(np.concatenate([np.array(s) for s in train]), minlength=args.items)
    popular = np.argsort(-counts, kind="stable")

    model = GRU4Rec(args.items, args.emb, args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        total = nb = 0
        for x, y in batches(train, 128, rng):
            scores, _ = model(x, torch.zeros(1, x.shape[0], args.hidden))
            loss = loss_fn(scores.reshape(-1, args.items), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            nb += 1
            if time.time() - t0 > args.seconds:
                break
        print(f"epoch {epoch}: loss {total / max(nb, 1):.4f} ({time.time() - t0:.0f} s)")
        if time.time() - t0 > args.seconds:
            break
    metrics = evaluate(model, test, popular, args.hidden) if args.epochs else {}
    metrics.update({"items": args.items, "hidden": args.hidden, "emb": args.emb,
                    "train_sessions": len(train), "held_out_sessions": len(test),
                    "train_seconds": round(time.time() - t0, 1)})
    os.makedirs(args.out, exist_ok=True)
    export(model, os.path.join(args.out, "gru4rec.onnx"), args.items, args.hidden, popular)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "sessions_heldout.jsonl"), "w") as f:
        for s in test[:200]:                       # demo / replay input
            f.write(json.dumps(s) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
