"""Eigen-CAM (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
IJCNN 2020) and Eigen-Grad-CAM.

Eigen-CAM projects a layer's activations, seen per image as an H·W×C matrix X (locations ×
channels), on their first principal direction: the map is X v₁ with v₁ the first right singular
vector (Eq. 6–7 of the paper; the paper takes the SVD of the uncentred X, pytorch-grad-cam's
``get_2d_projection`` centres the columns first: ``center=True`` here, the default, matches it).
Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``) does the same on gradient ⊙ activation.

Where we differ:

* **Batched eigen-decomposition in torch, not a per-image SVD.** X v₁ = σ₁ u₁, and u₁ / σ₁² are the
  top eigenvector / eigenvalue of the Gram matrix X Xᵀ (H·W×H·W); when C < H·W we use the smaller
  C×C matrix Xᵀ X instead (its top eigenvector is v₁). Batched repeated squaring plus a
  Rayleigh–Ritz step (with a residual test, and an exact ``torch.linalg.eigh`` fallback for
  matrices whose top eigenvalue is nearly degenerate) finds the top eigenvector of all N matrices
  at once; it replaces N SVDs.
* **A deterministic sign.** Singular vectors are defined up to sign, and pytorch-grad-cam keeps
  whatever sign the SVD returns (its users report inverted maps). We flip the projection so that
  it correlates positively with the layer's per-location total Σ_c X_uc of the *uncentred* features
  (Eigen-CAM: where the layer is most active; Eigen-Grad-CAM: the signed Grad-CAM-style sum
  Σ_c g_uc a_uc). If that correlation is exactly zero, the entry of largest magnitude is made
  positive.
* Like pytorch-grad-cam we then keep the positive part (``relu=True``); ``relu=False`` returns the
  signed projection.
"""

from __future__ import annotations

import torch

from .base import LayerCapture, LayerSaliency


def top_eigenvectors(gram: torch.Tensor, *, squarings: int = 6, block: int = 4, tol: float = 1e-4
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenvalue and unit eigenvector of each symmetric PSD matrix in ``gram`` (N×d×d).

    Repeated squaring (G^(2^s), trace-normalised: the top eigenvector dominates by a factor
    (λ₁/λ₂)^(2^s), 64 for the default s = 6) applied to a fixed start block, then Rayleigh–Ritz on G.
    Matrices whose residual ‖G v − λ v‖ exceeds ``tol``·λ (a near-degenerate top eigenvalue) fall
    back to an exact ``torch.linalg.eigh``. Deterministic, and far cheaper than ``eigh`` of all N.

    Parameters
    ----------
    gram : torch.Tensor
        N×d×d symmetric positive semi-definite matrices.
    squarings : int, default 6
        Repeated squarings s.
    block : int, default 4
        Size of the start block (at most d).
    tol : float, default 1e-4
        Relative residual above which the exact ``eigh`` is used.

    Returns
    -------
    tuple of torch.Tensor
        The top eigenvalues N and unit eigenvectors N×d (sign arbitrary).

    Examples
    --------
    >>> import torch
    >>> lam, vec = top_eigenvectors(torch.diag(torch.tensor([1.0, 3.0, 2.0]))[None])
    >>> lam.tolist(), vec.abs().round(decimals=4).tolist()
    ([3.0], [[0.0, 1.0, 0.0]])
    """
    n, d, _ = gram.shape
    k = min(block, d)

    def trace(m):
        return m.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-30)[:, None, None]

    p = gram / trace(gram)
    for _ in range(squarings):
        p = p @ p
        p = p / trace(p)
    start = torch.randn(d, k, generator=torch.Generator().manual_seed(0)).to(gram)
    v_blk = torch.linalg.qr(p @ start.expand(n, d, k)).Q
    ritz_vals, ritz_vecs = torch.linalg.eigh(v_blk.transpose(1, 2) @ (gram @ v_blk))
    lam, vec = ritz_vals[:, -1], (v_blk @ ritz_vecs[:, :, -1:]).squeeze(-1)
    res = ((gram @ vec[..., None]).squeeze(-1) - lam[:, None] * vec).norm(dim=1)
    bad = (res > tol * lam.abs().clamp_min(1e-30)).nonzero()[:, 0]
    if len(bad):
        ev, evecs = torch.linalg.eigh(gram[bad].double())
        lam[bad], vec[bad] = ev[:, -1].to(lam), evecs[:, :, -1].to(vec)
    return lam, vec


def principal_projection(features: torch.Tensor, *, center: bool = True,
                         sign_reference: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the projection of the H·W×C feature matrix on its first principal direction.

    ``features`` N×C×H×W → N×1×H×W. ``sign_reference`` (N×H×W or N×1×H×W, default the channel sum of
    ``features``) fixes the sign: the projection is made positively correlated with it.

    Parameters
    ----------
    features : torch.Tensor
        N×C×H×W activations (or gradient ⊙ activation).
    center : bool, default True
        Subtract each channel's mean over locations first (as pytorch-grad-cam does).
    sign_reference : torch.Tensor, optional
        N×H×W or N×1×H×W map the projection is made to correlate positively with.

    Returns
    -------
    torch.Tensor
        N×1×H×W, X v₁ per image, in ``features``' dtype.

    Examples
    --------
    For rank-one features p ⊗ (1, 2) the projection is √5 · p:

    >>> import torch
    >>> p = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    >>> proj = principal_projection(torch.stack([p, 2 * p])[None], center=False)
    >>> [round(v, 4) + 0.0 for v in (proj.flatten() / 5 ** 0.5).tolist()]
    [0.0, 1.0, 2.0, 3.0]
    """
    n, c, h, w = features.shape
    f = features.flatten(2).float()  # N × C × HW (the H·W×C matrix X of the paper, transposed)
    if center:
        f = f - f.mean(2, keepdim=True)
    if h * w <= c:
        lam, u = top_eigenvectors(f.transpose(1, 2) @ f)  # X Xᵀ: H·W×H·W
        proj = u * lam.clamp_min(0).sqrt()[:, None]  # σ₁ u₁ = X v₁
    else:
        _, v = top_eigenvectors(f @ f.transpose(1, 2))  # Xᵀ X: C×C
        proj = (v[:, None, :] @ f).squeeze(1)  # X v₁
    ref = (features.sum(1) if sign_reference is None else sign_reference).reshape(n, -1).float()
    dot = (proj * ref).sum(1)
    biggest = proj.gather(1, proj.abs().argmax(1, keepdim=True)).squeeze(1)
    sign = torch.where(dot != 0, dot.sign(), biggest.sign())
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign[:, None]).reshape(n, 1, h, w).to(features.dtype)


