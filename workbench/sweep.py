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
    """One ``workbench attack badnets|blended`` run (the same library call, the same seeds): CA, ASR, RA.

    Calls :func:`attacks.backdoor.run_backdoor_attack`: poison ``rate`` of the training set, train the
    victim, measure it on the clean and the triggered test set.

    Parameters
    ----------
    attack : {"badnets", "blended"}, default "badnets"
        The trigger: a patch (BadNets) or a blended pattern.
    data : str, default "mnist10k"
        Dataset spec.
    rate : float, default 0.05
        Share of the training set poisoned.
    target : int, default 0
        The attack's target class.
    seed : int, default 0
        Seeds the poisoning, the split and the training.
    epochs : int, default 0
        Training epochs (0: the architecture's default).
    model : str, default "cnn"
        Victim architecture.
    mode : str, default "dirty"
        ``"dirty"`` (relabel poisoned samples) or ``"clean"`` (clean-label: only target-class samples).
    patch_size, position, pattern
        BadNets trigger: patch side (default 3), corner (default ``"bottom-right"``), pattern (default
        ``"solid"``).
    alpha, pattern_seed
        Blended trigger: blend weight (default 0.15) and the seed of its random pattern (default 0).
    device : str, default "cpu"
        Where to train.

    Returns
    -------
    dict of str to float
        ``{"CA": clean accuracy, "ASR": attack success rate, "RA": robust accuracy}``, each in [0, 1].

    Raises
    ------
    BadInput
        If ``attack`` is neither ``badnets`` nor ``blended``, or the attack refuses a parameter.
    """
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
    """One ``workbench train`` run: the test accuracy of a fresh model on a seeded split.

    Parameters
    ----------
    data : str, default "mnist10k"
        Dataset spec.
    model : str, default "cnn"
        Architecture.
    epochs : int, default 0
        Training epochs (0: the architecture's default).
    seed : int, default 0
        Seeds the split and the training.
    test_fraction : float, default 0.2
        Held-out share.
    device : str, default "cpu"
        Where to train.

    Returns
    -------
    dict of str to float
        ``{"test_accuracy": ...}``, in [0, 1].

    Raises
    ------
    BadInput
        If the data, the architecture or a parameter is refused (see
        :func:`workbench.training.train_classifier`).
    """
    from .training import train_classifier

    t = train_classifier(data, model, epochs=epochs or None, seed=seed, test_fraction=test_fraction, device=device)
    return {"test_accuracy": float(t.evaluation.accuracy)}


#: Sweepable commands: name -> module-level function taking the command's options as keywords and
#: returning a flat dict of numbers. A new command is one function and one line here.
SWEEP_COMMANDS: dict[str, Callable[..., dict[str, float]]] = {"attack": attack_run, "train": train_run}

RUNS = "runs"
MARKER = "sweep.json"


def run_unit(command: str, params: dict) -> dict[str, float]:
    """What each sweep task executes: ``SWEEP_COMMANDS[command](**params)`` (importable by Ray workers).

    Parameters
    ----------
    command : str
        A key of :data:`SWEEP_COMMANDS`.
    params : dict
        The command's keyword arguments for this run.

    Returns
    -------
    dict of str to float
        The run's metrics.

    Raises
    ------
    KeyError
        If the command is unknown (:func:`parse_sweep` has checked it before).
    """
    return SWEEP_COMMANDS[command](**params)


# ---------------------------------------------------------------- the sweep file
@dataclass
class SweepSpec:
    """A parsed sweep: the command, the parameters fixed for every run, and the grid.

    Parameters
    ----------
    command : str
        A key of :data:`SWEEP_COMMANDS`.
    fixed : dict
        Parameter → value for every run (the file's ``[params]``).
    grid : dict
        Parameter → list of values (the file's ``[grid]``); every combination is one run.

    Returns
    -------
    A SweepSpec (dataclass)
        :meth:`runs` lists the runs' parameters.
    """
    command: str
    fixed: dict[str, Any]
    grid: dict[str, list]

    def runs(self) -> list[dict[str, Any]]:
        """Every combination of the grid over the fixed parameters, in file order (last grid key fastest).

        Parameters: none

        Returns
        -------
        list of dict
            One parameter dict per run.

        Examples
        --------
        >>> SweepSpec("train", {"epochs": 1}, {"seed": [0, 1], "model": ["cnn"]}).runs()
        [{'epochs': 1, 'seed': 0, 'model': 'cnn'}, {'epochs': 1, 'seed': 1, 'model': 'cnn'}]
        """
        names = list(self.grid)
        return [{**self.fixed, **dict(zip(names, combo))} for combo in itertools.product(*self.grid.values())]


