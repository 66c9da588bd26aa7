"""Scale: memory of spectral detection over a large memory-mapped dataset, and sweep speed on Ray.

``memory``: tiles MNIST-10k (uint8) into an ``--n`` × 28×28 memory-mapped ``npy:DIR`` folder, then
runs spectral signatures with the default CNN (untrained; the features' shape is what matters for
memory) over all of it in a fresh process, printing the peak resident memory (``ru_maxrss``) and
what the images alone would take as float32 in memory.

``sweep``: BadNets and Blended × ``--seeds`` seeds on MNIST-10k (``--epochs`` each), once serially
with 1 thread and once as Ray tasks on a local Ray with ``--cpus`` CPUs and 1 thread per task; prints
both wall times, the speedup, and whether every run's CA / ASR is identical.

    .venv/bin/python benchmarks/scale.py memory --n 200000
    .venv/bin/python benchmarks/scale.py sweep --epochs 1 --seeds 3 --cpus 2
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


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, default=200_000)
    s = sub.add_parser("sweep")
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    memory(args) if args.what == "memory" else sweep(args)
    print(f"(driver peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
