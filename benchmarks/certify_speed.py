"""Certification speed: batched randomized smoothing vs a one-input-at-a-time loop, and IBP vs forward.

Smoothing (n0 = 100, n = 1000, α = 0.001, σ = 0.25) on MNIST-10k test images with the default-size CNN
trained with Gaussian noise: the reference-style loop (:func:`certify_one_at_a_time`: per input, n0 then
n noisy copies of that one input in batches of ``--ref-batch``, counted with NumPy) against
:func:`workbench.certify.smoothing.certify` (noisy copies of many inputs in one batch; with and without
the Conv+BN-folded channels-last inference copy). The noise streams differ, so "equal results" means
the same decisions and radii up to Monte-Carlo noise: we print abstain rate, accuracy, mean radius and
the share of identical decisions. IBP: certified inputs per second against plain forward passes.

    .venv/bin/python benchmarks/certify_speed.py --inputs 30
"""

from __future__ import annotations

import argparse
import time

import torch

from workbench.certify import certify_ibp, certify_smoothing
from workbench.certify.smoothing import certify_one_at_a_time
from workbench.data import load_dataset, train_test_split
from workbench.training import gaussian_noise, predict_logits, train_on_split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist10k", help="mnist10k (28×28) or digits (8×8)")
    ap.add_argument("--inputs", type=int, default=30)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--ref-batch", type=int, default=1000, help="the reference certify.py's default --batch")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    train, test = train_test_split(ds, 0.2, 0)
    trained = train_on_split(train, test, "cnn", epochs=args.epochs, augment=False, transform=gaussian_noise(0.25))
    model = trained.model.eval()
    x, y = test.images[:args.inputs], test.labels[:args.inputs]
    print(f"{ds.name} {ds.image_size[0]}×{ds.image_size[1]}, default CNN, noise-trained {args.epochs} epoch(s), test accuracy {100 * trained.evaluation.accuracy:.1f}%; "
          f"{args.inputs} inputs, n0={args.n0}, n={args.n}, {torch.get_num_threads()} thread(s)")
    rows = []
    t = time.perf_counter()
    preds, radii = certify_one_at_a_time(model, x, 0.25, n0=args.n0, n=args.n, alpha=0.001, batch_size=args.ref_batch)
    t_ref = time.perf_counter() - t
    ref_pred, ref_rad = torch.tensor(preds), torch.tensor(radii)
    rows.append(("one input at a time (reference style)", t_ref, ref_pred, ref_rad))
    for fuse in (False, True):
        t = time.perf_counter()
        res = certify_smoothing(model, x, 0.25, n0=args.n0, n=args.n, alpha=0.001, labels=y, batch_size=args.batch,
                                fuse=fuse)
        rows.append((f"batched{' + fused Conv-BN, channels-last' if fuse else ''}", time.perf_counter() - t,
                     res.predictions, res.radii))
    print("| method | inputs/s | speed-up | abstain | accuracy | mean radius | same decision as loop |")
    print("|---|---|---|---|---|---|---|")
    for name, sec, p, r in rows:
        print(f"| {name} | {len(x) / sec:.2f} | {t_ref / sec:.1f}× | {100 * float((p < 0).float().mean()):.1f}% | "
              f"{100 * float((p == y).float().mean()):.1f}% | {float(r.mean()):.3f} | "
              f"{100 * float((p == ref_pred).float().mean()):.0f}% |")
    # IBP vs plain forward
    xi = test.images[:1000]
    for _ in range(2):
        t = time.perf_counter()
        predict_logits(model, xi, batch_size=250)
        t_fwd = time.perf_counter() - t
        t = time.perf_counter()
        certify_ibp(model, xi, 0.05, batch_size=250)
        t_ibp = time.perf_counter() - t
    print(f"IBP: {len(xi) / t_ibp:.0f} certified inputs/s vs {len(xi) / t_fwd:.0f} plain forward inputs/s "
          f"({t_ibp / t_fwd:.1f}× the cost of a forward pass)")


if __name__ == "__main__":
    main()
