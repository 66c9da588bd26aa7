"""``workbench saliency``: explain a model's predictions with several methods and layers (HTML + JSON)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import StagedDir
from ..data import load_dataset, stratified_subset
from ..errors import BadInput, require
from ..report import write_report
from ..training import resolve_device
from .base import (
    MODEL_HELP,
    DataOpt,
    DeviceOpt,
    RayAddressOpt,
    SeedOpt,
    TrustOpt,
    WeightsOpt,
    app,
    by_reference,
    check_out_option,
    console,
    done,
    num_gpus_option,
    open_model,
    progress_bar,
    shards_option,
    threads_option,
)


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _pick(ds, n: int, seed: int):
    require(1 <= n <= len(ds), f"--n must be in 1..{len(ds)}, got {n}")
    if n >= ds.num_classes * 2:
        return stratified_subset(ds, n, seed)
    return ds.sample(n, seed)


@app.command()
def saliency(model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
             data: str = DataOpt, weights: Path = WeightsOpt, trust_code: bool = TrustOpt,
             methods: str = typer.Option("gradcam,eigencam,normgrad", "--methods",
                                         help="Comma-separated: gradcam, eigencam, eigengradcam, normgrad, "
                                              "normgrad-3x3, normgrad-proper, normgrad-bias, normgrad-selective; "
                                              "prefix meta- for meta-saliency (e.g. meta-normgrad)."),
             layers: str = typer.Option("", "--layers", help="Comma-separated layer names (default: the model's "
                                                             "CAM layer). See `workbench info MODEL`."),
             n: int = typer.Option(16, "--n", help="Number of images (a seeded stratified sample)."),
             target: str = typer.Option("predicted", "--target",
                                        help="Class to explain: predicted, true, or a class index."),
             out: Path = typer.Option(Path("runs/saliency"), "--out", "-o", help="Folder for the report.",
                                      callback=check_out_option),
             combine: str = typer.Option("geometric", "--combine", help="Layer combination: geometric or sum."),
             box: str = typer.Option("", "--box", help="Pointing-game box y0,x0,y1,x1 (pixels, half-open)."),
             sanity: bool = typer.Option(True, "--sanity/--no-sanity",
                                         help="Run the cascading model-randomization check."),
             steps: int = typer.Option(20, "--steps", help="Deletion/insertion steps."),
             ray_address: str | None = RayAddressOpt,
             shards: int | None = shards_option("The maps and metrics do not depend on it."),
             threads: int | None = threads_option(None, "shard"),
             num_gpus: float = num_gpus_option("shard"),
             seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Saliency maps (Grad-CAM, Eigen-CAM, NormGrad, ...) per method and layer, with metrics."""
    from ..saliency import explain

    dev = resolve_device(device)
    ds = load_dataset(data)
    loaded = open_model(model, ds, weights=weights, trust_code=trust_code, device=dev, what=data)
    sub = _pick(ds, n, seed)
    meths = _split(methods)
    lays = _split(layers) or None
    if target == "predicted":
        tgt = None
    elif target == "true":
        tgt = sub.labels
    else:
        try:
            tgt = int(target)
        except ValueError:
            raise BadInput(f"--target must be predicted, true or a class index, got {target!r}") from None
    boxes = None
    if box:
        try:
            boxes = tuple(int(v) for v in _split(box))
        except ValueError:
            raise BadInput(f"--box must be four integers y0,x0,y1,x1, got {box!r}") from None
        require(len(boxes) == 4, f"--box must be four integers y0,x0,y1,x1, got {box!r}")
    if ray_address is not None:  # bad names fail here, before Ray starts
        from ..saliency.explain import check_methods

        check_methods(loaded.model, meths, lays, ds.input_shape)
    net, images = by_reference(loaded, sub.images, model=model, data=data, weights=weights, trust_code=trust_code,
                               ds=ds, subset=sub, ray_address=ray_address)
    with progress_bar("saliency") as progress:
        res = explain(net, images, meths, lays, tgt, labels=sub.labels, class_names=ds.class_names,
                      boxes=boxes, sanity=sanity, combine=combine, n_steps=steps, progress=progress, shards=shards,
                      ray_address=ray_address, threads=threads, num_gpus=num_gpus, device=dev)
    with StagedDir(out) as stage:
        paths = stage.final(write_report(res, stage, title=f"Saliency: {', '.join(meths)} on {data}"))
    from rich.table import Table

    cols, rows = res.metrics_table()
    t = Table(title="saliency metrics")
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r])
    console.print(t)
    done(paths)
