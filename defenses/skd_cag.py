"""SKD-CAG: unlearning a text trigger in a text-to-image diffusion model by self-knowledge distillation
with cross-attention guidance.

Paper: "Sealing The Backdoor: Unlearning Adversarial Text Triggers In Diffusion Models Using Knowledge
Distillation" (2025); reference code Mystic-Slice/Sealing-The-Backdoor (``attention_guided_kd*.py``,
``attention_map/utils.py``, ``finetune_rev.py``).

Method (the paper's method section; the labels below are ours, not the paper's equation numbers): a
frozen copy of the backdoored UNet (the *teacher*) sees the prompt *without* the trigger; the backdoored UNet being trained (the *student*) sees the same prompt *with* the trigger, on
the same noisy input ``x_t`` and timestep ``t``. The loss is

    L = α · L_attn + (1 − α) · L_pred
    L_pred = ‖ε_student(x_t, t, c_trig) − ε_teacher(x_t, t, c_clean)‖²
    L_attn = mean over cross-attention layers and tokens of
             ‖A_student[token] − A_teacher[token]‖² for the shared (non-trigger) tokens and
             ‖A_student[trigger] − target‖² for the trigger tokens

with ``A[token]`` the H·W cross-attention probabilities that image positions give the token (mean over
heads). Trigger targets (all three of the authors' scripts): ``"noise"`` (uniform noise,
``attention_guided_kd.py``), ``"zeros"`` (``attention_guided_kd_black.py``) and ``"random_word"``
(the teacher's map of a random word put where the trigger stood, ``attention_guided_kd_random_words.py``;
then the teacher's prompt carries that word, as in that script). Inputs are Gaussian noise at uniform
random timesteps, so no clean images are needed (``inputs="noise"``). Our addition, ``inputs="trajectory"``:
the ``x_t`` the teacher itself visits while generating from the clean prompts (still no clean images), which
are on the model's input distribution at every ``t``, where pure noise at small ``t`` is not.

Flaws of the released code that we fix (and other differences):

1. **Detached attention maps.** ``get_attn_maps`` turns each map into NumPy (``.detach().numpy()``) and
   min-max normalises it before the loss, so ``L_attn`` carries no gradient at all: the released
   "attention guidance" only rescales the loss value and trains nothing. Our processor
   (:class:`CrossAttentionCapture`) keeps the maps in the autograd graph.
2. **One shared store.** Teacher and student hooks write into one global ``attn_maps`` dict keyed by
   timestep and layer name; both see the same timestep, so the student's maps overwrite the teacher's
   and the "teacher maps" the loss reads are the student's own. Each model here gets its own
   :class:`AttentionStore` (installed with ``unet.set_attn_processor`` on every cross-attention layer).
3. **Batch size 1 and hard-coded trigger length.** The released capture only works with batch size 1 and
   assumes the trigger is the first two tokens; we locate the trigger tokens in each prompt and align
   the shared tokens of the student's and the teacher's prompts explicitly (batched gathers), checking
   that they agree.
4. **Map scale.** The authors compare min-max normalised maps (upsampled to 128×128 and summed over
   layers) and use U(0, 1) noise as target. We compare raw attention probabilities per layer at the
   layer's own resolution (normalisation would hide exactly the attention *mass* the trigger draws),
   average the per-layer MSE over layers, and scale the noise target to U(0, 2/K) (mean 1/K, the
   uniform attention over K tokens). Padding positions count as shared tokens (Stable Diffusion attends
   to them too).
5. **Additions of ours.** ``inputs="trajectory"`` (above; our default, because on the small model it removed
   more of the target backdoor and kept more clean fidelity than pure-noise inputs: 150 steps, lr 2e-4,
   removal 93% vs 81%, clean accuracy 75% vs 61%; ``inputs="noise"`` gives the paper's setting) and
   ``preserve`` (weight 1 by default; 0 gives the paper's loss), a
   clean-prompt anchor term ``preserve · ‖ε_student(x_t, c_clean) − ε_teacher(x_t, c_clean)‖²``: the paper's
   loss only ever shows the student triggered prompts, so nothing holds clean prompts in place.
6. **Trainable parameters.** The authors train all UNet parameters (AdamW, lr 1e-6, EMA); we offer
   ``params="all"``, ``params="kv"`` (only the cross-attention key/value projections, which see the
   text) and ``params="none"`` for the UNet, and ``text_encoder=True`` to train the student's text encoder
   (the teacher keeps a frozen copy), AdamW, optional EMA of the UNet (``ema_decay``).
   **Our default is the text encoder alone** (``params="none", text_encoder=True, preserve=1``). Reason,
   measured on the small model (target backdoor planted with 1,000 steps at 50% poison, seed 0, 150 steps,
   lr 2e-4, 100 generations): training the UNet (the paper's choice) removed 93% but cost 33 points of
   clean accuracy; adding the anchor traded removal for fidelity (``preserve`` 1: 86% / −18; 5: 71% / −5;
   ``params="kv"`` + anchor: 43% / −6) and never met both; the text encoder alone with the anchor removed
   99% at 0 points (98% / −1 without the anchor; 98% / −2 with the UNet trained too). The backdoor is
   planted through the text encoder (:mod:`attacks.text_trigger` had to train it), and a target backdoor
   makes the encoder drop the digit from triggered prompts, so the UNet cannot recover it from the triggered
   embedding without moving its answer to clean prompts too. The paper's setting is
   ``params="all", text_encoder=False, preserve=0``.

Baseline (``finetune_rev.py``): plain fine-tuning reversal, the *clean* model as teacher given the
*triggered* prompt, ``L = L_pred``; see :func:`finetune_reversal`.

Works on any diffusers ``UNet2DConditionModel`` with a text encoder and tokenizer: pass an object with
``unet``, ``encode(ids)``, ``tokenizer`` (``encode(prompts) -> ids``, ``ids_for(text) -> ids``),
``noise_scheduler()`` and ``config.channels`` / ``config.image_size`` (the latent shape for Stable
Diffusion); :class:`workbench.diffusion.TextToImage` is one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.text_trigger import TextTriggerSpec, backdoor_rate
from workbench.adapter import model_mode
from workbench.diffusion import (
    NEUTRAL_WORDS,
    TextToImage,
    balanced_prompts,
    insert_trigger,
    prompt_accuracy,
    sample,
)
from workbench.errors import BadInput, check_in_range, require
from workbench.training import Progress, resolve_device

TARGETS = ("noise", "zeros", "random_word")
PARAM_CHOICES = ("all", "kv", "none")


# ---------------------------------------------------------------- attention capture
class AttentionStore:
    """Cross-attention probabilities of the last forward pass, per layer name: B×(H·W)×K tensors.

    One store per model: the teacher's and the student's never mix. ``detach=False`` keeps the maps in
    the autograd graph.

    Parameters
    ----------
    detach : bool, default False
        Store detached maps (no gradient).

    Returns
    -------
    An AttentionStore: ``maps`` (layer name → ``(B, H·W, K)`` tensor), ``clear()`` and ``len()``;
    filled by :class:`CrossAttentionCapture`.
    """

    def __init__(self, detach: bool = False):
        self.detach = detach
        self.maps: dict[str, torch.Tensor] = {}
        self.previous: dict = {}

    def clear(self) -> None:
        self.maps.clear()

    def __len__(self) -> int:
        return len(self.maps)

    def token_mass(self, token_mask: torch.Tensor) -> torch.Tensor:
        """Per sample: attention probability on the masked tokens, mean over layers and positions (B)."""
        require(len(self.maps) > 0, "the attention store is empty: run a forward pass first")
        m = token_mask.float()
        return torch.stack([(a * m[:, None, :].to(a.device)).sum(-1).mean(-1) for a in self.maps.values()]).mean(0)


class CrossAttentionCapture:
    """A diffusers attention processor that computes attention like ``AttnProcessor`` and records the
    probabilities (mean over heads) into its :class:`AttentionStore` under ``name``.

    Parameters
    ----------
    store : AttentionStore
        Where the probabilities go.
    name : str
        The layer's name (key in ``store.maps``).

    Returns
    -------
    A CrossAttentionCapture: a callable processor with diffusers' ``AttnProcessor`` signature,
    returning the attention output ``(B, N, C)``.
    """

    def __init__(self, store: AttentionStore, name: str):
        self.store = store
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B·heads)×Q×K, differentiable
        maps = probs.view(batch, attn.heads, probs.shape[1], probs.shape[2]).mean(1)
        self.store.maps[self.name] = maps.detach() if self.store.detach else maps
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_layers(unet: nn.Module) -> list[str]:
    """Processor names (``...attn2.processor``) of every cross-attention layer of a diffusers UNet.

    Parameters
    ----------
    unet : nn.Module
        A diffusers ``UNet2DConditionModel`` (anything with ``attn_processors``).

    Returns
    -------
    list of str
        The processor names, in the UNet's order.

    Raises
    ------
    BadInput
        When the model has no attention processors or no cross-attention layer.
    """
    require(hasattr(unet, "attn_processors") and hasattr(unet, "set_attn_processor"),
            f"{type(unet).__name__} is not a diffusers UNet with attention processors")
    names = []
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if getattr(module, "is_cross_attention", False):
            names.append(name)
    if not names:
        raise BadInput(f"{type(unet).__name__} has no cross-attention layers: SKD-CAG needs a text-conditioned "
                       "UNet (e.g. UNet2DConditionModel with CrossAttn blocks)")
    return names


def install_attention_capture(unet: nn.Module, detach: bool = False) -> AttentionStore:
    """Install :class:`CrossAttentionCapture` on every cross-attention layer (``set_attn_processor``).

    Returns this model's own store; :func:`remove_attention_capture` restores the previous processors.

    Parameters
    ----------
    unet : nn.Module
        A diffusers UNet with cross-attention.
    detach : bool, default False
        Store detached maps.

    Returns
    -------
    AttentionStore
        The store the new processors write into (it remembers the previous processors).

    Raises
    ------
    BadInput
        When the model has no cross-attention layer.
    """
    cross = set(cross_attention_layers(unet))
    store = AttentionStore(detach)
    current = dict(unet.attn_processors)
    store.previous = current
    unet.set_attn_processor({n: (CrossAttentionCapture(store, n.removesuffix(".processor")) if n in cross else p)
                             for n, p in current.items()})
    return store


def remove_attention_capture(unet: nn.Module, store: AttentionStore) -> None:
    """Restore the processors :func:`install_attention_capture` replaced, and empty the store.

    Parameters
    ----------
    unet : nn.Module
        The UNet the capture was installed on.
    store : AttentionStore
        The store it returned.

    Returns
    -------
    None
    """
    if store.previous:
        unet.set_attn_processor(dict(store.previous))
    store.clear()


# ---------------------------------------------------------------- token alignment and loss
def trigger_ids(tokenizer, trigger: str) -> list[int]:
    """Token ids of the trigger (BadInput if a word is not in the vocabulary).

    Parameters
    ----------
    tokenizer : object
        A tokenizer with ``ids_for(text) -> list of int``.
    trigger : str
        The trigger, one or more words.

    Returns
    -------
    list of int
        Its token ids, at least one.

    Raises
    ------
    BadInput
        When the trigger is empty or encodes to no tokens (or a word is out of the vocabulary).
    """
    require(isinstance(trigger, str) and trigger.strip() != "", "the trigger must be a non-empty string")
    ids = tokenizer.ids_for(trigger)
    require(len(ids) > 0, f"the trigger {trigger!r} encodes to no tokens")
    return list(ids)


def token_alignment(student_ids: torch.Tensor, teacher_ids: torch.Tensor, trig: Sequence[int],
                    same_length: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Align the student's triggered sequence with the teacher's.

    Returns ``order`` (B×K: the student's positions, non-trigger ones first in order, then trigger ones),
    the trigger mask B×K, and the number of trigger tokens ``n``. For a clean teacher prompt
    (``same_length=False``) student position ``order[:, j]`` matches teacher position ``j`` for
    ``j < K − n``; for a substituted prompt (random word) both sequences align position by position.

    Parameters
    ----------
    student_ids : torch.Tensor
        Token ids of the triggered prompts ``(B, K)``.
    teacher_ids : torch.Tensor
        Token ids of the teacher's prompts ``(B, K)``.
    trig : sequence of int
        The trigger's token ids.
    same_length : bool, default False
        The teacher's prompt has a word substituted for the trigger (``random_word`` target).

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor, int)
        ``order`` ``(B, K)``, the trigger mask ``(B, K)`` and ``n``.

    Raises
    ------
    BadInput
        When a prompt lacks the trigger, the trigger occurs a different number of times across
        prompts, or the prompts differ in more than the trigger.
    """
    is_trig = torch.isin(student_ids, torch.tensor(list(trig), device=student_ids.device))
    counts = is_trig.sum(1)
    require(bool((counts > 0).all()), "a triggered prompt does not contain the trigger tokens")
    require(bool((counts == counts[0]).all()), "the trigger occurs a different number of times across prompts")
    n = int(counts[0])
    order = torch.sort(is_trig.long(), dim=1, stable=True).indices
    k = student_ids.shape[1]
    if same_length:
        shared_ok = (student_ids == teacher_ids) | is_trig
    else:
        shared_ok = student_ids.gather(1, order[:, :k - n]) == teacher_ids[:, :k - n]
    require(bool(shared_ok.all()), "the teacher's and the student's prompts differ in more than the trigger")
    return order, is_trig, n


