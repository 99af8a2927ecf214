#!/usr/bin/python3
"""Demo model of the images worker: synthetic fundus-like images -> grade 0..4.

Generates images (dark background, an orange retina disc, a bright optic
disc, vessels, and lesions whose count and size follow the grade), trains a
small EfficientNet-style CNN (MBConv blocks, SiLU/HardSwish, squeeze-excitation)
for --epochs (the shipped model: 10) on the CPU, and exports ONNX (opset 13) with two
outputs: `logits` [N,5] and `features` [N,C,7,7] (the last conv feature map,
for class-activation maps). metadata_props carry cam_weight (the final Linear
weight initializer), input_size, mean, std, model_name, model_version and
referable_threshold (P(grade >= 2) cut-off with held-out sensitivity >= 0.95).

Training follows the seed's recipe: an imbalanced set (CLASS_SHARE, about
70% grade 0), inverse-frequency class weights with square-root dampening,
the ordinal loss (weighted cross entropy + 0.5 * |E[grade] - y|), and
augmentations (flips, rotation 15 degrees, colour jitter 0.2, translation
0.1). Half of the held-out images choose the referable threshold, the other
half measure QWK, sensitivity and specificity (metrics.json; --compare
measures another model, e.g. the previous one, on the same images).
tests/check_train_loss.py checks the loss against a direct computation.

Deterministic (fixed seeds). Writes into --out (default models/images):
  fundus_cnn.onnx, metrics.json (held-out QWK), samples/*.png|jpg (demo
  images), samples/events.jsonl (image events for the demo), and
  ../../tests/fixtures/images_model_ref.json (torch probabilities of the
  samples, for the C parity test).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from sklearn.metrics import cohen_kappa_score

RAW = 224          # generated image size
INPUT = 112        # model input size (stride 16 -> 7x7 feature map)
NCLASS = 5
MODEL_NAME = "fundus-cnn"
MODEL_VERSION = "2"
SENSITIVITY = 0.95  # target sensitivity of the referable flag on held-out images
# The seed's recipe: screening data are imbalanced ("~70% level 0"); class
# weights are the inverse frequency, dampened by a square root; the loss adds
# an ordinal term, 0.5 * |E[grade] - y|, so that confusing 0 with 4 costs
# more than 0 with 1; augmentations: flips, rotation 15 degrees, colour
# jitter 0.2, translation 0.1.
CLASS_SHARE = (0.70, 0.08, 0.12, 0.05, 0.05)
ORDINAL_WEIGHT = 0.5
ROTATION_DEG = 15.0
TRANSLATE = 0.1
JITTER = 0.2


# ---- synthetic fundus images ----

# (microaneurysm/haemorrhage dots, dot radius range, exudates, blotches)
GRADE_LESIONS = {
    0: (0, (1, 2), 0, 0),
    1: (3, (2, 3), 0, 0),
    2: (9, (2, 4), 4, 0),
    3: (18, (3, 5), 8, 2),
    4: (30, (3, 6), 12, 5),
}


def fundus(rng, grade, size=RAW):
    """One RGB fundus-like image whose visible lesions follow the grade."""
    img = Image.new("RGB", (size, size), (0, 0, 0))
    d = ImageDraw.Draw(img)
    c = size / 2 + rng.normal(0, size * 0.02, 2)
    r = size * rng.uniform(0.42, 0.47)
    base = np.array([200, 90, 40]) * rng.uniform(0.8, 1.1)
    d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=tuple(int(v) for v in base))
    # optic disc, left or right of the centre
    side = rng.choice([-1, 1])
    od = c + np.array([side * r * 0.45, rng.normal(0, r * 0.05)])
    odr = r * rng.uniform(0.12, 0.16)
    d.ellipse([od[0] - odr, od[1] - odr, od[0] + odr, od[1] + odr], fill=(250, 220, 150))
    # vessels: random walks out of the optic disc
    for _ in range(rng.integers(5, 9)):
        p = od.copy()
        ang = rng.uniform(0, 2 * math.pi)
        w = int(rng.integers(2, 4))
        for _ in range(14):
            ang += rng.normal(0, 0.25)
            q = p + r * 0.09 * np.array([math.cos(ang), math.sin(ang)])
            d.line([tuple(p), tuple(q)], fill=(120, 30, 20), width=w)
            p = q
    ndots, (rmin, rmax), nexu, nblot = GRADE_LESIONS[grade]
    jitter = lambda n: max(0, n + int(rng.integers(-n // 4 - 1, n // 4 + 2))) if n else 0

    def spot():
        a, rr = rng.uniform(0, 2 * math.pi), r * math.sqrt(rng.uniform(0, 0.8))
        return c + rr * np.array([math.cos(a), math.sin(a)])

    for _ in range(jitter(ndots)):
        p, s = spot(), rng.uniform(rmin, rmax)
        d.ellipse([p[0] - s, p[1] - s, p[0] + s, p[1] + s], fill=(90, 10, 10))
    for _ in range(jitter(nexu)):
        p, s = spot(), rng.uniform(2, 4)
        d.ellipse([p[0] - s, p[1] - s, p[0] + s, p[1] + s], fill=(245, 235, 90))
    for _ in range(nblot):
        p, s = spot(), rng.uniform(7, 12)
        d.ellipse([p[0] - s, p[1] - s * 0.7, p[0] + s, p[1] + s * 0.7], fill=(110, 15, 15))
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# ---- the network ----

class SE(nn.Module):
    def __init__(self, ch, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(ch, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, ch, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(s))))
        return x * s


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, k, stride, act):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act()]
        layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), act(), SE(mid, max(4, cin // 4)),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class FundusNet(nn.Module):
    """EfficientNet-style: stem, MBConv stages, 1x1 head conv, pool, Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU(),   # 56
            MBConv(16, 16, 1, 3, 1, nn.SiLU),
            MBConv(16, 24, 4, 3, 2, nn.SiLU),                                       # 28
            MBConv(24, 24, 4, 3, 1, nn.SiLU),
            MBConv(24, 40, 4, 5, 2, nn.Hardswish),                                  # 14
            MBConv(40, 64, 4, 3, 2, nn.Hardswish),                                  # 7
            MBConv(64, 64, 4, 3, 1, nn.Hardswish),
            nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.SiLU())
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(128, NCLASS)

    def forward(self, x):
        f = self.features(x)
        p = torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)
        return self.classifier(self.dropout(p)), f


