"""Poison detectors: a suspicion score per training sample and a flagged set at an isolation ratio.

Three detectors, each a plain function over an :class:`~workbench.data.ImageDataset` (the suspected
training set, labels as given) returning a :class:`DetectionResult`:

- **LGA**, local gradient ascent, from Li et al., "Anti-Backdoor Learning: Training Clean Models on
  Poisoned Data", NeurIPS 2021, Eq. (4) (the isolation stage), as shipped by the NAB code
  (``backdoor_detection_lga.py`` of damianliumin/non-adversarial_backdoor): train a fresh model with the
  *flooded* batch loss ``|CE − γ| + γ`` (γ = 0.5), which does gradient ascent whenever the batch loss
  falls under γ, so ordinary samples stay near loss γ while the easy-to-learn poisoned samples fall far
  below it; the samples with the lowest per-sample cross-entropy afterwards are suspected.
  Score = −CE. Differences: our shared training loop (AdamW, constant learning rate, no augmentation,
  a few epochs) instead of SGD lr 0.1 for 20 epochs on a ResNet-18.
- **Spectral signatures**, Tran, Li, Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018,
  Sec. 3 / Algorithm 1: per class (by given label), centre the penultimate features R of that class and
  score each sample by its squared projection on the top right singular vector of the centred matrix.
  Differences: the projections are centred at their *median* before squaring (with the mean, a
  dirty-label poison that makes up a third to a half of the target class, as 5% of the whole set
  does, sits as far from the centre as the clean samples and the scores cannot separate them); the
  paper removes the top 1.5·ε of each class, while we rank samples across classes (one flagged set
  at one isolation ratio, and one AUROC) after dividing each class's scores by its median score.
- **Activation clustering**, Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
  Activation Clustering", SafeAI@AAAI 2019, Sec. 4: per class, reduce the penultimate activations to
  10 dimensions and split them with 2-means; the paper's *relative size* rule decides: a class is
  suspicious when its smaller cluster holds at most ``size_threshold`` (default 0.35) of the class,
  and that cluster is the suspected poison (as ART's ``ActivationDefence`` with
  ``cluster_analysis="relative-size"``, ``analyze_by_relative_size``). Differences: PCA instead of
  FastICA (deterministic and fast); to rank samples across classes (one flagged set at one isolation
  ratio, and one AUROC) a sample in the small cluster of a *suspicious* class scores
  ``2 + silhouette`` of its class's clustering (so every suspected sample ranks above every other,
  clearly split classes first), and every other sample scores its distance to its own cluster's
  centroid relative to the largest such distance in its class (in [0, 1]). The small cluster of a
  class that is *not* suspicious (a clean class split roughly in two, e.g. by writing style) gets no
  head start, so clean classes no longer compete with the poison cluster.

Spectral signatures and activation clustering read features of a model trained on the suspected
data through :func:`workbench.hooks.layer_outputs` (default: the model's penultimate layer), or, with
``layer="head-input"`` (:data:`HEAD_INPUT`), the *input* of the model's first fully connected layer:
the representation the classifier head reads. For the zoo ResNet that is the penultimate layer (the
globally pooled conv features, where Tran et al. and Chen et al. read theirs); for the zoo CNN it is
the 3×3-pooled conv features feeding its two-layer head (576 dims), not the 128-dim ``relu5`` after
``fc1``. Measured on MNIST-10k (default CNN, 5% poison, seeds 0-2): at ``relu5`` a BadNets poison
sits in several clusters, one per source class, and spectral signatures reach AUROC 0.80-0.89
(recall 45-59% at a 5% isolation ratio); at the head input AUROC is 1.000 and recall 99-100% for
BadNets and Blended alike. LGA trains its own model with
:func:`workbench.training.fit` and a ``loss_fn``. :func:`detection_quality` scores a flagged set
against the true poisoned indices (precision, recall, AUROC).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.adapter import as_model
from workbench.data import ImageDataset, as_dataset
from workbench.errors import BadInput, check_in_range, require
from workbench.hooks import layer_outputs
from workbench.layers import default_feature_layer, named_layers
from workbench.models import architecture
from workbench.training import Progress, fit, predict_logits, resolve_device

METHODS = ("lga", "spectral", "ac")
METHOD_NAMES = {"lga": "loss-guided isolation (LGA)", "spectral": "spectral signatures",
                "ac": "activation clustering"}


@dataclass
class DetectionQuality:
    """How well a flagged set matches the true poisoned samples.

    Parameters
    ----------
    precision : float
        Share of flagged samples that are poisoned (0 when nothing is flagged).
    recall : float
        Share of poisoned samples that are flagged (NaN when none is poisoned).
    auroc : float
        Area under the ROC curve of the scores against the poisoned / clean truth (NaN when only one
        kind exists).
    n_flagged, n_poisoned, n_true_positives : int
        Sizes of the flagged set, the poisoned set and their intersection.

    Returns
    -------
    A DetectionQuality (dataclass)
    """

    precision: float  # share of flagged samples that are poisoned
    recall: float  # share of poisoned samples that are flagged
    auroc: float  # of the scores against the poisoned/clean truth (nan if only one kind exists)
    n_flagged: int
    n_poisoned: int
    n_true_positives: int


@dataclass
class DetectionResult:
    """Suspicion scores (higher = more suspicious) for every sample and the flagged set.

    Parameters
    ----------
    method : str
        ``"lga"``, ``"spectral"`` or ``"ac"``.
    scores : torch.Tensor
        N float scores, one per sample of the dataset.
    flagged : torch.Tensor
        Indices into the dataset of the ``max(1, round(ratio·N))`` highest scores, most suspicious first.
    ratio : float
        The isolation ratio, in (0, 0.5].
    seconds : float
        Wall time of the detection.
    params : dict, default {}
        The detector's settings (layer, epochs, seed, ...).
    details : dict, default {}
        Method-specific findings (per class: top singular value, small-cluster share, silhouette,
        suspected; LGA: final flooded loss).
    quality : DetectionQuality, optional
        Precision, recall and AUROC against the truth, when known (see :meth:`with_truth`).

    Returns
    -------
    A DetectionResult (dataclass)
        With :attr:`flagged_mask` and :meth:`with_truth`.
    """

    method: str
    scores: torch.Tensor  # N float
    flagged: torch.Tensor  # indices into the dataset, most suspicious first
    ratio: float
    seconds: float
    params: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    quality: DetectionQuality | None = None

    @property
    def flagged_mask(self) -> torch.Tensor:
        """Which samples are flagged.

        Returns
        -------
        torch.Tensor
            N booleans, True at the indices in :attr:`flagged`.
        """
        mask = torch.zeros(len(self.scores), dtype=torch.bool)
        mask[self.flagged] = True
        return mask

    def with_truth(self, poisoned_indices) -> DetectionResult:
        """This result, with :attr:`quality` measured against the true poisoned indices.

        Parameters
        ----------
        poisoned_indices : sequence of int
            Indices of the truly poisoned samples, in ``0..N-1``.

        Returns
        -------
        DetectionResult
            ``self`` (changed in place).

        Raises
        ------
        BadInput
            If an index is out of range.
        """
        self.quality = detection_quality(self.scores, self.flagged, poisoned_indices)
        return self


def check_ratio(ratio: float) -> float:
    """Check an isolation ratio: it must lie in (0, 0.5] (isolating more than half the data makes no sense).

    Parameters
    ----------
    ratio : float or str
        The ratio (anything ``float()`` reads).

    Returns
    -------
    float
        The ratio as a float.

    Raises
    ------
    BadInput
        If it is not a number or lies outside (0, 0.5].

    Examples
    --------
    >>> check_ratio("0.05")
    0.05
    >>> check_ratio(0.6)
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: isolation ratio must be in (0.0, 0.5], got 0.6
    """
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise BadInput(f"isolation ratio must be a number, got {ratio!r}") from None
    return check_in_range("isolation ratio", ratio, 0.0, 0.5, low_open=True)


def flag_top(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices of the ``max(1, round(ratio·N))`` highest scores, highest first (ties: lower index first).

    Parameters
    ----------
    scores : torch.Tensor
        N scores.
    ratio : float
        The isolation ratio, in (0, 0.5].

    Returns
    -------
    torch.Tensor
        int64 indices into ``scores``.

    Raises
    ------
    BadInput
        If ``ratio`` is outside (0, 0.5].

    Examples
    --------
    >>> import torch
    >>> flag_top(torch.tensor([0.1, 0.9, 0.5, 0.9]), 0.5).tolist()
    [1, 3]
    """
    ratio = check_ratio(ratio)
    n = max(1, int(round(ratio * len(scores))))
    # stable descending sort: equal scores keep their index order, so the result is deterministic
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    return order[:n]


