"""Randomized smoothing: certify a classifier's prediction within an L2 ball.

Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML 2019.
The smoothed classifier is g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ² I) (Eq. 1). If the top class
has probability p_A ≥ p̲_A > 1/2, g is constant within the L2 radius σ·Φ⁻¹(p̲_A) (Theorem 1 with
p̄_B = 1 − p̲_A, which gives R = σ/2·(Φ⁻¹(p̲_A) − Φ⁻¹(p̄_B)) = σ·Φ⁻¹(p̲_A)).

* :func:`certify` is the paper's CERTIFY (Algorithm/Pseudocode, Sec. 3.2): n0 noise samples select
  the guess ĉ_A, n fresh samples count it, p̲_A is the one-sided (1 − α) Clopper-Pearson lower bound
  (the reference computes it as the lower end of the two-sided interval at level 2α: here
  ``beta.ppf(α, n_A, n − n_A + 1)``, 0 when n_A = 0); abstain if p̲_A < 1/2.
* :func:`predict` is PREDICT: n samples, two-sided binomial test of the top two counts
  (Hung & Fithian 2019); abstain if its p-value exceeds α.

Where we differ from the reference code (locuslab/smoothing ``code/core.py``): noise samples for many
inputs are evaluated together in one batch on any device (the reference loops over inputs one at a
time and draws its noise on CUDA), the noise comes from a seeded ``torch.Generator``, and SciPy's
``binomtest`` / ``beta`` replace the removed ``binom_test`` and statsmodels' ``proportion_confint``.
Noise is added in [0, 1] pixel space, before any normalisation the model does itself; noisy inputs
are not clipped (as in the paper). Decisions and radii on given counts equal the reference formulas
exactly (tests/test_certify.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from ..adapter import ModelAdapter, as_model, logits_of, model_device, model_mode
from ..errors import check_in_range, require
from ..shards import resolve_images, resolve_model, run_shards, shard_seed
from ..training import resolve_device
from .results import ABSTAIN, CertificationResult

Progress = Callable[[float, str], None]


def check_params(sigma: float | None = None, n0: int | None = None, n: int | None = None,
                 alpha: float | None = None, batch_size: int | None = None) -> None:
    """Raise :class:`BadInput` for σ ≤ 0, n0 or n < 1, α outside (0, 1), batch size < 1.

    Parameters that are ``None`` are not checked.

    Parameters
    ----------
    sigma : float, optional
        Noise standard deviation σ, finite and > 0.
    n0 : int, optional
        Selection samples, an integer ≥ 1.
    n : int, optional
        Estimation samples, an integer ≥ 1.
    alpha : float, optional
        Failure probability α, in (0, 1).
    batch_size : int, optional
        ≥ 1.

    Returns
    -------
    None

    Raises
    ------
    BadInput
        If a given parameter is out of range.

    Examples
    --------
    >>> check_params(sigma=0.25, n0=100, n=1000, alpha=0.001)
    >>> check_params(sigma=0)
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: sigma must be > 0, got 0
    """
    if sigma is not None:
        require(np.isfinite(sigma) and sigma > 0, f"sigma must be > 0, got {sigma}")
    if n0 is not None:
        require(int(n0) == n0 and n0 >= 1, f"n0 (selection samples) must be an integer >= 1, got {n0}")
    if n is not None:
        require(int(n) == n and n >= 1, f"n (estimation samples) must be an integer >= 1, got {n}")
    if alpha is not None:
        check_in_range("alpha", float(alpha), 0.0, 1.0, low_open=True, high_open=True)
    if batch_size is not None:
        require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")


def inference_copy(model: nn.Module, probe: torch.Tensor | None = None) -> tuple[nn.Module, bool]:
    """An eval-mode copy with each Conv2d+BatchNorm pair folded into one convolution (``torch.fx``
    fusion; logits agree to ~1e-7) for channels-last inputs; ``(model, False)`` if it cannot be traced.
    For a :class:`ModelAdapter` the wrapped module is fused and the adapter's preprocessing kept.

    With a ``probe`` batch the copy is also *run*: if calling it fails or its logits differ from the
    model's beyond float tolerance (a model that traces but behaves differently, e.g. through Python
    state the trace froze), the model itself is used.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The base classifier; its train/eval mode is restored, its weights are not changed.
    probe : torch.Tensor, optional
        A few N×C×H×W inputs on the model's device to check the copy against the model.

    Returns
    -------
    tuple of (nn.Module, bool)
        The copy and True (feed it channels-last inputs), or ``model`` itself and False.

    Examples
    --------
    >>> from torch import nn
    >>> fused, ok = inference_copy(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    >>> type(fused).__name__, ok
    ('GraphModule', True)
    """
    if isinstance(model, ModelAdapter):
        if model.inner is None or model._fn is not None:
            return model, False
        inner, ok = inference_copy(model.inner)
        if not ok:
            return model, False
        fused = model.with_inner(inner)
        return (fused, True) if probe is None or _agrees(model, fused, probe) else (model, False)
    try:
        from torch.fx.experimental.optimization import fuse

        with model_mode(model):
            fused = fuse(model).eval().to(memory_format=torch.channels_last)
            if probe is not None and not _agrees(model, fused, probe):
                return model, False
        return fused, True
    except Exception:  # noqa: BLE001 - untraceable or misbehaving copies: the model runs as it is
        return model, False


def _agrees(model, fused, probe: torch.Tensor) -> bool:
    """Whether ``fused`` runs on ``probe`` (channels-last) and gives ``model``'s logits to float tolerance."""
    try:
        with torch.no_grad():
            want = logits_of(model(probe))
            got = logits_of(fused(probe.contiguous(memory_format=torch.channels_last)))
    except Exception:  # noqa: BLE001 - a copy that cannot run is not used
        return False
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=tol))


