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

from .adapter import model_device, model_mode
from .errors import BadInput, require
from .layers import default_feature_layer, first_tensor, get_layer, layer_name_of, split_feature_layer


@dataclass
class Captured:
    """What the hooks saw, keyed by layer name.

    Parameters
    ----------
    activations : dict of str to torch.Tensor
        Each layer's output (the first tensor of a tuple output), as the forward produced it.
    gradients : dict of str to torch.Tensor
        The gradient flowing into each output during backward (with ``retain_grad``); same shape.
    inputs : dict of str to torch.Tensor
        Each layer's first input (with ``keep_inputs``).

    Returns
    -------
    A Captured (dataclass), filled in by :func:`capture_layers` as passes run.
    """

    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)


def resolve_layers(model: nn.Module, layers: str | nn.Module | Sequence[str | nn.Module]
                   ) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for each layer given by name or module; errors list the valid names.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model.
    layers : str, nn.Module or sequence of them
        Dotted layer names or modules of the model; at least one.

    Returns
    -------
    list of (str, nn.Module)
        The layers in the order given, each with its name.

    Raises
    ------
    BadInput
        If no layer is given, a name is unknown (the message lists the valid ones), a module is not
        part of the model, or the model cannot run hooks.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> resolve_layers(net, "1")
    [('1', ReLU())]
    """
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

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model.
    layers : str, nn.Module or sequence of them
        The layers to record (see :func:`resolve_layers`).
    keep_inputs : bool, default False
        Also record each layer's first input.
    retain_grad : bool, default False
        Also record the gradient into each output during backward.
    detach : bool, default False
        Store detached activations and inputs.
    offsets : dict of str to torch.Tensor, optional
        Tensors added to the named layers' outputs (broadcast to their shape).

    Returns
    -------
    contextlib.AbstractContextManager of Captured
        Yields the :class:`Captured` that the passes run inside the block fill; later passes overwrite
        earlier ones. The hooks are removed on exit.

    Raises
    ------
    BadInput
        If a layer is unknown, or (during a forward) a layer returns no tensor.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> with capture_layers(net, ["0", "1"], retain_grad=True) as cap:
    ...     net(torch.rand(4, 1, 8, 8)).sum().backward()
    >>> cap.activations["1"].shape, cap.gradients["1"].shape
    (torch.Size([4, 2, 6, 6]), torch.Size([4, 2, 6, 6]))
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
    """The output of ``layer`` for every image, on the CPU, in batches without gradients.

    ``layer`` defaults to the model's penultimate features, see
    :func:`workbench.layers.default_feature_layer`; with ``inputs=True`` (or a layer named
    ``"NAME:input"``) the layer's (first) input instead, e.g. what a classifier head reads. The model
    runs in eval mode; its mode is restored afterwards.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model.
    images : torch.Tensor
        N×C×H×W images (moved batch by batch to the model's device).
    layer : str or nn.Module, optional
        The layer (default ``None``: the penultimate features).
    batch_size : int, default 512
        Images per forward; memory is bounded by it.
    flatten : bool, default True
        Flatten each output to one vector.
    inputs : bool, default False
        Take the layer's input instead of its output.

    Returns
    -------
    torch.Tensor
        float32 on the CPU: N×D when flattened, else N×(the layer's output shape).

    Raises
    ------
    BadInput
        If the layer is unknown or the model has no default feature layer.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> layer_outputs(net, torch.zeros(5, 1, 8, 8)).shape  # the input of the last Linear
    torch.Size([5, 72])
    >>> layer_outputs(net, torch.zeros(5, 1, 8, 8), "1", flatten=False).shape
    torch.Size([5, 2, 6, 6])
    """
    if layer is None:
        layer = default_feature_layer(model, tuple(images.shape[1:]))
    if isinstance(layer, str):
        layer, as_input = split_feature_layer(layer)
        inputs = inputs or as_input
    dev = model_device(model)
    out = None
    n = len(images)
    with model_mode(model):
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
    return out if out is not None else torch.empty(0)