class EigenCAM(LayerSaliency):
    """Eigen-CAM: first principal component of the activations (no gradients, no target).

    ``center``: subtract each channel's mean over locations before the decomposition (as
    pytorch-grad-cam does); ``relu``: keep the positive part.

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier.
    layers : str, nn.Module, sequence of them, or None
        The layer(s) (default: the model's default CAM layer).
    center : bool, default True
        Centre the channels before the decomposition.
    relu : bool, default True
        Keep the positive part of the projection.

    Returns
    -------
    An EigenCAM (a :class:`~workbench.saliency.base.LayerSaliency`)
        ``attribute(inputs)`` gives N×1×h×w maps at the layer's resolution (the target is ignored).

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
    >>> EigenCAM(net, "1").attribute(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    """

    name = "eigencam"
    needs_gradients = False
    uses_target = False

    def __init__(self, model, layers=None, *, center: bool = True, relu: bool = True):
        self.center, self.relu = bool(center), bool(relu)
        super().__init__(model, layers)

    def settings(self) -> dict:
        return {"center": self.center, "relu": self.relu}

    def _features(self, cap: LayerCapture, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return cap.activations[name], None

    def maps_from(self, cap: LayerCapture) -> dict[str, torch.Tensor]:
        out = {}
        for n in self.layer_names:
            feats, ref = self._features(cap, n)
            m = principal_projection(feats, center=self.center, sign_reference=ref)
            out[n] = m.clamp_min(0) if self.relu else m
        return out


class EigenGradCAM(EigenCAM):
    """Eigen-Grad-CAM: the first principal component of gradient ⊙ activation (class-specific).

    The sign follows the Grad-CAM-style sum Σ_c g_uc a_uc.

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier.
    layers : str, nn.Module, sequence of them, or None
        The layer(s) (default: the model's default CAM layer).
    center : bool, default True
        Centre the channels before the decomposition.
    relu : bool, default True
        Keep the positive part of the projection.

    Returns
    -------
    An EigenGradCAM
        ``attribute(inputs, target)`` gives N×1×h×w maps at the layer's resolution.

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
    >>> EigenGradCAM(net, "1").attribute(torch.rand(2, 1, 8, 8), target=1).shape
    torch.Size([2, 1, 8, 8])
    """

    name = "eigengradcam"
    needs_gradients = True
    uses_target = True

    def _features(self, cap: LayerCapture, name: str):
        ga = cap.gradients[name] * cap.activations[name]
        return ga, ga.sum(1)
