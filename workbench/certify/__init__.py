"""Certifiers: randomized smoothing (L2) and interval bound propagation (L∞), with a shared result type."""

from .intervals import certify as certify_ibp
from .intervals import ibp_loss, layer_plan, logit_bounds, margin_lower_bounds, train_ibp
from .results import ABSTAIN, CertificationResult, curve_figure
from .smoothing import certify as certify_smoothing
from .smoothing import predict as predict_smoothing

__all__ = ["ABSTAIN", "CertificationResult", "certify_ibp", "certify_smoothing", "curve_figure", "ibp_loss", "layer_plan",
           "logit_bounds", "margin_lower_bounds", "predict_smoothing", "train_ibp"]