# ---- data ----

def to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def preprocess(imgs, mean, std):
    """What the worker does: antialiased bilinear resize, then normalize."""
    import torchvision.transforms as T
    tf = T.Compose([T.Resize((INPUT, INPUT), antialias=True), T.Normalize(mean, std)])
    return torch.stack([tf(to_tensor(i)) for i in imgs])


def draw_grades(rng, n):
    """Grades in screening proportions (CLASS_SHARE: about 70% grade 0)."""
    return rng.choice(NCLASS, size=n, p=CLASS_SHARE)


def make_set(rng, n):
    grades = draw_grades(rng, n)
    return [fundus(rng, int(g)) for g in grades], grades


# ---- the recipe: class weights, ordinal loss, augmentations ----

def class_weights(y, ncls=NCLASS):
    """Inverse class frequency with square-root dampening:
    w_c = sqrt(N / (K * n_c)); a class absent from y gets the weight of a
    class seen once."""
    counts = np.bincount(np.asarray(y), minlength=ncls).astype(np.float64)
    return torch.tensor(np.sqrt(len(y) / (ncls * np.maximum(counts, 1))), dtype=torch.float32)


def ordinal_loss(logits, y, weights):
    """Class-weighted cross entropy (torch's weighted mean: sum w_y * CE /
    sum w_y) + ORDINAL_WEIGHT * mean |E[grade] - y|, E[grade] = sum_k k p_k."""
    ce = F.cross_entropy(logits, y, weight=weights)
    grades = torch.arange(logits.shape[1], dtype=logits.dtype)
    expected = (torch.softmax(logits, 1) * grades).sum(1)
    return ce + ORDINAL_WEIGHT * (expected - y.to(logits.dtype)).abs().mean()


