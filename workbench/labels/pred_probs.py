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

from ..adapter import model_mode
from ..data import ImageDataset
from ..errors import BadInput, require
from ..models import build_model
from ..training import Progress, fit, predict_proba, random_shift, resolve_device
from .validation import check_folds, cleanlab_quiet, validate_labels, validate_pred_probs

ModelFactory = Callable[..., nn.Module]

#: Defaults of the K-fold path (see :func:`cross_val_pred_probs` and docs/label-audit.md for the
#: measurements behind them): models averaged per fold, test-time shifts, temperature scaling.
DEFAULT_FOLDS = 5
DEFAULT_SEEDS = 1
DEFAULT_TTA = False
DEFAULT_CALIBRATE = False


def load_pred_probs(path: str | Path, n: int | None = None, num_classes: int | None = None) -> np.ndarray:
    """Read a user's probabilities file without unpickling it.

    Reads a ``.npy`` (or ``.npz`` with a ``pred_probs`` array) of probabilities, never unpickling;
    validated against ``n`` examples and ``num_classes`` when those are given.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.npy`` or ``.npz`` file.
    n : int, optional
        Expected number of rows N.
    num_classes : int, optional
        Expected number of columns K.

    Returns
    -------
    numpy.ndarray
        The array as stored when ``n`` or ``num_classes`` is ``None``; else validated float64
        probabilities, shape ``(N, K)``, rows summing to 1.

    Raises
    ------
    BadInput
        When the file is missing or unreadable as an array, an ``.npz`` lacks ``pred_probs``, or
        validation fails (:func:`~workbench.labels.validation.validate_pred_probs`).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"pred_probs file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
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
    """A trained model's features of every image of a dataset.

    The features come from :func:`workbench.hooks.layer_outputs`, after checking on two images that
    the model takes this data: a model built for other images (e.g. 3 channels for 1-channel data) is
    a :class:`BadInput` naming the shape it expects.

    Parameters
    ----------
    model : nn.Module
        A trained model.
    ds : ImageDataset
        The images, shape ``(N, C, H, W)``.
    layer : str, optional
        Name of the layer whose output is the feature (default: the penultimate layer, as
        ``layer_outputs`` chooses).
    batch_size : int, default 512
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        Features, shape ``(N, D)``, on the CPU.

    Raises
    ------
    BadInput
        When the model cannot take the dataset's images.
    """
    from ..hooks import layer_outputs
    from ..models import model_device

    probe = ds.images[:2].to(model_device(model))
    try:
        with model_mode(model), torch.no_grad():
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
    return layer_outputs(model, ds.images, layer, batch_size=batch_size)


@dataclass
class OutOfSample:
    """Out-of-sample predicted probabilities and how they were made.

    Parameters
    ----------
    pred_probs : numpy.ndarray
        Shape ``(N, K)``, float64, rows summing to 1.
    method : str
        How they were made: ``"kfold:cnn"``, ``"embeddings:LogisticRegression"``, ``"file:NAME"`` or ``"given"``.
    folds : int
        Number of cross-validation folds (0 when not cross-validated here).
    accuracy : float
        Argmax vs the given labels, out of sample, in [0, 1].
    fold_accuracies : list of float, default []
        The accuracy on each held-out fold.
    seconds : float, default 0.0
        Time taken.
    features : numpy.ndarray, optional
        Embeddings ``(N, D)``, when the method made some.
    seeds : int, default 1
        Models per fold.
    views : int, default 1
        Test-time views averaged.
    temperatures : list of float, default []
        Fitted temperatures, when calibrated.

    Returns
    -------
    An OutOfSample (a dataclass) holding these fields; ``describe()`` gives one line for reports.
    """

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
    """Epochs per model: the architecture's own training recipe (:func:`workbench.training.default_epochs`,
    6 for the zoo CNN), so each fold's model is trained as the user's model is; small data gets 10.
    The earlier default (2 epochs, 3 models per fold) was set on MNIST, where 2 epochs reach 97%;
    on our ``shapes`` set they reach 78% out of sample, and confident learning then counts the
    model's own confusions as label errors (2,794 flagged for 1,200 flips, precision 0.33, estimated
    rate 26% against 10%); one model of 6 epochs per fold reached precision 0.78 at recall 0.91,
    estimating 11.6% (docs/label-audit.md)."""
    from ..training import default_epochs

    if n_train < 3000:
        return 10
    return default_epochs(arch)


def shifted_views(images: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """Test-time augmentation: the images and their copies moved ``shift`` pixels up, down, left and
    right (zero fill), the same transformation family as the training augmentation
    (:func:`workbench.training.random_shift`).

    Parameters
    ----------
    images : torch.Tensor
        Images, shape ``(N, C, H, W)``.
    shift : int
        Pixels to move; 0 or less gives the images alone.

    Returns
    -------
    list of torch.Tensor
        ``[images]`` when ``shift <= 0``, else the images and their four shifted copies, each of
        shape ``(N, C, H, W)``.

    Examples
    --------
    >>> views = shifted_views(torch.arange(9.).reshape(1, 1, 3, 3), 1)
    >>> len(views), views[1][0, 0].tolist()
    (5, [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0], [0.0, 0.0, 0.0]])
    """
    if shift <= 0:
        return [images]
    s = shift
    padded = torch.nn.functional.pad(images, (s, s, s, s))
    h, w = images.shape[-2:]
    return [images] + [padded[..., s + dy: s + dy + h, s + dx: s + dx + w]
                       for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s))]


def member_seed(seed: int, fold: int, member: int) -> int:
    """Seed of the ``member``-th model of fold ``fold`` (member 0 keeps the single-model seeds).

    Parameters
    ----------
    seed : int
        The audit's seed.
    fold : int
        Fold index, from 0.
    member : int
        Ensemble member index, from 0.

    Returns
    -------
    int
        ``seed + 1000·fold + 100003·member``.

    Examples
    --------
    >>> member_seed(0, 2, 0), member_seed(0, 2, 1)
    (2000, 102003)
    """
    return seed + 1000 * fold + 100_003 * member


@dataclass
class FoldResult:
    """What :func:`train_fold` gives for one fold.

    Parameters
    ----------
    probs : numpy.ndarray
        Held-out probabilities, shape ``(len(test_idx), K)``, float64, rows summing to 1 (after the
        temperature, when calibrated).
    temperatures : list of float
        The fold's fitted temperatures (two, one per cross-fitted half; empty when not calibrated).
    views : int
        Test-time views averaged per model.
    seconds : float
        Time the fold took.

    Returns
    -------
    A FoldResult (a dataclass) holding these fields.
    """

    probs: np.ndarray
    temperatures: list[float]
    views: int
    seconds: float


def train_fold(ds: ImageDataset, train_idx: np.ndarray, test_idx: np.ndarray, *, fold: int,
               model: str | ModelFactory, seeds: int, seed: int, epochs: int, batch_size: int, lr: float,
               augment: bool, shift: int, tta_shift: int, calibrate: bool, device: str | torch.device = "cpu",
               progress: Progress | None = None) -> FoldResult:
    """One fold of :func:`cross_val_pred_probs`: train ``seeds`` fresh models on ``train_idx``,
    average their probabilities on ``test_idx`` (over the test-time views), calibrate them.

    A module-level function of picklable arguments, so that it runs as a Ray task
    (:func:`workbench.backend.run_tasks`) as well as here; every random choice comes from ``seed``
    and ``fold`` (:func:`member_seed`), so a fold gives the same probabilities wherever it runs
    (with the same torch thread count and device).

    Parameters
    ----------
    ds : ImageDataset
        The dataset (pickled to a Ray worker as stored: uint8 stays uint8).
    train_idx, test_idx : numpy.ndarray
        Positions of the fold's training and held-out examples.
    fold : int
        The fold's index, from 0 (it sets the members' seeds and the calibration split).
    model : str or callable
        A zoo architecture name or a factory ``f(in_channels, num_classes, image_size, seed)``.
    seeds : int
        Models trained, ≥ 1.
    seed : int
        The audit's seed.
    epochs, batch_size : int
        Training epochs and batch per model.
    lr : float
        Peak learning rate.
    augment : bool
        Random shifts of ``shift`` pixels during training.
    shift : int
        Training shift in pixels.
    tta_shift : int
        Test-time shift in pixels (0: the images alone).
    calibrate : bool
        Cross-fitted temperature scaling on the held-out fold.
    device : str or torch.device, default "cpu"
        Where training runs.
    progress : callable, optional
        ``progress(fraction, message)`` within the fold.

    Returns
    -------
    FoldResult
        The held-out probabilities, temperatures, views and time.

    Raises
    ------
    BadInput
        If a factory does not return an ``nn.Module``.
    """
    from .calibration import cross_fit_temperature

    t0 = time.perf_counter()
    dev = resolve_device(device)
    tr_t, te_t = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    probs = np.zeros((len(test_idx), ds.num_classes), dtype=np.float64)
    views = 1
    for m in range(seeds):
        ms = member_seed(seed, fold, m)
        if isinstance(model, str):
            net = build_model(model, ds.channels, ds.num_classes, ds.image_size, seed=ms)
        else:
            net = model(ds.channels, ds.num_classes, ds.image_size, ms)
            require(isinstance(net, nn.Module),
                    f"the model factory returned {type(net).__name__}, not an nn.Module")
        sub = None
        if progress is not None:
            def sub(f, msg, m=m):
                return progress((m + f) / seeds, (f"model {m + 1}/{seeds}: " if seeds > 1 else "") + msg)
        fit(net, (ds.images[tr_t], ds.labels[tr_t]), epochs=epochs, batch_size=batch_size, lr=lr, seed=ms,
            device=dev, transform=random_shift(shift) if augment else None, progress=sub)
        vs = shifted_views(ds.images[te_t], tta_shift)
        views = len(vs)
        for v in vs:
            probs += predict_proba(net, v, device=dev).double().numpy()
    probs /= probs.sum(1, keepdims=True)
    temps: list[float] = []
    if calibrate:
        probs, t = cross_fit_temperature(probs, ds.labels.numpy()[test_idx], seed=seed + fold)
        temps = [float(v) for v in t]
    return FoldResult(probs, temps, views, time.perf_counter() - t0)


def cross_val_pred_probs(ds: ImageDataset, model: str | ModelFactory = "cnn", *, folds: int = DEFAULT_FOLDS,
                         epochs: int | None = None, seeds: int = DEFAULT_SEEDS, tta: bool = DEFAULT_TTA,
                         calibrate: bool = DEFAULT_CALIBRATE,
                         seed: int = 0, device: str | torch.device | None = "cpu", augment: bool = True,
                         batch_size: int | None = None, lr: float = 3e-3, ray_address: str | None = None,
                         threads: int | None = None, num_gpus: float = 0,
                         progress: Progress | None = None) -> OutOfSample:
    """Stratified, seeded K-fold: train fresh models on K−1 folds, predict the held-out fold.

    ``model`` is a zoo name (``build_model``) or a factory ``f(in_channels, num_classes, image_size,
    seed) -> nn.Module``. Training is :func:`workbench.training.fit` (AdamW, one-cycle), with small
    random shifts when ``augment``. Per fold (:func:`train_fold`):

    * ``seeds`` models (different initialisations and batch orders) are trained and their
      probabilities averaged (a deep ensemble: Lakshminarayanan, Pritzel, Blundell, NeurIPS 2017);
    * ``tta`` averages each model's probabilities over the image and four shifted copies
      (:func:`shifted_views`);
    * ``calibrate`` temperature-scales the fold's averaged probabilities, cross-fitted on the
      held-out fold (:func:`workbench.labels.calibration.cross_fit_temperature`).

    Every probability of an example comes from models that never trained on it. The folds are
    independent units of :func:`workbench.backend.run_tasks`: one after the other here
    (``ray_address`` None), or as Ray tasks (``"local"``, ``"auto"``, ``"HOST:PORT"``) with
    ``threads`` CPUs and ``num_gpus`` GPUs each; their probabilities are merged in fold order and
    equal the serial ones (to float rounding; exactly with the same ``threads``).

    Parameters
    ----------
    ds : ImageDataset
        The images and given labels.
    model : str or callable, default "cnn"
        A zoo architecture name or a factory ``f(in_channels, num_classes, image_size, seed)``
        (on Ray it must be importable by the workers: a module-level function).
    folds : int, default DEFAULT_FOLDS
        K of the stratified K-fold, at least 2; every class needs ``folds`` examples.
    epochs : int, optional
        Epochs per model (default: 10 under 3000 training images, else the architecture's default
        training epochs, 6 for ``cnn``).
    seeds : int, default DEFAULT_SEEDS
        Models per fold, at least 1.
    tta : bool, default DEFAULT_TTA
        Average over shifted test-time views.
    calibrate : bool, default DEFAULT_CALIBRATE
        Cross-fitted temperature scaling per fold.
    seed : int, default 0
        Seed of the split, initialisations and batch orders.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    augment : bool, default True
        Random shifts during training.
    batch_size : int, optional
        Training batch (default ``clip(n_train // 40, 16, 128)``).
    lr : float, default 3e-3
        Peak learning rate.
    ray_address : str, optional
        None: the folds run here, one after the other; ``"local"`` (a private Ray on this machine),
        ``"auto"`` or ``"HOST:PORT"`` (a cluster): each fold is a Ray task.
    threads : int, optional
        Torch threads per fold (and Ray CPUs per task, default 1); None keeps this process's count
        when serial.
    num_gpus : float, default 0
        GPUs per Ray task (give ``device="cuda"``).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    OutOfSample
        The out-of-sample probabilities ``(N, K)`` with the method, accuracy per fold and timing.

    Raises
    ------
    BadInput
        On invalid labels, too few examples for ``folds``, ``seeds`` or ``epochs`` below 1, a
        factory that does not return an ``nn.Module``, or a Ray address that does not answer.
    """
    from sklearn.model_selection import StratifiedKFold

    from ..backend import run_tasks, task_values

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
    splits = list(skf.split(np.zeros(len(labels)), labels))
    common = {"ds": ds, "model": model, "seeds": int(seeds), "seed": seed, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "augment": augment, "shift": shift, "tta_shift": tta_shift,
              "calibrate": calibrate, "device": dev if ray_address is None else str(dev)}
    units = [{**common, "train_idx": tr, "test_idx": te, "fold": i} for i, (tr, te) in enumerate(splits)]
    finished = [0]

    def fold_done(_res) -> None:
        finished[0] += 1
        if progress is not None:
            progress(finished[0] / folds, f"{finished[0]}/{folds} folds done")

    if ray_address is None and progress is not None:  # within-fold progress, where the callback lives
        for i, u in enumerate(units):
            u["progress"] = (lambda f, msg, i=i: progress((i + f) / folds, f"fold {i + 1}/{folds}: {msg}"))
    t0 = time.perf_counter()
    results = task_values(run_tasks(train_fold, units, ray_address=ray_address, num_cpus_per_task=threads or 1,
                                    num_gpus=num_gpus, threads=threads,
                                    on_result=None if ray_address is None else fold_done), "fold")
    pp = np.zeros((len(ds), ds.num_classes), dtype=np.float64)
    accs: list[float] = []
    temps: list[float] = []
    for (_, te), r in zip(splits, results):
        pp[te] = r.probs
        accs.append(float((r.probs.argmax(1) == labels[te]).mean()))
        temps.extend(r.temperatures)
    pp /= pp.sum(1, keepdims=True)
    if progress is not None:
        progress(1.0, "cross-validation done")
    return OutOfSample(pp, f"kfold:{name}", folds, float((pp.argmax(1) == labels).mean()), accs,
                       time.perf_counter() - t0, seeds=int(seeds), views=results[-1].views, temperatures=temps)


def embedding_pred_probs(ds: ImageDataset, model: nn.Module, *, layer: str | None = None, folds: int = 5,
                         seed: int = 0, classifier: Any = None, batch_size: int = 512,
                         progress: Progress | None = None) -> OutOfSample:
    """Fast path: cross-validated scikit-learn classifier on a trained model's penultimate embeddings.

    The embedding model should not have been trained on these labels (or only on part of them):
    features of a network that memorised wrong labels carry those labels, and the probabilities
    are then less out-of-sample than the K-fold path's. The default classifier is a standardised
    multinomial logistic regression.

    Parameters
    ----------
    ds : ImageDataset
        The images and given labels.
    model : nn.Module
        A trained model to embed with.
    layer : str, optional
        Layer whose output is the embedding (default: the penultimate one).
    folds : int, default 5
        K of the stratified K-fold.
    seed : int, default 0
        Seed of the split.
    classifier : scikit-learn estimator, optional
        Any classifier with ``predict_proba`` (cloned before use).
    batch_size : int, default 512
        Images per forward pass.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    OutOfSample
        The probabilities ``(N, K)``, with the embeddings in ``features``.

    Raises
    ------
    BadInput
        On invalid labels, too few examples for ``folds``, or a model that cannot take the images.
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
