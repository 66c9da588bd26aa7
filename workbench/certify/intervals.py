"""Interval bound propagation (IBP): certify a prediction within an L∞ ball, and train for it.

Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
Models", 2018 (arXiv 1810.12715). The input box [x − ε, x + ε] ∩ [0, 1]^d is pushed through the network
layer by layer (Sec. 3, Eq. 6): an affine layer maps centre μ and radius r to (Wμ + b, |W| r); a
monotone non-decreasing layer (ReLU, max and average pooling, flatten) maps bounds to bounds. The
last linear layer is folded into the specification (Sec. 3, Eq. 8 with c = e_p − e_j): the lower bound
of the margin z_p − z_j is (W_p − W_j)·μ − |W_p − W_j|·r + b_p − b_j over the penultimate box. A
prediction p is certified at ε iff every margin lower bound (j ≠ p) is > 0; otherwise we abstain.

Supported layers: Linear, Conv2d (zero padding), ReLU, Flatten, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d, BatchNorm1d/2d (an affine map with the running statistics in eval mode; with the
clean batch's statistics in training mode), Identity/Dropout (eval), nn.Sequential, and the zoo's
SmallCNN, SmallResNet and BasicBlock (residual addition: bounds add). The zoo models run their children
in registration order, which is what we walk; any other module type raises BadInput naming the layer.

Soundness guards: the box is clipped to the valid input range (default [0, 1], ``input_range``), so
inputs outside it (e.g. normalised images) are refused rather than certified from a box that does not
contain them; a BatchNorm without running statistics (``track_running_stats=False``) normalises with the
batch even in eval mode, which per-input bounds cannot describe, and is refused too.

Training (:func:`train_ibp`, Gowal et al. Eq. 9 and Sec. 4): loss κ·CE(z(x), y) + (1 − κ)·CE(ẑ(x, ε), y),
ẑ the worst-case logits from the margin bounds; after a clean ``warmup`` share of the steps, ε ramps
linearly from 0 and κ from 1 to 0.5 until the ``ramp`` share of the steps. We differ from the paper in schedule lengths (a few epochs on CPU)
and use the shared AdamW training loop of :mod:`workbench.training`. Floating-point rounding is not
accounted for (as in the paper); the soundness tests allow 1e-5.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import ModelAdapter, Normalize, Resize, as_model, model_device, model_mode
from ..errors import BadInput, require
from ..layers import layer_root
from ..models import BasicBlock, SmallCNN, SmallResNet
from ..training import FitHistory, fit, resolve_device
from .results import ABSTAIN, CertificationResult

Progress = Callable[[float, str], None]
# Resize (bilinear, non-negative weights) and Normalize (per-channel (x − m)/s, s > 0) are the adapter's
# pixel-space preprocessing: monotone non-decreasing maps, so bounds go through them end to end.
MONOTONE = (nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Dropout,
            Resize, Normalize)
AFFINE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
CONTAINERS = (nn.Sequential, SmallCNN, SmallResNet)
SUPPORTED_NAMES = ("Linear, Conv2d, ReLU, Flatten, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d, "
                   "Identity, Dropout, Sequential, SmallCNN, SmallResNet, BasicBlock")


INPUT_RANGE = (0.0, 1.0)  # the valid input range: every dataset of the workbench holds images in [0, 1]


def check_eps(eps: float) -> float:
    """Check an L∞ radius ε: a finite number ≥ 0.

    Parameters
    ----------
    eps : float
        The radius.

    Returns
    -------
    float
        ``eps`` as a float.

    Raises
    ------
    BadInput
        If ``eps`` is not a number, NaN, negative or infinite.

    Examples
    --------
    >>> check_eps(0.1)
    0.1
    """
    require(isinstance(eps, (int, float)) and eps == eps and eps >= 0, f"epsilon must be >= 0, got {eps}")
    require(math.isfinite(eps), f"epsilon must be a finite number >= 0, got {eps}")
    return float(eps)


def check_inputs(images: torch.Tensor, input_range: tuple[float, float] = INPUT_RANGE) -> tuple[float, float]:
    """Interval bounds clip the ε-box to the valid input range, so every input must lie inside it:
    a normalised input (e.g. in [−0.42, 2.8]) would be clipped to a box that no longer contains it
    and "certified" from the wrong place. BadInput for inputs outside the range (or NaN).

    Parameters
    ----------
    images : torch.Tensor
        The inputs, any shape.
    input_range : tuple of float, default (0.0, 1.0)
        ``(low, high)`` with low < high.

    Returns
    -------
    tuple of float
        ``(low, high)``.

    Raises
    ------
    BadInput
        If low ≥ high, or a value lies outside the range (the message gives the values' range).

    Examples
    --------
    >>> import torch
    >>> check_inputs(torch.tensor([0.0, 0.5, 1.0]))
    (0.0, 1.0)
    """
    lo, hi = (float(v) for v in input_range)
    require(lo < hi, f"the valid input range must have low < high, got {input_range}")
    if images.numel():
        a, b = float(images.detach().min()), float(images.detach().max())
        require(lo <= a and b <= hi, f"interval bounds need inputs in the valid input range [{lo:g}, {hi:g}]; "
                f"got values in [{a:g}, {b:g}] (normalised inputs? put the normalisation inside the model as a "
                "layer and pass images in [0, 1], or give the range the inputs come from)")
    return lo, hi


def check_batch_independent(model: nn.Module) -> None:
    """A BatchNorm without running statistics normalises with the statistics of the batch even in eval
    mode, so one input's output depends on the others and per-input bounds would be unsound.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model, in the mode it will be bounded in (BatchNorms in training mode are allowed: they are
        bounded with the clean batch's statistics); layers are named as in the user's own model.

    Returns
    -------
    None

    Raises
    ------
    BadInput
        Naming the first BatchNorm in eval mode without running statistics.

    Examples
    --------
    >>> from torch import nn
    >>> check_batch_independent(nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False)).eval())
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: interval bounds cannot certify layer '0': a BatchNorm2d without running statistics (track_running_stats=False) normalises each input with its batch's statistics, so its output depends on the other inputs
    """
    root = layer_root(model)  # the user's own layer names, not the adapter's
    for name, mod in (root if root is not None else model).named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not mod.training and mod.running_mean is None:
            raise BadInput(f"interval bounds cannot certify layer {name!r}: a {type(mod).__name__} without running "
                           "statistics (track_running_stats=False) normalises each input with its batch's "
                           "statistics, so its output depends on the other inputs")


def layer_plan(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers IBP walks, in execution order; BadInput names the first unsupported layer and its type.

    Containers (``nn.Sequential``, the zoo's nets) are walked in registration order; a
    :class:`BasicBlock` is one step (its layers are checked); an adapter contributes its resize and
    normalisation first.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model (an adapter must wrap an ``nn.Module``, not a callable).

    Returns
    -------
    list of (str, nn.Module)
        The layers with their dotted names.

    Raises
    ------
    BadInput
        For a layer type outside :data:`SUPPORTED_NAMES`, a convolution whose padding is not zeros, or
        ``MaxPool2d(return_indices=True)``.

    Examples
    --------
    >>> from torch import nn
    >>> [name for name, _ in layer_plan(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))]
    ['0', '1']
    >>> layer_plan(nn.Sequential(nn.GELU()))
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: interval bound propagation does not support layer '0' of type GELU; supported: Linear, Conv2d, ReLU, Flatten, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d, Identity, Dropout, Sequential, SmallCNN, SmallResNet, BasicBlock
    """
    plan: list[tuple[str, nn.Module]] = []

    def visit(name: str, mod: nn.Module) -> None:
        if isinstance(mod, ModelAdapter):
            require(mod.inner is not None and mod._fn is None,
                    "interval bound propagation needs the model's modules, not a callable")
            for i, pre in enumerate(mod.preprocess):
                plan.append((f"<preprocess {i}: {type(pre).__name__}>", pre))
            visit("", mod.inner)
        elif isinstance(mod, CONTAINERS):
            for child, sub in mod.named_children():
                visit(f"{name}.{child}" if name else child, sub)
        elif isinstance(mod, BasicBlock):
            for child, sub in mod.named_children():
                visit(f"{name}.{child}", sub)  # validates the block's layers
            plan.append((name, mod))
        elif isinstance(mod, MONOTONE + AFFINE):
            if isinstance(mod, nn.Conv2d):
                require(mod.padding_mode == "zeros", f"interval bounds support zero-padded convolutions only; layer "
                        f"{name!r} uses padding_mode={mod.padding_mode!r}")
            if isinstance(mod, nn.MaxPool2d):
                require(not mod.return_indices, f"layer {name!r}: MaxPool2d with return_indices is not supported")
            plan.append((name, mod))
        else:
            raise BadInput(f"interval bound propagation does not support layer {name or '<model>'!r} of type "
                           f"{type(mod).__name__}; supported: {SUPPORTED_NAMES}")

    visit("", model)
    return [(n, m) for n, m in plan if n.count(".") == 0 or not _inside_block(n, plan)]


