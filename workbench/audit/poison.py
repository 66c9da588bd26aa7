"""Poison check: poisoned samples in the training data, with a verdict per class.

Both detectors run on the shared feature pass (the model's penultimate features): activation
clustering (Chen et al., 2019; :func:`defenses.detectors.activation_clustering_detect`: per class,
PCA to 10 dims and 2-means) and spectral signatures (Tran et al., NeurIPS 2018;
:func:`defenses.detectors.spectral_detect`). Instead of flagging a fixed top share, each class gets a
verdict from this decision rule:

    a class is "poison likely" when activation clustering's relative-size rule holds (the smaller
    of its two clusters holds at most ``size_threshold`` of the class, 0.35 as in the paper) *and*
    the spread of its features along their top singular direction (the spectral signature's top
    singular value over √n, the standard deviation along that direction) is an outlier among the
    classes: robust z = (v − median) / (1.4826 · MAD) > ``z_threshold`` (3.5, Iglewicz & Hoaglin's
    cut-off for the modified z-score).

Triggered samples relabelled to the target class sit far from its clean samples along one
direction, which inflates that class's top singular value alone (on MNIST-10k with a BadNets model:
z ≈ 5 for the target, < 1.5 for every other class). The relative-size rule alone fires on clean
classes with two writing styles (a crossed 7), which the spread test does not. The rule's
false-alarm rate on clean data (clean MNIST-10k, default CNN) is measured by ``benchmarks/audit.py``
and stated in ``docs/audit.md``. Within a flagged class, activation clustering's smaller cluster is
the set of likely poisoned samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..report import Metrics, Table
from .base import Check, Condition, Param, register

MAD_CONSISTENCY = 1.4826


@dataclass
class PoisonResult:
    """Per class and per sample evidence of poisoning, and the classes the decision rule flags.

    Parameters
    ----------
    class_names : list of str
        The K class names.
    small_share : list of float
        Per class: activation clustering's share of the class in its smaller cluster, in [0, 0.5].
    silhouette : list of float
        Per class: silhouette score of the 2-means clustering, in [-1, 1].
    spread : list of float
        Per class: top singular value of the centred features over √(class size).
    spread_z : list of float
        Per class: robust z-score of ``spread`` among the classes (:func:`robust_z`).
    spectral_max : list of float
        Per class: spectral signatures' largest normalised outlier score.
    flagged : list of int
        Classes judged "poison likely" (small cluster share ≤ ``size_threshold`` and spread z >
        ``z_threshold``).
    poison_score : numpy.ndarray
        Shape (N,): activation clustering's score per sample (≥ 2 in the small cluster of a suspected class).
    spectral_score : numpy.ndarray
        Shape (N,): spectral signatures' score per sample.
    likely_poison : numpy.ndarray
        Shape (N,), bool: in the small cluster of a flagged class.
    in_flagged_class : numpy.ndarray
        Shape (N,), bool: labelled with a flagged class.
    z_threshold : float
        The spread z threshold used.
    size_threshold : float
        The relative-size threshold used.

    Returns
    -------
    A PoisonResult (dataclass)
        Returned by :meth:`PoisonCheck.run`.
    """

    class_names: list[str]
    small_share: list[float]  # AC: share of the class in its smaller cluster
    silhouette: list[float]
    spread: list[float]  # top singular value / sqrt(class size)
    spread_z: list[float]  # robust z-score of ``spread`` among classes
    spectral_max: list[float]  # spectral signatures: largest normalised score in the class
    flagged: list[int]  # classes with "poison likely"
    poison_score: np.ndarray  # per sample: AC score (≥ 2 in the small cluster of a suspected class)
    spectral_score: np.ndarray  # per sample
    likely_poison: np.ndarray  # per sample bool: small cluster of a flagged class
    in_flagged_class: np.ndarray  # per sample bool
    z_threshold: float
    size_threshold: float


def robust_z(values) -> np.ndarray:
    """Modified z-scores (Iglewicz & Hoaglin): distance from the median in units of 1.4826·MAD.

    Parameters
    ----------
    values : array_like
        One value per class (any length ≥ 1).

    Returns
    -------
    numpy.ndarray
        float64, same length: ``(v − median) / (1.4826 · MAD)``, MAD floored at 1e-12 (equal values give 0).

    Examples
    --------
    >>> robust_z([1.0, 1.1, 0.9, 1.0, 3.0]).round(2)
    array([ 0.  ,  0.67, -0.67,  0.  , 13.49])
    """
    x = np.asarray(values, dtype=np.float64)
    med = np.median(x)
    mad = MAD_CONSISTENCY * np.median(np.abs(x - med))
    return (x - med) / max(mad, 1e-12)


@register
class PoisonCheck(Check):
    """Poisoned training samples by activation clustering and spectral signatures (check ``poison``).

    Needs a model and the training data; runs both detectors on the shared feature pass and applies the
    decision rule of the module docstring with ``z_threshold`` (3.5) and ``size_threshold`` (0.35).
    Condition ``poisoned classes`` fails when a class is flagged. Contributes ``poison_score``,
    ``spectral_score``, ``in_flagged_class`` and ``likely_poison`` to the suspects.

    Parameters: none

    Returns
    -------
    A PoisonCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"poison"``.
    """

    name = "poison"
    title = "Poison in the training data"
    needs = ("model", "train")
    params = {"z_threshold": Param(3.5, "robust z-score of a class's feature spread (top singular value / "
                                        "sqrt(n)) above which it is flagged", 0.0, 100.0),
              "size_threshold": Param(0.35, "activation clustering's relative-size rule: smaller cluster share "
                                            "at most this", 0.01, 0.5)}

    def run(self, ctx, p, progress):
        from defenses.detectors import activation_clustering_detect, spectral_detect

        ds, feats = ctx.train, ctx.features()
        progress(0.3, "spectral signatures")
        sp = spectral_detect(ctx.model, ds, features=feats)
        progress(0.5, "activation clustering")
        ac = activation_clustering_detect(ctx.model, ds, size_threshold=p["size_threshold"], seed=ctx.seed,
                                          features=feats)
        names = list(ds.class_names)
        per = ac.details["per_class"]
        share = [float(per.get(n, {}).get("small_cluster_share", 0.5)) for n in names]
        sil = [float(per.get(n, {}).get("silhouette", 0.0)) for n in names]
        labels = ds.labels.numpy()
        counts = np.bincount(labels, minlength=len(names))
        spc = sp.details["per_class"]
        spread = [float(spc[n]["top_singular_value"]) / np.sqrt(counts[c]) if n in spc else 0.0
                  for c, n in enumerate(names)]
        z = robust_z(spread)
        flagged = [c for c in range(len(names)) if share[c] <= p["size_threshold"] and z[c] > p["z_threshold"]]
        score = ac.scores.numpy().astype(np.float64)
        member = np.isin(labels, flagged)
        likely = member & (score >= 2.0)
        sp_max = [float(sp.details["per_class"].get(n, {}).get("max_normalized_score", 0.0)) for n in names]
        return PoisonResult(names, share, sil, spread, z.tolist(), sp_max, flagged, score, sp.scores.numpy(), likely, member,
                            p["z_threshold"], p["size_threshold"])

    def conditions(self, r, p):
        if r.flagged:
            c = r.flagged[0]
            names = ", ".join(r.class_names[k] for k in r.flagged)
            return [Condition("poisoned classes", "fail",
                              f"class {names}: poison likely ({int(r.likely_poison.sum())} samples in a separate "
                              f"cluster holding {r.small_share[c]:.0%} of the class, spread z "
                              f"{r.spread_z[c]:.1f} > {p['z_threshold']:g}).")]
        top = int(np.argmax(r.spread_z))
        return [Condition("poisoned classes", "pass",
                          f"no evidence of poison in any class (largest spread z {r.spread_z[top]:.1f}, "
                          f"class {r.class_names[top]}, threshold {p['z_threshold']:g}).")]

    def key_figure(self, r):
        return f"{len(r.flagged)} class(es), {int(r.likely_poison.sum())} samples"

    def sections(self, r):
        rows = [[n, "poison likely" if i in r.flagged else "no evidence", round(r.small_share[i], 3),
                 round(r.silhouette[i], 3), round(r.spread[i], 3), round(r.spread_z[i], 2),
                 round(r.spectral_max[i], 1)]
                for i, n in enumerate(r.class_names)]
        return [Metrics("Poison", {"flagged classes": ", ".join(r.class_names[k] for k in r.flagged) or "none",
                                   "likely poisoned samples": int(r.likely_poison.sum())}),
                Table("Per class", ["class", "verdict", "smaller cluster share", "silhouette", "spread",
                                    "spread z", "spectral max score"], rows)]

    def suspects(self, r):
        return {"poison_score": r.poison_score, "spectral_score": r.spectral_score,
                "in_flagged_class": r.in_flagged_class, "likely_poison": r.likely_poison}
