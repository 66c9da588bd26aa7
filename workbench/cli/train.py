"""``workbench train`` and ``workbench info``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import StagedDir
from ..errors import BadInput, require
from ..layers import default_cam_layer, default_feature_layer, describe_layers
from ..models import save_model
from ..report import write_report
from ..training import summarize, train_classifier
from .base import (
    ARCH_HELP,
    MODEL_HELP,
    DataOpt,
    DeviceOpt,
    SeedOpt,
    TrustOpt,
    WeightsOpt,
    app,
    check_out_option,
    console,
    done,
    echo_json,
    open_model,
    progress_bar,
)


@app.command()
def train(data: str = DataOpt,
          model: str = typer.Option("cnn", "--model", "-m", help=ARCH_HELP),
          out: Path = typer.Option(Path("runs/model"), "--out", "-o", help="Folder for the model and report.",
                                   callback=check_out_option),
          epochs: int = typer.Option(0, "--epochs", help="Training epochs (0 = the architecture's default)."),
          test_fraction: float = typer.Option(0.2, "--test-fraction", help="Held-out share, stratified."),
          trust_code: bool = TrustOpt, seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Train a model on a seeded split, save it (safetensors + JSON) and write a report."""
    with progress_bar(f"training {model} on {data}") as progress:
        trained = train_classifier(data, model, epochs=epochs or None, seed=seed, test_fraction=test_fraction,
                                   device=device, progress=progress, trust_code=trust_code)
    with StagedDir(out) as stage:  # the model and its report replace the folder as one unit
        save_model(trained.model, stage, trained.card)
        paths = stage.final(write_report(summarize(trained), stage, title=f"Training report: {model} on {data}"))
    console.print(f"test accuracy [bold]{100 * trained.evaluation.accuracy:.2f}%[/bold] "
                  f"({trained.history.seconds:.1f} s training)")
    done({"model": out / "model.safetensors", **paths})


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise BadInput(f"--input-shape must be C,H,W (e.g. 3,32,32), got {text!r}") from None
    require(len(shape) == 3 and min(shape) >= 1, f"--input-shape must be three positive sizes C,H,W, got {text!r}")
    return shape


def _default(fn, *args) -> str | None:
    try:
        return fn(*args)
    except BadInput:
        return None


@app.command()
def info(model_path: str = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
         weights: Path = WeightsOpt, trust_code: bool = TrustOpt,
         input_shape: str = typer.Option("", "--input-shape", help="C,H,W of the images, for a model whose card "
                                                                   "does not say (e.g. 3,224,224)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show a model's layers (with output shapes), default layers, classes and training provenance."""
    loaded = open_model(model_path, weights=weights, trust_code=trust_code)
    shape = _shape(input_shape) if input_shape else loaded.card.input_shape
    if shape is None and loaded.card.arch == "transformers":  # size-agnostic CNNs: probe at the usual 224×224
        shape = (int(loaded.module.config.num_channels), 224, 224)
    require(shape is not None, f"{model_path}: the input shape is not known; give --input-shape C,H,W")
    require(loaded.model.hooks_supported, loaded.model.hooks_error or "")
    layers = describe_layers(loaded.model, shape)
    cam = _default(default_cam_layer, loaded.model, shape)
    feat = _default(default_feature_layer, loaded.model, shape)
    if as_json:
        echo_json({"arch": loaded.card.arch, "input_shape": list(shape),
                   "class_names": loaded.card.class_names, "provenance": loaded.card.provenance,
                   "preprocess": loaded.card.preprocess, "default_cam_layer": cam, "feature_layer": feat,
                   "layers": [{"name": l.name, "type": l.type, "output_shape": l.output_shape,
                               "parameters": l.parameters} for l in layers]})
        return
    from rich.table import Table

    t = Table(title=f"{loaded.card.arch} {tuple(shape)} · classes {loaded.card.class_names}")
    for col in ("layer", "type", "output shape", "params"):
        t.add_column(col)
    for l in layers:
        t.add_row(l.name, l.type, str(l.output_shape), str(l.parameters))
    from rich.console import Console

    Console().print(t)
    Console().print(f"default CAM layer: {cam or '—'} · feature layer: {feat or '—'}"
                    + (f" · preprocessing: {loaded.card.preprocess}" if loaded.card.preprocess else ""))
    Console().print({k: v for k, v in loaded.card.provenance.items()})
