"""``workbench data convert``: a dataset in any spec as a memory-mapped ``npy:DIR`` folder."""

from __future__ import annotations

from pathlib import Path

import typer

from ..data import convert_dataset, load_npy_dir
from ..errors import require
from .base import app, console, done

data_app = typer.Typer(no_args_is_help=True, help="Dataset files: convert to the memory-mapped format.")
app.add_typer(data_app, name="data")


@data_app.command("convert")
def convert(src: str = typer.Argument(..., metavar="SRC_SPEC",
                                      help="Dataset spec: npz:PATH, folder:PATH, idx:IMAGES,LABELS, mnist10k, ..."),
            out: str = typer.Argument(..., metavar="OUT_DIR", help="Folder to write (images.npy, labels.npy, "
                                                                  "class_names.json)."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing converted folder."),
            batch_size: int = typer.Option(8192, "--batch-size", min=1, help="Rows written at a time.")) -> None:
    """Write a dataset as a memory-mapped folder, read with --data npy:OUT_DIR (atomic: all or nothing)."""
    # an empty name would become Path("") == ".", the current folder, which convert would then replace
    require(out.strip() != "", "OUT_DIR is empty: name the folder to write")
    path = convert_dataset(src, Path(out), overwrite=overwrite, batch_size=batch_size)
    ds = load_npy_dir(path)
    console.print(f"{len(ds)} images {ds.input_shape} ({ds.storage}), {ds.num_classes} classes")
    done({"dataset": f"npy:{path}"})