def _probe(images: torch.Tensor, sigma: float, dev) -> torch.Tensor:
    """A few inputs with and without noise, for checking the fused copy (deterministic, own generator)."""
    x = images[:4].to(dev)
    g = torch.Generator(device=dev).manual_seed(12345)
    return torch.cat([x, x + sigma * torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype)])


@torch.no_grad()
def sample_counts(model: nn.Module, images: torch.Tensor, num: int, sigma: float, *, num_classes: int | None = None,
                  batch_size: int = 1000, generator: torch.Generator | None = None, device=None,
                  progress: Progress | None = None, progress_span: tuple[float, float] = (0.0, 1.0),
                  channels_last: bool = False) -> torch.Tensor:
    """Counts N×K of the base classifier's argmax under ``num`` Gaussian noise draws per input.

    All N·num noisy copies are evaluated in batches of ``batch_size`` rows that mix inputs, so a
    batch is always full; counts are accumulated with one ``bincount`` per batch.

    Parameters
    ----------
    model : nn.Module
        The base classifier f (run in eval mode, without gradients; its mode is restored).
    images : torch.Tensor
        N×C×H×W inputs in [0, 1], N ≥ 1.
    num : int
        Noise draws per input, ≥ 1.
    sigma : float
        σ of the Gaussian noise N(0, σ² I), added in pixel space without clipping.
    num_classes : int, optional
        K (default: from the model's first output).
    batch_size : int, default 1000
        Noisy copies per forward; memory is bounded by it.
    generator : torch.Generator, optional
        Source of the noise, on ``device`` (default: seeded with 0).
    device : str or torch.device, optional
        Where to run (default: the model's device).
    progress : callable, optional
        ``progress(fraction, message)`` after each batch.
    progress_span : tuple of float, default (0.0, 1.0)
        The part of the overall progress this call covers.
    channels_last : bool, default False
        Feed channels-last inputs (for :func:`inference_copy`'s fused copy).

    Returns
    -------
    torch.Tensor
        N×K int64 counts on the CPU; each row sums to ``num``.

    Raises
    ------
    BadInput
        If a parameter is out of range or ``images`` is not a non-empty N×C×H×W batch.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Constant(nn.Module):  # always class 0, whatever the noise
    ...     def forward(self, x):
    ...         return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)
    >>> sample_counts(Constant(), torch.rand(2, 1, 4, 4), 50, 0.25).tolist()
    [[50, 0], [50, 0]]
    """
    check_params(sigma=sigma, n=num, batch_size=batch_size)
    require(images.ndim == 4 and images.shape[0] > 0,
            f"images must be a non-empty N×C×H×W batch, got shape {tuple(images.shape)}")
    dev = resolve_device(device) if device is not None else model_device(model)
    gen = generator if generator is not None else torch.Generator(device=dev).manual_seed(0)
    x_all = images.to(dev)
    n_inputs = x_all.shape[0]
    total = n_inputs * num
    k = num_classes
    counts = None
    lo, hi = progress_span
    with model_mode(model):
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total), device=dev)
            owner = rows // num
            batch = x_all[owner]
            noise = torch.randn(batch.shape, generator=gen, device=dev, dtype=batch.dtype)
            noisy = batch + sigma * noise
            if channels_last:
                noisy = noisy.contiguous(memory_format=torch.channels_last)
            pred = model(noisy).argmax(1)
            if counts is None:
                k = k or int(model(x_all[:1]).shape[1])
                counts = torch.zeros(n_inputs * k, dtype=torch.long, device=dev)
            counts += torch.bincount(owner * k + pred, minlength=n_inputs * k)
            if progress is not None:
                progress(lo + (hi - lo) * min(start + batch_size, total) / total,
                         f"{min(start + batch_size, total) // num}/{n_inputs} inputs")
    return counts.view(n_inputs, k).cpu()


