"""The audit's bars on a matrix of datasets, triggers, targets, rates and seeds (issues #13, #21).

    python benchmarks/audit.py --train-only --workers 2          # fill the model cache (hours on 2 cores)
    python benchmarks/audit.py --out runs/bench-audit/results.jsonl   # audit every cell, print the table
    python benchmarks/audit.py --cells dev                       # the cells the methods were tuned on

Datasets: ``digits`` (8×8), ``mnist10k`` (28×28), ``shapes`` (our procedurally generated 28×28
grayscale set, :mod:`workbench.synthetic`) and ``shapes:rgb`` (32×32 RGB). Per dataset and seed (0,
1, 2), the cells are:

- 5% poison, four BadNets cells covering, over the three seeds, all 12 (patch size 2-4 × four
  corners) combinations, and one Blended cell (α 0.2, a noise pattern drawn from the seed);
- 1% and 10% poison: one BadNets cell each (size 3, a corner that rotates with the seed), and for
  seed 0 a Blended cell at each rate;
- one clean cell (no poison).

The target is class 0 or class 7, alternating over the cells. Each cell trains the default CNN on its
(poisoned) training split with ``workbench.training.train_on_split`` (cached under ``--cache``), then
runs ``workbench.audit.audit`` with the poison and backdoor checks on the training split, the
model's held-out split as the clean set. Printed per cell: clean accuracy and attack success rate,
the audit's verdict, the poison check's verdict, flagged classes and precision / recall on the
poisoned samples, and the backdoor check's verdict, flagged classes and the target's anomaly index.

The ``dev`` cells (seed 100, not in the matrix) are the ones the methods' settings were chosen on;
the bars are stated on the matrix (seeds 0-2), which no setting was tuned on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASETS = ("digits", "mnist10k", "shapes", "shapes:rgb")
CORNERS = ("bottom-right", "top-left", "top-right", "bottom-left")
SEEDS = (0, 1, 2)
TARGETS = (0, 7)
BLEND_ALPHA = 0.2  # Blended (Chen et al. 2017) at the blend weight BackdoorBench uses


@dataclass(frozen=True)
class Cell:
    data: str
    attack: str  # badnets | blended | clean
    size: int  # patch side (badnets), 0 otherwise
    position: str  # corner (badnets), "" otherwise
    target: int
    rate: float
    seed: int

    @property
    def key(self) -> str:
        trig = f"{self.attack}{self.size}-{self.position}" if self.attack == "badnets" else self.attack
        return f"{self.data.replace(':', '_')}-{trig}-t{self.target}-r{self.rate:g}-s{self.seed}"


def matrix_cells(datasets=DATASETS, seeds=SEEDS) -> list[Cell]:
    """Every cell of the matrix described in the module docstring."""
    cells = []
    for d in datasets:
        for i, seed in enumerate(seeds):
            n = 0
            for j in range(4):  # a Latin arrangement: each corner gets every size over three seeds
                cells.append(Cell(d, "badnets", (2, 3, 4)[(i + j) % 3], CORNERS[j], TARGETS[n % 2], 0.05, seed))
                n += 1
            cells.append(Cell(d, "blended", 0, "", TARGETS[n % 2], 0.05, seed))
            for rate in (0.01, 0.10):
                n += 1
                cells.append(Cell(d, "badnets", 3, CORNERS[(i + int(rate * 100)) % 4], TARGETS[n % 2], rate, seed))
                if i == 0:
                    cells.append(Cell(d, "blended", 0, "", TARGETS[(n + 1) % 2], rate, seed))
            cells.append(Cell(d, "clean", 0, "", 0, 0.0, seed))
    return cells


def dev_cells() -> list[Cell]:
    """The cells the methods were tuned on (seed 100: in no matrix cell)."""
    cells = [Cell("shapes", "badnets", 3, "bottom-right", 0, 0.05, 100), Cell("shapes", "blended", 0, "", 0, 0.05, 100),
             Cell("shapes", "clean", 0, "", 0, 0.0, 100), Cell("shapes", "badnets", 2, "top-left", 7, 0.05, 100),
             Cell("shapes", "badnets", 4, "top-right", 3, 0.10, 100), Cell("shapes", "badnets", 3, "bottom-right", 0, 0.01, 100)]
    for d in ("digits", "mnist10k", "shapes:rgb"):
        cells += [Cell(d, "badnets", 3, "bottom-left", 0, 0.05, 100), Cell(d, "blended", 0, "", 7, 0.05, 100),
                  Cell(d, "clean", 0, "", 0, 0.0, 100)]
    cells += [Cell("digits", "badnets", 2, "top-left", 7, 0.05, 100), Cell("digits", "badnets", 2, "bottom-right", 0, 0.05, 100),
              Cell("digits", "badnets", 3, "bottom-right", 0, 0.01, 100)]
    return cells


def cell_data(cell: Cell):
    """(poisoned training split, clean held-out split, poisoned indices, trigger or None)."""
    from attacks.backdoor import make_trigger
    from attacks.poison import poison_dataset
    from workbench.data import load_dataset, train_test_split

    train, test = train_test_split(load_dataset(cell.data), 0.2, cell.seed)
    if cell.attack == "clean":
        return train, test, np.zeros(0, dtype=np.int64), None
    trig = make_trigger(cell.attack, patch_size=cell.size or 3, position=cell.position or "bottom-right",
                        alpha=BLEND_ALPHA, pattern_seed=cell.seed)
    p = poison_dataset(train, trig, cell.rate, cell.target, seed=cell.seed)
    return p.dataset, test, p.poisoned_indices.numpy(), trig


def trained(cell: Cell, cache: Path, threads: int = 1):
    """The cell's model (trained once, then loaded from ``cache``) and its clean accuracy and ASR."""
    from attacks.poison import attack_success_rate
    from workbench.models import load_model, save_model
    from workbench.training import train_on_split

    torch.set_num_threads(threads)
    folder = cache / cell.key
    meta = folder / "bench.json"
    if not meta.is_file():
        train, test, _, trig = cell_data(cell)
        t0 = time.perf_counter()
        t = train_on_split(train, test, "cnn", seed=cell.seed, data_spec=cell.data)
        asr = attack_success_rate(t.model, test, trig, cell.target) if trig is not None else None
        save_model(t.model, folder, t.card)
        meta.write_text(json.dumps({"clean_accuracy": t.evaluation.accuracy, "asr": asr,
                                    "train_seconds": time.perf_counter() - t0}))
    return load_model(folder), json.loads(meta.read_text())


