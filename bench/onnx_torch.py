#!/usr/bin/python3
"""PyTorch side of bench/onnx.sh: median ms per forward pass of the same
model (tools/onnx_parity.py build(): torchvision, random init, seed 0) in
eval mode under no_grad, at a batch size and thread count.

    bench/onnx_torch.py MODEL BATCH THREADS [REPS]
Prints: torch batch threads ms/batch ms/image images/s min max"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from onnx_parity import build  # noqa: E402


def main():
    name, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    torch.set_num_threads(threads)
    model = build(name)
    g = torch.Generator().manual_seed(42)
    x = torch.rand(batch, 3, 224, 224, generator=g) * 2 - 1
    ms = []
    with torch.no_grad():
        for r in range(reps + 2):  # two warm-up runs, as bench_onnx
            t0 = time.perf_counter()
            model(x)
            if r >= 2:
                ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    med = ms[reps // 2]
    print(f"torch {batch} {threads} {med:.2f} {med / batch:.2f} {1000 * batch / med:.1f} "
          f"{ms[0]:.2f} {ms[-1]:.2f}")


if __name__ == "__main__":
    main()