def detection_quality(scores: torch.Tensor, flagged: torch.Tensor, poisoned_indices) -> DetectionQuality:
    """Precision and recall of ``flagged``, and AUROC of ``scores``, against the true poisoned indices.

    Parameters
    ----------
    scores : torch.Tensor
        N suspicion scores (higher = more suspicious).
    flagged : sequence of int or torch.Tensor
        Indices of the flagged samples.
    poisoned_indices : sequence of int or torch.Tensor
        Indices of the truly poisoned samples, in ``0..N-1`` (may be empty).

    Returns
    -------
    DetectionQuality

    Raises
    ------
    BadInput
        If a poisoned index is out of range.

    Examples
    --------
    >>> import torch
    >>> q = detection_quality(torch.tensor([0.1, 0.9, 0.5, 0.8]), torch.tensor([1, 3]), [1, 2])
    >>> q.precision, q.recall, q.auroc, q.n_true_positives
    (0.5, 0.5, 0.75, 1)
    """
    from sklearn.metrics import roc_auc_score

    n = len(scores)
    truth = torch.zeros(n, dtype=torch.bool)
    poisoned_indices = torch.as_tensor(poisoned_indices, dtype=torch.long)
    require(len(poisoned_indices) == 0 or (int(poisoned_indices.min()) >= 0 and int(poisoned_indices.max()) < n),
            f"poisoned indices must lie in 0..{n - 1}")
    truth[poisoned_indices] = True
    flagged = torch.as_tensor(flagged, dtype=torch.long)
    tp = int(truth[flagged].sum())
    n_pos = int(truth.sum())
    auroc = (float(roc_auc_score(truth.numpy(), scores.double().numpy())) if 0 < n_pos < n else float("nan"))
    return DetectionQuality(precision=tp / max(1, len(flagged)), recall=tp / n_pos if n_pos else float("nan"),
                            auroc=auroc, n_flagged=len(flagged), n_poisoned=n_pos, n_true_positives=tp)