def audit_cell(cell: Cell, cache: Path, threads: int = 1, checks: str = "poison,backdoor") -> dict:
    """Audit one cell; the row of figures the table prints."""
    from workbench.audit import audit

    lm, meta = trained(cell, cache, threads)
    train, test, poisoned, _ = cell_data(cell)
    t0 = time.perf_counter()
    rep = audit(lm, train, checks, test=test, seed=cell.seed)
    row = {**asdict(cell), "key": cell.key, **meta, "verdict": rep.verdict, "seconds": time.perf_counter() - t0}
    names = [o.check for o in rep.outcomes]
    if "poison" in names:
        o = rep.outcome("poison")
        r = o.result
        found = np.flatnonzero(r.likely_poison)
        tp = len(np.intersect1d(found, poisoned))
        row.update(poison_verdict=o.verdict, poison_flagged=list(r.flagged), poison_found=len(found),
                   poison_precision=tp / len(found) if len(found) else float("nan"),
                   poison_recall=tp / len(poisoned) if len(poisoned) else float("nan"),
                   poison_seconds=o.seconds)
    if "backdoor" in names:
        o = rep.outcome("backdoor")
        r = o.result
        row.update(backdoor_verdict=o.verdict, backdoor_flagged=list(r.flagged),
                   backdoor_target_index=float(r.anomaly_index[cell.target]), backdoor_seconds=o.seconds)
    return row


def _train_one(args):
    cell, cache, threads = args
    _, meta = trained(cell, cache, threads)
    return cell.key, meta


def print_row(r: dict) -> None:
    p = (f"poison {r['poison_verdict']:12s} {str(r['poison_flagged']):8s} P {r['poison_precision']:.3f} "
         f"R {r['poison_recall']:.3f}") if "poison_verdict" in r else ""
    b = (f"backdoor {r['backdoor_verdict']:12s} {str(r['backdoor_flagged']):8s} AI(t) {r['backdoor_target_index']:.2f}"
         if "backdoor_verdict" in r else "")
    asr = f"{r['asr']:.3f}" if r.get("asr") is not None else "  -  "
    print(f"{r['key']:48s} CA {r['clean_accuracy']:.3f} ASR {asr} | {r['verdict']:12s} | {p} | {b} | "
          f"{r['seconds']:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", choices=("matrix", "dev"), default="matrix")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--only", default=None, help="run only cells whose key contains this text")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-audit"))
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per cell here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="cells trained or audited in parallel processes")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--trained-only", action="store_true", help="audit only the cells whose model is cached")
    ap.add_argument("--checks", default="poison,backdoor")
    a = ap.parse_args()
    cells = matrix_cells(tuple(a.datasets)) if a.cells == "matrix" else dev_cells()
    if a.only:
        cells = [c for c in cells if a.only in c.key]
    done = set()
    if a.out is not None and a.out.is_file():
        done = {json.loads(line)["key"] for line in a.out.read_text().splitlines() if line.strip()}
    todo = [c for c in cells if c.key not in done]
    if a.trained_only:
        todo = [c for c in todo if (a.cache / c.key / "bench.json").is_file()]
    print(f"{len(cells)} cells, {len(todo)} to do", flush=True)
    with ProcessPoolExecutor(a.workers) as ex:
        if a.train_only:
            for key, meta in ex.map(_train_one, [(c, a.cache, a.threads) for c in todo]):
                print(key, meta, flush=True)
            return
        for row in ex.map(audit_cell, todo, [a.cache] * len(todo), [a.threads] * len(todo),
                          [a.checks] * len(todo)):
            print_row(row)
            if a.out is not None:
                with a.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
