"""The documentation's figures, drawn from real runs on the embedded ``digits`` data.

    python benchmarks/figures.py [--out docs/img] [--threads 1] [--quick]

Trains the default CNN on digits twice (seeded, 4 epochs, a few seconds each): once plainly and once
with Gaussian noise σ = 0.25 (the base model randomized smoothing needs), then writes into ``--out``:

- ``saliency-digits.png``: Grad-CAM, Eigen-CAM and NormGrad (``workbench.saliency.explain``) at the
  default CAM layer on six held-out digits;
- ``certified-accuracy-digits.png``: certified accuracy against L2 radius of both models under
  randomized smoothing (``workbench.certify.certify_smoothing``, σ = 0.25, n0 = 100, n = 1000,
  α = 0.001, 100 held-out digits), drawn with ``workbench.certify.curve_figure``;
- ``label-issues-digits.png``: the 16 top-ranked examples of a label audit of all of digits
  (``workbench.labels.audit_labels`` with its defaults: 5 folds × 3 seeds), drawn with the label-audit
  benchmark's ``gallery_png``.

Prints the figures' numbers (test accuracies, certified accuracies, label-audit counts) for the
captions. ``--quick`` (1 epoch, 20 images, n = 100, 2 folds × 1 seed on 400 digits) draws the same
figures from smaller runs in seconds: what ``tests/test_docs.py`` runs. Seeded: two runs gave the same
numbers. The full run took 2 min 48 s at one thread on a busy 2-core machine (load average 4.5),
most of it the label audit's 15 trainings.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.certify import certify_smoothing, curve_figure
from workbench.data import ImageDataset, load_dataset, stratified_subset
from workbench.labels import audit_labels
from workbench.report import figure_png, overlay_heat
from workbench.saliency import explain
from workbench.training import TrainedClassifier, gaussian_noise, train_classifier

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIGMA = 0.25
METHODS = (("gradcam", "Grad-CAM"), ("eigencam", "Eigen-CAM"), ("normgrad", "NormGrad"))
FILES = {"saliency": "saliency-digits.png", "certify": "certified-accuracy-digits.png",
         "labels": "label-issues-digits.png"}


@dataclass
class Settings:
    epochs: int = 4
    saliency_images: int = 6
    cert_images: int = 100
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    label_data: int = 0  # 0: all of digits
    folds: int = 5
    seeds: int = 3
    label_epochs: int | None = None
    gallery: int = 16


QUICK = Settings(epochs=1, cert_images=20, n0=20, n=100, label_data=400, folds=2, seeds=1, label_epochs=3,
                 gallery=8)


def train_pair(ds: ImageDataset, s: Settings, seed: int = 0) -> tuple[TrainedClassifier, TrainedClassifier]:
    """The default CNN trained plainly and with Gaussian noise σ = SIGMA, on the same seeded split."""
    plain = train_classifier(ds, "cnn", epochs=s.epochs, seed=seed)
    noisy = train_classifier(ds, "cnn", epochs=s.epochs, seed=seed, transform=gaussian_noise(SIGMA))
    return plain, noisy


def saliency_figure(trained: TrainedClassifier, path: Path, n: int = 6) -> dict:
    """Rows: the digits, then each method's map over them (the library's overlay, opacity 0.5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = trained.test
    pick = stratified_subset(test, max(n, test.num_classes), seed=0) if len(test) > n else test
    images, labels = pick.images[:n], pick.labels[:n]
    res = explain(trained.model, images, [m for m, _ in METHODS], labels=labels, class_names=test.class_names,
                  n_steps=8)
    layer = res.layers[0]
    fig, axes = plt.subplots(1 + len(METHODS), len(images), figsize=(1.25 * len(images), 1.35 * (1 + len(METHODS))),
                             squeeze=False)
    rows = [("digit", images.permute(0, 2, 3, 1).repeat(1, 1, 1, 3).numpy())]
    rows += [(title, overlay_heat(images, res.map(key, layer), 0.5)) for key, title in METHODS]
    for r, (title, pics) in enumerate(rows):
        for c in range(len(images)):
            ax = axes[r, c]
            ax.imshow(np.clip(pics[c], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{int(labels[c])} → {res.predictions[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.suptitle(f"Saliency at {layer} of the default CNN on held-out digits (true → predicted)", fontsize=9)
    fig.tight_layout()
    path.write_bytes(figure_png(fig))
    return {"layer": layer, "deletion/insertion AUC": {r["method"]: (round(r["deletion AUC"], 3),
                                                                      round(r["insertion AUC"], 3))
                                                        for r in res.metrics}}


def certify_figure(models: dict[str, TrainedClassifier], path: Path, s: Settings) -> dict:
    """Certified accuracy against L2 radius of each model under randomized smoothing at σ = SIGMA."""
    curves, numbers = {}, {}
    for name, trained in models.items():
        test = trained.test
        x, y = test.images[:s.cert_images], test.labels[:s.cert_images]
        cert = certify_smoothing(trained.model, x, SIGMA, n0=s.n0, n=s.n, alpha=s.alpha, labels=y, seed=0)
        curves[f"{name} (ACR {cert.average_certified_radius:.3f})"] = cert.certified_curve(np.linspace(0, 0.7, 71))
        numbers[name] = {"abstain": round(cert.abstain_rate, 3), "certified at 0": round(cert.certified_accuracy(0), 3),
                         "certified at 0.25": round(cert.certified_accuracy(0.25), 3),
                         "certified at 0.5": round(cert.certified_accuracy(0.5), 3),
                         "ACR": round(cert.average_certified_radius, 3)}
    fig = curve_figure(curves, xlabel="L2 radius")
    fig.axes[0].set_title(f"Randomized smoothing, σ = {SIGMA}, n = {s.n}, α = {s.alpha}, "
                          f"{s.cert_images} held-out digits", fontsize=9)
    path.write_bytes(figure_png(fig))
    return numbers


def label_figure(ds: ImageDataset, path: Path, s: Settings, seed: int = 0) -> dict:
    """The top-ranked examples of a label audit of ``ds`` (out-of-sample K-fold probabilities)."""
    spec = importlib.util.spec_from_file_location("label_audit_benchmark", HERE / "label_audit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # the label-audit benchmark script holds the gallery

    audit = audit_labels(ds, folds=s.folds, seeds=s.seeds, epochs=s.label_epochs, seed=seed, n_jobs=1)
    bench.gallery_png(ds, audit, path, n=s.gallery,
                title=f"{ds.name}: the {s.gallery} lowest label-quality scores (given → suggested, p(suggested))")
    return {"n": len(ds), "out-of-sample accuracy": round(audit.out_of_sample_accuracy, 4),
            "estimated errors": int(audit.estimated_errors), "flagged": int(audit.num_flagged)}


def make_figures(out: Path, s: Settings = Settings(), seed: int = 0) -> dict:
    """Every figure into ``out``; returns the numbers behind them."""
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("digits")
    t0 = time.perf_counter()
    plain, noisy = train_pair(ds, s, seed)
    numbers = {"test accuracy": {"plain": round(plain.evaluation.accuracy, 4),
                                 "noise-trained": round(noisy.evaluation.accuracy, 4)}}
    numbers["saliency"] = saliency_figure(plain, out / FILES["saliency"], s.saliency_images)
    numbers["certify"] = certify_figure({"plain CNN": plain, f"trained with noise σ = {SIGMA}": noisy},
                                        out / FILES["certify"], s)
    label_ds = stratified_subset(ds, s.label_data, seed) if s.label_data else ds
    numbers["labels"] = label_figure(label_ds, out / FILES["labels"], s, seed)
    numbers["seconds"] = round(time.perf_counter() - t0, 1)
    return numbers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small models)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small runs (for the test): same figures in seconds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    numbers = make_figures(args.out, QUICK if args.quick else Settings(), args.seed)
    for key, value in numbers.items():
        print(f"{key}: {value}")
    for name in FILES.values():
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
