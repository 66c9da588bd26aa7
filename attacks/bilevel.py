"""BLTO: backdooring contrastive learning with a trigger learned by bi-level optimisation.

Sun, Zhang, Lu, Chen, Wang, Chen, Lin, "Backdoor Contrastive Learning via Bi-level Trigger
Optimization", ICLR 2024 (authors' code: github.com/SWY666/SSL-backdoor-BLTO, which holds only a
README; this follows the paper). A trigger generator ``g_ψ`` maps an image to an input-dependent
additive trigger bounded in L∞ (``x + ε·tanh(g_ψ(x))``, :class:`attacks.triggers.LearnedTrigger`).
The attacker stamps it on a few target-class images of the unlabelled training set (clean-label
poisoning, ``rate`` of the whole set). ψ solves the paper's bi-level problem (Section 4):

    max_ψ  E_{x ∈ D, x_r ∈ D_target} sim( f_θ*(ψ)(aug(T_ψ(x))), f_θ*(ψ)(aug'(x_r)) )
    s.t.   θ*(ψ) = argmin_θ L_CL(θ; D with the poison set stamped by T_ψ),

i.e. triggered images must embed next to the target class, under the contrastive augmentations,
for an encoder trained contrastively on the data poisoned with that very trigger. As in the paper's
Algorithm 1 it is solved approximately by alternating (no hyper-gradient through θ*): each round runs
``inner_steps`` contrastive updates of a surrogate encoder on the currently poisoned data (inner
level), then ``outer_steps`` generator updates that maximise the similarity above with the surrogate
frozen (outer level); the surrogate is re-initialised every ``reinit_every`` rounds so that the
trigger works along the whole contrastive training trajectory, from a fresh encoder to a trained one.

Differences from the paper: the surrogate is SimCLR (the paper's default surrogate is SimSiam; the
issue asks for SimCLR, which is also our victim), our small conv encoder instead of ResNet-18, a
small U-Net-like generator, and by default an InfoNCE-style outer loss (``outer_loss="contrastive"``:
the target references against the batch's own clean images as negatives, which keeps a useful
gradient while the young surrogate's embeddings are still bunched together; ``"cosine"`` is the
plain mean cosine similarity above). ε is chosen for 28×28 grey digits rather than the paper's
natural colour images; at large ε the learned trigger is an adversarial perturbation that transfers
to an unpoisoned victim on its own, which the benchmark measures as a control.
Evaluation (as the paper): a victim encoder trained from scratch with SimCLR on the poisoned
unlabelled set, a linear probe on clean labelled data; CA on clean test images, ASR on triggered
test images of the non-target classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from workbench.adapter import model_mode
from workbench.contrastive import (
    Augment,
    SimCLRTrainer,
    build_encoder,
    knn_accuracy,
    linear_probe,
    nt_xent,
    train_simclr,
)
from workbench.data import ImageDataset, load_dataset, train_test_split
from workbench.errors import check_in_range, require
from workbench.training import Progress, resolve_device

from .poison import BackdoorMetrics, PoisonedDataset, backdoor_metrics, poison_dataset
from .triggers import LearnedTrigger, PatchTrigger, Trigger


class TriggerGenerator(nn.Module):
    """BLTO's trigger generator ``g_ψ``: a small U-Net.

    A conv block, a stride-2 down block, a bottleneck, upsampling, a skip connection and a 1×1
    output conv producing one value per pixel and channel (bounded later by ε·tanh).

    Parameters
    ----------
    channels : int, default 1
        Image channels C (input and output).
    width : int, default 16
        Channels of the first block (the bottleneck has twice as many).

    Returns
    -------
    A TriggerGenerator (an ``nn.Module``) mapping ``(N, C, H, W)`` to unbounded values of the same shape.
    """

    def __init__(self, channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.enc = nn.Sequential(nn.Conv2d(channels, w, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.LeakyReLU(0.2))
        self.dec = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.LeakyReLU(0.2))
        self.out = nn.Conv2d(w, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        d = F.interpolate(self.down(e), size=e.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.dec(torch.cat([e, d], 1)))


def make_learned_trigger(channels: int = 1, epsilon: float = 0.1, seed: int = 0, width: int = 16) -> LearnedTrigger:
    """A fresh, seeded BLTO trigger: a :class:`TriggerGenerator` inside a
    :class:`~attacks.triggers.LearnedTrigger` (``x + ε·tanh(g(x))``).

    Parameters
    ----------
    channels : int, default 1
        Image channels.
    epsilon : float, default 0.1
        L∞ bound ε of the trigger, in (0, 1].
    seed : int, default 0
        Seed of the generator's initialisation (the global RNG is left as it was).
    width : int, default 16
        Generator width.

    Returns
    -------
    LearnedTrigger
        The untrained trigger.

    Raises
    ------
    BadInput
        When ``epsilon`` is outside (0, 1].

    Examples
    --------
    >>> t = make_learned_trigger(epsilon=0.1, seed=0)
    >>> x = torch.full((2, 1, 8, 8), 0.5)
    >>> d = stamp(t, x) - x
    >>> tuple(d.shape), bool(d.abs().max() <= 0.1)
    ((2, 1, 8, 8), True)
    """
    check_in_range("epsilon", float(epsilon), 0.0, 1.0, low_open=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = TriggerGenerator(channels, width)
    return LearnedTrigger(gen, float(epsilon))


@torch.no_grad()
def stamp(trigger: Trigger, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Triggered copies (no autograd graph), batched, on the images' device.

    Parameters
    ----------
    trigger : Trigger
        Any trigger; a learned one runs on its generator's device.
    images : torch.Tensor
        Images ``(N, C, H, W)`` in [0, 1].
    batch_size : int, default 1024
        Images per generator call.

    Returns
    -------
    torch.Tensor
        The triggered images, shape ``(N, C, H, W)``, on ``images``' device.
    """
    if isinstance(trigger, LearnedTrigger):
        dev = next(trigger.generator.parameters()).device
        return torch.cat([trigger(images[i:i + batch_size].to(dev)).to(images.device)
                          for i in range(0, len(images), batch_size)])
    return trigger(images)


