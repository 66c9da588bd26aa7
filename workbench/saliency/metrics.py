"""Saliency metrics: deletion / insertion AUC, pointing game, class sensitivity, model randomization.

* **Deletion and insertion** (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018, Sec. 4.1): pixels are ordered by saliency
  (descending; ties broken by pixel index, so the order is deterministic); in ``n_steps`` equal
  steps they are set to a baseline (deletion; default 0, the background of our digit data) or
  copied into a blurred copy of the image (insertion; Gaussian blur, σ = max(H, W)/8 by default,
  RISE blurs 224-px images with σ = 5 px). The score is the softmax probability of the explained
  class; the AUC is the trapezoidal area under that curve over the removed/inserted fraction in
  [0, 1]. Lower deletion and higher insertion AUC mean a better map. All steps of all images run
  as large batches.
* **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
  Sec. 5.1): a hit when the map's maximum lies within ``tolerance``
  pixels (Euclidean) of the ground-truth box. Zhang et al. use 15 px at 224 px; the default here
  scales that to the image (15/224·max(H, W)). Boxes are ``(y0, x0, y1, x1)`` half-open pixel
  ranges, the region ``image[..., y0:y1, x0:x1]`` (e.g. a BadNets trigger patch). Where several
  pixels tie for the maximum (bilinear upsampling of a coarse layer makes 2×2 ties), any of them
  may score the hit (Zhang et al. do not say; ``points`` reports the first in row-major order). A
  constant (flat) map counts as a miss.
* **Class sensitivity** (Rebuffi et al., CVPR 2020, Sec. 5.3): Spearman ρ between the maps for the
  most and the least likely class, averaged over images; lower means more class-sensitive.
  Class-agnostic maps (Eigen-CAM) score 1.
* **Model randomization** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018,
  Sec. 3.1): the layers with parameters are re-initialised (each with its own default
  initialiser, seeded) one by one from the output down, cumulatively, on a copy of the model; after
  each step the Spearman ρ between the original and the new maps (same images, the original
  model's explained classes) is averaged over images. A sound method's ρ falls quickly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from ..adapter import as_model, model_device
from ..errors import BadInput, check_in_range, require
from ..hooks import capture_layers
from ..layers import layer_root, named_layers
from .base import LayerSaliency, TargetSpec, check_target_length, eval_mode, resolve_target, upsample

Box = tuple[int, int, int, int]


def _maps_nhw(maps: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    m = maps.detach().float()
    if m.ndim == 3:
        m = m[:, None]
    require(m.ndim == 4 and m.shape[1] == 1, f"maps must be N×H×W or N×1×H×W, got shape {tuple(maps.shape)}")
    if size is not None and tuple(m.shape[-2:]) != tuple(size):
        m = upsample(m, size, normalize=False)
    return m[:, 0]


def spearman_rows(a, b) -> np.ndarray:
    """Spearman ρ between corresponding rows of ``a`` and ``b`` (N×D each; average ranks for ties).

    A row that is constant in either input has no defined ρ: NaN.

    Parameters
    ----------
    a, b : torch.Tensor or array-like
        N×… each (flattened to N×D), of the same shape.

    Returns
    -------
    numpy.ndarray
        N values of ρ in [−1, 1], NaN for constant rows.

    Raises
    ------
    BadInput
        If the shapes differ.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    >>> b = torch.tensor([[10.0, 20.0, 30.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    >>> spearman_rows(a, b).tolist()
    [1.0, -1.0, nan]
    """
    a = np.asarray(a.detach().cpu().flatten(1) if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu().flatten(1) if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    require(a.shape == b.shape, f"maps to compare have shapes {a.shape} and {b.shape}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)


# ---------------------------------------------------------------- deletion / insertion
def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with replicate padding (kernel radius ≤ 3σ and < the image size).

    Parameters
    ----------
    images : torch.Tensor
        N×C×H×W, H and W ≥ 2.
    sigma : float
        Standard deviation in pixels; ≤ 0 returns a copy.

    Returns
    -------
    torch.Tensor
        N×C×H×W, blurred (a constant image stays constant).

    Examples
    --------
    >>> import torch
    >>> flat = torch.full((1, 1, 8, 8), 0.3)
    >>> torch.allclose(gaussian_blur(flat, 1.0), flat)
    True
    """
    if sigma <= 0:
        return images.clone()
    h, w = images.shape[-2:]
    radius = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@dataclass
class DeletionInsertion:
    """Per-image AUCs and probability curves (``n_steps + 1`` points over the fraction 0..1).

    Parameters
    ----------
    deletion_auc : numpy.ndarray
        N deletion AUCs in [0, 1] (lower is better; NaN if not computed).
    insertion_auc : numpy.ndarray
        N insertion AUCs in [0, 1] (higher is better; NaN if not computed).
    deletion_curve : numpy.ndarray
        N×(n_steps+1) probabilities of the explained class as pixels are deleted.
    insertion_curve : numpy.ndarray
        N×(n_steps+1) probabilities as pixels are inserted into the blurred image.
    n_steps : int
        The number of steps.

    Returns
    -------
    A DeletionInsertion (dataclass)
        ``deletion`` and ``insertion`` are the mean AUCs.
    """

    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    deletion_curve: np.ndarray  # N × (n_steps+1)
    insertion_curve: np.ndarray
    n_steps: int

    @property
    def deletion(self) -> float:
        """Mean deletion AUC over the images (lower is better).

        Returns
        -------
        float
            In [0, 1].
        """
        return float(np.mean(self.deletion_auc))

    @property
    def insertion(self) -> float:
        """Mean insertion AUC over the images (higher is better).

        Returns
        -------
        float
            In [0, 1].
        """
        return float(np.mean(self.insertion_auc))


@torch.no_grad()
def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, target: TargetSpec = None, *,
                       n_steps: int = 20, baseline: float = 0.0, blur_sigma: float | None = None,
                       batch_size: int = 1024, which: Sequence[str] = ("deletion", "insertion")
                       ) -> DeletionInsertion:
    """Deletion and insertion AUC (RISE) of ``maps`` (N×1×h×w, resized to the images if needed).

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier (run in eval mode, without gradients).
    images : torch.Tensor
        N×C×H×W images in [0, 1].
    maps : torch.Tensor
        N×1×h×w or N×h×w saliency maps (bilinearly resized to H×W).
    target : int, sequence of int, torch.Tensor or None
        The class(es) whose probability is tracked (default: the prediction).
    n_steps : int, default 20
        Steps over the pixel fraction 0..1, ≥ 1.
    baseline : float, default 0.0
        The value deleted pixels are set to.
    blur_sigma : float, optional
        σ of the insertion start image's blur (default max(H, W)/8).
    batch_size : int, default 1024
        Most images per forward (steps × images), ≥ 1.
    which : sequence of str, default ("deletion", "insertion")
        The curves to compute.

    Returns
    -------
    DeletionInsertion
        Per-image AUCs (trapezoidal, over the fraction in [0, 1]) and curves.

    Raises
    ------
    BadInput
        For images that are not N×C×H×W, maps of another number or shape, bad targets, n_steps or
        batch_size < 1, or an unknown curve.

    Examples
    --------
    A classifier whose output never changes scores its constant probability, 1/2:

    >>> import torch
    >>> from torch import nn
    >>> class Constant(nn.Module):
    ...     def forward(self, x):
    ...         return torch.zeros(len(x), 2)
    >>> res = deletion_insertion(Constant(), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), n_steps=4)
    >>> res.deletion_auc.tolist(), res.insertion, res.deletion_curve.shape
    ([0.5, 0.5], 0.5, (2, 5))
    """
    require(isinstance(images, torch.Tensor) and images.ndim == 4, "images must be an N×C×H×W tensor")
    require(n_steps >= 1, f"n_steps must be >= 1, got {n_steps}")
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    model = as_model(model)
    dev = model_device(model)
    x = images.detach().to(dev).float()
    n, c, h, w = x.shape
    m = _maps_nhw(maps, (h, w)).to(dev)
    require(len(m) == n, f"{n} images but {len(m)} maps")
    t = check_target_length(target, n)
    sigma = max(h, w) / 8 if blur_sigma is None else float(blur_sigma)
    check_in_range("blur_sigma", sigma, 0, 1e6)
    with eval_mode(model):
        logits = model(x)
        tgt = resolve_target(t, logits)
        order = torch.sort(m.flatten(1), dim=1, descending=True, stable=True).indices  # N×HW
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(h * w, device=dev).expand(n, -1))
        counts = torch.round(torch.linspace(0, h * w, n_steps + 1, device=dev)).long()  # S+1
        blurred = gaussian_blur(x, sigma)
        base = torch.full_like(x, float(baseline))
        curves = {}
        steps_per_chunk = max(1, batch_size // n)
        for kind in which:
            require(kind in ("deletion", "insertion"), f"unknown curve {kind!r}")
            start, end = (x, base) if kind == "deletion" else (blurred, x)
            probs = []
            for s0 in range(0, n_steps + 1, steps_per_chunk):
                k = counts[s0:s0 + steps_per_chunk]  # chunk of steps
                mask = (rank[None] < k[:, None, None]).view(len(k), n, 1, h, w).to(x.dtype)  # S×N×1×H×W
                imgs = start[None] * (1 - mask) + end[None] * mask
                p = model(imgs.flatten(0, 1)).softmax(1).view(len(k), n, -1)
                probs.append(p.gather(2, tgt.view(1, n, 1).expand(len(k), n, 1))[..., 0])
            curves[kind] = torch.cat(probs).T.cpu().double().numpy()  # N × (S+1)
    empty = np.full((n, n_steps + 1), np.nan)
    dc, ic = curves.get("deletion", empty), curves.get("insertion", empty)
    auc = lambda cur: np.trapezoid(cur, dx=1.0 / n_steps, axis=1)  # noqa: E731
    return DeletionInsertion(auc(dc), auc(ic), dc, ic, n_steps)


# ---------------------------------------------------------------- pointing game
@dataclass
class PointingGame:
    """What :func:`pointing_game` returns.

    Parameters
    ----------
    hits : numpy.ndarray
        N booleans: the map's maximum lies within the tolerance of the box.
    points : numpy.ndarray
        N×2 ``(y, x)`` of each map's maximum (the first in row-major order).
    tolerance : float
        The tolerance used, in pixels.
    flat : int
        The number of constant maps (counted as misses).

    Returns
    -------
    A PointingGame (dataclass)
        ``accuracy`` is the share of hits.
    """

    hits: np.ndarray  # N booleans
    points: np.ndarray  # N×2 (y, x) of each map's maximum
    tolerance: float
    flat: int  # constant maps (counted as misses)

    @property
    def accuracy(self) -> float:
        """Share of maps that hit their box.

        Returns
        -------
        float
            In [0, 1].
        """
        return float(np.mean(self.hits))


def _boxes(boxes, n: int, h: int, w: int) -> torch.Tensor:
    b = torch.as_tensor(boxes, dtype=torch.float64)
    if b.ndim == 1:
        require(len(b) == 4, f"a box is (y0, x0, y1, x1), got {len(b)} numbers")
        b = b.expand(n, 4)
    require(b.ndim == 2 and b.shape[1] == 4, f"boxes must be (y0, x0, y1, x1) or N×4, got shape {tuple(b.shape)}")
    require(len(b) == n, f"{n} maps but {len(b)} boxes")
    y0, x0, y1, x1 = b.unbind(1)
    ok = (y0 >= 0) & (x0 >= 0) & (y1 <= h) & (x1 <= w) & (y1 > y0) & (x1 > x0)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0])
        raise BadInput(f"box {i} {tuple(int(v) for v in b[i].tolist())} is not a non-empty (y0, x0, y1, x1) "
                          f"region inside the {h}×{w} map (half-open: rows y0..y1-1, columns x0..x1-1)")
    return b


