"""Shared pieces of the CLI: the Typer app and groups, global options, progress and output helpers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..atomic import check_out_dir
from ..errors import BadInput, check_in_range, printable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Interpretability and robustness workbench for PyTorch image models.")
attack_app = typer.Typer(no_args_is_help=True, help="Run an attack, train the victim and measure it.")
defend_app = typer.Typer(no_args_is_help=True, help="Run a defense end to end and measure it.")
audit_app = typer.Typer(no_args_is_help=True, help="Audit a model and its data (run: every check; labels: label errors).")
diffusion_app = typer.Typer(no_args_is_help=True, help="The small text-to-image diffusion model.")
app.add_typer(attack_app, name="attack")
app.add_typer(defend_app, name="defend")
app.add_typer(audit_app, name="audit")
app.add_typer(diffusion_app, name="diffusion")

console = Console(stderr=True)


@dataclass
class _State:
    debug: bool = False
    quiet: bool = False


STATE = _State()


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"workbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
            version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                         help="Print the version and exit.")) -> None:
    STATE.debug = debug
    STATE.quiet = quiet


def _check_device(value: str | None) -> str | None:
    """``--device`` must name a device this machine has, checked before any work."""
    from ..training import resolve_device

    if value is not None:
        resolve_device(value)
    return value


def _check_seed(value: int | None) -> int | None:
    if value is not None and not 0 <= value < 2 ** 32:
        raise BadInput(f"--seed must be an integer in 0..{2 ** 32 - 1}, got {value}")
    return value


def check_out_option(value: Path | None) -> Path | None:
    """``--out`` must be a folder the run can replace (not a file, writable), checked before any work."""
    if value is not None:
        check_out_dir(value)
    return value


def check_fraction_option(value: float | None, name: str = "threshold") -> float | None:
    """A ``--fail-*`` share must be a number in [0, 1] (NaN would silently disable the gate)."""
    if value is not None:
        check_in_range(name, value, 0.0, 1.0)
    return value


DataOpt = typer.Option("mnist10k", "--data", "-d",
                       help="Dataset spec: mnist10k, digits, npz:PATH, folder:PATH, idx:IMAGES,LABELS, npy:DIR (memory-mapped).")
MODEL_HELP = ("Trained model: a workbench folder (model.json + model.safetensors), a transformers folder "
              "(save_pretrained), a .zip of either folder, a weights file with its model.json, or "
              "path/to/file.py:factory (or "
              "package.module:factory) with --weights. A factory spec imports and runs that file's code.")
ARCH_HELP = ("Architecture to train: a zoo name (cnn, resnet), path/to/file.py:factory or package.module:factory "
             "(imports and runs that code), or a transformers folder (its config.json).")
WeightsOpt = typer.Option(None, "--weights", help="Trained weights (.safetensors or a .pt state dict) for a "
                                                  "factory --model.")
TrustOpt = typer.Option(False, "--trust-code", help="Allow models that run code stored with them: TorchScript "
                                                    "archives and model cards that name a factory. Off by default; "
                                                    "use it only for files you trust.")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.", callback=_check_device)
SeedOpt = typer.Option(0, "--seed", help="Seed for every random choice (0 to 2**32 - 1).", callback=_check_seed)
# "\\[" keeps rich's help markup from eating "[scale]" as a style tag.
RayAddressOpt = typer.Option(None, "--ray-address",
                             help="Run the units as Ray tasks: 'local' (a private Ray on this machine), 'auto' or "
                                  "HOST:PORT (join a cluster started with 'ray start --head'). Default: serially, "
                                  "no Ray. Needs pip install \".\\[scale]\".")


def threads_option(default: int | None, unit: str):
    """``--threads``: torch threads inside each unit (run, fold, shard) and the Ray CPUs it asks for."""
    more = "" if default is not None else " Default: this process's count serially, 1 per Ray task."
    return typer.Option(default, "--threads", min=1, help=f"Torch threads (and Ray CPUs) per {unit}.{more}")


def shards_option(note: str = ""):
    """``--shards``: contiguous shards of the inputs, each one unit (serially or a Ray task)."""
    return typer.Option(None, "--shards", min=1, help="Split the images into this many contiguous shards, each one "
                                                      "unit (default: 1 serially, one per 256 images on Ray)."
                                                      + (f" {note}" if note else ""))


def num_gpus_option(unit: str, hint: str = "give --device cuda"):
    """``--num-gpus``: GPUs per Ray task; a fraction shares one."""
    return typer.Option(0.0, "--num-gpus", min=0.0, help=f"GPUs per {unit} on Ray (a fraction shares one); {hint}.")


def by_reference(loaded, images, *, model: str, data: str, weights: Path | None, trust_code: bool, ds, subset,
                 ray_address: str | None):
    """The model and images to hand a sharded run: as given serially; with ``--ray-address``, a
    :class:`~workbench.shards.ModelRef` and :class:`~workbench.shards.DataRef`, so each Ray task loads
    the model and reads its own rows instead of receiving pickled modules and tensors."""
    if ray_address is None:
        return loaded.model, images
    from ..shards import DataRef, ModelRef

    return (ModelRef.of(model, weights=weights, trust_code=trust_code, input_shape=ds.input_shape,
                        num_classes=ds.num_classes),
            DataRef.of(data, subset.indices, n=len(subset)))


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator:
    """A rich progress bar; yields a ``progress(fraction, message)`` callback for the library."""
    if STATE.quiet:
        yield lambda f, m: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[msg]}"), TimeElapsedColumn(), console=console, transient=True) as p:
        task = p.add_task(description, total=1.0, msg="")
        yield lambda fraction, message="": p.update(task, completed=min(1.0, fraction), msg=message)


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


def done(paths: dict[str, Path]) -> None:
    for kind, p in paths.items():
        console.print(f"[green]wrote[/green] {kind}: ", escape(printable(p)), sep="")


def open_model(spec: str, data=None, *, weights: Path | None = None, trust_code: bool = False,
               device: str = "cpu", what: str | None = None):
    """Load ``--model`` and, with ``data`` (an ImageDataset), check it fits: the library's one call."""
    from ..models import load_model

    loaded = load_model(spec, weights=weights, trust_code=trust_code, device=device)
    if data is None:
        return loaded
    return loaded.bind(data.input_shape, data.num_classes, data.class_names, what=what or data.name)
