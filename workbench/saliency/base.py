"""Shared mechanics of the saliency methods: one forward, one backward that stops at the layers.

Every method is a captum layer attribution (:class:`captum.attr.LayerAttribution` and
:class:`captum.attr.GradientAttribution`), so it plugs into captum's tooling (``interpolate``,
``captum.metrics``), but it gathers activations with the workbench's one hook mechanism
(:func:`workbench.hooks.capture_layers`) instead of ``captum._utils.gradient.
compute_layer_gradients_and_eval``. The reasons: several layers (and, for proper NormGrad, a conv's
input *and* the gradient at its output) come from a single forward and a single backward, and
meta-saliency needs the same capture under :func:`torch.func.functional_call` with per-image weights.

The backward is ``torch.autograd.grad(sum of target logits, [captured activations])``: autograd
only runs the graph between the logits and the requested activations, so nothing below the
deepest (closest to the input) requested layer is differentiated and no parameter gradient is
formed. Summing the per-image target logits gives each image its own gradient because the model
runs in eval mode (BatchNorm uses its running statistics, so images do not interact).

``attribute(inputs, target=None)`` returns an N×1×h×w tensor at the layer's resolution (a tuple
of them, one per layer, when several layers were given). ``target=None`` explains the predicted
class; an int explains that class for every image; a length-N tensor or list gives one class per
image. :func:`upsample` resizes maps to the input (bilinear) and :func:`normalize_maps` scales
each map to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution, LayerAttribution
from torch import nn

from ..adapter import as_model, model_device, model_mode
from ..errors import BadInput, require
from ..hooks import capture_layers, resolve_layers
from ..layers import default_cam_layer, describe_layers, get_layer, spatial_layout

LayerSpec = str | nn.Module | Sequence[str | nn.Module] | None
TargetSpec = int | Sequence[int] | torch.Tensor | None


@dataclass
class LayerCapture:
    """What one forward (+ backward) saw: per-layer activations, gradients, layer inputs; the logits.

    Parameters
    ----------
    activations : dict of str to torch.Tensor
        Each layer's output as N×C×h×w (already read through its layout), detached.
    gradients : dict of str to torch.Tensor, default {}
        ∂(target logit)/∂(activation), same shapes (gradient methods only).
    inputs : dict of str to torch.Tensor, default {}
        Each layer's input, detached (methods with ``needs_layer_inputs``).
    logits : torch.Tensor, optional
        N×K logits of the forward.
    target : torch.Tensor, optional
        The N classes explained.
    layouts : dict of str to str, default {}
        How each layer's output was read (``nchw``, ``nhwc``, ``tokens (…)``).

    Returns
    -------
    A LayerCapture (dataclass), what :meth:`LayerSaliency.capture` returns.
    """

    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    target: torch.Tensor | None = None
    #: How each layer's output was read as N×C×H×W (``nchw``, ``nhwc``, ``tokens (…)``).
    layouts: dict[str, str] = field(default_factory=dict)


@contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode (BatchNorm statistics frozen), restoring every module's flag after.

    Parameters
    ----------
    model : nn.Module
        The model.

    Returns
    -------
    contextlib.AbstractContextManager of nn.Module
        Yields ``model``, in eval mode inside the block.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.BatchNorm2d(1)).train()
    >>> with eval_mode(net) as m:
    ...     print(m.training)
    False
    >>> net.training
    True
    """
    with model_mode(model):
        yield model