def flooded_loss(gamma: float = 0.5):
    """ABL's flooded cross-entropy ``|CE − γ| + γ`` over a batch (Li et al. 2021, Eq. 4 with the sign flip).

    Below γ the gradient of the batch loss is reversed (gradient ascent), which keeps ordinary samples
    near loss γ while easy-to-learn poisoned samples fall far below it.

    Parameters
    ----------
    gamma : float, default 0.5
        The flooding level γ.

    Returns
    -------
    callable
        ``loss_fn(logits, labels) -> scalar tensor``, for :func:`workbench.training.fit`'s ``loss_fn``.

    Examples
    --------
    >>> import torch
    >>> loss = flooded_loss(0.5)(torch.tensor([[4.0, 0.0]]), torch.tensor([0]))  # CE = 0.0181
    >>> round(loss.item(), 4)
    0.9819
    """

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        return (ce - gamma).abs() + gamma

    return loss_fn


@torch.no_grad()
def per_sample_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512,
                    device=None) -> torch.Tensor:
    """The cross-entropy of each sample under ``model`` (eval mode, batched, no gradients).

    Parameters
    ----------
    model : nn.Module or callable
        Any model :func:`~workbench.adapter.as_model` takes.
    images : torch.Tensor or ImageView
        N×C×H×W images in [0, 1] (or ``ds.pixels``).
    labels : torch.Tensor
        N labels.
    batch_size : int, default 512
        Images per forward pass.
    device : str, torch.device or None, default None
        Where to run (default the model's device).

    Returns
    -------
    torch.Tensor
        N losses on the CPU.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> _ = torch.nn.init.zeros_(net[1].weight), torch.nn.init.zeros_(net[1].bias)
    >>> [round(v, 4) for v in per_sample_loss(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])).tolist()]
    [0.6931, 0.6931, 0.6931]
    """
    logits = predict_logits(model, images, batch_size=batch_size, device=device)
    return F.cross_entropy(logits, labels, reduction="none")


