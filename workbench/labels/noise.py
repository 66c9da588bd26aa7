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