def _inside_block(name: str, plan) -> bool:
    return any(isinstance(m, BasicBlock) and name.startswith(n + ".") for n, m in plan)


def _affine_bn(mod: nn.modules.batchnorm._BatchNorm, x: torch.Tensor | None):
    """(scale, shift, output of the clean input) of a BatchNorm layer as an affine map."""
    use_batch = mod.training or mod.running_mean is None
    shape = (1, -1) + (1,) * (2 if isinstance(mod, nn.BatchNorm2d) else 0)
    if use_batch:
        require(x is not None, "BatchNorm in training mode needs the clean batch")
        dims = [0, 2, 3] if x.ndim == 4 else [0]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
    else:
        mean, var = mod.running_mean, mod.running_var
    y = mod(x) if x is not None else None  # updates running statistics in training mode, like a forward
    w = mod.weight if mod.weight is not None else torch.ones_like(mean)
    b = mod.bias if mod.bias is not None else torch.zeros_like(mean)
    scale = w / torch.sqrt(var + mod.eps)
    return scale.view(shape), (b - mean * scale).view(shape), y


def _step(mod: nn.Module, x, lo, hi):
    if isinstance(mod, BasicBlock):
        x1, lo1, hi1 = x, lo, hi
        for sub in (mod.conv1, mod.bn1, mod.relu1, mod.conv2, mod.bn2):
            x1, lo1, hi1 = _step(sub, x1, lo1, hi1)
        x2, lo2, hi2 = x, lo, hi
        for sub in mod.shortcut:
            x2, lo2, hi2 = _step(sub, x2, lo2, hi2)
        xs = None if x1 is None else x1 + x2
        return _step(mod.relu2, xs, lo1 + lo2, hi1 + hi2)
    if isinstance(mod, (nn.Linear, nn.Conv2d)):
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        if isinstance(mod, nn.Linear):
            m, r = F.linear(mid, mod.weight, mod.bias), F.linear(rad, mod.weight.abs())
        else:
            m = mod(mid)
            r = F.conv2d(rad, mod.weight.abs(), None, mod.stride, mod.padding, mod.dilation, mod.groups)
        return (mod(x) if x is not None else None), m - r, m + r
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale, shift, y = _affine_bn(mod, x)
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        m, r = mid * scale + shift, rad * scale.abs()
        return y, m - r, m + r
    if isinstance(mod, nn.Dropout):
        require(not mod.training, "interval bounds through Dropout need eval mode")
        return x, lo, hi
    # monotone non-decreasing maps: apply to both ends
    return (mod(x) if x is not None else None), mod(lo), mod(hi)


