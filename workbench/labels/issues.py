"""Finding and ranking label issues (cleanlab's ``filter`` and ``rank``), and counting them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

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
    """Score every label's quality with cleanlab's ``get_label_quality_scores`` (lower = more likely mislabelled).

    Parameters
    ----------
    labels : numpy.ndarray
        Validated labels, shape ``(N,)``, int64 in ``0..K-1``.
    pred_probs : numpy.ndarray
        Out-of-sample predicted probabilities, shape ``(N, K)``, rows summing to 1.
    method : str, default "self_confidence"
        One of :data:`RANK_BY`.

    Returns
    -------
    numpy.ndarray
        Scores, shape ``(N,)``, in [0, 1].

    Raises
    ------
    BadInput
        On an unknown ``method``.
    """
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

    Parameters
    ----------
    labels : numpy.ndarray
        Validated labels, shape ``(N,)``, int64 in ``0..K-1``.
    pred_probs : numpy.ndarray
        Out-of-sample predicted probabilities, shape ``(N, K)``, rows summing to 1.

    Returns
    -------
    int
        The estimated number of label errors, in ``0..N``.
    """
    from cleanlab.count import compute_confident_joint

    with cleanlab_quiet():
        cj = np.asarray(compute_confident_joint(labels, pred_probs, calibrate=False), dtype=np.float64)
    return int((1.0 - np.trace(cj) / cj.sum()) * len(labels))


def paper_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """PLE's candidate set: the lowest-margin examples, as many as the CL paper's error count.

    PLE's candidate set (Sec. 3, step 1): n = :func:`paper_num_label_issues`, then the n examples
    with the lowest margin ``p_given − max_{k≠given} p_k``, most likely errors first.

    cleanlab's normalized margin ``(margin + 1) / 2`` is an increasing map of PLE's margin, so the
    order is the same. cleanlab 2.9's ``low_normalized_margin`` takes the same ranking but cuts it at
    ``num_label_issues(estimation_method="off_diagonal")``, a different (usually smaller) count.

    Parameters
    ----------
    labels : numpy.ndarray
        Validated labels, shape ``(N,)``, int64 in ``0..K-1``.
    pred_probs : numpy.ndarray
        Out-of-sample predicted probabilities, shape ``(N, K)``, rows summing to 1.

    Returns
    -------
    numpy.ndarray
        Indices of the candidates, shape ``(n,)``, int, most likely errors first.
    """
    from cleanlab.rank import get_normalized_margin_for_each_label

    n = paper_num_label_issues(labels, pred_probs)
    margin = get_normalized_margin_for_each_label(labels, pred_probs)
    return np.argsort(margin, kind="stable")[:n]


