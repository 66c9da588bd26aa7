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


def load_pred_probs(path: str | Path, n: int, num_classes: int) -> np.ndarray:
    """Read a user's ``.npy`` of probabilities (never unpickles) and validate it."""
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
    return validate_pred_probs(arr, n, num_classes)


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


def _default_fold_epochs(arch: str, n_train: int) -> int:
    # Few epochs keep the audit fast and limit memorisation of wrong labels; small data gets more.
    if n_train < 3000:
        return 10
    return 4 if arch == "cnn" else 5


def cross_val_pred_probs(ds: ImageDataset, model: str | ModelFactory = "cnn", *, folds: int = 5,
                         epochs: int | None = None, seed: int = 0, device: str | torch.device | None = "cpu",
                         augment: bool = True, batch_size: int | None = None, lr: float = 3e-3,
                         progress: Progress | None = None) -> OutOfSample:
    """Stratified, seeded K-fold: train a fresh model on K−1 folds, predict the held-out fold.

    ``model`` is a zoo name (``build_model``) or a factory ``f(in_channels, num_classes, image_size,
    seed) -> nn.Module``. Training is :func:`workbench.training.fit` (AdamW, one-cycle).
    """
    from sklearn.model_selection import StratifiedKFold

    labels = validate_labels(ds.labels, ds.num_classes)
    check_folds(labels, folds, ds.class_names)
    dev = resolve_device(device)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    n_train = len(ds) - len(ds) // folds
    name = model if isinstance(model, str) else getattr(model, "__name__", "custom")
    epochs = epochs or _default_fold_epochs(name, n_train)
    require(epochs >= 1, f"epochs must be >= 1, got {epochs}")
    batch_size = batch_size or int(min(128, max(16, n_train // 40)))
    shift = max(1, min(ds.image_size) // 14)
    pp = np.zeros((len(ds), ds.num_classes), dtype=np.float64)
    accs = []
    t0 = time.perf_counter()
    for i, (tr, te) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        fold_seed = seed + 1000 * i
        if isinstance(model, str):
            net = build_model(model, ds.channels, ds.num_classes, ds.image_size, seed=fold_seed)
        else:
            net = model(ds.channels, ds.num_classes, ds.image_size, fold_seed)
            require(isinstance(net, nn.Module), f"the model factory returned {type(net).__name__}, not an nn.Module")
        sub = None
        if progress is not None:
            def sub(f, m, i=i):
                return (progress((i + f) / folds, f"fold {i + 1}/{folds}: {m}"))
        tr_t = torch.as_tensor(tr)
        fit(net, (ds.images[tr_t], ds.labels[tr_t]), epochs=epochs, batch_size=batch_size, lr=lr, seed=fold_seed,
            device=dev, transform=random_shift(shift) if augment else None, progress=sub)
        probs = predict_proba(net, ds.images[torch.as_tensor(te)], device=dev).double().numpy()
        pp[te] = probs
        accs.append(float((probs.argmax(1) == labels[te]).mean()))
    pp /= pp.sum(1, keepdims=True)
    if progress is not None:
        progress(1.0, "cross-validation done")
    return OutOfSample(pp, f"kfold:{name}", folds, float((pp.argmax(1) == labels).mean()), accs,
                       time.perf_counter() - t0)


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

    from ..hooks import layer_outputs

    labels = validate_labels(ds.labels, ds.num_classes)
    check_folds(labels, folds, ds.class_names)
    t0 = time.perf_counter()
    if progress is not None:
        progress(0.0, "embedding")
    feats = layer_outputs(model, ds.images, layer, batch_size=batch_size).numpy().astype(np.float64)
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
