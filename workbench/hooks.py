"""Capture activations and gradients of named layers: the one hook mechanism every method reuses.

``capture_layers`` is a context manager: the hooks are removed on exit, also on error, so nothing
leaks into a model cached by the app. Gradients are captured with ``Tensor.register_hook`` on the
layer's output, so a backward pass that stops at the deepest needed layer
(``torch.autograd.grad(y, [activations])``) gives both without touching parameter gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .adapter import model_device
from .errors import BadInput, require
from .layers import default_feature_layer, first_tensor, get_layer, layer_name_of, split_feature_layer


@dataclass
class Captured:
    """What the hooks saw, keyed by layer name."""

    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)


def resolve_layers(model: nn.Module, layers: str | nn.Module | Sequence[str | nn.Module]
                   ) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for each layer given by name or module; errors list the valid names."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    require(len(layers) > 0, "no layers given")
    out = []
    for layer in layers:
        mod = get_layer(model, layer)
        out.append((layer if isinstance(layer, str) else layer_name_of(model, mod), mod))
    return out


@contextmanager
def capture_layers(model: nn.Module, layers, *, keep_inputs: bool = False,
                   retain_grad: bool = False, detach: bool = False,
                   offsets: dict[str, torch.Tensor] | None = None) -> Iterator[Captured]:
    """Record each layer's output (and input with ``keep_inputs``) during forward passes.

    ``retain_grad`` also records the gradient flowing into each output during backward.
    ``detach`` stores detached activations (feature extraction under ``no_grad``).
    ``offsets`` maps layer names to tensors added to those layers' outputs (the recorded activation
    is the output before the offset): differentiating with respect to a zero offset gives the
    gradient at that layer inside ``torch.func`` transforms, where tensor hooks do not run.
    """
    named = resolve_layers(model, layers)
    cap = Captured()
    handles = []
    for name, mod in named:

        def fwd(_m, inputs, output, name=name):
            tensor = first_tensor(output)
            if tensor is None:
                raise BadInput(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            cap.activations[name] = tensor.detach() if detach else tensor
            if keep_inputs:
                x = inputs[0] if isinstance(inputs, tuple) else inputs
                cap.inputs[name] = x.detach() if detach else x
            if retain_grad and tensor.requires_grad:
                tensor.register_hook(lambda g, name=name: cap.gradients.__setitem__(name, g))
            if offsets is not None and name in offsets:
                if tensor is output:
                    return output + offsets[name]
                return (tensor + offsets[name], *output[1:])
            return None

        handles.append(mod.register_forward_hook(fwd))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def layer_outputs(model: nn.Module, images: torch.Tensor, layer: str | nn.Module | None = None, *,
                  batch_size: int = 512, flatten: bool = True, inputs: bool = False) -> torch.Tensor:
    """The output of ``layer`` (default: the model's penultimate features, see
    :func:`workbench.layers.default_feature_layer`) for every image, on the CPU; with ``inputs=True``
    (or a layer named ``"NAME:input"``) the layer's (first) input instead, e.g. what a classifier head
    reads."""
    if layer is None:
        layer = default_feature_layer(model, tuple(images.shape[1:]))
    if isinstance(layer, str):
        layer, as_input = split_feature_layer(layer)
        inputs = inputs or as_input
    dev = model_device(model)
    was_training = model.training
    model.eval()
    out = None
    n = len(images)
    try:
        with capture_layers(model, layer, keep_inputs=inputs, detach=True) as cap:
            name = next(iter(resolve_layers(model, layer)))[0]
            store = cap.inputs if inputs else cap.activations
            for i in range(0, n, batch_size):
                model(images[i:i + batch_size].to(dev))
                a = store[name].float().cpu()
                a = a.flatten(1) if flatten else a
                if out is None:  # one N×D result filled in place: no per-batch pieces pinning the heap
                    out = torch.empty((n, *a.shape[1:]), dtype=torch.float32)
                out[i:i + len(a)] = a
                del a
                store.clear()
    finally:
        model.train(was_training)
    return out if out is not None else torch.empty(0)
