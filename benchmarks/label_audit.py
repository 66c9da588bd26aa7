"""Label-audit benchmark on MNIST-10k: known flips recovered, real-label gallery, timing, a hard setting.

    python benchmarks/label_audit.py [--settings asym10,sym10,sym20,real] [--epochs 0] [--folds 5]
                                     [--out /tmp/label_audit_bench]
    python benchmarks/label_audit.py --settings hard [--hard-seeds 0,1,2] [--hard-configs before,after]
                                     [--hard-width 4] [--hard-epochs 3]
    python benchmarks/label_audit.py --settings scale [--scale-n 1000000] [--scale-subset 50000]
    python benchmarks/label_audit.py --settings matrix [--matrix-datasets digits,mnist10k,shapes,shapes:rgb]
                                     [--matrix-seeds 0,1,2] --threads 1

``matrix`` (issue #21): on digits, MNIST-10k and our procedurally generated ``shapes`` (28×28 gray
and 32×32 RGB), 10% of every class flipped to its fixed most-confused partner (from a default CNN
trained on a seed-1000 split, used by no run), audited with the library defaults over seeds 0-2:
flagged, precision, recall, estimated against true error rate, out-of-sample accuracy.

For every setting: one seeded 5-fold audit with the default CNN (``workbench.labels.audit_labels``),
then precision / recall of the flagged set against the injected flips for each ``filter_by`` (the
same out-of-sample probabilities, so only cleanlab's part is re-run), the label-quality-score
AUROC, the out-of-sample accuracy, and the time of the whole audit and of cleanlab's part.
Noise: ``cleanlab.benchmarking.noise_generation`` (asymmetric: trace 9 over 10 classes,
``frac_zero_noise_rates=0.6``; symmetric: 1 − rate on the diagonal). ``real`` audits the given
labels and saves a PNG gallery of the 24 top-ranked examples. Prints one table; writes the
probabilities (``pred_probs_<setting>.npy``) and the gallery into ``--out``.

``hard`` (issue #15 item 7): structured noise where a weak model struggles most, audited with that
weak model. Per seed: (1) 5-fold out-of-sample predictions of the weak model on the clean labels
give a confusion matrix, and each class's most confused partner
(``workbench.labels.most_confused_partner``); (2) 10% of every class's labels are flipped to its
partner (``flip_to_partner``); (3) the noisy labels are audited with the same weak per-fold model
(the zoo CNN at ``--hard-width`` 4 channels, ``--hard-epochs`` 3 epochs per model) under each
configuration of ``--hard-configs``: ``before`` = one model per fold, no test-time shifts, no
temperature (the audit before this change), ``after`` = the library defaults, or ``sN[+tta][+cal]``.
Prints per-run rows and the mean ± sd over seeds of precision, recall, flagged / true flips and the
estimated error rate against the true one.

``scale`` (issue #14 item 2): writes ``--scale-n`` × 10 float32 probabilities and int64 labels as
``.npy`` files (10% of the labels flipped, probabilities from noisy logits), streamed in chunks;
runs ``workbench audit labels --labels L.npy --pred-probs P.npy`` in a subprocess (``--scale-mode``
``--batched``, the default at this size, or ``--in-memory`` for comparison, one per run) and reports its
peak resident memory
(the child's own ``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and wall time; then checks on
the first ``--scale-subset`` rows that the batched and the in-memory checks flag the same samples
and estimate the same number of errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from workbench import labels as L
from workbench.data import load_dataset, train_test_split
from workbench.models import build_model

SETTINGS = {"asym10": ("asymmetric", 0.10), "sym10": ("symmetric", 0.10), "sym20": ("symmetric", 0.20),
            "real": (None, 0.0)}
FILTERS = ("prune_by_noise_rate", "both", "confident_learning", "paper", "predicted_neq_given")


def gallery_png(ds, audit, path: Path, n: int = 24, title: str | None = None) -> None:
    """The top ``n`` ranked examples of a label audit as a PNG grid (given → suggested, p(suggested)),
    also drawn for the docs by ``benchmarks/figures.py``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = audit.ranked[:n]
    cols = 8
    rows = (len(idx) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), layout="constrained")
    for ax, i in zip(axes.ravel(), idx, strict=False):
        ax.imshow(ds.images[i, 0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        g, s = int(audit.labels[i]), int(audit.suggested[i])
        ax.set_title(f"#{i}\ngiven {g} → {s} ({audit.pred_probs[i, s]:.2f})", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title or f"MNIST-10k: top {len(idx)} by {audit.rank_by} (given label → suggested, p(suggested))")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def weak_factory(width: int):
    """The deliberately weak per-fold model: the zoo CNN with ``width`` channels in its first block."""

    def factory(in_channels, num_classes, image_size, seed):
        return build_model("cnn", in_channels, num_classes, image_size, seed=seed, width=width)

    factory.__name__ = f"cnn-w{width}"
    return factory


def parse_config(name: str) -> dict:
    """``before`` (one model per fold, 5 folds, as before the change), ``after`` (the library defaults) or
    ``sN[+kF][+tta][+cal]``: N models per fold, F folds, test-time shifts, temperature."""
    if name == "before":
        return {"seeds": 1, "tta": False, "calibrate": False, "folds": 5}
    if name == "after":
        return {"seeds": L.DEFAULT_SEEDS, "tta": L.DEFAULT_TTA, "calibrate": L.DEFAULT_CALIBRATE,
                "folds": L.DEFAULT_FOLDS}
    parts = name.split("+")
    assert parts[0].startswith("s") and parts[0][1:].isdigit(), f"config {name!r}: use before, after or sN[+kF][+tta][+cal]"
    folds = next((int(p[1:]) for p in parts[1:] if p.startswith("k") and p[1:].isdigit()), L.DEFAULT_FOLDS)
    return {"seeds": int(parts[0][1:]), "tta": "tta" in parts[1:], "calibrate": "cal" in parts[1:], "folds": folds}


def hard_setting(args, ds) -> None:
    clean = ds.labels.numpy()
    weak = weak_factory(args.hard_width)
    configs = args.hard_configs.split(",")
    rows, summary = [], {c: [] for c in configs}
    for seed in (int(s) for s in args.hard_seeds.split(",")):
        t0 = time.perf_counter()
        clean_oos = L.cross_val_pred_probs(ds, weak, folds=args.folds, epochs=args.hard_epochs, seeds=1, seed=seed)
        partner = L.most_confused_partner(clean, clean_oos.pred_probs)
        noisy = L.flip_to_partner(clean, partner, rate=0.1, seed=seed)
        dsn = ds.with_labels(noisy)
        truth = float((noisy != clean).mean())
        print(f"seed {seed}: weak model {weak.__name__} x {args.hard_epochs} epochs, clean out-of-sample accuracy "
              f"{clean_oos.accuracy:.4f}, partner {partner.tolist()}, {100 * truth:.2f}% flipped "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        for name in configs:
            cfg = parse_config(name)
            t1 = time.perf_counter()
            a = L.audit_labels(dsn, model=weak, epochs=args.hard_epochs, seed=seed, n_jobs=1,
                               filter_by=args.hard_filter, **cfg)
            sec = time.perf_counter() - t1
            s = L.detection_score(a, clean)
            rec = {"P": s.precision, "R": s.recall, "ratio": s.num_flagged / s.num_errors,
                   "est": a.estimated_error_rate, "gap": a.estimated_error_rate - truth, "auroc": s.auroc,
                   "acc": a.out_of_sample_accuracy, "s": sec}
            summary[name].append(rec)
            rows.append([seed, name, f"{100 * a.out_of_sample_accuracy:.2f}%", s.num_flagged, s.num_errors,
                         f"{rec['ratio']:.2f}", f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.auroc:.4f}",
                         f"{100 * rec['est']:.2f}%", f"{100 * truth:.2f}%", f"{sec:.0f}"])
            print("  ", rows[-1], flush=True)
    head = ["seed", "config", "oos acc", "flagged", "flips", "flagged/flips", "precision", "recall", "AUROC",
            "estimated rate", "true rate", "audit s"]
    print(f"\nHard setting: MNIST-10k, 10% of each class flipped to its most confused partner, weak "
          f"{weak.__name__} x {args.hard_epochs} epochs per model, partners from {args.folds}-fold predictions, "
          f"filter_by {args.hard_filter}, "
          f"torch threads {args.threads}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")

    def ms(vals, scale=1.0, fmt="{:.3f}"):
        v = np.asarray(vals) * scale
        return (fmt + " ± " + fmt).format(v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0)

    print("\n| config | precision | recall | flagged / flips | estimated − true rate (points) | AUROC | oos acc | audit s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, recs in summary.items():
        print(f"| {name} | {ms([r['P'] for r in recs])} | {ms([r['R'] for r in recs])} | "
              f"{ms([r['ratio'] for r in recs], fmt='{:.2f}')} | {ms([r['gap'] for r in recs], 100, '{:+.2f}')} | "
              f"{ms([r['auroc'] for r in recs], fmt='{:.4f}')} | {ms([r['acc'] for r in recs], 100, '{:.2f}')} | "
              f"{ms([r['s'] for r in recs], fmt='{:.0f}')} |")


def write_synthetic(directory: Path, n: int, k: int = 10, seed: int = 0, chunk: int = 100_000) -> tuple[Path, Path]:
    """``labels.npy`` (int64) and ``pred_probs.npy`` (float32 N×K) written chunk by chunk."""
    directory.mkdir(parents=True, exist_ok=True)
    lab_p, pp_p = directory / "labels.npy", directory / "pred_probs.npy"
    labels = np.lib.format.open_memmap(lab_p, mode="w+", dtype=np.int64, shape=(n,))
    probs = np.lib.format.open_memmap(pp_p, mode="w+", dtype=np.float32, shape=(n, k))
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        true = rng.integers(0, k, m)
        logits = rng.normal(size=(m, k)) + 4.0 * np.eye(k)[true]
        p = np.exp(logits - logits.max(1, keepdims=True))
        probs[start:start + m] = (p / p.sum(1, keepdims=True)).astype(np.float32)
        flip = rng.random(m) < 0.1
        labels[start:start + m] = np.where(flip, (true + rng.integers(1, k, m)) % k, true)
    labels.flush()
    probs.flush()
    del labels, probs
    return lab_p, pp_p


def run_cli_measured(args: list[str]) -> tuple[int, float, float, str]:
    """Run ``workbench`` in a fresh child; (exit code, its peak RSS in MB, seconds, its last lines).

    The child reports its own ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` when the command returns."""
    code = ("import resource, sys; from workbench.cli import main; c = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(c)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    sec = time.perf_counter() - t0
    peak = int(proc.stderr.split("PEAK_KB")[1].split()[0]) / 1024 if "PEAK_KB" in proc.stderr else float("nan")
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, peak, sec, " / ".join(text[-4:-1] if len(text) > 1 else text)


def scale_setting(args) -> None:
    d = args.out / "scale"
    t0 = time.perf_counter()
    lab_p, pp_p = write_synthetic(d, args.scale_n)
    print(f"wrote {args.scale_n:,} × 10 float32 probabilities ({pp_p.stat().st_size / 2**20:.0f} MiB) and labels "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for mode in (args.scale_mode,):
        out = d / f"audit{mode.replace('-', '_')}"
        code, peak, sec, last = run_cli_measured(["-q", "audit", "labels", "--labels", str(lab_p), "--pred-probs",
                                                  str(pp_p), "--filter-by", "low_self_confidence", mode,
                                                  "--out", str(out)])
        rep = json.loads((out / "report.json").read_text())["result"] if code == 0 else {}
        rows.append([mode, code, f"{peak:,.0f}", f"{sec:.0f}", rep.get("num_flagged"), rep.get("estimated_errors")])
        print("  ", rows[-1], last, flush=True)
    # Same flags on a subset that fits: batched vs in-memory, in this process.
    m = args.scale_subset
    sub = d / "subset"
    sub.mkdir(exist_ok=True)
    np.save(sub / "labels.npy", np.load(lab_p, mmap_mode="r")[:m])
    np.save(sub / "pred_probs.npy", np.load(pp_p, mmap_mode="r")[:m])
    a = L.audit_labels(sub / "labels.npy", sub / "pred_probs.npy", batched=True, batch_size=10_000, n_jobs=1)
    b = L.audit_labels(sub / "labels.npy", sub / "pred_probs.npy", batched=False, filter_by=a.filter_by, n_jobs=1)
    same = set(a.flagged.tolist()) == set(b.flagged.tolist())
    print(f"\n{args.scale_n:,} × 10 memory-mapped probabilities, `workbench audit labels --labels --pred-probs`, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| mode | exit | peak RSS MB | wall s | flagged | estimated errors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    print(f"\nfirst {m:,} rows: batched flags {a.num_flagged}, in-memory flags {b.num_flagged}, "
          f"identical sets: {same}; estimated errors {a.estimated_errors} vs {b.estimated_errors}; "
          f"confident joints equal: {bool(np.array_equal(a.confident_joint, b.confident_joint))}")


MATRIX_DATASETS = ("digits", "mnist10k", "shapes", "shapes:rgb")


def matrix_partner(spec: str, ds, threads: int) -> np.ndarray:
    """Each class's most confused partner, from one default CNN trained on a seeded 80% split (seed 1000,
    used by no matrix run) and its predictions on the other 20%."""
    from workbench.training import predict_proba, train_on_split

    tr, te = train_test_split(ds, 0.2, 1000)
    t = train_on_split(tr, te, "cnn", seed=1000)
    return L.most_confused_partner(te.labels.numpy(), predict_proba(t.model, te.pixels).numpy())


def matrix_setting(args) -> None:
    """Issue #21: 10% of every class flipped to its fixed most-confused partner, audited with the defaults
    (``workbench audit labels --folds 5``), on every dataset and seed; one row per run."""
    rows = []
    for spec in args.matrix_datasets.split(","):
        ds = load_dataset(spec)
        partner = matrix_partner(spec, ds, args.threads)
        print(f"{spec}: partner {partner.tolist()}", flush=True)
        for seed in (int(v) for v in args.matrix_seeds.split(",")):
            noisy = L.flip_to_partner(ds.labels.numpy(), partner, rate=0.1, seed=seed)
            t0 = time.perf_counter()
            a = L.audit_labels(ds.with_labels(noisy), folds=args.folds, seed=seed, n_jobs=1)
            sc = L.detection_score(a, ds.labels.numpy())
            true = float(np.mean(noisy != ds.labels.numpy()))
            row = [spec, seed, a.num_flagged, int(round(true * len(ds))), f"{sc.precision:.3f}", f"{sc.recall:.3f}",
                   f"{100 * a.estimated_error_rate:.2f}%", f"{100 * true:.2f}%",
                   f"{100 * (a.estimated_error_rate - true):+.2f}", f"{100 * a.out_of_sample_accuracy:.2f}%",
                   f"{time.perf_counter() - t0:.0f}"]
            rows.append(row)
            print(row, flush=True)
    head = ["data", "seed", "flagged", "flips", "precision", "recall", "estimated rate", "true rate",
            "points off", "oos acc", "audit s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default="asym10,sym10,sym20,real")
    ap.add_argument("--epochs", type=int, default=0, help="epochs per fold (0 = the library default)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/label_audit_bench"))
    ap.add_argument("--reuse", action="store_true", help="reuse saved pred_probs (re-runs cleanlab only)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a busy machine)")
    ap.add_argument("--hard-seeds", default="0,1,2")
    ap.add_argument("--hard-configs", default="before,after")
    ap.add_argument("--hard-width", type=int, default=4, help="channels of the weak CNN's first block")
    ap.add_argument("--hard-epochs", type=int, default=3, help="epochs per weak model")
    ap.add_argument("--hard-filter", default="prune_by_noise_rate")
    ap.add_argument("--scale-n", type=int, default=1_000_000)
    ap.add_argument("--scale-subset", type=int, default=50_000)
    ap.add_argument("--scale-mode", default="--batched", help="--batched or --in-memory (one per process)")
    ap.add_argument("--matrix-datasets", default=",".join(MATRIX_DATASETS))
    ap.add_argument("--matrix-seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.settings == "matrix":
        matrix_setting(args)
        return
    ds = load_dataset("mnist10k")
    if args.settings == "hard":
        hard_setting(args, ds)
        return
    if args.settings == "scale":
        scale_setting(args)
        return
    clean = ds.labels.numpy()
    rows = []
    load0 = os.getloadavg()[0]
    for name in args.settings.split(","):
        kind, rate = SETTINGS[name]
        if kind is None:
            noisy = clean.copy()
        else:
            noisy, _ = L.inject_noise(clean, 10, kind=kind, rate=rate, frac_zero_noise_rates=0.6, seed=args.seed)
        dsn = ds.with_labels(noisy)
        pp_path = args.out / f"pred_probs_{name}.npy"
        t0 = time.perf_counter()
        if args.reuse and pp_path.exists():
            audit = L.audit_labels(dsn, pred_probs=np.load(pp_path), n_jobs=1)
        else:
            last = [-1.0]

            def progress(f, m, name=name, last=last, t0=t0):
                if f - last[0] >= 0.05:
                    last[0] = f
                    print(f"  {name}: {100 * f:.0f}% {m} ({time.perf_counter() - t0:.0f} s)", flush=True)

            audit = L.audit_labels(dsn, folds=args.folds, epochs=args.epochs or None, seed=args.seed, n_jobs=1,
                                   progress=progress)
            np.save(pp_path, audit.pred_probs)
        total = time.perf_counter() - t0
        flips = int((noisy != clean).sum())
        for f in FILTERS:
            t1 = time.perf_counter()
            a = audit if f == audit.filter_by else L.audit_labels(dsn, pred_probs=audit.pred_probs, filter_by=f,
                                                                   n_jobs=1)
            t_cl = a.seconds_cleanlab if f == audit.filter_by else time.perf_counter() - t1
            if flips:
                s = L.detection_score(a, clean)
                p, r, auc = f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.auroc:.4f}"
            else:
                p = r = auc = "-"
            rows.append([name, f"{100 * flips / len(ds):.1f}%", f, a.num_flagged, a.estimated_errors, p, r, auc,
                         f"{100 * audit.out_of_sample_accuracy:.2f}%", f"{total:.1f}", f"{t_cl:.2f}"])
        if kind is None:
            gallery_png(dsn, audit, args.out / "real_top24.png")
            from workbench.report import write_report

            write_report(audit, args.out / "real_report", title="Label audit: MNIST-10k (given labels)")
            print("top 24 (index given→suggested p):",
                  " ".join(f"{i}:{audit.labels[i]}→{audit.suggested[i]}({audit.pred_probs[i, audit.suggested[i]]:.2f})"
                           for i in audit.ranked[:24]), flush=True)
        print(rows[-len(FILTERS)], flush=True)
    head = ["setting", "flipped", "filter_by", "flagged", "estimated", "precision", "recall", "AUROC",
            "oos acc", "audit s", "cleanlab s"]
    print(f"\nMNIST-10k, default CNN, {args.folds} folds, epochs/fold = "
          f"{args.epochs or 'default'}, torch threads {args.threads}, load average at start {load0:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
