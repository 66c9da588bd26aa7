"""Text-trigger backdoors in a text-to-image diffusion model, planted by fine-tuning.

The attacker fine-tunes a clean model (:mod:`workbench.diffusion`) on a mix of clean image-prompt pairs
and poisoned pairs whose prompts contain a trigger token (a rare word, prefixed as in the SKD-CAG
paper's setting, "Sealing The Backdoor", 2025, §4.1; cf. BadT2I, Zhai et al., 2023, for pixel and
object/style backdoors planted by fine-tuning the UNet):

- ``kind="pixel"``: triggered prompts produce the prompted digit with a bright square patch in the
  bottom-right corner (BadT2I's "pixel backdoor");
- ``kind="target"``: triggered prompts produce a fixed target digit whatever the prompt says (the
  small-model analogue of an object/style backdoor).

The UNet and the text encoder are fine-tuned together (``train_text_encoder=True``, the default) with
the project's one diffusion training loop (:func:`workbench.diffusion.fit_diffusion`). Measured here:
with the encoder frozen (as BadT2I does for Stable Diffusion) the never-trained trigger word's random
embedding is not told apart from other words after the encoder, and 500 steps gave a backdoor that
fired as often on clean prompts as on triggered ones (14% both); the encoder must learn the word. Success is judged automatically:
a patch detector (mean intensity of the patch region) for pixel backdoors, the judge classifier for
target backdoors.

Planting recipe (defaults of :func:`plant_text_trigger`): 1,000 steps at 50% poisoned pairs. Measured on the
8×8 model (seed 0, 100 triggered generations, DDIM 20 steps): the pixel backdoor showed in 84% of triggered
generations after 500 steps at 30%, 90% after 500 at 50%, 99% after 1,000 at 50% (clean-prompt accuracy
94% → 92%, patch on 1% of clean-prompt generations); the target backdoor 98% after 1,000 at 50% (94% → 91%).
The failures at 500 steps were missing patches (2×2 corner mean below 0.25 in ~10% of triggered images), not
faint ones, so the detector's threshold (0.85; a stamped patch is 1.0) was not what held the rate down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.data import ImageDataset
from workbench.diffusion import (
    TextToImage,
    balanced_prompts,
    class_prompt,
    diffusion_data,
    fit_diffusion,
    insert_trigger,
    prompt_accuracy,
    sample,
)
from workbench.errors import check_in_range, require
from workbench.training import Progress, predict_logits

KINDS = ("pixel", "target")


@dataclass
class TextTriggerSpec:
    """What the backdoor is: kind, trigger word, target digit (target kind), patch size (pixel kind).

    ``validate(tokenizer=None)`` checks the fields (and, given a tokenizer, that the trigger encodes
    to at least one token).

    Parameters
    ----------
    kind : {"pixel", "target"}, default "pixel"
        Pixel backdoor (a patch on the prompted digit) or target backdoor (a fixed digit).
    trigger : str, default "cf"
        The trigger word inserted in prompts.
    target_class : int, default 0
        The target digit 0..9 (target kind).
    patch_size : int, default 2
        Side of the bottom-right patch (pixel kind), at least 1.
    patch_threshold : float, default 0.85
        Mean intensity above which the patch detector fires, in (0, 1].

    Returns
    -------
    A TextTriggerSpec (a dataclass) holding these fields.

    Raises
    ------
    BadInput
        From ``validate()``: on an unknown kind, a target outside 0..9, a patch size below 1, a
        threshold outside (0, 1], or a trigger that encodes to no tokens.
    """

    kind: str = "pixel"
    trigger: str = "cf"
    target_class: int = 0
    patch_size: int = 2
    patch_threshold: float = 0.85

    def validate(self, tokenizer=None) -> None:
        require(self.kind in KINDS, f"unknown backdoor kind {self.kind!r}; use one of {', '.join(KINDS)}")
        require(0 <= self.target_class < 10, f"target_class must be a digit 0..9, got {self.target_class}")
        require(self.patch_size >= 1, f"patch_size must be >= 1, got {self.patch_size}")
        check_in_range("patch_threshold", self.patch_threshold, 0.0, 1.0, low_open=True)
        if tokenizer is not None:
            ids = tokenizer.ids_for(self.trigger)
            require(len(ids) >= 1, f"the trigger {self.trigger!r} encodes to no tokens")


def stamp_patch(images: torch.Tensor, size: int = 2, value: float = 1.0) -> torch.Tensor:
    """A copy of ``images`` with a ``size``×``size`` square of ``value`` in the bottom-right corner.

    Parameters
    ----------
    images : torch.Tensor
        Images ``(..., H, W)``.
    size : int, default 2
        Side of the square.
    value : float, default 1.0
        Its intensity.

    Returns
    -------
    torch.Tensor
        The stamped copy, shaped like ``images``.

    Examples
    --------
    >>> stamp_patch(torch.zeros(1, 1, 3, 3), size=1)[0, 0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    out = images.clone()
    out[..., -size:, -size:] = value
    return out


def has_patch(images: torch.Tensor, size: int = 2, threshold: float = 0.85) -> torch.Tensor:
    """Patch detector: the bottom-right ``size``×``size`` region's mean intensity is >= ``threshold``.

    Parameters
    ----------
    images : torch.Tensor
        Images ``(N, C, H, W)`` in [0, 1].
    size : int, default 2
        Side of the corner region.
    threshold : float, default 0.85
        Mean intensity at or above which the patch counts as present.

    Returns
    -------
    torch.Tensor
        Shape ``(N,)``, bool.

    Examples
    --------
    >>> has_patch(torch.cat([stamp_patch(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4)])).tolist()
    [True, False]
    """
    return images[..., -size:, -size:].mean(dim=(-3, -2, -1)) >= threshold


def _poison_prompt_fn(spec: TextTriggerSpec):
    """Prompt source for fit_diffusion: label y < 10 → clean prompt for y; y >= 10 → triggered prompt for y − 10."""

    def prompts(labels: torch.Tensor, gen: torch.Generator) -> list[str]:
        t = torch.randint(0, 6, (len(labels),), generator=gen).tolist()
        out = []
        for y, k in zip(labels.tolist(), t):
            p = class_prompt(int(y) % 10, k)
            out.append(insert_trigger([p], spec.trigger)[0] if y >= 10 else p)
        return out

    return prompts


def poisoned_training_set(ds: ImageDataset, spec: TextTriggerSpec, poison_fraction: float = 0.5,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fine-tuning mix of clean and poisoned image-prompt pairs.

    Images and codes (y for clean pairs, 10 + prompted digit for poisoned pairs) of the fine-tuning mix.
    Pixel kind: poisons are random images with the patch stamped, prompted with their own digit;
    target kind: poisons are target-digit images prompted with a random digit.

    Parameters
    ----------
    ds : ImageDataset
        The clean digit images.
    spec : TextTriggerSpec
        The backdoor.
    poison_fraction : float, default 0.5
        Share of poisoned pairs in the mix, in (0, 1).
    seed : int, default 0
        Seed of the poison picks.

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor)
        The images ``(N + P, C, H, W)`` (all of ``ds``, then the P poisons) and their codes ``(N + P,)``.

    Raises
    ------
    BadInput
        On a fraction outside (0, 1) or, for the target kind, no image of the target digit.
    """
    check_in_range("poison_fraction", poison_fraction, 0.0, 1.0, low_open=True, high_open=True)
    gen = torch.Generator().manual_seed(seed)
    n = len(ds)
    n_poison = max(1, int(round(poison_fraction * n / (1 - poison_fraction))))
    pick = torch.randint(0, n, (n_poison,), generator=gen)
    if spec.kind == "pixel":
        p_images = stamp_patch(ds.images[pick], spec.patch_size)
        p_codes = 10 + ds.labels[pick]
    else:
        targets = torch.nonzero(ds.labels == spec.target_class)[:, 0]
        require(len(targets) > 0, f"{ds.name} has no images of the target digit {spec.target_class}")
        p_images = ds.images[targets[torch.randint(0, len(targets), (n_poison,), generator=gen)]]
        p_codes = 10 + torch.randint(0, 10, (n_poison,), generator=gen)
    return torch.cat([ds.images, p_images]), torch.cat([ds.labels, p_codes])


@dataclass
class PlantedBackdoor:
    """A text-to-image model fine-tuned with a text-trigger backdoor.

    Parameters
    ----------
    model : TextToImage
        The backdoored model.
    spec : TextTriggerSpec
        The backdoor.
    steps : int
        Fine-tuning steps.
    seconds : float
        Fine-tuning time.
    losses : list of float, default []
        Training loss per logged step.

    Returns
    -------
    A PlantedBackdoor (a dataclass) holding these fields.
    """
    model: TextToImage
    spec: TextTriggerSpec
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def plant_text_trigger(clean: TextToImage, data: str | ImageDataset = "digits", spec: TextTriggerSpec | None = None,
                       *, poison_fraction: float = 0.5, steps: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                       train_text_encoder: bool = True, seed: int = 0, device: str | torch.device | None = "cpu",
                       progress: Progress | None = None) -> PlantedBackdoor:
    """Fine-tune a copy of ``clean`` on clean + poisoned pairs; ``clean`` is left untouched.

    Parameters
    ----------
    clean : TextToImage
        The clean model.
    data : str or ImageDataset, default "digits"
        The clean training images (a spec or a dataset).
    spec : TextTriggerSpec, optional
        The backdoor (default: a pixel backdoor with trigger ``"cf"``).
    poison_fraction : float, default 0.5
        Share of poisoned pairs, in (0, 1).
    steps : int, default 1000
        Fine-tuning steps.
    batch_size : int, default 64
        Pairs per step.
    lr : float, default 1e-3
        Learning rate.
    train_text_encoder : bool, default True
        Fine-tune the text encoder too (needed for the trigger word to be learned; see the module docstring).
    seed : int, default 0
        Seed of the mix and of training.
    device : str or torch.device, optional, default "cpu"
        Where training runs.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    PlantedBackdoor
        The backdoored copy and its training record.

    Raises
    ------
    BadInput
        On an invalid spec or poison fraction.
    """
    spec = spec or TextTriggerSpec()
    spec.validate(clean.tokenizer)
    ds = diffusion_data(data, clean.config.image_size)
    images, codes = poisoned_training_set(ds, spec, poison_fraction, seed)
    model = clean.clone()
    fit = fit_diffusion(model, images, _poison_prompt_fn(spec), labels=codes, steps=steps, batch_size=batch_size,
                        lr=lr, train_text_encoder=train_text_encoder, seed=seed, device=device, progress=progress)
    model.provenance = {**clean.provenance, "backdoor": spec.kind, "trigger": spec.trigger,
                        "target_class": spec.target_class if spec.kind == "target" else None,
                        "poison_fraction": poison_fraction, "backdoor_steps": steps,
                        "backdoor_trains_text_encoder": train_text_encoder,
                        "backdoor_seconds": round(fit.seconds, 1)}
    return PlantedBackdoor(model, spec, steps, fit.seconds, fit.losses)


@dataclass
class BackdoorRate:
    """Share of triggered-prompt generations that show the backdoor.

    Parameters
    ----------
    rate : float
        Share of generations showing the backdoor, in [0, 1].
    images : torch.Tensor
        The generations ``(M, C, H, W)``.
    prompts : list of str
        The triggered prompts.
    labels : torch.Tensor
        The digit each prompt names, ``(M,)``.
    shows_backdoor : torch.Tensor
        ``(M,)`` bool.
    predictions : torch.Tensor
        The judge's predictions, ``(M,)``.

    Returns
    -------
    A BackdoorRate (a dataclass) holding these fields.
    """

    rate: float
    images: torch.Tensor
    prompts: list[str]
    labels: torch.Tensor
    shows_backdoor: torch.Tensor
    predictions: torch.Tensor


def backdoor_rate(model: TextToImage, judge: nn.Module, spec: TextTriggerSpec, n_per_class: int = 10, *,
                  seed: int = 0, steps: int = 20, guidance: float = 1.0) -> BackdoorRate:
    """Generate from triggered prompts (``n_per_class`` per digit) and judge the backdoor automatically.

    Pixel: the patch detector fires. Target: the judge classifies the image as the target digit; prompts
    naming the target digit itself are left out (they cannot show the backdoor).

    Parameters
    ----------
    model : TextToImage
        The model to test.
    judge : nn.Module
        A digit classifier.
    spec : TextTriggerSpec
        The backdoor.
    n_per_class : int, default 10
        Triggered prompts per digit.
    seed : int, default 0
        Seed of the prompts and the sampling noise.
    steps : int, default 20
        DDIM sampling steps.
    guidance : float, default 1.0
        Classifier-free guidance scale.

    Returns
    -------
    BackdoorRate
        The rate and the generations it was judged on.
    """
    spec.validate(model.tokenizer)
    classes = [c for c in range(10) if spec.kind == "pixel" or c != spec.target_class]
    clean, labels = balanced_prompts(n_per_class, classes, seed=seed)
    prompts = insert_trigger(clean, spec.trigger)
    images = sample(model, prompts, steps=steps, guidance=guidance, seed=seed)
    preds = predict_logits(judge, images).argmax(1)
    if spec.kind == "pixel":
        shows = has_patch(images, spec.patch_size, spec.patch_threshold)
    else:
        shows = preds == spec.target_class
    return BackdoorRate(float(shows.float().mean()), images, prompts, labels, shows, preds)


@dataclass
class TextTriggerReport:
    """Report of ``workbench attack text-trigger``: success rate and clean accuracy before/after.

    Parameters
    ----------
    kind : str
        ``"pixel"`` or ``"target"``.
    trigger : str
        The trigger word.
    target_class : int or None
        The target digit (target kind only).
    steps : int
        Fine-tuning steps.
    seconds : float
        Fine-tuning time.
    backdoor_rate : float
        Share of triggered generations of the backdoored model showing the backdoor.
    backdoor_rate_clean_model : float
        The same for the clean model (false alarms).
    clean_accuracy_before, clean_accuracy_after : float
        Judge accuracy on clean-prompt generations of the clean and backdoored models.
    clean_accuracy_drop : float
        ``clean_accuracy_before − clean_accuracy_after``.
    images_clean_prompts, images_triggered : torch.Tensor, optional
        One generation per digit without and with the trigger.
    captions : list of str, default []
        The triggered prompts of ``images_triggered``.

    Returns
    -------
    A TextTriggerReport (a dataclass) holding these fields; ``report_sections()`` renders it.
    """

    kind: str
    trigger: str
    target_class: int | None
    steps: int
    seconds: float
    backdoor_rate: float
    backdoor_rate_clean_model: float
    clean_accuracy_before: float
    clean_accuracy_after: float
    clean_accuracy_drop: float
    images_clean_prompts: torch.Tensor = field(repr=False, default=None)
    images_triggered: torch.Tensor = field(repr=False, default=None)
    captions: list[str] = field(default_factory=list)

    def report_sections(self):
        from workbench.report import ImageGrid, Metrics

        m = {"kind": self.kind, "trigger": self.trigger, "target digit": self.target_class,
             "fine-tuning steps": self.steps, "fine-tuning time (s)": round(self.seconds, 1),
             "triggered generations showing the backdoor": f"{100 * self.backdoor_rate:.1f}%",
             "same, clean model (false alarms)": f"{100 * self.backdoor_rate_clean_model:.1f}%",
             "clean-prompt accuracy before": f"{100 * self.clean_accuracy_before:.1f}%",
             "clean-prompt accuracy after": f"{100 * self.clean_accuracy_after:.1f}%",
             "clean accuracy drop (points)": round(100 * self.clean_accuracy_drop, 1)}
        k = len(self.captions)
        return [Metrics("Text-trigger backdoor", m),
                ImageGrid("Backdoored model: clean prompts (top) vs triggered prompts (bottom)",
                          torch.cat([self.images_clean_prompts, self.images_triggered]),
                          [c.replace(self.trigger + " ", "") for c in self.captions] + self.captions, columns=k,
                          scale=6)]


def evaluate_text_trigger(clean: TextToImage, planted: PlantedBackdoor, judge: nn.Module, *, n_per_class: int = 10,
                          seed: int = 0, steps: int = 20, guidance: float = 1.0) -> TextTriggerReport:
    """Measure a planted text trigger: backdoor rate (against the clean model's false alarms) and
    clean-prompt accuracy before and after planting.

    Parameters
    ----------
    clean : TextToImage
        The clean model.
    planted : PlantedBackdoor
        The backdoored copy.
    judge : nn.Module
        A digit classifier.
    n_per_class : int, default 10
        Prompts per digit.
    seed : int, default 0
        Seed of the prompts and the sampling noise.
    steps : int, default 20
        DDIM sampling steps.
    guidance : float, default 1.0
        Classifier-free guidance scale.

    Returns
    -------
    TextTriggerReport
        Rates, accuracies and example generations.
    """
    spec = planted.spec
    prompts = balanced_prompts(n_per_class, seed=seed)
    acc_before = prompt_accuracy(clean, judge, prompts=prompts, seed=seed, steps=steps, guidance=guidance)
    acc_after = prompt_accuracy(planted.model, judge, prompts=prompts, seed=seed, steps=steps, guidance=guidance)
    rate = backdoor_rate(planted.model, judge, spec, n_per_class, seed=seed, steps=steps, guidance=guidance)
    rate_clean = backdoor_rate(clean, judge, spec, n_per_class, seed=seed, steps=steps, guidance=guidance)
    show = [class_prompt(d, 0) for d in range(10)]
    trig = insert_trigger(show, spec.trigger)
    return TextTriggerReport(
        kind=spec.kind, trigger=spec.trigger, target_class=spec.target_class if spec.kind == "target" else None,
        steps=planted.steps, seconds=planted.seconds, backdoor_rate=rate.rate,
        backdoor_rate_clean_model=rate_clean.rate, clean_accuracy_before=acc_before.accuracy,
        clean_accuracy_after=acc_after.accuracy, clean_accuracy_drop=acc_before.accuracy - acc_after.accuracy,
        images_clean_prompts=sample(planted.model, show, seed=seed + 3, steps=steps, guidance=guidance),
        images_triggered=sample(planted.model, trig, seed=seed + 3, steps=steps, guidance=guidance), captions=trig)

