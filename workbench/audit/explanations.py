"""Explanations check: the cascading model-randomization sanity check (Adebayo et al., NeurIPS 2018;
:func:`workbench.saliency.randomization_check`) for the chosen saliency method and layer. A map that
stays rank-correlated with the original after every layer's weights are re-drawn does not explain
the trained model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..report import Metrics, Table
from .base import Check, Condition, Param, register


@dataclass
class ExplanationResult:
    """The cascading model-randomization check of one saliency method at one layer.

    Parameters
    ----------
    method : str
        The saliency method's name (``"gradcam"``, ``"eigencam"``, ...).
    layer : str
        The layer explained.
    randomized : list of str
        The layers re-drawn, top down; entry k means layers[0..k] were randomized.
    rho : list of float
        Same length: mean Spearman ρ between the original and the randomized model's maps, in [-1, 1].
    n_images : int
        Images explained.

    Returns
    -------
    An ExplanationResult (dataclass)
        Returned by :meth:`ExplanationsCheck.run`.
    """

    method: str
    layer: str
    randomized: list[str]
    rho: list[float]  # mean Spearman ρ after randomising layers[0..k], top down
    n_images: int

    @property
    def final_rho(self) -> float:
        """Mean Spearman ρ after every layer has been randomized.

        Parameters: none

        Returns
        -------
        float
            The last entry of ``rho``; NaN when no layer was randomized.

        Examples
        --------
        >>> ExplanationResult("gradcam", "conv2", ["fc", "conv2"], [0.6, 0.1], 16).final_rho
        0.1
        """
        return float(self.rho[-1]) if self.rho else float("nan")


@register
class ExplanationsCheck(Check):
    """Saliency sanity check by cascading model randomization (check ``explanations``).

    Needs a model and a clean set; explains ``n_images`` (16) held-out images with ``method``
    (``"gradcam"``) at ``layer`` (empty: the model's default CAM layer). Condition ``model
    randomization`` warns when the mean Spearman ρ after full randomization is above ``warn_above``
    (0.5) or not finite.

    Parameters: none

    Returns
    -------
    An ExplanationsCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"explanations"``.
    """

    name = "explanations"
    title = "Saliency sanity (model randomization)"
    needs = ("model", "clean")
    params = {"method": Param("gradcam", "saliency method (gradcam, eigencam, normgrad, ...)", kind=str),
              "layer": Param("", "layer to explain (empty: the model's default CAM layer)", kind=str),
              "n_images": Param(16, "held-out images explained", 1, 10_000, int),
              "warn_above": Param(0.5, "warn when mean Spearman ρ after full randomization is above this", -1.0, 1.0)}

    def run(self, ctx, p, progress):
        from ..saliency import make_method, randomization_check

        data = ctx.clean()
        sub = data.sample(p["n_images"], seed=ctx.seed) if len(data) > p["n_images"] else data
        method = make_method(p["method"], ctx.model, p["layer"] or None)
        chk = randomization_check(method, sub.images, seed=ctx.seed)
        layer = method.layer_names[0]
        return ExplanationResult(p["method"], layer, chk.randomized, [float(v) for v in chk.rho[layer]], len(sub))

    def conditions(self, r, p):
        rho = r.final_rho
        if not np.isfinite(rho) or rho > p["warn_above"]:
            return [Condition("model randomization", "warn",
                              f"{r.method} maps at {r.layer} keep Spearman ρ {rho:.2f} with the original after every "
                              f"layer is randomized (over {p['warn_above']:g}): they do not depend on the weights.")]
        return [Condition("model randomization", "pass",
                          f"{r.method} maps at {r.layer} change when weights are randomized (Spearman ρ {rho:.2f}).")]

    def key_figure(self, r):
        return f"ρ after randomization {r.final_rho:.2f}"

    def sections(self, r):
        return [Metrics("Model randomization", {"method": r.method, "layer": r.layer, "images": r.n_images,
                                                "final Spearman rho": r.final_rho}),
                Table("Cascading randomization (top down)", ["randomized up to", "Spearman rho"],
                      [[n, round(v, 4)] for n, v in zip(r.randomized, r.rho, strict=True)])]
