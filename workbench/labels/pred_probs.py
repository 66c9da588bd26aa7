"""Out-of-sample predicted probabilities: K-fold training, embeddings + a linear model, a user's file.

PLE (Northcutt, Athalye, Mueller 2021), Sec. 3 step 1: confident learning needs probabilities for
every example from a model that did not train on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import ImageDataset
from ..errors import BadInput, require
from ..models import build_model
from ..training import Progress, fit, predict_proba, random_shift, resolve_device
from .validation import check_folds, cleanlab_quiet, validate_labels, validate_pred_probs

ModelFactory = Callable[..., nn.Module]

#: Defaults of the K-fold path (see :func:`cross_val_pred_probs` and docs/label-audit.md for the
#: measurements behind them): models averaged per fold, test-time shifts, temperature scaling.
DEFAULT_FOLDS = 5
DEFAULT_SEEDS = 3
DEFAULT_TTA = False
DEFAULT_CALIBRATE = False


def load_pred_probs(path: str | Path, n: int | None = None, num_classes: int | None = None) -> np.ndarray:
    """Read a user's ``.npy`` (or ``.npz`` with a ``pred_probs`` array) of probabilities, never
    unpickling; validated against ``n`` examples and ``num_classes`` when those are given."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"pred_probs file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInput(f"cannot read pred_probs file {path} as a .npy array: {exc}") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            keys = list(arr.files)
            require("pred_probs" in keys, f"{path}: an .npz needs an array named 'pred_probs'; found {keys}")
            arr = arr["pred_probs"]
    if n is None or num_classes is None:
        return arr
    return validate_pred_probs(arr, n, num_classes)


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name, m in model.named_modules():
        if hasattr(m, "in_channels") or isinstance(m, nn.Linear):
            return name, m
    return None


def model_features(model: nn.Module, ds: ImageDataset, layer: str | None = None, *,
                   batch_size: int = 512) -> torch.Tensor:
    """A trained model's features of every image of ``ds`` (:func:`workbench.hooks.layer_outputs`),
    after checking on two images that the model takes this data: a model built for other images
    (e.g. 3 channels for 1-channel data) is a :class:`BadInput` naming the shape it expects."""
    from ..hooks import layer_outputs
    from ..models import model_device

    probe = ds.images[:2].to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = _first_layer(model)
        c, h, w = ds.input_shape
        if first is not None and hasattr(first[1], "in_channels"):
            want = f"{first[1].in_channels}-channel images (its first layer {first[0]!r} is {first[1]})"
        elif first is not None:
            want = (f"inputs flattening to {first[1].in_features} values (its first layer {first[0]!r} is "
                    f"{first[1]}); this data's images flatten to {c * h * w}")
        else:
            want = "other inputs"
        raise BadInput(f"the model cannot take this data's {c}×{h}×{w} images: it expects {want} "
                       f"[{type(exc).__name__}: {str(exc).splitlines()[0][:160]}]") from None
    finally:
        model.train(was_training)
    return layer_outputs(model, ds.images, layer, batch_size=batch_size)


@dataclass
class OutOfSample:
    """Out-of-sample predicted probabilities and how they were made."""

    pred_probs: np.ndarray  # N×K
    method: str  # "kfold:cnn", "embeddings:LogisticRegression", "file:NAME", "given"
    folds: int
    accuracy: float  # argmax vs the given labels, out of sample
    fold_accuracies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    features: np.ndarray | None = field(default=None, repr=False)  # embeddings, when the method made some
    #: models averaged per fold, test-time views averaged per model, and the fitted temperatures
    #: (two per fold, one per cross-fitted half; empty when not calibrated).
    seeds: int = 1
    views: int = 1
    temperatures: list[float] = field(default_factory=list)

    def describe(self) -> str:
        """One line for reports: the method, folds, models per fold, test-time views, temperatures."""
        if not self.folds:
            return self.method
        parts = [f"{self.folds} folds"]
        if self.seeds > 1:
            parts.append(f"{self.seeds} models per fold")
        if self.views > 1:
            parts.append(f"{self.views} test-time views")
        if self.temperatures:
            parts.append(f"temperature {min(self.temperatures):.2f}-{max(self.temperatures):.2f}")
        return f"{self.method} ({', '.join(parts)})"