def find_issues(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate",
                n_jobs: int | None = None, confident_joint: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of flagged examples: ``cleanlab.filter.find_label_issues(filter_by=...)``, or PLE's.

    Parameters
    ----------
    labels : numpy.ndarray
        Validated labels, shape ``(N,)``, int64 in ``0..K-1``.
    pred_probs : numpy.ndarray
        Out-of-sample predicted probabilities, shape ``(N, K)``, rows summing to 1.
    filter_by : str, default "prune_by_noise_rate"
        One of :data:`FILTER_BY`; ``"paper"`` flags :func:`paper_label_issues`.
    n_jobs : int, optional
        Processes cleanlab may use (``None``: its default; 1 inside Streamlit).
    confident_joint : numpy.ndarray, optional
        A precomputed K×K confident joint, reused by the ``prune_by_*`` and ``both`` filters.

    Returns
    -------
    numpy.ndarray
        Shape ``(N,)``, bool: True where flagged.

    Raises
    ------
    BadInput
        On an unknown ``filter_by``.
    """
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


# ---------------------------------------------------------------- the dataset-level assessment
@dataclass
class Assessment:
    """Confident learning on one set of labels and out-of-sample probabilities (arrays indexed like them).

    Parameters
    ----------
    flagged : numpy.ndarray
        Indices of flagged examples, most likely errors first.
    scores : numpy.ndarray
        Label quality score of every example, shape ``(N,)`` (lower = more likely mislabelled).
    ranked : numpy.ndarray
        Every index, shape ``(N,)``, ascending score.
    suggested : numpy.ndarray
        Argmax of the probabilities, shape ``(N,)``.
    confident_joint : numpy.ndarray
        K×K, calibrated (rows sum to the given-label counts).
    joint : numpy.ndarray
        K×K estimate of P(given = i, true = j), summing to 1.
    noise_matrix : numpy.ndarray
        K×K estimate of P(given = i | true = j).
    estimated_errors : int
        N·(1 − trace joint), cleanlab's ``"off_diagonal_calibrated"``.
    health_score : float
        Trace of the joint, in [0, 1].
    per_class : list of dict
        Per-class health rows (see :func:`dataset_tables`).
    overlapping : list of dict
        Most overlapping class pairs.
    filter_by : str
        The filter that made ``flagged``.
    rank_by : str
        The score that made ``scores``.
    seconds : float, default 0.0
        Time taken.
    batched : bool, default False
        True when made by the batched path (:mod:`workbench.labels.batched`).

    Returns
    -------
    An Assessment (a dataclass) holding these fields.
    """

    flagged: np.ndarray  # indices of flagged examples, most likely errors first
    scores: np.ndarray  # label quality score of every example (lower = more likely mislabelled)
    ranked: np.ndarray  # every index, ascending score
    suggested: np.ndarray  # argmax of the probabilities
    confident_joint: np.ndarray  # K×K, calibrated (rows sum to the given-label counts)
    joint: np.ndarray  # K×K estimate of P(given = i, true = j)
    noise_matrix: np.ndarray  # K×K estimate of P(given = i | true = j)
    estimated_errors: int  # N·(1 − trace joint), cleanlab's "off_diagonal_calibrated"
    health_score: float  # trace of the joint
    per_class: list[dict]
    overlapping: list[dict]
    filter_by: str
    rank_by: str
    seconds: float = 0.0
    batched: bool = False

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def estimated_error_rate(self) -> float:
        return self.estimated_errors / self.n


def dataset_tables(labels: np.ndarray, flagged: np.ndarray, joint: np.ndarray,
                   class_names: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Per-class health and the most overlapping class pairs.

    Per-class health (``cleanlab.dataset.rank_classes_by_label_quality``) with the flagged counts, and
    the most overlapping class pairs (``find_overlapping_classes``), from the estimated joint.

    Parameters
    ----------
    labels : numpy.ndarray
        Labels, shape ``(N,)``, int64 in ``0..K-1``.
    flagged : numpy.ndarray
        Indices of the flagged examples.
    joint : numpy.ndarray
        Estimated joint P(given, true), shape ``(K, K)``.
    class_names : sequence of str
        K class names.

    Returns
    -------
    tuple of (list of dict, list of dict)
        One row per class, worst label quality first (``class``, ``index``, ``examples``,
        ``flagged``, ``% flagged``, cleanlab's label issue and noise columns, ``label quality``),
        and up to 10 overlapping pairs of classes (``class_a``, ``class_b``, ``num_overlapping``,
        ``joint_probability``, …), most overlapping first.
    """
    from cleanlab.dataset import find_overlapping_classes, rank_classes_by_label_quality

    k = len(class_names)
    kw = {"joint": joint, "num_examples": len(labels)}
    with cleanlab_quiet():
        by_class = rank_classes_by_label_quality(class_names=list(class_names), **kw)
        overlap = find_overlapping_classes(class_names=list(class_names), **kw)
    counts = np.bincount(labels, minlength=k)
    fl_counts = np.bincount(labels[flagged], minlength=k)
    per_class = []
    for _, r in by_class.iterrows():
        c = int(r["Class Index"])
        per_class.append({"class": class_names[c], "index": c, "examples": int(counts[c]),
                          "flagged": int(fl_counts[c]),
                          "% flagged": round(100 * fl_counts[c] / max(counts[c], 1), 2),
                          "label issues": int(r["Label Issues"]),
                          "inverse label issues": int(r["Inverse Label Issues"]),
                          "label noise": round(float(r["Label Noise"]), 4),
                          "inverse label noise": round(float(r["Inverse Label Noise"]), 4),
                          "label quality": round(float(r["Label Quality Score"]), 4)})
    overlapping = [{"class_a": str(r["Class Name A"]), "class_b": str(r["Class Name B"]),
                    "index_a": int(r["Class Index A"]), "index_b": int(r["Class Index B"]),
                    "num_overlapping": int(r["Num Overlapping Examples"]),
                    "joint_probability": float(r["Joint Probability"])}
                   for _, r in overlap.head(10).iterrows() if int(r["Num Overlapping Examples"]) > 0]
    return per_class, overlapping


def joint_statistics(confident_joint: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               int, float]:
    """Calibrate a confident joint and derive the noise estimates from it.

    From an *uncalibrated* confident joint: the calibrated one, the estimated joint, the noise matrix,
    cleanlab's calibrated error count N·(1 − trace Q) (``num_label_issues("off_diagonal_calibrated")``) and
    the health score trace Q (``overall_label_health_score``).

    Parameters
    ----------
    confident_joint : numpy.ndarray
        Uncalibrated confident joint C, shape ``(K, K)`` (CL Eq. 1).
    labels : numpy.ndarray
        Labels, shape ``(N,)``, int64 in ``0..K-1``.

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray, numpy.ndarray, int, float)
        The calibrated joint (K×K), the estimated joint Q (K×K, summing to 1), the noise matrix
        (K×K), the estimated number of errors and the health score in [0, 1].
    """
    from cleanlab.count import calibrate_confident_joint, estimate_joint, estimate_latent

    with cleanlab_quiet():
        cj = calibrate_confident_joint(confident_joint, labels)
        joint = estimate_joint(labels, None, confident_joint=cj)
        _py, nm, _inv = estimate_latent(cj, labels)
    trace = float(np.trace(joint))
    return (np.asarray(cj, dtype=np.float64), np.asarray(joint, dtype=np.float64), np.asarray(nm, dtype=np.float64),
            int(np.rint((1.0 - trace) * len(labels))), trace)


def assess(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate",
           rank_by: str = "self_confidence", class_names: Sequence[str] | None = None,
           n_jobs: int | None = None) -> Assessment:
    """Run confident learning on one set of labels and out-of-sample probabilities.

    Confident learning over validated in-memory arrays: the flagged set, every example's score and
    rank, the confident and estimated joints, the noise matrix, the estimated number of errors and
    the per-class tables. ``labels`` int64 in 0..K-1, ``pred_probs`` N×K rows summing to 1
    (Northcutt, Jiang, Chuang, "Confident Learning", JAIR 2021).

    Parameters
    ----------
    labels : numpy.ndarray
        Validated labels, shape ``(N,)``, int64 in ``0..K-1``.
    pred_probs : numpy.ndarray
        Out-of-sample predicted probabilities, shape ``(N, K)``, rows summing to 1.
    filter_by : str, default "prune_by_noise_rate"
        One of :data:`FILTER_BY`.
    rank_by : str, default "self_confidence"
        One of :data:`RANK_BY`.
    class_names : sequence of str, optional
        K class names (default ``"0"``, ``"1"``, …).
    n_jobs : int, optional
        Processes cleanlab may use.

    Returns
    -------
    Assessment
        The findings, arrays indexed like ``labels``.

    Raises
    ------
    BadInput
        On an unknown ``filter_by`` or ``rank_by``.
    """
    from cleanlab.count import compute_confident_joint

    require(filter_by in FILTER_BY, f"unknown filter_by {filter_by!r}; choose one of {', '.join(FILTER_BY)}")
    require(rank_by in RANK_BY, f"unknown rank_by {rank_by!r}; choose one of {', '.join(RANK_BY)}")
    t0 = time.perf_counter()
    k = pred_probs.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    with cleanlab_quiet():
        raw = np.asarray(compute_confident_joint(labels, pred_probs, calibrate=False))
    cj, joint, nm, est, health = joint_statistics(raw, labels)
    mask = find_issues(labels, pred_probs, filter_by=filter_by, n_jobs=n_jobs, confident_joint=cj)
    scores = label_quality_scores(labels, pred_probs, rank_by)
    flagged = np.flatnonzero(mask)
    flagged = flagged[np.argsort(scores[flagged], kind="stable")]
    ranked = np.argsort(scores, kind="stable")
    per_class, overlapping = dataset_tables(labels, flagged, joint, names)
    return Assessment(flagged, scores, ranked, pred_probs.argmax(1), cj, joint, nm, est, health, per_class,
                      overlapping, filter_by, rank_by, time.perf_counter() - t0)
