"""Robustness check: randomized-smoothing certified accuracy and abstain rate at σ (Cohen et al.,
ICML 2019; :func:`workbench.certify.smoothing.certify`) on the held-out data."""

from __future__ import annotations

from dataclasses import dataclass

from ..report import Metrics
from .base import Check, Condition, Param, register


@dataclass
class RobustnessResult:
    """Randomized-smoothing certification of held-out images at one σ.

    Parameters
    ----------
    sigma : float
        Gaussian noise standard deviation (pixels in [0, 1]).
    radius : float
        L2 radius at which certified accuracy is reported.
    n : int
        Images certified.
    certified_accuracy : float
        Share certified correct at ``radius``, in [0, 1].
    smoothed_accuracy : float
        Smoothed classifier's accuracy at radius 0 (abstentions count as errors).
    abstain_rate : float
        Share of images on which the smoothed classifier abstains.
    base_accuracy : float
        The base model's accuracy on the same images without noise.
    noise_trained : bool or None
        Whether the card records training with Gaussian noise; None without provenance.
    seconds : float
        Wall time of the certification.

    Returns
    -------
    A RobustnessResult (dataclass)
        Returned by :meth:`RobustnessCheck.run`.
    """

    sigma: float
    radius: float
    n: int
    certified_accuracy: float  # at ``radius``
    smoothed_accuracy: float  # at radius 0 (abstentions count as errors)
    abstain_rate: float
    base_accuracy: float
    noise_trained: bool | None
    seconds: float


@register
class RobustnessCheck(Check):
    """Certified accuracy and abstain rate of the smoothed model on held-out data (check ``robustness``).

    Needs a model and a clean set; certifies ``n_images`` (100) seeded held-out images with
    ``n0`` (20) selection and ``n`` (200) estimation noise samples at failure probability ``alpha``
    (0.001). Conditions: ``certified accuracy`` at ``radius`` (0.25) fails below ``fail_below`` (0:
    never); ``abstain rate`` warns above ``abstain_warn_above`` (0.5), with a hint to train with noise
    when the card does not record it.

    Parameters: none

    Returns
    -------
    A RobustnessCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"robustness"``.
    """

    name = "robustness"
    title = "Certified robustness (randomized smoothing)"
    needs = ("model", "clean")
    params = {"sigma": Param(0.25, "smoothing noise σ (pixels in [0, 1])", 1e-4, 10.0),
              "radius": Param(0.25, "L2 radius at which certified accuracy is reported", 0.0, 100.0),
              "n_images": Param(100, "held-out images certified", 1, 100_000, int),
              "n": Param(200, "noise samples for the estimate", 1, 1_000_000, int),
              "n0": Param(20, "noise samples for the selection", 1, 100_000, int),
              "alpha": Param(0.001, "failure probability", 1e-9, 0.5),
              "abstain_warn_above": Param(0.5, "warn when the abstain rate is above this", 0.0, 1.0),
              "fail_below": Param(0.0, "fail when certified accuracy at the radius is below this (0: never)",
                                  0.0, 1.0)}

    def run(self, ctx, p, progress):
        from ..certify.smoothing import certify

        data = ctx.clean()
        sub = data.sample(p["n_images"], seed=ctx.seed) if len(data) > p["n_images"] else data
        res = certify(ctx.model, sub.images, p["sigma"], n0=p["n0"], n=p["n"], alpha=p["alpha"], labels=sub.labels,
                      batch_size=1000, seed=ctx.seed, progress=progress)
        prov = ctx.provenance or {}
        trained = prov.get("noise_sigma", prov.get("sigma"))
        return RobustnessResult(p["sigma"], p["radius"], len(sub), res.certified_accuracy(p["radius"]),
                                res.accuracy, res.abstain_rate, res.base_accuracy,
                                None if not prov else trained is not None, res.seconds)

    def conditions(self, r, p):
        hint = "" if r.noise_trained else " (the model was not trained with Gaussian noise; training with it " \
                                          "at σ usually lowers the abstain rate)"
        out = []
        ca = f"certified accuracy {r.certified_accuracy:.1%} at L2 radius {r.radius:g} (σ = {r.sigma:g})"
        out.append(Condition("certified accuracy", "fail" if r.certified_accuracy < p["fail_below"] else "pass",
                             f"{ca}" + (f" is below {p['fail_below']:.0%}." if r.certified_accuracy < p["fail_below"]
                                        else ".")))
        warn = r.abstain_rate > p["abstain_warn_above"]
        out.append(Condition("abstain rate", "warn" if warn else "pass",
                             f"the smoothed classifier abstains on {r.abstain_rate:.1%} of inputs"
                             + (f", over {p['abstain_warn_above']:.0%}{hint}." if warn else ".")))
        return out

    def key_figure(self, r):
        return f"cert. acc {r.certified_accuracy:.1%} @ {r.radius:g}, abstain {r.abstain_rate:.1%}"

    def sections(self, r):
        return [Metrics("Randomized smoothing", {"sigma": r.sigma, "radius": r.radius, "images": r.n,
                                                 "certified accuracy": r.certified_accuracy,
                                                 "smoothed accuracy": r.smoothed_accuracy,
                                                 "abstain rate": r.abstain_rate, "base accuracy": r.base_accuracy,
                                                 "seconds": r.seconds})]