def pointing_game(maps: torch.Tensor, boxes, *, tolerance: float | None = None,
                  image_size: tuple[int, int] | None = None) -> PointingGame:
    """Hit if each map's maximum lies within ``tolerance`` px of its box ``(y0, x0, y1, x1)``.

    ``maps`` N×H×W or N×1×H×W (resized to ``image_size`` first if given); ``boxes`` one box for all
    maps or N×4, in pixels of the (resized) maps, half-open like ``image[y0:y1, x0:x1]``.

    Parameters
    ----------
    maps : torch.Tensor
        N×H×W or N×1×H×W saliency maps.
    boxes : sequence of int or array-like
        One ``(y0, x0, y1, x1)`` box, or N×4, non-empty and inside the map.
    tolerance : float, optional
        Euclidean distance in pixels (default 15/224·max(H, W), Zhang et al.'s 15 px at 224 px).
    image_size : tuple of int, optional
        ``(H, W)`` to resize the maps to first (bilinear).

    Returns
    -------
    PointingGame
        Hits, maximum positions, tolerance and the number of flat maps.

    Raises
    ------
    BadInput
        For maps that are not N×H×W / N×1×H×W, boxes of the wrong shape or number, or a box that is
        empty or outside the map.

    Examples
    --------
    >>> import torch
    >>> m = torch.zeros(1, 4, 4)
    >>> m[0, 1, 2] = 1.0
    >>> game = pointing_game(m, (0, 2, 2, 4))
    >>> game.hits.tolist(), game.points.tolist(), game.accuracy
    ([True], [[1, 2]], 1.0)
    >>> pointing_game(m, (3, 0, 4, 1), tolerance=1.0).hits.tolist()  # 2.83 px away
    [False]
    """
    m = _maps_nhw(maps, image_size)
    n, h, w = m.shape
    b = _boxes(boxes, n, h, w)
    tol = 15.0 / 224.0 * max(h, w) if tolerance is None else float(tolerance)
    check_in_range("tolerance", tol, 0, 1e9)
    flat_m = m.flatten(1).double()
    idx = flat_m.argmax(1)
    py, px = idx // w, idx % w
    hi, lo = flat_m.max(1).values, flat_m.min(1).values
    flat = (hi - lo) <= 0
    # Every pixel that attains the maximum (bilinear upsampling makes exact ties) may score the hit.
    at_max = (flat_m >= (hi - 1e-6 * (hi - lo))[:, None]).view(n, h, w)
    ys = torch.arange(h, dtype=torch.float64)[None, :]
    xs = torch.arange(w, dtype=torch.float64)[None, :]
    dy = torch.clamp(torch.maximum(b[:, :1] - ys, ys - (b[:, 2:3] - 1)), min=0)  # N×H
    dx = torch.clamp(torch.maximum(b[:, 1:2] - xs, xs - (b[:, 3:4] - 1)), min=0)  # N×W
    near = torch.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) <= tol + 1e-9  # N×H×W
    hits = (at_max & near).flatten(1).any(1) & ~flat
    return PointingGame(hits.numpy(), torch.stack([py, px], 1).numpy(), tol, int(flat.sum()))