def propagate(model: nn.Module, images: torch.Tensor, eps: float, *, clean: bool = True, elide_last: bool = True,
              input_range: tuple[float, float] = INPUT_RANGE):
    """Bounds of the L∞ ball of radius ``eps`` (clipped to ``input_range``, default [0, 1]) through ``model``.

    Inputs outside ``input_range`` and batch-dependent layers (BatchNorm without running statistics
    in eval mode) are refused: the bounds would not contain the model's outputs.
    Returns ``(clean_logits or None, lower, upper, last)``: with ``elide_last`` and a final Linear
    layer, ``lower``/``upper`` bound its *input* and ``last`` is that layer (for the margin
    specification); otherwise they bound the logits and ``last`` is None.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        A model of supported layers (see :func:`layer_plan`).
    images : torch.Tensor
        N×C×H×W inputs inside ``input_range``.
    eps : float
        The L∞ radius ε ≥ 0.
    clean : bool, default True
        Also run the clean inputs (needed for the logits and for BatchNorm in training mode).
    elide_last : bool, default True
        Stop before a final ``nn.Linear`` (folded into the margin specification).
    input_range : tuple of float, default (0.0, 1.0)
        Where valid inputs live; the ε-box is clipped to it and inputs outside it are refused.

    Returns
    -------
    tuple
        ``(logits, lower, upper, last)``: clean logits N×K (``None`` with ``clean=False``), the bounds
        (same shape as the bounded layer's output) and the elided ``nn.Linear`` or ``None``.

    Raises
    ------
    BadInput
        For ε < 0, inputs outside the range, unsupported or batch-dependent layers.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # z0 = x0 - x1 + 1, z1 = 0
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    >>> x = torch.full((1, 1, 1, 2), 0.5)
    >>> logits, lower, upper, last = propagate(net, x, 0.1)
    >>> logits.tolist(), [round(v, 4) for v in lower[0].tolist()], type(last).__name__
    ([[1.0, 0.0]], [0.4, 0.4], 'Linear')
    """
    check_eps(eps)
    r_lo, r_hi = check_inputs(images, input_range)
    check_batch_independent(model)
    plan = layer_plan(model)
    last = plan[-1][1] if elide_last and isinstance(plan[-1][1], nn.Linear) else None
    body = plan[:-1] if last is not None else plan
    x = images if clean else None
    lo, hi = (images - eps).clamp(r_lo, r_hi), (images + eps).clamp(r_lo, r_hi)
    for _, mod in body:
        x, lo, hi = _step(mod, x, lo, hi)
    logits = last(x) if (last is not None and x is not None) else x
    return logits, lo, hi, last


