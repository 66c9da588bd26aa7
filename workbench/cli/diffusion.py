"""CLI: ``workbench diffusion train``, ``workbench attack text-trigger``, ``workbench defend skd-cag``.

Parses input, calls the library (:mod:`workbench.diffusion`, :mod:`attacks.text_trigger`,
:mod:`defenses.skd_cag`), writes reports. No science here.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import StagedDir
from ..errors import require
from ..limits import check_batch
from .base import (
    DeviceOpt,
    SeedOpt,
    attack_app,
    check_out_option,
    console,
    defend_app,
    diffusion_app,
    done,
    progress_bar,
)

ModelDirOpt = typer.Option(..., "--model", "-m", help="Text-to-image checkpoint folder (from `diffusion train`).")


@diffusion_app.command("train")
def diffusion_train(
        data: str = typer.Option("digits", "--data", "-d", help="Digit dataset spec (10 classes): digits, mnist10k, npz:PATH..."),
        out: Path = typer.Option(Path("runs/diffusion"), "--out", "-o", help="Folder for the checkpoint and report.",
                                 callback=check_out_option),
        image_size: int = typer.Option(8, "--image-size", help="Resolution (8 = sklearn digits' own; 16 slower)."),
        steps: int = typer.Option(1500, "--steps", help="Training steps."),
        batch_size: int = typer.Option(64, "--batch-size"),
        lr: float = typer.Option(2e-3, "--lr"),
        eval_per_class: int = typer.Option(10, "--eval-per-class", help="Generations per digit for the accuracy check."),
        seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Train the small text-to-image diffusion model, save it (safetensors) and judge its generations."""
    from ..diffusion import (
        DiffusionConfig,
        judge_classifier,
        save_text_to_image,
        train_text_to_image,
        training_report,
    )
    from ..report import write_report

    require(eval_per_class >= 1, "--eval-per-class must be >= 1")
    check_batch(batch_size, (1, image_size, image_size))
    with progress_bar(f"training the diffusion model on {data}") as progress:
        trained = train_text_to_image(data, DiffusionConfig(image_size=image_size), steps=steps,
                                      batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress)
    with progress_bar("judge classifier") as progress:
        judge = judge_classifier(data, image_size, progress=progress)
    rep = training_report(trained, judge, eval_per_class, seed=seed)
    with StagedDir(out) as stage:
        save_text_to_image(trained.model, stage)
        paths = stage.final(write_report(rep, stage, title=f"Text-to-image diffusion model on {data} "
                                                          f"({image_size}×{image_size})"))
    console.print(f"clean-prompt accuracy [bold]{100 * rep.clean_prompt_accuracy:.1f}%[/bold] "
                  f"({trained.fit.seconds:.0f} s training)")
    done({"model": out, **paths})


