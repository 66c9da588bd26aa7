"""Backdoor check: is there a backdoor in the model, without its training data?

Neural Cleanse (Wang et al., IEEE S&P 2019; :func:`defenses.neural_cleanse.neural_cleanse`): per
class, the smallest mask and pattern sending a small clean set to that class; a class whose mask is
anomalously small (MAD anomaly index above ``threshold``, 2 in the paper) is flagged.
"""

from __future__ import annotations

import numpy as np
import torch

from ..report import ImageGrid, Metrics, Table
from .base import Check, Condition, Param, register


@register
class BackdoorCheck(Check):
    """Neural Cleanse over every class of the model (check ``backdoor``).

    Needs a model and a clean set. Parameters: ``threshold`` (anomaly index, 2.0 as in the paper),
    ``n_images`` (300 clean images), ``steps`` (30 passes per class), ``lr`` (0.1). Condition
    ``trigger anomaly`` fails when a class is flagged, naming it as the likely backdoor target. The
    result is a :class:`defenses.neural_cleanse.NeuralCleanseResult`.

    Parameters: none

    Returns
    -------
    A BackdoorCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"backdoor"``.
    """

    name = "backdoor"
    title = "Backdoor in the model (Neural Cleanse)"
    needs = ("model", "clean")
    params = {"threshold": Param(2.0, "anomaly index above which a class is flagged (paper: 2)", 0.5, 100.0),
              "n_images": Param(300, "clean images used for the reverse engineering", 10, 100_000, int),
              "steps": Param(30, "optimisation passes over those images per class", 1, 10_000, int),
              "lr": Param(0.1, "Adam learning rate of mask and pattern", 1e-5, 10.0)}

    def run(self, ctx, p, progress):
        from defenses.neural_cleanse import neural_cleanse

        clean = ctx.clean()
        return neural_cleanse(ctx.model, clean, n_images=p["n_images"], steps=p["steps"], threshold=p["threshold"],
                              lr=p["lr"], seed=ctx.seed, progress=progress)

    def conditions(self, r, p):
        top = int(np.argmax(r.anomaly_index))
        if r.flagged:
            names = ", ".join(str(c) for c in r.flagged)
            return [Condition("trigger anomaly", "fail",
                              f"class {names} has an anomalously small trigger (anomaly index "
                              f"{r.anomaly_index[r.flagged[0]]:.2f} > {p['threshold']:g}): likely backdoor target.")]
        return [Condition("trigger anomaly", "pass",
                          f"no class has an anomalously small trigger (largest anomaly index "
                          f"{r.anomaly_index[top]:.2f}, class {top}, threshold {p['threshold']:g}).")]

    def key_figure(self, r):
        return f"max anomaly {r.max_anomaly_index:.2f}"

    def sections(self, r):
        masks = torch.stack([t.mask for t in r.triggers])[:, None]
        fused = torch.stack([t.mask[None] * t.pattern for t in r.triggers])
        caps = [f"class {t.target}: |m| {t.l1:.0f}, AI {a:.1f}" for t, a in zip(r.triggers, r.anomaly_index,
                                                                                strict=True)]
        return [Metrics("Neural Cleanse", {"flagged classes": ", ".join(map(str, r.flagged)) or "none",
                                           "max anomaly index": r.max_anomaly_index, "seconds": r.seconds}),
                Table("Per class", ["class", "mask L1", "anomaly index", "attack success"],
                      [[t.target, round(t.l1, 2), round(float(a), 3), round(t.success, 3)]
                       for t, a in zip(r.triggers, r.anomaly_index, strict=True)]),
                ImageGrid("Recovered masks", masks.clamp(0, 1), caps, columns=10),
                ImageGrid("Recovered triggers (mask × pattern)", fused.clamp(0, 1), caps, columns=10)]
