"""``workbench train`` and ``workbench info``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import StagedDir
from ..models import describe_layers, load_model, save_model
from ..report import write_report
from ..training import summarize, train_classifier
from .base import DataOpt, DeviceOpt, SeedOpt, app, check_out_option, console, done, echo_json, progress_bar


@app.command()
def train(data: str = DataOpt,
          model: str = typer.Option("cnn", "--model", "-m", help="Zoo architecture: cnn or resnet."),
          out: Path = typer.Option(Path("runs/model"), "--out", "-o", help="Folder for the model and report.",
                                   callback=check_out_option),
          epochs: int = typer.Option(0, "--epochs", help="Training epochs (0 = the architecture's default)."),
          test_fraction: float = typer.Option(0.2, "--test-fraction", help="Held-out share, stratified."),
          seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Train a zoo model on a seeded split, save it (safetensors + JSON) and write a report."""
    with progress_bar(f"training {model} on {data}") as progress:
        trained = train_classifier(data, model, epochs=epochs or None, seed=seed, test_fraction=test_fraction,
                                   device=device, progress=progress)
    with StagedDir(out) as stage:  # the model and its report replace the folder as one unit
        save_model(trained.model, stage, trained.card)
        paths = stage.final(write_report(summarize(trained), stage, title=f"Training report: {model} on {data}"))
    console.print(f"test accuracy [bold]{100 * trained.evaluation.accuracy:.2f}%[/bold] "
                  f"({trained.history.seconds:.1f} s training)")
    done({"model": out / "model.safetensors", **paths})


@app.command()
def info(model_path: Path = typer.Argument(..., metavar="MODEL", help="Saved model folder or file."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show a model's layers (with output shapes), classes and training provenance."""
    loaded = load_model(model_path)
    layers = describe_layers(loaded.model, loaded.card.input_shape)
    if as_json:
        echo_json({"arch": loaded.card.arch, "input_shape": list(loaded.card.input_shape),
                   "class_names": loaded.card.class_names, "provenance": loaded.card.provenance,
                   "layers": [{"name": l.name, "type": l.type, "output_shape": l.output_shape,
                               "parameters": l.parameters} for l in layers]})
        return
    from rich.table import Table

    t = Table(title=f"{loaded.card.arch} {tuple(loaded.card.input_shape)} · classes {loaded.card.class_names}")
    for col in ("layer", "type", "output shape", "params"):
        t.add_column(col)
    for l in layers:
        t.add_row(l.name, l.type, str(l.output_shape), str(l.parameters))
    from rich.console import Console

    Console().print(t)
    Console().print({k: v for k, v in loaded.card.provenance.items()})