def augment(x, gen):
    """Per image: horizontal and vertical flips (p 0.5 each), rotation by
    U(-15, 15) degrees and translation by U(-0.1, 0.1) of the side (one
    affine resampling, black outside as the fundus background), then
    brightness, contrast and saturation factors in U(0.8, 1.2). x: [N,3,H,W]
    in [0, 1], before normalisation."""
    n = x.shape[0]

    def u(*shape):
        return torch.rand(*shape, generator=gen)

    def col(v):
        return v[:, None, None, None]

    x = torch.where(col(u(n) < 0.5), x.flip(3), x)
    x = torch.where(col(u(n) < 0.5), x.flip(2), x)
    ang = (u(n) * 2 - 1) * math.radians(ROTATION_DEG)
    t = (u(n, 2) * 2 - 1) * TRANSLATE * 2  # affine_grid's coordinates span 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1),
                         torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")

    def factor():
        return col(1 + (u(n) * 2 - 1) * JITTER)

    def gray(v):
        return (0.299 * v[:, 0] + 0.587 * v[:, 1] + 0.114 * v[:, 2])[:, None]

    x = (x * factor()).clamp(0, 1)                                  # brightness
    m = gray(x).mean((2, 3), keepdim=True)
    x = (m + factor() * (x - m)).clamp(0, 1)                        # contrast
    g = gray(x)
    return (g + factor() * (x - g)).clamp(0, 1)                     # saturation


def train(model, x, y, seconds, mean, std, epochs=0):
    """x: resized images in [0, 1] (augmented, then normalised per batch).
    Whole epochs until `seconds` have passed, or exactly `epochs` if > 0
    (a loaded machine may fit a single epoch in the time budget)."""
    # channels-last: oneDNN's convolutions (forward and backward) run about
    # twice as fast on this layout for the depthwise/1x1 blocks
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(1)
    weights = class_weights(y.numpy())
    mean_t = torch.tensor(mean)[None, :, None, None]
    std_t = torch.tensor(std)[None, :, None, None]
    print("class weights " + " ".join(f"{float(w):.3f}" for w in weights), flush=True)
    t0, epoch = time.time(), 0
    while (epoch < epochs) if epochs > 0 else (time.time() - t0 < seconds):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        tot = 0.0
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = ((augment(x[idx], gen) - mean_t) / std_t).contiguous(
                memory_format=torch.channels_last)
            logits, _ = model(xb)
            loss = ordinal_loss(logits, y[idx], weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss) * len(idx)
        epoch += 1
        print(f"epoch {epoch}: loss {tot / len(x):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.to(memory_format=torch.contiguous_format)
    return epoch


def referable_p(model, x):
    """P(grade >= 2) of each image (the referable probability)."""
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x)[0], 1)[:, 2:].sum(1).numpy()


def referable_threshold(p, y, target):
    """Largest threshold on P(grade >= 2) whose sensitivity for referable
    cases (grade >= 2) on these held-out images is at least target:
    screening favours sensitivity over specificity."""
    ref = y >= 2
    best = 0.0
    for t in np.unique(np.concatenate([[0.0], p])):
        if (p[ref] > t).mean() >= target:
            best = max(best, float(t))
    return float(np.floor(best * 1e4) / 1e4)  # rounded down: sensitivity kept


def screening_metrics(probs, y, thr):
    """QWK and accuracy of the argmax grade; sensitivity and specificity of
    the referable flag P(grade >= 2) > thr."""
    pred = probs.argmax(1)
    p = probs[:, 2:].sum(1)
    ref = y >= 2
    return {"qwk": round(float(cohen_kappa_score(y, pred, weights="quadratic")), 4),
            "accuracy": round(float((pred == y).mean()), 4),
            "referable_sensitivity": round(float((p[ref] > thr).mean()), 4),
            "referable_specificity": round(float((p[~ref] <= thr).mean()), 4)}


