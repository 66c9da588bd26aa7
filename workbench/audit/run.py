"""``audit(model, data, checks=..., config=...) -> AuditReport``: every check, one report, verdicts,
and the evidence joined per training sample (the suspects table)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import ImageDataset, as_dataset
from ..errors import BadInput
from ..report import ImageGrid, Table, Text
from .base import CHECKS, NEEDS, AuditContext, CheckOutcome, Condition, select_checks, validate_config, worst

# progress(check, fraction within the check, message)
AuditProgress = Callable[[str, float, str], None]
SUSPECT_ROWS = 50
SALIENCY_SUSPECTS = 64  # suspects whose saliency map is computed and compared with the recovered trigger


@dataclass
class Suspects:
    """Per training sample evidence from every check that has some, joined on the index.

    Parameters
    ----------
    columns : dict of str to numpy.ndarray
        Column name → array of length N (the training set's size): ``given`` (label), the checks'
        columns (:meth:`workbench.audit.base.Check.suspects`, e.g. ``suggested``, ``label_score``,
        ``poison_score``, ``likely_poison``), ``verdict`` (``"label error"``, ``"likely poison"``,
        ``"both"`` or ``""``) and, with a model and a flagged class, ``saliency_on_trigger``.
    order : numpy.ndarray
        Indices of the samples with a verdict, most suspicious first ("both", then likely poison by
        decreasing poison score, then label errors by increasing label score).
    class_names : list of str
        The training set's class names.

    Returns
    -------
    A Suspects (dataclass)
        Made by :func:`join_suspects`; rows with :meth:`rows`, a CSV with :meth:`csv`.
    """

    columns: dict[str, np.ndarray]
    order: np.ndarray  # indices, most suspicious first (only samples with a verdict)
    class_names: list[str]

    def rows(self, limit: int | None = None) -> list[dict]:
        """The suspects as records, most suspicious first.

        Parameters
        ----------
        limit : int or None, default None
            At most this many rows; None for all of :attr:`order`.

        Returns
        -------
        list of dict
            One dict per suspect: ``index`` then every column's value (numpy scalars as Python ones).
        """
        idx = self.order if limit is None else self.order[:limit]
        out = []
        for i in idx:
            row = {"index": int(i)}
            for k, v in self.columns.items():
                x = v[i]
                row[k] = x.item() if hasattr(x, "item") else x
            out.append(row)
        return out

    def csv(self) -> str:
        """Every suspect as CSV text (what ``suspects.csv`` holds).

        Parameters: none

        Returns
        -------
        str
            A header row (``index`` and the column names), then one row per suspect; floats with 6
            significant digits.
        """
        buf = io.StringIO()
        w = csv.writer(buf)
        keys = ["index", *self.columns]
        w.writerow(keys)
        for r in self.rows():
            w.writerow([f"{r[k]:.6g}" if isinstance(r[k], float) else r[k] for k in keys])
        return buf.getvalue()


def _saliency_on_trigger(model, ds: ImageDataset, outcomes: list[CheckOutcome], cols: dict) -> None:
    """For the likely-poisoned samples of a class the backdoor scan flagged: does the Grad-CAM map
    (default layer, explaining the given label) peak where the recovered trigger mask is on?"""
    from ..saliency import GradCAM, upsample

    back = next((o.result for o in outcomes if o.check == "backdoor"), None)
    poison = cols.get("likely_poison")
    if back is None or poison is None or not back.flagged:
        return
    labels = cols["given"]
    peaks = np.full(len(ds), "", dtype=object)
    for t in back.flagged:
        idx = np.flatnonzero(poison & (labels == t))[:SALIENCY_SUSPECTS]
        if not len(idx):
            continue
        mask = back.triggers[[tr.target for tr in back.triggers].index(t)].mask
        on = mask >= 0.5 * float(mask.max())
        maps = next(iter(GradCAM(model).attribute_layers(ds.images[idx], ds.labels[idx]).values()))
        maps = upsample(maps.detach().cpu(), tuple(ds.image_size))[:, 0]
        peak = maps.flatten(1).argmax(1)
        hit = on.flatten()[peak].numpy()
        peaks[idx] = np.where(hit, "yes", "no")
    cols["saliency_on_trigger"] = peaks


def join_suspects(ds: ImageDataset, outcomes: list[CheckOutcome], model=None) -> Suspects | None:
    """One table over the training data: given label, suggested label, label-issue score, poison score,
    membership of a flagged class, whether a likely-poisoned sample's saliency peaks on the trigger the
    backdoor scan recovered (with ``model``), and a verdict (label error / likely poison / both).

    Parameters
    ----------
    ds : ImageDataset
        The training data the checks ran on (N samples).
    outcomes : list of CheckOutcome
        The audit's outcomes; those with a result contribute their
        :meth:`~workbench.audit.base.Check.suspects` columns.
    model : nn.Module or None, default None
        With it, Grad-CAM maps (default layer, given label) of up to 64 likely-poisoned samples per
        class flagged by the backdoor check are compared with the recovered trigger mask (where the
        mask is at least half its maximum).

    Returns
    -------
    Suspects or None
        None when no check contributed a column.
    """
    n = len(ds)
    cols: dict[str, np.ndarray] = {"given": ds.labels.numpy().astype(int)}
    for o in outcomes:
        if o.result is not None:
            for k, v in CHECKS[o.check].suspects(o.result).items():
                cols[k] = np.asarray(v)
    if len(cols) == 1:
        return None
    label = cols.get("label_issue", np.zeros(n, dtype=bool))
    poison = cols.get("likely_poison", np.zeros(n, dtype=bool))
    verdict = np.full(n, "", dtype=object)
    verdict[label & ~poison] = "label error"
    verdict[poison & ~label] = "likely poison"
    verdict[poison & label] = "both"
    cols["verdict"] = verdict
    if model is not None:
        _saliency_on_trigger(model, ds, outcomes, cols)
    has = np.flatnonzero(verdict != "")
    rank = {"both": 0, "likely poison": 1, "label error": 2}
    score = cols.get("poison_score", np.zeros(n))
    lscore = cols.get("label_score", np.ones(n))
    key = sorted(has.tolist(), key=lambda i: (rank[verdict[i]], -float(score[i]), float(lscore[i])))
    return Suspects(cols, np.asarray(key, dtype=int), list(ds.class_names))


@dataclass
class AuditReport:
    """Every check's verdict, conditions and result, and the suspects table.

    Parameters
    ----------
    verdict : str
        The worst verdict over the checks that ran (``"pass"``, ``"warn"`` or ``"fail"``).
    outcomes : list of CheckOutcome
        One per check that ran, in the order run.
    skipped : dict of str to str
        Check name → why it did not run (an unmet need).
    suspects : Suspects or None
        The per-sample evidence joined over the checks (:func:`join_suspects`); None without training data.
    data : str
        The data's name.
    model : str
        Where the model came from (its source, or its class name).
    seconds : float
        Wall time of the whole audit.

    Returns
    -------
    An AuditReport (dataclass)
        Returned by :func:`audit`; :func:`workbench.report.write_report` renders its
        :meth:`report_sections`.
    """

    verdict: str  # worst over the checks that ran
    outcomes: list[CheckOutcome]
    skipped: dict[str, str]  # check → why it did not run
    suspects: Suspects | None
    data: str
    model: str
    seconds: float
    _images: Any = field(default=None, repr=False)  # training images, for thumbnails

    @property
    def failing(self) -> list[tuple[str, Condition]]:
        """Every failing condition with its check's name.

        Parameters: none

        Returns
        -------
        list of (str, Condition)
            Check name and condition, for each condition whose verdict is ``"fail"``.
        """
        return [(o.check, c) for o in self.outcomes for c in o.failing]

    def outcome(self, name: str) -> CheckOutcome:
        """The outcome of the check called ``name``.

        Parameters
        ----------
        name : str
            A check that ran.

        Returns
        -------
        CheckOutcome
            Its outcome.

        Raises
        ------
        KeyError
            When no check of that name ran.
        """
        for o in self.outcomes:
            if o.check == name:
                return o
        raise KeyError(name)

    def summary(self) -> dict:
        """The machine-readable summary (what ``--json`` prints).

        Parameters: none

        Returns
        -------
        dict
            ``verdict``, ``data``, ``model``, ``seconds``, ``checks`` (per check: verdict, key figure,
            seconds, params, conditions), ``skipped`` and ``suspects`` (their count); JSON-serialisable.
        """
        return {"verdict": self.verdict, "data": self.data, "model": self.model, "seconds": round(self.seconds, 2),
                "checks": [{"check": o.check, "verdict": o.verdict, "key_figure": o.key_figure,
                            "seconds": round(o.seconds, 2), "params": o.params,
                            "conditions": [{"name": c.name, "verdict": c.verdict, "reason": c.reason}
                                           for c in o.conditions]} for o in self.outcomes],
                "skipped": self.skipped,
                "suspects": 0 if self.suspects is None else len(self.suspects.order)}

    def verdict_rows(self) -> list[list]:
        """The verdict table: one row per check that ran, then one per skipped check.

        Parameters: none

        Returns
        -------
        list of list
            ``[check, verdict, key figure, reason]``; the reason joins the conditions that gave the
            check's verdict (a skipped check's reason is why it was skipped).
        """
        rows = []
        for o in self.outcomes:
            shown = [c for c in o.conditions if c.verdict == o.verdict] or o.conditions
            rows.append([o.check, o.verdict, o.key_figure, " ".join(c.reason for c in shown)])
        rows += [[k, "skipped", "", v] for k, v in self.skipped.items()]
        return rows

    def report_sections(self):
        """The HTML report's sections: verdicts, each check's conditions and sections, the suspects.

        Parameters: none

        Returns
        -------
        list
            :mod:`workbench.report` sections (``Table``, ``Text``, the checks' sections and, when there
            are suspects, their top 50 as a table and the top 32 as thumbnails).
        """
        secs: list = [Table(f"Verdicts: {self.verdict}", ["check", "verdict", "key figure", "reason"],
                            self.verdict_rows(), note=f"{self.model} on {self.data}, {self.seconds:.1f} s")]
        for o in self.outcomes:
            check = CHECKS[o.check]
            secs.append(Text(f"{check.title}: {o.verdict}",
                             "\n".join(f"[{c.verdict}] {c.name}: {c.reason}" for c in o.conditions)))
            secs += check.sections(o.result)
        if self.suspects is not None and len(self.suspects.order):
            rows = self.suspects.rows(SUSPECT_ROWS)
            keys = list(rows[0])
            secs.append(Table(f"Suspects ({len(self.suspects.order)}; top {min(SUSPECT_ROWS, len(rows))})", keys,
                              [[round(r[k], 4) if isinstance(r[k], float) else r[k] for k in keys] for r in rows],
                              note="download suspects.csv for all of them"))
            if self._images is not None:
                top = self.suspects.order[:32]
                caps = [f"#{i} {self.suspects.columns['verdict'][i]}" for i in top]
                secs.append(ImageGrid("Suspects", self._images[top], caps))
        return secs


def audit(model, data, checks: str | list[str] | None = None, config: dict | None = None, *, test=None,
          provenance: dict | None = None, seed: int = 0, device: str = "cpu",
          progress: AuditProgress | None = None) -> AuditReport:
    """Run ``checks`` (default: every registered check whose needs are met) on ``model`` and its
    training ``data`` (anything :func:`workbench.data.as_dataset` takes; may be None for model-only
    checks given ``test``).

    ``model``: a :class:`workbench.models.LoadedModel` (its card's provenance gives the held-out split),
    an ``nn.Module`` or callable, or None. ``config`` maps a check name to parameter overrides
    (``{"poison": {"max_false_alarm": 0.01}}``); unknown checks or parameters and values outside their
    range raise :class:`BadInput` before any work, as does an explicitly named check whose needs are
    not met (an unnamed one is skipped, with the reason in ``skipped``).

    Parameters
    ----------
    model : LoadedModel, nn.Module, callable or None
        The model under audit; a :class:`workbench.models.LoadedModel` is bound to the data's shape and
        classes and its card's provenance is used when ``provenance`` is None.
    data : dataset spec, ImageDataset, tensors or None
        The model's training data (anything :func:`workbench.data.as_dataset` takes).
    checks : str, list of str or None, default None
        Check names (a comma-separated string or a list); None runs every registered check whose
        needs are met.
    config : dict or None, default None
        Check name → parameter overrides.
    test : dataset or None, default None
        A held-out test set (the clean set for ``accuracy``, ``backdoor``, ``robustness``,
        ``explanations``).
    provenance : dict or None, default None
        Training provenance (gives the held-out split of ``data`` when ``test`` is None).
    seed : int, default 0
        Seed for every random choice of the checks.
    device : str, default "cpu"
        Torch device.
    progress : callable or None, default None
        ``progress(check, fraction, message)``, called as each check advances.

    Returns
    -------
    AuditReport
        The overall verdict, each check's outcome, the skipped checks and the suspects table.

    Raises
    ------
    BadInput
        When a check name, config key or parameter value is invalid, a named check's needs are not
        met, no check can run at all, or the training and test images differ in shape.
    """
    from ..adapter import as_model
    from ..models import LoadedModel

    t0 = time.perf_counter()
    explicit = checks is not None
    names = select_checks(checks)
    params = validate_config(config, names)
    train = as_dataset(data) if data is not None else None
    test_ds = as_dataset(test) if test is not None else None
    source = "no model"
    if isinstance(model, LoadedModel):
        ref = train if train is not None else test_ds
        if ref is not None:
            model = model.bind(ref.input_shape, ref.num_classes, ref.class_names)
        provenance = provenance if provenance is not None else dict(model.card.provenance)
        source, net = model.source, model.model
    elif model is not None:
        net = as_model(model)
        source = type(model).__name__
    else:
        net = None
    if train is not None and test_ds is not None and train.input_shape != test_ds.input_shape:
        raise BadInput(f"training images are {train.input_shape} but test images are {test_ds.input_shape}")
    ctx = AuditContext(net, train, test_ds, provenance, seed, device)
    run_names, skipped = [], {}
    for n in names:
        missing = [need for need in CHECKS[n].needs if not ctx.has(need)]
        if missing:
            why = f"check {n!r} needs " + " and ".join(NEEDS[m] for m in missing)
            if "clean" in missing and ctx.train is not None:
                why += f" ({ctx.evaluation()[1]})"
            if explicit:
                raise BadInput(why)
            skipped[n] = why
        else:
            run_names.append(n)
    if not run_names:
        raise BadInput("no check can run: " + "; ".join(skipped.values()))
    outcomes = []
    for n in run_names:
        check = CHECKS[n]
        def sub(f, m="", _n=n):
            if progress is not None:
                progress(_n, f, m)
        sub(0.0, "starting")
        t = time.perf_counter()
        result = check.run(ctx, params[n], sub)
        conds = check.conditions(result, params[n])
        outcomes.append(CheckOutcome(n, worst(c.verdict for c in conds), check.key_figure(result), conds, result,
                                     params[n], time.perf_counter() - t))
        sub(1.0, outcomes[-1].verdict)
    suspects = join_suspects(train, outcomes, net) if train is not None else None
    name = train.name if train is not None else (test_ds.name if test_ds is not None else "no data")
    return AuditReport(worst(o.verdict for o in outcomes), outcomes, skipped, suspects, name, source,
                       time.perf_counter() - t0, _images=train.images if train is not None else None)
