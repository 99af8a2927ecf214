#!/usr/bin/python3
"""Builds the demo models from credit_data.csv, through `streamml featurize`.

    /usr/bin/python3 models/train.py [--streamml build/streamml]
        [--data ../shared/data/credit_data.csv] [--out models]      (= make models)

1. credit_data rows -> transaction events, demo_events.jsonl: deterministic
   synthetic user ids (1,500 users, several events each) and event times over
   60 days; Status bad -> label 1; NA -> the field is absent (missing).
2. `streamml featurize` -> the txn-v1 feature CSV. No feature is computed in
   Python: training sees what the worker computes.
3. Holdout: 25% of the users (all their events), chosen with a fixed seed.
4. xgboost binary:logistic, 200 trees depth 4 -> credit_gbdt.json.
5. Scorecard: bins per feature (quantiles for numbers, one per value for
   codes) plus a missing bin, WoE, information value to pick a handful of
   features, logistic regression on WoE, points scaled PDO 20 / 600 at 50:1
   -> credit_scorecard.json (format: models/README.md).
6. Both models score the holdout through `streamml predict` (the C runtime the
   worker uses); holdout AUCs and the C-vs-Python differences -> metrics.json.
Deterministic: fixed seeds, one xgboost thread.
"""
import argparse
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

# credit_data column -> txn_event field (common/codec/event.h)
COLS = {"Seniority": "seniority_years", "Home": "home", "Time": "term_months", "Age": "age",
        "Marital": "marital", "Job": "job", "Expenses": "expenses", "Income": "income",
        "Assets": "assets", "Debt": "debt", "Amount": "amount", "Price": "price"}
TEXT_FIELDS = {"home", "marital", "job"}
N_USERS, DAYS, T0 = 1500, 60, 1_700_000_000_000  # 2023-11-14, ms
# features that are codes, not quantities: one bin per value
CODES = {"home_code", "marital_code", "job_code", "has_records"}
# category codes where 0 is a category the feature module does not know
# (FEAT_CAT_UNKNOWN): it keeps a bin of its own, neutral (WoE 0) when unseen
UNKNOWN_CODE = {"home_code", "marital_code", "job_code"}
PDO, SCORE0, ODDS0 = 20.0, 600.0, 50.0
CARD_MAX_FEATURES, MIN_IV = 8, 0.02
MIN_BIN_SHARE = 0.05  # bins holding fewer rows are merged into a neighbour
XGB_PARAMS = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.05, "subsample": 0.8,
              "colsample_bytree": 0.8, "min_child_weight": 2, "eval_metric": "auc", "seed": 0,
              "nthread": 1}
XGB_ROUNDS = 200


def make_events(data, out, seed=7):
    """One event per credit application; returns the number written."""
    rng = random.Random(seed)
    n = 0
    with open(data, newline="") as f, open(out, "w") as o:
        for i, row in enumerate(csv.DictReader(f)):
            ev = {"event_id": f"c{i:05d}", "user_id": f"user{rng.randrange(N_USERS):04d}",
                  "event_time": T0 + rng.randrange(DAYS * 86400) * 1000}
            for src, dst in COLS.items():
                v = row[src]
                if v not in ("", "NA"):
                    ev[dst] = v if dst in TEXT_FIELDS else float(v)
            if row["Records"] not in ("", "NA"):
                ev["past_records"] = row["Records"] == "yes"
            ev["label"] = 1 if row["Status"] == "bad" else 0
            o.write(json.dumps(ev) + "\n")
            n += 1
    return n


