"""Meta-saliency (Rebuffi et al., "There and Back Again", CVPR 2020, Sec. 4).

Take one SGD step on the cross-entropy of the explained class, θ' = θ − η ∇_θ CE(f_θ(x), c)
(η = 0.0025 by default), and compute a saliency method at θ'. The paper shows that this sharpens
class sensitivity (Sec. 5.3).

Implementation: everything is functional (:func:`torch.func.functional_call`): the model's own
parameters, buffers and flags are never written, so it is left exactly as it was (the authors'
TorchRay ``meta_saliency`` instead steps an optimizer and reloads a saved state dict). BatchNorm
runs in eval mode (statistics frozen). Where we differ: the step is taken **per image** (vectorised
with :func:`torch.func.vmap`), so each image's map depends on that image only, as with the authors'
batch of one; a batched SGD step on the mean loss would mix the images of a batch.

The gradient at a layer under per-image weights is obtained by adding a zero tensor δ to the
layer's output and differentiating the class score with respect to δ (∂y/∂δ = ∂y/∂z), all inside
``torch.func.grad``, through the ``offsets`` option of the shared ``hooks.capture_layers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..errors import check_in_range
from ..hooks import capture_layers
from .base import (
    LayerCapture,
    LayerSaliency,
    TargetSpec,
    check_inputs,
    check_target_length,
    eval_mode,
    resolve_target,
)


def meta_capture(method: LayerSaliency, inputs: torch.Tensor, target: TargetSpec = None, *,
                 lr: float = 0.0025) -> LayerCapture:
    """What ``method.capture`` returns, but at per-image weights θ'_i after one SGD step on image i.

    Parameters
    ----------
    method : LayerSaliency
        The saliency method whose layers are captured.
    inputs : torch.Tensor
        N×C×H×W images.
    target : int, sequence of int, torch.Tensor or None
        The class(es) c to explain (default: the prediction at θ).
    lr : float, default 0.0025
        The SGD step η, in (0, 10].

    Returns
    -------
    LayerCapture
        Activations, gradients (and layer inputs if the method needs them) at θ'_i, the logits at
        θ'_i and the target.

    Raises
    ------
    BadInput
        For η out of range, bad inputs or targets, or a layer that is not spatial.
    """
    check_in_range("meta-saliency learning rate", lr, 0, 10, low_open=True)
    model = method.model
    x = check_inputs(inputs, model)
    t = check_target_length(target, len(x))
    names = method.layer_names
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    with eval_mode(model):
        with torch.no_grad(), capture_layers(model, names, detach=True) as cap:
            logits0 = functional_call(model, (params, buffers), (x,))
        layouts = {n: method.layout_of(n, cap.activations.get(n), tuple(x.shape[1:])) for n in names}
        shapes = {n: tuple(cap.activations[n].shape[1:]) for n in names}
        tgt = resolve_target(t, logits0)

        def loss_fn(p, xi, ti):
            return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), ti[None])

        steps = vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, x, tgt)
        new_params = {k: params[k][None] - lr * steps[k] for k in params}

        def score(deltas, p, xi, ti):
            with capture_layers(model, names, keep_inputs=True, offsets=deltas) as c:
                out = functional_call(model, (p, buffers), (xi[None],))
            acts = {n: c.activations[n][0] for n in names}
            ins = {n: c.inputs[n][0] for n in names}
            return (out[0] * ti).sum(), (acts, ins, out[0])

        zeros = {n: torch.zeros((1, *shapes[n]), device=x.device, dtype=x.dtype) for n in names}

        def per_image(p, xi, ti):
            g, aux = grad(score, has_aux=True)(zeros, p, xi, ti)
            return {n: g[n][0] for n in names}, *aux

        onehot = F.one_hot(tgt, logits0.shape[1]).to(logits0.dtype)
        grads, acts, ins, logits = vmap(per_image)(new_params, x, onehot)
    cap_out = LayerCapture(activations={n: layouts[n].to_nchw(acts[n].detach()) for n in names},
                           gradients={n: layouts[n].to_nchw(grads[n].detach()) for n in names},
                           logits=logits.detach(), target=tgt, layouts={n: str(v) for n, v in layouts.items()})
    if method.needs_layer_inputs:
        cap_out.inputs = {n: ins[n].detach() for n in names}
    return cap_out


class MetaSaliency(LayerSaliency):
    """Wrap a saliency method so that it is computed after one per-image SGD step (meta-saliency).

    Parameters
    ----------
    method : LayerSaliency
        The method to wrap (its model and layers are used).
    lr : float, default 0.0025
        The SGD step η, in (0, 10].

    Returns
    -------
    A MetaSaliency (a :class:`~workbench.saliency.base.LayerSaliency` named ``meta-<method>``)
        ``attribute(inputs, target)`` gives the method's maps at θ'.

    Raises
    ------
    BadInput
        If η is out of range.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> from workbench.saliency.normgrad import NormGrad
    >>> meta = MetaSaliency(NormGrad(net, "1"))
    >>> meta.name, meta.attribute(torch.rand(2, 1, 8, 8)).shape
    ('meta-normgrad', torch.Size([2, 1, 8, 8]))
    """

    def __init__(self, method: LayerSaliency, *, lr: float = 0.0025):
        check_in_range("meta-saliency learning rate", lr, 0, 10, low_open=True)
        self.inner = method
        self.lr = float(lr)
        self.name = f"meta-{method.name}"
        self.needs_gradients = True
        self.needs_layer_inputs = method.needs_layer_inputs
        super().__init__(method.model, list(method.layer_names))

    def settings(self) -> dict:
        return {"lr": self.lr, **self.inner.settings()}

    def clone_for(self, model) -> MetaSaliency:
        return MetaSaliency(self.inner.clone_for(model), lr=self.lr)

    def capture(self, inputs, target=None) -> LayerCapture:
        return meta_capture(self.inner, inputs, target, lr=self.lr)

    def maps_from(self, cap: LayerCapture) -> dict[str, torch.Tensor]:
        return self.inner.maps_from(cap)


def meta_saliency(method: LayerSaliency, inputs: torch.Tensor, target: TargetSpec = None, *,
                  lr: float = 0.0025) -> dict[str, torch.Tensor]:
    """``method``'s N×1×h×w maps per layer, computed at θ' (one SGD step per image); model untouched.

    Parameters
    ----------
    method : LayerSaliency
        The saliency method.
    inputs : torch.Tensor
        N×C×H×W images.
    target : int, sequence of int, torch.Tensor or None
        The class(es) to explain (default: the prediction).
    lr : float, default 0.0025
        The SGD step η, in (0, 10].

    Returns
    -------
    dict of str to torch.Tensor
        Layer name → N×1×h×w map.

    Raises
    ------
    BadInput
        As :func:`meta_capture`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> from workbench.saliency.normgrad import NormGrad
    >>> before = {k: v.clone() for k, v in net.state_dict().items()}
    >>> maps = meta_saliency(NormGrad(net, "1"), torch.rand(2, 1, 8, 8))
    >>> maps["1"].shape, all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    (torch.Size([2, 1, 8, 8]), True)
    """
    return method.maps_from(meta_capture(method, inputs, target, lr=lr))