def poison_unlabelled(train: ImageDataset, trigger: Trigger, rate: float, target: int, seed: int = 0) -> PoisonedDataset:
    """Clean-label poisoning of the (to the victim, unlabelled) training set.

    ``rate`` of it, all of the target class, carry the trigger. Raises BadInput when the target class
    has too few images.

    Parameters
    ----------
    train : ImageDataset
        The training set (labels used only to pick target-class images).
    trigger : Trigger
        The trigger to stamp.
    rate : float
        Share of the whole set to poison, in (0, 1).
    target : int
        The target class.
    seed : int, default 0
        Seed of which target images are poisoned.

    Returns
    -------
    PoisonedDataset
        The set with the poisons stamped, labels unchanged.

    Raises
    ------
    BadInput
        When the target class has too few images, or the rate or target is out of range.
    """
    if isinstance(trigger, LearnedTrigger):
        with torch.no_grad(), model_mode(trigger.generator):
            dev = next(trigger.generator.parameters()).device
            trigger.generator.cpu()
            try:
                return poison_dataset(train, trigger, rate, target, mode="clean", seed=seed)
            finally:
                trigger.generator.to(dev)
    return poison_dataset(train, trigger, rate, target, mode="clean", seed=seed)


@dataclass
class BilevelTrigger:
    """The optimised trigger and how the optimisation went.

    Parameters
    ----------
    trigger : LearnedTrigger
        The trigger (generator on the CPU, eval mode).
    target : int
        The target class.
    epsilon : float
        Its L∞ bound.
    outer_similarity : list of float
        Mean (triggered, target) cosine similarity per round.
    inner_loss : list of float
        Mean surrogate NT-Xent loss per round.
    seconds : float
        Optimisation time.
    provenance : dict, default {}
        The settings used.

    Returns
    -------
    A BilevelTrigger (a dataclass) holding these fields.
    """

    trigger: LearnedTrigger  # generator on the CPU, eval mode
    target: int
    epsilon: float
    outer_similarity: list[float]  # mean (triggered, target) cosine similarity per round
    inner_loss: list[float]  # mean surrogate NT-Xent loss per round
    seconds: float
    provenance: dict = field(default_factory=dict)


