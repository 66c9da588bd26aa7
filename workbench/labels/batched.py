"""The label check for data larger than memory: ``cleanlab``'s batched path over memory-mapped arrays.

``labels.npy`` (N integers) and ``pred_probs.npy`` (N×K floats) are opened with
``np.load(mmap_mode="r", allow_pickle=False)`` and read ``batch_size`` rows at a time, so resident
memory is bounded by the batch and the O(N) result vectors (scores, ranking, suggested labels),
not by N×K:

* validation, accuracy and suggested labels: one pass;
* the confident joint (CL Eq. 1-2): per-class thresholds (mean self-confidence) from one pass, then
  ``cleanlab.count.compute_confident_joint(..., thresholds=t, calibrate=False)`` per batch, summed;
  calibration, the estimated joint, the noise matrix and the error estimate then follow from that
  K×K matrix as in memory (:func:`workbench.labels.issues.joint_statistics`). cleanlab raises each
  diagonal cell to at least 1 per call, so the sum equals the in-memory joint whenever every class
  has a confidently, correctly labelled example in every batch (the 50,000-row check in
  ``benchmarks/label_audit.py`` compares them);
* the flags: ``cleanlab.experimental.label_issues_batched.find_label_issues_batched`` (its
  ``LabelInspector``: thresholds in a first pass, then scores and the off-diagonal count), which
  approximates ``find_label_issues(filter_by="low_self_confidence")`` (or
  ``"low_normalized_margin"``) — the filters this path supports.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput, require
from .issues import RANK_BY, Assessment, dataset_tables, joint_statistics, label_quality_scores
from .validation import ROW_SUM_TOL, cleanlab_quiet

#: Above this many probabilities (N·K) ``audit_labels`` checks labels batched (e.g. 400,000 × 10).
BATCHED_ABOVE = 4_000_000
#: Rows read at a time.
BATCH_SIZE = 100_000
#: The filters cleanlab's batched path implements.
BATCHED_FILTERS = ("low_self_confidence", "low_normalized_margin")


def open_npy(path: str | Path, what: str) -> np.ndarray:
    """Open a user's array file without unpickling it.

    A ``.npy`` memory-mapped read-only (never unpickled); an ``.npz`` is read whole (zip members
    cannot be mapped).

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.npy`` file, or an ``.npz`` holding an array named ``what``.
    what : str
        The array's name (``"labels"`` or ``"pred_probs"``), for the ``.npz`` member and messages.

    Returns
    -------
    numpy.ndarray
        The array (a read-only ``numpy.memmap`` for a ``.npy``).

    Raises
    ------
    BadInput
        When the file is missing, unreadable as an array (or would need unpickling), or an
        ``.npz`` lacks ``what``.
    """
    path = Path(path)
    require(path.is_file(), f"{what} file not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise BadInput(f"cannot read {what} file {path} as a .npy array: {exc}") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            keys = list(arr.files)
            require(what in keys, f"{path}: an .npz needs an array named {what!r}; found {keys}")
            arr = arr[what]
    return arr


def open_pred_probs(path: str | Path) -> np.ndarray:
    """Open a ``pred_probs`` file memory-mapped (:func:`open_npy` with ``what="pred_probs"``).

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.npy`` of shape ``(N, K)``, or an ``.npz`` with a ``pred_probs`` array.

    Returns
    -------
    numpy.ndarray
        The (memory-mapped) probabilities, not yet validated.

    Raises
    ------
    BadInput
        As :func:`open_npy`.
    """
    return open_npy(path, "pred_probs")


def open_labels(path: str | Path) -> np.ndarray:
    """Open a ``labels`` file memory-mapped (:func:`open_npy` with ``what="labels"``).

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.npy`` of shape ``(N,)``, or an ``.npz`` with a ``labels`` array.

    Returns
    -------
    numpy.ndarray
        The (memory-mapped) labels, not yet validated.

    Raises
    ------
    BadInput
        As :func:`open_npy`.
    """
    return open_npy(path, "labels")


@dataclass
class BatchedCheck:
    """The batched label check's result.

    Parameters
    ----------
    labels : numpy.ndarray
        The validated labels, shape ``(N,)``, int64.
    accuracy : float
        Accuracy of the argmax of the probabilities against the given labels, in [0, 1].
    assessment : Assessment
        The findings, as :func:`workbench.labels.issues.assess` returns them.

    Returns
    -------
    A BatchedCheck (a dataclass) holding these fields.
    """
    labels: np.ndarray  # N int64, validated
    accuracy: float  # argmax vs given labels
    assessment: Assessment


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def validate_batched(labels: Any, pred_probs: Any, num_classes: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Check memory-mapped (or any array-like) labels and probabilities batch by batch; return the
    labels as an in-memory int64 vector (8 bytes a row).

    Parameters
    ----------
    labels : array-like
        Labels, shape ``(N,)``, integers in ``0..K-1`` (e.g. from :func:`open_labels`).
    pred_probs : array-like
        Probabilities, shape ``(N, K)``, floats, rows summing to 1 (e.g. from :func:`open_pred_probs`).
    num_classes : int
        K.
    batch_size : int, default BATCH_SIZE
        Rows read at a time.

    Returns
    -------
    numpy.ndarray
        The labels, shape ``(N,)``, int64.

    Raises
    ------
    BadInput
        On mismatched shapes, wrong dtypes, labels out of range, NaN, infinite or negative
        probabilities, rows not summing to 1, a bad ``batch_size``, or a single class.
    """
    require(hasattr(pred_probs, "shape") and len(pred_probs.shape) == 2,
            f"pred_probs must be a 2-D array N×K, got shape {getattr(pred_probs, 'shape', None)}")
    require(hasattr(labels, "shape") and len(labels.shape) == 1,
            f"labels must be one-dimensional, got shape {getattr(labels, 'shape', None)}")
    n, k = pred_probs.shape
    require(n > 0, "labels are empty")
    require(len(labels) == n, f"{len(labels)} labels but pred_probs has {n} rows")
    require(k == num_classes, f"pred_probs has {k} columns for {num_classes} classes")
    require(np.issubdtype(labels.dtype, np.integer), f"labels must be integers, got dtype {labels.dtype}")
    require(np.issubdtype(pred_probs.dtype, np.floating), f"pred_probs must be floats, got dtype {pred_probs.dtype}")
    require(isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
            f"batch_size must be an integer >= 1, got {batch_size}")
    out = np.empty(n, dtype=np.int64)
    for b in _batches(n, batch_size):
        y = np.asarray(labels[b])
        lo, hi = int(y.min()), int(y.max())
        require(lo >= 0 and hi < k, f"labels must lie in the class range 0..{k - 1}, got values {lo}..{hi} "
                                    f"(rows {b.start}..{b.stop - 1})")
        p = np.asarray(pred_probs[b])
        require(bool(np.isfinite(p).all()), f"pred_probs contains NaN or infinite values (rows {b.start}..{b.stop - 1})")
        require(float(p.min()) >= 0.0, f"pred_probs has negative entries (rows {b.start}..{b.stop - 1})")
        sums = p.sum(1, dtype=np.float64)
        bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
        require(bad.size == 0, f"pred_probs rows must sum to 1: row {b.start + int(bad[0]) if bad.size else 0} "
                               f"sums to {sums[bad[0]] if bad.size else 1:.4f}; pass probabilities, not logits")
        out[b] = y
    require(len(np.unique(out)) >= 2, "the labels hold a single class: nothing to audit")
    return out