def margin_bounds_from(lo: torch.Tensor, hi: torch.Tensor, last: nn.Linear | None, classes: torch.Tensor) -> torch.Tensor:
    """Lower bounds N×K of z_c − z_j for the class c of each row (+inf at j = c).

    With an elided last layer the specification c = e_c − e_j is folded into its weights (Gowal et
    al. Eq. 8): (W_c − W_j)·μ − |W_c − W_j|·r + b_c − b_j over the penultimate box; without one,
    lo_c − hi_j.

    Parameters
    ----------
    lo, hi : torch.Tensor
        N×D bounds of the last layer's input (or N×K bounds of the logits when ``last`` is None).
    last : nn.Linear or None
        The elided final layer.
    classes : torch.Tensor
        N classes c (int64).

    Returns
    -------
    torch.Tensor
        N×K lower bounds; +inf in column c.

    Examples
    --------
    >>> import torch
    >>> lo, hi = torch.tensor([[0.8, 0.0]]), torch.tensor([[1.2, 0.1]])
    >>> margin_bounds_from(lo, hi, None, torch.tensor([0])).tolist()
    [[inf, 0.699999988079071]]
    """
    if last is None:  # bounds on the logits themselves: z_c − z_j >= lo_c − hi_j
        lb = lo.gather(1, classes[:, None]) - hi
    else:
        w, b = last.weight, last.bias if last.bias is not None else torch.zeros(last.out_features, device=lo.device)
        c = w[classes][:, None, :] - w[None, :, :]  # N×K×D: rows e_c − e_j folded into W
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        lb = (torch.einsum("nkd,nd->nk", c, mid) - torch.einsum("nkd,nd->nk", c.abs(), rad)
              + (b[classes][:, None] - b[None, :]))
    return lb.scatter(1, classes[:, None], float("inf"))