def optimize_bilevel_trigger(train: ImageDataset, target: int = 0, rate: float = 0.01, *, epsilon: float = 0.1,
                             rounds: int = 60, inner_steps: int = 10, outer_steps: int = 5, reinit_every: int = 20,
                             batch_size: int = 256, lr: float = 1e-3, surrogate_lr: float = 2e-3,
                             temperature: float = 0.2, arch: str = "conv", augment: Augment | None = None,
                             outer_loss: str = "contrastive", surrogate_epochs: int = 0, seed: int = 0,
                             device: str | torch.device | None = "cpu",
                             progress: Progress | None = None) -> BilevelTrigger:
    """BLTO's alternating bi-level optimisation (paper Algorithm 1) of a trigger generator.

    ``train`` is the attacker's view of the training set: its labels are used only to pick the
    target-class images (the poison candidates and the references ``x_r``). ``surrogate_epochs`` > 0
    makes every surrogate live through one whole victim training run: ``surrogate_epochs`` epochs of
    the poisoned set in batches of ``batch_size``, with the victim's cosine learning-rate decay, before
    it is re-initialised (``reinit_every`` is then derived from it), so that the trigger is optimised
    against encoders from fresh to fully trained on the poisoned data.

    Parameters
    ----------
    train : ImageDataset
        The attacker's view of the training set.
    target : int, default 0
        The target class.
    rate : float, default 0.01
        Poison rate, in (0, 1).
    epsilon : float, default 0.1
        L∞ bound of the trigger, in (0, 1].
    rounds : int, default 60
        Alternating rounds.
    inner_steps : int, default 10
        Surrogate SimCLR steps per round.
    outer_steps : int, default 5
        Generator steps per round.
    reinit_every : int, default 20
        Rounds between surrogate re-initialisations.
    batch_size : int, default 256
        Batch of both levels, at least 2.
    lr : float, default 1e-3
        Generator learning rate.
    surrogate_lr : float, default 2e-3
        Surrogate learning rate.
    temperature : float, default 0.2
        NT-Xent temperature.
    arch : str, default "conv"
        Surrogate encoder architecture.
    augment : Augment, optional
        The contrastive augmentations (default: SimCLR's for the data).
    outer_loss : {"contrastive", "cosine"}, default "contrastive"
        The outer objective (see the module docstring).
    surrogate_epochs : int, default 0
        > 0: each surrogate lives through a whole victim training run of this many epochs.
    seed : int, default 0
        Seed of everything random.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    BilevelTrigger
        The trigger and the per-round similarity and loss.

    Raises
    ------
    BadInput
        On a target, rate or ε out of range, counts below 1, ``batch_size`` below 2, an unknown
        ``outer_loss``, or too few target-class images to poison.
    """
    k = train.num_classes
    require(isinstance(target, int) and 0 <= target < k, f"target class must be in 0..{k - 1}, got {target}")
    check_in_range("poison rate", float(rate), 0.0, 1.0, low_open=True, high_open=True)
    check_in_range("epsilon", float(epsilon), 0.0, 1.0, low_open=True)
    for name, v in (("rounds", rounds), ("inner_steps", inner_steps), ("outer_steps", outer_steps),
                    ("reinit_every", reinit_every)):
        require(int(v) >= 1, f"{name} must be >= 1, got {v}")
    require(batch_size >= 2, f"batch_size must be >= 2, got {batch_size}")
    require(outer_loss in ("contrastive", "cosine"), f"outer_loss must be 'contrastive' or 'cosine', got {outer_loss!r}")
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    x_all = train.images
    target_idx = torch.nonzero(train.labels == target).flatten()
    n_poison = max(1, int(round(rate * len(train))))
    require(n_poison <= len(target_idx), f"{n_poison} samples to poison ({rate:.1%} of {len(train)}) but only "
            f"{len(target_idx)} images of target class {target}")
    poison_idx = target_idx[torch.randperm(len(target_idx), generator=gen)[:n_poison]]
    is_poison = torch.zeros(len(train), dtype=torch.bool)
    is_poison[poison_idx] = True
    trigger = make_learned_trigger(train.channels, epsilon, seed=seed)
    trigger.generator.to(dev).train()
    g_opt = torch.optim.Adam(trigger.generator.parameters(), lr=lr)
    augment = augment or Augment()
    bs = min(batch_size, len(train))
    ref_bs = min(bs, len(target_idx))
    require(surrogate_epochs >= 0, f"surrogate_epochs must be >= 0, got {surrogate_epochs}")
    lifetime = surrogate_epochs * max(1, len(train) // bs)  # inner steps of one victim training run
    if lifetime:
        reinit_every = -(-lifetime // inner_steps)
    surrogate = sched = None
    sims, inner_losses = [], []
    t0 = time.perf_counter()
    for r in range(rounds):
        if r % reinit_every == 0:  # a fresh surrogate: the trigger must work from the start of CL training
            enc = build_encoder(arch, train.channels, train.image_size, seed=seed * 1000 + r + 1)
            surrogate = SimCLRTrainer(enc, train.input_shape, lr=surrogate_lr, temperature=temperature,
                                      augment=augment, device=dev, seed=seed * 1000 + r + 1)
            sched = (torch.optim.lr_scheduler.CosineAnnealingLR(surrogate.opt, T_max=lifetime) if lifetime
                     else None)
        # inner level: contrastive learning on the data poisoned with the current trigger
        tot = 0.0
        for _ in range(inner_steps):
            idx = torch.randint(len(train), (bs,), generator=gen)
            x = x_all[idx].to(dev)
            pm = is_poison[idx].to(dev)
            if bool(pm.any()):
                with torch.no_grad():
                    x[pm] = trigger(x[pm])
            tot += surrogate.step(x, gen)
            if sched is not None and sched.last_epoch < lifetime:
                sched.step()
        inner_losses.append(tot / inner_steps)
        # outer level: triggered embeddings next to the target class's, under augmentation
        surrogate.encoder.eval()
        for p in surrogate.encoder.parameters():
            p.requires_grad_(False)
        s_tot = 0.0
        for _ in range(outer_steps):
            x = x_all[torch.randint(len(train), (bs,), generator=gen)].to(dev)
            xr = x_all[target_idx[torch.randint(len(target_idx), (ref_bs,), generator=gen)]].to(dev)
            e_t = F.normalize(surrogate.encoder(augment(trigger(x), gen)), dim=1)
            with torch.no_grad():
                e_r = F.normalize(surrogate.encoder(augment(xr, gen)), dim=1)
                e_c = F.normalize(surrogate.encoder(augment(x, gen)), dim=1) if outer_loss == "contrastive" else None
            sim = (e_t @ e_r.T).mean()
            if outer_loss == "cosine":
                loss = -sim
            else:  # the target references against the clean images of the batch, InfoNCE-style
                logits = torch.cat([e_t @ e_r.T, e_t @ e_c.T], 1) / temperature
                loss = (torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, :len(xr)], 1)).mean()
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
            g_opt.step()
            s_tot += float(sim.detach())
        for p in surrogate.encoder.parameters():
            p.requires_grad_(True)
        sims.append(s_tot / outer_steps)
        if progress is not None:
            progress((r + 1) / rounds, f"BLTO round {r + 1}/{rounds}: similarity {sims[-1]:.3f}, "
                     f"NT-Xent {inner_losses[-1]:.3f}")
    trigger.generator.cpu().eval()
    for p in trigger.generator.parameters():
        p.requires_grad_(False)
    prov = {"target": target, "rate": rate, "epsilon": epsilon, "rounds": rounds, "inner_steps": inner_steps,
            "outer_steps": outer_steps, "reinit_every": reinit_every, "batch_size": bs, "lr": lr,
            "surrogate_lr": surrogate_lr, "temperature": temperature, "arch": arch, "outer_loss": outer_loss,
            "surrogate_epochs": surrogate_epochs, "seed": seed}
    return BilevelTrigger(trigger, target, float(epsilon), sims, inner_losses, time.perf_counter() - t0, prov)


