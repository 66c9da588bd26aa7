"""NormGrad (Rebuffi, Fong, Ji, Vedaldi, "There and Back Again: Revisiting Backpropagation Saliency
Methods", CVPR 2020), all the variants of the paper.

The saliency of location u is the norm of u's contribution to the gradient of the weights of a
layer (Sec. 3.1). For a real convolution y = W ⋆ x, ∂L/∂W = Σ_u g_u ⊗ unfold(x)_u with g = ∂L/∂y, and
the Frobenius norm of one term is ‖g_u‖·‖unfold(x)_u‖ (Eq. 5): **proper** NormGrad. Inserting a
*virtual identity* layer after an activation z (Sec. 3.2) gives the cheaper maps

* ``identity`` (1×1 virtual identity, Eq. 6): S(u) = ‖z_u‖·‖g_u‖, g = ∂L/∂z;
* ``identity3x3`` (3×3 virtual identity): S(u) = ‖unfold₃ₓ₃(z)_u‖·‖g_u‖ (zero padding 1);
* ``bias`` (a virtual bias): S(u) = ‖g_u‖;
* ``selective`` (Sec. 3.4): S(u) = ‖max(0, z_u ⊙ g_u)‖, keeping only the channels that push the
  class score up (the authors' ``filter_norm`` of the ``scaling`` virtual layer).

Layers are combined (Sec. 3.3) with :meth:`LayerSaliency.attribute_combined` (weighted geometric
mean or weighted sum of min-max normalised maps, from one forward and one backward), and
meta-saliency (Sec. 4) is :class:`workbench.saliency.meta.MetaSaliency`.

Where we differ from the authors' code (``normgrad`` branch of ruthcfong/TorchRay,
``torchray/attribution/norm_grad.py``; srebuffi/revisiting_saliency,
``resnet50_grid_saliency.py``): L is the target logit (TorchRay back-propagates the one-hot
score, srebuffi its negation; norms do not see the sign, and the selective variant uses z ⊙ ∂y_c/∂z
as TorchRay does); batches of images at once; proper NormGrad also handles grouped convolutions
(per-group outer products) and ``padding="same"``/``"valid"``; bias gradients are not included in
the proper norm (as in both reference codes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInput, require
from ..layers import named_layers
from .base import LayerCapture, LayerSaliency

VARIANTS = ("identity", "identity3x3", "proper", "bias", "selective")


def _unfold_norm(x: torch.Tensor, kernel_size, dilation, padding, stride, groups: int = 1) -> torch.Tensor:
    """‖unfold(x)_u‖ per output location, one norm per channel group: N×G×h×w.

    Computed without materialising the unfolded patches: the squared norm of a patch is the window
    sum (a convolution with a kernel of ones, same stride/padding/dilation) of Σ_c x_c² over the
    group's channels.
    """
    kernel_size, dilation, stride = (tuple(v) if isinstance(v, (tuple, list)) else (v, v)
                                     for v in (kernel_size, dilation, stride))
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same": PyTorch pads (total // 2) before and the rest after
            pads = []
            for k, d in zip(reversed(kernel_size), reversed(dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
            padding = (0, 0)
    n, c, h, w = x.shape
    sq = x.pow(2).view(n, groups, c // groups, h, w).sum(2)
    ones = torch.ones(groups, 1, *kernel_size, dtype=x.dtype, device=x.device)
    win = F.conv2d(sq, ones, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return win.clamp_min(0).sqrt()


class NormGrad(LayerSaliency):
    """NormGrad at one or more layers; ``variant`` is one of :data:`VARIANTS` (default ``identity``).

    ``proper`` needs ``nn.Conv2d`` layers (the conv's input is captured alongside the gradient at its
    output); the other variants work at any spatial layer.

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier.
    layers : str, nn.Module, sequence of them, or None
        The layer(s) (default: the model's default CAM layer); combine several with
        ``attribute_combined``.
    variant : {"identity", "identity3x3", "proper", "bias", "selective"}, default "identity"
        The NormGrad variant (see the module docstring).

    Returns
    -------
    A NormGrad (a :class:`~workbench.saliency.base.LayerSaliency`)
        ``attribute(inputs, target)`` gives N×1×h×w maps ≥ 0 at the layer's resolution.

    Raises
    ------
    BadInput
        For an unknown variant, unknown or repeated layers, or (``proper``) a layer that is not a
        zero-padded ``nn.Conv2d``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> NormGrad(net, "0", variant="proper").attribute(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    >>> NormGrad(net, "1", variant="proper")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: proper NormGrad needs a Conv2d layer, but '1' is a ReLU; Conv2d layers: 0
    """

    name = "normgrad"

    def __init__(self, model, layers=None, *, variant: str = "identity"):
        require(variant in VARIANTS, f"unknown NormGrad variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.needs_layer_inputs = variant == "proper"
        super().__init__(model, layers)

    def settings(self) -> dict:
        return {"variant": self.variant}

    def _check_layer_types(self) -> None:
        if self.variant != "proper":
            return
        for n, m in zip(self.layer_names, self.layer_modules):
            if not isinstance(m, nn.Conv2d):
                convs = [k for k, v in named_layers(self.model) if isinstance(v, nn.Conv2d)]
                raise BadInput(f"proper NormGrad needs a Conv2d layer, but {n!r} is a {type(m).__name__}; "
                               f"Conv2d layers: {', '.join(convs)}")
            require(m.padding_mode == "zeros", f"proper NormGrad supports zero padding only; layer {n!r} uses "
                                                f"padding_mode={m.padding_mode!r}")

    def maps_from(self, cap: LayerCapture) -> dict[str, torch.Tensor]:
        out = {}
        for n, mod in zip(self.layer_names, self.layer_modules):
            z, g = cap.activations[n], cap.gradients[n]
            v = self.variant
            if v == "identity":
                s = z.norm(dim=1, keepdim=True) * g.norm(dim=1, keepdim=True)
            elif v == "identity3x3":
                s = _unfold_norm(z, 3, 1, 1, 1) * g.norm(dim=1, keepdim=True)
            elif v == "bias":
                s = g.norm(dim=1, keepdim=True)
            elif v == "selective":
                s = (z * g).clamp_min(0).norm(dim=1, keepdim=True)
            else:  # proper: per-group ‖g_u^j‖·‖unfold(x)_u^j‖, combined over groups as a Frobenius norm
                x = cap.inputs[n]
                groups = mod.groups
                xn = _unfold_norm(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride, groups)
                gn = g.view(g.shape[0], groups, -1, *g.shape[-2:]).norm(dim=2)
                s = (xn * gn).pow(2).sum(1, keepdim=True).sqrt() if groups > 1 else xn * gn
            out[n] = s
        return out
