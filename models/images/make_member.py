#!/usr/bin/python3
"""A second ensemble member for the demo, made from the demo CNN in seconds.

Retraining a member takes minutes (train.py --seed N); for the demo and the
tests a member only has to be a valid, different fundus model: this copies
fundus_cnn.onnx with every float weight perturbed by seeded Gaussian noise
(--noise x each tensor's standard deviation) and, since the network is
convolutional up to a global average pool, a different input geometry
(--size: the input shape and the metadata input_size; the feature map grows
with it). Usage:

    python3 models/images/make_member.py [--src models/images/fundus_cnn.onnx]
        [--out models/images/fundus_cnn_b.onnx] [--size 128] [--noise 0.1] [--seed 1]
"""
import argparse

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="models/images/fundus_cnn.onnx")
    ap.add_argument("--out", default="models/images/fundus_cnn_b.onnx")
    ap.add_argument("--size", type=int, default=128, help="input side (pixels)")
    ap.add_argument("--noise", type=float, default=0.1, help="noise / weight std")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    m = onnx.load(a.src)
    rng = np.random.default_rng(a.seed)
    for i, t in enumerate(m.graph.initializer):
        w = numpy_helper.to_array(t)
        if w.dtype != np.float32 or w.size < 2:
            continue
        w = w + rng.normal(0, a.noise * float(w.std()), w.shape).astype(np.float32)
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(w.astype(np.float32), t.name))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = a.size
    dims[3].dim_value = a.size
    for o in m.graph.output[1:]:  # the feature map: leave h, w to the runtime
        for d in o.type.tensor_type.shape.dim[2:]:
            d.Clear()
            d.dim_param = "f"
    meta = {p.key: p for p in m.metadata_props}
    meta["input_size"].value = str(a.size)
    meta["model_name"].value = "fundus-cnn-b"
    meta["model_version"].value = "1b"
    onnx.checker.check_model(m)
    onnx.save(m, a.out)
    print(f"{a.out}: {a.src} at {a.size}x{a.size}, weights + N(0, ({a.noise} std)^2), seed {a.seed}")


if __name__ == "__main__":
    main()
