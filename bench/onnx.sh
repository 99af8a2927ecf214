#!/bin/bash
# make bench-onnx: EfficientNet-B0 at 224 px, streamml vs PyTorch on this
# machine, same model weights, same thread count (1 and 2), batch 1 and 8.
# Runs alternate (streamml, torch, streamml, torch...) so that both see the
# same machine load. Figures, never pass/fail. Prints a markdown table.
set -euo pipefail
BUILD=${BUILD:-build}
PY=/usr/bin/python3
MODEL=${MODEL:-efficientnet_b0}
ONNX="$BUILD/onnx-models/$MODEL.onnx"
[ -f "$ONNX" ] || $PY tools/onnx_parity.py export --out "$BUILD/onnx-models" >/dev/null

echo "$MODEL, 224x224, $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; torch $($PY -c 'import torch; print(torch.__version__)'), OpenBLAS $(basename "$(readlink -f /usr/lib/x86_64-linux-gnu/libopenblas.so.0)")"
echo
echo "| batch | threads | streamml ms/image | streamml images/s | PyTorch ms/image | PyTorch images/s | streamml / PyTorch speed |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for batch in 1 8; do
    reps=$([ "$batch" = 1 ] && echo 20 || echo 5)
    for threads in 1 2; do
        s=$("$BUILD/bench/bench_onnx" "$ONNX" "$batch" "$threads" "$reps")
        t=$(OMP_NUM_THREADS=$threads $PY bench/onnx_torch.py "$MODEL" "$batch" "$threads" "$reps" 2>/dev/null)
        read -r _ _ _ _ sms sips _ _ <<<"$s"
        read -r _ _ _ _ tms tips _ _ <<<"$t"
        ratio=$($PY -c "print(f'{$tms / $sms:.2f}x')")
        echo "| $batch | $threads | $sms | $sips | $tms | $tips | $ratio |"
    done
done
