"""Backdoor triggers: patch, blend and learned additive triggers, stamped on batches on any device.

Every trigger maps images N×C×H×W in [0, 1] to triggered images in [0, 1] and reports its bounding
box ``(y0, x0, y1, x1)`` (end-exclusive) on an H×W image: the ground truth of the saliency pointing
game. Shared by the backdoor attacks, the certifier availability attacks and the NAB defense.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.errors import BadInput, check_in_range, require

Box = tuple[int, int, int, int]
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


class Trigger:
    """Base class of backdoor triggers.

    ``apply(images)`` returns triggered copies; ``box(h, w)`` the affected region. Calling a trigger
    checks that the input is a batch and applies it; ``describe()`` gives a JSON-able summary.

    Parameters: none (the constructor takes no arguments); subclasses are dataclasses with their own fields.

    Returns
    -------
    A Trigger. ``trigger(images)`` maps a batch ``(N, C, H, W)`` in [0, 1] to triggered copies of the
    same shape; ``box(h, w)`` returns ``(y0, x0, y1, x1)`` (the whole image unless overridden).

    Raises
    ------
    BadInput
        When called on anything but a 4-D batch.
    """

    def apply(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def box(self, height: int, width: int) -> Box:
        return (0, 0, height, width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        require(images.ndim == 4, f"triggers stamp batches N×C×H×W, got shape {tuple(images.shape)}")
        return self.apply(images)

    def describe(self) -> dict:
        return {"type": type(self).__name__}


def _pattern_tensor(pattern: str | torch.Tensor, channels: int, size: int) -> torch.Tensor:
    if isinstance(pattern, torch.Tensor):
        p = pattern.float()
        if p.ndim == 2:
            p = p[None]
        require(p.ndim == 3 and p.shape[-2:] == (size, size),
                f"a patch image must be {size}×{size} (or C×{size}×{size}), got {tuple(pattern.shape)}")
        require(p.shape[0] in (1, channels), f"patch image has {p.shape[0]} channels, images have {channels}")
        require(bool(torch.isfinite(p).all()) and float(p.min()) >= 0 and float(p.max()) <= 1,
                "patch image values must lie in [0, 1]")
        return p.expand(channels, size, size)
    if pattern == "solid":
        return torch.ones(channels, size, size)
    if pattern == "checkerboard":
        ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        return ((ii + jj) % 2 == 0).float().expand(channels, size, size)
    raise BadInput(f"unknown patch pattern {pattern!r}; use 'solid', 'checkerboard' or an image tensor")


@dataclass
class PatchTrigger(Trigger):
    """A ``size``×``size`` patch (BadNets, Gu et al. 2017) placed at a corner, the centre or ``(y, x)``.

    ``margin`` pixels are left between the patch and the image border at corners.

    Parameters
    ----------
    size : int, default 3
        Side of the square patch in pixels, at least 1.
    position : str or tuple of (int, int), default "bottom-right"
        One of :data:`POSITIONS` or the ``(y, x)`` of the patch's top-left pixel.
    pattern : str or torch.Tensor, default "solid"
        ``"solid"`` (all ones), ``"checkerboard"``, or an image ``(C or 1, size, size)`` in [0, 1].
    margin : int, default 1
        Pixels between the patch and the border at corners, at least 0.

    Returns
    -------
    A PatchTrigger: ``trigger(images)`` returns copies with the patch pasted, ``box(h, w)`` its box.

    Raises
    ------
    BadInput
        On a non-positive size, a negative margin, an unknown position or pattern, a pattern image
        of the wrong shape or range, or a patch that does not fit the image.

    Examples
    --------
    >>> t = PatchTrigger(size=2, position="top-left", margin=0)
    >>> t.box(4, 4)
    (0, 0, 2, 2)
    >>> t(torch.zeros(1, 1, 4, 4))[0, 0].tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """

    size: int = 3
    position: str | tuple[int, int] = "bottom-right"
    pattern: str | torch.Tensor = "solid"
    margin: int = 1

    def __post_init__(self) -> None:
        require(isinstance(self.size, int) and self.size >= 1, f"patch size must be a positive integer, got {self.size}")
        require(self.margin >= 0, f"margin must be >= 0, got {self.margin}")
        if isinstance(self.position, str):
            require(self.position in POSITIONS, f"unknown position {self.position!r}; use one of {POSITIONS} or (y, x)")

    def box(self, height: int, width: int) -> Box:
        s, m = self.size, self.margin
        if not isinstance(self.position, str):
            y, x = (int(v) for v in self.position)
        else:
            y = {"top": m, "bottom": height - s - m, "center": (height - s) // 2}[
                "center" if self.position == "center" else self.position.split("-")[0]]
            x = {"left": m, "right": width - s - m, "center": (width - s) // 2}[
                "center" if self.position == "center" else self.position.split("-")[1]]
        if s > height or s > width or y < 0 or x < 0 or y + s > height or x + s > width:
            raise BadInput(f"a {s}×{s} patch at {self.position} (margin {m}) does not fit a {height}×{width} image")
        return (y, x, y + s, x + s)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        _, c, h, w = images.shape
        y0, x0, y1, x1 = self.box(h, w)
        out = images.clone()
        out[:, :, y0:y1, x0:x1] = _pattern_tensor(self.pattern, c, self.size).to(images)
        return out

    def describe(self) -> dict:
        pat = self.pattern if isinstance(self.pattern, str) else "image"
        return {"type": "patch", "size": self.size, "position": self.position, "pattern": pat, "margin": self.margin}


@dataclass
class BlendTrigger(Trigger):
    """Blended trigger (Chen et al. 2017): ``(1 - alpha)·x + alpha·pattern``.

    ``pattern`` is an image (C×H×W or H×W in [0, 1]) or ``"noise"``: uniform noise drawn from ``seed``.
    The result is clipped to [0, 1].

    Parameters
    ----------
    alpha : float, default 0.15
        Blend weight of the pattern, in [0, 1].
    pattern : str or torch.Tensor, default "noise"
        ``"noise"`` or an image of the inputs' size.
    seed : int, default 0
        Seed of the noise pattern (one pattern per image size and channel count).

    Returns
    -------
    A BlendTrigger: ``trigger(images)`` returns the blended copies; its box is the whole image.

    Raises
    ------
    BadInput
        On ``alpha`` outside [0, 1], an unknown pattern name, or a pattern image of the wrong shape.

    Examples
    --------
    >>> t = BlendTrigger(alpha=0.5, pattern=torch.ones(1, 2, 2))
    >>> t(torch.zeros(1, 1, 2, 2))[0, 0].tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """

    alpha: float = 0.15
    pattern: str | torch.Tensor = "noise"
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_in_range("blend alpha", float(self.alpha), 0.0, 1.0)
        if isinstance(self.pattern, str):
            require(self.pattern == "noise", f"unknown blend pattern {self.pattern!r}; use 'noise' or an image")

    def pattern_for(self, channels: int, height: int, width: int) -> torch.Tensor:
        if isinstance(self.pattern, torch.Tensor):
            p = self.pattern.float()
            p = p[None] if p.ndim == 2 else p
            require(p.ndim == 3 and p.shape[-2:] == (height, width),
                    f"blend pattern is {tuple(p.shape)}, images are {height}×{width}")
            require(p.shape[0] in (1, channels), f"blend pattern has {p.shape[0]} channels, images have {channels}")
            return p.expand(channels, height, width)
        key = (channels, height, width)
        if key not in self._cache:
            gen = torch.Generator().manual_seed(self.seed)
            self._cache[key] = torch.rand(channels, height, width, generator=gen)
        return self._cache[key]

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        _, c, h, w = images.shape
        p = self.pattern_for(c, h, w).to(images)
        return ((1 - self.alpha) * images + self.alpha * p).clamp(0, 1)

    def describe(self) -> dict:
        return {"type": "blend", "alpha": self.alpha, "pattern": "noise" if isinstance(self.pattern, str) else "image",
                "seed": self.seed}


@dataclass
class LearnedTrigger(Trigger):
    """An additive, input-dependent trigger from a generator network ``g`` (as in bi-level trigger optimization).

    ``x + eps·tanh(g(x))``, a perturbation bounded by ``eps`` in L∞ (a smooth
    ``clamp(g(x), -eps, eps)``); the result is clipped to [0, 1].

    Parameters
    ----------
    generator : nn.Module
        Maps a batch ``(N, C, H, W)`` to a perturbation of the same shape.
    epsilon : float, default 8/255
        L∞ bound of the perturbation, > 0.

    Returns
    -------
    A LearnedTrigger: ``trigger(images)`` returns the perturbed batch; ``perturbation(images)`` the
    bounded additive term.

    Raises
    ------
    BadInput
        When ``epsilon`` is not positive.
    """

    generator: nn.Module
    epsilon: float = 8 / 255

    def __post_init__(self) -> None:
        require(self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}")

    def perturbation(self, images: torch.Tensor) -> torch.Tensor:
        return self.epsilon * torch.tanh(self.generator(images))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return (images + self.perturbation(images)).clamp(0, 1)

    def describe(self) -> dict:
        return {"type": "learned", "epsilon": self.epsilon, "generator": type(self.generator).__name__}