def lga_detect(data: ImageDataset, ratio: float = 0.05, *, gamma: float = 0.5, epochs: int = 2, arch="cnn",
               lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device="cpu",
               progress: Progress | None = None) -> DetectionResult:
    """Loss-guided isolation (ABL's LGA stage): flooded-loss training, then the lowest-loss samples.

    Trains a fresh model on ``data`` for ``epochs`` with the flooded loss (:func:`flooded_loss`),
    AdamW at a constant learning rate ``lr`` and no augmentation, then scores each sample by
    −CE(model(x), y): the poisoned samples, learnt first, score highest.

    Parameters
    ----------
    data : ImageDataset or anything :func:`~workbench.data.as_dataset` takes
        The suspected training set, labels as given.
    ratio : float, default 0.05
        Isolation ratio, in (0, 0.5].
    gamma : float, default 0.5
        Flooding level γ, in (0, 10].
    epochs : int, default 2
        Training epochs.
    arch : str, LoadedModel or callable, default "cnn"
        The architecture to train: a zoo name, a factory or transformers folder spec
        (:func:`workbench.models.architecture`), a :class:`~workbench.models.LoadedModel` (a fresh
        copy of the user's own architecture), or a callable ``seed -> untrained model``.
    lr : float, default 1e-3
        Learning rate.
    batch_size : int, default 64
        Training batch size.
    seed : int, default 0
        Seeds the initialisation and the shuffling.
    device : str, default "cpu"
        Where to train.
    progress : callable, optional
        ``progress(fraction, message)`` during training.

    Returns
    -------
    DetectionResult
        Method ``"lga"``; ``details`` holds the final flooded loss and the training time.

    Raises
    ------
    BadInput
        If ``ratio`` or ``gamma`` is out of range, the data is unusable, or the architecture unknown.

    Examples
    --------
    >>> import torch
    >>> from workbench.data import ImageDataset
    >>> g = torch.Generator().manual_seed(0)
    >>> ds = ImageDataset(torch.rand(20, 1, 8, 8, generator=g), torch.tensor([0] * 10 + [1] * 10), ["a", "b"], "toy")
    >>> res = lga_detect(ds, 0.1, epochs=1)
    >>> res.method, len(res.flagged), res.params["gamma"]
    ('lga', 2, 0.5)
    """
    ratio = check_ratio(ratio)
    check_in_range("gamma", float(gamma), 0.0, 10.0, low_open=True)
    data = as_dataset(data)
    t0 = time.perf_counter()
    if hasattr(arch, "fresh"):  # a LoadedModel: train the user's own architecture
        model = arch.fresh(seed, data.input_shape)
    elif callable(arch):
        model = arch(seed)
    else:
        model = architecture(arch, data.channels, data.num_classes, data.image_size, seed=seed)
    hist = fit(model, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
               loss_fn=flooded_loss(gamma), schedule="constant", progress=progress)
    loss = per_sample_loss(model, data.pixels, data.labels, device=resolve_device(device))
    scores = -loss
    return DetectionResult("lga", scores, flag_top(scores, ratio), ratio, time.perf_counter() - t0,
                           params={"gamma": gamma, "epochs": epochs,
                                   "arch": arch if isinstance(arch, str) else "the given model's architecture",
                                   "lr": lr,
                                   "batch_size": batch_size, "seed": seed},
                           details={"final_flooded_loss": hist.loss[-1], "train_seconds": hist.seconds})


HEAD_INPUT = "head-input"  # layer alias: the input of the model's first fully connected layer
PENULTIMATE = "penultimate"  # layer alias: the model's declared penultimate layer (the default)


def head_input_layer(model: nn.Module) -> str:
    """The name of the model's first fully connected layer (``nn.Linear``, in registration order).

    Its *input* is what :data:`HEAD_INPUT` reads: the representation the classifier head sees (for the
    zoo CNN the pooled conv features feeding ``fc1``; for the zoo ResNet the penultimate layer).

    Parameters
    ----------
    model : nn.Module
        The model (adapted or not).

    Returns
    -------
    str
        The layer's dotted name.

    Raises
    ------
    BadInput
        If the model has no ``nn.Linear`` layer.

    Examples
    --------
    >>> from workbench.models import architecture
    >>> head_input_layer(architecture("cnn", 1, 10, 28)), head_input_layer(architecture("resnet", 1, 10, 28))
    ('fc1', 'fc')
    """
    for name, mod in named_layers(model):
        if isinstance(mod, nn.Linear):
            return name
    raise BadInput(f"{type(model).__name__} has no fully connected (nn.Linear) layer, so there is no "
                   f"classifier-head input; name a feature layer instead of {HEAD_INPUT!r}")