def _default_fold_epochs(arch: str, n_train: int) -> int:
    """Epochs per model. Few epochs keep the audit fast and limit memorisation of wrong labels; with
    :data:`DEFAULT_SEEDS` models per fold, two epochs each of the zoo CNN cost 1.5x one model of four
    (the figures in docs/label-audit.md). Small data gets more."""
    if n_train < 3000:
        return 10
    return 2 if arch == "cnn" else 3


def shifted_views(images: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """Test-time augmentation: the images and their copies moved ``shift`` pixels up, down, left and
    right (zero fill), the same transformation family as the training augmentation
    (:func:`workbench.training.random_shift`)."""
    if shift <= 0:
        return [images]
    s = shift
    padded = torch.nn.functional.pad(images, (s, s, s, s))
    h, w = images.shape[-2:]
    return [images] + [padded[..., s + dy: s + dy + h, s + dx: s + dx + w]
                       for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s))]


def member_seed(seed: int, fold: int, member: int) -> int:
    """Seed of the ``member``-th model of fold ``fold`` (member 0 keeps the single-model seeds)."""
    return seed + 1000 * fold + 100_003 * member


def cross_val_pred_probs(ds: ImageDataset, model: str | ModelFactory = "cnn", *, folds: int = DEFAULT_FOLDS,
                         epochs: int | None = None, seeds: int = DEFAULT_SEEDS, tta: bool = DEFAULT_TTA,
                         calibrate: bool = DEFAULT_CALIBRATE,
                         seed: int = 0, device: str | torch.device | None = "cpu", augment: bool = True,
                         batch_size: int | None = None, lr: float = 3e-3,
                         progress: Progress | None = None) -> OutOfSample:
    """Stratified, seeded K-fold: train fresh models on K−1 folds, predict the held-out fold.

    ``model`` is a zoo name (``build_model``) or a factory ``f(in_channels, num_classes, image_size,
    seed) -> nn.Module``. Training is :func:`workbench.training.fit` (AdamW, one-cycle), with small
    random shifts when ``augment``. Per fold:

    * ``seeds`` models (different initialisations and batch orders) are trained and their
      probabilities averaged (a deep ensemble: Lakshminarayanan, Pritzel, Blundell, NeurIPS 2017);
    * ``tta`` averages each model's probabilities over the image and four shifted copies
      (:func:`shifted_views`);
    * ``calibrate`` temperature-scales the fold's averaged probabilities, cross-fitted on the
      held-out fold (:func:`workbench.labels.calibration.cross_fit_temperature`).

    Every probability of an example comes from models that never trained on it.
    """
    from sklearn.model_selection import StratifiedKFold

    from .calibration import cross_fit_temperature

    labels = validate_labels(ds.labels, ds.num_classes)
    check_folds(labels, folds, ds.class_names)
    require(isinstance(seeds, (int, np.integer)) and seeds >= 1, f"seeds (models per fold) must be >= 1, got {seeds}")
    dev = resolve_device(device)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    n_train = len(ds) - len(ds) // folds
    name = model if isinstance(model, str) else getattr(model, "__name__", "custom")
    epochs = epochs or _default_fold_epochs(name, n_train)
    require(epochs >= 1, f"epochs must be >= 1, got {epochs}")
    batch_size = batch_size or int(min(128, max(16, n_train // 40)))
    shift = max(1, min(ds.image_size) // 14)
    tta_shift = max(1, shift // 2) if tta else 0
    pp = np.zeros((len(ds), ds.num_classes), dtype=np.float64)
    accs: list[float] = []
    temps: list[float] = []
    views = 1
    t0 = time.perf_counter()
    for i, (tr, te) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        tr_t, te_t = torch.as_tensor(tr), torch.as_tensor(te)
        probs = np.zeros((len(te), ds.num_classes), dtype=np.float64)
        for m in range(seeds):
            ms = member_seed(seed, i, m)
            if isinstance(model, str):
                net = build_model(model, ds.channels, ds.num_classes, ds.image_size, seed=ms)
            else:
                net = model(ds.channels, ds.num_classes, ds.image_size, ms)
                require(isinstance(net, nn.Module),
                        f"the model factory returned {type(net).__name__}, not an nn.Module")
            sub = None
            if progress is not None:
                def sub(f, msg, i=i, m=m):
                    return progress((i + (m + f) / seeds) / folds,
                                    f"fold {i + 1}/{folds}" + (f", model {m + 1}/{seeds}" if seeds > 1 else "")
                                    + f": {msg}")
            fit(net, (ds.images[tr_t], ds.labels[tr_t]), epochs=epochs, batch_size=batch_size, lr=lr, seed=ms,
                device=dev, transform=random_shift(shift) if augment else None, progress=sub)
            vs = shifted_views(ds.images[te_t], tta_shift)
            views = len(vs)
            for v in vs:
                probs += predict_proba(net, v, device=dev).double().numpy()
        probs /= probs.sum(1, keepdims=True)
        if calibrate:
            probs, t = cross_fit_temperature(probs, labels[te], seed=seed + i)
            temps.extend(t)
        pp[te] = probs
        accs.append(float((probs.argmax(1) == labels[te]).mean()))
    pp /= pp.sum(1, keepdims=True)
    if progress is not None:
        progress(1.0, "cross-validation done")
    return OutOfSample(pp, f"kfold:{name}", folds, float((pp.argmax(1) == labels).mean()), accs,
                       time.perf_counter() - t0, seeds=int(seeds), views=views, temperatures=temps)


def embedding_pred_probs(ds: ImageDataset, model: nn.Module, *, layer: str | None = None, folds: int = 5,
                         seed: int = 0, classifier: Any = None, batch_size: int = 512,
                         progress: Progress | None = None) -> OutOfSample:
    """Fast path: cross-validated scikit-learn classifier on a trained model's penultimate embeddings.

    The embedding model should not have been trained on these labels (or only on part of them):
    features of a network that memorised wrong labels carry those labels, and the probabilities
    are then less out-of-sample than the K-fold path's. The default classifier is a standardised
    multinomial logistic regression.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = validate_labels(ds.labels, ds.num_classes)
    check_folds(labels, folds, ds.class_names)
    t0 = time.perf_counter()
    if progress is not None:
        progress(0.0, "embedding")
    feats = model_features(model, ds, layer, batch_size=batch_size).numpy().astype(np.float64)
    clf = clone(classifier) if classifier is not None else make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    if progress is not None:
        progress(0.3, f"fitting {folds}-fold classifier on {feats.shape[1]}-d embeddings")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with cleanlab_quiet():
        pp = cross_val_predict(clf, feats, labels, cv=skf, method="predict_proba", n_jobs=1)
    # cross_val_predict orders columns by the classes seen; every class is present (check_folds).
    pp = np.clip(pp.astype(np.float64), 0, None)
    pp /= pp.sum(1, keepdims=True)
    accs = [float((pp[te].argmax(1) == labels[te]).mean()) for _, te in skf.split(feats, labels)]
    if progress is not None:
        progress(1.0, "embedding classifier done")
    last = clf.steps[-1][1] if hasattr(clf, "steps") else clf
    return OutOfSample(pp, f"embeddings:{type(last).__name__}", folds, float((pp.argmax(1) == labels).mean()),
                       accs, time.perf_counter() - t0, features=feats)