def margin_lower_bounds(model: nn.Module, images: torch.Tensor, eps: float, classes: torch.Tensor | None = None,
                        elide_last: bool = True, input_range: tuple[float, float] = INPUT_RANGE
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower bounds N×K of z_p − z_j, p)`` with p = ``classes`` or the model's clean prediction.

    p is certified at ε iff every entry of its row (other than the +inf at p) is > 0.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        A model of supported layers.
    images : torch.Tensor
        N×C×H×W inputs inside ``input_range``.
    eps : float
        The L∞ radius ε ≥ 0.
    classes : torch.Tensor, optional
        N classes p (default: the clean argmax).
    elide_last : bool, default True
        Fold a final ``nn.Linear`` into the specification (tighter bounds).
    input_range : tuple of float, default (0.0, 1.0)
        Where valid inputs live; the ε-box is clipped to it and inputs outside it are refused.

    Returns
    -------
    tuple of torch.Tensor
        The N×K lower bounds (+inf at p) and the N classes p.

    Raises
    ------
    BadInput
        As :func:`propagate`.

    Examples
    --------
    The margin z0 − z1 = x0 − x1 + 1 is at least 1 − 2ε on the box:

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # z0 = x0 - x1 + 1, z1 = 0
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    >>> x = torch.full((1, 1, 1, 2), 0.5)
    >>> lower, p = margin_lower_bounds(net, x, 0.1)
    >>> p.tolist(), round(lower[0, 1].item(), 4)
    ([0], 0.8)
    """
    logits, lo, hi, last = propagate(model, images, eps, elide_last=elide_last, input_range=input_range)
    p = logits.argmax(1) if classes is None else classes.to(images.device)
    return margin_bounds_from(lo, hi, last, p), p


def logit_bounds(model: nn.Module, images: torch.Tensor, eps: float,
                 input_range: tuple[float, float] = INPUT_RANGE) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain interval bounds on every logit (no elision).

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        A model of supported layers.
    images : torch.Tensor
        N×C×H×W inputs inside ``input_range``.
    eps : float
        The L∞ radius ε ≥ 0.
    input_range : tuple of float, default (0.0, 1.0)
        Where valid inputs live; the ε-box is clipped to it and inputs outside it are refused.

    Returns
    -------
    tuple of torch.Tensor
        Lower and upper bounds, each N×K.

    Raises
    ------
    BadInput
        As :func:`propagate`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # z0 = x0 - x1 + 1, z1 = 0
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    >>> x = torch.full((1, 1, 1, 2), 0.5)
    >>> lower, upper = logit_bounds(net, x, 0.1)
    >>> [round(v, 4) for v in lower[0].tolist()], [round(v, 4) for v in upper[0].tolist()]
    ([0.8, 0.0], [1.2, 0.0])
    """
    _, lo, hi, _ = propagate(model, images, eps, clean=False, elide_last=False, input_range=input_range)
    return lo, hi


@torch.no_grad()
def certify(model: nn.Module, images: torch.Tensor, eps: float | list[float], *, labels: torch.Tensor | None = None,
            batch_size: int = 256, device=None, progress: Progress | None = None,
            input_range: tuple[float, float] = INPUT_RANGE) -> CertificationResult:
    """Certify each input's predicted class with IBP at L∞ radius ``eps`` (or the largest of a grid).

    With a list of ε values the radius of an input is the largest ε of the grid at which it is
    certified (bounds only widen with ε); it abstains if it is not certified at the smallest.
    ``input_range``: where valid inputs live (the ε-box is clipped to it); inputs outside it are refused.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        A model of supported layers (see :func:`layer_plan`); run in eval mode, its mode restored.
    images : torch.Tensor
        N×C×H×W inputs inside ``input_range``, N ≥ 1.
    eps : float or list of float
        One radius ε ≥ 0, or a grid of them.
    labels : torch.Tensor, optional
        N true labels (for the accuracy metrics).
    batch_size : int, default 256
        Inputs per bound computation, ≥ 1.
    device : str or torch.device, optional
        Where to run (default: the model's device).
    progress : callable, optional
        ``progress(fraction, message)`` after each batch.
    input_range : tuple of float, default (0.0, 1.0)
        Where valid inputs live; the ε-box is clipped to it and inputs outside it are refused.

    Returns
    -------
    CertificationResult
        ``method="ibp"``, ``norm="linf"``; radii are grid values (0 where abstaining); ``extra`` holds
        ``min_margin_lower_bound`` (N × grid size) and ``eps_grid``.

    Raises
    ------
    BadInput
        For an empty grid, a negative ε, an empty or non-4-D batch, unsupported or batch-dependent
        layers, or inputs outside the range.

    Examples
    --------
    The box is clipped to [0, 1], so at ε = 0.6 the margin's lower bound is 1 − 1 = 0, not > 0:

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # z0 = x0 - x1 + 1, z1 = 0
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    >>> x = torch.full((1, 1, 1, 2), 0.5)
    >>> res = certify(net, x, [0.1, 0.3, 0.6], labels=torch.tensor([0]))
    >>> res.predictions.tolist(), round(res.radii[0].item(), 4)
    ([0], 0.3)
    """
    grid = sorted(check_eps(float(e)) for e in (eps if isinstance(eps, (list, tuple)) else [eps]))
    require(len(grid) > 0, "give at least one epsilon")
    require(images.ndim == 4 and images.shape[0] > 0,
            f"images must be a non-empty N×C×H×W batch, got shape {tuple(images.shape)}")
    model = as_model(model)
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    layer_plan(model)  # unsupported layers fail before any work
    check_inputs(images, input_range)
    dev = resolve_device(device) if device is not None else model_device(model)
    with model_mode(model):
        check_batch_independent(model)
    t0 = time.perf_counter()
    n = images.shape[0]
    base = torch.empty(n, dtype=torch.long)
    radius = torch.zeros(n)
    ok_any = torch.zeros(n, dtype=torch.bool)
    min_margin = torch.empty(n, len(grid))
    with model_mode(model):
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(dev)
            for gi, e in enumerate(grid):
                lb, p = margin_lower_bounds(model, x, e, input_range=input_range)
                worst = lb.min(1).values.cpu()
                min_margin[start:start + len(x), gi] = worst
                cert = worst > 0
                radius[start:start + len(x)] = torch.where(cert, torch.tensor(e), radius[start:start + len(x)])
                if gi == 0:
                    base[start:start + len(x)] = p.cpu()
                    ok_any[start:start + len(x)] = cert
            if progress is not None:
                progress(min(1.0, (start + len(x)) / n), f"{min(n, start + len(x))}/{n} inputs")
    pred = torch.where(ok_any, base, torch.full_like(base, ABSTAIN))
    return CertificationResult("ibp", "linf", pred, radius, None if labels is None else labels.cpu(), base,
                               {"eps": grid[0] if len(grid) == 1 else grid},
                               time.perf_counter() - t0, {"min_margin_lower_bound": min_margin, "eps_grid": grid})


