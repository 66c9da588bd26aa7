"""``workbench attack badnets|blended|bilevel``: poison, train the victim, measure CA/ASR, write a report."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import StagedDir
from ..errors import BadInput
from ..models import save_model
from ..report import write_report
from .base import DataOpt, DeviceOpt, SeedOpt, attack_app, check_out_option, console, done, progress_bar


def _target(value: str) -> int | None:
    if value.strip().lower() in ("all", "all-to-all"):
        return None
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"--target must be a class index or 'all' (all-to-all), got {value!r}") from None


TargetOpt = typer.Option("0", "--target", "-t", help="Target class index, or 'all' for all-to-all (y → y+1).")
RateOpt = typer.Option(0.05, "--rate", "-r", help="Share of the training set to poison, in (0, 1).")
OutOpt = typer.Option(..., "--out", "-o", help="Folder for the report and the backdoored model.",
                      callback=check_out_option)
ModeOpt = typer.Option("dirty", "--mode", help="dirty (relabel to the target) or clean (stamp target-class "
                                               "images only, labels unchanged).")
ModelOpt = typer.Option("cnn", "--model", "-m", help="Zoo architecture of the victim: cnn or resnet.")
EpochsOpt = typer.Option(0, "--epochs", help="Training epochs (0 = the architecture's default).")
CleanOpt = typer.Option(False, "--clean-reference", help="Also train a clean model (same split and seed) "
                                                         "to compare clean accuracy.")


def _run(attack: str, data: str, rate: float, target: str, out: Path, *, mode: str, model: str, epochs: int,
         seed: int, device: str, clean_reference: bool, **trigger_params) -> None:
    from attacks.backdoor import run_backdoor_attack

    with progress_bar(f"{attack}: poisoning {data} and training {model}") as progress:
        result = run_backdoor_attack(data, attack, rate, _target(target), seed=seed, epochs=epochs or None,
                                     arch=model, device=device, mode=mode, clean_reference=clean_reference,
                                     progress=progress, **trigger_params)
    with StagedDir(out) as stage:
        save_model(result.model, stage, result.card)
        paths = stage.final(write_report(result.summary(), stage, title=f"Backdoor attack: {attack} on {data}"))
    m = result.metrics
    line = (f"CA [bold]{100 * m.clean_accuracy:.2f}%[/bold]  ASR [bold]{100 * m.attack_success_rate:.2f}%[/bold]  "
            f"({len(result.poisoned.poisoned_indices)} poisoned, {result.history.seconds:.1f} s training)")
    if result.clean_model_accuracy is not None:
        line += f"  clean model CA {100 * result.clean_model_accuracy:.2f}%"
    console.print(line)
    done({"model": out / "model.safetensors", **paths})


@attack_app.command("badnets")
def badnets(data: str = DataOpt, rate: float = RateOpt, target: str = TargetOpt, out: Path = OutOpt,
            patch_size: int = typer.Option(3, "--patch-size", help="Side of the square patch in pixels."),
            position: str = typer.Option("bottom-right", "--position",
                                         help="bottom-right, bottom-left, top-right, top-left or center."),
            pattern: str = typer.Option("solid", "--pattern", help="solid or checkerboard."),
            mode: str = ModeOpt, model: str = ModelOpt, epochs: int = EpochsOpt, clean_reference: bool = CleanOpt,
            seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """BadNets (Gu et al. 2017): a small patch, poisoned samples relabelled to the target."""
    _run("badnets", data, rate, target, out, mode=mode, model=model, epochs=epochs, seed=seed, device=device,
         clean_reference=clean_reference, patch_size=patch_size, position=position, pattern=pattern)


@attack_app.command("blended")
def blended(data: str = DataOpt, rate: float = RateOpt, target: str = TargetOpt, out: Path = OutOpt,
            alpha: float = typer.Option(0.15, "--alpha", help="Blend weight of the pattern, in [0, 1]."),
            pattern_seed: int = typer.Option(0, "--pattern-seed", help="Seed of the uniform-noise pattern."),
            mode: str = ModeOpt, model: str = ModelOpt, epochs: int = EpochsOpt, clean_reference: bool = CleanOpt,
            seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Blended (Chen et al. 2017): x' = (1 - alpha)·x + alpha·noise pattern, relabelled to the target."""
    _run("blended", data, rate, target, out, mode=mode, model=model, epochs=epochs, seed=seed, device=device,
         clean_reference=clean_reference, alpha=alpha, pattern_seed=pattern_seed)


@attack_app.command("bilevel")
def bilevel(data: str = DataOpt,
            rate: float = typer.Option(0.01, "--rate", "-r", help="Share of the unlabelled training set poisoned "
                                                                   "(triggered target-class images)."),
            target: int = typer.Option(0, "--target", "-t", help="Target class index."), out: Path = OutOpt,
            epsilon: float = typer.Option(0.1, "--epsilon", help="L∞ bound of the learned trigger (pixels in [0, 1])."),
            rounds: int = typer.Option(60, "--rounds", help="Bi-level rounds (inner + outer updates)."),
            inner_steps: int = typer.Option(10, "--inner-steps", help="Surrogate SimCLR steps per round."),
            outer_steps: int = typer.Option(5, "--outer-steps", help="Generator steps per round."),
            reinit_every: int = typer.Option(20, "--reinit-every", help="Re-initialise the surrogate every N rounds."),
            simclr_epochs: int = typer.Option(10, "--simclr-epochs", help="Epochs of the victim's SimCLR training."),
            compare: bool = typer.Option(False, "--compare", help="Also run a fixed-patch victim and an unpoisoned "
                                                                  "victim (3× the time)."),
            seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """BLTO (Sun et al. 2024): a learned trigger against contrastive learning, judged on a SimCLR victim."""
    from safetensors.torch import save_file

    from attacks.bilevel import run_bilevel_attack

    from ..atomic import atomic_write

    with progress_bar(f"BLTO on {data}") as progress:
        result = run_bilevel_attack(data, rate, target, epsilon=epsilon, rounds=rounds, inner_steps=inner_steps,
                                    outer_steps=outer_steps, reinit_every=reinit_every, simclr_epochs=simclr_epochs,
                                    seed=seed, device=device, compare_patch=compare, compare_clean=compare,
                                    progress=progress)
    gen = result.trigger.trigger.generator
    state = {k: v.detach().cpu().contiguous() for k, v in gen.state_dict().items()}
    with StagedDir(out) as stage:
        atomic_write(stage / "trigger_generator.safetensors", lambda p: save_file(
            state, str(p), metadata={"epsilon": str(result.trigger.epsilon), "channels": str(gen.out.out_channels)}))
        paths = stage.final(write_report(result.summary(), stage, title=f"BLTO backdoor against SimCLR on {data}"))
    m = result.victim.metrics
    console.print(f"victim clean probe accuracy [bold]{100 * m.clean_accuracy:.2f}%[/bold]  ASR "
                  f"[bold]{100 * m.attack_success_rate:.2f}%[/bold]")
    for row in result.table_rows()[1:]:
        console.print(f"  {row[0]}: CA {row[1]}  ASR {row[2]}")
    done({"trigger generator": out / "trigger_generator.safetensors", **paths})
