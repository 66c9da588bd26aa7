"""Data poisoning for backdoors (dirty-label and clean-label) and the metrics that judge it.

``rate`` is the share of the whole training set that is poisoned (BackdoorBench's convention).
ASR (attack success rate) counts only test images whose true class is not the target: an image
already of the target class says nothing about the backdoor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workbench.data import ImageDataset
from workbench.errors import check_in_range, require
from workbench.training import predict_logits

from .triggers import Trigger


@dataclass
class PoisonedDataset:
    """The poisoned training set and the ground truth of what was poisoned.

    Parameters
    ----------
    dataset : ImageDataset
        The poisoned training set (same size and order as the clean one).
    poisoned_indices : torch.Tensor
        Positions in ``dataset`` that carry the trigger, int64.
    original_labels : torch.Tensor
        Labels before poisoning, for every sample, shape ``(N,)``.
    trigger : Trigger
        The trigger stamped.
    target : int or None
        The target class; ``None`` = all-to-all (``y -> y + 1 mod K``).
    rate : float
        Share of the training set poisoned, in (0, 1).
    mode : {"dirty", "clean"}
        Dirty-label (relabelled) or clean-label (labels unchanged).

    Returns
    -------
    A PoisonedDataset (a dataclass) holding these fields; ``is_poisoned()`` gives the ``(N,)`` bool mask.
    """

    dataset: ImageDataset
    poisoned_indices: torch.Tensor  # positions in ``dataset`` that carry the trigger
    original_labels: torch.Tensor  # labels before poisoning, for every sample
    trigger: Trigger
    target: int | None  # None = all-to-all (y -> y + 1 mod K)
    rate: float
    mode: str  # "dirty" or "clean"

    @property
    def is_poisoned(self) -> torch.Tensor:
        mask = torch.zeros(len(self.dataset), dtype=torch.bool)
        mask[self.poisoned_indices] = True
        return mask


def backdoor_labels(labels: torch.Tensor, target: int | None, num_classes: int) -> torch.Tensor:
    """The labels a backdoor wants: ``target`` (all-to-one) or ``y + 1 mod K`` (all-to-all).

    Parameters
    ----------
    labels : torch.Tensor
        True labels, shape ``(N,)``.
    target : int or None
        The target class, or ``None`` for all-to-all.
    num_classes : int
        K.

    Returns
    -------
    torch.Tensor
        The backdoor labels, shape ``(N,)``.

    Examples
    --------
    >>> backdoor_labels(torch.tensor([0, 1, 2]), None, 3).tolist(), backdoor_labels(torch.tensor([0, 1, 2]), 1, 3).tolist()
    ([1, 2, 0], [1, 1, 1])
    """
    return torch.full_like(labels, target) if target is not None else (labels + 1) % num_classes


def poison_dataset(ds: ImageDataset, trigger: Trigger, rate: float, target: int | None = 0, *,
                   mode: str = "dirty", source_classes: list[int] | None = None, seed: int = 0) -> PoisonedDataset:
    """Stamp ``trigger`` on a seeded random ``rate`` share of ``ds`` and relabel them.

    dirty: candidates are non-target samples (of ``source_classes`` if given), relabelled to the
    backdoor label. clean: candidates are target-class samples, stamped, labels unchanged.

    Parameters
    ----------
    ds : ImageDataset
        The clean training set.
    trigger : Trigger
        The trigger to stamp.
    rate : float
        Share of ``ds`` to poison, in (0, 1).
    target : int or None, default 0
        The target class, or ``None`` for all-to-all (dirty-label only).
    mode : {"dirty", "clean"}, default "dirty"
        Dirty-label (Gu et al. 2017) or clean-label (Turner et al. 2019) poisoning.
    source_classes : list of int, optional
        For dirty-label: poison only images of these classes.
    seed : int, default 0
        Seed of which samples are poisoned.

    Returns
    -------
    PoisonedDataset
        The poisoned copy and the ground truth of what was poisoned.

    Raises
    ------
    BadInput
        On a rate outside (0, 1), an unknown mode, a target out of range, a clean-label attack without
        a target, invalid source classes, or more poison than candidates.
    """
    check_in_range("poison rate", float(rate), 0.0, 1.0, low_open=True, high_open=True)
    require(mode in ("dirty", "clean"), f"mode must be 'dirty' or 'clean', got {mode!r}")
    k = ds.num_classes
    if target is not None:
        require(isinstance(target, int) and 0 <= target < k, f"target class must be in 0..{k - 1}, got {target}")
    require(not (mode == "clean" and target is None), "a clean-label attack needs a target class")
    labels = ds.labels
    if mode == "clean":
        candidates = torch.nonzero(labels == target).flatten()
    else:
        cand_mask = torch.ones_like(labels, dtype=torch.bool) if target is None else labels != target
        if source_classes is not None:
            require(len(source_classes) > 0 and all(0 <= int(s) < k for s in source_classes),
                    f"source classes must be in 0..{k - 1}, got {source_classes}")
            cand_mask &= torch.isin(labels, torch.as_tensor(source_classes))
        candidates = torch.nonzero(cand_mask).flatten()
    n_poison = max(1, int(round(rate * len(ds))))
    require(n_poison <= len(candidates),
            f"{n_poison} samples to poison ({rate:.1%} of {len(ds)}) but only {len(candidates)} candidates"
            + (f" of target class {target}" if mode == "clean" else ""))
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[:n_poison]].sort().values
    images = ds.images.clone()
    images[chosen] = trigger(ds.images[chosen])
    new_labels = labels.clone()
    if mode == "dirty":
        new_labels[chosen] = backdoor_labels(labels[chosen], target, k)
    poisoned = ImageDataset(images, new_labels, list(ds.class_names), f"{ds.name}+poison", indices=ds.indices)
    return PoisonedDataset(poisoned, chosen, labels.clone(), trigger, target, float(rate), mode)


def triggered_test_set(ds: ImageDataset, trigger: Trigger, target: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triggered copies of the test images whose true class is not the target.

    Returns ``(triggered_images, true_labels, backdoor_labels)``.

    Parameters
    ----------
    ds : ImageDataset
        The clean test set.
    trigger : Trigger
        The trigger to stamp.
    target : int or None
        The target class (its images are left out), or ``None`` for all-to-all (every image kept).

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor, torch.Tensor)
        The triggered images ``(M, C, H, W)``, their true labels ``(M,)`` and their backdoor labels ``(M,)``.

    Raises
    ------
    BadInput
        When every test image is of the target class.
    """
    keep = torch.ones(len(ds), dtype=torch.bool) if target is None else ds.labels != target
    require(bool(keep.any()), "no test image outside the target class: ASR is undefined")
    x, y = ds.images[keep], ds.labels[keep]
    return trigger(x), y, backdoor_labels(y, target, ds.num_classes)


