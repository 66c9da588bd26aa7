"""Availability attacks on certifiers: fallback rates over poisoning rates, with controls, in one run.

For each certifier (randomized smoothing, IBP), seed and poisoning rate: poison the MNIST-10k training
split, train a fresh victim (Gaussian-noise training at σ for smoothing, IBP training at 1.1·ε for IBP),
and certify clean and triggered test inputs. The unpoisoned model of the same seed is trained once and
gives the controls (clean model on triggered inputs; clean fallback and accuracy to compare with).

    .venv/bin/python benchmarks/availability.py --certifier smoothing --rates 0.005 0.01 0.02 0.05 0.1
    # issue 23, the masking design at 5 %, three held-out seeds, three data sets:
    .venv/bin/python benchmarks/availability.py --data digits mnist10k shapes --rates 0.05 --seeds 0 1 2 --n 500 --n-test 100
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attacks.availability import (
    DEFAULT_DESIGN,
    REPORT_RADII,
    default_trigger,
    masking_trigger,
    run_availability,
    train_victim,
)
from workbench.data import load_dataset, train_test_split


def probe_detectors(res, seed: int) -> dict:
    """The defenses' poison detectors on the poisoned training set, isolating exactly the poisoned share."""
    from defenses.detectors import HEAD_INPUT, detect
    from workbench.hooks import default_feature_layer

    data, truth = res.poison_set.dataset, res.poison_set.poisoned_indices
    ratio = len(truth) / len(data)
    model = res.victim.model
    try:
        layer = default_feature_layer(model)
    except Exception:  # noqa: BLE001 - e.g. the IBP victim (a plain Sequential): read its head's input
        layer = HEAD_INPUT
    out = {}
    for method in ("spectral", "ac", "lga"):
        r = detect(method, data, None if method == "lga" else model, ratio, seed=seed, layer=layer,
                   poisoned_indices=truth)
        q = r.quality
        out[method] = {"precision": q.precision, "recall": q.recall, "auroc": q.auroc, "seconds": r.seconds}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["mnist10k"])
    ap.add_argument("--certifier", choices=["smoothing", "ibp"], default="smoothing")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--width", type=int, default=0)
    ap.add_argument("--design", default="", help="default: the certifier's (masking for smoothing)")
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe", action="store_true",
                    help="also run the poison detectors (spectral, AC, LGA) on each poisoned training set")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    design = args.design or DEFAULT_DESIGN[args.certifier]
    rows = []
    print(f"certifier={args.certifier} sigma={args.sigma} eps={args.eps} n0={args.n0} n={args.n} alpha={args.alpha} "
          f"n_test={args.n_test} width={args.width or 'default'} epochs={args.epochs or 'default'} design={design}",
          flush=True)
    nc = [f"not cert r={r:g} trig (poisoned) / clean (poisoned) / clean (clean model)" for r in REPORT_RADII] \
        if args.certifier == "smoothing" else []
    head = ["data", "seed", "rate", "fallback trig (poisoned)", "fallback clean (poisoned)",
            "fallback trig (clean model)", "fallback clean (clean model)", *nc, "test acc poisoned", "test acc clean",
            "seconds"]
    print("| " + " | ".join(head) + " |", flush=True)
    print("|" + "---|" * len(head), flush=True)
    for data in args.data:
        ds = load_dataset(data)
        trig = masking_trigger(*ds.image_size) if design == "masking" else default_trigger(6 if ds.image_size[0] >= 16 else 4)
        for seed in args.seeds:
            train, test = train_test_split(ds, 0.2, seed)
            clean = train_victim(train, test, args.certifier, sigma=args.sigma, eps=args.eps, seed=seed,
                                 epochs=args.epochs or None, width=args.width or None)
            for rate in args.rates:
                t0 = time.perf_counter()
                res = run_availability(ds, args.certifier, rate, trigger=trig, seed=seed, sigma=args.sigma,
                                       eps=args.eps, n0=args.n0, n=args.n, alpha=args.alpha, n_test=args.n_test,
                                       epochs=args.epochs or None, width=args.width or None, design=design,
                                       clean_victim=clean)
                row = {"data": data, "seed": seed, "rate": rate, "design": design,
                       "fb_trig_poisoned": res.fallback("poisoned", "triggered"),
                       "fb_clean_poisoned": res.fallback("poisoned", "clean"),
                       "fb_trig_clean": res.fallback("clean", "triggered"),
                       "fb_clean_clean": res.fallback("clean", "clean"),
                       "acc_poisoned": res.poisoned_model_test_accuracy, "acc_clean": res.clean_model_test_accuracy,
                       "cert_acc_clean_inputs_poisoned": next(r["accuracy"] for r in res.rows
                                                              if r["model"] == "poisoned" and r["inputs"] == "clean"),
                       "cert_acc_clean_inputs_clean": next(r["accuracy"] for r in res.rows
                                                           if r["model"] == "clean" and r["inputs"] == "clean"),
                       "seconds": time.perf_counter() - t0}
                cells = []
                if args.certifier == "smoothing":
                    for r in REPORT_RADII:
                        vals = [res.not_certified("poisoned", "triggered", r), res.not_certified("poisoned", "clean", r),
                                res.not_certified("clean", "clean", r)]
                        row[f"not_certified@{r:g}"] = vals
                        cells.append(" / ".join(f"{100 * v:.1f}%" for v in vals))
                if args.probe:
                    row["probe"] = probe_detectors(res, seed)
                rows.append(row)
                print(f"| {data} | {seed} | {100 * rate:g}% | {100 * row['fb_trig_poisoned']:.1f}% | "
                      f"{100 * row['fb_clean_poisoned']:.1f}% | {100 * row['fb_trig_clean']:.1f}% | "
                      f"{100 * row['fb_clean_clean']:.1f}% | " + "".join(c + " | " for c in cells)
                      + f"{100 * row['acc_poisoned']:.2f}% | {100 * row['acc_clean']:.2f}% | {row['seconds']:.0f} |",
                      flush=True)
                for name, q in row.get("probe", {}).items():
                    print(f"|   probe {name} | precision {100 * q['precision']:.1f}% | recall {100 * q['recall']:.1f}% | "
                          f"AUROC {q['auroc']:.3f} | {q['seconds']:.1f} s |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
