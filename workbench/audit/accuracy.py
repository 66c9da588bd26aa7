"""Accuracy check: held-out accuracy, per-class accuracy and the confusion matrix.

The evaluation set is the given test set, or the model's own held-out split of the training data
(from its card, :func:`workbench.data.held_out`), never samples the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..report import Heatmap, Metrics, Table
from ..training import evaluate
from .base import Check, Condition, Param, register


@dataclass
class AccuracyResult:
    """What the accuracy check measured on the evaluation (held-out) set.

    Parameters
    ----------
    accuracy : float
        Share of the evaluation set classified correctly, in [0, 1].
    per_class : list of float
        Per class: recall (the diagonal of the confusion matrix over its row sum; 0 for an absent class).
    confusion : numpy.ndarray
        K×K counts, rows the true class, columns the predicted one.
    n : int
        Evaluation samples.
    evaluated_on : str
        Where the evaluation set came from (the given test set or the card's held-out split).
    class_names : list of str
        The K class names.

    Returns
    -------
    An AccuracyResult (dataclass)
        Returned by :meth:`AccuracyCheck.run`.
    """

    accuracy: float
    per_class: list[float]
    confusion: np.ndarray
    n: int
    evaluated_on: str
    class_names: list[str]


@register
class AccuracyCheck(Check):
    """Held-out accuracy, per-class accuracy and the confusion matrix (check ``accuracy``).

    Needs a model and a clean set. Conditions: ``accuracy`` fails below ``fail_below`` (0.5), warns
    below ``warn_below`` (0.9); ``per-class accuracy`` warns when a class is below
    ``class_warn_below`` (0.7), naming the worst.

    Parameters: none

    Returns
    -------
    An AccuracyCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"accuracy"``.
    """

    name = "accuracy"
    title = "Held-out accuracy"
    needs = ("model", "clean")
    params = {"fail_below": Param(0.5, "fail when held-out accuracy is below this", 0.0, 1.0),
              "warn_below": Param(0.9, "warn when held-out accuracy is below this", 0.0, 1.0),
              "class_warn_below": Param(0.7, "warn when any class's accuracy is below this", 0.0, 1.0)}

    def run(self, ctx, p, progress):
        data, note = ctx.evaluation()
        ev = evaluate(ctx.model, data, device=ctx.device)
        conf = np.asarray(ev.confusion)
        per = (np.diag(conf) / np.maximum(conf.sum(1), 1)).tolist()
        return AccuracyResult(float(ev.accuracy), per, conf, len(data), note, list(data.class_names))

    def conditions(self, r, p):
        out = []
        acc = r.accuracy
        if acc < p["fail_below"]:
            out.append(Condition("accuracy", "fail", f"held-out accuracy {acc:.1%} is below {p['fail_below']:.0%}."))
        elif acc < p["warn_below"]:
            out.append(Condition("accuracy", "warn", f"held-out accuracy {acc:.1%} is below {p['warn_below']:.0%}."))
        else:
            out.append(Condition("accuracy", "pass", f"held-out accuracy {acc:.1%} on {r.n} samples."))
        low = [(r.class_names[i], a) for i, a in enumerate(r.per_class) if a < p["class_warn_below"]]
        if low:
            name, a = min(low, key=lambda t: t[1])
            out.append(Condition("per-class accuracy", "warn", f"{len(low)} class(es) below "
                                 f"{p['class_warn_below']:.0%}, worst {name} at {a:.1%}."))
        else:
            out.append(Condition("per-class accuracy", "pass",
                                 f"every class at or above {p['class_warn_below']:.0%}."))
        return out

    def key_figure(self, r):
        return f"accuracy {r.accuracy:.1%}"

    def sections(self, r):
        return [Metrics("Accuracy", {"held-out accuracy": r.accuracy, "samples": r.n, "evaluated on": r.evaluated_on}),
                Table("Per-class accuracy", ["class", "accuracy"],
                      [[n, round(a, 4)] for n, a in zip(r.class_names, r.per_class, strict=True)]),
                Heatmap("Confusion matrix", r.confusion, r.class_names, r.class_names, "predicted", "true")]
