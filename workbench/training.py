"""Training loop, evaluation and prediction, shared by every method that trains a model.

Seeded (model init, shuffling and augmentation all draw from one seed), device-agnostic, and
batched over in-memory tensors. ``progress(fraction, message)`` is called as training advances: the
CLI renders it with rich, the app with ``st.progress``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapter import as_model, model_device
from .data import ImageDataset, as_dataset, fingerprint, train_test_split
from .errors import BadInput, require
from .models import ModelCard, architecture

Progress = Callable[[float, str], None]
#: A batch transform ``(x, y, generator) -> (x, y)``, applied to training batches only.
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` picks CUDA when present; anything else must name an available device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BadInput(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BadInput(f"device {device!r} asked for, but MPS is not available here")
    return dev


def random_shift(max_shift: int = 2) -> BatchTransform:
    """Augmentation: translate each image by up to ``max_shift`` pixels (zero fill), batched."""

    def transform(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        n, _, h, w = x.shape
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen).to(x.device)
        padded = F.pad(x, (max_shift,) * 4)
        rows = (torch.arange(h, device=x.device)[None, :] + max_shift - shifts[:, :1])  # n×h
        cols = (torch.arange(w, device=x.device)[None, :] + max_shift - shifts[:, 1:])  # n×w
        idx_r = rows[:, None, :, None].expand(n, x.shape[1], h, padded.shape[3])
        out = padded.gather(2, idx_r)
        idx_c = cols[:, None, None, :].expand(n, x.shape[1], h, w)
        return out.gather(3, idx_c), y

    return transform


def gaussian_noise(sigma: float) -> BatchTransform:
    """Augmentation: add N(0, sigma²) noise in [0, 1] pixel space (randomized-smoothing training)."""
    require(sigma >= 0, f"sigma must be >= 0, got {sigma}")

    def transform(x, y, gen):
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        return x + sigma * noise, y

    return transform


def compose(*transforms: BatchTransform | None) -> BatchTransform | None:
    ts = [t for t in transforms if t is not None]
    if not ts:
        return None

    def transform(x, y, gen):
        for t in ts:
            x, y = t(x, y, gen)
        return x, y

    return transform


@dataclass
class FitHistory:
    epochs: int
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data) \
            and data[0].is_floating_point():
        return data[0], data[1]  # ready tensors (also non-image inputs and soft labels)
    ds = as_dataset(data)
    return ds.pixels, ds.labels  # float32 per batch: uint8 / memory-mapped storage stays as it is


def fit(model: nn.Module, data: ImageDataset | tuple[torch.Tensor, torch.Tensor], *, epochs: int = 6,
        batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
        device: str | torch.device | None = "cpu", transform: BatchTransform | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        schedule: str = "onecycle", progress: Progress | None = None) -> FitHistory:
    """Train ``model`` in place with AdamW (one-cycle learning rate by default).

    ``loss_fn(logits, labels)`` defaults to cross-entropy; ``transform`` augments each batch.
    """
    x_all, y_all = _as_tensors(data)
    require(len(x_all) > 0, "cannot train on an empty dataset")
    require(len(x_all) == len(y_all), f"{len(x_all)} images but {len(y_all)} labels")
    require(epochs >= 1, f"epochs must be >= 1, got {epochs}")
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    require(lr > 0, f"lr must be > 0, got {lr}")
    require(schedule in ("onecycle", "constant"), f"unknown schedule {schedule!r}")
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    model = as_model(model) if not isinstance(model, nn.Module) or _needs_adapter(model) else model
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(x_all) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
             if schedule == "onecycle" else None)
    loss_fn = loss_fn or F.cross_entropy
    hist = FitHistory(epochs=epochs)
    t0 = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        tot_loss, correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            x, y = x_all[idx].to(dev), y_all[idx].to(dev)
            if transform is not None:
                x, y = transform(x, y, gen)
            logits = model(x)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged: loss {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            tot_loss += float(loss.detach()) * len(idx)
            if y.ndim == 1:
                correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            if progress is not None and (b % 10 == 0 or b == steps_per_epoch - 1):
                progress(step / total, f"epoch {epoch + 1}/{epochs} loss {tot_loss / seen:.4f}")
        hist.loss.append(tot_loss / seen)
        hist.train_accuracy.append(correct / seen)
    hist.seconds = time.perf_counter() - t0
    model.eval()
    return hist


def _needs_adapter(model: nn.Module) -> bool:
    """Modules whose output may not be a logits tensor (transformers models) go through the adapter."""
    return hasattr(model, "config") and hasattr(model, "save_pretrained")


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Logits for every image (eval mode, batched); returned on the CPU. ``images`` may be a tensor or
    an :class:`~workbench.data.ImageView` (``ds.pixels``), read one batch at a time."""
    model = as_model(model)
    dev = resolve_device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    out = [model(images[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict_proba(model: nn.Module, images: torch.Tensor, **kwargs) -> torch.Tensor:
    """Softmax class probabilities N×K."""
    return predict_logits(model, images, **kwargs).softmax(1)


@dataclass
class Evaluation:
    accuracy: float
    confusion: np.ndarray  # K×K, rows = true class, columns = predicted
    n: int


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> np.ndarray:
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def evaluate(model: nn.Module, data: ImageDataset, *, batch_size: int = 512,
             device: str | torch.device | None = None) -> Evaluation:
    """Accuracy and confusion matrix of ``model`` on ``data`` (any form :func:`~workbench.data.as_dataset`
    takes)."""
    data = as_dataset(data)
    preds = predict_logits(model, data.pixels, batch_size=batch_size, device=device).argmax(1)
    return Evaluation(accuracy=float((preds == data.labels).float().mean()),
                      confusion=confusion_matrix(data.labels, preds, data.num_classes), n=len(data))


@dataclass
class TrainedClassifier:
    """A zoo model trained on a seeded split, its evaluation and provenance."""

    model: nn.Module
    card: ModelCard
    history: FitHistory
    evaluation: Evaluation
    train: ImageDataset
    test: ImageDataset


def default_epochs(arch: str) -> int:
    return 6 if arch == "cnn" else 8


def train_classifier(data: str | ImageDataset = "mnist10k", arch: str = "cnn", *, epochs: int | None = None,
                     seed: int = 0, test_fraction: float = 0.2, device: str | torch.device | None = "cpu",
                     augment: bool = True, batch_size: int | None = None, lr: float = 3e-3,
                     transform: BatchTransform | None = None, progress: Progress | None = None,
                     trust_code: bool = False) -> TrainedClassifier:
    """Load ``data`` (a spec, a dataset, tensors, a torch Dataset), split it (seeded, stratified), train a
    fresh ``arch`` (a zoo name, a factory spec or a transformers folder) and evaluate it."""
    ds = as_dataset(data)
    train, test = train_test_split(ds, test_fraction, seed)
    return train_on_split(train, test, arch, epochs=epochs, seed=seed, device=device, augment=augment,
                          batch_size=batch_size, lr=lr, transform=transform, progress=progress,
                          data_spec=data if isinstance(data, str) else ds.name,
                          extra_provenance={"test_fraction": test_fraction, "data_fingerprint": fingerprint(ds)},
                          trust_code=trust_code)


def train_on_split(train: ImageDataset, test: ImageDataset, arch: str = "cnn", *, epochs: int | None = None,
                   seed: int = 0, device: str | torch.device | None = "cpu", augment: bool = True,
                   batch_size: int | None = None, lr: float = 3e-3, transform: BatchTransform | None = None,
                   progress: Progress | None = None, data_spec: str | None = None,
                   extra_provenance: dict | None = None, trust_code: bool = False) -> TrainedClassifier:
    """Train a fresh model on ``train`` (e.g. a poisoned training set) and evaluate it on ``test``.

    ``arch`` is a zoo name, a factory spec (``file.py:fn``) or a transformers folder (see
    :func:`workbench.models.architecture`). ``augment`` adds small random shifts; ``transform`` (e.g.
    :func:`gaussian_noise`) runs after it.
    """
    require(train.input_shape == test.input_shape,
            f"train images are {train.input_shape} but test images are {test.input_shape}")
    epochs = epochs or default_epochs(arch)
    # At least ~40 steps an epoch, so small datasets (digits: 1,437 training images) still converge.
    batch_size = batch_size or int(min(128, max(16, len(train) // 40)))
    model = architecture(arch, train.channels, train.num_classes, train.image_size, seed=seed, trust_code=trust_code)
    shift = max(1, min(train.image_size) // 14)
    hist = fit(model, train, epochs=epochs, seed=seed, device=device, batch_size=batch_size, lr=lr,
               transform=compose(random_shift(shift) if augment else None, transform), progress=progress)
    ev = evaluate(model, test, device=device)
    card = ModelCard(arch=arch, input_shape=train.input_shape, class_names=list(train.class_names),
                     provenance={"data": data_spec or train.name, "seed": seed, "epochs": epochs,
                                 "augment": augment, "test_accuracy": ev.accuracy,
                                 "train_seconds": round(hist.seconds, 2), "n_train": len(train),
                                 "n_test": len(test), **(extra_provenance or {})})
    return TrainedClassifier(model, card, hist, ev, train, test)


@dataclass
class TrainingSummary:
    """The report of a training run: accuracy, confusion matrix, sample test images, provenance."""

    arch: str
    data: str
    test_accuracy: float
    confusion: np.ndarray
    class_names: list[str]
    epochs: int
    train_seconds: float
    loss_per_epoch: list[float]
    sample_images: torch.Tensor
    sample_labels: list[int]
    sample_predictions: list[int]
    provenance: dict

    def report_sections(self):
        from .report import Heatmap, ImageGrid, Metrics, Table

        names = self.class_names
        return [
            Metrics("Model", {"architecture": self.arch, "data": self.data,
                              "test accuracy": f"{100 * self.test_accuracy:.2f}%", "epochs": self.epochs,
                              "training time (s)": round(self.train_seconds, 1)}),
            ImageGrid("Sample test images (true → predicted)", self.sample_images,
                      [f"{names[t]} → {names[p]}" for t, p in zip(self.sample_labels, self.sample_predictions)]),
            Heatmap("Confusion matrix (rows: true class, columns: predicted)", self.confusion, names, names,
                    xlabel="predicted", ylabel="true"),
            Table("Loss per epoch", ["epoch", "loss"], [[i + 1, v] for i, v in enumerate(self.loss_per_epoch)]),
        ]


def summarize(trained: TrainedClassifier, n_samples: int = 24) -> TrainingSummary:
    n = min(n_samples, len(trained.test))
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(trained.test), generator=gen)[:n]
    images = trained.test.images[idx]
    preds = predict_logits(trained.model, images).argmax(1)
    return TrainingSummary(
        arch=trained.card.arch, data=str(trained.card.provenance.get("data")),
        test_accuracy=trained.evaluation.accuracy, confusion=trained.evaluation.confusion,
        class_names=trained.card.class_names, epochs=trained.history.epochs,
        train_seconds=trained.history.seconds, loss_per_epoch=trained.history.loss,
        sample_images=images, sample_labels=trained.test.labels[idx].tolist(), sample_predictions=preds.tolist(),
        provenance=dict(trained.card.provenance))
