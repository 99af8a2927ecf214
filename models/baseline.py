#!/usr/bin/python3
"""Monitoring baseline of the demo GBDT model, through `streamml profile`.

    /usr/bin/python3 models/baseline.py [--streamml build/streamml]
        [--events models/demo_events.jsonl] [--out models]        (part of make models)

The feature rows come from `streamml featurize` on the demo events and are split
with train.py's own user-level holdout: the feature and score distributions are
profiled on the training users (what the model was fitted on), the AUC on the
holdout users (the training rows' AUC would be optimistic). Nothing is computed
here: `streamml profile` does it with the worker's own code.
-> models/credit_gbdt.baseline.json
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile

from train import featurize, holdout_mask


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streamml", default="build/streamml")
    ap.add_argument("--events", default="models/demo_events.jsonl")
    ap.add_argument("--out", default="models")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        header, rows, _, _, _, users = featurize(a.streamml, a.events,
                                                 os.path.join(tmp, "features.csv"))
        hold = holdout_mask(users)
        train_csv, hold_csv = os.path.join(tmp, "train.csv"), os.path.join(tmp, "holdout.csv")
        write_csv(train_csv, header, [r for r, h in zip(rows, hold) if not h])
        write_csv(hold_csv, header, [r for r, h in zip(rows, hold) if h])
        subprocess.run([a.streamml, "profile", "--model",
                        os.path.join(a.out, "credit_gbdt.json"), "--input", train_csv,
                        "--auc-input", hold_csv, "--output",
                        os.path.join(a.out, "credit_gbdt.baseline.json")], check=True)


if __name__ == "__main__":
    sys.exit(main())
