"""Poison check: poisoned samples in the training data, with a verdict per class.

The check is the held-out cluster test (:func:`defenses.cluster_test.cluster_test`): per class, the
training samples' features (the input of the classifier head) are split in two, and a cluster that
the class's clean held-out samples do not fill, but that the model has learned as the class, is
poison. The held-out samples are the reference that tells a poison cluster from the natural modes of
a class, which is what the rules used before could not do on data they were not tuned on:

* activation clustering's relative-size rule (the smaller cluster holds at most 35% of the class)
  misses poison at 10% (the poison is then the *larger* cluster of the target class) and sits on the
  edge at 5% (a third of the target class);
* a robust z-score of each class's feature spread among the classes passes a backdoor when the clean
  classes are heterogeneous (on our ``shapes`` set the target's z was 4.1 against a bar of 3.5 on one
  seed, and below it on others);
* both read the penultimate ``relu5`` features, where a BadNets poison splits by source class.

Verdicts per class: "poison likely" (fail), "unlearned cluster" (warn: label errors or a poison that
did not take; the labels check looks at those samples), "inconclusive" (too few held-out samples of
the class to find a poison cluster of ``min_share`` of it; never a pass), "no evidence".
"""

from __future__ import annotations

import numpy as np

from ..report import Metrics, Table
from .base import Check, Condition, Param, register


@register
class PoisonCheck(Check):
    """Poisoned training samples by the held-out cluster test (check ``poison``).

    Needs a model, the training data and a clean held-out set. Parameters: ``alpha`` (family-wise
    false-alarm rate, 0.001), ``min_learned`` (0.5), ``min_share`` (0.1), ``n_components`` (10) and
    ``max_clusters`` (4), as in
    :func:`defenses.cluster_test.cluster_test`. Condition ``poisoned classes`` fails when a class is
    "poison likely", is inconclusive when a class cannot be decided, warns on an unlearned cluster.
    Contributes ``poison_score``, ``in_flagged_class`` and ``likely_poison`` to the suspects. The
    result is a :class:`defenses.cluster_test.ClusterTestResult`.

    Parameters: none

    Returns
    -------
    A PoisonCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"poison"``.
    """

    name = "poison"
    title = "Poison in the training data"
    needs = ("model", "train", "clean")
    params = {"alpha": Param(1e-3, "family-wise false-alarm rate of the held-out cluster test over the classes",
                             1e-12, 0.4),
              "min_learned": Param(0.5, "share of an under-filled cluster the model must predict as its class "
                                        "for 'poison likely'", 0.0, 1.0),
              "min_share": Param(0.1, "smallest share of a class a poison cluster is to be found at; a class with too "
                                      "few held-out samples for it is inconclusive", 0.001, 0.99),
              "n_components": Param(10, "PCA dimensions before each class's k-means", 1, 1000, int),
              "max_clusters": Param(4, "k-means for k = 2..this, every cluster tested", 2, 20, int)}

    def run(self, ctx, p, progress):
        from defenses.cluster_test import cluster_test

        progress(0.2, "held-out cluster test")
        return cluster_test(ctx.model, ctx.train, ctx.clean(), alpha=p["alpha"], min_learned=p["min_learned"],
                            min_share=p["min_share"], n_components=p["n_components"],
                            max_clusters=p["max_clusters"], seed=ctx.seed)

    def conditions(self, r, p):
        from defenses.cluster_test import INCONCLUSIVE, UNLEARNED

        if r.flagged:
            names = ", ".join(r.class_names[k] for k in r.flagged)
            return [Condition("poisoned classes", "fail",
                              f"class {names}: poison likely ({int(r.likely_poison.sum())} samples). "
                              + " ".join(r.reasons[k] for k in r.flagged))]
        out = []
        if r.classes(INCONCLUSIVE):
            out.append(Condition("poisoned classes", "inconclusive",
                                 "cannot rule out poison: " + " ".join(r.reasons[k] for k in r.classes(INCONCLUSIVE))))
        if r.classes(UNLEARNED):
            out.append(Condition("unlearned clusters", "warn", " ".join(r.reasons[k] for k in r.classes(UNLEARNED))))
        if not out:
            top = int(np.argmin(r.p_values))
            out.append(Condition("poisoned classes", "pass",
                                 f"every class's held-out samples fill its clusters (smallest p {r.p_values[top]:.1e}, "
                                 f"class {r.class_names[top]}, bar {r.bar:.1e})."))
        return out

    def key_figure(self, r):
        return f"{len(r.flagged)} class(es), {int(r.likely_poison.sum())} samples"

    def sections(self, r):
        rows = [[n, r.verdicts[i], round(float(r.train_share[i]), 3), round(float(r.heldout_share[i]), 3),
                 f"{r.p_values[i]:.2g}", round(float(r.learned[i]), 3), int(r.n_train[i]), int(r.n_heldout[i])]
                for i, n in enumerate(r.class_names)]
        return [Metrics("Poison", {"flagged classes": ", ".join(r.class_names[k] for k in r.flagged) or "none",
                                   "likely poisoned samples": int(r.likely_poison.sum()),
                                   "per-test bar": f"{r.bar:.1e}", "features": r.layer}),
                Table("Per class: the cluster the held-out samples fill least", ["class", "verdict", "training share",
                      "held-out share", "binomial p", "learned as the class", "training samples",
                      "held-out samples"], rows)]

    def suspects(self, r):
        return {"poison_score": r.scores, "in_flagged_class": r.in_flagged_class, "likely_poison": r.likely_poison}
