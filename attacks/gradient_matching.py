"""Gradient-matching data poisoning: the optimised-poison engine shared by the certifier and contrastive attacks.

Geiping, Fowl, Huang, Czaja, Taylor, Moeller, Goldstein, "Witches' Brew: Industrial Scale Data
Poisoning via Gradient Matching", ICLR 2021 (reference code: JonasGeiping/poisoning-gradient-matching,
``forest/witchcoven/witch_base.py`` and ``witch_matching.py``), with the two additions of Souri et al.,
"Sleeper Agent: Scalable Hidden Trigger Backdoors for Neural Networks Trained from Scratch", NeurIPS
2022 (reference: hsouri/Sleeper-Agent) for trigger objectives: poison selection by gradient norm and
periodic retraining of the surrogate on the current poisons.

The attacker perturbs a budgeted set of training images ``x_i`` (labels ``y_i``, possibly already
relabelled or triggered by the caller) by ``Δ_i`` with ``‖Δ_i‖∞ ≤ ε`` (only inside ``mask`` if one is
given) and ``x_i + Δ_i ∈ [0, 1]``, so that the gradient of the victim's *training* loss on the poisons
points where the gradient of the attacker's *adversarial* loss points (Witches' Brew Eq. 3):

    min_Δ  1 − ⟨∇θ L_train(x + Δ, y; θ), ∇θ L_adv(θ)⟩ / (‖∇θ L_train(x + Δ, y; θ)‖ · ‖∇θ L_adv(θ)‖),

averaged over an ensemble of surrogates θ trained the way the victim is. A step of training on the
poisons then also descends L_adv, for any victim whose gradients resemble the surrogates'. As in the
reference: the cosine is taken over the whole parameter vector (every parameter tensor that requires a
gradient), the adversarial gradient is computed once per surrogate (and again after a retrain), the
surrogates are in eval mode (BatchNorm with running statistics), Δ starts from N(0, ε²) clipped to the
ε-box, and each step accumulates ∂loss/∂Δ over all poison batches and surrogates, takes its *sign*, and
makes one Adam step ("signAdam") with a step size divided by 10 at 3/8, 5/8 and 7/8 of the steps,
followed by the projection onto the ε-box and onto [0, 1]; the best of ``restarts`` independent runs
(lowest final matching loss) is kept. Differentiable data augmentation (the reference's ``paugment``)
is the caller's ``train_loss``: it must apply the victim's own augmentations (Gaussian noise for
smoothing, shifts, SimCLR views) differentiably, with draws from the generator it is given.

What is specific to an attack lives with the attack: ``train_loss(model, x, y, gen)`` (the victim's
loss on a batch of poisons, differentiable in ``x``) and ``adversarial_loss(model, gen)`` (what the
attacker wants the trained victim to minimise), and an optional ``retrain(poisoned_images, round)``
that returns fresh surrogates trained on the data poisoned with the current Δ (Sleeper Agent's
retraining, every ``retrain_every`` steps). Differences from the reference: step size given in pixel
units (``lr``, default 0.4·ε: the reference's τ = 0.1 in normalised CIFAR units is ≈ 0.4·ε at ε = 16/255),
Δ is kept for the budgeted images only (no full-dataset option), and the restart score is the mean
matching loss of the last step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.adapter import model_mode
from workbench.errors import check_in_range, require
from workbench.training import Progress, resolve_device

#: ``train_loss(model, x, y, gen) -> scalar``: the victim's training loss on a poison batch, differentiable in x.
TrainLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
#: ``adversarial_loss(model, gen) -> scalar``: what the attacker wants a victim trained on the poisons to minimise.
AdversarialLoss = Callable[[nn.Module, torch.Generator], torch.Tensor]
#: ``retrain(poisoned_images, round) -> surrogates``: fresh surrogates trained on the data with the current poisons.
Retrain = Callable[[torch.Tensor, int], Sequence[nn.Module]]


@dataclass
class MatchingResult:
    """The crafted poisons and how the optimisation went (of the restart that was kept).

    Parameters
    ----------
    images : torch.Tensor
        The poisoned images, base + Δ, shape ``(N, C, H, W)``, in [0, 1].
    delta : torch.Tensor
        ``images − base``: within ±ε, zero outside the mask.
    alignment : list of float
        Mean cosine similarity of poison and adversarial gradients, per step.
    restart_losses : list of float
        Final matching loss of every restart (1 − cosine).
    restart : int
        Which restart was kept (the lowest final loss).
    seconds : float
        Crafting time.
    provenance : dict, default {}
        The settings used.

    Returns
    -------
    A MatchingResult (a dataclass) holding these fields.
    """

    images: torch.Tensor  # the poisoned images, base + delta, in [0, 1]
    delta: torch.Tensor  # images − base: within ±ε, zero outside the mask
    alignment: list[float]  # mean cosine similarity of poison and adversarial gradients, per step
    restart_losses: list[float]  # final matching loss of every restart (1 − cosine)
    restart: int  # which restart was kept
    seconds: float
    provenance: dict = field(default_factory=dict)


def _params(model: nn.Module) -> list[nn.Parameter]:
    ps = [p for p in model.parameters() if p.requires_grad]
    require(len(ps) > 0, "the surrogate has no trainable parameters to match gradients on")
    return ps


def adversarial_gradient(model: nn.Module, adversarial_loss: AdversarialLoss,
                         gen: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(∇θ L_adv, its norm)`` at the surrogate's parameters (eval mode, detached).

    Parameters
    ----------
    model : nn.Module
        A surrogate (evaluated in eval mode; its mode is restored).
    adversarial_loss : callable
        ``adversarial_loss(model, gen) -> scalar``.
    gen : torch.Generator
        Random draws of the loss (augmentations, noise).

    Returns
    -------
    tuple of (list of torch.Tensor, torch.Tensor)
        The gradient, one tensor per trainable parameter (zeros where unused), and its L2 norm (a scalar).

    Raises
    ------
    BadInput
        When the surrogate has no trainable parameters.
    """
    with model_mode(model):
        params = _params(model)
        loss = adversarial_loss(model, gen)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params)]
    return grads, torch.sqrt(sum((g * g).sum() for g in grads))


