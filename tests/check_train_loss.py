#!/usr/bin/python3
"""The images training recipe (models/images/train.py) computes what it says.

- ordinal_loss on a small batch equals a direct computation: log-softmax by
  hand, the class-weighted mean of -log p_y (sum w_y * CE / sum w_y), plus
  0.5 x the mean of |sum_k k p_k - y|; and its gradient is finite;
- class_weights are sqrt(N / (K n_c)) counted by hand;
- draw_grades gives about 70% grade 0;
- augment keeps shapes and the [0, 1] range, and with the identity draw
  (no flip, no rotation or shift, jitter factors 1) returns the input.

Run from the repository root: /usr/bin/python3 tests/check_train_loss.py
Exit status 0 when every check holds; one line per failure otherwise.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models",
                                "images"))
import train  # noqa: E402

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def direct_loss(logits, y, w):
    num = den = ordinal = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        p = [math.exp(v - lse) for v in row]
        num += w[label] * (lse - row[label])
        den += w[label]
        ordinal += abs(sum(k * pk for k, pk in enumerate(p)) - label)
    return num / den + 0.5 * ordinal / len(y)


def main():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, train.NCLASS, generator=gen, dtype=torch.float64) * 2
    y = torch.tensor([0, 0, 0, 2, 4, 1])
    counts = [3, 1, 1, 0, 1]
    w_direct = [math.sqrt(6 / (5 * max(c, 1))) for c in counts]
    w = train.class_weights(y.numpy())
    check(np.allclose(w.numpy(), w_direct, rtol=1e-6), f"class weights {w.tolist()} "
          f"= sqrt(N / (K n_c)) {w_direct}")
    logits.requires_grad_(True)
    got = train.ordinal_loss(logits, y, w.double())
    want = direct_loss(logits.detach(), y, w.tolist())  # weights checked above
    check(abs(float(got) - want) < 1e-9, f"ordinal loss {float(got):.12f} = direct {want:.12f}")
    got.backward()
    check(bool(torch.isfinite(logits.grad).all()), "gradient finite")
    # the ordinal term: a confident 4 for a 0 costs 0.5 * 4 more than a confident 0
    far = torch.tensor([[0.0, 0, 0, 0, 30]], dtype=torch.float64)
    near = torch.tensor([[30.0, 0, 0, 0, 0]], dtype=torch.float64)
    ones = torch.ones(train.NCLASS, dtype=torch.float64)
    d = float(train.ordinal_loss(far, torch.tensor([0]), ones)) - 30.0
    check(abs(d - 2.0) < 1e-6, f"ordinal term of a confident 4 for a 0: {d:.6f} = 0.5 * 4")
    g = train.draw_grades(np.random.default_rng(1), 20000)
    share0 = float((g == 0).mean())
    check(abs(share0 - 0.70) < 0.02, f"grade 0 share {share0:.3f} ~ 0.70")
    x = torch.rand(4, 3, 32, 32, generator=gen)
    a = train.augment(x, torch.Generator().manual_seed(5))
    check(a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1,
          "augment keeps shape and range")
    check(float((a - x).abs().max()) > 0.05, "augment changes the images")

    ident = torch.Generator().manual_seed(0)
    orig_rand = torch.rand
    try:
        # every draw 0.5: no flip, no rotation or shift, jitter factors 1
        torch.rand = lambda *s, generator=None: torch.full(s, 0.5)
        b = train.augment(x, ident)
    finally:
        torch.rand = orig_rand
    check(float((b - x).abs().max()) < 1e-5, "augment with the identity draw returns its input")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
