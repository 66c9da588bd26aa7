"""Neural Cleanse: reverse-engineer a backdoor trigger per class from a small clean set.

Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao, "Neural Cleanse: Identifying and Mitigating Backdoor
Attacks in Neural Networks", IEEE S&P 2019 (reference code: github.com/bolunwang/backdoor,
``visualizer.py`` and ``mad_outlier_detection.py``, read, not copied).

For each class t the smallest trigger that sends clean images to t, in two families:

* **patch** (the paper's): mask m ∈ [0, 1]^{H×W} and pattern p ∈ [0, 1]^{C×H×W}, x' = (1 − m)·x + m·p,
  minimising CE(f(x'), t) + λ·|m|₁; the figure compared across classes is |m|₁ (pixels);
* **blend**: one blend amount a ∈ [0, 1] and a pattern p, x' = (1 − a)·x + a·p, minimising
  CE + λ·H·W·a; the figure is a. A Blended backdoor (Chen et al. 2017) is a full-image pattern at a
  small weight, whose patch mask is a large L1 (0.2 of every pixel is 157 pixels on 28×28, more
  than most classes' natural triggers), so the patch family does not see it; its blend amount is
  a few times smaller than any clean class's.

As in the reference, m (or a) and p live in tanh space (m = tanh(w)/(2 − ε) + 0.5), Adam with β =
(0.5, 0.9), batches of 32, the cost λ starts at 0, is set to ``init_cost`` once the attack succeeds
for ``patience`` passes, then multiplied up by ``cost_multiplier`` after ``patience`` successful
passes and divided by ``cost_multiplier ** 1.5`` after ``patience`` failed ones; the smallest
trigger among passes reaching ``success_threshold`` is kept, and a class's search stops early once
λ is set and its best size has not shrunk by 1% for ``early_stop`` passes (the reference's early
stop, with its patience in passes).

The anomaly index of class t, per family, is (median − v_t) / (1.4826 · MAD) over classes, computed
on ``log`` sizes by default: a size is a scale, classes spread over it multiplicatively (on our
``shapes`` set the clean classes' masks span 46-129 pixels, on 8×8 digits 8-21), and on a linear
scale the MAD is set by the large classes, so a trigger four times smaller than the median can stay
under the bar. ``scale="linear"`` is the reference's index. A class is flagged when its size is
*below* the median and its index exceeds ``threshold`` (2 in the paper) in either family.

The scan also reports what it could have seen: the largest trigger it would flag, per family (the
size at which the index reaches the threshold). When that is smaller than a plausible backdoor
trigger (``min_patch`` pixels, a 3×3 patch; ``min_blend``), a backdoor of that size would not
stand out among the classes' natural triggers, and the scan is inconclusive, not a pass: on 8×8
digits the classes' natural triggers are 8-21 pixels, so a 3×3 patch (9 pixels) cannot be told
from them.

Differences from the reference: pixels are in [0, 1] (the adapter normalises), the mask is full
resolution (``UPSAMPLE_SIZE`` 1), the noise of initialisation and batching comes from a seeded
generator, ``steps`` counts passes over the clean set (the reference's ``mini_batch`` batches), the
blend family, and the log-scale index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.adapter import as_model, model_device, model_mode
from workbench.data import ImageDataset, as_dataset
from workbench.errors import check_in_range, require

Progress = Callable[[float, str], None]
MAD_CONSISTENCY = 1.4826  # MAD → standard deviation for normal data
FAMILIES = ("patch", "blend")
SCALES = ("log", "linear")


@dataclass
class ReversedTrigger:
    """The trigger reverse-engineered for one class (the smallest found that reaches the success threshold).

    Parameters
    ----------
    target : int
        The class the trigger sends images to.
    mask : torch.Tensor
        H×W, values in [0, 1]: how much of the pattern replaces each pixel (for the blend family the
        blend amount at every pixel).
    pattern : torch.Tensor
        C×H×W, values in [0, 1].
    l1 : float
        The mask's L1 norm (its sum).
    success : float
        Share of the clean set sent to ``target`` by this trigger, in [0, 1] (below the success
        threshold when no pass reached it; then the size is an upper bound).
    family : str, default "patch"
        ``"patch"`` (a mask) or ``"blend"`` (one blend amount).
    passes : int, default 0
        Passes over the clean set the search ran (early stopping may end it before ``steps``).

    Returns
    -------
    A ReversedTrigger (dataclass)
        Returned by :func:`reverse_trigger`; :attr:`size` is the figure compared across classes.
    """

    target: int
    mask: torch.Tensor  # H×W in [0, 1]
    pattern: torch.Tensor  # C×H×W in [0, 1]
    l1: float
    success: float  # share of the clean set sent to ``target`` by the best trigger
    family: str = "patch"
    passes: int = 0

    @property
    def size(self) -> float:
        """The figure compared across classes: the mask's L1 (patch) or the blend amount (blend).

        Returns
        -------
        float
            Pixels for a patch, a weight in [0, 1] for a blend.
        """
        return self.l1 if self.family == "patch" else float(self.mask.flatten()[0])


@dataclass
class NeuralCleanseResult:
    """Neural Cleanse over the classes: each class's triggers, the anomaly indices and the flagged classes.

    Parameters
    ----------
    triggers : list of ReversedTrigger
        The patch family's trigger of each class scanned, in the order scanned.
    l1_norms : numpy.ndarray
        Shape (classes scanned,): each patch trigger's mask L1 norm.
    anomaly_index : numpy.ndarray
        Same shape: per class the larger of its families' signed indices (:func:`anomaly_indices`),
        positive when the size is below the median.
    flagged : list of int
        Classes whose size is below the median with an index above ``threshold`` in some family,
        largest index first.
    threshold : float
        The anomaly index threshold used (2 in the paper).
    seconds : float
        Wall time of the scan.
    params : dict, default {}
        The settings it ran with.
    blend_triggers : list of ReversedTrigger, default []
        The blend family's trigger of each class (empty when that family was not scanned).
    family_index : dict, default {}
        Family → per-class anomaly indices.
    detectable : dict, default {}
        Family → the largest trigger size the scan would flag (pixels for patch, weight for blend).
    inconclusive : list of str, default []
        Why the scan could not rule a backdoor out (one sentence per family), when it flagged nothing.

    Returns
    -------
    A NeuralCleanseResult (dataclass)
        Returned by :func:`neural_cleanse`.
    """

    triggers: list[ReversedTrigger]
    l1_norms: np.ndarray  # per class
    anomaly_index: np.ndarray  # per class, signed: > 0 when the size is below the median
    flagged: list[int]
    threshold: float
    seconds: float
    params: dict = field(default_factory=dict)
    blend_triggers: list[ReversedTrigger] = field(default_factory=list)
    family_index: dict = field(default_factory=dict)
    detectable: dict = field(default_factory=dict)
    inconclusive: list[str] = field(default_factory=list)

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


def anomaly_indices(sizes, scale: str = "linear") -> np.ndarray:
    """(median − v) / (1.4826·MAD) per class, v the size or its log: the reference's index, signed so
    that suspiciously *small* triggers are positive (only those can be flagged).

    Parameters
    ----------
    sizes : array_like
        One trigger size per class (mask L1 norms or blend amounts), positive.
    scale : {"linear", "log"}, default "linear"
        Compute on the sizes (the reference) or on their logarithms.

    Returns
    -------
    numpy.ndarray
        float64, same length (MAD floored at 1e-12, so equal sizes give 0).

    Examples
    --------
    >>> anomaly_indices([40.0, 42.0, 38.0, 41.0, 39.0, 5.0]).round(2)
    array([-0.22, -1.12,  0.67, -0.67,  0.22, 15.51])
    >>> sizes = [46.0, 129.0, 60.0, 78.0, 100.0, 70.0, 90.0, 55.0, 115.0, 20.0]  # one class 3.7x below the median
    >>> float(anomaly_indices(sizes)[-1].round(2)), float(anomaly_indices(sizes, "log")[-1].round(2))
    (1.62, 2.95)
    """
    require(scale in SCALES, f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    x = np.asarray(sizes, dtype=np.float64)
    if scale == "log":
        x = np.log(np.maximum(x, 1e-12))
    med = np.median(x)
    mad = MAD_CONSISTENCY * np.median(np.abs(x - med))
    return (med - x) / max(mad, 1e-12)


def detectable_size(sizes, threshold: float = 2.0, scale: str = "linear") -> float:
    """The largest trigger size that :func:`flag_classes` would flag among these classes' sizes.

    Parameters
    ----------
    sizes : array_like
        One trigger size per class.
    threshold : float, default 2.0
        The anomaly index threshold.
    scale : {"linear", "log"}, default "linear"
        As for :func:`anomaly_indices`.

    Returns
    -------
    float
        ``median − threshold·1.4826·MAD`` (or its exponential on the log scale); at most 0 on the
        linear scale means no positive size could be flagged.

    Examples
    --------
    >>> round(detectable_size([10.0, 12.0, 8.0, 11.0, 9.0]), 3)  # median 10, MAD 1
    7.035
    """
    x = np.asarray(sizes, dtype=np.float64)
    if scale == "log":
        lx = np.log(np.maximum(x, 1e-12))
        med = np.median(lx)
        return float(np.exp(med - threshold * MAD_CONSISTENCY * np.median(np.abs(lx - med))))
    med = np.median(x)
    return float(med - threshold * MAD_CONSISTENCY * np.median(np.abs(x - med)))


def flag_classes(sizes, threshold: float = 2.0, scale: str = "linear") -> list[int]:
    """The classes whose trigger is anomalously small: signed anomaly index above ``threshold``.

    Parameters
    ----------
    sizes : array_like
        One trigger size per class.
    threshold : float, default 2.0
        Anomaly index above which a class is flagged (2 in the paper).
    scale : {"linear", "log"}, default "linear"
        As for :func:`anomaly_indices`.

    Returns
    -------
    list of int
        Positions in ``sizes`` of the flagged classes, smallest size first.

    Examples
    --------
    >>> flag_classes([40.0, 42.0, 38.0, 41.0, 39.0, 5.0])
    [5]
    """
    idx = anomaly_indices(sizes, scale)
    hits = [int(c) for c in np.flatnonzero(idx > threshold)]
    return sorted(hits, key=lambda c: sizes[c])


def reverse_trigger(model: nn.Module, images: torch.Tensor, target: int, *, steps: int = 30,
                    batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                    success_threshold: float = 0.99, patience: int = 3, cost_multiplier: float = 2.0,
                    seed: int = 0, family: str = "patch", early_stop: int | None = None) -> ReversedTrigger:
    """The smallest trigger of ``family`` sending ``images`` (N×C×H×W in [0, 1]) to class ``target``.

    Minimises CE(f(x'), target) + λ·size with x' = (1 − m)·x + m·p (patch: m a mask, size |m|₁;
    blend: m one amount a, size H·W·a), m and p in tanh space, Adam β = (0.5, 0.9) and the
    reference's cost schedule for λ (see the module docstring). The model's parameters are frozen
    during the search and unfrozen afterwards.

    Parameters
    ----------
    model : nn.Module
        The classifier, in eval mode, taking images in [0, 1].
    images : torch.Tensor
        N×C×H×W clean images in [0, 1].
    target : int
        The class to reverse-engineer a trigger for.
    steps : int, default 30
        Passes over ``images`` at most.
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
    family : {"patch", "blend"}, default "patch"
        The trigger family (module docstring).
    early_stop : int, optional
        Stop once λ is set and the best size has not shrunk by 1% for this many passes; None runs
        every pass.

    Returns
    -------
    ReversedTrigger
        The smallest trigger among the passes that reached ``success_threshold``; the last one when
        none did.
    """
    require(family in FAMILIES, f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    dev = model_device(model)
    gen = torch.Generator().manual_seed(seed * 1009 + target + (0 if family == "patch" else 7919))
    n, c, h, w = images.shape
    eps = 1e-7
    to_tanh = lambda v: torch.atanh((v - 0.5) * (2 - eps))  # noqa: E731
    shape = (h, w) if family == "patch" else (1, 1)
    start = torch.rand(*shape, generator=gen) if family == "patch" else torch.full(shape, 0.5)
    mask_w = to_tanh(start).to(dev).requires_grad_(True)
    pat_w = to_tanh(torch.rand(c, h, w, generator=gen)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask_w, pat_w], lr=lr, betas=(0.5, 0.9))
    unit = 1.0 if family == "patch" else float(h * w)  # the blend's cost weighs one amount like a full mask
    cost, up_n, down_n, set_n = 0.0, 0, 0, 0
    best = (float("inf"), None, None, 0.0)
    ref, since, passes = float("inf"), 0, 0
    acc = 0.0

    def current():
        mask = torch.tanh(mask_w) / (2 - eps) + 0.5
        return mask.expand(h, w), torch.tanh(pat_w) / (2 - eps) + 0.5

    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _step in range(steps):
            passes += 1
            order = torch.randperm(n, generator=gen)
            hits, reg_sum, seen = 0, 0.0, 0
            for s in range(0, n, batch_size):
                x = images[order[s:s + batch_size]].to(dev)
                mask, pattern = current()
                logits = model((1 - mask) * x + mask * pattern)
                y = torch.full((len(x),), target, device=dev)
                reg = mask.abs().sum() if family == "patch" else (torch.tanh(mask_w) / (2 - eps) + 0.5).sum() * unit
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
                    m, pt = current()
                    best = (reg_avg, m.detach().cpu().clone(), pt.detach().cpu().clone(), acc)
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
            if early_stop is not None and cost > 0:
                if best[0] < 0.99 * ref:
                    ref, since = best[0], 0
                else:
                    since += 1
                    if since >= early_stop:
                        break
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    if best[1] is None:  # never reached the threshold: keep the last trigger (its size is an upper bound)
        with torch.no_grad():
            mask, pattern = (t.detach().cpu().clone() for t in current())
        return ReversedTrigger(target, mask, pattern, float(mask.sum()), acc, family, passes)
    return ReversedTrigger(target, best[1], best[2], float(best[1].sum()), best[3], family, passes)


def neural_cleanse(model: nn.Module, clean: ImageDataset, *, n_images: int = 300, steps: int = 30,
                   threshold: float = 2.0, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                   patience: int = 3, seed: int = 0, classes: list[int] | None = None,
                   families: tuple[str, ...] = ("patch",), scale: str = "linear", early_stop: int | None = None,
                   min_patch: float = 0.0, min_blend: float = 0.0,
                   progress: Progress | None = None) -> NeuralCleanseResult:
    """Reverse-engineer a trigger for every class from ``n_images`` of ``clean`` and flag the classes
    whose trigger is anomalously small (anomaly index > ``threshold``) in some family.

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
        Passes over those images per class and family, at most; ≥ 1.
    threshold : float, default 2.0
        Anomaly index above which a class is flagged, in (0, 100] (2 in the paper).
    batch_size : int, default 32
        Images per optimisation step.
    lr : float, default 0.1
        Adam learning rate of mask and pattern.
    init_cost : float, default 1e-3
        Initial weight λ of the trigger's size (see :func:`reverse_trigger`).
    patience : int, default 3
        Passes before λ is changed.
    seed : int, default 0
        Seeds the sample and each class's search.
    classes : list of int or None, default None
        Classes to scan; None for all. The median test runs over the classes scanned.
    families : tuple of str, default ("patch",)
        Trigger families to scan: ``"patch"`` (the paper's), ``"blend"``, or both.
    scale : {"linear", "log"}, default "linear"
        The anomaly index's scale (module docstring); the audit uses ``"log"``.
    early_stop : int, optional
        Per class, stop after this many passes without a 1% smaller trigger (see :func:`reverse_trigger`).
    min_patch, min_blend : float, default 0.0
        A plausible backdoor's size per family (pixels; blend weight): when nothing is flagged and the
        largest flaggable size is below it, :attr:`NeuralCleanseResult.inconclusive` says so.
    progress : callable or None, default None
        ``progress(fraction, message)`` after each class.

    Returns
    -------
    NeuralCleanseResult
        Every class's triggers, the anomaly indices, the flagged classes and what the scan could see.

    Raises
    ------
    BadInput
        When ``threshold`` is outside (0, 100], ``steps`` or ``n_images`` is below 1, a family or scale
        is unknown, or the data has fewer than 3 classes.
    """
    check_in_range("threshold", float(threshold), 0.0, 100.0, low_open=True)
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    require(n_images >= 1, f"n_images must be >= 1, got {n_images}")
    families = tuple(families)
    require(len(families) >= 1 and all(f in FAMILIES for f in families),
            f"families must be some of {', '.join(FAMILIES)}, got {families!r}")
    require(scale in SCALES, f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    clean = as_dataset(clean)
    model = as_model(model)
    k = clean.num_classes
    require(k >= 3, f"Neural Cleanse needs at least 3 classes for the median test, got {k}")
    sub = clean.sample(min(n_images, len(clean)), seed=seed) if len(clean) > n_images else clean
    images = sub.images.float()
    t0 = time.perf_counter()
    found: dict[str, list[ReversedTrigger]] = {f: [] for f in families}
    todo = list(range(k)) if classes is None else list(classes)
    with model_mode(model):
        for i, t in enumerate(todo):
            for fam in families:
                found[fam].append(reverse_trigger(model, images, t, steps=steps, batch_size=batch_size, lr=lr,
                                                  init_cost=init_cost, patience=patience, seed=seed, family=fam,
                                                  early_stop=early_stop))
            if progress is not None:
                sizes = ", ".join(f"{fam} {found[fam][-1].size:.3g}" for fam in families)
                progress((i + 1) / len(todo), f"class {clean.class_names[t]}: {sizes}")
    family_index, detectable, inconclusive = {}, {}, []
    for fam in families:
        sizes = np.array([tr.size for tr in found[fam]])
        family_index[fam] = anomaly_indices(sizes, scale)
        detectable[fam] = detectable_size(sizes, threshold, scale)
    index = np.max(np.stack([family_index[f] for f in families]), axis=0)
    flagged = sorted((todo[c] for c in np.flatnonzero(index > threshold)), key=lambda t: -index[todo.index(t)])
    if not flagged:
        floor = {"patch": (min_patch, "pixels", "a patch trigger of {:g} pixels"),
                 "blend": (min_blend, "", "a blended trigger at weight {:g}")}
        for fam in families:
            least, unit, what = floor[fam]
            if detectable[fam] < least:
                natural = sorted(tr.size for tr in found[fam])
                inconclusive.append(
                    f"{fam} triggers: the scan could flag only a trigger smaller than {detectable[fam]:.3g}"
                    f"{' ' + unit if unit else ''}, the classes' own being {natural[0]:.3g}-{natural[-1]:.3g}, so "
                    f"{what.format(least)} would not stand out.")
    patch = found.get("patch", [])
    return NeuralCleanseResult(patch, np.array([tr.l1 for tr in patch]), index, flagged, float(threshold),
                               time.perf_counter() - t0,
                               {"n_images": len(sub), "steps": steps, "batch_size": batch_size, "lr": lr,
                                "init_cost": init_cost, "patience": patience, "seed": seed, "families": list(families),
                                "scale": scale, "early_stop": early_stop},
                               found.get("blend", []), family_index, detectable, inconclusive)
