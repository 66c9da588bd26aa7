"""Dirty-label (and clean-label) backdoor poisoning attacks end to end: BadNets and Blended.

``run_backdoor_attack`` poisons the training split with a trigger, trains a fresh zoo model on it
with the shared training loop (:func:`workbench.training.train_on_split`), and measures clean
accuracy (CA), attack success rate (ASR, non-target test images only) and robust accuracy (RA).

- BadNets: Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning
  Model Supply Chain", 2017. A small solid (or checkerboard) patch in a corner; poisoned samples
  are relabelled to the target class (all-to-one) or to ``y + 1 mod K`` (all-to-all).
- Blended: Chen, Liu, Li, Lu, Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
  Poisoning", 2017, Eq. (2): ``x' = (1 - alpha)·x + alpha·k`` with a key pattern ``k`` (here seeded
  uniform noise or a user image).

Differences from the papers: the poison rate is the share of the whole training set (BackdoorBench's
convention); the victim is our zoo CNN/ResNet trained with small random shifts (the same recipe as a
clean model), not the papers' networks. ``mode="clean"`` stamps target-class images only and keeps
their labels (the clean-label variant of Turner et al. 2019 without its adversarial perturbation).

The triggers and the poisoning itself live in :mod:`attacks.triggers` and :mod:`attacks.poison`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workbench.data import ImageDataset, load_dataset, train_test_split
from workbench.errors import BadInput, require
from workbench.models import ModelCard
from workbench.training import FitHistory, Progress, confusion_matrix, predict_logits, train_on_split

from .poison import BackdoorMetrics, PoisonedDataset, backdoor_metrics, poison_dataset, triggered_test_set
from .triggers import BlendTrigger, PatchTrigger, Trigger

ATTACKS = ("badnets", "blended")


def make_trigger(attack: str, *, patch_size: int = 3, position: str | tuple[int, int] = "bottom-right",
                 pattern: str | torch.Tensor | None = None, alpha: float = 0.15, pattern_seed: int = 0,
                 margin: int = 1) -> Trigger:
    """The trigger of a named attack.

    ``badnets``: a ``patch_size``×``patch_size`` patch at ``position`` (``pattern`` "solid" by
    default, "checkerboard" or an image tensor). ``blended``: blend with ``alpha`` and ``pattern``
    ("noise" drawn from ``pattern_seed`` by default, or an image tensor).

    Parameters
    ----------
    attack : {"badnets", "blended"}
        The attack's name (case-insensitive).
    patch_size : int, default 3
        Side of the BadNets patch in pixels.
    position : str or tuple of (int, int), default "bottom-right"
        Where the patch goes (see :class:`~attacks.triggers.PatchTrigger`).
    pattern : str or torch.Tensor, optional
        The patch or blend pattern (defaults above).
    alpha : float, default 0.15
        Blend weight, in [0, 1].
    pattern_seed : int, default 0
        Seed of the blend noise.
    margin : int, default 1
        Pixels between a corner patch and the border.

    Returns
    -------
    Trigger
        A :class:`~attacks.triggers.PatchTrigger` or :class:`~attacks.triggers.BlendTrigger`.

    Raises
    ------
    BadInput
        On an unknown attack or invalid trigger parameters.

    Examples
    --------
    >>> make_trigger("badnets", patch_size=4).describe()
    {'type': 'patch', 'size': 4, 'position': 'bottom-right', 'pattern': 'solid', 'margin': 1}
    """
    attack = str(attack).lower()
    if attack == "badnets":
        return PatchTrigger(size=int(patch_size), position=position, pattern=pattern if pattern is not None else "solid", margin=margin)
    if attack == "blended":
        return BlendTrigger(alpha=float(alpha), pattern=pattern if pattern is not None else "noise", seed=pattern_seed)
    raise BadInput(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")


@dataclass
class BackdoorAttackSummary:
    """The light, reportable part of an attack run (no model, no full datasets).

    Parameters
    ----------
    attack : str
        The attack's name.
    trigger : dict
        The trigger's ``describe()``.
    target : int or None
        Target class (``None``: all-to-all).
    rate : float
        Poison rate.
    mode : str
        ``"dirty"`` or ``"clean"``.
    n_poisoned, n_train : int
        Poisoned and total training images.
    poisoned_indices : list of int
        Positions in the training split (ground truth for poison detectors).
    clean_accuracy, attack_success_rate, robust_accuracy : float
        CA, ASR and RA of the backdoored model, in [0, 1].
    clean_model_accuracy : float or None
        Accuracy of the clean reference model, when trained.
    triggered_confusion : numpy.ndarray
        K×K counts: rows true class (non-target), columns prediction on the triggered input.
    class_names : list of str
        K class names.
    train_seconds : float
        Training time.
    example_clean, example_triggered : torch.Tensor
        A few test images ``(n, C, H, W)`` without and with the trigger.
    example_labels, example_predictions_clean, example_predictions_triggered : list of int
        Their labels and the model's predictions.
    provenance : dict, default {}
        How the run was made.

    Returns
    -------
    A BackdoorAttackSummary (a dataclass) holding these fields.
    """

    attack: str
    trigger: dict
    target: int | None
    rate: float
    mode: str
    n_poisoned: int
    n_train: int
    poisoned_indices: list[int]  # positions in the training split (ground truth for poison detectors)
    clean_accuracy: float
    attack_success_rate: float
    robust_accuracy: float
    clean_model_accuracy: float | None
    triggered_confusion: np.ndarray  # rows: true class (non-target), columns: predicted, triggered inputs
    class_names: list[str]
    train_seconds: float
    example_clean: torch.Tensor
    example_triggered: torch.Tensor
    example_labels: list[int]
    example_predictions_clean: list[int]
    example_predictions_triggered: list[int]
    provenance: dict = field(default_factory=dict)

    def report_sections(self):
        from workbench.report import Heatmap, ImageGrid, Metrics, Text

        names = self.class_names
        metrics = {"attack": self.attack, "trigger": ", ".join(f"{k}={v}" for k, v in self.trigger.items()),
                   "target": "all-to-all (y+1)" if self.target is None else names[self.target],
                   "mode": self.mode, "poison rate": f"{100 * self.rate:.2f}%",
                   "poisoned samples": f"{self.n_poisoned} of {self.n_train}",
                   "clean accuracy (CA)": f"{100 * self.clean_accuracy:.2f}%",
                   "attack success rate (ASR)": f"{100 * self.attack_success_rate:.2f}%",
                   "robust accuracy (RA)": f"{100 * self.robust_accuracy:.2f}%",
                   "training time (s)": round(self.train_seconds, 1)}
        if self.clean_model_accuracy is not None:
            metrics["clean model's accuracy (same split, seed)"] = f"{100 * self.clean_model_accuracy:.2f}%"
        n = len(self.example_labels)
        images = torch.cat([self.example_clean, self.example_triggered])
        caps = ([f"clean {names[y]} → {names[p]}" for y, p in zip(self.example_labels, self.example_predictions_clean)]
                + [f"triggered {names[y]} → {names[p]}"
                   for y, p in zip(self.example_labels, self.example_predictions_triggered)])
        return [
            Metrics("Backdoor attack", metrics),
            ImageGrid("Test images, clean (top) and triggered (bottom): true → predicted", images, caps,
                      columns=max(1, n), scale=4),
            Heatmap("Confusion on triggered test images (rows: true class, columns: predicted)",
                    self.triggered_confusion, names, names, xlabel="predicted", ylabel="true"),
            Text("How to read this", "CA is the accuracy on clean test images. ASR is the share of triggered "
                 "test images whose true class is not the target that the model assigns to the backdoor label; "
                 "RA is the share that keeps its true class."),
        ]


@dataclass
class BackdoorAttackResult:
    """A backdoored model, the poisoned training data and how well the backdoor works.

    Parameters
    ----------
    attack : str
        The attack's name.
    model : nn.Module
        The backdoored model.
    card : ModelCard
        Its model card (provenance includes the backdoor).
    poisoned : PoisonedDataset
        The poisoned training set and its ground truth.
    train : ImageDataset
        The clean training split (before poisoning).
    test : ImageDataset
        The clean test split.
    metrics : BackdoorMetrics
        CA, ASR and RA.
    history : FitHistory
        The training history.
    triggered_confusion : numpy.ndarray
        K×K counts, as :func:`triggered_confusion`.
    clean_model_accuracy : float or None
        Accuracy of the clean reference model, when trained.
    provenance : dict
        How the run was made.
    clean_model : nn.Module, optional
        With ``clean_reference``: the same recipe trained on the clean split.

    Returns
    -------
    A BackdoorAttackResult (a dataclass) holding these fields.
    """

    attack: str
    model: nn.Module
    card: ModelCard
    poisoned: PoisonedDataset
    train: ImageDataset  # the clean training split (before poisoning)
    test: ImageDataset  # the clean test split
    metrics: BackdoorMetrics
    history: FitHistory
    triggered_confusion: np.ndarray
    clean_model_accuracy: float | None
    provenance: dict
    clean_model: nn.Module | None = None  # with ``clean_reference``: the same recipe on the clean split

    @property
    def trigger(self) -> Trigger:
        return self.poisoned.trigger

    @property
    def target(self) -> int | None:
        return self.poisoned.target

    def summary(self, n_examples: int = 8) -> BackdoorAttackSummary:
        """The reportable part, with ``n_examples`` non-target test images clean and triggered."""
        keep = torch.ones(len(self.test), dtype=torch.bool) if self.target is None else self.test.labels != self.target
        idx = torch.nonzero(keep).flatten()
        gen = torch.Generator().manual_seed(0)
        idx = idx[torch.randperm(len(idx), generator=gen)[:n_examples]].sort().values
        clean = self.test.images[idx]
        trig = self.trigger(clean)
        pc = predict_logits(self.model, clean).argmax(1).tolist()
        pt = predict_logits(self.model, trig).argmax(1).tolist()
        return BackdoorAttackSummary(
            attack=self.attack, trigger=self.trigger.describe(), target=self.target, rate=self.poisoned.rate,
            mode=self.poisoned.mode, n_poisoned=len(self.poisoned.poisoned_indices), n_train=len(self.train),
            poisoned_indices=self.poisoned.poisoned_indices.tolist(),
            clean_accuracy=self.metrics.clean_accuracy, attack_success_rate=self.metrics.attack_success_rate,
            robust_accuracy=self.metrics.robust_accuracy, clean_model_accuracy=self.clean_model_accuracy,
            triggered_confusion=self.triggered_confusion, class_names=list(self.test.class_names),
            train_seconds=self.history.seconds, example_clean=clean, example_triggered=trig,
            example_labels=self.test.labels[idx].tolist(), example_predictions_clean=pc,
            example_predictions_triggered=pt, provenance=dict(self.provenance))

    def report_sections(self):
        return self.summary().report_sections()


def triggered_confusion(model: nn.Module, test: ImageDataset, trigger: Trigger, target: int | None, *,
                        device=None) -> np.ndarray:
    """K×K counts: true class (rows, non-target images only) × prediction on the triggered image.

    Parameters
    ----------
    model : nn.Module
        The classifier.
    test : ImageDataset
        The clean test set.
    trigger : Trigger
        The attack's trigger.
    target : int or None
        The target class (its images are left out), or ``None``.
    device : str or torch.device, optional
        Where the model runs.

    Returns
    -------
    numpy.ndarray
        Shape ``(K, K)``, int counts.

    Raises
    ------
    BadInput
        When every test image is of the target class.
    """
    xt, y, _ = triggered_test_set(test, trigger, target)
    pred = predict_logits(model, xt, device=device).argmax(1)
    return confusion_matrix(y, pred, test.num_classes)


def run_backdoor_attack(data: str | ImageDataset = "mnist10k", attack: str = "badnets", rate: float = 0.05,
                        target: int | None = 0, *, seed: int = 0, epochs: int | None = None, arch: str = "cnn",
                        device: str | torch.device | None = "cpu", patch_size: int = 3,
                        position: str | tuple[int, int] = "bottom-right", pattern: str | torch.Tensor | None = None,
                        alpha: float = 0.15, pattern_seed: int = 0, mode: str = "dirty",
                        source_classes: list[int] | None = None, test_fraction: float = 0.2,
                        clean_reference: bool = False, progress: Progress | None = None,
                        train: ImageDataset | None = None, test: ImageDataset | None = None) -> BackdoorAttackResult:
    """Poison the training split with ``attack``'s trigger, train a fresh model on it, measure CA/ASR/RA.

    ``data`` is a spec or a dataset, split (stratified, seeded by ``seed``) unless ``train`` and
    ``test`` are given. ``target=None`` is all-to-all. ``clean_reference`` also trains a model on the
    unpoisoned split with the same seed, for the "CA within a point of clean" comparison.

    Parameters
    ----------
    data : str or ImageDataset, default "mnist10k"
        A dataset spec or a dataset.
    attack : {"badnets", "blended"}, default "badnets"
        The attack.
    rate : float, default 0.05
        Share of the training split to poison, in (0, 1).
    target : int or None, default 0
        The target class, or ``None`` for all-to-all.
    seed : int, default 0
        Seed of the split, the poison choice and training.
    epochs : int, optional
        Training epochs (default: the architecture's).
    arch : str, default "cnn"
        Zoo architecture.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    patch_size, position, pattern, alpha, pattern_seed :
        The trigger, as :func:`make_trigger`.
    mode : {"dirty", "clean"}, default "dirty"
        Dirty- or clean-label poisoning.
    source_classes : list of int, optional
        Dirty-label: poison only these classes.
    test_fraction : float, default 0.2
        Share held out as the test split.
    clean_reference : bool, default False
        Also train a clean model with the same seed.
    progress : callable, optional
        ``progress(fraction, message)`` callback.
    train, test : ImageDataset, optional
        Given splits (both or neither).

    Returns
    -------
    BackdoorAttackResult
        The backdoored model, the poisoned data and CA/ASR/RA.

    Raises
    ------
    BadInput
        On an unknown attack or mode, only one of ``train``/``test``, a trigger that does not fit the
        images, a target out of range, or an invalid poison rate.
    """
    require(mode in ("dirty", "clean"), f"mode must be 'dirty' or 'clean', got {mode!r}")
    trigger = make_trigger(attack, patch_size=patch_size, position=position, pattern=pattern, alpha=alpha,
                           pattern_seed=pattern_seed)
    if train is None or test is None:
        require(train is None and test is None, "give both train and test, or neither")
        ds = load_dataset(data) if isinstance(data, str) else data
        train, test = train_test_split(ds, test_fraction, seed)
    data_name = data if isinstance(data, str) else train.name
    h, w = train.image_size
    trigger.box(h, w)  # a patch that does not fit the image is bad input: fail before any work
    if target is not None:
        require(isinstance(target, (int, np.integer)) and 0 <= int(target) < train.num_classes,
                f"target class must be in 0..{train.num_classes - 1}, got {target}")
        target = int(target)
    poisoned = poison_dataset(train, trigger, rate, target, mode=mode, source_classes=source_classes, seed=seed)
    t0 = time.perf_counter()
    share = 0.5 if clean_reference else 1.0

    def sub(offset):
        return None if progress is None else (lambda f, m="": progress(offset + share * f, m))

    trained = train_on_split(poisoned.dataset, test, arch, epochs=epochs, seed=seed, device=device,
                             progress=sub(0.0), data_spec=f"{data_name} poisoned by {attack}")
    clean_acc = clean_model = None
    if clean_reference:
        clean = train_on_split(train, test, arch, epochs=epochs, seed=seed, device=device, progress=sub(0.5),
                               data_spec=str(data_name))
        clean_acc, clean_model = clean.evaluation.accuracy, clean.model
    metrics = backdoor_metrics(trained.model, test, trigger, target, device=device)
    conf = triggered_confusion(trained.model, test, trigger, target, device=device)
    prov = {"data": str(data_name), "attack": attack, "trigger": trigger.describe(), "rate": float(rate),
            "target": target, "mode": mode, "seed": seed, "arch": arch, "epochs": trained.history.epochs,
            "n_train": len(train), "n_test": len(test), "n_poisoned": int(len(poisoned.poisoned_indices)),
            "seconds": round(time.perf_counter() - t0, 2)}
    trained.card.provenance.update({"backdoor": {k: v for k, v in prov.items() if k != "data"},
                                    "clean_accuracy": metrics.clean_accuracy,
                                    "attack_success_rate": metrics.attack_success_rate})
    if progress is not None:
        progress(1.0, f"CA {100 * metrics.clean_accuracy:.1f}% ASR {100 * metrics.attack_success_rate:.1f}%")
    return BackdoorAttackResult(attack=attack, model=trained.model, card=trained.card, poisoned=poisoned,
                                train=train, test=test, metrics=metrics, history=trained.history,
                                triggered_confusion=conf, clean_model_accuracy=clean_acc, provenance=prov,
                                clean_model=clean_model)
