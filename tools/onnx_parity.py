#!/usr/bin/python3
"""Large ONNX models: export torchvision's efficientnet_b0, mobilenet_v3_small
and resnet18 (random init: no pretrained weights are downloaded) and check
streamml's runtime against torch on the same inputs.

    tools/onnx_parity.py export --out build/onnx-models      (make onnx-models)
    tools/onnx_parity.py check --dir build/onnx-models --streamml build/streamml
                                                          (make onnx-parity)

check prints one line per model: max abs error, output scale, their ratio
(must be <= 1e-4), and exits non-zero when a model fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchvision

MODELS = ("efficientnet_b0", "mobilenet_v3_small", "resnet18")
OPSET = 17
TOL = 1e-4


def build(name):
    """Random init, with BN statistics and the classifier scaled so that the
    logits are O(1): with torchvision's init alone EfficientNet's logits are
    ~1e-20 and any comparison would pass."""
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.8, 1.6)
                mod.bias.uniform_(-0.1, 0.1)
            if isinstance(mod, torch.nn.Linear):
                mod.weight.normal_(0, 1.0 / mod.in_features ** 0.5)
    return m


def export(out):
    os.makedirs(out, exist_ok=True)
    for name in MODELS:
        path = os.path.join(out, name + ".onnx")
        torch.onnx.export(build(name), torch.randn(1, 3, 224, 224), path, opset_version=OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")


def check(d, streamml, batch):
    failed = 0
    torch.set_num_threads(1)
    print(f"{'model':22} {'batch':>5} {'max abs err':>12} {'scale':>10} {'rel err':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            torch.manual_seed(1)
            x = torch.randn(batch, 3, 224, 224)
            with torch.no_grad():
                want = build(name)(x).numpy()
            xin, yout = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
            np.save(xin, x.numpy())
            subprocess.run([streamml, "predict", "--model", os.path.join(d, name + ".onnx"),
                            "--input", xin, "--output", yout], check=True)
            got = np.load(yout)
            err = float(np.abs(got - want).max())
            scale = float(np.abs(want).max())
            ok = got.shape == want.shape and scale > 1e-3 and err / scale <= TOL
            failed += not ok
            print(f"{name:22} {batch:5d} {err:12.3g} {scale:10.3g} {err / scale:10.3g}"
                  f"{'' if ok else '  FAIL'}")
    return failed


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", default="build/onnx-models")
    c = sub.add_parser("check")
    c.add_argument("--dir", default="build/onnx-models")
    c.add_argument("--streamml", default="build/streamml")
    c.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "export":
        export(a.out)
        return 0
    return 1 if check(a.dir, a.streamml, a.batch) else 0


if __name__ == "__main__":
    sys.exit(main())