def head_inputs(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The input of the model's first ``nn.Linear`` (:func:`head_input_layer`) for every image.

    Parameters
    ----------
    model : nn.Module
        The model.
    images : torch.Tensor or ImageView
        N×C×H×W images in [0, 1] (or ``ds.pixels``, read per batch).
    batch_size : int, default 512
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        N×D features on the CPU.

    Raises
    ------
    BadInput
        If the model has no ``nn.Linear`` layer.

    Examples
    --------
    >>> import torch
    >>> from workbench.models import architecture
    >>> head_inputs(architecture("cnn", 1, 10, 28), torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 576])
    """
    return layer_outputs(model, images, head_input_layer(model), batch_size=batch_size, inputs=True)


def _layer_name(model: nn.Module, layer: str | None, input_shape=None) -> str | None:
    if layer in (None, PENULTIMATE):
        return default_feature_layer(as_model(model), input_shape)
    return layer


def _features(model: nn.Module, data: ImageDataset, layer: str | None) -> torch.Tensor:
    """N×D float32 features of ``layer`` (callers take float64 per class: half the memory at N×D)."""
    model = as_model(model)
    modules = dict(named_layers(model))
    if layer == PENULTIMATE and PENULTIMATE not in modules:
        layer = None
    if layer == HEAD_INPUT and HEAD_INPUT not in modules:
        feats = head_inputs(model, data.pixels)  # read per batch
    else:
        feats = layer_outputs(model, data.pixels, _layer_name(model, layer, data.input_shape))
    require(feats.ndim == 2 and feats.shape[1] >= 2,
            f"layer {layer or 'default'} gives features of shape {tuple(feats.shape)}; need N×D with D >= 2")
    return feats


def _given_features(features, n: int) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    require(f.ndim == 2 and f.shape[0] == n and f.shape[1] >= 2,
            f"features must be N×D with N = {n} and D >= 2, got shape {tuple(f.shape)}")
    return f.double()


def spectral_detect(model: nn.Module, data: ImageDataset, ratio: float = 0.05, *, layer: str | None = None,
                    features: torch.Tensor | np.ndarray | None = None) -> DetectionResult:
    """Spectral signatures (Tran et al. 2018) on a layer's features, per given class.

    Per class, the features are centred and projected on the top right singular vector; the
    projections are centred at their median, squared and divided by the class's median score, and
    samples are ranked across classes (see the module docstring for the differences from the paper).

    Parameters
    ----------
    model : nn.Module
        A model trained on ``data`` (its features are read at ``layer``).
    data : ImageDataset or anything :func:`~workbench.data.as_dataset` takes
        The suspected training set, labels as given.
    ratio : float, default 0.05
        Isolation ratio, in (0, 0.5].
    layer : str, optional
        The feature layer: a layer name, :data:`PENULTIMATE` or None (the model's penultimate layer),
        or :data:`HEAD_INPUT` (the input of its first fully connected layer).
    features : torch.Tensor or numpy.ndarray, optional
        N×D features already computed at ``layer``: skips the feature pass.

    Returns
    -------
    DetectionResult
        Method ``"spectral"``; ``details["per_class"]`` holds each class's top singular value and
        largest normalised score. Classes with fewer than two samples score 0.

    Raises
    ------
    BadInput
        If ``ratio`` is out of range, the layer is unknown, or the features are not N×D with D ≥ 2.

    Examples
    --------
    >>> import torch
    >>> from workbench.data import ImageDataset
    >>> g = torch.Generator().manual_seed(0)
    >>> ds = ImageDataset(torch.rand(20, 1, 8, 8, generator=g), torch.tensor([0] * 10 + [1] * 10), ["a", "b"], "toy")
    >>> from workbench.models import architecture
    >>> feats = 0.1 * torch.randn(20, 4, generator=g)
    >>> feats[[3, 4]] += 5.0  # two outliers in class a
    >>> spectral_detect(architecture("cnn", 1, 2, 8), ds, 0.1, features=feats).flagged.tolist()
    [3, 4]
    """
    ratio = check_ratio(ratio)
    data = as_dataset(data)
    t0 = time.perf_counter()
    feats = _given_features(features, len(data)) if features is not None else _features(model, data, layer)
    scores = torch.zeros(len(data), dtype=torch.float64)
    per_class = {}
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) < 2:
            continue
        fc = feats[idx].double()
        r = fc - fc.mean(0, keepdim=True)
        # top right singular vector of the centred class features (Algorithm 1, line 5)
        _, s, vh = torch.linalg.svd(r, full_matrices=False)
        p = r @ vh[0]
        proj = (p - p.median()) ** 2
        med = proj.median().clamp_min(1e-12)
        scores[idx] = proj / med
        per_class[data.class_names[c]] = {"top_singular_value": float(s[0]),
                                          "max_normalized_score": float((proj / med).max())}
    scores = scores.float()
    return DetectionResult("spectral", scores, flag_top(scores, ratio), ratio, time.perf_counter() - t0,
                           params={"layer": _layer_name(model, layer, data.input_shape)},
                           details={"per_class": per_class})


def activation_clustering_detect(model: nn.Module, data: ImageDataset, ratio: float = 0.05, *,
                                 layer: str | None = None, n_components: int = 10, size_threshold: float = 0.35,
                                 seed: int = 0, features: torch.Tensor | np.ndarray | None = None) -> DetectionResult:
    """Activation clustering (Chen et al. 2019) with the relative-size rule, per given class.

    Per class: PCA of the features to ``n_components`` dimensions, 2-means; a class whose smaller
    cluster holds at most ``size_threshold`` of it is suspicious, and that cluster's samples score
    ``2 + silhouette``; every other sample scores its relative distance to its cluster's centroid, in
    [0, 1] (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        A model trained on ``data``.
    data : ImageDataset or anything :func:`~workbench.data.as_dataset` takes
        The suspected training set, labels as given.
    ratio : float, default 0.05
        Isolation ratio, in (0, 0.5].
    layer : str, optional
        The feature layer (as for :func:`spectral_detect`).
    n_components : int, default 10
        PCA dimensions (≥ 1; capped by D and the class size − 1).
    size_threshold : float, default 0.35
        Largest share of its class the small cluster may hold for the class to be suspicious, in (0, 0.5].
    seed : int, default 0
        Seeds PCA and k-means.
    features : torch.Tensor or numpy.ndarray, optional
        N×D features already computed at ``layer``.

    Returns
    -------
    DetectionResult
        Method ``"ac"``; ``details`` holds per class the small cluster's share, the silhouette and
        whether it is suspected, and the list of suspected classes. Classes with fewer than four
        samples score 0.

    Raises
    ------
    BadInput
        If ``ratio``, ``n_components`` or ``size_threshold`` is out of range, the layer is unknown, or
        the features are not N×D with D ≥ 2.

    Examples
    --------
    >>> import torch
    >>> from workbench.data import ImageDataset
    >>> g = torch.Generator().manual_seed(0)
    >>> ds = ImageDataset(torch.rand(20, 1, 8, 8, generator=g), torch.tensor([0] * 10 + [1] * 10), ["a", "b"], "toy")
    >>> from workbench.models import architecture
    >>> feats = 0.1 * torch.randn(20, 4, generator=g)
    >>> feats[[3, 4]] += 5.0
    >>> res = activation_clustering_detect(architecture("cnn", 1, 2, 8), ds, 0.1, features=feats)
    >>> res.flagged.tolist(), res.details["per_class"]["a"]["small_cluster_share"]
    ([3, 4], 0.2)
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    ratio = check_ratio(ratio)
    require(n_components >= 1, f"n_components must be >= 1, got {n_components}")
    check_in_range("size_threshold", float(size_threshold), 0.0, 0.5, low_open=True)
    data = as_dataset(data)
    t0 = time.perf_counter()
    feats = (_given_features(features, len(data)) if features is not None else _features(model, data, layer)).double().numpy()
    scores = np.zeros(len(data))
    per_class = {}
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten().numpy()
        if len(idx) < 4:
            continue
        x = feats[idx]
        k = min(n_components, x.shape[1], len(idx) - 1)
        z = PCA(n_components=k, random_state=seed).fit_transform(x - x.mean(0))
        km = KMeans(n_clusters=2, n_init=5, random_state=seed).fit(z)
        lab = km.labels_
        sizes = np.bincount(lab, minlength=2)
        if sizes.min() == 0:
            continue
        small = int(np.argmin(sizes))
        sil = float(silhouette_score(z, lab, sample_size=min(len(z), 2000), random_state=seed))
        dist = np.linalg.norm(z - km.cluster_centers_[lab], axis=1)
        rel = float(sizes[small] / len(idx))
        suspected = rel <= size_threshold  # the paper's relative-size rule
        s = dist / max(float(dist.max()), 1e-12)
        if suspected:
            s = np.where(lab == small, 2.0 + max(sil, 0.0), s)
        scores[idx] = s
        per_class[data.class_names[c]] = {"small_cluster_share": rel, "silhouette": sil, "suspected": suspected}
    scores_t = torch.as_tensor(scores, dtype=torch.float32)
    return DetectionResult("ac", scores_t, flag_top(scores_t, ratio), ratio, time.perf_counter() - t0,
                           params={"layer": _layer_name(model, layer, data.input_shape),
                                   "n_components": n_components, "size_threshold": size_threshold, "seed": seed},
                           details={"per_class": per_class,
                                    "suspected_classes": [k for k, v in per_class.items() if v["suspected"]]})


def detect(method: str, data: ImageDataset, model: nn.Module | None = None, ratio: float = 0.05, *,
           layer: str | None = None, seed: int = 0, device="cpu", lga_epochs: int = 2, arch: str = "cnn",
           poisoned_indices=None, progress: Progress | None = None) -> DetectionResult:
    """Run detector ``method`` (``lga``, ``spectral`` or ``ac``) on ``data``.

    Parameters
    ----------
    method : str
        ``"lga"`` (trains its own ``arch`` model), ``"spectral"`` or ``"ac"`` (read the features of
        ``model``).
    data : ImageDataset or anything :func:`~workbench.data.as_dataset` takes
        The suspected training set, labels as given.
    model : nn.Module, optional
        For ``spectral`` and ``ac``: a model trained on ``data``.
    ratio : float, default 0.05
        Isolation ratio, in (0, 0.5].
    layer : str, optional
        Feature layer for ``spectral`` and ``ac`` (default the penultimate layer; :data:`HEAD_INPUT`
        reads the input of the first fully connected layer).
    seed : int, default 0
        Seed of LGA's training and of AC's clustering.
    device : str, default "cpu"
        Where LGA trains.
    lga_epochs : int, default 2
        LGA's training epochs.
    arch : str, default "cnn"
        LGA's architecture (see :func:`lga_detect`).
    poisoned_indices : sequence of int, optional
        The ground truth, when known: the result then carries precision, recall and AUROC.
    progress : callable, optional
        ``progress(fraction, message)`` during LGA's training.

    Returns
    -------
    DetectionResult

    Raises
    ------
    BadInput
        If the method is unknown, ``ratio`` out of range, ``spectral`` / ``ac`` get no model, or the
        detector refuses its input.

    Examples
    --------
    >>> import torch
    >>> from workbench.data import ImageDataset
    >>> g = torch.Generator().manual_seed(0)
    >>> ds = ImageDataset(torch.rand(20, 1, 8, 8, generator=g), torch.tensor([0] * 10 + [1] * 10), ["a", "b"], "toy")
    >>> from workbench.models import architecture
    >>> res = detect("spectral", ds, architecture("cnn", 1, 2, 8), 0.1, poisoned_indices=[3, 4])
    >>> len(res.flagged), res.quality.n_poisoned
    (2, 2)
    >>> detect("ac", ds)
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: detector 'ac' needs a model trained on the suspected data
    """
    method = str(method).lower()
    require(method in METHODS, f"unknown detector {method!r}; choose one of {', '.join(METHODS)}")
    ratio = check_ratio(ratio)
    data = as_dataset(data)
    if method == "lga":
        res = lga_detect(data, ratio, epochs=lga_epochs, arch=arch, seed=seed, device=device, progress=progress)
    else:
        require(model is not None, f"detector {method!r} needs a model trained on the suspected data")
        if method == "spectral":
            res = spectral_detect(model, data, ratio, layer=layer)
        else:
            res = activation_clustering_detect(model, data, ratio, layer=layer, seed=seed)
    if poisoned_indices is not None:
        res.with_truth(poisoned_indices)
    return res


@dataclass
class DetectionSummary:
    """The reportable view of a detection run: quality, per-class details and the flagged gallery.

    Made by :func:`summarize_detection`; :func:`~workbench.report.write_report` writes it.

    Parameters
    ----------
    method : str
        The detector.
    data : str
        The dataset's name.
    n_samples : int
        N.
    ratio : float
        The isolation ratio.
    seconds : float
        Wall time of the detection.
    flagged : torch.Tensor
        Flagged indices, most suspicious first.
    flagged_scores : torch.Tensor
        Their scores.
    scores : torch.Tensor
        Every sample's score (N).
    quality : DetectionQuality or None
        Against the truth, when known.
    params, details : dict
        As in :class:`DetectionResult`.
    gallery_images : torch.Tensor
        Up to ``n_gallery`` most suspicious images, n×C×H×W.
    gallery_captions : list of str
        ``#index · given label`` (``· POISON`` when truly poisoned).

    Returns
    -------
    A DetectionSummary (dataclass)
    """

    method: str
    data: str
    n_samples: int
    ratio: float
    seconds: float
    flagged: torch.Tensor  # indices, most suspicious first
    flagged_scores: torch.Tensor
    scores: torch.Tensor  # every sample's score
    quality: DetectionQuality | None
    params: dict
    details: dict
    gallery_images: torch.Tensor  # up to ``n_gallery`` most suspicious images
    gallery_captions: list[str]

    def report_sections(self):
        """The report's sections: detection metrics, the per-class table, the gallery and the flagged list
        (first 200).

        Parameters: none

        Returns
        -------
        list
            :mod:`workbench.report` sections.
        """
        from workbench.report import ImageGrid, Metrics, Table

        m = {"detector": METHOD_NAMES.get(self.method, self.method), "data": self.data, "samples": self.n_samples,
             "isolation ratio": f"{100 * self.ratio:.1f}%", "flagged": len(self.flagged),
             "time (s)": round(self.seconds, 1)}
        if self.quality is not None:
            q = self.quality
            m.update({"truly poisoned": q.n_poisoned, "precision": f"{100 * q.precision:.2f}%",
                      "recall": f"{100 * q.recall:.2f}%", "AUROC": round(q.auroc, 4)})
        secs = [Metrics("Poison detection", m)]
        per_class = self.details.get("per_class")
        if per_class:
            cols = sorted({k for v in per_class.values() for k in v})
            secs.append(Table("Per class", ["class", *cols],
                              [[c, *[(round(v[k], 4) if isinstance(v.get(k), float) else v.get(k)) for k in cols]]
                               for c, v in per_class.items()]))
        if len(self.gallery_images):
            secs.append(ImageGrid("Most suspicious samples (index · given label" +
                                  (" · POISON = truly poisoned)" if self.quality is not None else ")"),
                                  self.gallery_images, self.gallery_captions, columns=8, scale=3))
        secs.append(Table("Flagged samples (most suspicious first)", ["rank", "index", "score"],
                          [[i + 1, int(j), round(float(s), 5)]
                           for i, (j, s) in enumerate(zip(self.flagged[:200], self.flagged_scores[:200]))],
                          note="first 200 shown; report.json / flagged.csv hold all"))
        return secs


def summarize_detection(result: DetectionResult, data: ImageDataset, poisoned_indices=None,
                        n_gallery: int = 32) -> DetectionSummary:
    """A :class:`DetectionSummary` of ``result`` on ``data``, with the truth marked when known.

    Parameters
    ----------
    result : DetectionResult
        What a detector returned on ``data``.
    data : ImageDataset
        The dataset it ran on.
    poisoned_indices : sequence of int, optional
        The ground truth; also fills ``result.quality`` when it is unset.
    n_gallery : int, default 32
        How many of the most suspicious images to show.

    Returns
    -------
    DetectionSummary

    Examples
    --------
    >>> import torch
    >>> from workbench.data import ImageDataset
    >>> g = torch.Generator().manual_seed(0)
    >>> ds = ImageDataset(torch.rand(20, 1, 8, 8, generator=g), torch.tensor([0] * 10 + [1] * 10), ["a", "b"], "toy")
    >>> res = DetectionResult("spectral", torch.arange(20.0), torch.tensor([19, 18]), 0.1, 0.0)
    >>> summarize_detection(res, ds, poisoned_indices=[19], n_gallery=2).gallery_captions
    ['#19 · b · POISON', '#18 · b']
    """
    if poisoned_indices is not None and result.quality is None:
        result.with_truth(poisoned_indices)
    truth = torch.zeros(len(data), dtype=torch.bool)
    if poisoned_indices is not None:
        truth[torch.as_tensor(poisoned_indices, dtype=torch.long)] = True
    top = result.flagged[:n_gallery]
    caps = [f"#{int(i)} · {data.class_names[int(data.labels[i])]}" + (" · POISON" if bool(truth[i]) else "")
            for i in top]
    return DetectionSummary(result.method, data.name, len(data), result.ratio, result.seconds, result.flagged,
                            result.scores[result.flagged], result.scores, result.quality, result.params,
                            result.details, data.images[top], caps)
