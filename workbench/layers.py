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
from dataclasses import dataclass

import torch
from torch import nn

from .errors import BadInput, require

#: Feature-layer suffix meaning "the layer's input" (e.g. ``"classifier:input"``).
INPUT_SUFFIX = ":input"
LAYOUTS = ("nchw", "nhwc", "tokens")
MAX_PREFIX_TOKENS = 8


def layer_root(model) -> nn.Module | None:
    """The module whose named submodules are the model's layers (the wrapped model for an adapter)."""
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
    """``(name, module)`` for every named submodule, in registration order (no adapter prefix)."""
    return [(n, m) for n, m in _root_or_error(model).named_modules() if n]


def layer_names(model) -> list[str]:
    """Every layer name of ``model`` (dotted, as ``named_modules`` gives them)."""
    return [n for n, _ in named_layers(model)]


def split_feature_layer(layer: str) -> tuple[str, bool]:
    """``"fc:input"`` → ``("fc", True)``; ``"relu5"`` → ``("relu5", False)``."""
    if layer.endswith(INPUT_SUFFIX):
        return layer[: -len(INPUT_SUFFIX)], True
    return layer, False


def require_hooks(model) -> None:
    """Raise ``BadInput`` when ``model`` cannot run forward hooks (e.g. TorchScript)."""
    if getattr(model, "hooks_supported", True) is False:
        raise BadInput(getattr(model, "hooks_error", None) or "this model does not support layer hooks")


def get_layer(model, layer: str | nn.Module) -> nn.Module:
    """The submodule named ``layer`` (e.g. ``"layer2.1.conv1"``); the error lists the valid names."""
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
    """The dotted name of ``module`` inside ``model``."""
    root = layer_root(model)
    if root is not None:
        for n, m in root.named_modules():
            if m is module:
                return n
        raise BadInput("the given layer module is not part of the model")
    return f"<{type(module).__name__}>"


def first_tensor(output) -> torch.Tensor | None:
    """A module's output if it is a tensor, else the first tensor of a tuple/list output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@dataclass
class LayerInfo:
    """A layer's name, type, output shape without the batch axis (None if not a tensor) and parameters."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int


def _probe_device(model) -> torch.device:
    root = layer_root(model)
    p = next(root.parameters(), None) if root is not None else None
    return p.device if p is not None else torch.device("cpu")


def describe_layers(model, input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """Every named layer with its type, output shape (one forward on zeros) and parameter count."""
    require_hooks(model)
    root = _root_or_error(model)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, mod in root.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            t = first_tensor(out)
            if t is not None:
                shapes[name] = tuple(t.shape[1:])

        handles.append(mod.register_forward_hook(hook))
    flags = [(m, m.training) for m in root.modules()]
    try:
        root.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_probe_device(model)))
    finally:
        for h in handles:
            h.remove()
        for m, f in flags:
            m.training = f
    return [LayerInfo(n, type(m).__name__, shapes.get(n), sum(p.numel() for p in m.parameters(recurse=False)))
            for n, m in root.named_modules() if n]


# ---------------------------------------------------------------- spatial views of layer outputs
@dataclass(frozen=True)
class Layout:
    """How a layer's output becomes N×C×H×W: ``kind`` in :data:`LAYOUTS`, ``prefix`` tokens dropped,
    ``grid`` (h, w) of the tokens."""

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.kind == "tokens":
            return f"tokens ({self.prefix} prefix token{'s' if self.prefix != 1 else ''} dropped, " \
                   f"{self.grid[0]}×{self.grid[1]} grid)"
        return self.kind

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """The N×C×H×W view of a tensor of this layout (activations and their gradients alike)."""
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
    """The model's penultimate features: its declared ``feature_layer``, else the *input* of the last
    ``nn.Linear`` to run (``"NAME:input"``), i.e. what the classifier head reads."""
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
    """Layer names in the order their forward calls *finish* on one probe input."""
    require_hooks(model)
    root = _root_or_error(model)
    order: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n))
               for n, m in root.named_modules() if n]
    flags = [(m, m.training) for m in root.modules()]
    try:
        root.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_probe_device(model)))
    finally:
        for h in handles:
            h.remove()
        for m, f in flags:
            m.training = f
    return order


def default_cam_layer(model, input_shape: tuple[int, ...]) -> str:
    """The model's declared ``default_cam_layer``, else the last layer (in execution order) with a
    spatial output larger than 1×1 whose gradient for the predicted class is not identically zero
    (so a transformer's final norm, which only the class token leaves, is skipped), leaf projections
    (``nn.Linear`` on tokens) excluded."""
    declared = getattr(model, "default_cam_layer", None)
    if declared:
        return declared
    require_hooks(model)
    root = _root_or_error(model)
    hw = tuple(input_shape[-2:])
    modules = dict(root.named_modules())
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

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n)) for n, m in modules.items() if n]
    flags = [(m, m.training) for m in root.modules()]
    try:
        root.eval()
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(2, *input_shape, generator=gen).to(_probe_device(model)).requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    finally:
        for h in handles:
            h.remove()
        for m, f in flags:
            m.training = f
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
