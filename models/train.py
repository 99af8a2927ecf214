#!/usr/bin/python3
"""Builds the demo models from credit_data.csv, through `streamml featurize`.

1. credit_data rows -> transaction events (deterministic synthetic user ids and
   event times; Status bad -> label 1; NA -> field absent): demo_events.jsonl
2. `streamml featurize` -> feature CSV (no feature is computed in Python)
3. xgboost binary:logistic -> credit_gbdt.json
4. quantile bins + WoE + logistic regression -> points scorecard
   (PDO 20, 600 at odds 50:1) -> credit_scorecard.json
Holdout AUCs go to metrics.json.
"""
import argparse, csv, json, math, os, random, subprocess, sys

import numpy as np
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

COLS = {"Seniority": "seniority_years", "Home": "home", "Time": "term_months",
        "Age": "age", "Marital": "marital", "Job": "job", "Expenses": "expenses",
        "Income": "income", "Assets": "assets", "Debt": "debt", "Amount": "amount",
        "Price": "price"}
CARD_FEATURES = ["loan_to_value", "monthly_payment_ratio", "debt_to_income", "has_records",
                 "seniority_years", "job_code", "home_code", "marital_code", "age",
                 "expense_ratio", "assets"]
PDO, SCORE0, ODDS0 = 20.0, 600.0, 50.0


def make_events(data, out, seed=7):
    rng = random.Random(seed)
    t0 = 1_700_000_000_000
    with open(data) as f, open(out, "w") as o:
        for i, row in enumerate(csv.DictReader(f)):
            ev = {"event_id": f"c{i:05d}", "user_id": f"user{rng.randrange(1500):04d}",
                  "event_time": t0 + rng.randrange(60 * 86400) * 1000}
            for src, dst in COLS.items():
                v = row[src]
                if v in ("", "NA"):
                    continue
                ev[dst] = v if dst in ("home", "marital", "job") else float(v)
            if row["Records"] not in ("", "NA"):
                ev["past_records"] = row["Records"] == "yes"
            ev["label"] = 1 if row["Status"] == "bad" else 0
            o.write(json.dumps(ev) + "\n")


def load_csv(path):
    with open(path) as f:
        r = csv.reader(f)
        header = next(r)
        rows = list(r)
    feats = header[3:-1]
    X = np.array([[float(c) if c != "" else np.nan for c in row[3:-1]] for row in rows],
                 dtype=np.float32)
    y = np.array([int(row[-1]) for row in rows])
    ids = [row[0] for row in rows]
    return feats, X, y, ids


def bins_for(x, n=5):
    v = x[~np.isnan(x)]
    if len(v) == 0:
        return []
    qs = np.unique(np.quantile(v, np.linspace(0, 1, n + 1)[1:-1]))
    return [float(q) for q in qs if q > v.min()]


def woe_table(x, y, edges):
    """Per bin (and the missing bin): WoE of goods vs bads, with 0.5 smoothing."""
    idx = np.where(np.isnan(x), -1, np.searchsorted(edges, x, side="right"))
    goods, bads = (y == 0).sum(), (y == 1).sum()
    woe = {}
    for b in range(-1, len(edges) + 1):
        m = idx == b
        g, bd = ((y[m] == 0).sum() + 0.5), ((y[m] == 1).sum() + 0.5)
        woe[b] = math.log((g / goods) / (bd / bads))
    return idx, woe


def scorecard(feats, X, y, Xh, yh):
    cols, tables, W = [], [], []
    for name in CARD_FEATURES:
        j = feats.index(name)
        edges = bins_for(X[:, j])
        idx, woe = woe_table(X[:, j], y, edges)
        cols.append(j)
        tables.append((name, edges, woe))
        W.append([woe[b] for b in idx])
    W = np.array(W).T
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(W, 1 - y)  # models log-odds of good
    factor = PDO / math.log(2)
    offset = SCORE0 - factor * math.log(ODDS0)
    k = len(tables)
    base = offset + factor * lr.intercept_[0]
    features = []
    for (name, edges, woe), beta in zip(tables, lr.coef_[0]):
        pts = lambda b: round(factor * beta * woe[b], 4)
        bins = [{"upper": e, "points": pts(b)} for b, e in enumerate(edges)]
        bins.append({"upper": None, "points": pts(len(edges))})
        features.append({"name": name, "missing_points": pts(-1), "bins": bins})
    card = {"format": "streamml-scorecard", "name": "credit-scorecard", "version": "1",
            "pdo": PDO, "score0": SCORE0, "odds0": ODDS0, "min_score": 300, "max_score": 850,
            "base_points": round(base, 4), "features": features}
    # holdout AUC of the points (higher points = better, so negate for P(bad))
    Wh = []
    for (name, edges, woe), j in zip(tables, cols):
        idx, _ = woe_table(Xh[:, j], yh, edges)
        Wh.append([woe[b] for b in idx])
    auc = roc_auc_score(yh, -lr.decision_function(np.array(Wh).T))
    return card, auc, k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streamml", default="build/streamml")
    ap.add_argument("--data", default="../shared/data/credit_data.csv")
    ap.add_argument("--out", default="models")
    a = ap.parse_args()
    events = os.path.join(a.out, "demo_events.jsonl")
    feats_csv = os.path.join(a.out, "features.csv.tmp")
    make_events(a.data, events)
    subprocess.run([a.streamml, "featurize", "-i", events, "-o", feats_csv], check=True)
    feats, X, y, ids = load_csv(feats_csv)
    os.unlink(feats_csv)
    rng = np.random.RandomState(0)
    hold = rng.rand(len(y)) < 0.25
    dtr = xgb.DMatrix(X[~hold], label=y[~hold], missing=np.nan, feature_names=feats)
    dho = xgb.DMatrix(X[hold], label=y[hold], missing=np.nan, feature_names=feats)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.05, "subsample": 0.8,
              "colsample_bytree": 0.8, "eval_metric": "auc", "seed": 0}
    bst = xgb.train(params, dtr, num_boost_round=200)
    bst.save_model(os.path.join(a.out, "credit_gbdt.json"))
    auc_gbdt = roc_auc_score(y[hold], bst.predict(dho))
    card, auc_card, k = scorecard(feats, X[~hold], y[~hold], X[hold], y[hold])
    with open(os.path.join(a.out, "credit_scorecard.json"), "w") as f:
        json.dump(card, f, indent=1)
    metrics = {"rows": int(len(y)), "holdout_rows": int(hold.sum()),
               "bad_rate": float(y.mean()), "auc_gbdt_holdout": round(float(auc_gbdt), 4),
               "auc_scorecard_holdout": round(float(auc_card), 4), "scorecard_features": k}
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