def parse_sweep(spec: dict | str | Path) -> SweepSpec:
    """A sweep from a TOML file, TOML text or a dict, checked before anything runs.

    Parameters
    ----------
    spec : dict, str or Path
        A dict with ``command``, ``params`` (optional) and ``grid``; TOML text of that form; or the path
        of a ``.toml`` file (a one-line string ending in ``.toml``, or a ``Path``).

    Returns
    -------
    SweepSpec

    Raises
    ------
    BadInput
        If the file is missing or not valid TOML, a top-level key other than ``command``, ``params``,
        ``grid`` appears, the command is unknown, a parameter is not one of the command's, a
        parameter is both fixed and in the grid, the grid is empty, or a grid value is not a non-empty
        list without repeats.

    Examples
    --------
    >>> sweep = parse_sweep('''
    ... command = "train"
    ... [params]
    ... data = "digits"
    ... [grid]
    ... seed = [0, 1, 2]
    ... ''')
    >>> sweep.command, sweep.fixed, len(sweep.runs())
    ('train', {'data': 'digits'}, 3)
    >>> parse_sweep({"command": "train", "grid": {"lr": [0.1]}})
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: sweep: unknown parameter 'lr' for command 'train'; its parameters: data, model, epochs, seed, test_fraction, device
    """
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
    """A run's identity: a hash of its command and every parameter value (key order does not matter).

    Parameters
    ----------
    command : str
        The sweep command.
    params : dict
        Every parameter of the run (JSON-serialisable).

    Returns
    -------
    str
        16 hexadecimal characters; the run's file is ``runs/KEY.json``.

    Examples
    --------
    >>> key = run_key("train", {"seed": 0, "data": "digits"})
    >>> len(key), key == run_key("train", {"data": "digits", "seed": 0}), key == run_key("train", {"seed": 1, "data": "digits"})
    (16, True, False)
    """
    text = json.dumps({"command": command, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- running and gathering
@dataclass
class SweepResult:
    """Every run's parameters and metrics, what failed, what was skipped as already finished.

    Parameters
    ----------
    command : str
        The sweep command.
    grid : dict
        Parameter → values.
    fixed : dict
        Parameters fixed for every run.
    rows : list of dict
        One per run, in grid order: ``key``, the grid parameters, ``status`` (``"ok"`` or
        ``"failed"``), each metric, or ``error``.
    metrics : list of str
        Metric names, in the order first seen.
    n_run, n_skipped, n_failed : int
        Runs made now, skipped as finished before, and failed.
    seconds : float
        Wall time of the runs made now.
    figures : dict of str to bytes, default {}
        Metric → PNG of its mean ± sd plot.

    Returns
    -------
    A SweepResult (dataclass)
        :meth:`summary_rows` and :meth:`report_sections`.
    """

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
        """Mean and standard deviation over seeds for each combination of the other grid parameters.

        Only successful runs count; the sd is the sample standard deviation (n − 1), 0 for one run.

        Parameters: none

        Returns
        -------
        list of dict
            One per combination: the grid parameters other than ``seed``, ``runs``, and ``METRIC`` and
            ``METRIC sd`` for each metric.

        Examples
        --------
        >>> res = SweepResult("train", {"seed": [0, 1]}, {}, [{"key": "a", "seed": 0, "status": "ok", "acc": 0.9},
        ...                   {"key": "b", "seed": 1, "status": "ok", "acc": 0.7}], ["acc"], 2, 0, 0, 1.0)
        >>> [{k: round(v, 4) for k, v in row.items()} for row in res.summary_rows()]
        [{'runs': 2, 'acc': 0.8, 'acc sd': 0.1414}]
        """
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
        """The report's sections: the sweep's counts, the mean ± sd table, one figure per metric, every run,
        and the failed runs.

        Parameters: none

        Returns
        -------
        list
            :mod:`workbench.report` sections.
        """
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
    """Run every combination of a sweep's grid not finished in ``out`` before, and gather the results.

    Each run is one unit of :func:`~workbench.backend.run_tasks`; its JSON is written to
    ``out/runs/KEY.json`` as soon as it finishes, so re-running skips finished runs. Then ``out`` gets
    ``results.csv``, ``results.json``, ``plot_METRIC.png`` (one per metric, with ``plots``) and the
    report (``report.html``, ``report.json``); ``sweep.json`` marks the folder as a sweep's.

    Parameters
    ----------
    spec : dict, str, Path or SweepSpec
        The sweep (see :func:`parse_sweep`).
    out : str or Path
        The output folder: new, empty, or an earlier run of a sweep.
    ray_address : str, optional
        None (default): serially in this process; ``"local"``, ``"auto"``, ``"HOST:PORT"``: Ray tasks.
    threads : int, optional, default 1
        Torch threads, and Ray CPUs, per run.
    num_gpus : float, default 0
        GPUs per Ray task.
    plots : bool, default True
        Draw the mean ± sd plot of each metric (matplotlib).
    progress : callable, optional
        ``progress(fraction, message)`` as runs finish.

    Returns
    -------
    SweepResult

    Raises
    ------
    BadInput
        If the sweep is invalid, ``out`` is a file or holds other things than a sweep, ``out`` cannot be
        written, or Ray is asked for and unavailable. A run that fails does not raise: it is a row with
        status ``failed``.

    Examples
    --------
    A sweepable command is a module-level function returning a flat dict of numbers, registered in
    :data:`SWEEP_COMMANDS` (here a toy one, removed at the end):

    >>> import tempfile
    >>> def toy(x: int = 0, seed: int = 0) -> dict:
    ...     return {"y": float(x * x + seed)}
    >>> SWEEP_COMMANDS["toy"] = toy
    >>> tmp = tempfile.TemporaryDirectory()
    >>> spec = {"command": "toy", "grid": {"x": [1, 2], "seed": [0, 1]}}
    >>> res = run_sweep(spec, tmp.name, plots=False)
    >>> res.n_run, res.n_failed, [(r["x"], r["seed"], r["y"]) for r in res.rows]
    (4, 0, [(1, 0, 1.0), (1, 1, 2.0), (2, 0, 4.0), (2, 1, 5.0)])
    >>> run_sweep(spec, tmp.name, plots=False).n_skipped  # finished runs are not run again
    4
    >>> del SWEEP_COMMANDS["toy"]
    >>> tmp.cleanup()
    """
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
