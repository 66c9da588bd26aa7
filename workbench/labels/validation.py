"""Input validation shared by every part of the label audit: labels, probabilities, folds.

Mirrors cleanlab's ``cleanlab.internal.validation`` checks, but raises :class:`BadInput` with one
line naming the problem instead of an assertion.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import BadInput, require

#: Tolerance on the row sums of a probability matrix.
ROW_SUM_TOL = 1e-3


@contextlib.contextmanager
def cleanlab_quiet():
    """Silence cleanlab's warnings inside a ``with`` block.

    cleanlab warns freely (e.g. about calibrated joints); the audit reports what matters itself.

    Parameters: none (it takes no arguments).

    Returns
    -------
    contextlib.AbstractContextManager
        A context manager under which every warning is ignored; the previous filters come back on exit.

    Examples
    --------
    >>> import warnings
    >>> with cleanlab_quiet():
    ...     warnings.warn("not shown")
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def validate_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Check labels and return them as an int64 vector in 0..K-1.

    Labels as an int64 vector in 0..K-1, or :class:`BadInput` naming the problem.

    Parameters
    ----------
    labels : array-like or torch.Tensor
        The given labels, shape ``(N,)``, integers.
    num_classes : int
        K, the number of classes; every label must lie in ``0..K-1``.

    Returns
    -------
    numpy.ndarray
        The labels, shape ``(N,)``, dtype int64.

    Raises
    ------
    BadInput
        When the labels are not one-dimensional, empty, not integers or outside ``0..K-1``.

    Examples
    --------
    >>> validate_labels([0, 2, 1], 3)
    array([0, 2, 1])
    >>> validate_labels([0, 3], 3)
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: labels must lie in the class range 0..2, got values 0..3
    """
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    require(arr.ndim == 1, f"labels must be one-dimensional, got shape {arr.shape}")
    require(arr.size > 0, "labels are empty")
    require(np.issubdtype(arr.dtype, np.integer), f"labels must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    require(lo >= 0 and hi < num_classes,
            f"labels must lie in the class range 0..{num_classes - 1}, got values {lo}..{hi}")
    return arr.astype(np.int64)


def validate_pred_probs(pred_probs: Any, n: int, num_classes: int) -> np.ndarray:
    """Check an N×K probability matrix and return it as float64 rows summing to 1.

    Checks shape, finiteness, non-negativity and rows summing to 1 (within ``ROW_SUM_TOL``); the
    rows are then renormalised exactly.

    Parameters
    ----------
    pred_probs : array-like or torch.Tensor
        Predicted probabilities, shape ``(N, K)``, floats in [0, 1].
    n : int
        N, the number of examples (rows expected).
    num_classes : int
        K, the number of classes (columns expected).

    Returns
    -------
    numpy.ndarray
        The probabilities, shape ``(N, K)``, float64, every row summing to 1.

    Raises
    ------
    BadInput
        On a wrong shape, a non-float dtype, NaN or infinite values, negative entries, or rows not
        summing to 1 (e.g. logits).

    Examples
    --------
    >>> validate_pred_probs([[0.25, 0.75], [1.0, 0.0]], 2, 2)
    array([[0.25, 0.75],
           [1.  , 0.  ]])
    """
    pp = pred_probs.detach().cpu().numpy() if isinstance(pred_probs, torch.Tensor) else np.asarray(pred_probs)
    require(pp.ndim == 2, f"pred_probs must be a 2-D array N×K, got shape {pp.shape}")
    require(pp.shape == (n, num_classes),
            f"pred_probs has shape {pp.shape}, expected ({n}, {num_classes}) (one row per example, "
            "one column per class)")
    require(np.issubdtype(pp.dtype, np.floating), f"pred_probs must be floats, got dtype {pp.dtype}")
    pp = pp.astype(np.float64)
    require(bool(np.isfinite(pp).all()), "pred_probs contains NaN or infinite values")
    require(float(pp.min()) >= 0.0, f"pred_probs has negative entries (min {pp.min():g})")
    sums = pp.sum(1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
    require(bad.size == 0, f"pred_probs rows must sum to 1: {bad.size} rows do not (row {bad[0] if bad.size else 0} "
                           f"sums to {sums[bad[0]] if bad.size else 1:.4f}); pass probabilities, not logits")
    return pp / sums[:, None]


def check_folds(labels: np.ndarray, folds: int, class_names: Sequence[str] | None = None) -> None:
    """Check that stratified K-fold can split these labels.

    Every class present must have at least ``folds`` examples (stratified K-fold needs it).

    Parameters
    ----------
    labels : numpy.ndarray
        Validated labels, shape ``(N,)``, int64 in ``0..K-1``.
    folds : int
        The number of folds, at least 2.
    class_names : sequence of str, optional
        Names used in the error message (default: the class indices).

    Returns
    -------
    None
        Returns nothing when the labels can be split.

    Raises
    ------
    BadInput
        When ``folds`` is not an integer >= 2 or a class has fewer than ``folds`` examples.

    Examples
    --------
    >>> check_folds(np.array([0, 0, 1, 1]), 2)
    >>> check_folds(np.array([0, 0, 1]), 2, ["cat", "dog"])
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: class 'dog' has 1 example, fewer than the 2 folds; every class needs at least 2 examples (use fewer folds or more data)
    """
    require(isinstance(folds, (int, np.integer)) and folds >= 2, f"folds must be an integer >= 2, got {folds}")
    counts = np.bincount(labels, minlength=len(class_names) if class_names else 0)
    small = [(k, int(c)) for k, c in enumerate(counts) if c < folds]
    if small:
        k, c = small[0]
        name = class_names[k] if class_names else str(k)
        raise BadInput(f"class {name!r} has {c} example{'s' if c != 1 else ''}, fewer than the {folds} folds; "
                       f"every class needs at least {folds} examples (use fewer folds or more data)"
                       + (f" ({len(small)} classes are too small)" if len(small) > 1 else ""))
