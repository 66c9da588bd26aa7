"""Finding and ranking label issues (cleanlab's ``filter`` and ``rank``), and counting them."""

from __future__ import annotations

import numpy as np

from ..errors import require
from .validation import cleanlab_quiet

#: cleanlab 2.9's ``filter_by`` values, plus ``"paper"`` (the CL paper's count of errors, then PLE's lowest
#: margins; see :func:`paper_label_issues`).
FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
             "low_normalized_margin", "low_self_confidence", "paper")
#: cleanlab's ``get_label_quality_scores`` methods (lower = more likely mislabelled).
RANK_BY = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def label_quality_scores(labels: np.ndarray, pred_probs: np.ndarray, method: str = "self_confidence") -> np.ndarray:
    """cleanlab's ``get_label_quality_scores`` (lower = more likely mislabelled)."""
    from cleanlab.rank import get_label_quality_scores

    require(method in RANK_BY, f"unknown rank_by {method!r}; choose one of {', '.join(RANK_BY)}")
    return get_label_quality_scores(labels, pred_probs, method=method)


def paper_num_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> int:
    """The Confident Learning paper's estimate of the number of label errors.

    ``(1 − trace(C) / ΣC) · N`` on the *uncalibrated* confident joint ``C`` (CL Sec. 3.1, Eq. 1-2:
    ``cleanlab.count.compute_confident_joint(calibrate=False)``), truncated to an integer as cleanlab
    1.0's ``latent_estimation.num_label_errors`` did; that is the count PLE used for every dataset but
    MNIST (``get_label_error_indices_to_match_labelerrors_com`` in cleanlab/label-errors).

    It is neither of cleanlab 2.9's ``num_label_issues`` estimates: ``"off_diagonal"`` counts the
    off-diagonal *examples* of ``C`` whose argmax differs from the given label (without rescaling
    to N), and ``"off_diagonal_calibrated"`` rescales each row of ``C`` to its given-label count
    before normalising (N·(1 − trace Q)).
    """
    from cleanlab.count import compute_confident_joint

    with cleanlab_quiet():
        cj = np.asarray(compute_confident_joint(labels, pred_probs, calibrate=False), dtype=np.float64)
    return int((1.0 - np.trace(cj) / cj.sum()) * len(labels))


def paper_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """PLE's candidate set (Sec. 3, step 1): n = :func:`paper_num_label_issues`, then the n examples
    with the lowest margin ``p_given − max_{k≠given} p_k``, most likely errors first.

    cleanlab's normalized margin ``(margin + 1) / 2`` is an increasing map of PLE's margin, so the
    order is the same. cleanlab 2.9's ``low_normalized_margin`` takes the same ranking but cuts it at
    ``num_label_issues(estimation_method="off_diagonal")``, a different (usually smaller) count.
    """
    from cleanlab.rank import get_normalized_margin_for_each_label

    n = paper_num_label_issues(labels, pred_probs)
    margin = get_normalized_margin_for_each_label(labels, pred_probs)
    return np.argsort(margin, kind="stable")[:n]


def find_issues(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate",
                n_jobs: int | None = None, confident_joint: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of flagged examples: ``cleanlab.filter.find_label_issues(filter_by=...)``, or PLE's."""
    from cleanlab.filter import find_label_issues

    require(filter_by in FILTER_BY, f"unknown filter_by {filter_by!r}; choose one of {', '.join(FILTER_BY)}")
    if filter_by == "paper":
        mask = np.zeros(len(labels), dtype=bool)
        mask[paper_label_issues(labels, pred_probs)] = True
        return mask
    cj = confident_joint if filter_by in ("prune_by_noise_rate", "prune_by_class", "both") else None
    with cleanlab_quiet():
        return np.asarray(find_label_issues(labels, pred_probs, filter_by=filter_by, n_jobs=n_jobs,
                                            confident_joint=cj), dtype=bool)