def matching_loss(model: nn.Module, train_loss: TrainLoss, x: torch.Tensor, y: torch.Tensor, adv_grad: list[torch.Tensor],
                  adv_norm: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """1 − cos(∇θ L_train(x, y), ∇θ L_adv), differentiable in ``x`` (Witches' Brew Eq. 3, "similarity" loss).

    Parameters
    ----------
    model : nn.Module
        A surrogate.
    train_loss : callable
        ``train_loss(model, x, y, gen) -> scalar``, differentiable in ``x``.
    x : torch.Tensor
        A batch of poisons ``(B, C, H, W)``, requiring grad.
    y : torch.Tensor
        Their labels (any tensor ``train_loss`` understands).
    adv_grad : list of torch.Tensor
        The adversarial gradient (:func:`adversarial_gradient`).
    adv_norm : torch.Tensor
        Its norm.
    gen : torch.Generator
        Random draws of ``train_loss``.

    Returns
    -------
    torch.Tensor
        The scalar loss in [0, 2], with a graph to ``x``.
    """
    params = _params(model)
    grads = torch.autograd.grad(train_loss(model, x, y, gen), params, create_graph=True, allow_unused=True)
    dot = x.new_zeros(())
    sq = x.new_zeros(())
    for g, a in zip(grads, adv_grad):
        if g is None:
            continue
        dot = dot + (g * a).sum()
        sq = sq + (g * g).sum()
    return 1 - dot / (adv_norm * sq.sqrt() + 1e-12)


def project(delta: torch.Tensor, base: torch.Tensor, eps: float, mask: torch.Tensor | None) -> torch.Tensor:
    """Clip Δ to the ε-box, to zero outside ``mask``, and so that base + Δ stays in [0, 1].

    Parameters
    ----------
    delta : torch.Tensor
        The perturbation, shaped like ``base``.
    base : torch.Tensor
        The clean images ``(N, C, H, W)`` in [0, 1].
    eps : float
        L∞ budget ε.
    mask : torch.Tensor or None
        0/1, broadcastable to ``base``; ``None``: everywhere allowed.

    Returns
    -------
    torch.Tensor
        The projected Δ, shaped like ``base``.

    Examples
    --------
    >>> d = project(torch.tensor([0.3, -0.3, 0.05]), torch.tensor([0.9, 0.5, 0.5]), 0.2, None)
    >>> [round(v, 4) for v in d.tolist()]
    [0.1, -0.2, 0.05]
    """
    d = delta.clamp(-eps, eps)
    if mask is not None:
        d = d * mask
    return torch.max(torch.min(d, 1 - base), -base)


def gradient_matching(base: torch.Tensor, labels: torch.Tensor, surrogates: Sequence[nn.Module], train_loss: TrainLoss,
                      adversarial_loss: AdversarialLoss, *, eps: float, mask: torch.Tensor | None = None,
                      steps: int = 250, restarts: int = 1, lr: float | None = None, batch_size: int = 128,
                      init: torch.Tensor | None = None, retrain: Retrain | None = None, retrain_every: int = 0,
                      seed: int = 0,
                      device: str | torch.device | None = "cpu", progress: Progress | None = None) -> MatchingResult:
    """Craft poisons by gradient matching (Witches' Brew, Geiping et al., ICLR 2021).

    Craft Δ for the poison images ``base`` (N×C×H×W in [0, 1]) with labels ``labels`` (any tensor the
    ``train_loss`` understands) by gradient matching on ``surrogates``; see the module doc.

    ``mask`` (broadcastable to ``base``, 0/1) limits where Δ may be non-zero; ``init`` (shaped like
    ``base``) is the first restart's starting Δ instead of random noise. Deterministic given ``seed``
    (and deterministic callbacks). ``retrain`` with ``retrain_every`` > 0 replaces the surrogates every
    ``retrain_every`` steps (not at the first or the last) by ones trained on the current poisons.

    Parameters
    ----------
    base : torch.Tensor
        The poison images ``(N, C, H, W)`` in [0, 1].
    labels : torch.Tensor
        Their labels, N long.
    surrogates : sequence of nn.Module
        At least one surrogate model.
    train_loss : callable
        ``train_loss(model, x, y, gen) -> scalar``, the victim's loss, differentiable in ``x``.
    adversarial_loss : callable
        ``adversarial_loss(model, gen) -> scalar``.
    eps : float
        L∞ budget ε, in (0, 1].
    mask : torch.Tensor, optional
        0/1, broadcastable to ``base``, not all zero.
    steps : int, default 250
        Signed-Adam steps per restart.
    restarts : int, default 1
        Independent runs; the lowest final loss is kept.
    lr : float, optional
        Step size in pixel units (default 0.4·ε).
    batch_size : int, default 128
        Poisons per gradient batch.
    init : torch.Tensor, optional
        The first restart's starting Δ, shaped like ``base``.
    retrain : callable, optional
        ``retrain(poisoned_images, round) -> surrogates``.
    retrain_every : int, default 0
        Steps between retrains (0: never; > 0 needs ``retrain``).
    seed : int, default 0
        Seed of the starting noise and the losses' draws.
    device : str or torch.device, optional, default "cpu"
        Where crafting runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    MatchingResult
        The poisons, their Δ and the alignment per step.

    Raises
    ------
    BadInput
        On an empty or out-of-range batch, mismatched labels or ``init``, ε outside (0, 1], no
        surrogate, counts below 1, a bad ``retrain_every``/``retrain`` pair, ``lr`` ≤ 0, or a mask
        that is not 0/1 or is empty.
    """
    require(base.ndim == 4 and len(base) > 0, f"poison images must be a non-empty N×C×H×W batch, got {tuple(base.shape)}")
    require(len(labels) == len(base), f"{len(base)} poison images but {len(labels)} labels")
    require(init is None or init.shape == base.shape, f"init must be shaped like the poisons {tuple(base.shape)}")
    require(bool(torch.isfinite(base).all()) and float(base.min()) >= 0 and float(base.max()) <= 1,
            "poison images must lie in [0, 1]")
    check_in_range("epsilon", float(eps), 0.0, 1.0, low_open=True)
    require(len(surrogates) >= 1, "give at least one surrogate model")
    for name, v in (("steps", steps), ("restarts", restarts), ("batch_size", batch_size)):
        require(int(v) >= 1, f"{name} must be >= 1, got {v}")
    require(retrain_every >= 0, f"retrain_every must be >= 0, got {retrain_every}")
    require(retrain_every == 0 or retrain is not None, "retrain_every > 0 needs a retrain function")
    lr = 0.4 * eps if lr is None else float(lr)
    require(lr > 0, f"lr must be > 0, got {lr}")
    dev = resolve_device(device)
    base = base.to(dev)
    labels = labels.to(dev)
    m = None if mask is None else mask.to(dev, base.dtype)
    if m is not None:
        require(bool(((m == 0) | (m == 1)).all()), "the mask must be 0/1")
        require(bool(m.any()), "the mask is empty: nothing can be poisoned")
    n = len(base)
    t0 = time.perf_counter()
    milestones = sorted({max(1, int(steps * f)) for f in (3 / 8, 5 / 8, 7 / 8)})
    best = None
    restart_losses: list[float] = []
    total = restarts * steps
    for r in range(restarts):
        gen = torch.Generator().manual_seed(seed * 1009 + r)
        models = [s.to(dev).eval() for s in surrogates]
        adv = [adversarial_gradient(s, adversarial_loss, gen) for s in models]
        start = eps * torch.randn(base.shape, generator=gen) if init is None or r > 0 else init.detach().cpu()
        delta = project(start.to(dev), base, eps, m).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        history: list[float] = []
        for step in range(steps):
            delta.grad = torch.zeros_like(delta)
            tot = 0.0
            for start in range(0, n, batch_size):
                sl = slice(start, min(n, start + batch_size))
                d = delta[sl].detach().requires_grad_(True)
                loss = sum(matching_loss(s, train_loss, base[sl] + d, labels[sl], g, gn, gen)
                           for s, (g, gn) in zip(models, adv)) / len(models)
                loss.backward()
                delta.grad[sl] += d.grad
                tot += float(loss.detach()) * (sl.stop - sl.start)
            history.append(1 - tot / n)
            delta.grad.sign_()
            opt.step()
            sched.step()
            with torch.no_grad():
                delta.copy_(project(delta, base, eps, m))
            if retrain is not None and retrain_every and step % retrain_every == 0 and 0 < step < steps - 1:
                models = [s.to(dev).eval() for s in retrain((base + delta).detach().clamp(0, 1).cpu(),
                                                              step // retrain_every)]
                adv = [adversarial_gradient(s, adversarial_loss, gen) for s in models]
            if progress is not None:
                progress((r * steps + step + 1) / total, f"restart {r + 1}/{restarts}, step {step + 1}/{steps}: "
                         f"gradient alignment {history[-1]:.3f}")
        final = 1 - history[-1]
        restart_losses.append(final)
        if best is None or final < best[0]:
            best = (final, r, delta.detach().clone(), history)
    _, r_best, d_best, hist = best
    images = (base + d_best).clamp(0, 1)
    prov = {"eps": eps, "steps": steps, "restarts": restarts, "lr": lr, "batch_size": batch_size,
            "surrogates": len(surrogates), "retrain_every": retrain_every, "seed": seed, "n_poison": n,
            "masked": mask is not None, "init": "given" if init is not None else "random"}
    return MatchingResult(images.cpu(), (images - base).cpu(), hist, restart_losses, r_best,
                          time.perf_counter() - t0, prov)


def gradient_norms(model: nn.Module, train_loss: TrainLoss, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                   device: str | torch.device | None = "cpu") -> torch.Tensor:
    """The norm of each sample's training-loss gradient.

    Sleeper Agent's poison selection: the attacker poisons the candidates with the largest
    gradients, which have the most leverage on the victim.

    Parameters
    ----------
    model : nn.Module
        A trained surrogate (put in eval mode).
    train_loss : callable
        ``train_loss(model, x, y, gen) -> scalar``.
    x : torch.Tensor
        Candidates ``(N, C, H, W)``.
    y : torch.Tensor
        Their labels, N long.
    seed : int, default 0
        Seed of the loss's draws.
    device : str or torch.device, optional, default "cpu"
        Where the model runs.

    Returns
    -------
    torch.Tensor
        Gradient L2 norms, shape ``(N,)``, on the CPU.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    params = _params(model)
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(len(x))
    for i in range(len(x)):
        g = torch.autograd.grad(train_loss(model, x[i:i + 1].to(dev), y[i:i + 1].to(dev), gen), params,
                                allow_unused=True)
        out[i] = torch.sqrt(sum((t * t).sum() for t in g if t is not None)).cpu()
    return out
