"""The result every certifier returns: per-input decisions and radii, and the summary metrics.

A certifier either returns a class with a certified radius or abstains (prediction ``-1``, radius 0);
a deployed system then invokes its costly fallback. Metrics follow Cohen et al. (2019, Sec. 4):
*certified accuracy at radius r* is the share of inputs whose certified class is the true label and
whose radius is at least ``r``; the *average certified radius* (ACR, Zhai et al. 2020, Eq. 9) is the
mean over all inputs of the radius counted only where the certified class is correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

ABSTAIN = -1


@dataclass
class CertificationResult:
    """Per-input decisions of one certifier on one set of inputs.

    ``predictions``: certified class or ``ABSTAIN`` (-1); ``radii``: certified radius (L2 for
    smoothing, L∞ ε for interval bounds; 0 where abstaining); ``labels``: true labels or None;
    ``base_predictions``: the undefended base model's argmax on the inputs; ``extra``: method-specific
    arrays (vote counts, p-lower bounds, margin bounds).

    Parameters
    ----------
    method : str
        ``"smoothing"``, ``"smoothing-predict"`` or ``"ibp"``.
    norm : str
        ``"l2"`` or ``"linf"``: the norm of the radii.
    predictions : torch.Tensor
        N certified classes (int64), :data:`ABSTAIN` (-1) where abstaining.
    radii : torch.Tensor
        N certified radii ≥ 0 (0 where abstaining).
    labels : torch.Tensor or None
        N true labels; without them the accuracy metrics are NaN.
    base_predictions : torch.Tensor or None
        N argmax predictions of the undefended base model.
    params : dict
        The certifier's settings (σ, n, α, ε, seed, ...).
    seconds : float, default 0.0
        Wall time of the certification.
    extra : dict, default {}
        Method-specific arrays.

    Returns
    -------
    A CertificationResult (dataclass)
        Properties: ``abstain_rate``, ``accuracy`` (abstentions count as errors), ``base_accuracy``,
        ``average_certified_radius``; methods ``certified_accuracy(r)``, ``certified_curve()``, ``summary()``
        and ``report_sections()``.

    Examples
    --------
    >>> import torch
    >>> res = CertificationResult("smoothing", "l2", predictions=torch.tensor([0, 1, -1, 2]),
    ...                           radii=torch.tensor([0.5, 0.2, 0.0, 1.0]), labels=torch.tensor([0, 1, 1, 0]),
    ...                           base_predictions=torch.tensor([0, 1, 1, 2]), params={"sigma": 0.25})
    >>> res.accuracy, res.abstain_rate, res.certified_accuracy(0.3), round(res.average_certified_radius, 4)
    (0.5, 0.25, 0.25, 0.175)
    """

    method: str  # "smoothing" | "smoothing-predict" | "ibp"
    norm: str  # "l2" | "linf"
    predictions: torch.Tensor
    radii: torch.Tensor
    labels: torch.Tensor | None
    base_predictions: torch.Tensor | None
    params: dict
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def abstained(self) -> torch.Tensor:
        """Where the certifier abstains.

        Returns
        -------
        torch.Tensor
            N booleans (``predictions == ABSTAIN``).
        """
        return self.predictions == ABSTAIN

    @property
    def abstain_rate(self) -> float:
        """Share of inputs on which the certifier abstains (the fallback rate).

        Returns
        -------
        float
            In [0, 1]; 0 for no inputs.
        """
        return float(self.abstained.float().mean()) if len(self) else 0.0

    @property
    def accuracy(self) -> float:
        """Accuracy of the certified classifier: an abstention counts as an error.

        Returns
        -------
        float
            In [0, 1]; NaN without labels.
        """
        if self.labels is None:
            return float("nan")
        return float((self.predictions == self.labels).float().mean())

    @property
    def base_accuracy(self) -> float:
        """Accuracy of the undefended base model on the same inputs.

        Returns
        -------
        float
            In [0, 1]; NaN without labels or base predictions.
        """
        if self.labels is None or self.base_predictions is None:
            return float("nan")
        return float((self.base_predictions == self.labels).float().mean())

    def certified_accuracy(self, radius: float) -> float:
        """Share of inputs certified correct with radius >= ``radius``.

        Parameters
        ----------
        radius : float
            The radius r ≥ 0.

        Returns
        -------
        float
            Certified accuracy at r, in [0, 1] (NaN without labels).
        """
        if self.labels is None:
            return float("nan")
        ok = (self.predictions == self.labels) & (self.radii >= radius) & ~self.abstained
        return float(ok.float().mean())

    def certified_curve(self, radii=None, points: int = 41) -> tuple[np.ndarray, np.ndarray]:
        """``(radii, certified accuracy)`` over a grid (default: 0 .. the largest radius).

        Parameters
        ----------
        radii : array-like, optional
            The radii to evaluate (default: ``points`` values from 0 to 1.05 × the largest radius).
        points : int, default 41
            Grid size when ``radii`` is not given.

        Returns
        -------
        tuple of numpy.ndarray
            The radii and the certified accuracy at each.
        """
        if radii is None:
            top = float(self.radii.max()) if len(self) else 0.0
            radii = np.linspace(0.0, max(top, 1e-6) * 1.05, points)
        radii = np.asarray(radii, dtype=float)
        return radii, np.array([self.certified_accuracy(float(r)) for r in radii])

    @property
    def average_certified_radius(self) -> float:
        """ACR: mean radius over all inputs, counting 0 for abstentions and wrong classes.

        Returns
        -------
        float
            ≥ 0; NaN without labels.
        """
        if self.labels is None:
            return float("nan")
        ok = (self.predictions == self.labels) & ~self.abstained
        return float((self.radii * ok.float()).mean())

    def summary(self) -> dict:
        """The headline metrics and the scalar settings, e.g. for a table row.

        Returns
        -------
        dict
            ``method``, ``inputs`` (how many inputs were certified), ``accuracy``, ``base_accuracy``,
            ``abstain_rate``, ``average_certified_radius``, ``seconds``, then the scalar ``params``
            (smoothing's ``n`` is its Monte Carlo sample count, not the input count).

        Examples
        --------
        >>> import torch
        >>> r = CertificationResult("smoothing", "l2", torch.tensor([1, -1]), torch.tensor([0.5, 0.0]),
        ...                         labels=torch.tensor([1, 0]), base_predictions=torch.tensor([1, 0]),
        ...                         params={"sigma": 0.25, "n": 1000})
        >>> s = r.summary()
        >>> s["inputs"], s["n"], s["accuracy"], s["abstain_rate"]
        (2, 1000, 0.5, 0.5)
        """
        return {"method": self.method, "inputs": len(self), "accuracy": self.accuracy,
                "base_accuracy": self.base_accuracy, "abstain_rate": self.abstain_rate,
                "average_certified_radius": self.average_certified_radius, "seconds": round(self.seconds, 2),
                **{k: v for k, v in self.params.items() if isinstance(v, (int, float, str, bool))
                   and k not in ("method", "inputs", "accuracy", "base_accuracy", "abstain_rate",
                                 "average_certified_radius", "seconds")}}

    def report_sections(self):
        """The report's sections (see :func:`workbench.report.write_report`).

        Returns
        -------
        list of sections
            The metrics, and with labels the certified-accuracy curve and a table of it.
        """
        from ..report import Figure, Metrics, Table, figure_png

        if "curve_radii" in self.extra:
            r, acc = np.asarray(self.extra["curve_radii"]), np.asarray(self.extra["curve_accuracy"])
        else:
            r, acc = self.certified_curve()
        s = self.summary()
        unit = "L2 radius" if self.norm == "l2" else "L∞ ε"
        sections = [Metrics(f"Certification ({self.method})", {
            "inputs": len(self), "accuracy of the certified classifier": _pct(s["accuracy"]),
            "base model accuracy": _pct(s["base_accuracy"]), "abstain (fallback) rate": _pct(s["abstain_rate"]),
            "average certified radius": round(s["average_certified_radius"], 4), "seconds": s["seconds"],
            **{k: v for k, v in self.params.items() if isinstance(v, (int, float, str, bool))}})]
        if self.labels is not None:
            sections.append(Figure(f"Certified accuracy vs {unit}", figure_png(curve_figure(
                {self.method: (r, acc)}, unit))))
            idx = np.unique(np.linspace(0, len(r) - 1, min(len(r), 7)).round().astype(int))
            sections.append(Table("Certified accuracy", [unit, "certified accuracy"],
                                  [[round(float(r[i]), 4), _pct(float(acc[i]))] for i in idx]))
        return sections


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def curve_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str = "radius"):
    """A matplotlib figure of certified accuracy against radius, one line per entry.

    Parameters
    ----------
    curves : dict of str to (numpy.ndarray, numpy.ndarray)
        Name → (radii, certified accuracy in [0, 1]); drawn as steps, in percent.
    xlabel : str, default "radius"
        The x-axis label (e.g. ``"L2 radius"``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (Agg backend; see :func:`workbench.report.figure_png`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, (r, acc) in curves.items():
        ax.plot(r, 100 * np.asarray(acc), label=name, drawstyle="steps-post")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return fig