class _IBPObjective(nn.Module):
    """Wraps a model for :func:`workbench.training.fit`: the forward returns the clean logits and
    keeps the penultimate bounds of the ε-box for the loss."""

    def __init__(self, model: nn.Module, eps: float, total_steps: int, ramp: float, kappa_end: float,
                 warmup: float = 0.1):
        super().__init__()
        self.model = model
        self.eps, self.total, self.ramp, self.kappa_end, self.warmup = eps, total_steps, ramp, kappa_end, warmup
        self.step = 0
        self._bounds = None

    def schedule(self) -> tuple[float, float]:
        start = self.warmup * self.total
        frac = min(1.0, max(0.0, self.step - start) / max(1.0, (self.ramp - self.warmup) * self.total))
        return self.eps * frac, 1.0 - (1.0 - self.kappa_end) * frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.model(x)
        eps, _ = self.schedule()
        logits, lo, hi, last = propagate(self.model, x, eps)
        self._bounds = (lo, hi, last)
        return logits

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, kappa = self.schedule()
        self.step += 1
        return _mixed_loss(logits, *self._bounds, y, kappa)


def _mixed_loss(logits, lo, hi, last, y, kappa: float) -> torch.Tensor:
    """κ·CE(z, y) + (1 − κ)·CE(ẑ, y), ẑ the worst-case logits from the margin bounds (Gowal et al. Eq. 9)."""
    worst = -margin_bounds_from(lo, hi, last, y)
    worst = worst.scatter(1, y[:, None], 0.0)
    return kappa * F.cross_entropy(logits, y) + (1 - kappa) * F.cross_entropy(worst, y)


def ibp_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, kappa: float = 0.5) -> torch.Tensor:
    """The IBP training loss at a fixed ε and κ (the end of :func:`train_ibp`'s schedule), differentiable in
    the parameters and in ``x`` (e.g. for gradient-matching poisons against an IBP-trained victim).

    κ·CE(z(x), y) + (1 − κ)·CE(ẑ(x, ε), y), ẑ the worst-case logits from the margin bounds.

    Parameters
    ----------
    model : nn.Module
        A model of supported layers.
    x : torch.Tensor
        N×C×H×W inputs in [0, 1].
    y : torch.Tensor
        N labels.
    eps : float
        The L∞ radius ε ≥ 0.
    kappa : float, default 0.5
        Weight κ of the clean cross entropy, in [0, 1].

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Raises
    ------
    BadInput
        As :func:`propagate`.
    """
    logits, lo, hi, last = propagate(model, x, check_eps(eps))
    return _mixed_loss(logits, lo, hi, last, y, kappa)