# ---------------------------------------------------------------- class sensitivity
def defined_mean(values) -> float:
    """Mean of the defined (finite) values, NaN when there are none: how ρ is averaged over images.

    Parameters
    ----------
    values : array-like of float
        Per-image values, NaN where undefined.

    Returns
    -------
    float
        The mean of the finite values, or NaN.

    Examples
    --------
    >>> defined_mean([0.5, float("nan"), 1.0]), defined_mean([float("nan")])
    (0.75, nan)
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


@dataclass
class ClassSensitivity:
    """Per layer: per-image Spearman ρ between the most- and least-likely-class maps, and the mean.

    Parameters
    ----------
    per_image : dict of str to numpy.ndarray
        Layer name → N values of ρ (NaN where a map is constant).
    mean : dict of str to float
        Layer name → mean ρ over the images with a defined ρ (NaN if none).

    Returns
    -------
    A ClassSensitivity (dataclass).
    """

    per_image: dict[str, np.ndarray]
    mean: dict[str, float]


def class_sensitivity(method: LayerSaliency, images: torch.Tensor) -> ClassSensitivity:
    """Spearman ρ between ``method``'s maps for the most and the least likely class (lower: better).

    Parameters
    ----------
    method : LayerSaliency
        The saliency method (its model and layers).
    images : torch.Tensor
        N×C×H×W images.

    Returns
    -------
    ClassSensitivity
        ρ per image and its mean, per layer.

    Examples
    --------
    Eigen-CAM ignores the class, so its maps for both classes agree (ρ = 1):

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> from workbench.saliency.eigencam import EigenCAM
    >>> class_sensitivity(EigenCAM(net, "1"), torch.rand(2, 1, 8, 8)).mean
    {'1': 1.0}
    """
    dev = model_device(method.model)
    with torch.no_grad(), eval_mode(method.model):
        logits = method.model(images.detach().to(dev))
    top, bottom = logits.argmax(1), logits.argmin(1)
    hi = method.attribute_layers(images, top)
    lo = method.attribute_layers(images, bottom)
    per = {n: spearman_rows(hi[n], lo[n]) for n in method.layer_names}
    return ClassSensitivity(per, {n: defined_mean(v) for n, v in per.items()})


# ---------------------------------------------------------------- model randomization
@dataclass
class RandomizationCheck:
    """``rho[layer][k]``: mean Spearman ρ after randomising ``randomized[0..k]`` (top down).

    Parameters
    ----------
    randomized : list of str
        The layers randomised, in order (output first).
    rho : dict of str to list of float
        Saliency layer → mean ρ between the original and the new maps after each step.
    per_image : dict of str to numpy.ndarray, default {}
        Saliency layer → ρ per image and step, shape ``(N, steps)`` (NaN where a map is constant).

    Returns
    -------
    A RandomizationCheck (dataclass).
    """

    randomized: list[str]
    rho: dict[str, list[float]]
    per_image: dict[str, np.ndarray] = field(default_factory=dict)


def parameter_layers_top_down(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Layers owning parameters, in reverse order of execution (output first).

    Layers that did not run on the probe come last.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model (one probe forward on the first image, eval mode).
    images : torch.Tensor
        N×C×H×W images, N ≥ 1.

    Returns
    -------
    list of str
        Layer names.

    Raises
    ------
    BadInput
        If no layer owns parameters.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> parameter_layers_top_down(net, torch.rand(1, 1, 8, 8))
    ['4', '0']
    """
    names = [n for n, mod in named_layers(model) if any(True for _ in mod.parameters(recurse=False))]
    require(len(names) > 0, "the model has no layers with parameters to randomise")
    with torch.no_grad(), eval_mode(model), capture_layers(model, names, detach=True) as cap:
        model(images[:1].to(model_device(model)))
    ran = list(cap.activations)  # insertion order = order of execution
    return list(reversed(ran)) + [n for n in names if n not in ran]


