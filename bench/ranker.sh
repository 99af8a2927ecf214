#!/bin/bash
# The second-stage ranker's cost per click on the 100,000-item bench model
# (make models-clickstream-bench, random init, hidden 128) with its ranker
# (make models-clickstream-bench-ranker: 273 inputs, 32 hidden), pools of
# 2,000 candidates from the sources below over the bench catalogue, in
# process (bench_ranker: no ranker, then re-scoring 100, 500 and 2,000
# candidates per click, interleaved round by round). Prints markdown with
# the load average before and after. Figures, never pass/fail.
# Environment: SOURCES (default: pools of 2,000), CLICKS per round (4000).
set -euo pipefail
BUILD=${BUILD:-build}
D="$BUILD/clickstream-bench"
SOURCES=${SOURCES:-gru:1000,category:400,popular:300,region:100,cart:50,new:100,content:50}
[ -s "$D/ranker.onnx" ] || make -s models-clickstream-bench-ranker BUILD="$BUILD" >/dev/null 2>&1
echo "### Clickstream ranker, 100,000 items (bench_ranker, pools of 2,000)"
echo
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg);" \
    "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"
echo
"$BUILD/bench/bench_ranker" "$D/gru4rec.onnx" "$D/catalog.jsonl" "$D/ranker.onnx" "$SOURCES" \
    "${CLICKS:-4000}" 2>/dev/null
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