def lower_confidence_bound(n_a, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 − α) Clopper-Pearson lower bound on a binomial proportion, vectorised.

    Equals ``proportion_confint(n_a, n, alpha=2*alpha, method="beta")[0]`` (the reference's call):
    the α-quantile of Beta(n_a, n − n_a + 1), and 0 for n_a = 0.

    Parameters
    ----------
    n_a : int or array-like of int
        Successes, each in [0, n].
    n : int
        Trials.
    alpha : float
        α in (0, 1): the bound holds with probability ≥ 1 − α.

    Returns
    -------
    numpy.ndarray
        The lower bounds, ``n_a``'s shape, in [0, 1].

    Examples
    --------
    With n_a = n the bound is α^(1/n):

    >>> lower_confidence_bound([0, 990, 1000], 1000, 0.001).round(4).tolist()
    [0.0, 0.976, 0.9931]
    """
    n_a = np.asarray(n_a, dtype=float)
    with np.errstate(invalid="ignore"):
        lb = beta.ppf(alpha, n_a, n - n_a + 1)
    return np.where(n_a > 0, lb, 0.0)


def certify_from_counts(counts_selection: torch.Tensor, counts_estimation: torch.Tensor, n: int, alpha: float,
                        sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CERTIFY's decision on given counts: ``(class or -1, L2 radius, p̲_A)`` per input.

    ĉ_A is the first index of the largest selection count (NumPy's/torch's ``argmax``). The input is
    certified when p̲_A ≥ 1/2, with radius σ·Φ⁻¹(p̲_A); otherwise the class is -1 and the radius 0.

    Parameters
    ----------
    counts_selection : torch.Tensor
        N×K counts of the n0 selection draws (they pick ĉ_A).
    counts_estimation : torch.Tensor
        N×K counts of the n estimation draws (they bound p_A).
    n : int
        Estimation draws per input (each row of ``counts_estimation`` sums to it).
    alpha : float
        α in (0, 1).
    sigma : float
        σ > 0 of the noise.

    Returns
    -------
    tuple of torch.Tensor
        Classes N (int64, -1 = abstain), L2 radii N (float32) and p̲_A N (float32).

    Raises
    ------
    BadInput
        If ``n``, ``alpha`` or ``sigma`` is out of range.

    Examples
    --------
    >>> import torch
    >>> sel = torch.tensor([[10, 0], [5, 5]])
    >>> est = torch.tensor([[1000, 0], [480, 520]])
    >>> cls, radius, p_lower = certify_from_counts(sel, est, n=1000, alpha=0.001, sigma=0.5)
    >>> cls.tolist(), [round(r, 4) for r in radius.tolist()], [round(p, 4) for p in p_lower.tolist()]
    ([0, -1], [1.2316, 0.0], [0.9931, 0.4309])
    """
    check_params(sigma=sigma, n=n, alpha=alpha)
    c_hat = counts_selection.argmax(1)
    n_a = counts_estimation.gather(1, c_hat[:, None])[:, 0].numpy()
    p_lower = lower_confidence_bound(n_a, n, alpha)
    certified = p_lower >= 0.5
    with np.errstate(divide="ignore"):
        radius = np.where(certified, sigma * norm.ppf(np.where(certified, p_lower, 0.5)), 0.0)
    pred = torch.where(torch.from_numpy(certified), c_hat, torch.full_like(c_hat, ABSTAIN))
    return pred, torch.from_numpy(radius).float(), torch.from_numpy(p_lower).float()


def predict_from_counts(counts: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PREDICT's decision on given counts: ``(class or -1, p-value)`` per input.

    The top two counts (largest first) go into a two-sided exact binomial test of p = 1/2; the
    model abstains if the p-value exceeds α. A tie between the top two always abstains (p = 1).

    Parameters
    ----------
    counts : torch.Tensor
        N×K counts, K ≥ 2.
    alpha : float
        α in (0, 1).

    Returns
    -------
    tuple of torch.Tensor
        Classes N (int64, -1 = abstain) and p-values N (float64).

    Raises
    ------
    BadInput
        If α is out of range or K < 2.

    Examples
    --------
    >>> import torch
    >>> cls, p = predict_from_counts(torch.tensor([[90, 10], [50, 50]]), alpha=0.001)
    >>> cls.tolist(), p[1].item()
    ([0, -1], 1.0)
    """
    check_params(alpha=alpha)
    top2 = counts.topk(2, dim=1) if counts.shape[1] >= 2 else None
    require(top2 is not None, "predict needs at least two classes")
    c1, c2 = top2.values[:, 0].tolist(), top2.values[:, 1].tolist()
    cache: dict[tuple[int, int], float] = {}
    pvals = []
    for a, b in zip(c1, c2):  # one SciPy call per distinct count pair; not a tensor hot path
        if (a, b) not in cache:
            cache[(a, b)] = binomtest(a, a + b, p=0.5).pvalue if a + b > 0 else 1.0
        pvals.append(cache[(a, b)])
    p = torch.tensor(pvals, dtype=torch.float64)
    pred = torch.where(p > alpha, torch.full_like(top2.indices[:, 0], ABSTAIN), top2.indices[:, 0])
    return pred, p


def _base_predictions(model: nn.Module, images: torch.Tensor, dev, batch_size: int) -> torch.Tensor:
    from ..training import predict_logits

    return predict_logits(model, images, batch_size=batch_size, device=dev).argmax(1)


def certify(model: nn.Module, images: torch.Tensor, sigma: float, *, n0: int = 100, n: int = 1000,
            alpha: float = 0.001, labels: torch.Tensor | None = None, batch_size: int = 1000, seed: int = 0,
            device=None, fuse: bool = True, progress: Progress | None = None, shards: int | None = None,
            ray_address: str | None = None, threads: int | None = None,
            num_gpus: float = 0) -> CertificationResult:
    """Certify every input of ``images`` (N×C×H×W in [0, 1]) with randomized smoothing at noise ``sigma``.

    Returns a :class:`CertificationResult` with the certified class (or -1), the L2 radius, and in
    ``extra`` the selection and estimation counts and p̲_A. ``fuse`` evaluates the noisy copies with
    :func:`inference_copy` (Conv+BN folded, channels-last), the model itself is left untouched.

    Large sets: ``shards`` splits the inputs into contiguous shards, each certified by
    :func:`certify_shard` as a unit of :func:`workbench.shards.run_shards`, serially here or, with
    ``ray_address`` (``"local"``, ``"auto"``, ``"HOST:PORT"``), as Ray tasks (``threads`` CPUs and
    ``num_gpus`` GPUs each; default ``ceil(N / 256)`` shards there); the results are merged in input
    order. The noise of each shard comes from its own generator, seeded by
    :func:`~workbench.shards.shard_seed` from ``seed`` and the shard's first input (the first shard
    keeps ``seed``): the result depends on ``seed`` and the shard layout only, so the same ``shards``
    give the same classes, radii and counts serially and on Ray, and one shard is the unsharded call.
    Different shard counts draw different noise (each certificate keeps its 1 − α guarantee). The
    model may be a :class:`~workbench.shards.ModelRef` and the images a
    :class:`~workbench.shards.DataRef`: each shard then loads the model and reads its own images.

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The base classifier f, taking [0, 1] pixel images.
    images : torch.Tensor
        N×C×H×W inputs in [0, 1], N ≥ 1.
    sigma : float
        σ > 0 of the noise (in pixel units).
    n0 : int, default 100
        Selection draws per input.
    n : int, default 1000
        Estimation draws per input; the largest radius possible is σ·Φ⁻¹(α^(1/n)).
    alpha : float, default 0.001
        α in (0, 1): each certificate is wrong with probability at most α.
    labels : torch.Tensor, optional
        N true labels (for the accuracy metrics).
    batch_size : int, default 1000
        Noisy copies per forward.
    seed : int, default 0
        Seed of the noise generator.
    device : str or torch.device, optional
        Where to run (default: the model's device).
    fuse : bool, default True
        Evaluate a fused inference copy.
    progress : callable, optional
        ``progress(fraction, message)``.
    shards : int, optional
        Contiguous shards of the inputs (default: 1 serially, ``ceil(N / 256)`` on Ray).
    ray_address : str, optional
        None: the shards run here; ``"local"``, ``"auto"`` or ``"HOST:PORT"``: as Ray tasks.
    threads : int, optional
        Torch threads per shard (and Ray CPUs per task, default 1).
    num_gpus : float, default 0
        GPUs per Ray task (give ``device="cuda"``).

    Returns
    -------
    CertificationResult
        ``method="smoothing"``, ``norm="l2"``; ``extra`` holds ``counts_selection``,
        ``counts_estimation`` (N×K) and ``p_lower`` (N); ``params`` the shard count when sharded.

    Raises
    ------
    BadInput
        If a parameter is out of range or ``images`` is not a non-empty N×C×H×W batch.

    Examples
    --------
    A constant classifier is certified with the largest radius n allows, σ·Φ⁻¹(α^(1/n)):

    >>> import torch
    >>> from torch import nn
    >>> class Constant(nn.Module):  # always class 0, whatever the noise
    ...     def forward(self, x):
    ...         return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)
    >>> res = certify(Constant(), torch.rand(3, 1, 4, 4), 0.25, n0=10, n=100, labels=torch.tensor([0, 0, 1]))
    >>> res.predictions.tolist(), round(res.radii[0].item(), 4), round(res.accuracy, 4)
    ([0, 0, 0], 0.3751, 0.6667)
    """
    check_params(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size)
    if ray_address is not None or (shards is not None and shards != 1):
        return _certify_sharded(model, images, sigma, n0=n0, n=n, alpha=alpha, labels=labels, batch_size=batch_size,
                                seed=seed, device=device, fuse=fuse, progress=progress, shards=shards,
                                ray_address=ray_address, threads=threads, num_gpus=num_gpus)
    model, images = resolve_model(model, device), resolve_images(images)
    require(images.ndim == 4 and images.shape[0] > 0, f"images must be a non-empty N×C×H×W batch, "
            f"got shape {tuple(images.shape)}")
    model = as_model(model)
    dev = resolve_device(device) if device is not None else model_device(model)
    t0 = time.perf_counter()
    gen = torch.Generator(device=dev).manual_seed(seed)
    span0 = n0 / (n0 + n)
    fast, cl = inference_copy(model, _probe(images, sigma, dev)) if fuse else (model, False)
    c0 = sample_counts(fast, images, n0, sigma, batch_size=batch_size, generator=gen, device=dev,
                       progress=progress, progress_span=(0.0, span0), channels_last=cl)
    c1 = sample_counts(fast, images, n, sigma, num_classes=c0.shape[1], batch_size=batch_size, generator=gen,
                       device=dev, progress=progress, progress_span=(span0, 1.0), channels_last=cl)
    pred, radius, p_lower = certify_from_counts(c0, c1, n, alpha, sigma)
    base = _base_predictions(model, images, dev, batch_size)
    return CertificationResult("smoothing", "l2", pred, radius, None if labels is None else labels.cpu(), base,
                               {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "seed": seed},
                               time.perf_counter() - t0,
                               {"counts_selection": c0, "counts_estimation": c1, "p_lower": p_lower})


def certify_shard(model, images, start: int, *, sigma: float, n0: int, n: int, alpha: float, batch_size: int,
                  seed: int, device=None, fuse: bool = True) -> CertificationResult:
    """One shard of a sharded :func:`certify`: its inputs certified with the noise seeded by
    :func:`~workbench.shards.shard_seed` ``(seed, start)``.

    Parameters
    ----------
    model : nn.Module, callable, ModelAdapter or ModelRef
        The base classifier, or a reference the shard loads on ``device``.
    images : torch.Tensor or DataRef
        The shard's inputs, or a reference the shard reads.
    start : int
        Position of the shard's first input in the whole set.
    sigma, n0, n, alpha, batch_size, seed, device, fuse
        As for :func:`certify`.

    Returns
    -------
    CertificationResult
        The shard's decisions (without labels).
    """
    return certify(resolve_model(model, device), resolve_images(images), sigma, n0=n0, n=n, alpha=alpha,
                   batch_size=batch_size, seed=shard_seed(seed, start), device=device, fuse=fuse)


def _certify_sharded(model, images, sigma, *, n0, n, alpha, labels, batch_size, seed, device, fuse, progress,
                     shards, ray_address, threads, num_gpus) -> CertificationResult:
    """:func:`certify` over contiguous shards (:func:`workbench.shards.run_shards`), merged in input order."""
    if isinstance(images, torch.Tensor):
        require(images.ndim == 4 and images.shape[0] > 0, f"images must be a non-empty N×C×H×W batch, "
                f"got shape {tuple(images.shape)}")
    total = len(images)
    require(labels is None or len(labels) == total, f"{len(labels) if labels is not None else 0} labels "
                                                    f"for {total} images")
    if device is not None and ray_address is None:
        resolve_device(device)  # a device this machine lacks is bad input before any shard runs
    t0 = time.perf_counter()
    parts = run_shards(certify_shard, total, per_input={"images": images},
                       common={"model": model, "sigma": sigma, "n0": n0, "n": n, "alpha": alpha,
                               "batch_size": batch_size, "seed": seed, "device": device, "fuse": fuse},
                       shards=shards, ray_address=ray_address, threads=threads, num_gpus=num_gpus, progress=progress)
    extra = {k: torch.cat([p.extra[k] for p in parts]) for k in ("counts_selection", "counts_estimation", "p_lower")}
    return CertificationResult("smoothing", "l2", torch.cat([p.predictions for p in parts]),
                               torch.cat([p.radii for p in parts]), None if labels is None else labels.cpu(),
                               torch.cat([p.base_predictions for p in parts]),
                               {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "seed": seed, "shards": len(parts)},
                               time.perf_counter() - t0, extra)


def predict(model: nn.Module, images: torch.Tensor, sigma: float, *, n: int = 1000, alpha: float = 0.001,
            labels: torch.Tensor | None = None, batch_size: int = 1000, seed: int = 0, device=None,
            fuse: bool = True, progress: Progress | None = None) -> CertificationResult:
    """The smoothed classifier's PREDICT on every input (no radius: ``radii`` are 0).

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The base classifier f, taking [0, 1] pixel images.
    images : torch.Tensor
        N×C×H×W inputs in [0, 1], N ≥ 1.
    sigma : float
        σ > 0 of the noise.
    n : int, default 1000
        Noise draws per input.
    alpha : float, default 0.001
        α in (0, 1): the probability of returning a class other than g(x) is at most α.
    labels : torch.Tensor, optional
        N true labels.
    batch_size : int, default 1000
        Noisy copies per forward.
    seed : int, default 0
        Seed of the noise generator.
    device : str or torch.device, optional
        Where to run (default: the model's device).
    fuse : bool, default True
        Evaluate a fused inference copy.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    CertificationResult
        ``method="smoothing-predict"``; ``extra`` holds ``counts`` (N×K) and ``p_value`` (N).

    Raises
    ------
    BadInput
        If a parameter is out of range or ``images`` is not a non-empty N×C×H×W batch.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Constant(nn.Module):  # always class 0, whatever the noise
    ...     def forward(self, x):
    ...         return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)
    >>> predict(Constant(), torch.rand(2, 1, 4, 4), 0.25, n=100).predictions.tolist()
    [0, 0]
    """
    check_params(sigma=sigma, n=n, alpha=alpha, batch_size=batch_size)
    model = as_model(model)
    require(images.ndim == 4 and images.shape[0] > 0, f"images must be a non-empty N×C×H×W batch, "
            f"got shape {tuple(images.shape)}")
    dev = resolve_device(device) if device is not None else model_device(model)
    t0 = time.perf_counter()
    gen = torch.Generator(device=dev).manual_seed(seed)
    fast, cl = inference_copy(model, _probe(images, sigma, dev)) if fuse else (model, False)
    counts = sample_counts(fast, images, n, sigma, batch_size=batch_size, generator=gen, device=dev,
                           progress=progress, channels_last=cl)
    pred, pval = predict_from_counts(counts, alpha)
    base = _base_predictions(model, images, dev, batch_size)
    return CertificationResult("smoothing-predict", "l2", pred, torch.zeros(len(pred)),
                               None if labels is None else labels.cpu(), base,
                               {"sigma": sigma, "n": n, "alpha": alpha, "seed": seed}, time.perf_counter() - t0,
                               {"counts": counts, "p_value": pval})


def certify_one_at_a_time(model: nn.Module, images: torch.Tensor, sigma: float, *, n0: int = 100, n: int = 1000,
                          alpha: float = 0.001, batch_size: int = 1000, seed: int = 0) -> tuple[list[int], list[float]]:
    """A faithful per-input loop in the style of the reference ``Smooth.certify`` (CPU).

    Only for the speed benchmark and tests: each input draws its n0 then n samples in batches of at
    most ``batch_size`` copies of that one input, counts them with NumPy and decides with the same
    formulas. Its noise stream differs from :func:`certify`'s, so results agree in distribution (and
    exactly on a deterministic base classifier), not draw for draw.

    Parameters
    ----------
    model : nn.Module
        The base classifier, on the CPU (put in eval mode).
    images : torch.Tensor
        N×C×H×W inputs.
    sigma : float
        σ of the noise.
    n0 : int, default 100
        Selection draws per input.
    n : int, default 1000
        Estimation draws per input.
    alpha : float, default 0.001
        α in (0, 1).
    batch_size : int, default 1000
        Most copies of one input per forward.
    seed : int, default 0
        Seed of the noise generator.

    Returns
    -------
    tuple of (list of int, list of float)
        Classes (-1 = abstain) and L2 radii, one per input.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Constant(nn.Module):  # always class 0, whatever the noise
    ...     def forward(self, x):
    ...         return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)
    >>> classes, radii = certify_one_at_a_time(Constant(), torch.rand(2, 1, 4, 4), 0.25, n0=10, n=100)
    >>> classes, [round(r, 4) for r in radii]
    ([0, 0], [0.3751, 0.3751])
    """
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    preds, radii = [], []
    with torch.no_grad():
        for x in images:
            counts = []
            for num in (n0, n):
                c = np.zeros(0, dtype=int)
                remaining = num
                while remaining > 0:
                    b = min(batch_size, remaining)
                    remaining -= b
                    batch = x.repeat((b, 1, 1, 1))
                    noise = torch.randn(batch.shape, generator=gen) * sigma
                    p = model(batch + noise).argmax(1).numpy()
                    binc = np.bincount(p, minlength=max(len(c), int(p.max()) + 1))
                    c = np.pad(c, (0, len(binc) - len(c))) + binc
                counts.append(c)
            c_hat = int(counts[0].argmax())
            n_a = int(counts[1][c_hat]) if c_hat < len(counts[1]) else 0
            pl = float(lower_confidence_bound(n_a, n, alpha))
            if pl < 0.5:
                preds.append(ABSTAIN)
                radii.append(0.0)
            else:
                preds.append(c_hat)
                radii.append(float(sigma * norm.ppf(pl)))
    return preds, radii