def randomization_check(method: LayerSaliency, images: torch.Tensor, target: TargetSpec = None, *,
                        max_layers: int | None = None, seed: int = 0) -> RandomizationCheck:
    """Cascading model-randomization sanity check (Adebayo et al. 2018); the model is not modified.

    Parameters
    ----------
    method : LayerSaliency
        The saliency method; it is rebuilt on a deep copy of the model with ``clone_for``.
    images : torch.Tensor
        N×C×H×W images.
    target : int, sequence of int, torch.Tensor or None
        The class(es) to explain throughout (default: the original model's predictions).
    max_layers : int, optional
        Randomise at most this many layers, ≥ 1 (default: all).
    seed : int, default 0
        Seed of the re-initialisations.

    Returns
    -------
    RandomizationCheck
        The layers randomised and, per saliency layer, the mean ρ after each step.

    Raises
    ------
    BadInput
        For a callable without modules, ``max_layers`` < 1, or a model without parameters.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> from workbench.saliency.gradcam import GradCAM
    >>> check = randomization_check(GradCAM(net, "1"), torch.rand(2, 1, 8, 8))
    >>> check.randomized, len(check.rho["1"])
    (['4', '0'], 2)
    """
    model = method.model
    require(isinstance(layer_root(model), nn.Module), "the randomization check needs the model's modules: wrap a "
                                                      "callable with as_model(fn, module=...)")
    dev = model_device(model)
    x = images.detach().to(dev)
    size = tuple(x.shape[-2:])
    if target is None:  # explain the original model's predicted classes throughout
        with torch.no_grad(), eval_mode(model):
            target = model(x).argmax(1)
    ref = {n: upsample(m, size) for n, m in method.attribute_layers(x, target).items()}
    order = parameter_layers_top_down(model, x)
    if max_layers is not None:
        require(max_layers >= 1, f"max_layers must be >= 1, got {max_layers}")
        order = order[:max_layers]
    work = copy.deepcopy(model)
    mods = dict(named_layers(work))
    clone = method.clone_for(work)
    rho: dict[str, list[float]] = {n: [] for n in method.layer_names}
    per: dict[str, list[np.ndarray]] = {n: [] for n in method.layer_names}
    for i, name in enumerate(order):
        mod = mods[name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100_003 + i)
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
            else:
                for p in mod.parameters(recurse=False):
                    nn.init.normal_(p, std=0.1)
        maps = clone.attribute_layers(x, target)
        for n in method.layer_names:
            r = spearman_rows(ref[n], upsample(maps[n], size))
            rho[n].append(defined_mean(r))
            per[n].append(r)
    return RandomizationCheck(order, rho, {n: np.stack(v, 1) if v else np.zeros((len(x), 0)) for n, v in per.items()})