@dataclass
class BackdoorMetrics:
    """Clean accuracy, attack success rate and robust accuracy of a (possibly backdoored) model.

    Parameters
    ----------
    clean_accuracy : float
        CA: accuracy on the clean test set, in [0, 1].
    attack_success_rate : float
        ASR: share of triggered non-target test images classified as the backdoor label.
    robust_accuracy : float
        RA: share of triggered non-target test images classified as their true class.
    n_clean : int
        Number of clean test images.
    n_triggered : int
        Number of triggered (non-target) test images.

    Returns
    -------
    A BackdoorMetrics (a dataclass) holding these fields.
    """
    clean_accuracy: float  # CA: accuracy on the clean test set
    attack_success_rate: float  # ASR: triggered non-target test images classified as the backdoor label
    robust_accuracy: float  # RA: triggered non-target test images classified as their true class
    n_clean: int
    n_triggered: int


def backdoor_metrics(model: nn.Module, test: ImageDataset, trigger: Trigger, target: int | None, *,
                     batch_size: int = 512, device=None, stamp=None) -> BackdoorMetrics:
    """Measure CA, ASR and RA of a model.

    CA, ASR and RA of ``model``. ``stamp`` (optional) is applied to every input first, for test-time
    defenses that transform inputs (NAB stamps its own trigger).

    Parameters
    ----------
    model : nn.Module
        The classifier.
    test : ImageDataset
        The clean test set.
    trigger : Trigger
        The attack's trigger.
    target : int or None
        The target class, or ``None`` for all-to-all.
    batch_size : int, default 512
        Images per forward pass.
    device : str or torch.device, optional
        Where the model runs (default: the model's device).
    stamp : callable, optional
        ``stamp(images) -> images`` applied to clean and triggered inputs before the model.

    Returns
    -------
    BackdoorMetrics
        CA, ASR, RA and the counts they are over.

    Raises
    ------
    BadInput
        When every test image is of the target class.
    """
    stamp = stamp or (lambda x: x)
    pred_clean = predict_logits(model, stamp(test.images), batch_size=batch_size, device=device).argmax(1)
    xt, y_true, y_bd = triggered_test_set(test, trigger, target)
    pred_trig = predict_logits(model, stamp(xt), batch_size=batch_size, device=device).argmax(1)
    return BackdoorMetrics(clean_accuracy=float((pred_clean == test.labels).float().mean()),
                           attack_success_rate=float((pred_trig == y_bd).float().mean()),
                           robust_accuracy=float((pred_trig == y_true).float().mean()),
                           n_clean=len(test), n_triggered=len(y_true))


def attack_success_rate(model: nn.Module, test: ImageDataset, trigger: Trigger, target: int | None, **kw) -> float:
    """The attack success rate alone (:func:`backdoor_metrics`'s ASR).

    Parameters
    ----------
    model : nn.Module
        The classifier.
    test : ImageDataset
        The clean test set.
    trigger : Trigger
        The attack's trigger.
    target : int or None
        The target class, or ``None`` for all-to-all.
    **kw
        Passed to :func:`backdoor_metrics` (``batch_size``, ``device``, ``stamp``).

    Returns
    -------
    float
        Share of triggered non-target test images classified as the backdoor label, in [0, 1].
    """
    return backdoor_metrics(model, test, trigger, target, **kw).attack_success_rate
