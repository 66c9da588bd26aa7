"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017).

Channel weights are the spatially averaged gradients of the class score (Eq. 1:
α_k^c = 1/Z Σ_ij ∂y^c/∂A^k_ij) and the map is ReLU(Σ_k α_k^c A^k) (Eq. 2). As in captum's
``LayerGradCam(..., relu_attributions=True)`` (which this equals to float precision), y^c is the
logit (pre-softmax score) of the target class and the map stays at the layer's resolution; use
:func:`~workbench.saliency.base.upsample` to bring it to the input size.
"""

from __future__ import annotations

import torch

from .base import LayerCapture, LayerSaliency


class GradCAM(LayerSaliency):
    """Grad-CAM at one or more layers; ``relu=False`` keeps the signed map (captum's default).

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier.
    layers : str, nn.Module, sequence of them, or None
        The layer(s) (default: the model's default CAM layer).
    relu : bool, default True
        Apply the ReLU of Eq. 2.

    Returns
    -------
    A GradCAM (a :class:`~workbench.saliency.base.LayerSaliency`)
        ``attribute(inputs, target)`` gives N×1×h×w maps at the layer's resolution, ≥ 0 with ``relu``.

    Raises
    ------
    BadInput
        For unknown or repeated layers.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> cam = GradCAM(net, "1")
    >>> maps = cam.attribute(torch.rand(2, 1, 8, 8), target=0)
    >>> maps.shape, bool((maps >= 0).all())
    (torch.Size([2, 1, 8, 8]), True)
    """

    name = "gradcam"

    def __init__(self, model, layers=None, *, relu: bool = True):
        self.relu = bool(relu)
        super().__init__(model, layers)

    def settings(self) -> dict:
        return {"relu": self.relu}

    def maps_from(self, cap: LayerCapture) -> dict[str, torch.Tensor]:
        out = {}
        for n in self.layer_names:
            a, g = cap.activations[n], cap.gradients[n]
            w = g.mean(dim=(2, 3), keepdim=True)
            m = (w * a).sum(1, keepdim=True)
            out[n] = m.clamp_min(0) if self.relu else m
        return out