def attention_loss(student: AttentionStore, teacher: AttentionStore, order: torch.Tensor, n_trig: int,
                   target: str, generator: torch.Generator | None = None, same_length: bool = False
                   ) -> torch.Tensor:
    """L_attn: per layer, MSE of shared-token maps to the teacher's and of trigger-token maps
    to the neutral target; mean over layers.

    Parameters
    ----------
    student, teacher : AttentionStore
        The two models' maps of the same forward step (same layers).
    order : torch.Tensor
        The student's token order ``(B, K)`` from :func:`token_alignment`.
    n_trig : int
        Number of trigger tokens.
    target : {"noise", "zeros", "random_word"}
        What the trigger tokens' maps are pulled to.
    generator : torch.Generator, optional
        Draws of the ``"noise"`` target (U(0, 2/K)).
    same_length : bool, default False
        Aligned position by position (``random_word``).

    Returns
    -------
    torch.Tensor
        The scalar L_attn, differentiable in the student's maps.

    Raises
    ------
    BadInput
        On an unknown target, or stores with different or no layers.
    """
    require(target in TARGETS, f"unknown trigger target {target!r}; use one of {', '.join(TARGETS)}")
    require(set(student.maps) == set(teacher.maps) and len(student.maps) > 0,
            "teacher and student stores hold different layers (run both forward passes first)")
    losses = []
    for name, s in student.maps.items():
        t = teacher.maps[name]
        b, q, k = s.shape
        idx = order.to(s.device)[:, None, :].expand(b, q, k)
        s_sorted = s.gather(2, idx)
        s_shared, s_trig = s_sorted[..., :k - n_trig], s_sorted[..., k - n_trig:]
        if same_length:
            t_sorted = t.gather(2, idx)
            t_shared = t_sorted[..., :k - n_trig]
        else:
            t_shared = t[..., :k - n_trig]
        if target == "zeros":
            goal = torch.zeros_like(s_trig)
        elif target == "noise":
            goal = (torch.rand(s_trig.shape, generator=generator) * (2.0 / k)).to(s.device)
        else:
            goal = t.gather(2, idx)[..., k - n_trig:]
        sq = torch.cat([(s_shared - t_shared.detach()).pow(2), (s_trig - goal.detach()).pow(2)], dim=2)
        losses.append(sq.mean())
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- the unlearning loop
@dataclass
class SKDCAGConfig:
    """Settings of an SKD-CAG (or reversal) run; ``validate()`` checks them.

    Parameters
    ----------
    alpha : float, default 0.5
        α of ``L = α·L_attn + (1 − α)·L_pred``, in [0, 1].
    target : {"noise", "zeros", "random_word"}, default "zeros"
        Trigger attention target.
    params : {"all", "kv", "none"}, default "none"
        UNet parameters that train: all (the paper), cross-attention key/value, or none.
    steps : int, default 150
        Optimisation steps, at least 1.
    batch_size : int, default 32
        Prompts per step, at least 1.
    lr : float, default 2e-4
        AdamW learning rate, > 0.
    weight_decay : float, default 1e-2
        AdamW weight decay.
    ema_decay : float, optional
        EMA of the UNet's weights, in [0, 1) (default: none).
    trigger_position : int, default 0
        Word position where the trigger is inserted (0 = prefix).
    inputs : {"noise", "trajectory"}, default "trajectory"
        ``x_t`` ~ N(0, I) at random t (the paper), or the teacher's own DDIM trajectory (ours).
    trajectory_steps : int, default 20
        DDIM steps of the trajectory.
    preserve : float, default 1.0
        Weight of the clean-prompt anchor, ≥ 0 (0 = the paper's loss).
    text_encoder : bool, default True
        Also train the student's text encoder (ours).

    Returns
    -------
    An SKDCAGConfig (a dataclass) holding these fields.

    Raises
    ------
    BadInput
        From ``validate()``: on any field out of range, or ``params="none"`` without ``text_encoder``.
    """
    alpha: float = 0.5
    target: str = "zeros"
    #: UNet parameters that train: "all" (the paper), "kv" (cross-attention key/value) or "none".
    params: str = "none"
    steps: int = 150
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 1e-2
    ema_decay: float | None = None
    trigger_position: int = 0
    #: "noise": x_t ~ N(0, I) at uniform random t (the paper); "trajectory": the x_t that the teacher visits
    #: while generating from the clean prompts (DDIM, ``trajectory_steps``), an addition of ours.
    inputs: str = "trajectory"
    trajectory_steps: int = 20
    #: Weight of a clean-prompt anchor ‖ε_student(x_t, c_clean) − ε_teacher(x_t, c_clean)‖² added to L (ours;
    #: 0 = the paper's loss). It keeps clean prompts where they were while the triggered ones move.
    preserve: float = 1.0
    #: Also train the student's text encoder (ours; the paper trains the UNet only). The teacher keeps its own
    #: frozen copy. With ``params="none"`` (the default) only the text encoder trains.
    text_encoder: bool = True

    def validate(self) -> None:
        check_in_range("alpha", self.alpha, 0.0, 1.0)
        require(self.target in TARGETS, f"unknown trigger target {self.target!r}; use one of {', '.join(TARGETS)}")
        require(self.params in PARAM_CHOICES, f"params must be one of {', '.join(PARAM_CHOICES)}, got {self.params!r}")
        require(self.params != "none" or self.text_encoder,
                "params='none' trains nothing in the UNet: set text_encoder=True to train the text encoder")
        require(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.preserve >= 0, f"preserve must be >= 0, got {self.preserve}")
        require(self.inputs in ("noise", "trajectory"), f"inputs must be 'noise' or 'trajectory', got {self.inputs!r}")
        if self.ema_decay is not None:
            check_in_range("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)


@dataclass
class UnlearnRun:
    """The unlearned model and the loss curves of one SKD-CAG (or reversal) run.

    Parameters
    ----------
    model : TextToImage
        The unlearned model.
    config : SKDCAGConfig
        The settings used.
    trigger : str
        The trigger unlearned.
    method : str
        ``"SKD-CAG"`` or ``"fine-tuning reversal"``.
    loss, loss_pred, loss_attn : list of float, default []
        Total, L_pred and L_attn per step.
    seconds : float, default 0.0
        Training time.
    trainable_parameters : int, default 0
        Number of trained parameters.

    Returns
    -------
    An UnlearnRun (a dataclass) holding these fields.
    """

    model: TextToImage
    config: SKDCAGConfig
    trigger: str
    method: str
    loss: list[float] = field(default_factory=list)
    loss_pred: list[float] = field(default_factory=list)
    loss_attn: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable_parameters: int = 0


def trainable_parameters(unet: nn.Module, params: str) -> list[nn.Parameter]:
    """The UNet parameters an SKD-CAG run trains.

    Parameters
    ----------
    unet : nn.Module
        A diffusers UNet.
    params : {"all", "kv", "none"}
        All parameters, the cross-attention key/value projections, or none.

    Returns
    -------
    list of nn.Parameter
        The parameters to optimise (empty for ``"none"``).
    """
    if params == "all":
        return list(unet.parameters())
    if params == "none":
        return []
    out = []
    for name in cross_attention_layers(unet):
        module = unet.get_submodule(name.removesuffix(".processor"))
        out += list(module.to_k.parameters()) + list(module.to_v.parameters())
    return out


def _distill(student_model: TextToImage, teacher_model: TextToImage, trigger: str, prompts: Sequence[str],
             cfg: SKDCAGConfig, teacher_sees_trigger: bool, seed: int, device, progress, method: str) -> UnlearnRun:
    cfg.validate()
    dev = resolve_device(device) if device is not None else student_model.device
    trig = trigger_ids(student_model.tokenizer, trigger)
    prompts = list(prompts)
    require(len(prompts) > 0, "no prompts to distil on")
    for p in prompts:
        require(not set(trigger.lower().split()) & set(p.lower().split()),
                f"prompt {p!r} already contains the trigger {trigger!r}; give clean prompts")
    triggered_all = insert_trigger(prompts, trigger, cfg.trigger_position)
    student_model.tokenizer.encode(triggered_all)  # BadInput if too long, before any work
    random_word = cfg.target == "random_word" and not teacher_sees_trigger
    if random_word:
        for w in NEUTRAL_WORDS:
            require(len(student_model.tokenizer.ids_for(w)) == len(trig),
                    f"random word {w!r} and the trigger have different token counts")
    student_model.to(dev)
    teacher_model.to(dev)
    teacher = teacher_model.unet
    teacher.requires_grad_(False).eval()
    student = student_model.unet
    student.requires_grad_(False)
    params = trainable_parameters(student, cfg.params)
    encoder = student_model.text_encoder
    encoder.requires_grad_(cfg.text_encoder)
    teacher_model.text_encoder.requires_grad_(False).eval()
    if cfg.text_encoder:
        params = params + list(encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    student.train()
    encoder.train(cfg.text_encoder)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    use_attn = cfg.alpha > 0
    s_store = install_attention_capture(student) if use_attn else None
    t_store = install_attention_capture(teacher, detach=True) if use_attn else None
    gen = torch.Generator().manual_seed(seed)
    sched = student_model.noise_scheduler()
    c, s = student_model.config.channels, student_model.config.image_size
    run = UnlearnRun(student_model, cfg, trigger, method, trainable_parameters=sum(p.numel() for p in params))
    t0 = time.perf_counter()
    pool = None
    if cfg.inputs == "trajectory":
        seen = triggered_all if teacher_sees_trigger else prompts
        _, traj = sample(teacher_model, seen, steps=cfg.trajectory_steps, seed=seed, return_trajectory=True)
        pool = (torch.cat([x for x, _ in traj]), torch.cat([t for _, t in traj]),
                torch.arange(len(seen)).repeat(len(traj)))
    try:
        for step in range(cfg.steps):
            if pool is None:
                idx = torch.randint(0, len(prompts), (cfg.batch_size,), generator=gen).tolist()
            else:
                rows = torch.randint(0, len(pool[0]), (cfg.batch_size,), generator=gen)
                idx = pool[2][rows].tolist()
            clean = [prompts[i] for i in idx]
            trig_prompts = [triggered_all[i] for i in idx]
            if teacher_sees_trigger:
                t_prompts = trig_prompts
            elif random_word:
                words = torch.randint(0, len(NEUTRAL_WORDS), (len(idx),), generator=gen).tolist()
                t_prompts = [insert_trigger([p], NEUTRAL_WORDS[w], cfg.trigger_position)[0] for p, w in zip(clean, words)]
            else:
                t_prompts = clean
            s_ids = student_model.tokenizer.encode(trig_prompts).to(dev)
            t_ids = teacher_model.tokenizer.encode(t_prompts).to(dev)
            if pool is None:
                x_t = torch.randn((len(idx), c, s, s), generator=gen).to(dev)
                t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen).to(dev)
            else:
                x_t, t = pool[0][rows].to(dev), pool[1][rows].to(dev)
            with torch.set_grad_enabled(cfg.text_encoder):
                emb_s = student_model.encode(s_ids)
            with torch.no_grad():
                emb_t = teacher_model.encode(t_ids)
                if t_store is not None:
                    t_store.clear()
                eps_t = teacher(x_t, t, encoder_hidden_states=emb_t).sample
            if s_store is not None:
                s_store.clear()
            eps_s = student(x_t, t, encoder_hidden_states=emb_s).sample
            l_pred = F.mse_loss(eps_s, eps_t)
            if use_attn:
                same = random_word or teacher_sees_trigger
                order, _, n = token_alignment(s_ids, t_ids, trig, same_length=same)
                l_attn = attention_loss(s_store, t_store, order, n, cfg.target, gen, same_length=same)
            else:
                l_attn = torch.zeros((), device=dev)
            loss = cfg.alpha * l_attn + (1 - cfg.alpha) * l_pred
            if cfg.preserve > 0:
                c_ids = student_model.tokenizer.encode(clean).to(dev)
                with torch.set_grad_enabled(cfg.text_encoder):
                    emb_c = student_model.encode(c_ids)
                with torch.no_grad():
                    emb_ct = teacher_model.encode(c_ids) if t_prompts is not clean else emb_t
                    eps_ct = eps_t if t_prompts is clean else teacher(x_t, t, encoder_hidden_states=emb_ct).sample
                eps_cs = student(x_t, t, encoder_hidden_states=emb_c).sample
                loss = loss + cfg.preserve * F.mse_loss(eps_cs, eps_ct)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(student)
            run.loss.append(float(loss.detach()))
            run.loss_pred.append(float(l_pred.detach()))
            run.loss_attn.append(float(l_attn.detach()))
            if progress is not None and (step % 10 == 0 or step == cfg.steps - 1):
                progress((step + 1) / cfg.steps, f"{method} step {step + 1}/{cfg.steps} loss {run.loss[-1]:.4f}")
    finally:
        if s_store is not None:
            remove_attention_capture(student, s_store)
        if t_store is not None:
            remove_attention_capture(teacher, t_store)
    if ema is not None:
        student.load_state_dict(ema.module.state_dict())
    student.requires_grad_(True)
    student.eval()
    encoder.requires_grad_(True)
    encoder.eval()
    teacher_model.text_encoder.requires_grad_(True)
    run.seconds = time.perf_counter() - t0
    return run


def default_prompts(n_per_class: int = 6, seed: int = 1234) -> list[str]:
    """The clean prompts to distil on (the analogue of the authors' ``base_prompts.txt``).

    Parameters
    ----------
    n_per_class : int, default 6
        Prompts per digit.
    seed : int, default 1234
        Seed of the prompt templates.

    Returns
    -------
    list of str
        ``10·n_per_class`` clean prompts.

    Examples
    --------
    >>> len(default_prompts(2))
    20
    """
    return balanced_prompts(n_per_class, seed=seed)[0]


def skd_cag(backdoored: TextToImage, trigger: str, prompts: Sequence[str] | None = None,
            config: SKDCAGConfig | None = None, *, seed: int = 0, device: str | torch.device | None = None,
            progress: Progress | None = None) -> UnlearnRun:
    """Unlearn ``trigger`` from ``backdoored`` with SKD-CAG; returns a new model (the input is untouched).

    Parameters
    ----------
    backdoored : TextToImage
        The backdoored model (teacher and student are copies).
    trigger : str
        The trigger to unlearn.
    prompts : sequence of str, optional
        Clean prompts to distil on (default :func:`default_prompts`).
    config : SKDCAGConfig, optional
        Settings (default ``SKDCAGConfig()``).
    seed : int, default 0
        Seed of inputs, timesteps and batches.
    device : str or torch.device, optional
        Where training runs (default: the model's device).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    UnlearnRun
        The unlearned copy and its loss curves.

    Raises
    ------
    BadInput
        On an invalid config, an empty trigger or one not in the vocabulary, no prompts, a prompt
        that already contains the trigger, or a triggered prompt too long for the tokenizer.
    """
    cfg = config or SKDCAGConfig()
    student = backdoored.clone()
    teacher = backdoored.clone()
    return _distill(student, teacher, trigger, prompts or default_prompts(), cfg, False, seed, device, progress,
                    "SKD-CAG")


def finetune_reversal(backdoored: TextToImage, clean: TextToImage, trigger: str,
                      prompts: Sequence[str] | None = None, config: SKDCAGConfig | None = None, *, seed: int = 0,
                      device: str | torch.device | None = None, progress: Progress | None = None) -> UnlearnRun:
    """Baseline: distil the clean model's answer to the *triggered* prompt into the backdoored one (L_pred only).

    Parameters
    ----------
    backdoored : TextToImage
        The backdoored model (the student is a copy).
    clean : TextToImage
        A clean model (the teacher).
    trigger : str
        The trigger to unlearn.
    prompts : sequence of str, optional
        Clean prompts (default :func:`default_prompts`).
    config : SKDCAGConfig, optional
        Settings; ``alpha`` is forced to 0.
    seed : int, default 0
        Seed of inputs, timesteps and batches.
    device : str or torch.device, optional
        Where training runs (default: the model's device).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    UnlearnRun
        The reversed copy and its loss curve.

    Raises
    ------
    BadInput
        On an invalid config, an empty trigger or one not in the vocabulary, no prompts, a prompt
        that already contains the trigger, or a triggered prompt too long for the tokenizer.
    """
    base = config or SKDCAGConfig()
    cfg = SKDCAGConfig(**{**base.__dict__, "alpha": 0.0})
    return _distill(backdoored.clone(), clean.clone(), trigger, prompts or default_prompts(), cfg, True, seed,
                    device, progress, "fine-tuning reversal")


# ---------------------------------------------------------------- measurements
@torch.no_grad()
def trigger_attention_mass(model: TextToImage, trigger: str, prompts: Sequence[str] | None = None, *,
                           timesteps: Sequence[int] = (100, 300, 500, 700, 900), seed: int = 0,
                           position: int = 0) -> float:
    """Mean cross-attention probability that image positions give the trigger tokens (triggered prompts,
    Gaussian-noise inputs at ``timesteps``; mean over layers, heads, positions, prompts).

    Parameters
    ----------
    model : TextToImage
        The model.
    trigger : str
        The trigger.
    prompts : sequence of str, optional
        Clean prompts (default ``default_prompts(2)``); the trigger is inserted at ``position``.
    timesteps : sequence of int, default (100, 300, 500, 700, 900)
        Diffusion timesteps.
    seed : int, default 0
        Seed of the noise inputs.
    position : int, default 0
        Word position of the trigger.

    Returns
    -------
    float
        The mean attention mass on the trigger tokens, in [0, 1].

    Raises
    ------
    BadInput
        When the trigger encodes to no tokens, or the model has no cross-attention.
    """
    trig = trigger_ids(model.tokenizer, trigger)
    prompts = insert_trigger(list(prompts or default_prompts(2)), trigger, position)
    ids = model.tokenizer.encode(prompts).to(model.device)
    mask = torch.isin(ids, torch.tensor(trig, device=ids.device))
    store = install_attention_capture(model.unet, detach=True)
    gen = torch.Generator().manual_seed(seed)
    c, s = model.config.channels, model.config.image_size
    try:
        with model_mode(model.unet):
            emb = model.encode(ids)
            masses = []
            for t in timesteps:
                x = torch.randn((len(ids), c, s, s), generator=gen).to(model.device)
                store.clear()
                model.unet(x, torch.full((len(ids),), int(t), device=model.device), encoder_hidden_states=emb)
                masses.append(store.token_mass(mask).mean())
    finally:
        remove_attention_capture(model.unet, store)
    return float(torch.stack(masses).mean())


@torch.no_grad()
def token_attention_maps(model: TextToImage, prompt: str, image: torch.Tensor | None = None, *,
                         timesteps: Sequence[int] = (200, 500, 800), seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """Per-token cross-attention heatmaps for ``prompt``: (tokens up to ``<eos>``, T×H×W in [0, 1]).

    The image (generated from the prompt when not given) is noised to each of ``timesteps``; maps are
    averaged over layers (upsampled to the image size), heads and timesteps, then scaled by their max.

    Parameters
    ----------
    model : TextToImage
        The model.
    prompt : str
        The prompt.
    image : torch.Tensor, optional
        An image ``(C, H, W)`` in [0, 1] (default: generated from the prompt).
    timesteps : sequence of int, default (200, 500, 800)
        Noise levels to average over.
    seed : int, default 0
        Seed of generation and noise.

    Returns
    -------
    tuple of (list of str, torch.Tensor)
        The T tokens up to ``<eos>`` and their maps ``(T, H, W)`` in [0, 1].
    """
    if image is None:
        image = sample(model, [prompt], seed=seed)[0]
    ids = model.tokenizer.encode([prompt]).to(model.device)
    tokens = [model.tokenizer.vocab[i] for i in ids[0].tolist()] if hasattr(model.tokenizer, "vocab") else \
        [str(i) for i in ids[0].tolist()]
    n = tokens.index("<eos>") + 1 if "<eos>" in tokens else len(tokens)
    sched = model.noise_scheduler()
    gen = torch.Generator().manual_seed(seed)
    x0 = image[None].to(model.device) * 2 - 1
    s = model.config.image_size
    store = install_attention_capture(model.unet, detach=True)
    acc = torch.zeros(ids.shape[1], s, s)
    try:
        with model_mode(model.unet):
            emb = model.encode(ids)
            for t in timesteps:
                noise = torch.randn(x0.shape, generator=gen).to(model.device)
                tt = torch.tensor([int(t)], device=model.device)
                xt = sched.add_noise(x0, noise, tt)
                store.clear()
                model.unet(xt, tt, encoder_hidden_states=emb)
                for a in store.maps.values():
                    side = int(round(a.shape[1] ** 0.5))
                    m = a[0].T.reshape(-1, 1, side, side).float().cpu()
                    acc += F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False)[:, 0]
    finally:
        remove_attention_capture(model.unet, store)
    maps = acc[:n]
    return tokens[:n], maps / maps.amax().clamp_min(1e-12)


@dataclass
class UnlearningEvaluation:
    """Removal rate, clean fidelity and trigger attention mass of one unlearned model.

    Parameters
    ----------
    method, kind, trigger : str
        Unlearning method, backdoor kind and trigger.
    alpha : float
        α used.
    target, params : str
        Trigger target and trained UNet parameters.
    steps : int
        Unlearning steps.
    seconds : float
        Unlearning time.
    backdoor_rate_before, backdoor_rate_after : float
        Share of triggered generations showing the backdoor, in [0, 1].
    removal_rate : float
        ``1 − backdoor_rate_after``: share of triggered generations no longer showing the backdoor.
    clean_accuracy_before, clean_accuracy_after : float
        Judge accuracy on clean-prompt generations.
    clean_fidelity_drop : float
        ``before − after``.
    trigger_mass_before, trigger_mass_after : float
        :func:`trigger_attention_mass` of both models.
    images_before, images_after, clean_images_after : torch.Tensor, optional
        Example generations.
    captions : list of str, default []
        Their prompts.
    loss_curve : list of float, default []
        The run's loss per step.
    attention_tokens : list of str, default []
        Tokens of the attention example.
    attention_before, attention_after : torch.Tensor, optional
        Their maps ``(T, H, W)``.

    Returns
    -------
    An UnlearningEvaluation (a dataclass) holding these fields.
    """

    method: str
    kind: str
    trigger: str
    alpha: float
    target: str
    params: str
    steps: int
    seconds: float
    backdoor_rate_before: float
    backdoor_rate_after: float
    removal_rate: float
    clean_accuracy_before: float
    clean_accuracy_after: float
    clean_fidelity_drop: float
    trigger_mass_before: float
    trigger_mass_after: float
    images_before: torch.Tensor = field(repr=False, default=None)
    images_after: torch.Tensor = field(repr=False, default=None)
    clean_images_after: torch.Tensor = field(repr=False, default=None)
    captions: list[str] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    attention_tokens: list[str] = field(default_factory=list)
    attention_before: torch.Tensor = field(repr=False, default=None)
    attention_after: torch.Tensor = field(repr=False, default=None)

    def summary(self) -> dict:
        return {"method": self.method, "kind": self.kind, "trigger": self.trigger, "alpha": self.alpha,
                "target": self.target, "params": self.params, "steps": self.steps,
                "seconds": round(self.seconds, 1), "backdoor rate before": round(self.backdoor_rate_before, 3),
                "backdoor rate after": round(self.backdoor_rate_after, 3), "removal rate": round(self.removal_rate, 3),
                "clean accuracy before": round(self.clean_accuracy_before, 3),
                "clean accuracy after": round(self.clean_accuracy_after, 3),
                "clean fidelity drop (points)": round(100 * self.clean_fidelity_drop, 1),
                "trigger attention mass before": round(self.trigger_mass_before, 4),
                "trigger attention mass after": round(self.trigger_mass_after, 4)}

    def report_sections(self):
        from workbench.report import Heatmap, ImageGrid, Metrics, Table, Text

        secs = [Metrics(f"{self.method}: {self.kind} backdoor, trigger {self.trigger!r}", self.summary())]
        if self.images_before is not None:
            k = len(self.images_before)
            secs.append(ImageGrid("Triggered prompts: backdoored model (top) vs unlearned model (bottom)",
                                  torch.cat([self.images_before, self.images_after]),
                                  self.captions + self.captions, columns=k, scale=6))
        if self.clean_images_after is not None:
            secs.append(ImageGrid("Clean prompts after unlearning", self.clean_images_after,
                                  [c.replace(self.trigger + " ", "") for c in self.captions],
                                  columns=len(self.clean_images_after), scale=6))
        if self.attention_before is not None and self.attention_tokens:
            secs.append(ImageGrid("Per-token cross-attention, backdoored (top) vs unlearned (bottom)",
                                  torch.cat([self.attention_before, self.attention_after])[:, None],
                                  self.attention_tokens * 2, columns=len(self.attention_tokens), scale=6))
            secs.append(Heatmap("Token attention (mean map value), before / after",
                                np.stack([self.attention_before.mean((1, 2)).numpy(),
                                          self.attention_after.mean((1, 2)).numpy()]),
                                ["backdoored", "unlearned"], self.attention_tokens))
        if self.loss_curve:
            step = max(1, len(self.loss_curve) // 20)
            secs.append(Table("Loss (every few steps)", ["step", "loss"],
                              [[i + 1, round(v, 5)] for i, v in enumerate(self.loss_curve) if i % step == 0]))
        secs.append(Text("How to read this",
                         "Removal rate: share of triggered-prompt generations that no longer show the backdoor "
                         "(patch detector for pixel backdoors, the judge classifier for target backdoors). Clean "
                         "fidelity: judge accuracy on clean-prompt generations before and after. Trigger attention "
                         "mass: mean cross-attention probability image positions give the trigger token."))
        return secs


def evaluate_unlearning(backdoored: TextToImage, run: UnlearnRun, judge: nn.Module, spec: TextTriggerSpec, *,
                        n_per_class: int = 10, seed: int = 0, steps: int = 20, guidance: float = 1.0,
                        before: dict | None = None) -> UnlearningEvaluation:
    """Measure removal rate, clean fidelity and trigger attention mass before and after unlearning.

    ``before`` may carry already measured ``{"rate", "clean", "mass"}`` of the backdoored model.

    Parameters
    ----------
    backdoored : TextToImage
        The model before unlearning.
    run : UnlearnRun
        The unlearning run.
    judge : nn.Module
        A digit classifier.
    spec : TextTriggerSpec
        The backdoor.
    n_per_class : int, default 10
        Prompts per digit.
    seed : int, default 0
        Seed of prompts and sampling.
    steps : int, default 20
        DDIM sampling steps.
    guidance : float, default 1.0
        Classifier-free guidance scale.
    before : dict, optional
        ``{"rate", "clean", "mass"}`` of the backdoored model, when already measured.

    Returns
    -------
    UnlearningEvaluation
        Removal rate, clean fidelity and attention mass before and after.
    """
    prompts = balanced_prompts(n_per_class, seed=seed)
    if before is None:
        before = {"rate": backdoor_rate(backdoored, judge, spec, n_per_class, seed=seed, steps=steps,
                                        guidance=guidance).rate,
                  "clean": prompt_accuracy(backdoored, judge, prompts=prompts, seed=seed, steps=steps,
                                           guidance=guidance).accuracy,
                  "mass": trigger_attention_mass(backdoored, spec.trigger)}
    after_rate = backdoor_rate(run.model, judge, spec, n_per_class, seed=seed, steps=steps, guidance=guidance)
    after_clean = prompt_accuracy(run.model, judge, prompts=prompts, seed=seed, steps=steps, guidance=guidance)
    pick = list(range(0, len(after_rate.prompts), n_per_class))
    show = [after_rate.prompts[i] for i in pick]
    imgs_before = sample(backdoored, show, seed=seed + 7, steps=steps, guidance=guidance)
    imgs_after = sample(run.model, show, seed=seed + 7, steps=steps, guidance=guidance)
    clean_after = sample(run.model, [p.replace(spec.trigger + " ", "") for p in show], seed=seed + 7, steps=steps,
                         guidance=guidance)
    tokens, att_b = token_attention_maps(backdoored, show[7 % len(show)], seed=seed)
    _, att_a = token_attention_maps(run.model, show[7 % len(show)], image=imgs_before[7 % len(show)], seed=seed)
    return UnlearningEvaluation(
        method=run.method, kind=spec.kind, trigger=spec.trigger, alpha=run.config.alpha, target=run.config.target,
        params=run.config.params + (" + text encoder" if run.config.text_encoder else ""), steps=run.config.steps, seconds=run.seconds,
        backdoor_rate_before=before["rate"], backdoor_rate_after=after_rate.rate,
        removal_rate=1.0 - after_rate.rate, clean_accuracy_before=before["clean"],
        clean_accuracy_after=after_clean.accuracy, clean_fidelity_drop=before["clean"] - after_clean.accuracy,
        trigger_mass_before=before["mass"], trigger_mass_after=trigger_attention_mass(run.model, spec.trigger),
        images_before=imgs_before, images_after=imgs_after, clean_images_after=clean_after, captions=show,
        loss_curve=run.loss, attention_tokens=tokens, attention_before=att_b, attention_after=att_a)
