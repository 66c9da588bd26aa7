"""Outliers and near-duplicates on embeddings, by cleanlab Datalab's rules on a scikit-learn kNN graph.

Datalab itself needs the optional ``datasets`` package; the rules are those of its
``OutlierIssueManager`` (mean distance to the k nearest neighbours, issue above
Q3 + (1/0.37037 − 1)·IQR) and ``NearDuplicateIssueManager`` (nearest-neighbour distance below
0.13 × the median one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import require


@dataclass
class EmbeddingIssues:
    """Datalab-style outlier and near-duplicate findings on embeddings.

    Parameters
    ----------
    metric : str
        Distance used for the nearest neighbours (``"cosine"`` or ``"euclidean"``).
    k : int
        Number of nearest neighbours of the outlier score.
    outlier_scores : numpy.ndarray
        Shape ``(N,)``, in (0, 1]; lower = more outlying (cleanlab's transform of mean kNN distance).
    is_outlier : numpy.ndarray
        Shape ``(N,)``, bool.
    near_duplicate_sets : list of list of int
        For each example in a near-duplicate set, its neighbours.
    is_near_duplicate : numpy.ndarray
        Shape ``(N,)``, bool.
    outlier_threshold : float, default 0.0
        The score below which an example is an outlier.
    near_duplicate_radius : float, default 0.0
        The distance below which two examples are near-duplicates.

    Returns
    -------
    An EmbeddingIssues (a dataclass) holding these fields.
    """

    metric: str
    k: int
    outlier_scores: np.ndarray  # N, lower = more outlying (cleanlab's transform of mean kNN distance)
    is_outlier: np.ndarray  # N bool
    near_duplicate_sets: list[list[int]]  # for each example in a near-duplicate set, its neighbours
    is_near_duplicate: np.ndarray  # N bool
    outlier_threshold: float = 0.0
    near_duplicate_radius: float = 0.0

    @property
    def num_outliers(self) -> int:
        return int(self.is_outlier.sum())

    @property
    def num_near_duplicates(self) -> int:
        return int(self.is_near_duplicate.sum())


def embedding_issues(features: Any, *, k: int = 10, outlier_threshold: float = 0.37037,
                     near_duplicate_threshold: float = 0.13) -> EmbeddingIssues:
    """Find outliers and near-duplicates in embeddings, as cleanlab's Datalab does.

    Outliers (mean distance to the k nearest neighbours, cleanlab's score transform and Datalab's
    Q3 + (1/threshold − 1)·IQR rule) and near-duplicates (nearest-neighbour distance below
    ``near_duplicate_threshold`` × the median nearest-neighbour distance), as Datalab computes them.

    Parameters
    ----------
    features : array-like
        Embeddings, shape ``(N, D)``.
    k : int, default 10
        Number of nearest neighbours; N must exceed k + 1.
    outlier_threshold : float, default 0.37037
        Datalab's outlier threshold, in (0, 1).
    near_duplicate_threshold : float, default 0.13
        Near-duplicate radius as a fraction of the median nearest-neighbour distance.

    Returns
    -------
    EmbeddingIssues
        Scores, flags and near-duplicate sets, arrays indexed like ``features``; the metric is
        cosine for D > 3, else euclidean (Datalab's default choice).

    Raises
    ------
    BadInput
        When ``features`` is not N×D with N > k + 1.
    """
    from cleanlab.outlier import transform_distances_to_scores
    from sklearn.neighbors import NearestNeighbors

    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    require(x.ndim == 2 and x.shape[0] > k + 1, f"features must be N×D with N > {k + 1}, got shape {x.shape}")
    x = x.astype(np.float64)
    metric = "cosine" if x.shape[1] > 3 else "euclidean"  # Datalab's default choice
    nn_ = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x)
    dist, idx = nn_.kneighbors(x)
    # Drop each point itself (the first neighbour unless exact duplicates come first).
    self_first = idx[:, 0] == np.arange(len(x))
    dist = np.where(self_first[:, None], dist[:, 1:], np.delete(dist, -1, axis=1))
    idx = np.where(self_first[:, None], idx[:, 1:], np.delete(idx, -1, axis=1))
    dist = np.clip(dist, 0, None)
    avg = dist.mean(1)
    q1, q3 = np.percentile(avg, [25, 75])
    cut = q3 + (1 / outlier_threshold - 1) * (q3 - q1)
    scores = transform_distances_to_scores(avg, t=1, scaling_factor=float(max(np.median(avg), 1e-12)))
    nn1 = dist[:, 0]
    radius = near_duplicate_threshold * max(float(np.median(nn1)), 1e-12)
    within = dist < radius
    sets = [idx[i][within[i]].tolist() for i in range(len(x))]
    return EmbeddingIssues(metric, k, scores, avg > cut, sets, within.any(1), float(cut), float(radius))
