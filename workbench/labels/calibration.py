"""Temperature scaling of out-of-sample probabilities, fitted only on data the model never saw.

Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017: one scalar
``T > 0`` divides the log-probabilities, ``p_T = softmax(log p / T)``, chosen to minimise the
negative log-likelihood of held-out labels; it changes confidence, not the argmax.

Confident learning reads probabilities against per-class thresholds, so over- or under-confident
probabilities move examples in and out of the confident joint. Here the temperature of each fold's
model is fitted on that fold's held-out examples (out-of-sample for that model), and *cross-fitted*:
the held-out fold is split in two seeded halves and each half is scaled by the temperature fitted
on the other, so no example's own (possibly wrong) label sets its temperature. The labels are the
given, noisy ones: confident learning wants ``p(given label | x)``, the quantity they calibrate.
"""

from __future__ import annotations

import numpy as np

from ..errors import require

#: Temperatures are searched in ``exp([-LOG_T_BOUND, LOG_T_BOUND])``.
LOG_T_BOUND = 3.0


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Fit the temperature of temperature scaling by maximum likelihood.

    The ``T`` minimising the mean NLL of ``labels`` under ``softmax(log_probs / T)`` (bounded search
    in log T with ``scipy.optimize.minimize_scalar``; Guo et al., "On Calibration of Modern Neural
    Networks", ICML 2017).

    Parameters
    ----------
    log_probs : numpy.ndarray
        Log-probabilities (or logits), shape ``(N, K)``.
    labels : numpy.ndarray
        Labels, shape ``(N,)``, integers in ``0..K-1``.

    Returns
    -------
    float
        The temperature ``T`` in ``[exp(-LOG_T_BOUND), exp(LOG_T_BOUND)]`` (T > 1 softens, T < 1 sharpens).

    Raises
    ------
    BadInput
        When the shapes are not N×K and N, or N is 0.
    """
    from scipy.optimize import minimize_scalar

    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels)
    require(lp.ndim == 2 and len(lp) == len(y) and len(y) > 0,
            f"fit_temperature needs N×K log-probabilities and N labels, got {lp.shape} and {y.shape}")
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-_log_softmax(lp / np.exp(log_t))[rows, y].mean())

    res = minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def apply_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale log-probabilities.

    ``softmax(log_probs / T)`` as float64 probabilities.

    Parameters
    ----------
    log_probs : numpy.ndarray
        Log-probabilities (or logits), shape ``(N, K)``.
    temperature : float
        ``T`` > 0.

    Returns
    -------
    numpy.ndarray
        Probabilities, shape ``(N, K)``, float64, rows summing to 1.

    Examples
    --------
    >>> apply_temperature(np.log([[0.2, 0.8]]), 1.0).round(6)
    array([[0.2, 0.8]])
    >>> apply_temperature(np.log([[0.2, 0.8]]), 1e9).round(6)
    array([[0.5, 0.5]])
    """
    return np.exp(_log_softmax(np.asarray(log_probs, dtype=np.float64) / temperature))


def cross_fit_temperature(probs: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Temperature-scale one held-out fold, each half with the other half's ``T``.

    Returns the scaled probabilities and the two temperatures. Folds of fewer than 4 examples are
    returned unchanged (no temperature can be fitted out of sample).

    Parameters
    ----------
    probs : numpy.ndarray
        The fold's probabilities, shape ``(N, K)``.
    labels : numpy.ndarray
        The fold's labels, shape ``(N,)``, integers in ``0..K-1``.
    seed : int, default 0
        Seed of the random split into halves.

    Returns
    -------
    tuple of (numpy.ndarray, list of float)
        The scaled probabilities, shape ``(N, K)``, and the temperatures fitted on the two halves
        (an empty list when the fold is too small).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if len(y) < 4:
        return p, []
    lp = np.log(np.clip(p, 1e-12, None))
    order = np.random.default_rng(seed).permutation(len(y))
    halves = (order[: len(y) // 2], order[len(y) // 2:])
    out = np.empty_like(p)
    temps = []
    for this, other in (halves, halves[::-1]):
        t = fit_temperature(lp[other], y[other])
        out[this] = apply_temperature(lp[this], t)
        temps.append(t)
    return out, temps