@attack_app.command("text-trigger")
def attack_text_trigger(
        model: Path = ModelDirOpt,
        kind: str = typer.Option("pixel", "--kind", help="pixel (corner patch) or target (a fixed digit)."),
        trigger: str = typer.Option("cf", "--trigger", help="Trigger word (must be in the tokenizer's vocabulary)."),
        target_class: int = typer.Option(0, "--target-class", help="Digit that triggered prompts produce (kind target)."),
        data: str = typer.Option("digits", "--data", "-d", help="Digit dataset for the fine-tuning mix."),
        out: Path = typer.Option(Path("runs/text-trigger"), "--out", "-o", callback=check_out_option),
        steps: int = typer.Option(1000, "--steps", help="Fine-tuning steps."),
        poison_fraction: float = typer.Option(0.5, "--poison-fraction", help="Share of poisoned pairs in the mix."),
        lr: float = typer.Option(1e-3, "--lr"),
        eval_per_class: int = typer.Option(10, "--eval-per-class"),
        seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Plant a text-trigger backdoor by fine-tuning; report success rate and clean accuracy drop."""
    from attacks.text_trigger import TextTriggerSpec, evaluate_text_trigger, plant_text_trigger

    from ..diffusion import judge_classifier, load_text_to_image, save_text_to_image
    from ..report import write_report

    clean = load_text_to_image(model, device)
    spec = TextTriggerSpec(kind=kind, trigger=trigger, target_class=target_class)
    spec.validate(clean.tokenizer)
    with progress_bar(f"planting a {kind} backdoor") as progress:
        planted = plant_text_trigger(clean, data, spec, poison_fraction=poison_fraction, steps=steps, lr=lr,
                                     seed=seed, device=device, progress=progress)
    judge = judge_classifier(str(clean.provenance.get("data", data)), clean.config.image_size)
    rep = evaluate_text_trigger(clean, planted, judge.model, n_per_class=eval_per_class, seed=seed)
    with StagedDir(out) as stage:
        save_text_to_image(planted.model, stage)
        paths = stage.final(write_report(rep, stage, title=f"Text-trigger backdoor ({kind}, trigger {trigger!r})"))
    console.print(f"backdoor shown in [bold]{100 * rep.backdoor_rate:.1f}%[/bold] of triggered generations; "
                  f"clean accuracy {100 * rep.clean_accuracy_before:.1f}% → {100 * rep.clean_accuracy_after:.1f}%")
    done({"model": out, **paths})


@defend_app.command("skd-cag")
def defend_skd_cag(
        model: Path = ModelDirOpt,
        trigger: str = typer.Option(..., "--trigger", help="The trigger token to unlearn."),
        out: Path = typer.Option(Path("runs/skd-cag"), "--out", "-o", callback=check_out_option),
        alpha: float = typer.Option(0.5, "--alpha", help="Weight of the attention loss (L = α·L_attn + (1−α)·L_pred)."),
        target: str = typer.Option("zeros", "--target", help="Trigger-map target: zeros, noise or random_word."),
        params: str = typer.Option("none", "--params", help="Trainable UNet parameters: all (the paper), kv (cross-attention k/v) or none."),
        text_encoder: bool = typer.Option(True, "--text-encoder/--no-text-encoder",
                                          help="Train the student's text encoder (our default; the paper: --no-text-encoder)."),
        steps: int = typer.Option(150, "--steps"),
        batch_size: int = typer.Option(32, "--batch-size"),
        lr: float = typer.Option(2e-4, "--lr"),
        ema: float = typer.Option(0.0, "--ema", help="EMA decay of the student's weights (0 = off)."),
        inputs: str = typer.Option("trajectory", "--inputs", help="trajectory (the teacher's own x_t) or noise (the paper)."),
        preserve: float = typer.Option(1.0, "--preserve", help="Weight of a clean-prompt anchor term (0 = the paper's loss)."),
        kind: str = typer.Option("", "--kind", help="Backdoor kind for the evaluation (default: from the checkpoint)."),
        target_class: int = typer.Option(-1, "--target-class", help="Target digit of a target backdoor (default: from the checkpoint)."),
        eval_per_class: int = typer.Option(10, "--eval-per-class"),
        seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Unlearn a text trigger with SKD-CAG; report removal rate, clean fidelity and trigger attention mass."""
    from attacks.text_trigger import TextTriggerSpec
    from defenses.skd_cag import SKDCAGConfig, evaluate_unlearning, skd_cag

    from ..diffusion import judge_classifier, load_text_to_image, save_text_to_image
    from ..report import write_report

    backdoored = load_text_to_image(model, device)
    check_batch(batch_size, (1, backdoored.config.image_size, backdoored.config.image_size))
    prov = backdoored.provenance
    kind = kind or str(prov.get("backdoor") or "pixel")
    tc = target_class if target_class >= 0 else int(prov.get("target_class") or 0)
    spec = TextTriggerSpec(kind=kind, trigger=trigger, target_class=tc)
    spec.validate(backdoored.tokenizer)
    cfg = SKDCAGConfig(alpha=alpha, target=target, params=params, steps=steps, batch_size=batch_size, lr=lr,
                       ema_decay=ema or None, inputs=inputs, preserve=preserve,
                       text_encoder=text_encoder)
    cfg.validate()
    with progress_bar("SKD-CAG") as progress:
        run = skd_cag(backdoored, trigger, config=cfg, seed=seed, device=device, progress=progress)
    judge = judge_classifier(str(prov.get("data", "digits")), backdoored.config.image_size)
    ev = evaluate_unlearning(backdoored, run, judge.model, spec, n_per_class=eval_per_class, seed=seed)
    with StagedDir(out) as stage:
        save_text_to_image(run.model, stage)
        paths = stage.final(write_report(ev, stage, title=f"SKD-CAG: unlearning trigger {trigger!r}"))
    console.print(f"removal rate [bold]{100 * ev.removal_rate:.1f}%[/bold]; clean accuracy "
                  f"{100 * ev.clean_accuracy_before:.1f}% → {100 * ev.clean_accuracy_after:.1f}%; trigger attention "
                  f"mass {ev.trigger_mass_before:.3f} → {ev.trigger_mass_after:.3f} ({run.seconds:.0f} s)")
    done({"model": out, **paths})
