#!/bin/bash
# Exact TreeSHAP per explained row (issue 18): streamml next to xgboost's
# exact pred_contribs and its approximate (Saabas) contributions, one run,
# same 500-tree depth-6 model (bench/make_model.py), same rows (20% NaN),
# one thread each, CPU time, medians of 5. Knobs: SHAP_N (streamml and
# approx rows, 2000), SHAP_EXACT_N (xgboost exact rows, 200: ~3 ms each),
# BEFORE (a bench_treeshap built from an older commit: it and this one run
# alternately, 3 times each, on the same rows, and the ratio is printed).
set -euo pipefail
BUILD=${BUILD:-build}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/streamml-shap-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model="$BUILD/bench/xgb500.json"
[ -f "$model" ] || $PY bench/make_model.py "$BUILD/streamml" "$model" >/dev/null
echo "Exact TreeSHAP, us per explained row (500 trees depth 6, 20% missing), load average $(cut -d' ' -f1-3 /proc/loadavg):"
echo
echo "| explainer | median us/row | min | max |"
echo "|---|---:|---:|---:|"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $PY bench/treeshap_xgb.py "$model" "$tmp" \
    "${SHAP_EXACT_N:-200}" "${SHAP_N:-2000}"
"$BUILD/bench/bench_treeshap" "$model" "$tmp/X.npy" "$tmp/xgb_contribs.npy"
if [ -n "${BEFORE:-}" ]; then
    for r in 1 2 3; do
        for b in before after; do
            bin=$BUILD/bench/bench_treeshap
            [ $b = before ] && bin=$BEFORE
            "$bin" "$model" "$tmp/X.npy" "$tmp/xgb_contribs.npy" |
                awk -F'|' '/one row at a time/ {print $3 + 0}' >>"$tmp/$b"
        done
    done
    med() { sort -n "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
    echo
    echo "before/after, alternating, medians of 3 medians: $(med "$tmp/before") / $(med "$tmp/after")" \
        "us/row = $(awk -v a="$(med "$tmp/before")" -v b="$(med "$tmp/after")" 'BEGIN {printf "%.3f", a / b}')"
fi
echo "(load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
