"""Layers of any model: lookup by the user's own dotted names, output shapes, spatial views, defaults.

Every method names layers the way the user's model does (``"layer2.1.conv1"``,
``"convnext.encoder.stages.3"``): a :class:`~workbench.adapter.ModelAdapter` wrapping the model adds
no prefix, because lookups go through :func:`layer_root`.

Real architectures do not all give N×C×H×W activations. :func:`spatial_layout` tells how a layer's
output maps to a spatial N×C×H×W view:

- ``"nchw"``: convolution-style output, used as it is;
- ``"nhwc"``: channels-last output (ConvNeXt's ``pwconv1`` is an ``nn.Linear`` applied to N×H×W×C),
  permuted;
- ``"tokens:k"``: vision-transformer tokens N×(k + h·w)×C, the first ``k`` (class, distillation or
  register tokens) dropped and the rest reshaped to h×w (what pytorch-grad-cam's ``reshape_transform``
  does by hand for ViT).

Anything else raises :class:`~workbench.errors.BadInput` naming the shape. :func:`default_cam_layer`
and :func:`default_feature_layer` find sensible defaults for a model that declares none: the last
spatial layer whose map is not identically zero for the predicted class, and the input of the last
``nn.Linear`` (the classifier head's input).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .adapter import model_mode
from .errors import BadInput, require

#: Feature-layer suffix meaning "the layer's input" (e.g. ``"classifier:input"``).
INPUT_SUFFIX = ":input"
LAYOUTS = ("nchw", "nhwc", "tokens")
MAX_PREFIX_TOKENS = 8


def layer_root(model) -> nn.Module | None:
    """The module whose named submodules are the model's layers (the wrapped model for an adapter).

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).

    Returns
    -------
    nn.Module or None
        The adapter's ``layer_root``, ``model`` itself for a plain ``nn.Module``, ``None`` for a plain
        callable without modules.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> layer_root(net) is net
    True
    """
    root = getattr(model, "layer_root", None)
    if root is not None or hasattr(model, "layer_root"):
        return root
    return model if isinstance(model, nn.Module) else None


def _root_or_error(model) -> nn.Module:
    root = layer_root(model)
    if root is None:
        raise BadInput("this model is a plain callable without modules, so its layers cannot be named: wrap it "
                       "with as_model(fn, module=the nn.Module that holds its layers), or pass layer modules "
                       "instead of names")
    return root


def named_layers(model) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every named submodule, in registration order (no adapter prefix).

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).

    Returns
    -------
    list of (str, nn.Module)
        Every submodule with its dotted name; the root itself is left out.

    Raises
    ------
    BadInput
        If ``model`` is a plain callable without modules.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> named_layers(net)[0]
    ('0', Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1)))
    """
    return [(n, m) for n, m in _root_or_error(model).named_modules() if n]


def layer_names(model) -> list[str]:
    """Every layer name of ``model`` (dotted, as ``named_modules`` gives them).

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).

    Returns
    -------
    list of str
        The names in registration order, without the root's empty name.

    Raises
    ------
    BadInput
        If ``model`` is a plain callable without modules.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> layer_names(net)
    ['0', '1', '2', '3']
    """
    return [n for n, _ in named_layers(model)]


def split_feature_layer(layer: str) -> tuple[str, bool]:
    """Split the ``":input"`` suffix (:data:`INPUT_SUFFIX`) off a feature-layer name.

    ``"fc:input"`` → ``("fc", True)``; ``"relu5"`` → ``("relu5", False)``.

    Parameters
    ----------
    layer : str
        A layer name, optionally ending in ``":input"`` (meaning the layer's input, not its output).

    Returns
    -------
    tuple of (str, bool)
        The layer name without the suffix, and whether the suffix was there.

    Examples
    --------
    >>> split_feature_layer("fc:input")
    ('fc', True)
    >>> split_feature_layer("relu5")
    ('relu5', False)
    """
    if layer.endswith(INPUT_SUFFIX):
        return layer[: -len(INPUT_SUFFIX)], True
    return layer, False


