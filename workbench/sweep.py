"""Sweeps: a grid of one command's parameters (e.g. attack × rate × seed) run as independent units
through :func:`workbench.backend.run_tasks` (serially, or as Ray tasks on a machine or a cluster),
every run's metrics gathered into one table, one plot per metric with seeds as error bars, one report.

A sweep file (TOML)::

    command = "attack"            # a name in SWEEP_COMMANDS
    [params]                      # fixed for every run
    data = "mnist10k"
    epochs = 2
    [grid]                        # every combination is one run
    attack = ["badnets", "blended"]
    rate = [0.05, 0.1]
    seed = [0, 1, 2]

Each run is keyed by its parameters (a hash of command + parameters); its JSON is written to
``OUT/runs/KEY.json`` as soon as it finishes, so re-running the sweep skips finished runs and an
interrupted sweep keeps what was done. A run that fails is reported and does not stop the others.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .atomic import atomic_write_bytes, atomic_write_text
from .backend import TaskResult, run_tasks
from .errors import BadInput, require


# ---------------------------------------------------------------- the commands a sweep can run
def attack_run(attack: str = "badnets", data: str = "mnist10k", rate: float = 0.05, target: int = 0,
               seed: int = 0, epochs: int = 0, model: str = "cnn", mode: str = "dirty", patch_size: int = 3,
               position: str = "bottom-right", pattern: str = "solid", alpha: float = 0.15,
               pattern_seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """One ``workbench attack badnets|blended`` run (the same library call, same seeds): CA, ASR, RA."""
    from attacks.backdoor import run_backdoor_attack

    require(attack in ("badnets", "blended"), f"attack must be badnets or blended, got {attack!r}")
    trig = ({"patch_size": patch_size, "position": position, "pattern": pattern} if attack == "badnets"
            else {"alpha": alpha, "pattern_seed": pattern_seed})
    res = run_backdoor_attack(data, attack, rate, target, seed=seed, epochs=epochs or None, arch=model,
                              device=device, mode=mode, **trig)
    m = res.metrics
    return {"CA": float(m.clean_accuracy), "ASR": float(m.attack_success_rate),
            "RA": float(m.robust_accuracy)}


def train_run(data: str = "mnist10k", model: str = "cnn", epochs: int = 0, seed: int = 0,
              test_fraction: float = 0.2, device: str = "cpu") -> dict[str, float]:
    """One ``workbench train`` run: test accuracy."""
    from .training import train_classifier

    t = train_classifier(data, model, epochs=epochs or None, seed=seed, test_fraction=test_fraction, device=device)
    return {"test_accuracy": float(t.evaluation.accuracy)}


#: Sweepable commands: name -> module-level function taking the command's options as keywords and
#: returning a flat dict of numbers. A new command is one function and one line here.
SWEEP_COMMANDS: dict[str, Callable[..., dict[str, float]]] = {"attack": attack_run, "train": train_run}

RUNS = "runs"
MARKER = "sweep.json"


def run_unit(command: str, params: dict) -> dict[str, float]:
    """What each task executes (importable by Ray workers)."""
    return SWEEP_COMMANDS[command](**params)


# ---------------------------------------------------------------- the sweep file
@dataclass
class SweepSpec:
    command: str
    fixed: dict[str, Any]
    grid: dict[str, list]

    def runs(self) -> list[dict[str, Any]]:
        """Every combination of the grid over the fixed parameters, in file order."""
        names = list(self.grid)
        return [{**self.fixed, **dict(zip(names, combo))} for combo in itertools.product(*self.grid.values())]


def parse_sweep(spec: dict | str | Path) -> SweepSpec:
    """A sweep from a TOML file (path), TOML text or a dict; BadInput naming an unknown command or
    parameter, an empty grid or a value of the wrong form."""
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and spec.endswith(".toml")):
        path = Path(spec)
        if not path.is_file():
            raise BadInput(f"sweep file not found: {path}")
        try:
            spec = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{path}: not valid TOML ({exc})") from None
    elif isinstance(spec, str):
        try:
            spec = tomllib.loads(spec)
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"sweep: not valid TOML ({exc})") from None
    require(isinstance(spec, dict), "a sweep must be a table with command, params and grid")
    extra = sorted(set(spec) - {"command", "params", "grid"})
    require(not extra, f"sweep: unknown key(s) {', '.join(extra)}; use command, [params] and [grid]")
    command = spec.get("command")
    require(isinstance(command, str) and command in SWEEP_COMMANDS,
            f"sweep: unknown command {command!r}; sweepable commands: {', '.join(SWEEP_COMMANDS)}")
    fixed, grid = spec.get("params", {}), spec.get("grid", {})
    require(isinstance(fixed, dict) and isinstance(grid, dict), "sweep: [params] and [grid] must be tables")
    allowed = list(inspect.signature(SWEEP_COMMANDS[command]).parameters)
    for name in [*fixed, *grid]:
        require(name in allowed, f"sweep: unknown parameter {name!r} for command {command!r}; "
                                 f"its parameters: {', '.join(allowed)}")
    both = sorted(set(fixed) & set(grid))
    require(not both, f"sweep: {', '.join(both)} is both fixed and in the grid")
    require(len(grid) > 0, "sweep: the grid is empty; give [grid] with at least one parameter and its values")
    for name, values in grid.items():
        require(isinstance(values, list) and len(values) > 0,
                f"sweep: grid parameter {name!r} needs a non-empty list of values, got {values!r}")
        require(len({json.dumps(v) for v in values}) == len(values), f"sweep: grid parameter {name!r} repeats a value")
    return SweepSpec(command, dict(fixed), {k: list(v) for k, v in grid.items()})


def run_key(command: str, params: dict) -> str:
    """A run's identity: a hash of its command and every parameter value."""
    text = json.dumps({"command": command, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- running and gathering
@dataclass
class SweepResult:
    """Every run's parameters and metrics, what failed, what was skipped as already finished."""

    command: str
    grid: dict[str, list]
    fixed: dict[str, Any]
    rows: list[dict[str, Any]]  # one per run: key, grid parameters, status, metrics, error
    metrics: list[str]
    n_run: int
    n_skipped: int
    n_failed: int
    seconds: float
    figures: dict[str, bytes] = field(default_factory=dict, repr=False)

    def summary_rows(self) -> list[dict[str, Any]]:
        """Mean and standard deviation over seeds for each combination of the other grid parameters."""
        groups: dict[tuple, list[dict]] = {}
        keys = [k for k in self.grid if k != "seed"]
        for r in self.rows:
            if r["status"] == "ok":
                groups.setdefault(tuple(json.dumps(r[k]) for k in keys), []).append(r)
        out = []
        for g, rs in groups.items():
            row = {k: json.loads(v) for k, v in zip(keys, g)}
            row["runs"] = len(rs)
            for m in self.metrics:
                vals = [float(r[m]) for r in rs if isinstance(r.get(m), (int, float))]
                mean = sum(vals) / len(vals) if vals else float("nan")
                sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                row[m], row[f"{m} sd"] = mean, sd
            out.append(row)
        return out

    def report_sections(self):
        from .report import Figure, Metrics, Table, Text

        cols = ["key", *self.grid, "status", *self.metrics]
        secs = [Metrics("Sweep", {"command": self.command, "runs": len(self.rows), "ran now": self.n_run,
                                  "skipped (finished before)": self.n_skipped, "failed": self.n_failed,
                                  "fixed parameters": json.dumps(self.fixed), "seconds": round(self.seconds, 1)})]
        summ = self.summary_rows()
        if summ:
            scols = [c for c in summ[0] if c != "runs"] + ["runs"]
            secs.append(Table("Mean ± sd over seeds", scols, [[_cell(r[c]) for c in scols] for r in summ]))
        secs += [Figure(f"{m} (mean over seeds, error bars: sd)", png) for m, png in self.figures.items()]
        secs.append(Table("Every run", cols, [[_cell(r.get(c, "")) for c in cols] for r in self.rows]))
        failed = [r for r in self.rows if r["status"] != "ok"]
        if failed:
            secs.append(Text("Failed runs", "\n".join(f"{r['key']}: {r['error']}" for r in failed)))
        return secs


def _cell(v):
    return f"{v:.4f}" if isinstance(v, float) else v


def _plot(result: SweepResult, metric: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import figure_png

    rows = result.summary_rows()
    keys = [k for k in result.grid if k != "seed"]
    labels = [", ".join(f"{k}={r[k]}" for k in keys) or "all" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.2))
    ax.errorbar(range(len(rows)), [r[metric] for r in rows], yerr=[r[f"{metric} sd"] for r in rows],
                fmt="o", capsize=4)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± sd over {'seeds' if 'seed' in result.grid else 'runs'}")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def _check_out(out: Path) -> None:
    if out.exists():
        require(out.is_dir(), f"--out {out} is a file; give a folder")
        entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        require(not entries or (out / MARKER).is_file(),
                f"--out {out} holds other things than a sweep ({', '.join(sorted(entries)[:4])}); "
                "choose a new or empty folder, or the folder of an earlier run of this sweep")


def run_sweep(spec: dict | str | Path | SweepSpec, out: str | Path, *, ray_address: str | None = None,
              threads: int | None = 1, num_gpus: float = 0, plots: bool = True,
              progress: Callable[[float, str], None] | None = None) -> SweepResult:
    """Run every combination of ``spec``'s grid not finished in ``out`` before, each as one unit of
    :func:`~workbench.backend.run_tasks` (``ray_address`` None: serially here; ``"local"``,
    ``"auto"``, ``"HOST:PORT"``: Ray tasks with ``threads`` CPUs and ``num_gpus`` GPUs each), and
    write ``runs/KEY.json`` per run, ``results.csv``, ``results.json``, ``plot_METRIC.png`` and the
    report (``report.html``, ``report.json``) into ``out``."""
    sweep = spec if isinstance(spec, SweepSpec) else parse_sweep(spec)
    out = Path(out)
    _check_out(out)
    runs = sweep.runs()
    keys = [run_key(sweep.command, p) for p in runs]
    try:
        (out / RUNS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    atomic_write_text(out / MARKER, json.dumps({"command": sweep.command, "params": sweep.fixed,
                                                "grid": sweep.grid}, indent=2))
    done: dict[str, dict] = {}
    for k in keys:
        f = out / RUNS / f"{k}.json"
        if f.is_file():
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if rec.get("status") == "ok":
                done[k] = rec
    todo = [i for i, k in enumerate(keys) if k not in done]
    t0 = time.perf_counter()
    finished = [0]

    def save(res: TaskResult) -> None:
        i = todo[res.index]
        rec = {"key": keys[i], "command": sweep.command, "params": runs[i], "seconds": res.seconds,
               "status": "ok" if res.ok else "failed"}
        if res.ok:
            rec["metrics"] = res.value
        else:
            rec["error"] = res.error
        atomic_write_text(out / RUNS / f"{keys[i]}.json", json.dumps(rec, indent=2))
        done[keys[i]] = rec
        finished[0] += 1
        if progress is not None:
            progress(finished[0] / max(1, len(todo)), f"{finished[0]}/{len(todo)} runs")

    run_tasks(run_unit, [{"command": sweep.command, "params": runs[i]} for i in todo], ray_address=ray_address,
              num_cpus_per_task=threads or 1, num_gpus=num_gpus, threads=threads, on_result=save)
    rows, metrics = [], []
    for k, p in zip(keys, runs):
        rec = done[k]
        row = {"key": k, **{g: p[g] for g in sweep.grid}, "status": rec["status"]}
        if rec["status"] == "ok":
            for m, v in rec["metrics"].items():
                if m not in metrics:
                    metrics.append(m)
                row[m] = v
        else:
            row["error"] = rec.get("error", "")
        rows.append(row)
    result = SweepResult(sweep.command, sweep.grid, sweep.fixed, rows, metrics, n_run=len(todo),
                         n_skipped=len(keys) - len(todo), n_failed=sum(r["status"] != "ok" for r in rows),
                         seconds=time.perf_counter() - t0)
    _write_tables(result, out)
    if plots and any(r["status"] == "ok" for r in rows):
        for m in metrics:
            result.figures[m] = png = _plot(result, m)
            atomic_write_bytes(out / f"plot_{_safe(m)}.png", png)
    from .report import write_report

    write_report(result, out, title=f"Sweep: {sweep.command} over {' × '.join(sweep.grid)}")
    return result


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _write_tables(result: SweepResult, out: Path) -> None:
    cols = ["key", *result.grid, "status", *result.metrics, "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in result.rows:
        w.writerow({c: (json.dumps(r[c]) if isinstance(r.get(c), (list, dict)) else r.get(c, "")) for c in cols})
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.json", json.dumps({"command": result.command, "fixed": result.fixed,
                                                        "grid": result.grid, "runs": result.rows,
                                                        "summary": result.summary_rows()}, indent=2))