def featurize(streamml, events, out):
    subprocess.run([streamml, "featurize", "--input", events, "--output", out], check=True)
    with open(out, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        rows = list(r)
    assert header[:3] == ["event_id", "user_id", "event_time"] and header[-1] == "label", header
    feats = header[3:-1]
    X = np.array([[float(c) if c != "" else np.nan for c in row[3:-1]] for row in rows],
                 dtype=np.float32)
    y = np.array([int(row[-1]) for row in rows])
    users = np.array([row[1] for row in rows])
    return header, rows, feats, X, y, users


def holdout_mask(users, share=0.25, seed=0):
    uniq = sorted(set(users))
    rng = np.random.RandomState(seed)
    held = set(u for u, r in zip(uniq, rng.rand(len(uniq))) if r < share)
    return np.array([u in held for u in users])


# ---- scorecard ----

def bin_index(x, edges):
    """Bin of each value under `x < upper` (-1 = missing), as common/models/scorecard.c does."""
    return np.where(np.isnan(x), -1, np.searchsorted(np.array(edges), x, side="right"))


def merge_small(x, edges):
    """Drops edges until every bin holds at least MIN_BIN_SHARE of the present values."""
    v = x[~np.isnan(x)]
    edges = list(edges)
    while edges:
        counts = np.bincount(np.searchsorted(np.array(edges), v, side="right"),
                             minlength=len(edges) + 1)
        k = int(np.argmin(counts))
        if counts[k] >= MIN_BIN_SHARE * len(v):
            break
        del edges[min(k, len(edges) - 1)]  # merge bin k into a neighbour
    return edges


def make_edges(name, x, n_quantiles=5):
    v = x[~np.isnan(x)]
    if len(np.unique(v)) < 2:
        return None
    if name in CODES:
        edges = [float(c) + 0.5 for c in np.unique(v)[:-1]]
    else:
        qs = np.quantile(v.astype(np.float64), np.linspace(0, 1, n_quantiles + 1)[1:-1])
        edges = [float(q) for q in np.unique(qs) if q > v.min()]
    edges = merge_small(x, edges)
    if name in UNKNOWN_CODE and (not edges or edges[0] > 0.5):
        edges.insert(0, 0.5)
    return edges


def woe_iv(x, y, edges):
    """WoE per bin (key -1 = missing bin) with 0.5 smoothing, and information value.
    A bin no training row fell in (missing, unknown code) gets WoE 0: no evidence
    either way, so the population's odds."""
    idx = bin_index(x, edges)
    goods, bads = (y == 0).sum(), (y == 1).sum()
    woe, iv = {}, 0.0
    for b in range(-1, len(edges) + 1):
        m = idx == b
        if not m.any():
            woe[b] = 0.0
            continue
        pg, pb = ((y[m] == 0).sum() + 0.5) / goods, ((y[m] == 1).sum() + 0.5) / bads
        woe[b] = math.log(pg / pb)
        iv += (pg - pb) * woe[b]
    return woe, iv


def woe_matrix(X, tables):
    return np.array([[t["woe"][b] for b in bin_index(X[:, t["col"]], t["edges"])]
                     for t in tables]).T


def pick_features(feats, X, y):
    """Candidate tables by information value, best first."""
    tables = []
    for j, name in enumerate(feats):
        edges = make_edges(name, X[:, j])
        if edges is None or not edges:
            continue
        woe, iv = woe_iv(X[:, j], y, edges)
        if iv >= MIN_IV:
            tables.append({"name": name, "col": j, "edges": edges, "woe": woe, "iv": iv})
    tables.sort(key=lambda t: -t["iv"])
    return tables[:CARD_MAX_FEATURES]


def fit_card(tables, X, y):
    """Logistic regression of good (y = 0) on WoE. A feature whose coefficient comes
    out <= 0 (collinearity flips it) would give more points to worse bins: drop it."""
    while True:
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(woe_matrix(X, tables), 1 - y)
        bad = [t for t, b in zip(tables, lr.coef_[0]) if b <= 0]
        if not bad:
            return tables, lr
        tables = [t for t in tables if t not in bad]


def card_json(tables, lr):
    """points = factor * (intercept + sum beta * WoE) + offset, i.e.
    offset + factor * ln(odds of good); the intercept goes to base_points."""
    factor = PDO / math.log(2)
    offset = SCORE0 - factor * math.log(ODDS0)
    features = []
    for t, beta in zip(tables, lr.coef_[0]):
        pts = lambda b: round(factor * beta * t["woe"][b], 4)
        bins = [{"upper": e, "points": pts(b)} for b, e in enumerate(t["edges"])]
        bins.append({"upper": None, "points": pts(len(t["edges"]))})
        features.append({"name": t["name"], "missing_points": pts(-1), "bins": bins})
    return {"format": "streamml-scorecard", "name": "credit-scorecard", "version": "1",
            "pdo": PDO, "score0": SCORE0, "odds0": ODDS0, "min_score": 300, "max_score": 850,
            "base_points": round(offset + factor * lr.intercept_[0], 4), "features": features}


# ---- scoring through the C runtime ----

def streamml_predict(streamml, model, header, rows):
    with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", delete=False) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    try:
        out = subprocess.run([streamml, "predict", "--model", model, "--input", f.name],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    finally:
        os.unlink(f.name)
    if out and out[0].startswith("score,"):  # scorecard: score,probability,reasons
        return np.array([float(line.split(",")[1]) for line in out[1:]])
    return np.array([float(line) for line in out])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streamml", default="build/streamml")
    ap.add_argument("--data", default="../shared/data/credit_data.csv")
    ap.add_argument("--out", default="models")
    a = ap.parse_args()
    events = os.path.join(a.out, "demo_events.jsonl")
    n_events = make_events(a.data, events)
    with tempfile.TemporaryDirectory() as tmp:
        header, rows, feats, X, y, users = featurize(a.streamml, events,
                                                      os.path.join(tmp, "features.csv"))
    assert len(rows) == n_events, "featurize dropped events"
    hold = holdout_mask(users)
    tr, ho = ~hold, hold

    bst = xgb.train(XGB_PARAMS, xgb.DMatrix(X[tr], label=y[tr], missing=np.nan,
                                            feature_names=feats), XGB_ROUNDS)
    gbdt_path = os.path.join(a.out, "credit_gbdt.json")
    bst.save_model(gbdt_path)
    p_xgb = bst.predict(xgb.DMatrix(X[ho], missing=np.nan, feature_names=feats))

    tables, lr = fit_card(pick_features(feats, X[tr], y[tr]), X[tr], y[tr])
    card_path = os.path.join(a.out, "credit_scorecard.json")
    with open(card_path, "w") as f:
        json.dump(card_json(tables, lr), f, indent=1)
        f.write("\n")
    p_lr = 1 - lr.predict_proba(woe_matrix(X[ho], tables))[:, 1]

    held_rows = [r for r, h in zip(rows, hold) if h]
    p_gbdt = streamml_predict(a.streamml, gbdt_path, header, held_rows)
    p_card = streamml_predict(a.streamml, card_path, header, held_rows)
    metrics = {
        "rows": int(len(y)), "users": int(len(set(users))), "bad_rate": round(float(y.mean()), 4),
        "holdout": "25% of users", "holdout_rows": int(ho.sum()),
        "gbdt": {"trees": XGB_ROUNDS, "max_depth": XGB_PARAMS["max_depth"],
                 "eta": XGB_PARAMS["eta"], "auc_holdout": round(roc_auc_score(y[ho], p_gbdt), 4),
                 "max_abs_diff_streamml_vs_xgboost": float(np.abs(p_gbdt - p_xgb).max())},
        "scorecard": {"features": [t["name"] for t in tables],
                      "information_values": {t["name"]: round(t["iv"], 4) for t in tables},
                      "auc_holdout": round(roc_auc_score(y[ho], p_card), 4),
                      "max_abs_diff_streamml_vs_sklearn": float(np.abs(p_card - p_lr).max())},
    }
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")
    print(f"holdout AUC: gbdt {metrics['gbdt']['auc_holdout']}, "
          f"scorecard {metrics['scorecard']['auc_holdout']} "
          f"({len(tables)} features: {', '.join(t['name'] for t in tables)})")
    print(json.dumps(metrics))


if __name__ == "__main__":
    sys.exit(main())