def onnx_probs(streamml, path, imgs):
    """Probabilities of an ONNX model on imgs, run by our runtime
    (`streamml predict`), with the model's own input size, mean and std."""
    import subprocess
    import tempfile
    import onnx
    import torchvision.transforms as T
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    size = int(meta.get("input_size", INPUT))
    mean = [float(v) for v in meta["mean"].split(",")]
    std = [float(v) for v in meta["std"].split(",")]
    tf = T.Compose([T.Resize((size, size), antialias=True), T.Normalize(mean, std)])
    x = torch.stack([tf(to_tensor(i)) for i in imgs]).numpy()
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x.npy"), x)
        subprocess.run([streamml, "predict", "--model", path, "--input", os.path.join(d, "x.npy"),
                        "--output", "logits=" + os.path.join(d, "y.npy")], check=True,
                       stdout=subprocess.DEVNULL)
        logits = torch.from_numpy(np.load(os.path.join(d, "y.npy")))
    return torch.softmax(logits, 1).numpy(), float(meta.get("referable_threshold", "0.5"))


def export(model, path, mean, std, threshold):
    import onnx
    model.eval()
    dummy = torch.zeros(1, 3, INPUT, INPUT)
    torch.onnx.export(model, dummy, path, opset_version=13, input_names=["image"],
                      output_names=["logits", "features"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}, "features": {0: "N"}},
                      do_constant_folding=True)
    m = onnx.load(path)
    gemm = [n for n in m.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    weight = gemm.input[1]
    bias = gemm.input[2] if len(gemm.input) > 2 else ""
    inits = {i.name for i in m.graph.initializer}
    assert weight in inits, weight
    trans = [a.i for a in gemm.attribute if a.name == "transB"]
    meta = {"cam_weight": weight, "cam_bias": bias,
            "cam_weight_layout": "out_in" if trans and trans[0] else "in_out",
            "input_size": str(INPUT), "mean": ",".join(f"{v:.4f}" for v in mean),
            "std": ",".join(f"{v:.4f}" for v in std), "model_name": MODEL_NAME,
            "model_version": MODEL_VERSION, "referable_threshold": f"{threshold:.4f}",
            "grades": "0 none,1 mild,2 moderate,3 severe,4 proliferative"}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/images")
    ap.add_argument("--fixtures", default="tests/fixtures")
    ap.add_argument("--name", default="fundus_cnn",
                    help="model file stem: NAME.onnx and its metrics (metrics.json for "
                         "fundus_cnn, NAME.metrics.json otherwise)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed (ensemble members differ)")
    ap.add_argument("--train", type=int, default=2500)
    ap.add_argument("--test", type=int, default=600,
                    help="held-out images: half choose the referable threshold, half measure")
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--epochs", type=int, default=0,
                    help="train exactly this many epochs instead of for --seconds")
    ap.add_argument("--compare", metavar="ONNX",
                    help="also measure this (current) model on the same held-out images")
    ap.add_argument("--streamml", default="build/streamml", help="binary running --compare")
    ap.add_argument("--no-samples", action="store_true",
                    help="skip the demo samples and the parity fixture (ensemble members)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared, loaded machine OpenMP's spinning "
                         "threads made a batch 4-8x slower with 2)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(7)
    os.makedirs(os.path.join(a.out, "samples"), exist_ok=True)

    t0 = time.time()
    tr_img, tr_y = make_set(rng, a.train)
    ho_img, ho_y = make_set(rng, a.test)
    nval = a.test // 2
    va_img, va_y, te_img, te_y = ho_img[:nval], ho_y[:nval], ho_img[nval:], ho_y[nval:]
    px = np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in tr_img[:500]])
    mean = [float(round(v, 4)) for v in px.mean(axis=(0, 1, 2))]
    std = [float(round(v, 4)) for v in px.std(axis=(0, 1, 2))]
    xtr = preprocess(tr_img, [0.0] * 3, [1.0] * 3)  # augmented before normalisation
    xva, xte = preprocess(va_img, mean, std), preprocess(te_img, mean, std)
    share = np.bincount(tr_y, minlength=NCLASS) / len(tr_y)
    print(f"data: {a.train}+{a.test} images in {time.time() - t0:.0f} s; grade shares "
          f"{' '.join(f'{v:.3f}' for v in share)}; mean {mean} std {std}")

    model = FundusNet()
    epochs = train(model, xtr, torch.from_numpy(tr_y).long(), a.seconds, mean, std, a.epochs)
    thr = referable_threshold(referable_p(model, xva), va_y, SENSITIVITY)
    with torch.no_grad():
        probs = torch.softmax(model(xte)[0], 1).numpy()
    m = screening_metrics(probs, te_y, thr)
    print(f"held-out: QWK {m['qwk']:.4f}, accuracy {m['accuracy']:.4f}; referable threshold "
          f"{thr:.4f} (sensitivity {m['referable_sensitivity']:.3f}, specificity "
          f"{m['referable_specificity']:.3f})")
    metrics = {"model": MODEL_NAME, "version": MODEL_VERSION, "file": a.name + ".onnx",
               "seed": a.seed, "recipe": {
                   "class_share": list(CLASS_SHARE), "class_weights": "sqrt(N / (K n_c))",
                   "loss": f"weighted cross entropy + {ORDINAL_WEIGHT} |E[grade] - y|",
                   "augment": f"flips, rotation {ROTATION_DEG:g}, colour jitter {JITTER:g}, "
                              f"translation {TRANSLATE:g}"},
               "threshold_images": nval, "held_out_images": len(te_y),
               "held_out_referable": int((te_y >= 2).sum()), **m,
               "referable_threshold": round(thr, 4), "target_sensitivity": SENSITIVITY,
               "epochs": epochs, "train_images": a.train, "input_size": INPUT}
    if a.compare:
        cprobs, cthr = onnx_probs(a.streamml, a.compare, te_img)
        metrics["compared"] = {"file": os.path.basename(a.compare),
                               "referable_threshold": cthr,
                               **screening_metrics(cprobs, te_y, cthr)}
        print(f"compared {a.compare}: {metrics['compared']}")

    onnx_path = os.path.join(a.out, a.name + ".onnx")
    meta = export(model, onnx_path, mean, std, thr)
    mpath = "metrics.json" if a.name == "fundus_cnn" else a.name + ".metrics.json"
    with open(os.path.join(a.out, mpath), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    if a.no_samples:
        print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes) in "
              f"{time.time() - t0:.0f} s")
        return 0

    # demo samples: two per grade, alternately PNG and JPEG, plus their events
    srng = np.random.default_rng(11)
    samples, events = [], []
    for k in range(10):
        g = k % NCLASS
        img = fundus(srng, g)
        name = f"fundus_{k:02d}_g{g}.{'png' if k < 5 else 'jpg'}"
        img.save(os.path.join(a.out, "samples", name), quality=92)
        samples.append((name, g, img))
        events.append({"image_id": f"img-{k:02d}", "patient_id": f"p-{k // 2:02d}",
                       "uri": name, "event_time": 1767225600000 + k * 1000})
    with open(os.path.join(a.out, "samples", "events.jsonl"), "w") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")

    # reference probabilities for the C parity test (PNG samples: decoded
    # identically by PIL and libpng)
    ref = []
    with torch.no_grad():
        for name, g, img in samples:
            if not name.endswith(".png"):
                continue
            x = preprocess([Image.open(os.path.join(a.out, "samples", name)).convert("RGB")],
                           mean, std)
            logits, feat = model(x)
            ref.append({"file": name, "grade": g,
                        "probabilities": [float(v) for v in torch.softmax(logits, 1)[0]]})
    with open(os.path.join(a.fixtures, "images_model_ref.json"), "w") as f:
        json.dump({"model": "models/images/fundus_cnn.onnx", "meta": meta, "cases": ref}, f,
                  indent=1)
        f.write("\n")
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