def train_ibp(model: nn.Module, data, eps: float, *, epochs: int = 6, warmup: float = 0.1, ramp: float = 0.6,
              kappa_end: float = 0.5,
              batch_size: int = 128, lr: float = 3e-3, seed: int = 0, device="cpu", transform=None,
              progress: Progress | None = None) -> FitHistory:
    """IBP training (Gowal et al. 2018, Eq. 9) in place, through the shared training loop.

    Clean steps for the first ``warmup`` share of all steps; then ε ramps linearly from 0 to ``eps``
    and κ from 1 to ``kappa_end`` until the ``ramp`` share; the rest trains at the final values. The
    model is left in eval mode.

    Parameters
    ----------
    model : nn.Module
        A model of supported layers (see :func:`layer_plan`); trained in place.
    data : ImageDataset or tuple of torch.Tensor
        The training set (images in [0, 1] and labels), as :func:`workbench.training.fit` takes it.
    eps : float
        The final L∞ radius ε ≥ 0.
    epochs : int, default 6
        Passes over the data.
    warmup : float, default 0.1
        Share of the steps trained clean; 0 ≤ warmup < ramp.
    ramp : float, default 0.6
        Share of the steps at which ε and κ reach their final values; ≤ 1.
    kappa_end : float, default 0.5
        The final κ.
    batch_size : int, default 128
        Examples per step.
    lr : float, default 3e-3
        AdamW's learning rate.
    seed : int, default 0
        Seed of the shuffling.
    device : str or torch.device, default "cpu"
        Where to train.
    transform : callable, optional
        A batch augmentation, as for :func:`workbench.training.fit`.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    FitHistory
        The training loop's history (loss and training accuracy per epoch, seconds).

    Raises
    ------
    BadInput
        For ε < 0, unsupported layers, or not 0 ≤ warmup < ramp ≤ 1.
    """
    eps = check_eps(eps)
    layer_plan(model)
    n = len(data) if not isinstance(data, tuple) else len(data[0])
    steps = epochs * ((n + batch_size - 1) // batch_size)
    require(0 <= warmup < ramp <= 1, f"need 0 <= warmup < ramp <= 1, got warmup={warmup}, ramp={ramp}")
    wrapper = _IBPObjective(model, eps, steps, ramp, kappa_end, warmup)
    hist = fit(wrapper, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
               transform=transform, loss_fn=wrapper.loss, progress=progress)
    model.eval()
    return hist


def ibp_small_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 16,
                  seed: int | None = 0) -> nn.Sequential:
    """The "small" IBP model of Gowal et al. (2018, Table 1), adapted to any even image size: two 4×4
    stride-2 convolutions (width, 2·width channels), a 100-unit hidden layer and the output layer, no
    BatchNorm. The zoo's deeper BatchNorm CNN trains poorly with IBP in a CPU budget (its bounds grow
    too fast with depth); this one is what :func:`attacks.availability.train_victim` trains for IBP.

    Parameters
    ----------
    in_channels : int, default 1
        Image channels.
    num_classes : int, default 10
        Number of logits.
    image_size : int, default 28
        Side of the square images, a multiple of 4, ≥ 8.
    width : int, default 16
        Channels of the first convolution.
    seed : int or None, default 0
        Seed of the weight initialisation (``None``: the global RNG).

    Returns
    -------
    nn.Sequential
        Maps N×C×S×S to logits N×K.

    Raises
    ------
    BadInput
        If ``image_size`` is not a multiple of 4 that is ≥ 8.

    Examples
    --------
    >>> import torch
    >>> ibp_small_cnn()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    require(image_size >= 8 and image_size % 4 == 0, f"image size must be a multiple of 4 >= 8, got {image_size}")
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else None
    if ctx is not None:
        ctx.__enter__()
        torch.manual_seed(seed)
    try:
        s = image_size // 4
        return nn.Sequential(nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(2 * width * s * s, 100), nn.ReLU(), nn.Linear(100, num_classes))
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
