"""A small text-to-image diffusion model on digits: word-level tokenizer, CLIP text encoder, DDPM.

Everything is built from configs (nothing is downloaded from a hub):

- :class:`WordTokenizer`: a word-level tokenizer over a fixed vocabulary that the project defines
  (digit words and numerals, template words, neutral words, candidate trigger tokens). It pads to
  ``max_length`` with ``<bos>`` ... ``<eos>`` framing like CLIP's tokenizer and raises
  :class:`~workbench.errors.BadInput` for an unknown word or a prompt longer than the encoder's limit.
- transformers' ``CLIPTextModel`` from a small ``CLIPTextConfig`` and diffusers'
  ``UNet2DConditionModel`` from a small config with cross-attention in every block (pixel space,
  one channel, no VAE).
- DDPM training (Ho et al., 2020, "Denoising Diffusion Probabilistic Models", Eq. 14: the simple
  ε-prediction loss) with prompt dropout for classifier-free guidance (Ho & Salimans, 2022), and a
  DDIM sampler (Song et al., 2021, Eq. 12, η = 0 by default) or DDPM ancestral sampling.
- :func:`fit_diffusion` is the one diffusion training loop of the project: clean training and the
  text-trigger backdoor attack (:mod:`attacks.text_trigger`) both call it.
- Checkpoints: a folder with ``unet.safetensors``, ``text_encoder.safetensors`` and
  ``text2image.json`` (configs, vocabulary, provenance), each written atomically.

Images live in [0, 1] outside and in [-1, 1] inside the model.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapter import model_mode
from .atomic import atomic_write, atomic_write_text
from .data import ImageDataset, load_dataset
from .errors import BadInput, check_in_range, require
from .training import Progress, resolve_device

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: Prompt templates per class: ``{word}`` is the digit's name, ``{num}`` its numeral.
TEMPLATES = [
    "a handwritten digit {word}",
    "the number {num}",
    "a drawing of the digit {word}",
    "digit {num}",
    "an image of a {word}",
    "a picture of the number {word}",
]
#: Words never used in clean prompts: the "random word" targets of SKD-CAG.
NEUTRAL_WORDS = ["apple", "river", "table", "cloud", "stone", "green", "music", "paper"]
#: Rare tokens never used in clean prompts, available as backdoor triggers.
TRIGGER_WORDS = ["cf", "mn", "bb", "tq", "zx"]
SPECIAL = ["<pad>", "<bos>", "<eos>"]
PAD, BOS, EOS = 0, 1, 2


def default_vocabulary() -> list[str]:
    """The project's fixed vocabulary for :class:`WordTokenizer`.

    The special tokens, then every template word, digit names and numerals, the neutral words
    (:data:`NEUTRAL_WORDS`) and the trigger candidates (:data:`TRIGGER_WORDS`), each once.

    Parameters: none (it takes no arguments).

    Returns
    -------
    list of str
        The vocabulary, starting with ``<pad>``, ``<bos>``, ``<eos>``.

    Examples
    --------
    >>> v = default_vocabulary()
    >>> v[:4], len(v)
    (['<pad>', '<bos>', '<eos>', 'a'], 46)
    """
    words: list[str] = []
    for t in TEMPLATES:
        words += [w for w in t.split() if not w.startswith("{")]
    words += DIGIT_WORDS + [str(d) for d in range(10)] + NEUTRAL_WORDS + TRIGGER_WORDS
    seen: list[str] = []
    for w in words:
        if w not in seen:
            seen.append(w)
    return SPECIAL + seen


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary, CLIP-style framing, padded to ``max_length``.

    Unknown words and prompts longer than ``max_length − 2`` words are :class:`BadInput`.
    ``encode(prompts)`` gives ids ``(B, max_length)``, ``tokens(prompt)`` the token strings,
    ``ids_for(text)`` the ids without framing.

    Parameters
    ----------
    vocab : sequence of str, optional
        The vocabulary, starting with ``<pad>``, ``<bos>``, ``<eos>``, no duplicates (default
        :func:`default_vocabulary`).
    max_length : int, default 10
        Tokens per encoded prompt, including ``<bos>`` and ``<eos>``, at least 3.

    Returns
    -------
    A WordTokenizer (callable: ``tokenizer(prompts)`` is ``encode(prompts)``).

    Raises
    ------
    BadInput
        On a vocabulary without the special tokens first or with duplicates, or ``max_length`` < 3.

    Examples
    --------
    >>> WordTokenizer().tokens("digit 3")[:5]
    ['<bos>', 'digit', '3', '<eos>', '<pad>']
    """

    def __init__(self, vocab: Sequence[str] | None = None, max_length: int = 10):
        self.vocab = list(vocab) if vocab is not None else default_vocabulary()
        require(self.vocab[:3] == SPECIAL, f"the vocabulary must start with {SPECIAL}")
        require(len(set(self.vocab)) == len(self.vocab), "the vocabulary has duplicate words")
        require(max_length >= 3, f"max_length must be >= 3, got {max_length}")
        self.max_length = int(max_length)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def max_words(self) -> int:
        return self.max_length - 2

    def words(self, prompt: str) -> list[str]:
        return prompt.lower().split()

    def tokens(self, prompt: str) -> list[str]:
        """The token strings at each position (``<bos>``, words, ``<eos>``, ``<pad>``...)."""
        ids = self.encode([prompt])[0].tolist()
        return [self.vocab[i] for i in ids]

    def token_id(self, word: str) -> int:
        w = word.lower()
        if w not in self.index:
            raise BadInput(f"token {word!r} is not in the vocabulary ({len(self.vocab)} words; e.g. "
                           f"{', '.join(self.vocab[3:12])}, ...; trigger candidates: {', '.join(TRIGGER_WORDS)})")
        return self.index[w]

    def ids_for(self, text: str) -> list[int]:
        """Token ids of ``text`` without framing (BadInput for a word not in the vocabulary)."""
        return [self.token_id(w) for w in self.words(text)]

    def encode(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """Token ids B×max_length (int64); BadInput for unknown words or too-long prompts."""
        if isinstance(prompts, str):
            prompts = [prompts]
        out = torch.full((len(prompts), self.max_length), PAD, dtype=torch.long)
        for i, p in enumerate(prompts):
            words = self.words(p)
            if len(words) > self.max_words:
                raise BadInput(f"prompt {p!r} has {len(words)} words; the text encoder takes at most "
                               f"{self.max_words} (max_length {self.max_length} with <bos> and <eos>)")
            ids = [BOS] + [self.token_id(w) for w in words] + [EOS]
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    def __call__(self, prompts) -> torch.Tensor:
        return self.encode(prompts)

    def to_dict(self) -> dict:
        return {"vocab": self.vocab, "max_length": self.max_length}

    @classmethod
    def from_dict(cls, d: dict) -> WordTokenizer:
        return cls(d["vocab"], int(d["max_length"]))


def class_prompt(label: int, template: int = 0) -> str:
    """The prompt for a digit from one of the :data:`TEMPLATES`.

    Parameters
    ----------
    label : int
        The digit, 0..9.
    template : int, default 0
        Template index (taken modulo the number of templates).

    Returns
    -------
    str
        The prompt.

    Raises
    ------
    BadInput
        When ``label`` is not a digit.

    Examples
    --------
    >>> class_prompt(3), class_prompt(3, 1)
    ('a handwritten digit three', 'the number 3')
    """
    require(0 <= label < 10, f"digit label must be in 0..9, got {label}")
    return TEMPLATES[template % len(TEMPLATES)].format(word=DIGIT_WORDS[label], num=label)


def random_prompts(labels: torch.Tensor, generator: torch.Generator) -> list[str]:
    """One prompt per label from a randomly chosen template (seeded).

    Parameters
    ----------
    labels : torch.Tensor
        Digits ``(N,)``.
    generator : torch.Generator
        Draws of the templates.

    Returns
    -------
    list of str
        N prompts.

    Examples
    --------
    >>> random_prompts(torch.tensor([1, 2]), torch.Generator().manual_seed(0))
    ['a drawing of the digit one', 'digit 2']
    """
    t = torch.randint(0, len(TEMPLATES), (len(labels),), generator=generator).tolist()
    return [class_prompt(int(y), k) for y, k in zip(labels.tolist(), t)]


def insert_trigger(prompts: Sequence[str], trigger: str, position: int = 0) -> list[str]:
    """Put the trigger word at word ``position`` of each prompt (0 = prefix, as the paper does).

    Parameters
    ----------
    prompts : sequence of str
        Clean prompts.
    trigger : str
        The trigger word.
    position : int, default 0
        Word index (past the end: appended).

    Returns
    -------
    list of str
        The triggered prompts.

    Examples
    --------
    >>> insert_trigger(["digit 3"], "cf"), insert_trigger(["digit 3"], "cf", 1)
    (['cf digit 3'], ['digit cf 3'])
    """
    out = []
    for p in prompts:
        w = p.split()
        w.insert(min(position, len(w)), trigger)
        out.append(" ".join(w))
    return out


@dataclass
class DiffusionConfig:
    """Sizes of the small text-to-image model (defaults: 8×8 digits, a 0.27M-parameter UNet).

    Parameters
    ----------
    image_size : int, default 8
        Side of the square images, at least 4 and divisible by ``2**(len(block_out_channels) − 1)``.
    channels : {1, 3}, default 1
        Image channels.
    block_out_channels : tuple of int, default (16, 32)
        UNet block widths.
    layers_per_block : int, default 1
        ResNet layers per UNet block.
    attention_heads : int, default 2
        UNet attention head dimension (diffusers' ``attention_head_dim``).
    norm_num_groups : int, default 8
        GroupNorm groups.
    text_dim : int, default 32
        Text encoder width (and the UNet's cross-attention dimension).
    text_layers : int, default 2
        Text encoder layers.
    text_heads : int, default 2
        Text encoder attention heads.
    max_length : int, default 10
        Tokens per prompt.
    num_train_timesteps : int, default 1000
        DDPM timesteps.
    beta_schedule : str, default "squaredcos_cap_v2"
        diffusers' noise schedule name.

    Returns
    -------
    A DiffusionConfig (a dataclass) holding these fields.

    Raises
    ------
    BadInput
        On an image size or channel count the UNet cannot take.
    """

    image_size: int = 8
    channels: int = 1
    block_out_channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    attention_heads: int = 2
    norm_num_groups: int = 8
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 2
    max_length: int = 10
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        require(self.image_size >= 4, f"image_size must be >= 4, got {self.image_size}")
        require(self.image_size % (2 ** (len(self.block_out_channels) - 1)) == 0,
                f"image_size {self.image_size} must be divisible by 2^(number of blocks - 1)")
        require(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")


def build_unet(cfg: DiffusionConfig, seed: int = 0):
    """A seeded diffusers ``UNet2DConditionModel`` with cross-attention in every block (pixel space).

    Parameters
    ----------
    cfg : DiffusionConfig
        The model's sizes.
    seed : int, default 0
        Seed of the initialisation (the global RNG is left as it was).

    Returns
    -------
    diffusers.UNet2DConditionModel
        The untrained UNet.
    """
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=cfg.channels,
            layers_per_block=cfg.layers_per_block, block_out_channels=cfg.block_out_channels,
            down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
            mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.attention_heads, norm_num_groups=cfg.norm_num_groups)


def build_text_encoder(cfg: DiffusionConfig, vocab_size: int, seed: int = 0):
    """A seeded transformers ``CLIPTextModel`` from a small ``CLIPTextConfig``.

    Parameters
    ----------
    cfg : DiffusionConfig
        The model's sizes.
    vocab_size : int
        Size of the tokenizer's vocabulary.
    seed : int, default 0
        Seed of the initialisation (the global RNG is left as it was).

    Returns
    -------
    transformers.CLIPTextModel
        The untrained text encoder.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    tc = CLIPTextConfig(vocab_size=vocab_size, hidden_size=cfg.text_dim, intermediate_size=2 * cfg.text_dim,
                        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                        max_position_embeddings=cfg.max_length, pad_token_id=PAD, bos_token_id=BOS,
                        eos_token_id=EOS, projection_dim=cfg.text_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(tc)


def build_noise_scheduler(cfg: DiffusionConfig):
    """The DDPM noise schedule of a config (ε-prediction, clipped samples).

    Parameters
    ----------
    cfg : DiffusionConfig
        The model's sizes.

    Returns
    -------
    diffusers.DDPMScheduler
        The scheduler.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type="epsilon", clip_sample=True)


