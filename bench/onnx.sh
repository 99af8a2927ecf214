#!/bin/bash
# make bench-onnx: EfficientNet-B0 at 224 px, streamml vs PyTorch on this
# machine, same model weights, same thread count (1 and 2), batch 1 and 8.
# ROUNDS rounds (default 3); in each, every configuration runs streamml then
# PyTorch back to back so that both see the same machine load. A cell is the
# median over rounds of each round's median ms/batch. Figures, never
# pass/fail. Prints a markdown table.
set -euo pipefail
BUILD=${BUILD:-build}
PY=/usr/bin/python3
MODEL=${MODEL:-efficientnet_b0}
ROUNDS=${ROUNDS:-3}
ONNX="$BUILD/onnx-models/$MODEL.onnx"
[ -f "$ONNX" ] || $PY tools/onnx_parity.py export --out "$BUILD/onnx-models" >/dev/null
tmp=$(mktemp -d /tmp/streamml-bench-onnx-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

for round in $(seq "$ROUNDS"); do
    for batch in 1 8; do
        reps=$([ "$batch" = 1 ] && echo 15 || echo 4)
        for threads in 1 2; do
            "$BUILD/bench/bench_onnx" "$ONNX" "$batch" "$threads" "$reps" >>"$tmp/s_${batch}_$threads"
            OMP_NUM_THREADS=$threads $PY bench/onnx_torch.py "$MODEL" "$batch" "$threads" "$reps" \
                2>/dev/null >>"$tmp/t_${batch}_$threads"
        done
    done
done

med() { awk '{print $4}' "$1" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$MODEL, 224x224, $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); torch $($PY -c 'import torch; print(torch.__version__)'), $(basename "$(readlink -f /usr/lib/x86_64-linux-gnu/libopenblas.so.0)"); median of $ROUNDS rounds"
echo
echo "| batch | threads | streamml ms/image | streamml images/s | PyTorch ms/image | PyTorch images/s | streamml speed / PyTorch |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for batch in 1 8; do
    for threads in 1 2; do
        s=$(med "$tmp/s_${batch}_$threads")
        t=$(med "$tmp/t_${batch}_$threads")
        $PY -c "b=$batch; s=$s/b; t=$t/b; print(f'| {b} | $threads | {s:.1f} | {1000/s:.1f} | {t:.1f} | {1000/t:.1f} | {t/s:.2f}x |')"
    done
done
echo
"$BUILD/bench/bench_gru_step" tests/fixtures/onnx/gru_session.onnx