def require_hooks(model) -> None:
    """Raise ``BadInput`` when ``model`` cannot run forward hooks (e.g. TorchScript).

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model; an adapter says so with ``hooks_supported`` (others are assumed to support hooks).

    Returns
    -------
    None

    Raises
    ------
    BadInput
        If the model cannot run layer hooks; the message is the adapter's ``hooks_error``.
    """
    if getattr(model, "hooks_supported", True) is False:
        raise BadInput(getattr(model, "hooks_error", None) or "this model does not support layer hooks")


def get_layer(model, layer: str | nn.Module) -> nn.Module:
    """The submodule named ``layer`` (e.g. ``"layer2.1.conv1"``); the error lists the valid names.

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).
    layer : str or nn.Module
        A dotted layer name, or a module of the model (returned as it is).

    Returns
    -------
    nn.Module
        The layer.

    Raises
    ------
    BadInput
        If the model cannot run hooks, the name is empty or unknown (the message lists the valid names
        and close matches), or the module is not part of the model.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> get_layer(net, "0")
    Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    >>> get_layer(net, "conv")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: unknown layer 'conv'; valid layers: 0, 1, 2, 3
    """
    require_hooks(model)
    root = layer_root(model)
    if isinstance(layer, nn.Module):
        require(root is None or any(m is layer for m in root.modules()),
                "the given layer module is not part of the model")
        return layer
    require(isinstance(layer, str) and layer != "", f"a layer is named by a non-empty string, got {layer!r}")
    modules = dict(_root_or_error(model).named_modules())
    if layer in modules:
        return modules[layer]
    names = [n for n in modules if n]
    close = [n for n in names if layer in n or n.endswith(layer.split(".")[-1])][:8]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    shown = ", ".join(names) if len(names) <= 200 else ", ".join(names[:100]) + f", … ({len(names)} layers; see " \
                                                                             "`workbench info MODEL`)"
    raise BadInput(f"unknown layer {layer!r}{hint}; valid layers: {shown}")


def layer_name_of(model, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model``.

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).
    module : nn.Module
        A submodule of the model.

    Returns
    -------
    str
        Its dotted name; ``"<Type>"`` when the model is a plain callable without modules.

    Raises
    ------
    BadInput
        If ``module`` is not part of the model.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> layer_name_of(net, net[3])
    '3'
    """
    root = layer_root(model)
    if root is not None:
        for n, m in root.named_modules():
            if m is module:
                return n
        raise BadInput("the given layer module is not part of the model")
    return f"<{type(module).__name__}>"


def first_tensor(output) -> torch.Tensor | None:
    """A module's output if it is a tensor, else the first tensor of a tuple/list output.

    Parameters
    ----------
    output : Any
        What a module's forward returned.

    Returns
    -------
    torch.Tensor or None
        The tensor, or ``None`` when there is none.

    Examples
    --------
    >>> import torch
    >>> first_tensor((torch.zeros(2), "aux")).shape
    torch.Size([2])
    >>> first_tensor({"a": 1}) is None
    True
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@dataclass
class LayerInfo:
    """A layer's name, type, output shape without the batch axis (None if not a tensor) and parameters.

    Parameters
    ----------
    name : str
        The dotted layer name.
    type : str
        The module's class name (e.g. ``"Conv2d"``).
    output_shape : tuple of int or None
        The output's shape without the batch axis; ``None`` if the output is not a tensor.
    parameters : int
        The number of the layer's own parameters (not its children's).

    Returns
    -------
    A LayerInfo (dataclass) with these fields.
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int


def _probe_device(model) -> torch.device:
    root = layer_root(model)
    p = next(root.parameters(), None) if root is not None else None
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def _every_layer_hooked(root: nn.Module, hook):
    """Forward-hook every named submodule of ``root`` with ``hook(module, inputs, output, name)`` and
    put it in eval mode; on exit the hooks are removed and each module's train/eval flag restored."""
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
               for n, m in root.named_modules() if n]
    try:
        with model_mode(root):
            yield
    finally:
        for h in handles:
            h.remove()