def spatial_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the layers whose output can be read as N×C×H×W (N×C×H×W, channels-last or tokens):
    the ones saliency maps can be taken at.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model (one probe forward, see :func:`workbench.layers.describe_layers`).
    input_shape : tuple of int
        ``(C, H, W)`` of one input.

    Returns
    -------
    list of str
        Layer names in registration order.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> spatial_layers(net, (1, 8, 8))
    ['0', '1', '2']
    """
    out = []
    hw = tuple(input_shape[-2:])
    for info in describe_layers(model, tuple(input_shape)):
        if info.output_shape is None or len(info.output_shape) not in (2, 3):
            continue
        try:
            spatial_layout(info.name, torch.empty(1, *info.output_shape, device="meta"), hw,
                           get_layer(model, info.name))
        except BadInput:
            continue
        out.append(info.name)
    return out


def resolve_default_layers(model, layers, input_shape: tuple[int, ...] | None):
    """``layers``, or the model's default CAM layer (declared, or found on a probe of ``input_shape``).

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model.
    layers : str, nn.Module, sequence of them, or None
        The layers asked for; returned as they are unless ``None``.
    input_shape : tuple of int or None
        ``(C, H, W)`` for the probe (default: the adapter's ``input_shape``).

    Returns
    -------
    str, nn.Module or sequence
        ``layers``, the declared ``default_cam_layer``, or the one :func:`workbench.layers.default_cam_layer`
        finds.

    Raises
    ------
    BadInput
        If no layer is given or declared and no input shape is known.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> resolve_default_layers(net, None, (1, 8, 8))
    '1'
    """
    if layers is not None:
        return layers
    declared = getattr(model, "default_cam_layer", None)
    if declared:
        return declared
    shape = input_shape or getattr(model, "input_shape", None)
    require(shape is not None, f"{type(model).__name__} declares no default CAM layer: name the layer(s), or give "
                               "the input shape (as_model(model, input_shape=(C, H, W))) so one can be found")
    return default_cam_layer(model, tuple(shape))


def check_inputs(inputs, model: nn.Module) -> torch.Tensor:
    """Check a batch of images for a saliency method and move it to the model's device.

    Parameters
    ----------
    inputs : torch.Tensor
        N×C×H×W floating-point images, N ≥ 1.
    model : nn.Module
        The model (for its device).

    Returns
    -------
    torch.Tensor
        ``inputs`` detached, on the model's device.

    Raises
    ------
    BadInput
        If ``inputs`` is not a non-empty 4-D floating-point tensor.
    """
    require(isinstance(inputs, torch.Tensor), f"inputs must be a tensor N×C×H×W, got {type(inputs).__name__}")
    require(inputs.ndim == 4, f"inputs must be N×C×H×W images, got shape {tuple(inputs.shape)}")
    require(inputs.shape[0] > 0, "no images given")
    require(inputs.is_floating_point(), f"inputs must be floating point, got {inputs.dtype}")
    return inputs.detach().to(model_device(model))


def check_target_length(target: TargetSpec, n: int) -> torch.Tensor | int | None:
    """Validate the target's form and length (range is checked once the class count is known).

    Parameters
    ----------
    target : int, sequence of int, torch.Tensor or None
        ``None`` (the predicted class), one class for all images, or one class per image.
    n : int
        The number of images.

    Returns
    -------
    torch.Tensor, int or None
        ``None``, an int, or N int64 indices.

    Raises
    ------
    BadInput
        For a bool, a non-integer or multi-dimensional target, or a length other than ``n``.

    Examples
    --------
    >>> check_target_length([0, 2], 2)
    tensor([0, 2])
    >>> check_target_length([0, 2], 3)
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: got 3 images but 2 targets: give one target per image (or a single int for all)
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise BadInput(f"target must be a class index, got {target!r}")
    if isinstance(target, int):
        return target
    if isinstance(target, torch.Tensor) and target.ndim == 0:
        return int(target)
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BadInput(f"target must be None, a class index or one index per image ({exc})") from None
    require(t.ndim == 1, f"target must be a class index or a 1-D list of indices, got shape {tuple(t.shape)}")
    require(not t.is_floating_point() and not t.is_complex(), f"target indices must be integers, got {t.dtype}")
    require(len(t) == n, f"got {n} images but {len(t)} targets: give one target per image "
                         "(or a single int for all)")
    return t.long()


def resolve_target(target: torch.Tensor | int | None, logits: torch.Tensor) -> torch.Tensor:
    """The per-image class to explain: the prediction for None, else the given class(es), range-checked.

    Parameters
    ----------
    target : torch.Tensor, int or None
        As :func:`check_target_length` returns it.
    logits : torch.Tensor
        N×K logits.

    Returns
    -------
    torch.Tensor
        N int64 classes, on the logits' device.

    Raises
    ------
    BadInput
        If a class is outside 0..K−1.

    Examples
    --------
    >>> import torch
    >>> resolve_target(None, torch.tensor([[0.0, 1.0], [2.0, 1.0]])).tolist()
    [1, 0]
    >>> resolve_target(5, torch.zeros(2, 3))
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: target class 5 is out of range: the model has 3 classes (0..2)
    """
    n, k = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    if isinstance(target, int):
        require(0 <= target < k, f"target class {target} is out of range: the model has {k} classes (0..{k - 1})")
        return torch.full((n,), target, dtype=torch.long, device=logits.device)
    bad = (target < 0) | (target >= k)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise BadInput(f"target class {int(target[i])} (image {i}) is out of range: the model has {k} classes "
                       f"(0..{k - 1})")
    return target.to(logits.device)


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max scale each map (N×… per image) to [0, 1]; a constant map becomes all zeros.

    Parameters
    ----------
    maps : torch.Tensor
        N maps of any shape N×….
    eps : float, default 1e-12
        A map whose range is at most ``eps`` counts as constant.

    Returns
    -------
    torch.Tensor
        The same shape, each map in [0, 1].

    Examples
    --------
    >>> import torch
    >>> normalize_maps(torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])).tolist()
    [[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]
    """
    flat = maps.flatten(1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > eps, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int], normalize: bool = True) -> torch.Tensor:
    """Resize N×1×h×w maps to ``size`` (bilinear, ``align_corners=False``), optionally min-max per map.

    Parameters
    ----------
    maps : torch.Tensor
        N×1×h×w maps.
    size : tuple of int
        ``(H, W)``, usually the input's.
    normalize : bool, default True
        Min-max scale each resized map to [0, 1] (:func:`normalize_maps`).

    Returns
    -------
    torch.Tensor
        N×1×H×W.

    Raises
    ------
    BadInput
        If ``maps`` is not 4-dimensional.

    Examples
    --------
    >>> import torch
    >>> upsample(torch.rand(2, 1, 4, 4), (8, 8)).shape
    torch.Size([2, 1, 8, 8])
    """
    require(maps.ndim == 4, f"maps must be N×1×h×w, got shape {tuple(maps.shape)}")
    out = maps if tuple(maps.shape[-2:]) == tuple(size) else F.interpolate(
        maps, size=tuple(size), mode="bilinear", align_corners=False)
    return normalize_maps(out) if normalize else out


def combine_maps(maps: Sequence[torch.Tensor], size: tuple[int, int], *, mode: str = "geometric",
                 weights: Sequence[float] | None = None) -> torch.Tensor:
    """Combine per-layer maps as NormGrad does across layers (Rebuffi et al. 2020, Sec. 3.3).

    Each map is resized to ``size`` and min-max normalised; ``mode="geometric"`` takes the weighted
    geometric mean ∏ m_l^{w_l} (weights summing to 1; with uniform weights a monotone function of the
    authors' plain product, so the same ranking), ``mode="sum"`` the weighted sum Σ w_l m_l. The
    result is min-max normalised again. The order of the layers does not matter.

    Parameters
    ----------
    maps : sequence of torch.Tensor
        One N×1×h×w map per layer (resolutions may differ); at least one.
    size : tuple of int
        ``(H, W)`` of the result.
    mode : {"geometric", "sum"}, default "geometric"
        How to combine.
    weights : sequence of float, optional
        One weight ≥ 0 per map, not all zero (normalised to sum 1; default uniform).

    Returns
    -------
    torch.Tensor
        N×1×H×W, each map in [0, 1].

    Raises
    ------
    BadInput
        For no maps, an unknown mode, or weights of the wrong number or sign.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.tensor([[[[0.0, 1.0, 4.0]]]]), torch.tensor([[[[0.0, 1.0, 1.0]]]])
    >>> [round(v, 4) for v in combine_maps([a, b], (1, 3)).flatten().tolist()]
    [0.0, 0.5, 1.0]
    >>> [round(v, 4) for v in combine_maps([a, b], (1, 3), mode="sum").flatten().tolist()]
    [0.0, 0.625, 1.0]
    """
    require(len(maps) > 0, "no maps to combine")
    require(mode in ("geometric", "sum"), f"unknown combination mode {mode!r}: use 'geometric' or 'sum'")
    if weights is None:
        w = torch.full((len(maps),), 1.0 / len(maps))
    else:
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        require(len(w) == len(maps), f"{len(maps)} layers but {len(w)} weights")
        require(bool((w >= 0).all()) and float(w.sum()) > 0, f"weights must be >= 0 and not all zero, got "
                                                               f"{w.tolist()}")
        w = w / w.sum()
    ups = torch.stack([upsample(m.float(), size) for m in maps])  # L×N×1×H×W
    wv = w.to(ups).view(-1, 1, 1, 1, 1)
    if mode == "sum":
        out = (wv * ups).sum(0)
    else:
        out = torch.exp((wv * torch.log(ups.clamp_min(1e-12))).sum(0))
    return normalize_maps(out)


class LayerSaliency(LayerAttribution, GradientAttribution):
    """Base of the saliency methods: layer resolution, capture, target handling and checks.

    Subclasses set ``name``, ``needs_gradients``, ``needs_layer_inputs`` and implement
    :meth:`maps_from` (a :class:`LayerCapture` → N×1×h×w map per layer).

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier (adapted with :func:`workbench.adapter.as_model`).
    layers : str, nn.Module, sequence of them, or None
        The layer(s) to explain at (default ``None``: the model's default CAM layer, see
        :func:`resolve_default_layers`); each at most once.

    Returns
    -------
    A LayerSaliency (a captum ``LayerAttribution``)
        ``attribute(inputs, target)`` gives N×1×h×w maps.

    Raises
    ------
    BadInput
        For unknown or repeated layers, or no layer and no way to find the default.
    """

    name = "saliency"
    needs_gradients = True
    needs_layer_inputs = False
    uses_target = True

    def __init__(self, model: nn.Module, layers: LayerSpec = None):
        model = as_model(model)
        layers = resolve_default_layers(model, layers, None)
        named = resolve_layers(model, layers)
        names = [n for n, _ in named]
        require(len(set(names)) == len(names), f"a layer is given twice: {names}")
        self.model = model
        self.layer_names = names
        self.layer_modules = [m for _, m in named]
        LayerAttribution.__init__(self, model, self.layer_modules if len(names) > 1 else self.layer_modules[0])
        GradientAttribution.__init__(self, model)
        self._check_layer_types()

    # ---------------------------------------------------------------- hooks for subclasses
    def _check_layer_types(self) -> None:
        """Subclasses reject layers they cannot use (e.g. proper NormGrad needs a Conv2d)."""

    def maps_from(self, cap: LayerCapture) -> dict[str, torch.Tensor]:
        """The method's maps from one capture (implemented by each method).

        Parameters
        ----------
        cap : LayerCapture
            What the forward (and backward) saw.

        Returns
        -------
        dict of str to torch.Tensor
            Layer name → N×1×h×w map.
        """
        raise NotImplementedError

    def settings(self) -> dict:
        """The method's options (for reports and for rebuilding it on another model).

        Returns
        -------
        dict
            Keyword arguments of the constructor (empty for the base class).
        """
        return {}

    def clone_for(self, model: nn.Module) -> LayerSaliency:
        """The same method and layers on another model with the same layer names.

        Parameters
        ----------
        model : nn.Module
            The other model (e.g. a randomised copy).

        Returns
        -------
        LayerSaliency
            A new method of the same type and settings.
        """
        return type(self)(model, list(self.layer_names), **self.settings())

    @property
    def multiplies_by_inputs(self) -> bool:
        """Captum's flag: the maps are not multiplied by the inputs.

        Returns
        -------
        bool
            False.
        """
        return False

    def has_convergence_delta(self) -> bool:
        return False

    # ---------------------------------------------------------------- capture
    def layout_of(self, name: str, a: torch.Tensor | None, input_shape: tuple[int, ...]):
        """How layer ``name``'s output ``a`` is read as N×C×H×W (:func:`workbench.layers.spatial_layout`).

        Parameters
        ----------
        name : str
            One of the method's layers.
        a : torch.Tensor or None
            Its output (``None`` if it did not run).
        input_shape : tuple of int
            ``(C, H, W)`` of the inputs.

        Returns
        -------
        Layout
            The layout.

        Raises
        ------
        BadInput
            If the layer did not run or is not spatial (the message lists the spatial layers).
        """
        if a is None:
            raise BadInput(f"layer {name!r} did not run in the forward pass of this model")
        module = self.layer_modules[self.layer_names.index(name)]
        try:
            return spatial_layout(name, a, tuple(input_shape[-2:]), module)
        except BadInput as exc:
            msg = str(exc).split(". Saliency maps")[0]
            raise BadInput(f"{msg}: saliency maps need a spatial layer (N×C×H×W, N×H×W×C or tokens); spatial "
                           f"layers: {', '.join(spatial_layers(self.model, input_shape))}") from None

    def capture(self, inputs: torch.Tensor, target: TargetSpec = None) -> LayerCapture:
        """One forward (eval mode) and, for gradient methods, one backward to the captured layers.

        Parameters
        ----------
        inputs : torch.Tensor
            N×C×H×W images.
        target : int, sequence of int, torch.Tensor or None
            The class(es) to explain (default: the predicted class).

        Returns
        -------
        LayerCapture
            Activations (and gradients, layer inputs) per layer as N×C×h×w, logits and target.

        Raises
        ------
        BadInput
            For bad inputs or targets, or a layer that did not run or is not spatial.
        """
        x = check_inputs(inputs, self.model)
        t = check_target_length(target, len(x))
        need_grad = self.needs_gradients
        with eval_mode(self.model), torch.set_grad_enabled(need_grad), capture_layers(
                self.model, self.layer_names, keep_inputs=self.needs_layer_inputs, detach=not need_grad) as cap:
            if need_grad:
                # Activations must be part of a graph even if the weights are frozen; the backward
                # below still stops at the captured layers (autograd.grad with those as inputs).
                x = x.requires_grad_(True)
            logits = self.model(x)
        acts, layouts = {}, {}
        for name in self.layer_names:
            layouts[name] = self.layout_of(name, cap.activations.get(name), tuple(x.shape[1:]))
            acts[name] = cap.activations[name]
        tgt = resolve_target(t, logits)
        out = LayerCapture(activations={n: layouts[n].to_nchw(a.detach()) for n, a in acts.items()},
                           logits=logits.detach(), target=tgt, layouts={n: str(v) for n, v in layouts.items()})
        if self.needs_layer_inputs:
            out.inputs = {n: cap.inputs[n].detach() for n in self.layer_names}
        if need_grad:
            score = logits.gather(1, tgt[:, None]).sum()
            grads = torch.autograd.grad(score, [acts[n] for n in self.layer_names], allow_unused=True)
            out.gradients = {n: layouts[n].to_nchw(g if g is not None else torch.zeros_like(acts[n]))
                             for n, g in zip(self.layer_names, grads)}
        return out

    # ---------------------------------------------------------------- public API
    def attribute_layers(self, inputs: torch.Tensor, target: TargetSpec = None) -> dict[str, torch.Tensor]:
        """N×1×h×w maps for every layer, from one forward and one backward.

        Parameters
        ----------
        inputs : torch.Tensor
            N×C×H×W images.
        target : int, sequence of int, torch.Tensor or None
            The class(es) to explain (default: the predicted class).

        Returns
        -------
        dict of str to torch.Tensor
            Layer name → N×1×h×w map at that layer's resolution.
        """
        return self.maps_from(self.capture(inputs, target))

    def attribute(self, inputs: torch.Tensor, target: TargetSpec = None):  # type: ignore[override]
        """N×1×h×w map at the layer's resolution (a tuple, one per layer, for several layers).

        Parameters
        ----------
        inputs : torch.Tensor
            N×C×H×W images.
        target : int, sequence of int, torch.Tensor or None
            The class(es) to explain (default: the predicted class).

        Returns
        -------
        torch.Tensor or tuple of torch.Tensor
            The map, or one map per layer in the order the layers were given.
        """
        maps = self.attribute_layers(inputs, target)
        if len(self.layer_names) == 1:
            return maps[self.layer_names[0]]
        return tuple(maps[n] for n in self.layer_names)

    def attribute_upsampled(self, inputs: torch.Tensor, target: TargetSpec = None) -> dict[str, torch.Tensor]:
        """Every layer's map resized to the input (bilinear) and min-max normalised per map.

        Parameters
        ----------
        inputs : torch.Tensor
            N×C×H×W images.
        target : int, sequence of int, torch.Tensor or None
            The class(es) to explain (default: the predicted class).

        Returns
        -------
        dict of str to torch.Tensor
            Layer name → N×1×H×W map in [0, 1].
        """
        size = tuple(inputs.shape[-2:])
        return {n: upsample(m, size) for n, m in self.attribute_layers(inputs, target).items()}

    def attribute_combined(self, inputs: torch.Tensor, target: TargetSpec = None, *, mode: str = "geometric",
                           weights: Sequence[float] | None = None) -> torch.Tensor:
        """The layers' maps combined (see :func:`combine_maps`) from one forward and one backward.

        Parameters
        ----------
        inputs : torch.Tensor
            N×C×H×W images.
        target : int, sequence of int, torch.Tensor or None
            The class(es) to explain (default: the predicted class).
        mode : {"geometric", "sum"}, default "geometric"
            How to combine.
        weights : sequence of float, optional
            One weight per layer (default uniform).

        Returns
        -------
        torch.Tensor
            N×1×H×W in [0, 1].
        """
        maps = self.attribute_layers(inputs, target)
        return combine_maps([maps[n] for n in self.layer_names], tuple(inputs.shape[-2:]), mode=mode,
                            weights=weights)
