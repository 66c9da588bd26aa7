"""The audit's bars on MNIST-10k with the default CNN (issue #13), one line per scenario and seed.

    python benchmarks/audit.py --seeds 0 1 2 --scenarios badnets blended clean noise --threads 1

Scenarios: ``badnets`` (3×3 patch, 5% poisoned, target 0), ``blended`` (α 0.15 noise, 5%, target
0), ``clean`` (no poison), ``noise`` (10% asymmetric label noise). For each, a model is trained on the
(poisoned / noisy) training split — cached under ``--cache`` so reruns only audit — and the audit
runs on that training split with the model's held-out split as the clean set. Printed per run: the
audit's verdict, the poison check's flagged classes and its precision / recall on the poisoned
samples, the backdoor scan's flagged classes, the target's anomaly index and the share of the
recovered mask on the true patch, the labels check's estimated error rate, and seconds per check.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks.backdoor import make_trigger  # noqa: E402
from attacks.poison import poison_dataset  # noqa: E402
from workbench.audit import audit  # noqa: E402
from workbench.data import load_dataset, train_test_split  # noqa: E402
from workbench.models import LoadedModel, load_model, save_model  # noqa: E402
from workbench.training import train_on_split  # noqa: E402

TARGET = 0


def scenario_data(name: str, seed: int):
    """(training data, held-out test, poisoned indices or None, true noise mask or None, trigger)."""
    ds = load_dataset("mnist10k")
    train, test = train_test_split(ds, 0.2, seed)
    if name in ("badnets", "blended"):
        trig = make_trigger(name, alpha=0.15, pattern_seed=seed)
        p = poison_dataset(train, trig, 0.05, TARGET, seed=seed)
        return p.dataset, test, p.poisoned_indices.numpy(), None, trig
    if name == "noise":
        from workbench.labels import inject_noise

        noisy, _ = inject_noise(train.labels, train.num_classes, kind="asymmetric", rate=0.1, seed=seed)
        noisy = np.asarray(noisy)
        flipped = noisy != train.labels.numpy()
        return train.with_labels(noisy), test, None, flipped, None
    return train, test, None, None, None


def trained(name: str, seed: int, train, test, cache: Path) -> LoadedModel:
    folder = cache / f"{name}-{seed}"
    if (folder / "model.json").is_file():
        return load_model(folder)
    t = train_on_split(train, test, "cnn", seed=seed, data_spec=f"mnist10k/{name}")
    save_model(t.model, folder, t.card)
    return load_model(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scenarios", nargs="+", default=["badnets", "blended", "clean", "noise"])
    ap.add_argument("--checks", default=None, help="default: poison,backdoor (+labels for noise)")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-audit"))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("scenario seed verdict | poison: flagged precision recall | backdoor: flagged AI(target) "
          "mask-on-patch | labels: est.rate true.rate | seconds per check")
    for name in a.scenarios:
        for seed in a.seeds:
            train, test, poisoned, flipped, trig = scenario_data(name, seed)
            lm = trained(name, seed, train, test, a.cache)
            checks = a.checks or ("labels" if name == "noise" else "poison,backdoor")
            t0 = time.perf_counter()
            rep = audit(lm, train, checks, test=test, seed=seed)
            wall = time.perf_counter() - t0
            parts = [f"{name:8s} {seed} {rep.verdict:5s}"]
            names = [o.check for o in rep.outcomes]
            if "poison" in names:
                r = rep.outcome("poison").result
                found = np.flatnonzero(r.likely_poison)
                if poisoned is not None and len(found):
                    tp = len(np.intersect1d(found, poisoned))
                    pr, rc = tp / len(found), tp / len(poisoned)
                else:
                    pr = rc = float("nan")
                parts.append(f"poison: {r.flagged} P {pr:.3f} R {rc:.3f}")
            if "backdoor" in names:
                r = rep.outcome("backdoor").result
                h, w = train.image_size
                on = float("nan")
                if trig is not None and hasattr(trig, "size"):
                    t, left, b, right = trig.box(h, w)
                    m = r.triggers[TARGET].mask
                    on = float(m[t:b, left:right].sum() / m.sum())
                parts.append(f"backdoor: {r.flagged} AI {r.anomaly_index[TARGET]:.2f} max {r.max_anomaly_index:.2f} "
                             f"on-patch {on:.2f}")
            if "labels" in names:
                r = rep.outcome("labels").result
                true = float(flipped.mean()) if flipped is not None else 0.0
                parts.append(f"labels: est {r.estimated_error_rate:.4f} true {true:.4f}")
            parts.append(" ".join(f"{o.check} {o.seconds:.0f}s" for o in rep.outcomes) + f" total {wall:.0f}s")
            print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
