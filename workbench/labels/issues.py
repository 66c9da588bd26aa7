"""Finding and ranking label issues (cleanlab's ``filter`` and ``rank``), and counting them."""

from __future__ import annotations

import numpy as np

from ..errors import require
from .validation import cleanlab_quiet

#: cleanlab 2.9's ``filter_by`` values, plus ``"paper"`` (PLE's selection, see :func:`paper_label_issues`).
FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
             "low_normalized_margin", "low_self_confidence", "paper")
#: cleanlab's ``get_label_quality_scores`` methods (lower = more likely mislabelled).
RANK_BY = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def label_quality_scores(labels: np.ndarray, pred_probs: np.ndarray, method: str = "self_confidence") -> np.ndarray:
    """cleanlab's ``get_label_quality_scores`` (lower = more likely mislabelled)."""
    from cleanlab.rank import get_label_quality_scores

    require(method in RANK_BY, f"unknown rank_by {method!r}; choose one of {', '.join(RANK_BY)}")
    return get_label_quality_scores(labels, pred_probs, method=method)


def paper_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *,
                       count_method: str = "off_diagonal") -> np.ndarray:
    """PLE's candidate set: n = confident-learning estimate of the number of errors, then the n
    examples with the lowest normalized margin ``(p_given − max_{k≠given} p_k + 1) / 2``, ranked."""
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_normalized_margin_for_each_label

    with cleanlab_quiet():
        n = int(num_label_issues(labels, pred_probs, estimation_method=count_method))
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