def assess_batched(labels: Any, pred_probs: Any, *, filter_by: str = "low_self_confidence",
                   rank_by: str = "self_confidence", class_names: Sequence[str] | None = None,
                   batch_size: int = BATCH_SIZE, n_jobs: int | None = 1) -> BatchedCheck:
    """Confident learning over arrays read in batches.

    See the module docstring; the same :class:`~workbench.labels.issues.Assessment` as the
    in-memory :func:`~workbench.labels.issues.assess`.

    Parameters
    ----------
    labels : array-like
        Labels, shape ``(N,)``, integers in ``0..K-1``.
    pred_probs : array-like
        Out-of-sample probabilities, shape ``(N, K)``.
    filter_by : {"low_self_confidence", "low_normalized_margin"}, default "low_self_confidence"
        The filter cleanlab's batched path applies.
    rank_by : str, default "self_confidence"
        One of :data:`~workbench.labels.issues.RANK_BY`.
    class_names : sequence of str, optional
        K class names (default ``"0"``, ``"1"``, …).
    batch_size : int, default BATCH_SIZE
        Rows read at a time; memory is bounded by it and the O(N) result vectors.
    n_jobs : int, default 1
        Processes cleanlab may use.

    Returns
    -------
    BatchedCheck
        The validated labels, the argmax accuracy and the assessment.

    Raises
    ------
    BadInput
        On an unsupported ``filter_by`` or ``rank_by``, or invalid arrays (:func:`validate_batched`).
    """
    from cleanlab.count import compute_confident_joint
    from cleanlab.experimental.label_issues_batched import find_label_issues_batched

    require(filter_by in BATCHED_FILTERS, f"the batched label check supports filter_by "
                                          f"{' or '.join(BATCHED_FILTERS)}, not {filter_by!r}")
    require(rank_by in RANK_BY, f"unknown rank_by {rank_by!r}; choose one of {', '.join(RANK_BY)}")
    t0 = time.perf_counter()
    k = int(pred_probs.shape[1]) if hasattr(pred_probs, "shape") and len(pred_probs.shape) == 2 else 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    y = validate_batched(labels, pred_probs, len(names), batch_size)
    n = len(y)

    # Pass 1: thresholds t_j = mean p_j over examples labelled j (CL Eq. 2), argmax, accuracy, scores.
    self_sum = np.zeros(k)
    suggested = np.empty(n, dtype=np.int64)
    scores = np.empty(n, dtype=np.float64)
    for b in _batches(n, batch_size):
        p = np.asarray(pred_probs[b], dtype=np.float64)
        yb = y[b]
        self_sum += np.bincount(yb, weights=p[np.arange(len(yb)), yb], minlength=k)
        suggested[b] = p.argmax(1)
        scores[b] = label_quality_scores(yb, p, rank_by)
    counts = np.bincount(y, minlength=k)
    thresholds = self_sum / np.maximum(counts, 1)
    # Pass 2: the uncalibrated confident joint, batch by batch.
    raw = np.zeros((k, k), dtype=np.int64)
    with cleanlab_quiet():
        for b in _batches(n, batch_size):
            raw += np.asarray(compute_confident_joint(y[b], np.asarray(pred_probs[b], dtype=np.float64),
                                                      thresholds=thresholds, calibrate=False), dtype=np.int64)
        np.fill_diagonal(raw, raw.diagonal().clip(min=1))
        cj, joint, nm, est, health = joint_statistics(raw, y)
        # Passes 3-4 (cleanlab): thresholds again, then scores and the off-diagonal count.
        mask = find_label_issues_batched(labels=y, pred_probs=pred_probs, batch_size=batch_size, n_jobs=n_jobs,
                                         verbose=False, return_mask=True,
                                         quality_score_kwargs={"method": filter_by[len("low_"):]})
    flagged = np.flatnonzero(mask)
    flagged = flagged[np.argsort(scores[flagged], kind="stable")]
    ranked = np.argsort(scores, kind="stable")
    per_class, overlapping = dataset_tables(y, flagged, joint, names)
    a = Assessment(flagged, scores, ranked, suggested, cj, joint, nm, est, health, per_class, overlapping,
                   filter_by, rank_by, time.perf_counter() - t0, batched=True)
    return BatchedCheck(y, float((suggested == y).mean()), a)