@dataclass
class ContrastiveBackdoorEval:
    """A victim trained with SimCLR on poisoned unlabelled data, judged by a linear probe.

    Parameters
    ----------
    metrics : BackdoorMetrics
        CA of the probe on clean test images, ASR/RA on triggered ones.
    knn_accuracy : float or None
        kNN accuracy of the encoder's features, when asked for.
    poisoned : PoisonedDataset
        The training set the victim saw.
    victim_seconds : float
        Victim training time.
    simclr_epochs : int
        Victim SimCLR epochs.
    encoder : nn.Module, optional
        The victim encoder.
    classifier : nn.Module, optional
        Encoder + probe, returning logits.

    Returns
    -------
    A ContrastiveBackdoorEval (a dataclass) holding these fields.
    """

    metrics: BackdoorMetrics  # CA of the probe on clean test images, ASR/RA on triggered ones
    knn_accuracy: float | None
    poisoned: PoisonedDataset
    victim_seconds: float
    simclr_epochs: int
    encoder: nn.Module = field(repr=False, default=None)
    classifier: nn.Module = field(repr=False, default=None)  # encoder + probe, logits


def evaluate_contrastive_backdoor(train: ImageDataset, test: ImageDataset, trigger: Trigger | None, target: int,
                                  rate: float, *, simclr_epochs: int = 10, arch: str = "conv", seed: int = 0,
                                  device: str | torch.device | None = "cpu", knn: bool = False,
                                  eval_trigger: Trigger | None = None, poisoned: PoisonedDataset | None = None,
                                  progress: Progress | None = None) -> ContrastiveBackdoorEval:
    """Train a SimCLR victim on poisoned unlabelled data and measure CA/ASR with a linear probe.

    Poison ``train`` (clean-label, ``rate``) with ``trigger`` (None: no poisoning, a clean victim),
    train a SimCLR victim from scratch on its images, fit a linear probe on the clean labelled
    ``train``, and measure CA/ASR on ``test`` with ``eval_trigger`` (default: ``trigger``).
    ``poisoned``: an already poisoned training set (e.g. :func:`gradient_matching_poison`) to train on.

    Parameters
    ----------
    train, test : ImageDataset
        The training and test splits.
    trigger : Trigger or None
        The poisoning trigger, or ``None`` for a clean victim.
    target : int
        The target class.
    rate : float
        Poison rate, in (0, 1).
    simclr_epochs : int, default 10
        Victim SimCLR epochs.
    arch : str, default "conv"
        Victim encoder architecture.
    seed : int, default 0
        Seed of poisoning and training.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    knn : bool, default False
        Also measure kNN accuracy.
    eval_trigger : Trigger, optional
        The test-time trigger (default: ``trigger``).
    poisoned : PoisonedDataset, optional
        A ready poisoned training set.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    ContrastiveBackdoorEval
        CA/ASR/RA of the probe and the victim.

    Raises
    ------
    BadInput
        When neither trigger is given, or ``poisoned`` is not ``train`` poisoned.
    """
    eval_trigger = eval_trigger or trigger
    require(eval_trigger is not None, "give a trigger to poison with or one to evaluate with")
    if poisoned is not None:
        require(len(poisoned.dataset) == len(train), "the poisoned set must be the training set, poisoned")
    elif trigger is not None:
        poisoned = poison_unlabelled(train, trigger, rate, target, seed=seed)
    else:
        poisoned = PoisonedDataset(train, torch.zeros(0, dtype=torch.long), train.labels.clone(), eval_trigger,
                                   target, 0.0, "none")
    victim = train_simclr(poisoned.dataset.images, epochs=simclr_epochs, arch=arch, seed=seed, device=device,
                          progress=progress)
    probe = linear_probe(victim.encoder, train, test)
    clf = probe.as_classifier()
    if isinstance(eval_trigger, LearnedTrigger):
        eval_trigger.generator.to(next(clf.parameters()).device)
    metrics = backdoor_metrics(clf, test, eval_trigger, target, device=device)
    if isinstance(eval_trigger, LearnedTrigger):
        eval_trigger.generator.cpu()
    knn_acc = knn_accuracy(victim.encoder, train, test) if knn else None
    return ContrastiveBackdoorEval(metrics, knn_acc, poisoned, victim.seconds, simclr_epochs, victim.encoder, clf)


