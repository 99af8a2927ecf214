#!/usr/bin/python3
"""A 500-tree, depth-6 binary:logistic model over the txn-v1 features, for
bench_stages (scoring cost does not depend on what the trees learned)."""
import subprocess, sys
import numpy as np
import xgboost as xgb

streamml, out = sys.argv[1], sys.argv[2]
names = subprocess.run([streamml, "featurize", "-i", "tests/fixtures/featurize_events.jsonl",
                        "--skip-invalid"], capture_output=True, text=True).stdout.splitlines()[0]
names = names.split(",")[3:-1]
rng = np.random.RandomState(0)
X = rng.normal(size=(20000, len(names))).astype(np.float32)
X[rng.rand(*X.shape) < 0.2] = np.nan
y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2]) > 0).astype(int)
d = xgb.DMatrix(X, label=y, missing=np.nan, feature_names=names)
b = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.05, "seed": 0}, d, 500)
b.save_model(out)
import time
t = time.perf_counter(); b.inplace_predict(X, missing=np.nan); tb = time.perf_counter() - t
t = time.perf_counter()
for i in range(2000):
    b.inplace_predict(X[i:i + 1], missing=np.nan)
tr = time.perf_counter() - t
print(f"| xgboost {xgb.__version__} inplace_predict, batched | {tb / len(X) * 1e9:9.0f} | | |")
print(f"| xgboost {xgb.__version__} inplace_predict, per row | {tr / 2000 * 1e9:9.0f} | | |")
