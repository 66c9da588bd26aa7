"""Neural Cleanse: reverse-engineer a backdoor trigger per class from a small clean set.

Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao, "Neural Cleanse: Identifying and Mitigating Backdoor
Attacks in Neural Networks", IEEE S&P 2019 (reference code: github.com/bolunwang/backdoor,
``visualizer.py`` and ``mad_outlier_detection.py``, read, not copied).

For each class t the smallest trigger (mask m ∈ [0, 1]^{H×W}, pattern p ∈ [0, 1]^{C×H×W}) that sends
clean images to t: x' = (1 − m)·x + m·p, minimising CE(f(x'), t) + λ·|m|₁. As in the reference, m and
p live in tanh space (m = tanh(w)/(2 − ε) + 0.5), Adam with β = (0.5, 0.9), batches of 32, the cost λ starts at 0,
is set to ``init_cost`` once the attack succeeds for ``patience`` steps, then multiplied up by
``cost_multiplier`` after ``patience`` successful steps and divided by ``cost_multiplier ** 1.5``
after ``patience`` failed ones; the smallest-L1 mask among steps reaching ``success_threshold`` is
kept. The anomaly index of class t is |L1_t − median| / (1.4826 · MAD) over classes; a class is
flagged when its L1 norm is *below* the median and its index exceeds ``threshold`` (2 in the paper).

Differences from the reference: pixels are in [0, 1] (the adapter normalises), the mask is full
resolution (``UPSAMPLE_SIZE`` 1), the noise of initialisation and batching comes from a seeded
generator, and ``steps`` counts passes over the clean set (the reference's ``mini_batch`` batches).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.adapter import as_model, model_device
from workbench.data import ImageDataset, as_dataset
from workbench.errors import check_in_range, require

Progress = Callable[[float, str], None]
MAD_CONSISTENCY = 1.4826  # MAD → standard deviation for normal data


@dataclass
class ReversedTrigger:
    """The trigger reverse-engineered for one class (the smallest mask found that reaches the success threshold).

    Parameters
    ----------
    target : int
        The class the trigger sends images to.
    mask : torch.Tensor
        H×W, values in [0, 1]: how much of the pattern replaces each pixel.
    pattern : torch.Tensor
        C×H×W, values in [0, 1].
    l1 : float
        The mask's L1 norm (its sum), the figure compared across classes.
    success : float
        Share of the clean set sent to ``target`` by this trigger, in [0, 1] (below the success
        threshold when no step reached it; then ``l1`` is an upper bound).

    Returns
    -------
    A ReversedTrigger (dataclass)
        Returned by :func:`reverse_trigger`; one per class in :attr:`NeuralCleanseResult.triggers`.
    """

    target: int
    mask: torch.Tensor  # H×W in [0, 1]
    pattern: torch.Tensor  # C×H×W in [0, 1]
    l1: float
    success: float  # share of the clean set sent to ``target`` by the best trigger


@dataclass
class NeuralCleanseResult:
    """Neural Cleanse over the classes: each class's trigger, the anomaly indices and the flagged classes.

    Parameters
    ----------
    triggers : list of ReversedTrigger
        One per class scanned, in the order scanned.
    l1_norms : numpy.ndarray
        Shape (classes scanned,): each trigger's mask L1 norm.
    anomaly_index : numpy.ndarray
        Same shape; signed (:func:`anomaly_indices`): positive when the norm is below the median.
    flagged : list of int
        Classes with a norm below the median and an anomaly index above ``threshold``, smallest norm first.
    threshold : float
        The anomaly index threshold used (2 in the paper).
    seconds : float
        Wall time of the scan.
    params : dict, default {}
        The settings it ran with (``n_images``, ``steps``, ``batch_size``, ``lr``, ``init_cost``,
        ``patience``, ``seed``).

    Returns
    -------
    A NeuralCleanseResult (dataclass)
        Returned by :func:`neural_cleanse`.
    """

    triggers: list[ReversedTrigger]
    l1_norms: np.ndarray  # per class
    anomaly_index: np.ndarray  # per class, signed: > 0 when the norm is below the median
    flagged: list[int]  # classes with norm below the median and index > threshold, smallest norm first
    threshold: float
    seconds: float
    params: dict = field(default_factory=dict)

    @property
    def max_anomaly_index(self) -> float:
        """The largest anomaly index over the classes.

        Parameters: none

        Returns
        -------
        float
            Above ``threshold`` when some class is flagged.
        """
        return float(np.max(self.anomaly_index))


def anomaly_indices(l1_norms) -> np.ndarray:
    """(median − L1) / (1.4826·MAD) per class: the reference's index, signed so that suspiciously
    *small* triggers are positive (only those can be flagged).

    Parameters
    ----------
    l1_norms : array_like
        One mask L1 norm per class.

    Returns
    -------
    numpy.ndarray
        float64, same length: ``(median − L1) / (1.4826 · MAD)`` (MAD floored at 1e-12, so equal norms
        give 0).

    Examples
    --------
    >>> anomaly_indices([40.0, 42.0, 38.0, 41.0, 39.0, 5.0]).round(2)
    array([-0.22, -1.12,  0.67, -0.67,  0.22, 15.51])
    """
    x = np.asarray(l1_norms, dtype=np.float64)
    med = np.median(x)
    mad = MAD_CONSISTENCY * np.median(np.abs(x - med))
    return (med - x) / max(mad, 1e-12)


def flag_classes(l1_norms, threshold: float = 2.0) -> list[int]:
    """The classes whose trigger is anomalously small: signed anomaly index above ``threshold``.

    Parameters
    ----------
    l1_norms : array_like
        One mask L1 norm per class.
    threshold : float, default 2.0
        Anomaly index above which a class is flagged (2 in the paper).

    Returns
    -------
    list of int
        Positions in ``l1_norms`` of the flagged classes, smallest norm first.

    Examples
    --------
    >>> flag_classes([40.0, 42.0, 38.0, 41.0, 39.0, 5.0])
    [5]
    """
    idx = anomaly_indices(l1_norms)
    hits = [int(c) for c in np.flatnonzero(idx > threshold)]
    return sorted(hits, key=lambda c: l1_norms[c])


def reverse_trigger(model: nn.Module, images: torch.Tensor, target: int, *, steps: int = 30,
                    batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                    success_threshold: float = 0.99, patience: int = 3, cost_multiplier: float = 2.0,
                    seed: int = 0) -> ReversedTrigger:
    """The smallest mask and pattern sending ``images`` (N×C×H×W in [0, 1]) to class ``target``.

    Minimises CE(f((1 − m)·x + m·p), target) + λ·|m|₁ with m and p in tanh space, Adam β = (0.5, 0.9)
    and the reference's cost schedule for λ (see the module docstring). The model's parameters are
    frozen during the search and unfrozen afterwards.

    Parameters
    ----------
    model : nn.Module
        The classifier, in eval mode, taking images in [0, 1].
    images : torch.Tensor
        N×C×H×W clean images in [0, 1].
    target : int
        The class to reverse-engineer a trigger for.
    steps : int, default 30
        Passes over ``images``.
    batch_size : int, default 32
        Images per optimisation step.
    lr : float, default 0.1
        Adam learning rate of mask and pattern.
    init_cost : float, default 1e-3
        λ once the attack first succeeds for ``patience`` passes (λ is 0 before).
    success_threshold : float, default 0.99
        Share of images sent to ``target`` that counts as success.
    patience : int, default 3
        Passes of success (failure) before λ is multiplied (divided).
    cost_multiplier : float, default 2.0
        λ is multiplied by this after ``patience`` successes, divided by its 1.5th power after
        ``patience`` failures.
    seed : int, default 0
        Seeds the initialisation and the batch order (with ``target``).

    Returns
    -------
    ReversedTrigger
        The smallest-L1 trigger among the passes that reached ``success_threshold``; the last one when
        none did.
    """
    dev = model_device(model)
    gen = torch.Generator().manual_seed(seed * 1009 + target)
    n, c, h, w = images.shape
    eps = 1e-7
    to_tanh = lambda v: torch.atanh((v - 0.5) * (2 - eps))  # noqa: E731
    mask_w = to_tanh(torch.rand(h, w, generator=gen)).to(dev).requires_grad_(True)
    pat_w = to_tanh(torch.rand(c, h, w, generator=gen)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask_w, pat_w], lr=lr, betas=(0.5, 0.9))
    cost, up_n, down_n, set_n = 0.0, 0, 0, 0
    best = (float("inf"), None, None, 0.0)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _step in range(steps):
            order = torch.randperm(n, generator=gen)
            hits, reg_sum, seen = 0, 0.0, 0
            for s in range(0, n, batch_size):
                x = images[order[s:s + batch_size]].to(dev)
                mask = torch.tanh(mask_w) / (2 - eps) + 0.5
                pattern = torch.tanh(pat_w) / (2 - eps) + 0.5
                logits = model((1 - mask) * x + mask * pattern)
                y = torch.full((len(x),), target, device=dev)
                reg = mask.abs().sum()
                loss = F.cross_entropy(logits, y) + cost * reg
                opt.zero_grad()
                loss.backward()
                opt.step()
                hits += int((logits.argmax(1) == y).sum())
                reg_sum += float(reg.detach()) * len(x)
                seen += len(x)
            acc, reg_avg = hits / seen, reg_sum / seen
            if acc >= success_threshold and reg_avg < best[0]:
                with torch.no_grad():
                    best = (reg_avg, (torch.tanh(mask_w) / (2 - eps) + 0.5).detach().cpu(),
                            (torch.tanh(pat_w) / (2 - eps) + 0.5).detach().cpu(), acc)
            # the reference's cost schedule
            if cost == 0 and acc >= success_threshold:
                set_n += 1
                if set_n >= patience:
                    cost, up_n, down_n = init_cost, 0, 0
            else:
                set_n = 0
            if acc >= success_threshold:
                up_n, down_n = up_n + 1, 0
            else:
                up_n, down_n = 0, down_n + 1
            if cost > 0 and up_n >= patience:
                up_n, cost = 0, cost * cost_multiplier
            elif cost > 0 and down_n >= patience:
                down_n, cost = 0, cost / cost_multiplier ** 1.5
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    if best[1] is None:  # never reached the threshold: keep the last trigger (its norm is an upper bound)
        with torch.no_grad():
            mask = (torch.tanh(mask_w) / (2 - eps) + 0.5).detach().cpu()
            pattern = (torch.tanh(pat_w) / (2 - eps) + 0.5).detach().cpu()
        return ReversedTrigger(target, mask, pattern, float(mask.sum()), acc)
    return ReversedTrigger(target, best[1], best[2], float(best[1].sum()), best[3])


def neural_cleanse(model: nn.Module, clean: ImageDataset, *, n_images: int = 300, steps: int = 30,
                   threshold: float = 2.0, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                   patience: int = 3, seed: int = 0, classes: list[int] | None = None,
                   progress: Progress | None = None) -> NeuralCleanseResult:
    """Reverse-engineer a trigger for every class from ``n_images`` of ``clean`` and flag the classes
    whose trigger is anomalously small (anomaly index > ``threshold``).

    Parameters
    ----------
    model : nn.Module
        The classifier (anything :func:`workbench.adapter.as_model` takes); put in eval mode during the
        scan and restored afterwards.
    clean : ImageDataset
        A clean set (anything :func:`workbench.data.as_dataset` takes) with at least 3 classes.
    n_images : int, default 300
        Clean images used (a seeded sample when ``clean`` is larger); ≥ 1.
    steps : int, default 30
        Passes over those images per class; ≥ 1.
    threshold : float, default 2.0
        Anomaly index above which a class is flagged, in (0, 100] (2 in the paper).
    batch_size : int, default 32
        Images per optimisation step.
    lr : float, default 0.1
        Adam learning rate of mask and pattern.
    init_cost : float, default 1e-3
        Initial weight λ of the mask's L1 norm (see :func:`reverse_trigger`).
    patience : int, default 3
        Passes before λ is changed.
    seed : int, default 0
        Seeds the sample and each class's search.
    classes : list of int or None, default None
        Classes to scan; None for all. The median test runs over the classes scanned.
    progress : callable or None, default None
        ``progress(fraction, message)`` after each class.

    Returns
    -------
    NeuralCleanseResult
        Every class's trigger, the anomaly indices and the flagged classes.

    Raises
    ------
    BadInput
        When ``threshold`` is outside (0, 100], ``steps`` or ``n_images`` is below 1, or the data has
        fewer than 3 classes.
    """
    check_in_range("threshold", float(threshold), 0.0, 100.0, low_open=True)
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    require(n_images >= 1, f"n_images must be >= 1, got {n_images}")
    clean = as_dataset(clean)
    model = as_model(model)
    k = clean.num_classes
    require(k >= 3, f"Neural Cleanse needs at least 3 classes for the median test, got {k}")
    sub = clean.sample(min(n_images, len(clean)), seed=seed) if len(clean) > n_images else clean
    images = sub.images.float()
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    triggers = []
    todo = list(range(k)) if classes is None else list(classes)
    try:
        for i, t in enumerate(todo):
            triggers.append(reverse_trigger(model, images, t, steps=steps, batch_size=batch_size, lr=lr,
                                            init_cost=init_cost, patience=patience, seed=seed))
            if progress is not None:
                progress((i + 1) / len(todo), f"class {clean.class_names[t]}: |m|₁ {triggers[-1].l1:.1f}")
    finally:
        model.train(was_training)
    norms = np.array([tr.l1 for tr in triggers])
    return NeuralCleanseResult(triggers, norms, anomaly_indices(norms), [todo[c] for c in flag_classes(norms, threshold)],
                               float(threshold), time.perf_counter() - t0,
                               {"n_images": len(sub), "steps": steps, "batch_size": batch_size, "lr": lr, "init_cost": init_cost,
                                "patience": patience, "seed": seed})
