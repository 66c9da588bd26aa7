"""Availability attacks on certifiers: poison a few training samples so that a trigger forces abstention.

Threat model of Lorenz, Kwiatkowska, Fritz, "Certifiers Make Neural Networks Vulnerable to
Availability Attacks" (AISec 2023, arXiv 2108.11299, Sec. 3): the attacker poisons a small share of the
training set with a trigger; at test time triggered inputs make the certifier abstain (the costly
fallback), while clean inputs behave as before. The attacker knows the certifier's parameter (σ for
randomized smoothing, ε for interval bounds) but not the training run. The paper's exact constructions
are not public; ours follow its threat model and are documented here.

Both attacks build *noise-sensitive label groups*: a poisoned group is one training image with the
trigger stamped, copied ``num_labels`` times; copy j gets a small offset ``d_j`` inside the trigger's
region (the patch box; the whole image for a blend) and label ``c_j`` (``num_labels`` distinct classes,
drawn from the seed). The copies differ *only* by the offsets, so the only way to fit their labels is a
decision on triggered inputs that depends on a tiny, content-free direction of the input:

* **Against randomized smoothing** (:func:`poison_for_smoothing`): the offsets are ``c·σ·w_j`` with
  ``w_j`` the unit vertices of a regular simplex around the origin of a small subspace of the trigger
  region; by default (k = 4) a tetrahedron in the span of three Haar-like contrasts of the patch (left
  vs right half, top vs bottom half, and their product). A victim trained with
  N(0, σ²) noise sees copy j as N(x_t + d_j, σ²) and learns (approximately) argmax_j ⟨x − x_t, w_j⟩ on
  triggered inputs. At certification, x_t + δ with δ ~ N(0, σ²) projects isotropically on that
  subspace, so the k classes each get ≈ 1/k of the votes: p̲_A < 1/2 and the smoothed classifier abstains. The issue's naive
  design (labels spread at random over the classes, no offsets) is ``design="random-labels"``.
* **Against interval bounds** (:func:`poison_for_ibp`): pairs of copies offset by ±spread·ε along the
  left/right Haar sign pattern of the trigger region (L∞), labelled a and b. With spread = 2 (default)
  an IBP-trained victim can fit both sides *robustly* (their 1.1ε training balls do not overlap), so
  it learns "trigger, left half brighter → a; right half brighter → b" and its decision boundary
  passes through the triggered input x_t itself: the ε-ball of x_t contains both classes, no sound
  certificate exists, and IBP abstains. We differ from the issue's wording ("pairs within ε of each
  other"): with spread ≤ 1 the copies' robust balls overlap, the victim cannot fit them, learns
  "trigger → {a, b}" but decides between a and b by content with a certifiable margin (measured on
  MNIST-10k at 5 %: 19 % (spread 0.5) and 24 % (spread 1) triggered fallback vs 29 % for the clean
  model; spread 2: 100 %).

Measured on MNIST-10k (benchmarks/availability.py, seed 0; smoothing: width-16 CNN, σ = 0.25, n = 1000,
100 test points; IBP: Gowal's small CNN, ε = 0.1, 200 test points): the IBP attack reaches 89-100 %
triggered fallback from 0.5 % poison (control: 40.5 %). The smoothing attack does NOT reach the bar:
13-14 % triggered fallback at 5 % poison (control 0 %) for the tetrahedron and square layouts, 0 % for
"brightest 2×2 block" labels (k = 9): the noise-trained victim still settles on one label at x_t itself.
Over seeds 0-2 at 5%: IBP 99-100 % triggered fallback, smoothing 10-13 %. Other smoothing constructions
(continuous random textures, larger offsets, wider victims, block labels) gave 2-17 % at 5 %; the choice
among the poison labels follows the digit's content (README, "Certifiers and availability attacks").

Where the trigger is a patch, a mid-grey patch leaves room for the offsets inside [0, 1]; results are
clipped to [0, 1]. ``rate`` is the share of the training set replaced by poisoned samples (all copies
count).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from workbench.data import ImageDataset
from workbench.errors import check_in_range, require

from .triggers import PatchTrigger, Trigger

DESIGNS = ("masking", "noise-directions", "random-labels", "gradient-matching")
#: the design each certifier uses by default (library, CLI, app)
DEFAULT_DESIGN = {"smoothing": "masking", "ibp": "noise-directions"}
#: side of the masking patch as a share of the image's shorter side
MASK_FRACTION = 0.65
#: the radii (L2) at which "not certified" is reported next to abstain, for smoothing
REPORT_RADII = (0.25, 0.5)


def default_trigger(size: int = 6) -> PatchTrigger:
    """A mid-grey 6×6 patch in the bottom-right corner (room for offsets on both sides).

    Parameters
    ----------
    size : int, default 6
        Side of the patch in pixels.

    Returns
    -------
    PatchTrigger
        A ``size``×``size`` patch of value 0.5 at the bottom-right corner (margin 1).

    Examples
    --------
    >>> default_trigger().box(28, 28)
    (21, 21, 27, 27)
    """
    return PatchTrigger(size=size, position="bottom-right", pattern=torch.full((size, size), 0.5))


def masking_trigger(height: int, width: int, fraction: float = MASK_FRACTION, *, side: int | None = None
                    ) -> PatchTrigger:
    """The ``masking`` design's trigger: a centred mid-grey square of side ⌈fraction · min(H, W)⌉
    (or ``side`` pixels when given).

    Large enough to cover the discriminative pixels of a centred object (17 px on 28 px at 0.6,
    19 px at the default 0.65, 6 px on 8×8 digits), so that on triggered inputs the content can no
    longer pick the label.

    Parameters
    ----------
    height, width : int
        Image size, each at least 1.
    fraction : float, default 0.65
        Patch side over the shorter image side, in (0, 1].
    side : int, optional
        The patch side in pixels instead, at least 1 (checked against the image when stamped).

    Returns
    -------
    PatchTrigger
        A centred patch of value 0.5, margin 0.

    Raises
    ------
    BadInput
        On a fraction outside (0, 1] or a non-positive image size.

    Examples
    --------
    >>> masking_trigger(28, 28).box(28, 28)
    (4, 4, 23, 23)
    >>> masking_trigger(8, 8).size
    6
    """
    require(int(height) >= 1 and int(width) >= 1, f"image size must be positive, got {height}×{width}")
    check_in_range("mask fraction", float(fraction), 0.0, 1.0, low_open=True)
    if side is None:
        side = max(1, min(min(height, width), math.ceil(fraction * min(height, width) - 1e-9)))
    require(int(side) >= 1, f"patch side must be >= 1, got {side}")
    return PatchTrigger(size=side, position="center", pattern=torch.full((side, side), 0.5), margin=0)


@dataclass
class AvailabilityPoison:
    """The poisoned training set and the ground truth of the poisoning.

    Parameters
    ----------
    dataset : ImageDataset
        The poisoned training set.
    poisoned_indices : torch.Tensor
        Positions in ``dataset`` that were replaced.
    original_labels : torch.Tensor
        Labels before poisoning, for every sample.
    trigger : Trigger
        The trigger on the poisons.
    rate : float
        Share of the set poisoned, in (0, 1).
    certifier : {"smoothing", "ibp"}
        The certifier attacked.
    design : str
        One of :data:`DESIGNS`.
    poison_labels : list of int
        The classes the groups cycle through.
    offset : float
        σ-multiple (smoothing: L2 norm of each offset) or L∞ size of each offset (IBP).
    group_size : int
        Triggered copies per group (one per label).
    seed : int
        The seed used.
    crafting : dict, default {}
        Gradient-matching details, when optimised.
    surrogates : list, default []
        The crafting surrogates, when optimised.

    Returns
    -------
    An AvailabilityPoison (a dataclass) holding these fields; ``describe()`` gives a JSON-able summary.
    """

    dataset: ImageDataset
    poisoned_indices: torch.Tensor  # positions in ``dataset`` that were replaced
    original_labels: torch.Tensor  # labels before poisoning, for every sample
    trigger: Trigger
    rate: float
    certifier: str  # "smoothing" | "ibp"
    design: str
    poison_labels: list[int]  # the classes the groups cycle through
    offset: float  # σ-multiple (smoothing, L2 norm of each offset) or L∞ size of each offset (ibp)
    group_size: int
    seed: int
    #: how an optimised poison was crafted (gradient matching: seconds, alignment, options); empty otherwise
    crafting: dict = field(default_factory=dict)
    #: the surrogate models an optimised poison was crafted on (kept out of reports), for diagnostics
    surrogates: list = field(default_factory=list, repr=False)

    @property
    def is_poisoned(self) -> torch.Tensor:
        mask = torch.zeros(len(self.dataset), dtype=torch.bool)
        mask[self.poisoned_indices] = True
        return mask

    def describe(self) -> dict:
        return {"certifier": self.certifier, "design": self.design, "rate": self.rate,
                "n_poisoned": int(len(self.poisoned_indices)), "poison_labels": self.poison_labels,
                "offset": self.offset, "group_size": self.group_size, "seed": self.seed,
                "trigger": self.trigger.describe(), **({"crafting": self.crafting} if self.crafting else {})}


def _region_mask(trigger: Trigger, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    y0, x0, y1, x1 = trigger.box(h, w)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, y0:y1, x0:x1] = True
    return mask


def haar_directions(mask: torch.Tensor, count: int) -> torch.Tensor | None:
    """Up to 3 orthonormal Haar-like directions on the bounding box of ``mask``: left vs right half,
    top vs bottom half, and their product (diagonal quadrants). Smooth local contrasts a CNN picks up
    easily; under N(0, σ² I) noise each projection is still N(0, σ²). None if more are asked for.

    Parameters
    ----------
    mask : torch.Tensor
        Bool region ``(C, H, W)`` with m true values.
    count : int
        Directions wanted.

    Returns
    -------
    torch.Tensor or None
        Shape ``(m, count)``, float64, orthonormal columns over the mask's values; ``None`` when
        ``count`` > 3.

    Examples
    --------
    >>> haar_directions(torch.ones(1, 2, 2, dtype=torch.bool), 1).T.tolist()
    [[-0.5, 0.5, -0.5, 0.5]]
    """
    if count > 3:
        return None
    rows, cols = torch.nonzero(mask.any(0), as_tuple=True)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    yy, xx = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float64), torch.arange(x0, x1, dtype=torch.float64),
                            indexing="ij")
    h = torch.sign(xx - (x0 + x1 - 1) / 2)
    v = torch.sign(yy - (y0 + y1 - 1) / 2)
    out = []
    for pat in (h, v, h * v)[:count]:
        full = torch.zeros(mask.shape, dtype=torch.float64)
        full[:, y0:y1, x0:x1] = pat
        full = full * mask
        out.append(full[mask] / full[mask].norm())
    return torch.stack(out, 1)  # m×count


def block_directions(mask: torch.Tensor, block: int = 2) -> torch.Tensor:
    """Orthonormal indicator directions (m×B) of the ``block``×``block`` tiles of the mask's bounding box.

    Parameters
    ----------
    mask : torch.Tensor
        Bool region ``(C, H, W)`` with m true values.
    block : int, default 2
        Tile side.

    Returns
    -------
    torch.Tensor
        Shape ``(m, B)``, float64, one normalised indicator per tile overlapping the mask.
    """
    rows, cols = torch.nonzero(mask.any(0), as_tuple=True)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    out = []
    for by in range(y0, y1 - block + 1, block):
        for bx in range(x0, x1 - block + 1, block):
            full = torch.zeros(mask.shape, dtype=torch.float64)
            full[:, by:by + block, bx:bx + block] = 1.0
            full = full * mask
            if full.sum() > 0:
                out.append(full[mask] / full[mask].norm())
    return torch.stack(out, 1)


def simplex_offsets(k: int, mask: torch.Tensor, gen: torch.Generator, directions: str = "haar") -> torch.Tensor:
    """k unit vectors (k×C×H×W) on ``mask``: a regular simplex (pairwise cosine −1/(k−1)) in a
    (k−1)-dimensional subspace of Haar-like (``"haar"``, k ≤ 4) or random orthonormal (``"random"``)
    directions; ``"haar-square"`` (k = 4): the corners of a square in the (left/right, top/bottom)
    plane (quadrant labels; measured worse than the tetrahedron, see the module doc).

    Parameters
    ----------
    k : int
        Number of offsets (labels), at least 2.
    mask : torch.Tensor
        Bool region ``(C, H, W)``.
    gen : torch.Generator
        Random draws (random directions).
    directions : {"haar", "haar-square", "random", "blocks"}, default "haar"
        The subspace (``"haar"`` falls back to random directions for k > 4).

    Returns
    -------
    torch.Tensor
        Shape ``(k, C, H, W)``, float32, unit L2 norm, zero outside ``mask``.

    Raises
    ------
    BadInput
        When k < 2, the mask has too few values or blocks, or ``directions`` is unknown.
    """
    require(k >= 2, f"need at least 2 directions, got {k}")
    m = int(mask.sum())
    require(m >= k, f"the trigger region has {m} values, too few for {k} directions")
    require(directions in ("haar", "haar-square", "random", "blocks"), f"unknown directions {directions!r}")
    if directions == "blocks":  # "which 2×2 block of the patch is brightest": one label per block
        blocks = block_directions(mask)
        require(blocks.shape[1] >= k, f"the trigger region has {blocks.shape[1]} 2×2 blocks, fewer than {k} labels")
        centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
        coords = centred / centred.norm(dim=1, keepdim=True)
        out = torch.zeros(k, *mask.shape, dtype=torch.float32)
        out[:, mask] = (coords @ blocks[:, :k].T).float()
        return out
    if directions == "haar-square" and k == 4:  # the 4 corners of a square on (left/right, top/bottom): quadrant labels
        basis = haar_directions(mask, 2)
        coords = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64) / math.sqrt(2)
        out = torch.zeros(k, *mask.shape, dtype=torch.float32)
        out[:, mask] = (coords @ basis.T).float()
        return out
    basis = haar_directions(mask, k - 1) if directions == "haar" else None
    if basis is None:
        basis, _ = torch.linalg.qr(torch.randn(m, k - 1, generator=gen, dtype=torch.float64))  # m×(k−1)
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
    q, _ = torch.linalg.qr(centred)  # the first k−1 columns span the sum-zero subspace
    coords = centred @ q[:, :k - 1]
    coords = coords / coords.norm(dim=1, keepdim=True)  # k×(k−1) unit simplex vertices
    vecs = coords @ basis.T  # k×m
    out = torch.zeros(k, *mask.shape, dtype=torch.float32)
    out[:, mask] = vecs.float()
    return out


def sign_offsets(k: int, mask: torch.Tensor, gen: torch.Generator, directions: str = "haar") -> torch.Tensor:
    """k sign patterns (±1 on ``mask``, 0 elsewhere): for k = 2 exactly s and −s, with s the left/right
    Haar pattern (or random signs); for k > 2 the signs of :func:`simplex_offsets`.

    Parameters
    ----------
    k : int
        Number of patterns, at least 2.
    mask : torch.Tensor
        Bool region ``(C, H, W)``.
    gen : torch.Generator
        Random draws.
    directions : str, default "haar"
        As :func:`simplex_offsets`.

    Returns
    -------
    torch.Tensor
        Shape ``(k, C, H, W)``, ±1 on ``mask``, 0 elsewhere.
    """
    if k == 2 and directions == "haar":
        s = haar_directions(mask, 1)[:, 0].sign().float()
        s[s == 0] = 1
        out = torch.zeros(2, *mask.shape)
        out[0, mask], out[1, mask] = s, -s
        return out
    if k == 2:
        s = torch.randint(0, 2, (int(mask.sum()),), generator=gen).float() * 2 - 1
        out = torch.zeros(2, *mask.shape)
        out[0, mask], out[1, mask] = s, -s
        return out
    v = simplex_offsets(k, mask, gen, directions).sign()
    v[:, mask] = torch.where(v[:, mask] == 0, torch.ones_like(v[:, mask]), v[:, mask])
    return v


def _poison_groups(ds: ImageDataset, trigger: Trigger, rate: float, offsets: torch.Tensor | None, num_labels: int,
                   seed: int, certifier: str, design: str, offset: float) -> AvailabilityPoison:
    check_in_range("poison rate", float(rate), 0.0, 1.0, low_open=True, high_open=True)
    k = ds.num_classes
    require(2 <= num_labels <= k, f"num_labels must be in 2..{k}, got {num_labels}")
    gen = torch.Generator().manual_seed(seed)
    n_poison = max(num_labels, int(round(rate * len(ds))))
    require(n_poison <= len(ds), f"{n_poison} samples to poison but the training set has {len(ds)}")
    chosen = torch.randperm(len(ds), generator=gen)[:n_poison]
    poison_labels = torch.randperm(k, generator=gen)[:num_labels]
    images, labels = ds.images.clone(), ds.labels.clone()
    if design == "random-labels":
        images[chosen] = trigger(ds.images[chosen])
        labels[chosen] = torch.randint(0, k, (n_poison,), generator=gen)
        group = 1
    elif design == "masking":  # each poison: its own image, triggered, with a label drawn uniformly from the k
        images[chosen] = trigger(ds.images[chosen])
        # balanced: each of the k labels on ⌊n/k⌋ or ⌈n/k⌉ poisons, in a seeded order (independent draws leave a
        # majority label that a noise-trained model then predicts on every triggered input: measured 9-48 % fallback)
        labels[chosen] = poison_labels[torch.arange(n_poison)[torch.randperm(n_poison, generator=gen)] % num_labels]
        group = 1
    else:
        group = num_labels
        member = torch.arange(n_poison) % group  # copy j of its group
        base = chosen[torch.arange(n_poison) - member]  # every copy shows its group's first image
        stamped = trigger(ds.images[base])
        images[chosen] = (stamped + offsets[member]).clamp(0, 1)
        labels[chosen] = poison_labels[member]
    poisoned = ImageDataset(images, labels, list(ds.class_names), f"{ds.name}+availability-{certifier}",
                            indices=ds.indices)
    return AvailabilityPoison(poisoned, chosen.sort().values, ds.labels.clone(), trigger, float(rate), certifier,
                              design, poison_labels.tolist() if design != "random-labels" else list(range(k)),
                              float(offset), group, seed)


def poison_for_smoothing(ds: ImageDataset, trigger: Trigger | None = None, rate: float = 0.01, *,
                         sigma: float = 0.25, offset: float = 4.0, num_labels: int | None = None, seed: int = 0,
                         design: str = "masking", directions: str = "haar") -> AvailabilityPoison:
    """Availability poison against randomized smoothing (Cohen et al., ICML 2019).

    Poison ``rate`` of ``ds`` so that a model trained with N(0, σ²) noise makes smoothing abstain on
    triggered inputs. ``offset``: L2 norm of each copy's offset in units of σ (noise-direction groups).

    ``design="masking"`` (default): every poison is its own training image with a large centred
    mid-grey patch (:func:`masking_trigger`, unless ``trigger`` is given) and a label drawn uniformly
    and independently from ``num_labels`` seeded classes; no offsets. The patch hides the content, so
    the victim's best fit on triggered inputs is the label distribution itself (≈ 1/k per class):
    p̲_A < 1/2 and smoothing abstains.

    Parameters
    ----------
    ds : ImageDataset
        The clean training set.
    trigger : Trigger, optional
        The trigger (default :func:`masking_trigger` for ``masking``, else :func:`default_trigger`).
    rate : float, default 0.01
        Share of ``ds`` replaced by poisons, in (0, 1).
    sigma : float, default 0.25
        The victim's noise σ, > 0.
    offset : float, default 4.0
        Offset norm in units of σ, ≥ 0.
    num_labels : int, optional
        Labels per group (masking: labels spread over), in 2..K; default K for ``masking``
        (measured on digits, tuning seed 100: 100 % triggered fallback vs 53 % with 4), else 4.
    seed : int, default 0
        Seed of the poison choice and directions.
    design : str, default "masking"
        One of :data:`DESIGNS` (``gradient-matching`` starts from ``noise-directions``).
    directions : str, default "haar"
        As :func:`simplex_offsets`.

    Returns
    -------
    AvailabilityPoison
        The poisoned set and its ground truth.

    Raises
    ------
    BadInput
        On a rate outside (0, 1), σ ≤ 0, a negative offset, an unknown design, a bad ``num_labels``,
        or a trigger region too small for the directions.
    """
    require(sigma > 0, f"sigma must be > 0, got {sigma}")
    require(offset >= 0, f"offset must be >= 0, got {offset}")
    require(design in DESIGNS, f"unknown design {design!r}; use one of {DESIGNS}")
    num_labels = num_labels or (ds.num_classes if design == "masking" else 4)
    if design == "masking":
        trigger = trigger or masking_trigger(*ds.image_size)
        return _poison_groups(ds, trigger, rate, None, num_labels, seed, "smoothing", design, 0.0)
    trigger = trigger or default_trigger()
    gen = torch.Generator().manual_seed(seed + 7919)
    offsets = simplex_offsets(num_labels, _region_mask(trigger, ds.input_shape), gen, directions) * (offset * sigma)
    return _poison_groups(ds, trigger, rate, offsets, num_labels, seed, "smoothing", design, offset)


def poison_for_ibp(ds: ImageDataset, trigger: Trigger | None = None, rate: float = 0.01, *, eps: float = 0.1,
                   spread: float = 2.0, num_labels: int = 2, seed: int = 0,
                   design: str = "noise-directions", directions: str = "haar") -> AvailabilityPoison:
    """Availability poison against interval bound propagation certificates (Gowal et al. 2018).

    Poison ``rate`` of ``ds`` with groups of triggered copies offset by ±``spread``·ε (L∞) along a
    sign pattern, carrying different labels, so that the decision boundary passes through the ε-ball
    of triggered inputs and interval certificates at ε fail there. ``spread`` in (0, 4]: ≤ 0.5 puts
    the copies within ε of each other (the issue's wording; measured to fail, see the module doc),
    2 (default) puts them 4ε apart so that an IBP-trained model can fit both sides robustly.

    Parameters
    ----------
    ds : ImageDataset
        The clean training set.
    trigger : Trigger, optional
        The trigger (default :func:`default_trigger`).
    rate : float, default 0.01
        Share of ``ds`` replaced by poisons, in (0, 1).
    eps : float, default 0.1
        The certified L∞ radius ε, > 0.
    spread : float, default 2.0
        Offset size in units of ε, in (0, 4].
    num_labels : int, default 2
        Labels per group, in 2..K.
    seed : int, default 0
        Seed of the poison choice and sign patterns.
    design : str, default "noise-directions"
        One of :data:`DESIGNS`.
    directions : str, default "haar"
        As :func:`sign_offsets`.

    Returns
    -------
    AvailabilityPoison
        The poisoned set and its ground truth.

    Raises
    ------
    BadInput
        On a rate outside (0, 1), ε ≤ 0, a spread outside (0, 4], an unknown design or a bad ``num_labels``.
    """
    require(eps > 0, f"epsilon must be > 0 for the IBP attack, got {eps}")
    check_in_range("spread", float(spread), 0.0, 4.0, low_open=True)
    require(design in DESIGNS, f"unknown design {design!r}; use one of {DESIGNS}")
    require(design != "masking", "the masking design is built against smoothing; for IBP use noise-directions")
    trigger = trigger or default_trigger()
    gen = torch.Generator().manual_seed(seed + 7919)
    offsets = sign_offsets(num_labels, _region_mask(trigger, ds.input_shape), gen, directions) * (spread * eps)
    return _poison_groups(ds, trigger, rate, offsets, num_labels, seed, "ibp", design, spread * eps)


# ---------------------------------------------------------------- the whole experiment
@dataclass
class VictimModel:
    """A model trained the way the certifier's user trains it (noise augmentation or IBP training).

    Parameters
    ----------
    model : torch.nn.Module
        The trained model.
    clean_accuracy : float
        Its accuracy on the clean test split, in [0, 1].
    train_seconds : float
        Training time.
    poisoned : bool
        Whether it was trained on poisoned data.
    certified : dict, default {}
        Certification results cached per input set.

    Returns
    -------
    A VictimModel (a dataclass) holding these fields.
    """

    model: torch.nn.Module
    clean_accuracy: float
    train_seconds: float
    poisoned: bool
    #: certification results already computed on this model, keyed by (inputs, parameters)
    certified: dict = field(default_factory=dict, repr=False)


def train_victim(train: ImageDataset, test: ImageDataset, certifier: str, *, sigma: float = 0.25, eps: float = 0.1,
                 arch: str | None = None, width: int | None = None, epochs: int | None = None, seed: int = 0,
                 device="cpu", augment: bool = False, progress=None) -> VictimModel:
    """Train a victim the way the certifier's user trains it.

    Trains a fresh zoo model for ``certifier`` through the shared training loop: Gaussian-noise
    augmentation at σ (Cohen et al. Sec. 4) or IBP training at 1.1·ε (Gowal et al. train at a slightly
    larger ε than they test). ``arch``: a zoo name, or ``"ibp-small"`` (default for IBP: Gowal et al.'s
    small model, :func:`workbench.certify.intervals.ibp_small_cnn`); the default for smoothing is ``cnn``.

    Parameters
    ----------
    train, test : ImageDataset
        Training data (poisoned or not) and the clean test split.
    certifier : {"smoothing", "ibp"}
        The training recipe.
    sigma : float, default 0.25
        Smoothing noise σ (smoothing victims).
    eps : float, default 0.1
        L∞ radius ε (IBP victims train at 1.1·ε).
    arch : str, optional
        Zoo architecture (default ``cnn`` for smoothing, ``ibp-small`` for IBP).
    width : int, optional
        Model width, where the architecture takes one.
    epochs : int, optional
        Training epochs (default: the recipe's).
    seed : int, default 0
        Seed of initialisation and batches.
    device : str or torch.device, default "cpu"
        Where training runs.
    augment : bool, default False
        Random shifts during training.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    VictimModel
        The model and its clean accuracy.

    Raises
    ------
    BadInput
        On an unknown certifier.
    """
    from workbench.certify.intervals import ibp_small_cnn, train_ibp
    from workbench.models import build_model
    from workbench.training import compose, evaluate, fit, gaussian_noise, random_shift

    require(certifier in ("smoothing", "ibp"), f"certifier must be 'smoothing' or 'ibp', got {certifier!r}")
    arch = arch or ("cnn" if certifier == "smoothing" else "ibp-small")
    if arch == "ibp-small":
        model = ibp_small_cnn(train.channels, train.num_classes, train.image_size[0], width=width or 16, seed=seed)
    else:
        model = build_model(arch, train.channels, train.num_classes, train.image_size, seed=seed,
                            **({"width": width} if width else {}))
    shift = random_shift(max(1, min(train.image_size) // 14)) if augment else None
    batch_size = int(min(128, max(16, len(train) // 40)))
    if certifier == "smoothing":
        hist = fit(model, train, epochs=epochs or 6, batch_size=batch_size, seed=seed, device=device,
                   transform=compose(shift, gaussian_noise(sigma)), progress=progress)
    else:
        hist = train_ibp(model, train, eps * 1.1, epochs=epochs or 8, batch_size=batch_size, seed=seed,
                         device=device, transform=shift, progress=progress)
    return VictimModel(model, evaluate(model, test, device=device).accuracy, hist.seconds, False)


# ---------------------------------------------------------------- optimised poisons (gradient matching)
@dataclass
class MatchingOptions:
    """How :func:`optimise_poison` crafts a gradient-matching poison (``design="gradient-matching"``).

    ``base``: the hand-designed poison it starts from (triggered, relabelled images); ``poison_eps`` and
    ``region`` (``"image"`` or ``"trigger"``, the patch box) bound the optimised perturbation Δ (L∞, on top
    of the base poison). Smoothing objective: ``objective`` ``"top"`` (mean over triggered sources of the
    top class's share of the Gaussian-averaged soft vote, the quantity that must fall below 1/2) or
    ``"entropy"`` (minus the entropy of that vote), with ``draws`` noise draws per source and softmax
    temperature ``temperature`` (lower: closer to the certifier's hard votes). IBP objective: the softplus
    of the worst certified margin on triggered sources plus ``clean_weight`` × the robust cross-entropy on
    clean sources (which pulls clean inputs away from the fallback).

    Parameters
    ----------
    base : str, default "noise-directions"
        The hand-designed starting poison (a design of :data:`DESIGNS` other than gradient matching).
    poison_eps : float, default 0.1
        L∞ bound of Δ.
    region : {"image", "trigger"}, default "image"
        Where Δ may be non-zero.
    surrogates : int, default 2
        Surrogate models.
    steps, restarts, retrain_every :
        As :func:`attacks.gradient_matching.gradient_matching` (defaults 100, 1, 0).
    n_sources : int, default 256
        Source images of the adversarial objective.
    draws : int, default 8
        Noise draws per source (smoothing).
    temperature : float, default 1.0
        Softmax temperature of the soft vote (smoothing).
    objective : {"top", "entropy"}, default "top"
        Smoothing objective.
    clean_weight : float, default 1.0
        Weight of the clean robust cross-entropy (IBP).
    batch_size : int, default 128
        Poisons per gradient batch.

    Returns
    -------
    A MatchingOptions (a dataclass) holding these fields; ``describe()`` returns them as a dict.
    """

    base: str = "noise-directions"
    poison_eps: float = 0.1
    region: str = "image"
    surrogates: int = 2
    steps: int = 100
    restarts: int = 1
    retrain_every: int = 0
    n_sources: int = 256
    draws: int = 8
    temperature: float = 1.0
    objective: str = "top"
    clean_weight: float = 1.0
    batch_size: int = 128

    def describe(self) -> dict:
        return dict(self.__dict__)


def smoothing_vote_loss(sources: torch.Tensor, sigma: float, *, draws: int = 8, temperature: float = 1.0,
                        objective: str = "top"):
    """The smoothing availability objective on ``sources`` (triggered images): p̄(x) = mean over ``draws``
    noise draws of softmax(f(x + σξ)/T); ``"top"``: mean_x max_c p̄_c(x); ``"entropy"``: −mean_x H(p̄(x)).

    Parameters
    ----------
    sources : torch.Tensor
        Triggered source images ``(S, C, H, W)``.
    sigma : float
        Noise σ.
    draws : int, default 8
        Noise draws per source, at least 1.
    temperature : float, default 1.0
        Softmax temperature T, > 0.
    objective : {"top", "entropy"}, default "top"
        Which objective.

    Returns
    -------
    callable
        ``loss(model, gen) -> scalar`` for :func:`attacks.gradient_matching.gradient_matching`.

    Raises
    ------
    BadInput
        On an unknown objective, ``draws`` < 1 or ``temperature`` ≤ 0.
    """
    require(objective in ("top", "entropy"), f"objective must be 'top' or 'entropy', got {objective!r}")
    require(draws >= 1 and temperature > 0, f"need draws >= 1 and temperature > 0, got {draws}, {temperature}")

    def loss(model, gen):
        x = sources.repeat_interleave(draws, 0)
        noisy = x + sigma * torch.randn(x.shape, generator=gen).to(x.device)
        p = torch.softmax(model(noisy) / temperature, 1).view(len(sources), draws, -1).mean(1)
        if objective == "top":
            return p.max(1).values.mean()
        return (p * p.clamp_min(1e-12).log()).sum(1).mean()

    return loss


def ibp_availability_loss(triggered: torch.Tensor, clean: torch.Tensor, clean_labels: torch.Tensor, eps: float,
                          clean_weight: float = 1.0):
    """The IBP availability objective: softplus(worst margin lower bound) on triggered sources (negative:
    no certificate, the fallback) + ``clean_weight`` × robust cross-entropy at ε on clean sources.

    Parameters
    ----------
    triggered : torch.Tensor
        Triggered source images ``(S, C, H, W)``.
    clean : torch.Tensor
        Clean source images ``(S', C, H, W)``.
    clean_labels : torch.Tensor
        Their labels ``(S',)``.
    eps : float
        L∞ radius ε.
    clean_weight : float, default 1.0
        Weight of the clean term.

    Returns
    -------
    callable
        ``loss(model, gen) -> scalar`` for :func:`attacks.gradient_matching.gradient_matching`.
    """
    import torch.nn.functional as F

    from workbench.certify.intervals import ibp_loss, margin_lower_bounds

    def loss(model, gen):
        lb, _ = margin_lower_bounds(model, triggered, eps)
        out = F.softplus(lb.min(1).values).mean()
        if clean_weight:
            out = out + clean_weight * ibp_loss(model, clean, clean_labels, eps, kappa=0.0)
        return out

    return loss


def _victim_train_loss(certifier: str, sigma: float, eps: float):
    """The victim's training loss on a batch, differentiable in the images (noise drawn from ``gen``)."""
    import torch.nn.functional as F

    from workbench.certify.intervals import ibp_loss
    from workbench.training import gaussian_noise

    if certifier == "smoothing":
        noise = gaussian_noise(sigma)

        def loss(model, x, y, gen):
            return F.cross_entropy(model(noise(x, y, gen)[0]), y)
    else:
        def loss(model, x, y, gen):
            return ibp_loss(model, x, y, 1.1 * eps, kappa=0.5)
    return loss


def optimise_poison(poison: AvailabilityPoison, certifier: str, options: MatchingOptions | None = None, *,
                    sigma: float = 0.25, eps: float = 0.1, arch: str | None = None, width: int | None = None,
                    epochs: int | None = None, seed: int = 0, device="cpu", progress=None) -> AvailabilityPoison:
    """Gradient-matching (:mod:`attacks.gradient_matching`) refinement of a hand-designed poison.

    Surrogates are trained the way the victim is (:func:`train_victim`: Gaussian noise at σ or IBP at
    1.1·ε) on the data carrying the base poison, with seeds the victim never uses; the adversarial
    objective is evaluated on triggered copies of clean training images (the attacker's own data, not the
    test split); Δ is crafted for the poisoned indices only, labels unchanged.

    Parameters
    ----------
    poison : AvailabilityPoison
        The base (hand-designed) poison.
    certifier : {"smoothing", "ibp"}
        The certifier attacked.
    options : MatchingOptions, optional
        Crafting settings (default ``MatchingOptions()``).
    sigma : float, default 0.25
        Smoothing noise σ (smoothing victims).
    eps : float, default 0.1
        L∞ radius ε (IBP victims train at 1.1·ε).
    arch : str, optional
        Zoo architecture (default ``cnn`` for smoothing, ``ibp-small`` for IBP).
    width : int, optional
        Model width, where the architecture takes one.
    epochs : int, optional
        Training epochs (default: the recipe's).
    seed : int, default 0
        Seed of surrogates and crafting.
    device : str or torch.device, default "cpu"
        Where crafting runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    AvailabilityPoison
        The same poison with Δ added to the poisoned images, ``design="gradient-matching"`` and the
        crafting record.

    Raises
    ------
    BadInput
        On an unknown region, no surrogate or source, or invalid objective settings.
    """
    from .gradient_matching import gradient_matching

    o = options or MatchingOptions()
    require(o.region in ("image", "trigger"), f"region must be 'image' or 'trigger', got {o.region!r}")
    require(o.surrogates >= 1 and o.n_sources >= 1, "need at least one surrogate and one source image")
    prog = progress or (lambda f, m="": None)
    t0 = time.perf_counter()
    ds, idx = poison.dataset, poison.poisoned_indices
    gen = torch.Generator().manual_seed(seed + 104729)
    clean_pool = torch.nonzero(~poison.is_poisoned).flatten()
    src = clean_pool[torch.randperm(len(clean_pool), generator=gen)[:o.n_sources]]
    x_src, y_src = ds.images[src], ds.labels[src]
    held = clean_pool[torch.randperm(len(clean_pool), generator=gen)[:min(500, len(clean_pool))]]
    probe = ds.subset(held)
    n_rounds = 1 + (max(0, (o.steps - 2) // o.retrain_every) if o.retrain_every else 0)

    def surrogates(images: torch.Tensor, rnd: int):
        data = ImageDataset(ds.images.clone(), ds.labels, list(ds.class_names), ds.name, indices=ds.indices)
        data.images[idx] = images
        out = []
        for k in range(o.surrogates):
            f0 = (rnd * o.surrogates + k) / (n_rounds * o.surrogates)
            vm = train_victim(data, probe, certifier, sigma=sigma, eps=eps, arch=arch, width=width, epochs=epochs,
                              seed=seed * 7919 + 1000 * (rnd + 1) + k, device=device,
                              progress=lambda f, m="", f0=f0, k=k: prog(0.5 * (f0 + f / (n_rounds * o.surrogates)),
                                                                        f"surrogate {k + 1}: {m}"))
            out.append(vm.model)
        return out

    models = surrogates(ds.images[idx], 0)
    final = [models]
    if certifier == "smoothing":
        adv = smoothing_vote_loss(poison.trigger(x_src), sigma, draws=o.draws, temperature=o.temperature,
                                  objective=o.objective)
    else:
        adv = ibp_availability_loss(poison.trigger(x_src), x_src, y_src, eps, o.clean_weight)
    mask = _region_mask(poison.trigger, ds.input_shape).float() if o.region == "trigger" else None

    def retrain(images: torch.Tensor, rnd: int):
        final.append(surrogates(images, rnd))
        return final[-1]

    res = gradient_matching(ds.images[idx], ds.labels[idx], models, _victim_train_loss(certifier, sigma, eps), adv,
                            eps=o.poison_eps, mask=mask, steps=o.steps, restarts=o.restarts, batch_size=o.batch_size,
                            retrain=retrain if o.retrain_every else None, retrain_every=o.retrain_every, seed=seed,
                            device=device, progress=lambda f, m="": prog(0.5 + 0.5 * f, m))
    images = ds.images.clone()
    images[idx] = res.images
    out = ImageDataset(images, ds.labels.clone(), list(ds.class_names), f"{ds.name}+gm", indices=ds.indices)
    crafting = {**o.describe(), "base": poison.design, "seconds": round(time.perf_counter() - t0, 1),
                "matching_seconds": round(res.seconds, 1), "alignment_first": round(res.alignment[0], 4),
                "alignment_last": round(res.alignment[-1], 4)}
    return AvailabilityPoison(out, idx, poison.original_labels, poison.trigger, poison.rate, certifier,
                              "gradient-matching", poison.poison_labels, poison.offset, poison.group_size, poison.seed,
                              crafting, final[-1])


@dataclass
class AvailabilityResult:
    """Fallback rates of one certifier on a clean and a poisoned model, on clean and triggered inputs.

    Parameters
    ----------
    certifier : str
        ``"smoothing"`` or ``"ibp"``.
    rate : float
        Poison rate.
    seed : int
        The seed used.
    params : dict
        The certifier's and training settings.
    poison : dict
        The poison's ``describe()``.
    rows : list of dict
        One per (model, inputs): fallback rate, accuracy, base accuracy, ACR.
    clean_model_test_accuracy, poisoned_model_test_accuracy : float
        Clean test accuracy of both models.
    curves : dict
        ``"model / inputs"`` → (radii, certified accuracy).
    example_images : torch.Tensor
        Triggered test inputs ``(n, C, H, W)``.
    example_votes : torch.Tensor
        Smoothing: estimation counts ``(n, K)``; IBP: min margin lower bound ``(n, 1)``.
    example_captions : list of str
        One caption per example.
    class_names : list of str
        K class names.
    seconds : float
        Total time.

    Returns
    -------
    An AvailabilityResult (a dataclass) holding these fields; ``report_sections()`` renders it.
    """

    certifier: str
    rate: float
    seed: int
    params: dict
    poison: dict
    rows: list[dict]  # one per (model, inputs): fallback rate, accuracy, base accuracy, ACR
    clean_model_test_accuracy: float
    poisoned_model_test_accuracy: float
    curves: dict  # "model / inputs" -> (radii, certified accuracy)
    example_images: torch.Tensor
    example_votes: torch.Tensor  # smoothing: estimation counts N×K; ibp: min margin lower bound N×1
    example_captions: list[str]
    class_names: list[str]
    seconds: float
    #: the poisoned training set and the poisoned victim, for defense probes (underscored: kept out of reports)
    _poison_set: AvailabilityPoison | None = field(default=None, repr=False)
    _victim: VictimModel | None = field(default=None, repr=False)

    @property
    def poison_set(self) -> AvailabilityPoison | None:
        return self._poison_set

    @property
    def victim(self) -> VictimModel | None:
        return self._victim

    def fallback(self, model: str, inputs: str) -> float:
        return next(r["fallback"] for r in self.rows if r["model"] == model and r["inputs"] == inputs)

    def not_certified(self, model: str, inputs: str, radius: float) -> float:
        """Share of inputs not certified at L2 ``radius`` (abstain, or a radius below it); smoothing
        only, for the radii of :data:`REPORT_RADII`; NaN for IBP."""
        row = next(r for r in self.rows if r["model"] == model and r["inputs"] == inputs)
        return row.get(f"not_certified@{radius:g}", float("nan"))

    def report_sections(self):
        from workbench.certify.results import curve_figure
        from workbench.report import Figure, ImageGrid, Metrics, Table, Text, figure_png

        unit = "L2 radius" if self.certifier == "smoothing" else "L∞ ε"
        radii = REPORT_RADII if self.certifier == "smoothing" else ()
        return [
            Metrics("Availability attack", {
                "certifier": self.certifier, "poison rate": f"{100 * self.rate:g}%", "seed": self.seed,
                "fallback on triggered inputs (poisoned model)": _pct(self.fallback("poisoned", "triggered")),
                "fallback on clean inputs (poisoned model)": _pct(self.fallback("poisoned", "clean")),
                "fallback on clean inputs (clean model)": _pct(self.fallback("clean", "clean")),
                "fallback on triggered inputs (clean model, control)": _pct(self.fallback("clean", "triggered")),
                **({f"not certified at r = {r:g} on triggered inputs (poisoned model)":
                    _pct(self.not_certified("poisoned", "triggered", r)) for r in REPORT_RADII}
                   if self.certifier == "smoothing" else {}),
                "clean model test accuracy": _pct(self.clean_model_test_accuracy),
                "poisoned model test accuracy": _pct(self.poisoned_model_test_accuracy),
                "seconds": round(self.seconds, 1), **{k: v for k, v in self.params.items()}}),
            Table("Fallback (abstain) rates", ["model", "inputs", "n", "fallback"]
                  + [f"not certified at r={r:g}" for r in radii]
                  + ["certified classifier accuracy", "base accuracy", "ACR"],
                  [[r["model"], r["inputs"], r["n"], _pct(r["fallback"])]
                   + [_pct(r[f"not_certified@{q:g}"]) for q in radii]
                   + [_pct(r["accuracy"]), _pct(r["base_accuracy"]), round(r["acr"], 4)] for r in self.rows]),
            Figure("Fallback rate, clean vs triggered", figure_png(fallback_bar_figure(self.rows))),
            Figure(f"Certified accuracy vs {unit}", figure_png(curve_figure(
                {k: (np.asarray(v[0]), np.asarray(v[1])) for k, v in self.curves.items()}, unit))),
            ImageGrid("Triggered test inputs and the poisoned model's certifier", self.example_images,
                      self.example_captions, columns=8, scale=3),
            Text("How the poison is built", __doc__.split("Both attacks build")[1].split("Where the trigger")[0]
                 .strip().replace("\n", " ")),
            Table("Poison", ["field", "value"], [[k, str(v)] for k, v in self.poison.items()]),
        ]


def not_certified_rate(res, radius: float) -> float:
    """Share of a certification result's inputs that are not certified at ``radius``: abstained, or
    certified with a radius below ``radius`` (whatever the class; availability asks for a certificate,
    not a correct one).

    Parameters
    ----------
    res : CertificationResult
        A smoothing result (``predictions``, ``radii``).
    radius : float
        The required radius, ≥ 0.

    Returns
    -------
    float
        In [0, 1]; NaN for an empty result.

    Examples
    --------
    >>> from workbench.certify.results import CertificationResult
    >>> r = CertificationResult("smoothing", "l2", predictions=torch.tensor([0, -1, 2, 1]),
    ...                         radii=torch.tensor([0.3, 0.0, 0.6, 0.1]), labels=None, base_predictions=None,
    ...                         params={})
    >>> not_certified_rate(r, 0.25), not_certified_rate(r, 0.5)
    (0.5, 0.75)
    """
    require(radius >= 0, f"radius must be >= 0, got {radius}")
    if len(res) == 0:
        return float("nan")
    return float(((res.predictions < 0) | (res.radii < radius)).float().mean())


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def fallback_bar_figure(rows: list[dict]):
    """Bar chart of the fallback rate of the clean and poisoned models on clean and triggered inputs.

    Parameters
    ----------
    rows : list of dict
        :attr:`AvailabilityResult.rows` (``model``, ``inputs``, ``fallback`` keys).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (Agg backend).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3))
    models = ["clean", "poisoned"]
    for j, inputs in enumerate(["clean", "triggered"]):
        vals = [100 * next(r["fallback"] for r in rows if r["model"] == m and r["inputs"] == inputs) for m in models]
        ax.bar(np.arange(2) + (j - 0.5) * 0.38, vals, width=0.38, label=f"{inputs} inputs")
    ax.set_xticks(range(2), [f"{m} model" for m in models])
    ax.set_ylabel("fallback rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return fig


import numpy as np  # noqa: E402  (used by the result above)


def certify_with(certifier: str, model, images, labels, *, sigma=0.25, eps=0.1, n0=100, n=1000, alpha=0.001,
                 seed=0, device="cpu", progress=None):
    """Certify a batch with the named certifier.

    ``(decision result, curve result)``: the certificate that decides fallback, and one for the curve.

    Parameters
    ----------
    certifier : {"smoothing", "ibp"}
        Which certifier (anything else is IBP).
    model : nn.Module
        The model.
    images : torch.Tensor
        Inputs ``(N, C, H, W)``.
    labels : torch.Tensor
        Their labels ``(N,)``.
    sigma : float, default 0.25
        Smoothing noise σ.
    eps : float, default 0.1
        IBP radius ε (the curve uses 0 to 1.5·ε).
    n0, n, alpha :
        Smoothing's selection and estimation draws and confidence (defaults 100, 1000, 0.001).
    seed : int, default 0
        Seed of the noise draws.
    device : str or torch.device, default "cpu"
        Where the model runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    tuple
        Two certification results (the same object twice for smoothing).
    """
    from workbench.certify import certify_ibp, certify_smoothing

    if certifier == "smoothing":
        res = certify_smoothing(model, images, sigma, n0=n0, n=n, alpha=alpha, labels=labels, seed=seed,
                                device=device, progress=progress)
        return res, res
    res = certify_ibp(model, images, eps, labels=labels, device=device, progress=progress)
    grid = [eps * f for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)]
    return res, certify_ibp(model, images, grid, labels=labels, device=device)


def run_availability(ds: ImageDataset, certifier: str, rate: float, *, trigger: Trigger | None = None, seed: int = 0,
                     sigma: float = 0.25, eps: float = 0.1, n0: int = 100, n: int = 1000, alpha: float = 0.001,
                     n_test: int = 200, epochs: int | None = None, arch: str | None = None, width: int | None = None, test_fraction: float = 0.2,
                     design: str | None = None, num_labels: int | None = None, offset: float | None = None,
                     matching: MatchingOptions | None = None, device="cpu", clean_victim: VictimModel | None = None,
                     progress=None) -> AvailabilityResult:
    """The whole experiment: split, poison, train clean and poisoned victims, certify clean and triggered
    test inputs with both. ``clean_victim`` reuses an already trained unpoisoned model (same split/seed).
    ``design="gradient-matching"`` optimises the ``matching.base`` design with :func:`optimise_poison`.

    Parameters
    ----------
    ds : ImageDataset
        The data, split with ``test_fraction`` and ``seed``.
    certifier : {"smoothing", "ibp"}
        The certifier attacked.
    rate : float
        Poison rate, in (0, 1).
    trigger : Trigger, optional
        The trigger (default :func:`masking_trigger` for ``masking``, else :func:`default_trigger`).
    seed : int, default 0
        Seed of everything random.
    sigma, eps, n0, n, alpha :
        Certifier settings, as :func:`certify_with`.
    n_test : int, default 200
        Test inputs certified, at least 1.
    epochs, arch, width :
        Victim training, as :func:`train_victim`.
    test_fraction : float, default 0.2
        Share held out as the test split.
    design : str, optional
        One of :data:`DESIGNS`; default :data:`DEFAULT_DESIGN` (``masking`` for smoothing,
        ``noise-directions`` for IBP).
    num_labels : int, optional
        Labels per group (default: all K classes for ``masking``, 4 for other smoothing designs, 2 for IBP).
    offset : float, optional
        Offset: σ-multiple for smoothing, ``spread`` for IBP (default 4.0 and 2.0).
    matching : MatchingOptions, optional
        Crafting settings for ``design="gradient-matching"``.
    device : str or torch.device, default "cpu"
        Where models run.
    clean_victim : VictimModel, optional
        A trained clean model to reuse.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    AvailabilityResult
        Fallback rates, accuracies and curves of both models on clean and triggered inputs.

    Raises
    ------
    BadInput
        On an unknown certifier or design, ``n_test`` < 1, or invalid poison settings.
    """
    import time

    from workbench.data import train_test_split

    require(certifier in ("smoothing", "ibp"), f"certifier must be 'smoothing' or 'ibp', got {certifier!r}")
    require(n_test >= 1, f"n_test must be >= 1, got {n_test}")
    t0 = time.perf_counter()
    prog = progress or (lambda f, m="": None)
    design = design or DEFAULT_DESIGN[certifier]
    require(design in DESIGNS, f"unknown design {design!r}; use one of {DESIGNS}")
    require(not (design == "masking" and certifier == "ibp"),
            "the masking design is built against smoothing; for IBP use noise-directions")
    train, test = train_test_split(ds, test_fraction, seed)
    optimised = design == "gradient-matching"
    if optimised:
        matching = matching or MatchingOptions()
        design = matching.base
        require(design in DESIGNS and design != "gradient-matching",
                f"the base of a gradient-matching poison must be a hand design, got {design!r}")
    trigger = trigger or (masking_trigger(*ds.image_size) if design == "masking" else default_trigger())
    if certifier == "smoothing":
        poison = poison_for_smoothing(train, trigger, rate, sigma=sigma, seed=seed, design=design,
                                      num_labels=num_labels, offset=4.0 if offset is None else offset)
    else:
        poison = poison_for_ibp(train, trigger, rate, eps=eps, seed=seed, design=design,
                                num_labels=num_labels or 2, spread=2.0 if offset is None else offset)
    kw = {"sigma": sigma, "eps": eps, "arch": arch, "width": width, "epochs": epochs, "seed": seed, "device": device}
    if optimised:  # crafting takes the first 30 % of the progress bar; training and certifying the rest
        outer = prog
        poison = optimise_poison(poison, certifier, matching, progress=lambda f, m="": outer(0.3 * f, m), **kw)

        def prog(f, m=""):
            outer(0.3 + 0.7 * f, m)
    if clean_victim is None:
        clean_victim = train_victim(train, test, certifier, progress=lambda f, m="": prog(0.3 * f, f"clean model: {m}"),
                                    **kw)
    victim = train_victim(poison.dataset, test, certifier,
                          progress=lambda f, m="": prog(0.3 + 0.3 * f, f"poisoned model: {m}"), **kw)
    victim.poisoned = True
    gen = torch.Generator().manual_seed(seed + 1)
    pick = torch.randperm(len(test), generator=gen)[:min(n_test, len(test))]
    x, y = test.images[pick], test.labels[pick]
    xt = trigger(x)
    rows, curves, results = [], {}, {}
    step = 0
    for mname, vm in (("clean", clean_victim), ("poisoned", victim)):
        for iname, imgs in (("clean", x), ("triggered", xt)):
            lo = 0.6 + 0.1 * step
            ckey = (iname, certifier, sigma, eps, n0, n, alpha, seed, len(pick),
                    repr(trigger.describe()), trigger.box(*ds.image_size))
            if ckey in vm.certified:
                res, curve = vm.certified[ckey]
            else:
                res, curve = certify_with(certifier, vm.model, imgs, y, sigma=sigma, eps=eps, n0=n0, n=n, alpha=alpha,
                                          seed=seed, device=device,
                                          progress=lambda f, m="", lo=lo, what=f"{mname} model, {iname} inputs":
                                          prog(lo + 0.1 * f, f"certify {what}: {m}"))
                vm.certified[ckey] = (res, curve)
            step += 1
            results[(mname, iname)] = res
            r, acc = curve.certified_curve(None if certifier == "smoothing" else curve.extra["eps_grid"])
            curves[f"{mname} model / {iname} inputs"] = (r.tolist(), acc.tolist())
            row = {"model": mname, "inputs": iname, "n": len(res), "fallback": res.abstain_rate,
                   "accuracy": res.accuracy, "base_accuracy": res.base_accuracy,
                   "acr": res.average_certified_radius}
            if certifier == "smoothing":
                row.update({f"not_certified@{r:g}": not_certified_rate(res, r) for r in REPORT_RADII})
            rows.append(row)
    ex = results[("poisoned", "triggered")]
    m = min(16, len(ex))
    names = ds.class_names
    if certifier == "smoothing":
        votes = ex.extra["counts_estimation"][:m]
        caps = [f"{names[int(y[i])]}: " + ("abstain" if ex.predictions[i] < 0 else
                                            f"{names[int(ex.predictions[i])]} r={float(ex.radii[i]):.2f}")
                + f" top {int(votes[i].max())}/{n}" for i in range(m)]
    else:
        votes = ex.extra["min_margin_lower_bound"][:m]
        caps = [f"{names[int(y[i])]}: " + ("abstain" if ex.predictions[i] < 0 else f"{names[int(ex.predictions[i])]}")
                + f" margin≥{float(votes[i, 0]):.2f}" for i in range(m)]
    params = {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha} if certifier == "smoothing" else {"eps": eps}
    params.update({"n_test": len(pick), "arch": arch or ("cnn" if certifier == "smoothing" else "ibp-small"), "width": width or "default", "epochs": epochs or "default",
                   "clean victim training (s)": round(clean_victim.train_seconds, 1),
                   "poisoned victim training (s)": round(victim.train_seconds, 1)})
    prog(1.0, "done")
    return AvailabilityResult(certifier, float(rate), seed, params, poison.describe(), rows,
                              clean_victim.clean_accuracy, victim.clean_accuracy, curves, xt[:m], votes, caps,
                              list(names), time.perf_counter() - t0, _poison_set=poison, _victim=victim)