class _ProjectedEncoder(nn.Module):
    """A SimCLR surrogate as one module (encoder, then projection head) for gradient matching; only the
    encoder's parameters are matched (the head is frozen: the victim discards it, the probe reads f)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.head.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@dataclass
class MatchedPoison:
    """A gradient-matching clean-label poison for a contrastive victim and how it was crafted.

    Parameters
    ----------
    poisoned : PoisonedDataset
        The poisoned training set.
    alignment : list of float
        Gradient cosine per crafting step (encoder parameters), in [-1, 1].
    seconds : float
        Time of surrogates + matching.
    surrogate_seconds : float
        Time of the surrogates alone.
    provenance : dict, default {}
        The settings used.

    Returns
    -------
    A MatchedPoison (a dataclass) holding these fields.
    """

    poisoned: PoisonedDataset
    alignment: list[float]  # gradient cosine per crafting step (encoder parameters)
    seconds: float  # surrogates + matching
    surrogate_seconds: float
    provenance: dict = field(default_factory=dict)


def gradient_matching_poison(train: ImageDataset, trigger: Trigger, target: int = 0, rate: float = 0.01, *,
                             epsilon: float = 0.1, simclr_epochs: int = 5, surrogates: int = 1, steps: int = 100,
                             restarts: int = 1, negatives: int = 128, n_sources: int = 256, retrain_every: int = 0,
                             temperature: float = 0.2, arch: str = "conv", seed: int = 0,
                             device: str | torch.device | None = "cpu",
                             progress: Progress | None = None) -> MatchedPoison:
    """BLTO's goal, "triggered images embed next to the target class", reached by gradient matching
    (:mod:`attacks.gradient_matching`) instead of a trigger generator.

    The poisoned images are the ones :func:`poison_unlabelled` picks (``rate`` of the set, target class,
    labels unchanged); each gets Δ with ``‖Δ‖∞ ≤ ε`` around the *clean* image (the budget of BLTO's
    poisons), starting from ``trigger``'s perturbation. ``trigger`` is the test-time trigger (e.g. BLTO's).
    Surrogates: SimCLR encoders trained the way the victim is (``simclr_epochs``) on the set poisoned with
    ``trigger``. Poison loss: the NT-Xent terms anchored at the poisons' two views, with ``negatives`` clean
    images in the batch; adversarial loss: −mean cos(f(aug(T(x_s))), f(aug(x_r))) over non-target sources
    x_s and unpoisoned target references x_r of the training set.

    Parameters
    ----------
    train : ImageDataset
        The training set.
    trigger : Trigger
        The test-time trigger (the perturbations start from it).
    target : int, default 0
        The target class.
    rate : float, default 0.01
        Poison rate, in (0, 1).
    epsilon : float, default 0.1
        L∞ budget of each poison around its clean image.
    simclr_epochs : int, default 5
        Surrogate SimCLR epochs.
    surrogates : int, default 1
        Surrogate encoders (ensemble).
    steps : int, default 100
        Crafting steps.
    restarts : int, default 1
        Independent crafting runs; the one with the lowest final matching loss is kept.
    negatives : int, default 128
        Clean images in the poison loss's batch.
    n_sources : int, default 256
        Non-target source images of the adversarial loss.
    retrain_every : int, default 0
        Steps between surrogate retraining (0: never).
    temperature : float, default 0.2
        NT-Xent temperature.
    arch : str, default "conv"
        Surrogate encoder architecture.
    seed : int, default 0
        Seed of everything random.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    MatchedPoison
        The poisoned set and the alignment per step.

    Raises
    ------
    BadInput
        On a target out of range or counts below 1.
    """
    from .gradient_matching import gradient_matching

    require(isinstance(target, int) and 0 <= target < train.num_classes, f"target class must be in 0..{train.num_classes - 1}, got {target}")
    require(negatives >= 1 and n_sources >= 1 and surrogates >= 1, "negatives, n_sources and surrogates must be >= 1")
    t0 = time.perf_counter()
    start = poison_unlabelled(train, trigger, rate, target, seed=seed)
    idx = start.poisoned_indices
    base = train.images[idx]
    gen = torch.Generator().manual_seed(seed + 271)
    others = torch.nonzero(~start.is_poisoned).flatten()
    src_pool = others[train.labels[others] != target]
    ref_pool = others[train.labels[others] == target]
    sources = stamp(trigger, train.images[src_pool[torch.randperm(len(src_pool), generator=gen)[:n_sources]]])
    refs = train.images[ref_pool[torch.randperm(len(ref_pool), generator=gen)[:n_sources]]]
    augment = Augment()
    n_rounds = 1 + (max(0, (steps - 2) // retrain_every) if retrain_every else 0)
    sur_seconds = [0.0]

    def prog(f, m=""):
        if progress is not None:
            progress(f, m)

    def make_surrogates(images: torch.Tensor, rnd: int):
        x = train.images.clone()
        x[idx] = images
        out = []
        for k in range(surrogates):
            f0 = (rnd * surrogates + k) / (n_rounds * surrogates)
            res = train_simclr(x, epochs=simclr_epochs, arch=arch, temperature=temperature,
                               seed=seed * 7919 + 1000 * (rnd + 1) + k, device=device,
                               progress=lambda f, m="", f0=f0: prog(0.5 * (f0 + f / (n_rounds * surrogates)), m))
            sur_seconds[0] += res.seconds
            out.append(_ProjectedEncoder(res.encoder, res.head))
        return out

    def train_loss(model, x, y, g):
        neg = train.images[others[torch.randint(len(others), (negatives,), generator=g)]].to(x.device)
        batch = torch.cat([x, neg])
        z = model(torch.cat([augment(batch, g), augment(batch, g)]))
        anchors = torch.arange(len(batch)) < len(x)
        return nt_xent(z[:len(batch)], z[len(batch):], temperature, anchors=anchors)

    def adversarial_loss(model, g):
        dev_ = next(model.parameters()).device
        e_t = F.normalize(model.encoder(augment(sources.to(dev_), g)), dim=1)
        e_r = F.normalize(model.encoder(augment(refs.to(dev_), g)), dim=1)
        return -(e_t @ e_r.T).mean()

    models = make_surrogates(start.dataset.images[idx], 0)
    res = gradient_matching(base, torch.full((len(idx),), target), models, train_loss, adversarial_loss,
                            eps=epsilon, steps=steps, restarts=restarts, init=start.dataset.images[idx] - base,
                            retrain=make_surrogates if retrain_every else None, retrain_every=retrain_every,
                            seed=seed, device=device, progress=lambda f, m="": prog(0.5 + 0.5 * f, m))
    images = train.images.clone()
    images[idx] = res.images
    ds = ImageDataset(images, train.labels.clone(), list(train.class_names), f"{train.name}+gm-poison",
                      indices=train.indices)
    poisoned = PoisonedDataset(ds, idx, train.labels.clone(), trigger, target, float(rate), "clean")
    prov = {"epsilon": epsilon, "simclr_epochs": simclr_epochs, "surrogates": surrogates, "steps": steps,
            "restarts": restarts, "negatives": negatives, "n_sources": n_sources, "retrain_every": retrain_every,
            "temperature": temperature, "arch": arch, "seed": seed, "matching": res.provenance}
    return MatchedPoison(poisoned, res.alignment, time.perf_counter() - t0, sur_seconds[0], prov)


@dataclass
class BilevelAttackSummary:
    """The reportable part of a BLTO run (no models, no datasets).

    Parameters
    ----------
    target : int
        The target class.
    rate : float
        Poison rate.
    epsilon : float
        L∞ bound of the trigger.
    class_names : list of str
        K class names.
    table : list of list
        One row per trigger: trigger, clean probe accuracy, ASR, poisoned images.
    clean_accuracy, attack_success_rate : float
        CA and ASR of the BLTO victim, in [0, 1].
    n_poisoned : int
        Poisoned training images.
    poisoned_indices : list of int
        Their positions.
    outer_similarity, inner_loss : list of float
        The optimisation's curves.
    trigger_seconds, victim_seconds : float
        Time of trigger optimisation and victim training.
    example_clean, example_triggered : torch.Tensor
        A few test images without and with the trigger.
    provenance : dict
        How the run was made.

    Returns
    -------
    A BilevelAttackSummary (a dataclass) holding these fields.
    """

    target: int
    rate: float
    epsilon: float
    class_names: list[str]
    table: list[list]  # trigger, clean probe accuracy, ASR, poisoned images
    clean_accuracy: float
    attack_success_rate: float
    n_poisoned: int
    poisoned_indices: list[int]
    outer_similarity: list[float]
    inner_loss: list[float]
    trigger_seconds: float
    victim_seconds: float
    example_clean: torch.Tensor
    example_triggered: torch.Tensor
    provenance: dict

    def report_sections(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from workbench.report import Figure, ImageGrid, Metrics, Table, Text, figure_png

        eps = self.epsilon
        pert = self.example_triggered - self.example_clean
        fig, ax = plt.subplots(figsize=(5, 2.6))
        ax.plot(self.outer_similarity, label="outer: mean cos(triggered, target)")
        ax.set_xlabel("round")
        ax.legend(fontsize=7, loc="upper left")
        ax2 = ax.twinx()
        ax2.plot(self.inner_loss, color="tab:orange", label="inner: surrogate NT-Xent")
        ax2.legend(fontsize=7, loc="lower right")
        n = len(self.example_clean)
        return [
            Metrics("BLTO against SimCLR", {
                "target": self.class_names[self.target], "poison rate": f"{100 * self.rate:.2f}%",
                "poisoned images (target class, labels unchanged)": self.n_poisoned, "L∞ bound ε": round(eps, 4),
                "victim clean probe accuracy (CA)": f"{100 * self.clean_accuracy:.2f}%",
                "attack success rate (ASR)": f"{100 * self.attack_success_rate:.2f}%",
                "trigger optimisation (s)": round(self.trigger_seconds, 1),
                "victim SimCLR (s)": round(self.victim_seconds, 1)}),
            Table("Victims: SimCLR from scratch on the poisoned set, linear probe on clean labels",
                  ["trigger", "clean probe accuracy", "ASR", "poisoned images"], self.table,
                  note="ASR counts triggered test images whose true class is not the target. The last row (if "
                       "present) is a victim trained without poison, attacked with the BLTO trigger at test time: "
                       "the part of the ASR that is adversarial transfer rather than backdoor."),
            ImageGrid("Test images: clean (top), triggered (middle), trigger scaled to [0, 1] (bottom)",
                      torch.cat([self.example_clean, self.example_triggered, (pert * 0.5 / eps + 0.5).clamp(0, 1)]),
                      columns=max(1, n), scale=4),
            Figure("Bi-level optimisation per round", figure_png(fig)),
            Text("How it works", "The trigger generator is trained against a surrogate SimCLR encoder that is itself "
                 "trained on data poisoned with the current trigger (and re-initialised regularly), so that triggered "
                 "images embed next to the target class throughout contrastive training."),
        ]


@dataclass
class BilevelAttackResult:
    """BLTO end to end: the learned trigger, the victim's CA/ASR and optional baselines.

    Parameters
    ----------
    trigger : BilevelTrigger
        The learned trigger.
    victim : ContrastiveBackdoorEval
        The victim poisoned with it.
    patch_baseline : ContrastiveBackdoorEval or None
        The same with a fixed white patch, when asked for.
    clean_baseline : ContrastiveBackdoorEval or None
        A clean victim; its ASR is the BLTO trigger's without poisoning.
    class_names : list of str
        K class names.
    example_clean, example_triggered : torch.Tensor
        A few test images without and with the trigger.
    provenance : dict
        How the run was made.

    Returns
    -------
    A BilevelAttackResult (a dataclass) holding these fields.
    """

    trigger: BilevelTrigger
    victim: ContrastiveBackdoorEval
    patch_baseline: ContrastiveBackdoorEval | None
    clean_baseline: ContrastiveBackdoorEval | None  # clean victim; its ASR is the BLTO trigger's without poisoning
    class_names: list[str]
    example_clean: torch.Tensor
    example_triggered: torch.Tensor
    provenance: dict

    def table_rows(self) -> list[list]:
        rows = []
        for name, ev in ((f"BLTO (learned, ε={self.trigger.epsilon:.3g})", self.victim),
                         ("fixed white patch", self.patch_baseline),
                         ("no poison, BLTO trigger at test time", self.clean_baseline)):
            if ev is not None:
                rows.append([name, f"{100 * ev.metrics.clean_accuracy:.2f}%",
                             f"{100 * ev.metrics.attack_success_rate:.2f}%", len(ev.poisoned.poisoned_indices)])
        return rows

    def summary(self) -> BilevelAttackSummary:
        m = self.victim.metrics
        return BilevelAttackSummary(
            target=self.trigger.target, rate=float(self.provenance["rate"]), epsilon=self.trigger.epsilon,
            class_names=self.class_names, table=self.table_rows(), clean_accuracy=m.clean_accuracy,
            attack_success_rate=m.attack_success_rate, n_poisoned=len(self.victim.poisoned.poisoned_indices),
            poisoned_indices=self.victim.poisoned.poisoned_indices.tolist(),
            outer_similarity=self.trigger.outer_similarity, inner_loss=self.trigger.inner_loss,
            trigger_seconds=self.trigger.seconds, victim_seconds=self.victim.victim_seconds,
            example_clean=self.example_clean, example_triggered=self.example_triggered,
            provenance=dict(self.provenance))

    def report_sections(self):
        return self.summary().report_sections()


def run_bilevel_attack(data: str | ImageDataset = "mnist10k", rate: float = 0.01, target: int = 0, *,
                       epsilon: float = 0.1, rounds: int = 60, inner_steps: int = 10, outer_steps: int = 5,
                       reinit_every: int = 20, lr: float = 1e-3, outer_loss: str = "contrastive",
                       simclr_epochs: int = 10, arch: str = "conv", seed: int = 0,
                       device: str | torch.device | None = "cpu", compare_patch: bool = False,
                       compare_clean: bool = False, patch_size: int = 4, test_fraction: float = 0.2,
                       train: ImageDataset | None = None, test: ImageDataset | None = None,
                       progress: Progress | None = None) -> BilevelAttackResult:
    """BLTO end to end (Sun et al., ICLR 2024).

    Optimise a BLTO trigger on the training split, poison ``rate`` of it, train a SimCLR victim,
    probe it; optionally the same with a fixed white ``patch_size`` patch and without poisoning.

    Parameters
    ----------
    data : str or ImageDataset, default "mnist10k"
        A dataset spec or a dataset, split unless ``train`` and ``test`` are given.
    rate : float, default 0.01
        Poison rate, in (0, 1).
    target : int, default 0
        The target class.
    epsilon, rounds, inner_steps, outer_steps, reinit_every, lr, outer_loss :
        The trigger optimisation, as :func:`optimize_bilevel_trigger`.
    simclr_epochs : int, default 10
        Victim SimCLR epochs.
    arch : str, default "conv"
        Encoder architecture.
    seed : int, default 0
        Seed of everything random.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    compare_patch : bool, default False
        Also poison a victim with a white patch.
    compare_clean : bool, default False
        Also train a clean victim.
    patch_size : int, default 4
        Side of the baseline patch.
    test_fraction : float, default 0.2
        Share held out as the test split.
    train, test : ImageDataset, optional
        Given splits (both or neither).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    BilevelAttackResult
        The trigger, the victim's CA/ASR and the baselines asked for.

    Raises
    ------
    BadInput
        On only one of ``train``/``test``, a target or rate out of range, or invalid optimisation settings.
    """
    if train is None or test is None:
        require(train is None and test is None, "give both train and test, or neither")
        ds = load_dataset(data) if isinstance(data, str) else data
        train, test = train_test_split(ds, test_fraction, seed)
    k = train.num_classes
    require(isinstance(target, int) and 0 <= target < k, f"target class must be in 0..{k - 1}, got {target}")
    check_in_range("poison rate", float(rate), 0.0, 1.0, low_open=True, high_open=True)
    patch = PatchTrigger(size=patch_size) if compare_patch else None
    if patch is not None:
        patch.box(*train.image_size)
    n_stages = 2 + int(compare_patch) + int(compare_clean)
    stage = [0]

    def sub(f, m=""):
        if progress is not None:
            progress((stage[0] + f) / n_stages, m)

    t0 = time.perf_counter()
    bt = optimize_bilevel_trigger(train, target, rate, epsilon=epsilon, rounds=rounds, inner_steps=inner_steps,
                                  outer_steps=outer_steps, reinit_every=reinit_every, lr=lr, outer_loss=outer_loss,
                                  arch=arch, seed=seed,
                                  device=device, progress=sub)
    stage[0] += 1
    victim = evaluate_contrastive_backdoor(train, test, bt.trigger, target, rate, simclr_epochs=simclr_epochs,
                                           arch=arch, seed=seed, device=device, progress=sub)
    patch_ev = clean_ev = None
    if compare_patch:
        stage[0] += 1
        patch_ev = evaluate_contrastive_backdoor(train, test, patch, target, rate, simclr_epochs=simclr_epochs,
                                                 arch=arch, seed=seed, device=device, progress=sub)
    if compare_clean:
        stage[0] += 1
        clean_ev = evaluate_contrastive_backdoor(train, test, None, target, rate, simclr_epochs=simclr_epochs,
                                                 arch=arch, seed=seed, device=device, eval_trigger=bt.trigger,
                                                 progress=sub)
    keep = torch.nonzero(test.labels != target).flatten()[:8]
    ex = test.images[keep]
    prov = {"data": data if isinstance(data, str) else train.name, "rate": rate, "target": target, "seed": seed,
            "simclr_epochs": simclr_epochs, "arch": arch, "n_train": len(train), "n_test": len(test),
            "seconds": round(time.perf_counter() - t0, 1), **{f"blto_{k}": v for k, v in bt.provenance.items()}}
    return BilevelAttackResult(bt, victim, patch_ev, clean_ev, list(train.class_names), ex, stamp(bt.trigger, ex), prov)
