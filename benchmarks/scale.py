"""Scale: memory of spectral detection over a large memory-mapped dataset; sweeps, label-audit folds,
certification and saliency shards on Ray.

``memory``: tiles MNIST-10k (uint8) into an ``--n`` × 28×28 memory-mapped ``npy:DIR`` folder, then
runs spectral signatures with the default CNN (untrained; the features' shape is what matters for
memory) over all of it in a fresh process, printing the peak resident memory (``ru_maxrss``) and
what the images alone would take as float32 in memory.

``sweep``: BadNets and Blended × ``--seeds`` seeds on MNIST-10k (``--epochs`` each), once serially
with 1 thread and once as Ray tasks on a local Ray with ``--cpus`` CPUs and 1 thread per task; prints
both wall times, the speedup, and whether every run's CA / ASR is identical.

``folds``: the label audit's K folds serially and as Ray tasks (``ray_address="local"``: a private
Ray on this machine, its start-up included), 1 thread per fold, on digits (5 folds × 2 epochs) and
MNIST-10k (4 folds × 1 epoch); prints both wall times, max |Δ| of the probabilities and whether the
flagged examples are the same.

``shards``: randomized smoothing of ``--n`` digits (n0 100, n 1000) with 2 shards serially and on
Ray (the model and images loaded by reference in each task), and saliency (Grad-CAM, NormGrad at
relu2 and relu4) of all digits unsharded here and in 4 shards on Ray; prints wall times and the
differences.

    .venv/bin/python benchmarks/scale.py memory --n 200000
    .venv/bin/python benchmarks/scale.py sweep --epochs 1 --seeds 3 --cpus 2
    .venv/bin/python benchmarks/scale.py folds
    .venv/bin/python benchmarks/scale.py shards --n 400
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEMORY_CHILD = """
import resource, sys, time, torch
torch.set_num_threads(1)
from defenses.detectors import spectral_detect
from workbench.data import load_npy_dir
from workbench.zoo import build_model
ds = load_npy_dir(sys.argv[1])
net = build_model("cnn", 1, 10, 28, seed=0).eval()
t0 = time.perf_counter()
r = spectral_detect(net, ds, layer=None)
print(len(r.scores), time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def memory(args) -> None:
    from workbench.data import load_dataset

    src = load_dataset("mnist10k")
    raw = src._raw.numpy()
    tmp = Path(tempfile.mkdtemp(prefix="wbscale"))
    try:
        d = tmp / "big"
        d.mkdir()
        mm = np.lib.format.open_memmap(d / "images.npy", mode="w+", dtype=np.uint8, shape=(args.n, 1, 28, 28))
        for i in range(0, args.n, len(raw)):
            k = min(len(raw), args.n - i)
            mm[i:i + k] = raw[:k]
        mm.flush()
        del mm
        np.save(d / "labels.npy", np.resize(src.labels.numpy(), args.n))
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(d)], capture_output=True, text=True,
                             check=True)
        n, secs, peak = out.stdout.split()
        print(f"spectral detection, default CNN, {int(n):,} × 1×28×28 memory-mapped uint8 "
              f"({args.n * 784 / 2**20:.0f} MiB on disk; {args.n * 784 * 4 / 2**20:.0f} MiB as float32):")
        print(f"  peak resident memory {float(peak):.0f} MiB, {float(secs):.0f} s (1 thread)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep(args) -> None:
    from workbench.sweep import run_sweep

    spec = {"command": "attack", "params": {"data": "mnist10k", "epochs": args.epochs},
            "grid": {"attack": ["badnets", "blended"], "seed": list(range(args.seeds))}}
    tmp = Path(tempfile.mkdtemp(prefix="wbsweep"))
    try:
        t0 = time.perf_counter()
        serial = run_sweep(spec, tmp / "serial", threads=1)
        t_serial = time.perf_counter() - t0
        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            ray.get(ray.remote(lambda: 0).remote())  # the Ray start-up is timed apart
            t0 = time.perf_counter()
            on_ray = run_sweep(spec, tmp / "ray", threads=1, ray_address="local")
            t_ray = time.perf_counter() - t0
        finally:
            ray.shutdown()
        same = all((a["CA"], a["ASR"]) == (b["CA"], b["ASR"]) for a, b in zip(serial.rows, on_ray.rows))
        print(f"sweep BadNets/Blended × {args.seeds} seeds on MNIST-10k, {args.epochs} epoch(s) per run, "
              f"1 thread per run:")
        print(f"  serial {t_serial:.1f} s, Ray ({args.cpus} CPUs) {t_ray:.1f} s, speedup {t_serial / t_ray:.2f}×; "
              f"per-run CA/ASR identical: {same}")
        print(json.dumps([{k: r[k] for k in ("attack", "seed", "CA", "ASR")} for r in serial.rows]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timed(f, *args, **kwargs):
    t0 = time.perf_counter()
    return f(*args, **kwargs), time.perf_counter() - t0


def folds(args) -> None:
    import torch

    from workbench.data import load_dataset
    from workbench.labels import audit_labels

    torch.set_num_threads(1)
    for spec, kw in [("digits", {"folds": 5, "epochs": 2}), ("mnist10k", {"folds": 4, "epochs": 1})]:
        ds = load_dataset(spec)
        serial, t_serial = _timed(audit_labels, ds, seeds=1, threads=1, **kw)
        on_ray, t_ray = _timed(audit_labels, ds, seeds=1, threads=1, ray_address="local", **kw)
        print(f"label audit {spec}, {kw['folds']} folds × {kw['epochs']} epoch(s), 1 thread per fold: serial "
              f"{t_serial:.1f} s, Ray {t_ray:.1f} s (start-up included); max |Δ| of the probabilities "
              f"{np.abs(serial.pred_probs - on_ray.pred_probs).max():.2g}, same flags: "
              f"{serial.flagged.tolist() == on_ray.flagged.tolist()}, OOS accuracy {serial.out_of_sample_accuracy:.4f}")


def shards(args) -> None:
    import torch

    from workbench.certify import certify_smoothing
    from workbench.data import load_dataset
    from workbench.models import save_model
    from workbench.saliency import explain
    from workbench.shards import DataRef, ModelRef
    from workbench.training import train_classifier

    torch.set_num_threads(1)
    ds = load_dataset("digits")
    trained = train_classifier(ds, "cnn", epochs=3, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="wbshards"))
    try:
        save_model(trained.model, tmp, trained.card)
        ref = ModelRef.of(tmp, input_shape=ds.input_shape, num_classes=ds.num_classes)
        x, y = ds.images[:args.n], ds.labels[:args.n]
        kw = {"n0": 100, "n": 1000, "alpha": 0.001, "labels": y, "seed": 0, "threads": 1}
        one, t_one = _timed(lambda: certify_smoothing(trained.model, x, 0.25, **kw))
        two, t_two = _timed(lambda: certify_smoothing(trained.model, x, 0.25, shards=2, **kw))
        ray2, t_ray = _timed(lambda: certify_smoothing(ref, DataRef.of("digits", n=args.n), 0.25, shards=2,
                                                       ray_address="local", **kw))
        print(f"certify {args.n} digits (n0 100, n 1000): unsharded {t_one:.1f} s, 2 shards serially {t_two:.1f} s, "
              f"2 shards on Ray {t_ray:.1f} s (start-up included); Ray = serial with 2 shards: "
              f"{torch.equal(two.predictions, ray2.predictions) and torch.equal(two.radii, ray2.radii)}; "
              f"1 vs 2 shards agree on {(one.predictions == two.predictions).float().mean():.3f} of the decisions, "
              f"ACR {one.average_certified_radius:.4f} vs {two.average_certified_radius:.4f}")
        opts = {"labels": ds.labels, "sanity": False, "n_steps": 10, "threads": 1}
        meths, lays = ["gradcam", "normgrad"], ["relu2", "relu4"]
        a, t_a = _timed(lambda: explain(trained.model, ds.images, meths, lays, **opts))
        b, t_b = _timed(lambda: explain(ref, DataRef.of("digits", n=len(ds)), meths, lays, shards=4,
                                        ray_address="local", **opts))
        dm = max(float((a.maps[k] - b.maps[k]).abs().max()) for k in a.maps)
        dr = max(abs(ra[k] - rb[k]) for ra, rb in zip(a.metrics, b.metrics) for k in ra
                 if isinstance(ra[k], float) and np.isfinite(ra[k]))
        print(f"saliency of {len(ds)} digits ({', '.join(meths)} at {', '.join(lays)}): unsharded {t_a:.1f} s, "
              f"4 shards on Ray {t_b:.1f} s (start-up included); maps max |Δ| {dm:.2g}, metrics max |Δ| {dr:.2g}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, default=200_000)
    s = sub.add_parser("sweep")
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--cpus", type=int, default=2)
    sub.add_parser("folds")
    h = sub.add_parser("shards")
    h.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    {"memory": memory, "sweep": sweep, "folds": folds, "shards": shards}[args.what](args)
    print(f"(driver peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
