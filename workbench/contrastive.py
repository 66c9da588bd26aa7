"""SimCLR contrastive self-supervised learning for our small encoders, with linear-probe and kNN evaluation.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Two augmented views of every image in a batch, an encoder ``f`` and a
projection head ``g``, and the NT-Xent loss (their Eq. 1):

    l(i, j) = -log( exp(sim(z_i, z_j)/τ) / Σ_{k ≠ i} exp(sim(z_i, z_k)/τ) ),   z = g(f(x)),

averaged over all 2N anchors (every view is once the anchor ``i`` of its positive pair ``j``), with
``sim`` the cosine similarity. Evaluation: a linear probe (scikit-learn logistic regression on
frozen, standardised encoder features, the paper's linear evaluation protocol) and a cosine kNN.

Differences from the paper, for 28×28 grey digits on a CPU: the augmentations are a batched torch
re-implementation (random resized crop as a random affine zoom 0.7-1.0 with ±15% translation and
±17° rotation, brightness/contrast jitter, Gaussian noise; no colour jitter, blur or flips, which
make no sense for digits); a small conv encoder (:class:`ConvEncoder`, 3 conv blocks + global
average pool, 128-d) or any zoo model through its penultimate feature layer (:class:`ZooEncoder`);
Adam instead of LARS and batch 256 instead of 4096; τ = 0.2.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import model_mode
from .data import ImageDataset
from .errors import check_in_range, require
from .hooks import capture_layers, default_feature_layer
from .models import build_model, model_device
from .training import Progress, resolve_device

# ---------------------------------------------------------------- augmentations


@dataclass
class Augment:
    """SimCLR's view generator, batched on the images' device; every draw comes from ``generator``.

    Each call draws, per image, a random zoom, rotation and shift (one affine ``grid_sample``,
    zero padding), a contrast and a brightness factor, and additive Gaussian noise; the result is
    clipped to [0, 1].

    Parameters
    ----------
    scale : tuple of float, default (0.7, 1.0)
        Range of the crop's side as a fraction of the image (1 = whole image; zoom in by 1/s).
    max_rotation : float, default 17.0
        Largest rotation, in degrees (uniform in ±max_rotation).
    max_shift : float, default 0.15
        Largest translation, as a fraction of the image size.
    brightness : tuple of float, default (0.6, 1.4)
        Range of the multiplicative brightness factor.
    contrast : tuple of float, default (0.7, 1.3)
        Range of the contrast factor (around each image's mean).
    noise : float, default 0.1
        Standard deviation of the additive Gaussian noise (0: none).

    Returns
    -------
    An Augment (dataclass)
        Called as ``augment(x, generator)`` on N×C×H×W images in [0, 1] to give views of the same
        shape in [0, 1].

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> view = Augment()(x, torch.Generator().manual_seed(1))
    >>> view.shape, bool(view.min() >= 0 and view.max() <= 1)
    (torch.Size([4, 1, 28, 28]), True)
    """

    scale: tuple[float, float] = (0.7, 1.0)  # zoom factor of the crop (1 = whole image)
    max_rotation: float = 17.0  # degrees
    max_shift: float = 0.15  # fraction of the image size
    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.7, 1.3)
    noise: float = 0.1  # std of additive Gaussian noise

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = x.shape[:2]

        def u(lo, hi, *shape):
            return (lo + (hi - lo) * torch.rand(n, *shape, generator=generator)).to(x.device, x.dtype)

        s = u(*self.scale)  # crop covers s of the side: zoom in by 1/s
        ang = u(-self.max_rotation, self.max_rotation) * math.pi / 180
        tx, ty = u(-self.max_shift, self.max_shift) * 2, u(-self.max_shift, self.max_shift) * 2
        cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * u(*self.contrast, 1, 1, 1) + mean
        out = out * u(*self.brightness, 1, 1, 1)
        if self.noise > 0:
            out = out + self.noise * torch.randn(out.shape, generator=generator).to(x.device, x.dtype)
        return out.clamp(0, 1)


# ---------------------------------------------------------------- encoders


class ConvEncoder(nn.Module):
    """Three 3×3 conv + BatchNorm + ReLU blocks (widths w, 2w, 4w; max-pool after the first two),
    global average pooling: a ``4w``-dimensional embedding (128 for w = 32).

    Parameters
    ----------
    in_channels : int, default 1
        Image channels.
    width : int, default 32
        Channels of the first block (w).

    Returns
    -------
    A ConvEncoder (``nn.Module``)
        Maps N×C×H×W to N×4w embeddings; ``dim`` holds 4w.

    Examples
    --------
    >>> import torch
    >>> ConvEncoder(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 128])
    """

    feature_layer = "flatten"

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.flatten(self.gap(self.relu3(self.bn3(self.conv3(x)))))


class ZooEncoder(nn.Module):
    """A zoo model used as an encoder: its output is the model's feature layer (penultimate features).

    Parameters
    ----------
    model : nn.Module
        The model (its classifier head runs but its output is not used).
    layer : str, optional
        The layer whose output is the embedding (default: the model's feature layer, see
        :func:`workbench.layers.default_feature_layer`).

    Returns
    -------
    A ZooEncoder (``nn.Module``) mapping N×C×H×W to the layer's output flattened to N×D.
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        super().__init__()
        self.model = model
        self.layer = layer or default_feature_layer(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture_layers(self.model, self.layer) as cap:
            self.model(x)
        return cap.activations[self.layer].flatten(1)


ENCODERS = ("conv", "cnn", "resnet")


def build_encoder(arch: str, in_channels: int, image_size: tuple[int, int] | int = 28, seed: int = 0) -> nn.Module:
    """``conv`` (:class:`ConvEncoder`) or a zoo architecture (``cnn``, ``resnet``) through its feature layer.

    Parameters
    ----------
    arch : {"conv", "cnn", "resnet"}
        The encoder (see :data:`ENCODERS`).
    in_channels : int
        Image channels, 1 or 3.
    image_size : int or tuple of int, default 28
        ``H`` or ``(H, W)`` (zoo architectures).
    seed : int, default 0
        Seed of the weight initialisation.

    Returns
    -------
    nn.Module
        A :class:`ConvEncoder` or a :class:`ZooEncoder`, mapping N×C×H×W to N×D.

    Raises
    ------
    BadInput
        If the architecture is unknown or ``in_channels`` is not 1 or 3.

    Examples
    --------
    >>> enc = build_encoder("cnn", 1)
    >>> type(enc).__name__, enc.layer, encoder_dim(enc, (1, 28, 28))
    ('ZooEncoder', 'relu5', 128)
    """
    require(arch in ENCODERS, f"unknown encoder {arch!r}; choose one of {', '.join(ENCODERS)}")
    require(in_channels in (1, 3), f"encoders take 1 or 3 input channels, got {in_channels}")
    if arch == "conv":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ConvEncoder(in_channels)
    # the zoo model's classifier head is unused; 2 classes keeps it small
    return ZooEncoder(build_model(arch, in_channels, 2, image_size, seed=seed))


def encoder_dim(encoder: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """The embedding size D of ``encoder`` (one probe forward of two zero images in eval mode).

    Parameters
    ----------
    encoder : nn.Module
        Maps N×C×H×W to N×D; its train/eval mode is restored afterwards.
    input_shape : tuple of int
        ``(C, H, W)`` of one image.

    Returns
    -------
    int
        D.

    Examples
    --------
    >>> encoder_dim(ConvEncoder(1, width=8), (1, 28, 28))
    32
    """
    dev = model_device(encoder)
    with model_mode(encoder), torch.no_grad():
        d = int(encoder(torch.zeros(2, *input_shape, device=dev)).shape[1])
    return d


def projection_head(dim: int, hidden: int = 128, out: int = 64) -> nn.Module:
    """SimCLR's 2-layer MLP projection head g (Linear, BatchNorm, ReLU, Linear).

    Parameters
    ----------
    dim : int
        The encoder's embedding size D.
    hidden : int, default 128
        Width of the hidden layer.
    out : int, default 64
        Size of the projection z on which the loss is computed.

    Returns
    -------
    nn.Module
        Maps N×dim to N×out.

    Examples
    --------
    >>> import torch
    >>> projection_head(128)(torch.zeros(3, 128)).shape
    torch.Size([3, 64])
    """
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


# ---------------------------------------------------------------- loss


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2,
            anchors: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy, SimCLR Eq. 1) of paired views z1[i] ↔ z2[i].

    ``anchors`` (bool, N): average only the terms whose anchor is a view of those pairs (every other view
    still serves as a negative): one sample's share of a batch's loss, e.g. for gradient-matching poisons.

    Parameters
    ----------
    z1, z2 : torch.Tensor
        N×D projections of the two views; row i of each is a positive pair. They are L2-normalised
        here (cosine similarity).
    temperature : float, default 0.2
        τ > 0.
    anchors : torch.Tensor, optional
        Bool mask of N pairs, at least one true (default ``None``: all 2N anchors).

    Returns
    -------
    torch.Tensor
        The scalar loss, averaged over the anchors (differentiable).

    Raises
    ------
    BadInput
        If the views are not N×D of one shape, τ ≤ 0, or ``anchors`` is not a non-empty mask of N.

    Examples
    --------
    Four orthogonal pairs of identical views: each anchor has similarity 1/τ = 5 with its positive
    and 0 with its 6 negatives, so the loss is log(1 + 6·e⁻⁵):

    >>> import torch
    >>> round(float(nt_xent(torch.eye(4), torch.eye(4))), 4)
    0.0396
    """
    require(z1.shape == z2.shape and z1.ndim == 2, f"views must be N×D of one shape, got {tuple(z1.shape)} "
            f"and {tuple(z2.shape)}")
    require(temperature > 0, f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    if anchors is None:
        return F.cross_entropy(sim, positive)
    require(anchors.shape == (n,) and bool(anchors.any()), f"anchors must be a non-empty bool mask of {n} pairs")
    rows = torch.cat([anchors, anchors]).to(z.device)
    return F.cross_entropy(sim[rows], positive[rows])


# ---------------------------------------------------------------- training


class SimCLRTrainer:
    """Encoder + projection head + optimiser; ``step(batch)`` is one SimCLR update.

    The one SimCLR loop of the workbench: :func:`train_simclr` and the BLTO surrogate both use it.

    Parameters
    ----------
    encoder : nn.Module
        Maps N×C×H×W to N×D (moved to ``device``).
    input_shape : tuple of int
        ``(C, H, W)`` of one image (to size the head).
    lr : float, default 2e-3
        Adam's learning rate (encoder and head).
    temperature : float, default 0.2
        NT-Xent's τ.
    augment : Augment, optional
        The view generator (default ``Augment()``).
    proj_dim : int, default 64
        Size of the projection z.
    device : str or torch.device, default "cpu"
        Where to train (``"auto"``/``None``: CUDA when present).
    seed : int, default 0
        The head is initialised from ``seed + 1``.
    weight_decay : float, default 1e-5
        Adam's weight decay.

    Returns
    -------
    A SimCLRTrainer
        ``loss(x, gen)`` is the NT-Xent of two views of the batch ``x``, ``step(x, gen)`` one Adam update
        returning that loss as a float (``FloatingPointError`` if it is not finite).
    """

    def __init__(self, encoder: nn.Module, input_shape: tuple[int, int, int], *, lr: float = 2e-3,
                 temperature: float = 0.2, augment: Augment | None = None, proj_dim: int = 64,
                 device: str | torch.device | None = "cpu", seed: int = 0, weight_decay: float = 1e-5):
        self.device = resolve_device(device)
        self.encoder = encoder.to(self.device)
        dim = encoder_dim(self.encoder, input_shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.head = projection_head(dim, out=proj_dim).to(self.device)
        self.temperature = temperature
        self.augment = augment or Augment()
        self.opt = torch.optim.Adam([*self.encoder.parameters(), *self.head.parameters()], lr=lr,
                                    weight_decay=weight_decay)
        self.dim = dim

    def loss(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """NT-Xent of two augmented views of the batch ``x``.

        Parameters
        ----------
        x : torch.Tensor
            N×C×H×W images on the trainer's device.
        gen : torch.Generator
            Source of the augmentations.

        Returns
        -------
        torch.Tensor
            The scalar loss (differentiable).
        """
        v1, v2 = self.augment(x, gen), self.augment(x, gen)
        z = self.head(self.encoder(torch.cat([v1, v2])))
        return nt_xent(z[:len(x)], z[len(x):], self.temperature)

    def step(self, x: torch.Tensor, gen: torch.Generator) -> float:
        """One Adam update on the batch ``x`` (encoder and head in training mode).

        Parameters
        ----------
        x : torch.Tensor
            N×C×H×W images (moved to the trainer's device).
        gen : torch.Generator
            Source of the augmentations.

        Returns
        -------
        float
            The loss before the update.

        Raises
        ------
        FloatingPointError
            If the loss is not finite.
        """
        self.encoder.train()
        self.head.train()
        loss = self.loss(x.to(self.device), gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SimCLR diverged: loss {loss.item()}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


@dataclass
class SimCLRResult:
    """What :func:`train_simclr` returns.

    Parameters
    ----------
    encoder : nn.Module
        The trained encoder, in eval mode.
    head : nn.Module
        The trained projection head, in eval mode.
    loss_per_epoch : list of float
        The mean NT-Xent of each epoch.
    seconds : float
        Training wall time.
    provenance : dict
        The settings of the run (arch, epochs, batch size, lr, temperature, seed, number of images).

    Returns
    -------
    A SimCLRResult (dataclass).
    """

    encoder: nn.Module  # in eval mode
    head: nn.Module
    loss_per_epoch: list[float]
    seconds: float
    provenance: dict = field(default_factory=dict)


def _images_of(images) -> torch.Tensor:
    x = images.images if isinstance(images, ImageDataset) else torch.as_tensor(images)
    require(x.ndim == 4, f"images must be N×C×H×W, got shape {tuple(x.shape)}")
    require(x.dtype == torch.float32, f"images must be float32 in [0, 1], got {x.dtype}")
    require(len(x) >= 2, f"SimCLR needs at least 2 images, got {len(x)}")
    return x


def train_simclr(images: ImageDataset | torch.Tensor, *, epochs: int = 10, batch_size: int = 256,
                 lr: float = 2e-3, temperature: float = 0.2, arch: str = "conv", augment: Augment | None = None,
                 seed: int = 0, device: str | torch.device | None = "cpu",
                 progress: Progress | None = None) -> SimCLRResult:
    """Train an encoder with SimCLR on unlabelled ``images`` (labels, if any, are ignored).

    Adam with a cosine learning-rate schedule over all steps; the last partial batch of each epoch is
    dropped (NT-Xent wants full batches). Deterministic given ``seed``.

    Parameters
    ----------
    images : ImageDataset or torch.Tensor
        N×C×H×W float32 images in [0, 1], N ≥ 2, C of 1 or 3.
    epochs : int, default 10
        ≥ 1.
    batch_size : int, default 256
        Pairs per step, ≥ 2.
    lr : float, default 2e-3
        Adam's initial learning rate.
    temperature : float, default 0.2
        NT-Xent's τ, in (0, 100].
    arch : {"conv", "cnn", "resnet"}, default "conv"
        The encoder (see :func:`build_encoder`).
    augment : Augment, optional
        The view generator (default ``Augment()``).
    seed : int, default 0
        Seeds the weights, the shuffling and the augmentations.
    device : str or torch.device, default "cpu"
        Where to train.
    progress : callable, optional
        ``progress(fraction, message)``, called every few steps.

    Returns
    -------
    SimCLRResult
        The encoder and head (eval mode), losses per epoch, time and provenance.

    Raises
    ------
    BadInput
        If the images are not N×C×H×W float32 with N ≥ 2, or a setting is out of range.
    FloatingPointError
        If the loss becomes non-finite.
    """
    x_all = _images_of(images)
    require(epochs >= 1, f"epochs must be >= 1, got {epochs}")
    require(batch_size >= 2, f"batch_size must be >= 2, got {batch_size}")
    check_in_range("temperature", float(temperature), 0.0, 100.0, low_open=True)
    gen = torch.Generator().manual_seed(seed)
    encoder = build_encoder(arch, x_all.shape[1], tuple(x_all.shape[2:]), seed=seed)
    trainer = SimCLRTrainer(encoder, tuple(x_all.shape[1:]), lr=lr, temperature=temperature, augment=augment,
                            device=device, seed=seed)
    steps = max(1, len(x_all) // batch_size)  # drop the last partial batch (NT-Xent wants full batches)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.opt, T_max=epochs * steps)
    losses = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        tot = 0.0
        for b in range(steps):
            tot += trainer.step(x_all[perm[b * batch_size:(b + 1) * batch_size]], gen)
            sched.step()
            if progress is not None and (b % 5 == 0 or b == steps - 1):
                progress((epoch * steps + b + 1) / (epochs * steps), f"SimCLR epoch {epoch + 1}/{epochs} "
                         f"loss {tot / (b + 1):.3f}")
        losses.append(tot / steps)
    encoder.eval()
    trainer.head.eval()
    return SimCLRResult(encoder, trainer.head, losses, time.perf_counter() - t0,
                        {"arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                         "temperature": temperature, "seed": seed, "n_images": len(x_all)})


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def encode(encoder: nn.Module, images: ImageDataset | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Frozen features N×D (eval mode, batched), on the CPU.

    Parameters
    ----------
    encoder : nn.Module
        Maps N×C×H×W to N×D; its train/eval mode is restored afterwards.
    images : ImageDataset or torch.Tensor
        N×C×H×W images (moved batch by batch to the encoder's device).
    batch_size : int, default 512
        Images per forward.

    Returns
    -------
    torch.Tensor
        N×D float32 on the CPU, without gradients.

    Examples
    --------
    >>> import torch
    >>> encode(ConvEncoder(1, width=8), torch.zeros(5, 1, 28, 28), batch_size=2).shape
    torch.Size([5, 32])
    """
    x = images.images if isinstance(images, ImageDataset) else images
    dev = model_device(encoder)
    with model_mode(encoder):
        out = [encoder(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


@dataclass
class LinearProbe:
    """Logistic regression on standardised frozen features; ``predict(images)`` encodes first.

    Parameters
    ----------
    encoder : nn.Module
        The frozen encoder.
    classifier : sklearn.pipeline.Pipeline
        ``StandardScaler`` then ``LogisticRegression``, fitted on the encoder's features.
    accuracy : float
        Accuracy in [0, 1] on the probe's test set.
    n_train : int
        Number of training images of the probe.

    Returns
    -------
    A LinearProbe (dataclass)
        ``predict(images)`` gives N labels (int64), ``as_classifier()`` the encoder and probe as one torch
        module returning logits.
    """

    encoder: nn.Module
    classifier: object  # sklearn Pipeline(StandardScaler, LogisticRegression)
    accuracy: float  # on the probe's test set
    n_train: int

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The probe's classes for ``images`` (encoded first).

        Parameters
        ----------
        images : torch.Tensor
            N×C×H×W images.

        Returns
        -------
        torch.Tensor
            N labels, int64.
        """
        feats = encode(self.encoder, images).numpy()
        return torch.as_tensor(self.classifier.predict(feats), dtype=torch.long)

    def as_classifier(self) -> nn.Module:
        """The encoder and the probe as one torch classifier (logits), e.g. for backdoor metrics.

        The scaler is folded into the linear layer; a binary probe (one row in scikit-learn) becomes
        two logits ±(w·x + b)/2, so the softmax equals the probe's probabilities.

        Returns
        -------
        nn.Module
            ``Sequential(encoder, Linear)`` in eval mode, mapping N×C×H×W to N×K logits.
        """
        scaler, lr = self.classifier[0], self.classifier[-1]
        scale = torch.as_tensor(scaler.scale_, dtype=torch.float32)
        w = torch.as_tensor(lr.coef_, dtype=torch.float32) / scale
        b = torch.as_tensor(lr.intercept_, dtype=torch.float32) - w @ torch.as_tensor(scaler.mean_, dtype=torch.float32)
        if w.shape[0] == 1:  # binary: sklearn keeps one row
            w, b = torch.cat([-w, w]) / 2, torch.cat([-b, b]) / 2
        head = nn.Linear(w.shape[1], w.shape[0])
        head.weight.data.copy_(w)
        head.bias.data.copy_(b)
        return nn.Sequential(self.encoder, head.to(model_device(self.encoder))).eval()


def linear_probe(encoder: nn.Module, train: ImageDataset, test: ImageDataset, *, C: float = 1.0,
                 max_iter: int = 1000) -> LinearProbe:
    """Fit a logistic regression on frozen features of ``train``; accuracy on ``test``.

    The linear evaluation protocol of SimCLR (Chen et al. 2020), with scikit-learn's
    ``StandardScaler`` and ``LogisticRegression`` on features from :func:`encode`.

    Parameters
    ----------
    encoder : nn.Module
        The frozen encoder.
    train : ImageDataset
        The probe's training set (at least two classes).
    test : ImageDataset
        Where the accuracy is measured.
    C : float, default 1.0
        Inverse L2 regularisation strength of the logistic regression.
    max_iter : int, default 1000
        The solver's iteration limit.

    Returns
    -------
    LinearProbe
        The fitted probe with its test accuracy.

    Raises
    ------
    BadInput
        If ``train`` has fewer than two classes.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    require(len(set(train.labels.tolist())) >= 2, "the probe's training set needs at least two classes")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(encode(encoder, train).numpy(), train.labels.numpy())
    acc = float((clf.predict(encode(encoder, test).numpy()) == test.labels.numpy()).mean())
    return LinearProbe(encoder, clf, acc, len(train))


def knn_accuracy(encoder: nn.Module, train: ImageDataset, test: ImageDataset, k: int = 20,
                 temperature: float = 0.1) -> float:
    """Weighted cosine kNN on frozen features (Wu et al. 2018's protocol, as in SimCLR code bases).

    Each test image's ``k`` most cosine-similar training images vote for their labels with weight
    ``exp(similarity / temperature)``. Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination", CVPR 2018.

    Parameters
    ----------
    encoder : nn.Module
        The frozen encoder.
    train : ImageDataset
        The labelled neighbours.
    test : ImageDataset
        Where the accuracy is measured (in chunks of 1024).
    k : int, default 20
        Neighbours, in [1, len(train)].
    temperature : float, default 0.1
        Temperature of the vote weights.

    Returns
    -------
    float
        Accuracy on ``test``, in [0, 1].

    Raises
    ------
    BadInput
        If ``k`` is out of range.
    """
    require(1 <= k <= len(train), f"k must be in 1..{len(train)}, got {k}")
    ftr = F.normalize(encode(encoder, train), dim=1)
    fte = F.normalize(encode(encoder, test), dim=1)
    correct = 0
    for i in range(0, len(fte), 1024):
        sim = fte[i:i + 1024] @ ftr.T
        w, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(w), train.num_classes)
        votes.scatter_add_(1, train.labels[idx], (w / temperature).exp())
        correct += int((votes.argmax(1) == test.labels[i:i + 1024]).sum())
    return correct / len(test)
