#!/usr/bin/python3
"""xgboost's side of bench/treeshap.sh: one thread, the 500-tree depth-6
model; exact pred_contribs and approximate (Saabas) contributions, us per
row, median of 5 runs. Writes X.npy (rows to explain) and xgboost's exact
values for the first rows, for bench_treeshap to compare against.
usage: treeshap_xgb.py MODEL.json OUTDIR N_EXACT N_APPROX"""
import sys
import time

import numpy as np
import xgboost as xgb

model, out, n_exact, n_approx = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
b = xgb.Booster(model_file=model)
b.set_param({"nthread": 1})
nf = b.num_features()
rng = np.random.RandomState(1)
X = rng.normal(size=(max(n_exact, n_approx), nf)).astype(np.float32)
X[rng.rand(*X.shape) < 0.2] = np.nan
np.save(f"{out}/X.npy", X)


def timed(rows, **kw):
    d = xgb.DMatrix(X[:rows], missing=np.nan, feature_names=b.feature_names)
    ts = []
    for _ in range(5):
        t = time.process_time()
        v = b.predict(d, **kw)
        ts.append((time.process_time() - t) / rows * 1e6)
    return sorted(ts), v


ex, vals = timed(n_exact, pred_contribs=True)
np.save(f"{out}/xgb_contribs.npy", vals.astype(np.float32))
ap, _ = timed(n_approx, pred_contribs=True, approx_contribs=True)
print(f"| xgboost {xgb.__version__} exact pred_contribs, {n_exact} rows batched, 1 thread "
      f"| {ex[2]:.1f} | {ex[0]:.1f} | {ex[4]:.1f} |")
print(f"| xgboost {xgb.__version__} approx_contribs (Saabas, not Shapley), {n_approx} rows, "
      f"1 thread | {ap[2]:.1f} | {ap[0]:.1f} | {ap[4]:.1f} |")