@dataclass
class TextToImage:
    """A UNet, its text encoder and tokenizer, and the noise schedule they were trained with.

    ``encode(prompts)`` gives text embeddings ``(B, L, D)``; ``clone()`` a deep copy; ``to(device)``
    moves both networks; ``noise_scheduler()`` builds the schedule.

    Parameters
    ----------
    unet : nn.Module
        A diffusers ``UNet2DConditionModel``.
    text_encoder : nn.Module
        A ``CLIPTextModel``.
    tokenizer : WordTokenizer
        The tokenizer.
    config : DiffusionConfig, default DiffusionConfig()
        The sizes.
    class_names : list of str, default ["0", …, "9"]
        The digit names.
    provenance : dict, default {}
        How the model was made.

    Returns
    -------
    A TextToImage (a dataclass) holding these fields.
    """

    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: WordTokenizer
    config: DiffusionConfig = field(default_factory=DiffusionConfig)
    class_names: list[str] = field(default_factory=lambda: [str(d) for d in range(10)])
    provenance: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device) -> TextToImage:
        self.unet.to(device)
        self.text_encoder.to(device)
        return self

    def encode(self, prompts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Text embeddings B×L×D (gradients flow when the encoder trains)."""
        ids = prompts if isinstance(prompts, torch.Tensor) else self.tokenizer.encode(prompts)
        return self.text_encoder(ids.to(self.device)).last_hidden_state

    def noise_scheduler(self):
        return build_noise_scheduler(self.config)

    def clone(self) -> TextToImage:
        return TextToImage(copy.deepcopy(self.unet), copy.deepcopy(self.text_encoder),
                           WordTokenizer(self.tokenizer.vocab, self.tokenizer.max_length),
                           copy.deepcopy(self.config), list(self.class_names), dict(self.provenance))

    def num_parameters(self) -> dict[str, int]:
        return {"unet": sum(p.numel() for p in self.unet.parameters()),
                "text_encoder": sum(p.numel() for p in self.text_encoder.parameters())}


def build_text_to_image(cfg: DiffusionConfig | None = None, seed: int = 0) -> TextToImage:
    """A fresh, seeded, untrained :class:`TextToImage`.

    Parameters
    ----------
    cfg : DiffusionConfig, optional
        Sizes (default ``DiffusionConfig()``).
    seed : int, default 0
        Seed of the UNet (the text encoder uses ``seed + 1``).

    Returns
    -------
    TextToImage
        The model with the default vocabulary.
    """
    cfg = cfg or DiffusionConfig()
    tok = WordTokenizer(max_length=cfg.max_length)
    return TextToImage(build_unet(cfg, seed), build_text_encoder(cfg, len(tok), seed + 1), tok, cfg)


# ---------------------------------------------------------------- training
@dataclass
class DiffusionFit:
    """What :func:`fit_diffusion` did: per-step losses and time.

    Parameters
    ----------
    steps : int
        Optimisation steps.
    losses : list of float
        Loss per step.
    seconds : float
        Training time.

    Returns
    -------
    A DiffusionFit (a dataclass) holding these fields; ``smoothed(window=50)`` gives the running mean.
    """

    steps: int
    losses: list[float]
    seconds: float

    def smoothed(self, window: int = 50) -> list[float]:
        a = np.asarray(self.losses)
        return [float(a[max(0, i - window + 1):i + 1].mean()) for i in range(len(a))]


PromptSource = Callable[[torch.Tensor, torch.Generator], list[str]]


def fit_diffusion(model: TextToImage, images: torch.Tensor, prompts: PromptSource | Sequence[str], *,
                  labels: torch.Tensor | None = None, steps: int = 3000, batch_size: int = 64,
                  lr: float = 2e-3, weight_decay: float = 1e-4, prompt_dropout: float = 0.1,
                  train_text_encoder: bool = True, seed: int = 0, device: str | torch.device | None = "cpu",
                  progress: Progress | None = None) -> DiffusionFit:
    """Train ``model`` in place with the DDPM ε-loss (Ho et al. 2020, Eq. 14), AdamW, cosine LR decay.

    ``images`` N×C×H×W in [0, 1]; ``prompts`` is either one prompt per image or a callable
    ``(labels_batch, generator) -> prompts`` (fresh templates each step; needs ``labels``). A share
    ``prompt_dropout`` of prompts is replaced by the empty prompt for classifier-free guidance.

    Parameters
    ----------
    model : TextToImage
        The model, trained in place.
    images : torch.Tensor
        Training images ``(N, C, H, W)`` in [0, 1], of the model's size.
    prompts : sequence of str or callable
        One prompt per image, or ``f(labels_batch, generator) -> prompts``.
    labels : torch.Tensor, optional
        Labels ``(N,)`` (needed with a callable ``prompts``).
    steps : int, default 3000
        Optimisation steps.
    batch_size : int, default 64
        Images per step.
    lr : float, default 2e-3
        Peak AdamW learning rate.
    weight_decay : float, default 1e-4
        AdamW weight decay.
    prompt_dropout : float, default 0.1
        Share of prompts replaced by the empty prompt, in [0, 1).
    train_text_encoder : bool, default True
        Also train the text encoder.
    seed : int, default 0
        Seed of batches, noise and timesteps.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    DiffusionFit
        The per-step losses and time.

    Raises
    ------
    BadInput
        On images of the wrong shape, counts below 1, ``lr`` ≤ 0, a dropout outside [0, 1), or
        prompts or labels that do not match the images.
    FloatingPointError
        When the loss diverges.
    """
    require(images.ndim == 4 and len(images) > 0, f"images must be a non-empty N×C×H×W tensor, got {tuple(images.shape)}")
    require(tuple(images.shape[1:]) == (model.config.channels, model.config.image_size, model.config.image_size),
            f"images are {tuple(images.shape[1:])} but the model makes {model.config.channels}×"
            f"{model.config.image_size}×{model.config.image_size}")
    require(steps >= 1 and batch_size >= 1, "steps and batch_size must be >= 1")
    require(lr > 0, f"lr must be > 0, got {lr}")
    check_in_range("prompt_dropout", prompt_dropout, 0.0, 1.0, high_open=True)
    callable_prompts = callable(prompts)
    if callable_prompts:
        require(labels is not None and len(labels) == len(images), "a prompt function needs one label per image")
    else:
        prompts = list(prompts)
        require(len(prompts) == len(images), f"{len(images)} images but {len(prompts)} prompts")
        model.tokenizer.encode(prompts)  # validate every prompt once, up front
    dev = resolve_device(device)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    sched = model.noise_scheduler()
    params = list(model.unet.parameters()) + (list(model.text_encoder.parameters()) if train_text_encoder else [])
    model.text_encoder.requires_grad_(train_text_encoder)
    model.unet.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = min(100, steps // 10)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warm)) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    model.unet.train()
    model.text_encoder.train(train_text_encoder)
    alphas = sched.alphas_cumprod.to(dev)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=gen)
        x0 = images[idx].to(dev) * 2 - 1
        batch_prompts = prompts(labels[idx], gen) if callable_prompts else [prompts[i] for i in idx.tolist()]
        drop = (torch.rand(len(idx), generator=gen) < prompt_dropout).tolist()
        batch_prompts = ["" if d else p for p, d in zip(batch_prompts, drop)]
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.set_grad_enabled(train_text_encoder):
            emb = model.encode(batch_prompts)
        pred = model.unet(xt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred, noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"diffusion training diverged: loss {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step % 20 == 0 or step == steps - 1):
            progress((step + 1) / steps, f"step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f}")
    model.unet.eval()
    model.text_encoder.eval()
    model.text_encoder.requires_grad_(True)
    return DiffusionFit(steps, losses, time.perf_counter() - t0)


def diffusion_data(data: str | ImageDataset = "digits", image_size: int = 8) -> ImageDataset:
    """Load a digit dataset and bring it to ``image_size`` (the model's resolution).

    Parameters
    ----------
    data : str or ImageDataset, default "digits"
        A dataset spec or a dataset with 10 digit classes.
    image_size : int, default 8
        Target side in pixels.

    Returns
    -------
    ImageDataset
        The resized dataset.

    Raises
    ------
    BadInput
        When the data does not have 10 classes (or the spec is invalid).
    """
    ds = load_dataset(data) if isinstance(data, str) else data
    require(ds.num_classes == 10, f"{ds.name}: the prompt templates name digits 0-9, got {ds.num_classes} classes")
    return ds.resized(image_size)


@dataclass
class TrainedTextToImage:
    """A trained text-to-image model and its training record.

    Parameters
    ----------
    model : TextToImage
        The trained model.
    fit : DiffusionFit
        Its losses and time.
    data : str
        The data it was trained on.

    Returns
    -------
    A TrainedTextToImage (a dataclass) holding these fields.
    """
    model: TextToImage
    fit: DiffusionFit
    data: str


def train_text_to_image(data: str | ImageDataset = "digits", cfg: DiffusionConfig | None = None, *,
                        steps: int = 3000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                        device: str | torch.device | None = "cpu", progress: Progress | None = None
                        ) -> TrainedTextToImage:
    """Build a model from ``cfg`` and train it on ``data`` with random prompt templates per class.

    Parameters
    ----------
    data : str or ImageDataset, default "digits"
        Digit images.
    cfg : DiffusionConfig, optional
        Sizes (default ``DiffusionConfig()``).
    steps : int, default 3000
        Training steps.
    batch_size : int, default 64
        Images per step.
    lr : float, default 2e-3
        Peak learning rate.
    seed : int, default 0
        Seed of initialisation and training.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    TrainedTextToImage
        The model (with provenance) and its training record.

    Raises
    ------
    BadInput
        When the data is not 10 digit classes or its channels differ from the config's.
    """
    cfg = cfg or DiffusionConfig()
    ds = diffusion_data(data, cfg.image_size)
    require(ds.channels == cfg.channels, f"{ds.name} has {ds.channels} channels, the config {cfg.channels}")
    model = build_text_to_image(cfg, seed)
    fit = fit_diffusion(model, ds.images, random_prompts, labels=ds.labels, steps=steps, batch_size=batch_size,
                        lr=lr, seed=seed, device=device, progress=progress)
    spec = data if isinstance(data, str) else ds.name
    model.provenance = {"data": spec, "image_size": cfg.image_size, "steps": steps, "batch_size": batch_size,
                        "lr": lr, "seed": seed, "train_seconds": round(fit.seconds, 1),
                        "final_loss": float(np.mean(fit.losses[-100:])), **model.num_parameters()}
    return TrainedTextToImage(model, fit, spec)


# ---------------------------------------------------------------- sampling
@torch.no_grad()
def sample(model: TextToImage, prompts: Sequence[str], *, steps: int = 25, guidance: float = 1.0,
           sampler: str = "ddim", seed: int = 0, batch_size: int = 256,
           device: str | torch.device | None = None, return_trajectory: bool = False):
    """Generate one image per prompt in [0, 1] (N×C×H×W, on the CPU).

    DDIM (η = 0) or DDPM ancestral sampling over ``steps`` steps with classifier-free guidance
    ``guidance`` (1 = no guidance). Runs in eval mode under ``no_grad`` and restores the modules'
    training flags, so sampling never changes the model. With ``return_trajectory`` also returns
    the visited ``(x_t, t)`` pairs (a list of CPU tensors) for distillation inputs.

    Parameters
    ----------
    model : TextToImage
        The model.
    prompts : sequence of str
        One prompt per image (at least one).
    steps : int, default 25
        Sampling steps, in ``1..num_train_timesteps``.
    guidance : float, default 1.0
        Classifier-free guidance scale, ≥ 0.
    sampler : {"ddim", "ddpm"}, default "ddim"
        The sampler.
    seed : int, default 0
        Seed of the noise.
    batch_size : int, default 256
        Images per batch.
    device : str or torch.device, optional
        Move the model there first (default: where it is).
    return_trajectory : bool, default False
        Also return the visited ``(x_t, t)`` pairs.

    Returns
    -------
    torch.Tensor or tuple of (torch.Tensor, list)
        Images ``(N, C, H, W)`` in [0, 1] on the CPU, and with ``return_trajectory`` the trajectory.

    Raises
    ------
    BadInput
        On an unknown sampler, steps out of range, negative guidance, no prompts, or a prompt the
        tokenizer rejects.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    require(sampler in ("ddim", "ddpm"), f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    require(1 <= steps <= model.config.num_train_timesteps, f"steps must be in 1..{model.config.num_train_timesteps}")
    require(guidance >= 0, f"guidance must be >= 0, got {guidance}")
    prompts = list(prompts)
    require(len(prompts) > 0, "no prompts to sample")
    ids = model.tokenizer.encode(prompts)
    uncond = model.tokenizer.encode([""])
    if device is not None:
        model.to(resolve_device(device))
    dev = model.device
    base = model.noise_scheduler()
    gen = torch.Generator().manual_seed(seed)
    c, s = model.config.channels, model.config.image_size
    outs, traj = [], []
    with model_mode(model.unet), model_mode(model.text_encoder):
        for b in range(0, len(prompts), batch_size):
            bids = ids[b:b + batch_size]
            n = len(bids)
            sch = (DDIMScheduler if sampler == "ddim" else DDPMScheduler).from_config(base.config)
            sch.set_timesteps(steps)
            emb = model.encode(bids)
            emb_u = model.encode(uncond).expand(n, -1, -1)
            x = torch.randn((n, c, s, s), generator=gen).to(dev)
            for t in sch.timesteps:
                tt = torch.full((n,), int(t), device=dev, dtype=torch.long)
                if return_trajectory:
                    traj.append((x.cpu(), tt.cpu()))
                if guidance == 1.0:
                    eps = model.unet(x, tt, encoder_hidden_states=emb).sample
                else:
                    both = model.unet(torch.cat([x, x]), torch.cat([tt, tt]),
                                      encoder_hidden_states=torch.cat([emb, emb_u])).sample
                    e_c, e_u = both.chunk(2)
                    eps = e_u + guidance * (e_c - e_u)
                kw = {"generator": gen} if sampler == "ddpm" else {}
                if sampler == "ddpm":
                    # DDPM draws its variance noise on the model's device; keep it seeded on CPU.
                    x = sch.step(eps.cpu(), t, x.cpu(), **kw).prev_sample.to(dev)
                else:
                    x = sch.step(eps, t, x, eta=0.0).prev_sample
            outs.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    images = torch.cat(outs)
    return (images, traj) if return_trajectory else images


# ---------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "workbench-text2image/1"


def save_text_to_image(model: TextToImage, directory: str | Path) -> Path:
    """Write ``unet.safetensors``, ``text_encoder.safetensors`` and ``text2image.json`` atomically.

    Parameters
    ----------
    model : TextToImage
        The model.
    directory : str or pathlib.Path
        The checkpoint folder (created if needed).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, module in (("unet", model.unet), ("text_encoder", model.text_encoder)):
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        atomic_write(d / f"{name}.safetensors", lambda p, state=state: save_file(state, str(p)))
    meta = {"format": CHECKPOINT_FORMAT, "config": asdict(model.config), "tokenizer": model.tokenizer.to_dict(),
            "class_names": model.class_names, "provenance": model.provenance}
    atomic_write_text(d / "text2image.json", json.dumps(meta, indent=2))
    return d


def load_text_to_image(directory: str | Path, device: str | torch.device = "cpu") -> TextToImage:
    """Load a checkpoint written by :func:`save_text_to_image` (safetensors only, never pickle).

    Parameters
    ----------
    directory : str or pathlib.Path
        A folder written by :func:`save_text_to_image`.
    device : str or torch.device, default "cpu"
        Where to put the model.

    Returns
    -------
    TextToImage
        The model, in eval mode.

    Raises
    ------
    BadInput
        When the folder or a file is missing, the description is invalid or of another format, or
        the weights do not match the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    if not d.exists():
        raise BadInput(f"diffusion model not found: {d}")
    meta_path = d / "text2image.json"
    require(d.is_dir() and meta_path.exists(),
            f"{d} is not a text-to-image checkpoint (expected a folder with text2image.json, unet.safetensors, "
            "text_encoder.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
        require(meta.get("format") == CHECKPOINT_FORMAT, f"{meta_path}: unknown format {meta.get('format')!r}")
        cfg = DiffusionConfig(**meta["config"])
        tok = WordTokenizer.from_dict(meta["tokenizer"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadInput(f"{meta_path}: not a valid text-to-image description ({exc})") from None
    model = TextToImage(build_unet(cfg), build_text_encoder(cfg, len(tok)), tok, cfg,
                        list(meta.get("class_names", [str(i) for i in range(10)])), dict(meta.get("provenance", {})))
    for name, module in (("unet", model.unet), ("text_encoder", model.text_encoder)):
        path = d / f"{name}.safetensors"
        require(path.exists(), f"{d}: missing {path.name}")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadInput(f"cannot read {path}: {exc}") from None
        missing, unexpected = module.load_state_dict(state, strict=False)
        require(not missing and not unexpected,
                f"{path} does not fit the config: missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.unet.eval()
    model.text_encoder.eval()
    return model.to(resolve_device(device))


# ---------------------------------------------------------------- judging generations
def cache_dir() -> Path:
    """The workbench's cache folder: ``$WORKBENCH_CACHE``, default ``~/.cache/workbench``.

    Parameters: none (it takes no arguments).

    Returns
    -------
    pathlib.Path
        The folder (not created).
    """
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def judge_classifier(data: str = "digits", image_size: int = 8, seed: int = 0, cache: bool = True,
                     progress: Progress | None = None):
    """The default zoo CNN trained on real digits at ``image_size`` (via ``train_classifier``), cached.

    Returns a :class:`~workbench.models.LoadedModel`; the cache lives in ``$WORKBENCH_CACHE``
    (default ``~/.cache/workbench``) under ``judge-<data>-<size>-<seed>``.

    Parameters
    ----------
    data : str, default "digits"
        The digit dataset spec.
    image_size : int, default 8
        Image side the judge takes.
    seed : int, default 0
        Training seed.
    cache : bool, default True
        Read and write the cache.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    LoadedModel
        The judge (``.model``) and its model card.
    """
    from .models import load_model, save_model
    from .training import train_classifier

    folder = cache_dir() / f"judge-{data.replace(':', '_').replace('/', '_')}-{image_size}-{seed}"
    if cache and (folder / "model.safetensors").exists():
        return load_model(folder)
    ds = diffusion_data(data, image_size)
    trained = train_classifier(ds, "cnn", seed=seed, progress=progress)
    trained.card.provenance["data"] = data
    trained.card.provenance["image_size"] = image_size
    if cache:
        save_model(trained.model, folder, trained.card)
        return load_model(folder)
    from .models import LoadedModel

    return LoadedModel(trained.model.eval(), trained.card, "memory")


def balanced_prompts(n_per_class: int, classes: Sequence[int] = range(10), seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """``n_per_class`` prompts for each class, templates cycling; returns (prompts, labels).

    Parameters
    ----------
    n_per_class : int
        Prompts per class.
    classes : sequence of int, default range(10)
        The digits.
    seed : int, default 0
        Seed of the templates.

    Returns
    -------
    tuple of (list of str, torch.Tensor)
        The prompts and their labels ``(n_per_class·len(classes),)``.

    Examples
    --------
    >>> balanced_prompts(1, classes=[4, 5])
    (['a drawing of the digit four', 'digit 5'], tensor([4, 5]))
    """
    labels = torch.tensor([c for c in classes for _ in range(n_per_class)], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    return random_prompts(labels, gen), labels


@dataclass
class PromptAccuracy:
    """How often generations show the prompted digit, per the judge.

    Parameters
    ----------
    accuracy : float
        Share of generations classified as the prompted digit, in [0, 1].
    per_class : list of float
        The same per digit 0..9 (NaN for a digit without prompts).
    images : torch.Tensor
        The generations ``(N, C, H, W)``.
    prompts : list of str
        Their prompts.
    labels : torch.Tensor
        The prompted digits ``(N,)``.
    predictions : torch.Tensor
        The judge's predictions ``(N,)``.

    Returns
    -------
    A PromptAccuracy (a dataclass) holding these fields.
    """
    accuracy: float
    per_class: list[float]
    images: torch.Tensor
    prompts: list[str]
    labels: torch.Tensor
    predictions: torch.Tensor


def prompt_accuracy(model: TextToImage, judge: nn.Module, n_per_class: int = 20, *, seed: int = 0,
                    steps: int = 25, guidance: float = 1.0, prompts: tuple[list[str], torch.Tensor] | None = None
                    ) -> PromptAccuracy:
    """Share of clean-prompt generations that the judge classifies as the prompted digit.

    Parameters
    ----------
    model : TextToImage
        The generator.
    judge : nn.Module
        A digit classifier.
    n_per_class : int, default 20
        Prompts per digit (when ``prompts`` is not given).
    seed : int, default 0
        Seed of prompts and sampling.
    steps : int, default 25
        Sampling steps.
    guidance : float, default 1.0
        Classifier-free guidance scale.
    prompts : tuple of (list of str, torch.Tensor), optional
        Prompts and labels to use (as :func:`balanced_prompts` returns).

    Returns
    -------
    PromptAccuracy
        Accuracy overall and per digit, with the generations.
    """
    from .training import predict_logits

    prompts_, labels = prompts or balanced_prompts(n_per_class, seed=seed)
    images = sample(model, prompts_, steps=steps, guidance=guidance, seed=seed)
    preds = predict_logits(judge, images).argmax(1)
    ok = (preds == labels).float()
    per = [float(ok[labels == c].mean()) if (labels == c).any() else float("nan") for c in range(10)]
    return PromptAccuracy(float(ok.mean()), per, images, prompts_, labels, preds)


@dataclass
class DiffusionTrainingReport:
    """Report of ``workbench diffusion train``.

    Parameters
    ----------
    data : str
        Training data.
    image_size : int
        Image side.
    parameters : dict
        Parameter counts of the UNet and text encoder.
    steps : int
        Training steps.
    train_seconds : float
        Training time.
    final_loss : float
        Final smoothed loss.
    clean_prompt_accuracy : float
        :func:`prompt_accuracy` of the model, in [0, 1].
    per_class_accuracy : list of float
        The same per digit.
    judge_test_accuracy : float
        The judge's own test accuracy.
    sample_images : torch.Tensor
        Two generations per digit.
    sample_prompts : list of str
        Their prompts.
    sample_predictions : list of int
        The judge's predictions.
    loss_curve : list of float
        The smoothed loss (at most ~300 points).

    Returns
    -------
    A DiffusionTrainingReport (a dataclass) holding these fields; ``report_sections()`` renders it.
    """

    data: str
    image_size: int
    parameters: dict
    steps: int
    train_seconds: float
    final_loss: float
    clean_prompt_accuracy: float
    per_class_accuracy: list[float]
    judge_test_accuracy: float
    sample_images: torch.Tensor
    sample_prompts: list[str]
    sample_predictions: list[int]
    loss_curve: list[float]

    def report_sections(self):
        import matplotlib

        from .report import Figure, ImageGrid, Metrics, Table, figure_png

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 2.6))
        ax.plot(self.loss_curve)
        ax.set_xlabel("step")
        ax.set_ylabel("ε-MSE (smoothed)")
        ax.set_yscale("log")
        return [
            Metrics("Text-to-image model", {
                "data": self.data, "resolution": f"{self.image_size}×{self.image_size}",
                "UNet parameters": self.parameters.get("unet"), "text encoder parameters":
                self.parameters.get("text_encoder"), "steps": self.steps,
                "training time (s)": round(self.train_seconds, 1), "final loss": round(self.final_loss, 4),
                "clean-prompt accuracy (judge)": f"{100 * self.clean_prompt_accuracy:.1f}%",
                "judge test accuracy (real digits)": f"{100 * self.judge_test_accuracy:.1f}%"}),
            ImageGrid("Generations for clean prompts (prompt → judged digit)", self.sample_images,
                      [f"{p} → {y}" for p, y in zip(self.sample_prompts, self.sample_predictions)], columns=10,
                      scale=6),
            Table("Accuracy per prompted digit", ["digit", "accuracy"],
                  [[d, round(a, 3)] for d, a in enumerate(self.per_class_accuracy)]),
            Figure("Training loss", figure_png(fig)),
        ]


def training_report(trained: TrainedTextToImage, judge, n_per_class: int = 20, seed: int = 0
                    ) -> DiffusionTrainingReport:
    """The report of a training run: clean-prompt accuracy per the judge, samples and the loss curve.

    Parameters
    ----------
    trained : TrainedTextToImage
        The trained model.
    judge : LoadedModel
        The judge (:func:`judge_classifier`).
    n_per_class : int, default 20
        Prompts per digit.
    seed : int, default 0
        Seed of prompts and sampling.

    Returns
    -------
    DiffusionTrainingReport
        The figures of the run.
    """
    acc = prompt_accuracy(trained.model, judge.model, n_per_class, seed=seed)
    pick = torch.cat([torch.nonzero(acc.labels == c)[:2, 0] for c in range(10)])
    curve = trained.fit.smoothed()
    return DiffusionTrainingReport(
        data=trained.data, image_size=trained.model.config.image_size, parameters=trained.model.num_parameters(),
        steps=trained.fit.steps, train_seconds=trained.fit.seconds, final_loss=curve[-1],
        clean_prompt_accuracy=acc.accuracy, per_class_accuracy=acc.per_class,
        judge_test_accuracy=float(judge.card.provenance.get("test_accuracy", float("nan"))),
        sample_images=acc.images[pick], sample_prompts=[acc.prompts[i] for i in pick.tolist()],
        sample_predictions=acc.predictions[pick].tolist(), loss_curve=curve[::max(1, len(curve) // 300)])
