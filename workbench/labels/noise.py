"""Synthetic label noise for benchmarks and tests: noise matrices and seeded flips."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import check_in_range, require
from .validation import validate_labels


def noise_matrix(num_classes: int, *, kind: str = "asymmetric", rate: float = 0.1,
                 frac_zero_noise_rates: float = 0.6, py: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """A K×K noise matrix ``P(given=i | true=j)`` (columns sum to 1).

    ``asymmetric``: ``cleanlab.benchmarking.noise_generation.generate_noise_matrix_from_trace`` with
    trace K·(1 − rate) (trace 9 over 10 classes for 10%), a valid matrix for the prior ``py``.
    ``symmetric``: 1 − rate on the diagonal, rate/(K − 1) elsewhere.

    Parameters
    ----------
    num_classes : int
        K, at least 2.
    kind : {"asymmetric", "symmetric"}, default "asymmetric"
        The noise structure.
    rate : float, default 0.1
        Overall flip rate in [0, 1).
    frac_zero_noise_rates : float, default 0.6
        For ``asymmetric``: the fraction of off-diagonal cells forced to 0.
    py : numpy.ndarray, optional
        For ``asymmetric``: the class prior, shape ``(K,)`` (default uniform).
    seed : int, default 0
        Seed of cleanlab's generator.

    Returns
    -------
    numpy.ndarray
        The noise matrix, shape ``(K, K)``, columns summing to 1.

    Raises
    ------
    BadInput
        On an unknown ``kind``, a rate out of range, or when cleanlab finds no valid matrix.
    """
    from cleanlab.benchmarking.noise_generation import generate_noise_matrix_from_trace

    check_in_range("rate", rate, 0.0, 1.0, high_open=True)
    require(kind in ("asymmetric", "symmetric"), f"kind must be asymmetric or symmetric, got {kind!r}")
    k = num_classes
    if kind == "symmetric":
        m = np.full((k, k), rate / (k - 1))
        np.fill_diagonal(m, 1 - rate)
        return m
    py = np.full(k, 1 / k) if py is None else np.asarray(py, float)
    m = generate_noise_matrix_from_trace(k, k * (1 - rate), py=py, frac_zero_noise_rates=frac_zero_noise_rates,
                                         valid_noise_matrix=True, seed=seed)
    require(m is not None, f"cleanlab found no valid noise matrix for rate {rate} over {k} classes")
    return m


def inject_noise(labels: Any, num_classes: int, *, kind: str = "asymmetric", rate: float = 0.1,
                 frac_zero_noise_rates: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip labels by a noise matrix (``generate_noisy_labels``: exact counts per cell); seeded.

    Returns ``(noisy_labels, noise_matrix)``.

    Parameters
    ----------
    labels : array-like
        The clean labels, shape ``(N,)``, integers in ``0..K-1``.
    num_classes : int
        K.
    kind, rate, frac_zero_noise_rates :
        As in :func:`noise_matrix` (defaults ``"asymmetric"``, 0.1, 0.6).
    seed : int, default 0
        Seed of the matrix and of the flips.

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        The noisy labels, shape ``(N,)``, and the noise matrix used, shape ``(K, K)``.

    Raises
    ------
    BadInput
        On invalid labels or matrix parameters.
    """
    from cleanlab.benchmarking.noise_generation import generate_noisy_labels

    y = validate_labels(labels, num_classes)
    py = np.bincount(y, minlength=num_classes) / len(y)
    m = noise_matrix(num_classes, kind=kind, rate=rate, frac_zero_noise_rates=frac_zero_noise_rates, py=py,
                     seed=seed)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        noisy = generate_noisy_labels(y, m)
    finally:
        np.random.set_state(state)
    return np.asarray(noisy, dtype=np.int64), m


def most_confused_partner(labels: Any, pred_probs: Any) -> np.ndarray:
    """For every class i, the class j ≠ i that its examples are most often predicted as.

    The off-diagonal argmax of row i of the confusion matrix (rows: labels, columns: argmax of
    ``pred_probs``, e.g. a model's out-of-sample predictions on clean labels); ties go to the lower
    class index, and a class never confused with another gets its nearest class by mean probability.

    Parameters
    ----------
    labels : array-like
        Labels, shape ``(N,)``, integers in ``0..K-1``.
    pred_probs : array-like
        Predicted probabilities, shape ``(N, K)``.

    Returns
    -------
    numpy.ndarray
        ``partner``, shape ``(K,)``, int: ``partner[i] != i``.

    Raises
    ------
    BadInput
        When ``pred_probs`` is not N×K for the N labels.

    Examples
    --------
    >>> most_confused_partner([0, 0, 1, 2], [[.1, .2, .7], [.9, .1, 0], [.2, .8, 0], [.1, .8, .1]])
    array([2, 0, 1])
    """
    pp = np.asarray(pred_probs, dtype=np.float64)
    require(pp.ndim == 2, f"pred_probs must be N×K, got shape {pp.shape}")
    k = pp.shape[1]
    y = validate_labels(labels, k)
    require(len(y) == len(pp), f"{len(y)} labels for {len(pp)} rows of pred_probs")
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (y, pp.argmax(1)), 1.0)
    # Break ties (and empty rows) by the mean predicted probability, a finer measure of confusion.
    mean_p = np.stack([pp[y == i].mean(0) if (y == i).any() else np.zeros(k) for i in range(k)])
    score = conf + 1e-6 * mean_p
    np.fill_diagonal(score, -np.inf)
    return score.argmax(1)


def flip_to_partner(labels: Any, partner: Any, *, rate: float = 0.1, seed: int = 0) -> np.ndarray:
    """Flip exactly ``round(rate · n_i)`` labels of each class i to ``partner[i]`` (seeded).

    With ``partner = most_confused_partner(...)`` this is structured noise where a weak model
    struggles most: every flip lands on the class the model already confuses with the true one.

    Parameters
    ----------
    labels : array-like
        Clean labels, shape ``(N,)``, integers in ``0..K-1``.
    partner : array-like
        Target class of each class, shape ``(K,)``, ``partner[i] != i``.
    rate : float, default 0.1
        Share of each class to flip, in [0, 1).
    seed : int, default 0
        Seed of which examples are flipped.

    Returns
    -------
    numpy.ndarray
        The noisy labels, shape ``(N,)``, int64.

    Raises
    ------
    BadInput
        When ``partner`` is out of range or maps a class to itself, or ``rate`` is out of [0, 1).

    Examples
    --------
    >>> flip_to_partner([0, 0, 1, 1], [1, 0], rate=0.5).tolist().count(0)
    2
    """
    check_in_range("rate", rate, 0.0, 1.0, high_open=True)
    part = np.asarray(partner, dtype=np.int64)
    k = len(part)
    y = validate_labels(labels, k)
    require(bool(((part >= 0) & (part < k)).all()) and not bool((part == np.arange(k)).any()),
            f"partner must map every class to another class in 0..{k - 1}, got {part.tolist()}")
    rng = np.random.default_rng(seed)
    out = y.copy()
    for c in range(k):
        idx = np.flatnonzero(y == c)
        pick = rng.choice(idx, int(round(rate * len(idx))), replace=False)
        out[pick] = part[c]
    return out
