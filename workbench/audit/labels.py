"""Labels check: the confident-learning label audit (:func:`workbench.labels.audit_labels`) on the
shared out-of-sample probabilities, with its estimated error rate; a warning when the out-of-sample
accuracy is too low for the flags to be trusted."""

from __future__ import annotations

import numpy as np

from ..report import Metrics, Table
from .base import Check, Condition, Param, register


@register
class LabelsCheck(Check):
    """Confident-learning label audit on the shared out-of-sample probabilities (check ``labels``).

    Needs a model and the training data. Conditions: ``error rate`` fails above ``fail_above``
    (0.05) and warns above ``warn_above`` (0.02) of estimated label errors; ``trust`` warns when the
    out-of-sample accuracy is below ``min_accuracy`` (0.8), since the flags then mix model errors
    with label errors. Contributes ``suggested``, ``label_score`` and ``label_issue`` to the suspects.

    Parameters: none

    Returns
    -------
    A LabelsCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"labels"``.
    """

    name = "labels"
    title = "Label errors (confident learning)"
    needs = ("model", "train")
    params = {"fail_above": Param(0.05, "fail when the estimated label error rate exceeds this", 0.0, 1.0),
              "warn_above": Param(0.02, "warn when the estimated label error rate exceeds this", 0.0, 1.0),
              "min_accuracy": Param(0.8, "warn when out-of-sample accuracy is below this (flags untrustworthy)",
                                    0.0, 1.0)}

    def run(self, ctx, p, progress):
        from ..labels import audit_labels

        oos = ctx.out_of_sample()
        return audit_labels(ctx.train, pred_probs=oos.pred_probs, n_jobs=1, seed=ctx.seed)

    def conditions(self, a, p):
        rate = float(a.estimated_error_rate)
        said = f"estimated label error rate {rate:.2%} ({a.estimated_errors} of {a.n}), {a.num_flagged} flagged"
        if rate > p["fail_above"]:
            out = [Condition("error rate", "fail", f"{said}: over {p['fail_above']:.1%}.")]
        elif rate > p["warn_above"]:
            out = [Condition("error rate", "warn", f"{said}: over {p['warn_above']:.1%}.")]
        else:
            out = [Condition("error rate", "pass", f"{said}.")]
        acc = float(a.out_of_sample_accuracy)
        if acc < p["min_accuracy"]:
            out.append(Condition("trust", "warn", f"out-of-sample accuracy {acc:.1%} is below "
                                 f"{p['min_accuracy']:.0%}, so the flags mix model errors with label errors."))
        else:
            out.append(Condition("trust", "pass", f"out-of-sample accuracy {acc:.1%} supports the flags."))
        return out

    def key_figure(self, a):
        return f"est. errors {float(a.estimated_error_rate):.2%}"

    def sections(self, a):
        rows = [[r["index"], a.class_names[r["given"]], a.class_names[r["suggested"]], round(r["score"], 4)]
                for r in a.flagged_rows(limit=50)]
        return [Metrics("Labels", {"estimated error rate": float(a.estimated_error_rate),
                                   "flagged": a.num_flagged, "out-of-sample accuracy": float(a.out_of_sample_accuracy)}),
                Table("Most likely label errors (top 50)", ["index", "given", "suggested", "score"], rows)]

    def suspects(self, a):
        flagged = np.zeros(a.n, dtype=bool)
        flagged[np.asarray(a.flagged, dtype=int)] = True
        return {"suggested": np.asarray(a.suggested), "label_score": np.asarray(a.scores),
                "label_issue": flagged}
