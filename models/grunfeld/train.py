#!/usr/bin/env python3
"""The "bring your own data" example: Grunfeld panel -> spec -> features ->
python3-xgboost -> a model the C runtime serves, with its parity checked.

  python3 models/grunfeld/train.py --streamml build/streamml --out build/grunfeld

1. make_events.py: python3-statsmodels' Grunfeld data -> events.jsonl
2. `streamml featurize --spec models/grunfeld/grunfeld-v1.yaml` -> features.csv
   (the compiled spec, the code a worker runs; no feature computed here)
3. xgboost binary:logistic on the years before 1948, feature names = the
   spec's outputs -> grunfeld_gbdt.json; AUC on 1948-1953
4. `streamml predict` scores features.csv with the C runtime: its
   probabilities must equal xgboost's (1e-6), and `streamml features check
   --model` must accept the model's names.
Deterministic: fixed seed, one thread.
"""
import argparse
import csv
import os
import subprocess
import sys

import numpy as np
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "grunfeld-v1.yaml")


def auc(y, p):
    pos = [s for s, t in zip(p, y) if t == 1]
    neg = [s for s, t in zip(p, y) if t == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def reference(events):
    """The spec's 13 features from the events, written independently in
    Python (per firm, in year order), for the offline parity check."""
    import json
    import math
    hist, out = {}, []
    for line in open(events):
        e = json.loads(line)
        h = hist.setdefault(e["firm"], [])
        inv, val, cap = e["invest"], e["value"], e["capital"]
        prev = [x for x in h]
        win3 = [x["invest"] for x in prev[-2:]] + [inv]
        win5 = [x["invest"] for x in prev[-4:]] + [inv]
        n = len(prev)
        mean = sum(x["invest"] for x in prev) / n if n else 0
        sd = math.sqrt(sum((x["invest"] - mean) ** 2 for x in prev) / (n - 1)) if n >= 2 else 0
        m5 = sum(win5) / len(win5)
        sd5 = math.sqrt(sum((x - m5) ** 2 for x in win5) / (len(win5) - 1)) if len(win5) > 1 else math.nan
        last = prev[-1] if prev else None
        out.append([inv, inv / cap, inv / (val + 1), math.log(val), float(cap / (val + 1) > 0.5),
                    sum(win3) / len(win3), sd5, max(win5),
                    (inv - mean) / sd if sd > 0 else math.nan, float(len(win5)),
                    365.0 if last and e["year_start"] - last["year_start"] == 365 * 86400000
                    else (366.0 if last else math.nan),
                    inv / last["invest"] - 1 if last else math.nan,
                    val / last["value"] - 1 if last else math.nan])
        h.append(e)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streamml", default="build/streamml")
    ap.add_argument("--out", default="build/grunfeld")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    events = os.path.join(a.out, "events.jsonl")
    feats = os.path.join(a.out, "features.csv")
    model = os.path.join(a.out, "grunfeld_gbdt.json")
    with open(events, "w") as f:
        subprocess.run([sys.executable, os.path.join(HERE, "make_events.py")], stdout=f, check=True)
    subprocess.run([a.streamml, "featurize", "--spec", SPEC, "-i", events, "-o", feats], check=True)
    with open(feats) as f:
        rows = list(csv.reader(f))
    head, rows = rows[0], rows[1:]
    names = head[2:-1]  # firm, year_start, <outputs>, label
    X = np.array([[float(c) if c else np.nan for c in r[2:-1]] for r in rows], dtype=np.float32)
    # Offline parity: the compiled spec against the Python reference (events
    # are in year order, one per firm and year, as featurize sorts them).
    ref = np.array(reference(events), dtype=np.float32)
    same = np.isclose(X, ref, rtol=1e-5, atol=1e-6) | (np.isnan(X) & np.isnan(ref))
    if not same.all():
        i, j = np.argwhere(~same)[0]
        sys.exit("spec vs reference: row %d %s: %r != %r" % (i, names[j], X[i, j], ref[i, j]))
    print("spec vs Python reference: %d x %d features equal" % X.shape)
    y = np.array([float(r[-1]) if r[-1] else np.nan for r in rows])
    year = np.array([1970 + int(r[1]) / (365.2425 * 86400000) for r in rows])
    train = (~np.isnan(y)) & (year < 1948)
    test = (~np.isnan(y)) & (year >= 1948)
    dtrain = xgb.DMatrix(X[train], label=y[train], feature_names=names, missing=np.nan)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "seed": 7,
              "nthread": 1, "eval_metric": "auc"}
    bst = xgb.train(params, dtrain, num_boost_round=60)
    bst.save_model(model)
    p_all = bst.predict(xgb.DMatrix(X, feature_names=names, missing=np.nan))
    # xgboost's own probabilities, in features.csv's row order (tests compare
    # the worker's published scores with them).
    np.savetxt(os.path.join(a.out, "xgb_probabilities.txt"), p_all, fmt="%.17g")
    print("grunfeld: %d firm-years, %d train, %d test; test AUC %.3f (base rate %.2f)"
          % (len(rows), train.sum(), test.sum(), auc(y[test], p_all[test]), np.nanmean(y[test])))
    # The C runtime on the same CSV: the probabilities a worker would publish.
    got = subprocess.run([a.streamml, "predict", "--model", model, "--input", feats,
                          "--ignore", "firm,year_start,label"],
                         check=True, capture_output=True, text=True).stdout.split()
    diff = max(abs(float(g) - float(p)) for g, p in zip(got, p_all))
    print("streamml predict vs xgboost: %d rows, max |difference| %.2g" % (len(got), diff))
    subprocess.run([a.streamml, "features", "check", SPEC, "--model", model, "--quiet"],
                   check=True)
    if len(got) != len(rows) or diff > 1e-6:
        sys.exit("parity failed")


if __name__ == "__main__":
    main()