def describe_layers(model, input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """Every named layer with its type, output shape (one forward on zeros) and parameter count.

    The probe runs in eval mode without gradients; train/eval flags are restored afterwards.

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.

    Returns
    -------
    list of LayerInfo
        One per named layer, in registration order.

    Raises
    ------
    BadInput
        If the model cannot run hooks or is a plain callable without modules.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> describe_layers(net, (1, 8, 8))[0]
    LayerInfo(name='0', type='Conv2d', output_shape=(2, 6, 6), parameters=20)
    """
    require_hooks(model)
    root = _root_or_error(model)
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(_m, _i, out, name):
        t = first_tensor(out)
        if t is not None:
            shapes[name] = tuple(t.shape[1:])

    with _every_layer_hooked(root, hook), torch.no_grad():
        model(torch.zeros(1, *input_shape, device=_probe_device(model)))
    return [LayerInfo(n, type(m).__name__, shapes.get(n), sum(p.numel() for p in m.parameters(recurse=False)))
            for n, m in root.named_modules() if n]


# ---------------------------------------------------------------- spatial views of layer outputs
@dataclass(frozen=True)
class Layout:
    """How a layer's output becomes N×C×H×W (see the module docstring).

    Parameters
    ----------
    kind : str
        One of :data:`LAYOUTS`: ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
    prefix : int, default 0
        For tokens: the number of leading (class, distillation, register) tokens dropped.
    grid : tuple of int, optional
        For tokens: ``(h, w)`` of the remaining tokens, h·w of them.

    Returns
    -------
    A Layout (frozen dataclass)
        :meth:`to_nchw` applies it.

    Examples
    --------
    >>> import torch
    >>> lay = Layout("tokens", 1, (4, 4))
    >>> lay.to_nchw(torch.zeros(2, 17, 8)).shape
    torch.Size([2, 8, 4, 4])
    >>> print(lay)
    tokens (1 prefix token dropped, 4×4 grid)
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.kind == "tokens":
            return f"tokens ({self.prefix} prefix token{'s' if self.prefix != 1 else ''} dropped, " \
                   f"{self.grid[0]}×{self.grid[1]} grid)"
        return self.kind

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """The N×C×H×W view of a tensor of this layout (activations and their gradients alike).

        Parameters
        ----------
        t : torch.Tensor
            A layer output (or its gradient) of this layout: N×C×H×W, N×H×W×C or N×T×C.

        Returns
        -------
        torch.Tensor
            A view N×C×h×w (no copy for ``nchw``).
        """
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        h, w = self.grid
        return t[:, self.prefix:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def _acts_on_last_dim(module: nn.Module | None, shape: tuple[int, ...]) -> bool | None:
    """True if ``module`` is known to act on the last axis (channels-last), False if on axis 1, else None."""
    if module is None:
        return None
    fmt = getattr(module, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return fmt == "channels_last"
    if isinstance(module, nn.Linear):
        return module.out_features == shape[-1]
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (shape[-1],)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d,
                           nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return False
    return None


def _grid_for(tokens: int, input_hw: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) with h·w = ``tokens`` and h/w equal to the input's aspect ratio, if any."""
    H, W = input_hw
    for h in range(1, tokens + 1):
        if tokens % h:
            continue
        w = tokens // h
        if h * W == w * H:
            return h, w
    if H == W:
        r = math.isqrt(tokens)
        if r * r == tokens:
            return r, r
    return None


def spatial_layout(name: str, t: torch.Tensor, input_hw: tuple[int, int], module: nn.Module | None = None,
                   layout: str | None = None) -> Layout:
    """How layer ``name``'s output ``t`` is read as N×C×H×W (see the module docstring).

    ``layout`` forces ``"nchw"``, ``"nhwc"`` or ``"tokens"`` when the automatic choice is wrong.
    Four-dimensional outputs are channels-last when the module is known to act on the last axis
    (``nn.Linear``, ``nn.LayerNorm``, ``data_format="channels_last"``) or when only the last-axis reading
    matches the input's aspect ratio; three-dimensional outputs are tokens, after dropping up to
    :data:`MAX_PREFIX_TOKENS` leading tokens so that the rest form a grid of the input's aspect ratio.

    Parameters
    ----------
    name : str
        The layer's name (for error messages).
    t : torch.Tensor
        The layer's output, 3- or 4-dimensional.
    input_hw : tuple of int
        ``(H, W)`` of the model's input images.
    module : nn.Module, optional
        The layer itself, used to tell channels-last outputs apart.
    layout : {"nchw", "nhwc", "tokens"}, optional
        Force this layout (default ``None``: decide automatically).

    Returns
    -------
    Layout
        The layout that turns ``t`` into N×C×h×w.

    Raises
    ------
    BadInput
        If ``layout`` is unknown or impossible for ``t``, or ``t`` is not spatial (the message names the
        shape and what is accepted).

    Examples
    --------
    >>> import torch
    >>> spatial_layout("blocks.0", torch.zeros(2, 17, 8), (32, 32))
    Layout(kind='tokens', prefix=1, grid=(4, 4))
    >>> spatial_layout("conv", torch.zeros(2, 8, 4, 4), (16, 16))
    Layout(kind='nchw', prefix=0, grid=None)
    """
    require(layout is None or layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    shape = tuple(t.shape)
    H, W = input_hw

    def fail(why: str):
        raise BadInput(f"layer {name!r} has output shape {shape}: {why}. Saliency maps need a spatial layer "
                       "(N×C×H×W, channels-last N×H×W×C, or transformer tokens N×T×C); `workbench info MODEL` "
                       "lists the layers with their shapes")

    if t.ndim == 4:
        if layout in ("nchw", "nhwc"):
            return Layout(layout)
        if layout == "tokens":
            fail("tokens need a 3-dimensional output")
        last = _acts_on_last_dim(module, shape)
        if last is not None:
            return Layout("nhwc" if last else "nchw")

        def same_aspect(h, w):
            return h * W == w * H

        first_ok, last_ok = same_aspect(shape[2], shape[3]), same_aspect(shape[1], shape[2])
        if last_ok and not first_ok:
            return Layout("nhwc")
        return Layout("nchw")
    if t.ndim == 3:
        require(layout in (None, "tokens"), f"layer {name!r} has output shape {shape}: a 3-dimensional output "
                                            "can only be read as tokens")
        n_tokens = shape[1]
        for k in range(0, min(MAX_PREFIX_TOKENS, n_tokens - 1) + 1):
            grid = _grid_for(n_tokens - k, input_hw)
            if grid is not None and grid[0] * grid[1] > 1:
                return Layout("tokens", k, grid)
        fail(f"its {n_tokens} tokens are not a grid of the input's aspect ratio after dropping up to "
             f"{MAX_PREFIX_TOKENS} leading tokens")
    fail("it is not spatial")
    raise AssertionError  # unreachable


# ---------------------------------------------------------------- defaults for unknown models
def _leaf_linear_names(root: nn.Module) -> list[str]:
    return [n for n, m in root.named_modules() if n and isinstance(m, nn.Linear)]


def default_feature_layer(model, input_shape: tuple[int, ...] | None = None) -> str:
    """The model's penultimate features.

    Its declared ``feature_layer``, else the *input* of the last ``nn.Linear`` to run
    (``"NAME:input"``), i.e. what the classifier head reads.

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).
    input_shape : tuple of int, optional
        ``(C, H, W)`` of one input; when given, one probe forward finds the last ``nn.Linear`` *to run*
        (default ``None``: the last one registered).

    Returns
    -------
    str
        A layer name, ending in ``":input"`` unless the model declares its own.

    Raises
    ------
    BadInput
        If the model has no ``nn.Linear`` and declares no feature layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> default_feature_layer(net, (1, 8, 8))
    '3:input'
    """
    declared = getattr(model, "feature_layer", None)
    if declared:
        return declared
    root = _root_or_error(model)
    linears = _leaf_linear_names(root)
    if not linears:
        raise BadInput(f"{type(root).__name__} has no nn.Linear classifier layer and declares no feature layer: "
                       "name the layer whose output is the embedding")
    name = linears[-1]
    if input_shape is not None:  # the last Linear *to run*, not the last registered
        order = execution_order(model, input_shape)
        ran = [n for n in order if n in set(linears)]
        name = ran[-1] if ran else name
    return name + INPUT_SUFFIX


def execution_order(model, input_shape: tuple[int, ...]) -> list[str]:
    """Layer names in the order their forward calls *finish* on one probe input.

    One forward on zeros in eval mode without gradients; train/eval flags are restored afterwards.

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.

    Returns
    -------
    list of str
        Layer names, a container after its children; a layer called twice appears twice.

    Raises
    ------
    BadInput
        If the model cannot run hooks or is a plain callable without modules.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> execution_order(net, (1, 8, 8))
    ['0', '1', '2', '3']
    """
    require_hooks(model)
    root = _root_or_error(model)
    order: list[str] = []
    with _every_layer_hooked(root, lambda _m, _i, _o, n: order.append(n)), torch.no_grad():
        model(torch.zeros(1, *input_shape, device=_probe_device(model)))
    return order


def default_cam_layer(model, input_shape: tuple[int, ...]) -> str:
    """The layer saliency maps are taken at when the user names none.

    The model's declared ``default_cam_layer``, else the last layer (in execution order) with a
    spatial output larger than 1×1 whose gradient for the predicted class is not identically zero
    (so a transformer's final norm, which only the class token leaves, is skipped), leaf projections
    (``nn.Linear`` on tokens) excluded. The probe is one forward and backward on two seeded random
    images in eval mode; flags and parameter gradients are reset afterwards.

    Parameters
    ----------
    model : nn.Module, ModelAdapter or callable
        The model (an adapter is looked through to the wrapped module).
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.

    Returns
    -------
    str
        The layer name.

    Raises
    ------
    BadInput
        If the model cannot run hooks or has no spatial layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> default_cam_layer(net, (1, 8, 8))
    '1'
    """
    declared = getattr(model, "default_cam_layer", None)
    if declared:
        return declared
    require_hooks(model)
    root = _root_or_error(model)
    hw = tuple(input_shape[-2:])
    outputs: dict[str, torch.Tensor] = {}
    layouts: dict[str, Layout] = {}
    order: list[str] = []

    def hook(mod, _i, out, name):
        t = first_tensor(out)
        if t is None or t.ndim not in (3, 4) or (t.ndim == 3 and isinstance(mod, nn.Linear)):
            return
        try:
            lay = spatial_layout(name, t, hw, mod)
        except BadInput:
            return
        view = lay.to_nchw(t)
        if view.shape[2] * view.shape[3] <= 1:
            return
        if t.requires_grad:
            t.retain_grad()
        outputs[name], layouts[name] = t, lay
        order.append(name)

    try:
        with _every_layer_hooked(root, hook):
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(2, *input_shape, generator=gen).to(_probe_device(model)).requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    finally:
        for p in root.parameters():
            p.grad = None
    for name in reversed(order):
        g = outputs[name].grad
        if g is not None and bool(layouts[name].to_nchw(g).abs().sum() > 0):
            return name
    if order:
        return order[-1]
    raise BadInput(f"{type(root).__name__} has no spatial layer (N×C×H×W, N×H×W×C or tokens) to take saliency "
                   "maps at")
