"""One call to explain a model's predictions: several methods × layers, metrics, a report.

``explain(model, images, methods=["gradcam", "eigencam", "normgrad"], layers=["relu2", "relu4"])``
returns a :class:`SaliencyResult` (maps resized to the input and normalised to [0, 1], the
metrics table, the layer combination per method) that :func:`workbench.report.write_report` turns
into HTML + JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..adapter import as_model
from ..errors import BadInput, require
from ..shards import ModelRef, resolve_images, resolve_model, run_shards
from .base import (
    LayerSaliency,
    check_inputs,
    check_target_length,
    combine_maps,
    eval_mode,
    resolve_default_layers,
    resolve_target,
    upsample,
)
from .eigencam import EigenCAM, EigenGradCAM
from .gradcam import GradCAM
from .meta import MetaSaliency
from .metrics import class_sensitivity, defined_mean, deletion_insertion, pointing_game, randomization_check
from .normgrad import NormGrad

#: Method names for ``explain``, the CLI and the app → (factory(model, layers), one-line description).
METHODS: dict[str, tuple[Callable[..., LayerSaliency], str]] = {
    "gradcam": (lambda m, l: GradCAM(m, l), "Grad-CAM (Selvaraju et al. 2017)"),
    "eigencam": (lambda m, l: EigenCAM(m, l), "Eigen-CAM, centred, first principal component (class-agnostic)"),
    "eigengradcam": (lambda m, l: EigenGradCAM(m, l), "Eigen-Grad-CAM: first PC of gradient ⊙ activation"),
    "normgrad": (lambda m, l: NormGrad(m, l, variant="identity"), "NormGrad, 1×1 virtual identity ‖z‖·‖g‖"),
    "normgrad-3x3": (lambda m, l: NormGrad(m, l, variant="identity3x3"), "NormGrad, 3×3 virtual identity"),
    "normgrad-proper": (lambda m, l: NormGrad(m, l, variant="proper"), "NormGrad on a real Conv2d's weights"),
    "normgrad-bias": (lambda m, l: NormGrad(m, l, variant="bias"), "NormGrad, virtual bias ‖g‖"),
    "normgrad-selective": (lambda m, l: NormGrad(m, l, variant="selective"), "selective NormGrad ‖max(0, z⊙g)‖"),
}
META_PREFIX = "meta-"


def method_names() -> list[str]:
    """Every name :func:`make_method` and :func:`explain` accept: the base methods, then ``meta-<name>``.

    Eigen-CAM, which ignores the target class, has no meta variant.

    Parameters: none

    Returns
    -------
    list of str
        The names of :data:`METHODS` in order, then their ``meta-`` variants.

    Examples
    --------
    >>> names = method_names()
    >>> names[:4], "meta-gradcam" in names, "meta-eigencam" in names
    (['gradcam', 'eigencam', 'eigengradcam', 'normgrad'], True, False)
    """
    return [*METHODS, *(META_PREFIX + k for k in METHODS if k not in ("eigencam",))]


def make_method(name: str, model: nn.Module, layers) -> LayerSaliency:
    """A saliency method by name, hooked on ``layers`` of ``model``.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS` or ``meta-<key>`` for meta-saliency (:class:`~workbench.saliency.meta.MetaSaliency`);
        case and surrounding spaces are ignored.
    model : nn.Module
        The model (an adapted one, see :func:`~workbench.adapter.as_model`).
    layers : str or sequence of str
        Layer name(s) in the model (``workbench info`` lists them).

    Returns
    -------
    LayerSaliency
        The method object (e.g. :class:`~workbench.saliency.gradcam.GradCAM`).

    Raises
    ------
    BadInput
        If the name is unknown, or a layer is not in the model.

    Examples
    --------
    >>> from workbench.models import architecture
    >>> net = architecture("cnn", 1, 10, 8)
    >>> type(make_method("normgrad", net, "relu4")).__name__, type(make_method("meta-gradcam", net, "relu4")).__name__
    ('NormGrad', 'MetaSaliency')
    >>> make_method("lime", net, "relu4")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: unknown saliency method 'lime'; choose from gradcam, eigencam, ...
    """
    key = name.strip().lower()
    meta = key.startswith(META_PREFIX)
    base = key[len(META_PREFIX):] if meta else key
    if base not in METHODS:
        raise BadInput(f"unknown saliency method {name!r}; choose from {', '.join(method_names())}")
    method = METHODS[base][0](model, layers)
    return MetaSaliency(method) if meta else method


@dataclass
class SaliencyResult:
    """Saliency maps per ``method@layer``, their metrics and provenance: what :func:`explain` returns.

    Every map is N×H×W at the input size, normalised to [0, 1] per image (an all-zero map stays zero).
    :func:`~workbench.report.write_report` turns the result into ``report.json`` and ``report.html``.

    Parameters
    ----------
    images : torch.Tensor
        The N×C×H×W images explained (on the CPU).
    methods : list of str
        Method names, in the order run.
    layers : list of str
        Layer names the maps were taken at.
    targets : list of int
        N explained classes.
    predictions : list of int
        N predicted classes.
    labels : list of int or None
        N true classes, when given (they only annotate the report).
    class_names : list of str
        K names.
    maps : dict of str to torch.Tensor
        ``"method@layer"`` → N×H×W maps in [0, 1].
    combined : dict of str to torch.Tensor, default {}
        Method → N×H×W maps combining every layer (only with more than one layer).
    combine_mode : str, default "geometric"
        How the layers were combined (``geometric`` or ``sum``).
    metrics : list of dict, default []
        One row per method and layer (and ``combined``): deletion AUC, insertion AUC, class sensitivity,
        and pointing game / randomization ρ when asked for.
    randomization : dict, default {}
        Method → the cascading randomization check's layers and ρ per layer.
    seconds : dict of str to float, default {}
        Method → wall time of its maps.
    boxes : list of list of int, optional
        The pointing-game boxes ``(y0, x0, y1, x1)``, when given.
    layouts : dict of str to str, default {}
        Layer → how its output was read as N×C×H×W (``nchw``, ``nhwc`` permuted, ``tokens (…)``).

    Returns
    -------
    A SaliencyResult (dataclass)
        With :meth:`map`, :meth:`metrics_table` and :meth:`report_sections`.
    """

    images: torch.Tensor
    methods: list[str]
    layers: list[str]
    targets: list[int]
    predictions: list[int]
    labels: list[int] | None
    class_names: list[str]
    maps: dict[str, torch.Tensor]
    combined: dict[str, torch.Tensor] = field(default_factory=dict)
    combine_mode: str = "geometric"
    metrics: list[dict] = field(default_factory=list)
    randomization: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    boxes: list[list[int]] | None = None
    #: How each layer's output was read as N×C×H×W: ``nchw``, ``nhwc`` (permuted), ``tokens (…)``.
    layouts: dict[str, str] = field(default_factory=dict)
    #: ``method@layer`` → metric → per-image values (``randomization``: N×steps), from which the rows
    #: of :attr:`metrics` are the means; kept so that shards' results merge into the same rows.
    _per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def map(self, method: str, layer: str) -> torch.Tensor:
        """The maps of one method at one layer.

        Parameters
        ----------
        method : str
            A method name in :attr:`methods`.
        layer : str
            A layer name in :attr:`layers`.

        Returns
        -------
        torch.Tensor
            N×H×W maps in [0, 1].

        Raises
        ------
        KeyError
            If that method or layer was not run.
        """
        return self.maps[f"{method}@{layer}"]

    def metrics_table(self) -> tuple[list[str], list[list]]:
        """The metrics as a table: column titles (with ↑ / ↓ for better) and rows, floats rounded to 4 places.

        The pointing-game and randomization columns appear only when measured; a missing or NaN value is
        ``—``.

        Parameters: none

        Returns
        -------
        tuple
            ``(columns, rows)``: a list of str and a list of lists, one row per method and layer.
        """
        cols = ["method", "layer", "deletion AUC ↓", "insertion AUC ↑", "class sensitivity ρ ↓"]
        has_pg = any("pointing game" in r for r in self.metrics)
        has_rand = any("randomization ρ (all layers)" in r for r in self.metrics)
        if has_pg:
            cols.append("pointing game ↑")
        if has_rand:
            cols.append("randomization ρ (all layers) ↓")
        keys = ["method", "layer", "deletion AUC", "insertion AUC", "class sensitivity", "pointing game",
                "randomization ρ (all layers)"]
        keys = keys[:5] + (["pointing game"] if has_pg else []) + (["randomization ρ (all layers)"] if has_rand else [])
        def fmt(v):
            if isinstance(v, float):
                return "—" if not np.isfinite(v) else round(v, 4)
            return "—" if v is None else v

        rows = [[fmt(r.get(k)) for k in keys] for r in self.metrics]
        return cols, rows

    def report_sections(self):
        """The report's sections: run metrics, metrics table, images, one overlay grid per map and
        combination, randomization tables and the boxes.

        Parameters: none

        Returns
        -------
        list
            :mod:`workbench.report` sections.
        """
        from ..report import ImageGrid, Metrics, Table, Text

        names = self.class_names
        scale = max(2, 96 // max(self.images.shape[-2:]))  # small images (8×8 digits) are shown larger
        cap = []
        for i, (t, p) in enumerate(zip(self.targets, self.predictions)):
            true = f"{names[self.labels[i]]}→" if self.labels is not None else ""
            cap.append(f"{true}{names[p]} (explained: {names[t]})")
        shown = [f"{l} ({self.layouts[l]})" if self.layouts.get(l, "nchw") != "nchw" else l for l in self.layers]
        secs = [Metrics("Saliency run", {"images": len(self.images), "methods": ", ".join(self.methods),
                                         "layers": ", ".join(shown),
                                         **{f"time {k} (s)": round(v, 3) for k, v in self.seconds.items()}})]
        if self.metrics:
            cols, rows = self.metrics_table()
            secs.append(Table("Metrics per method and layer", cols, rows,
                              note="Deletion/insertion: RISE AUC of the explained class's probability (lower / "
                                   "higher is better). Class sensitivity: Spearman ρ between the maps of the most "
                                   "and least likely class (lower is better). Pointing game: share of maps whose "
                                   "maximum hits the box. Randomization: Spearman ρ to the original maps once all "
                                   "parameter layers are re-initialised (lower is better)."))
        secs.append(ImageGrid("Images (true → predicted, explained class)", self.images, cap,
                              columns=min(8, len(self.images)), scale=scale))
        for key, m in self.maps.items():
            secs.append(ImageGrid(f"{key.replace('@', ' at ')}", self.images, cap, overlays=m,
                                  columns=min(8, len(self.images)), scale=scale))
        for meth, m in self.combined.items():
            secs.append(ImageGrid(f"{meth}: layers {' + '.join(self.layers)} combined ({self.combine_mode})",
                                  self.images, cap, overlays=m, columns=min(8, len(self.images)), scale=scale))
        for key, r in self.randomization.items():
            rows = [[lay, *[round(v, 4) for v in vals]] for lay, *vals in
                    zip(r["randomized"], *[r["rho"][l] for l in r["rho"]])]
            secs.append(Table(f"Model randomization (cascading, top down): {key}",
                              ["randomized down to", *[f"ρ at {l}" for l in r["rho"]]], rows))
        if self.boxes is not None:
            secs.append(Text("Pointing-game boxes", "(y0, x0, y1, x1) half-open: "
                             + "; ".join(str(tuple(b)) for b in self.boxes[:16])))
        return secs


def _metric_row(method: str, layer: str, values: dict[str, np.ndarray]) -> dict:
    """One row of :attr:`SaliencyResult.metrics`: the means of the per-image values."""
    row = {"method": method, "layer": layer, "deletion AUC": float(np.mean(values["deletion AUC"])),
           "insertion AUC": float(np.mean(values["insertion AUC"])),
           "class sensitivity": defined_mean(values["class sensitivity"])}
    if "pointing game" in values:
        row["pointing game"] = float(np.mean(values["pointing game"]))
    if "randomization" in values:
        row["randomization ρ (all layers)"] = defined_mean(values["randomization"][:, -1])
    return row


def explain(model: nn.Module, images: torch.Tensor, methods: Sequence[str] = ("gradcam", "eigencam", "normgrad"),
            layers: Sequence[str] | str | None = None, target=None, *, labels=None,
            class_names: Sequence[str] | None = None, metrics: bool = True, boxes=None, sanity: bool = False,
            sanity_layers: int | None = None, combine: str = "geometric", combine_weights=None, n_steps: int = 20,
            batch_size: int = 64, progress: Callable[[float, str], None] | None = None, shards: int | None = None,
            ray_address: str | None = None, threads: int | None = None, num_gpus: float = 0,
            device=None) -> SaliencyResult:
    """Explain ``images`` with each method at each layer (one forward and one backward pass per method).

    Parameters
    ----------
    model : nn.Module or callable
        Any model :func:`~workbench.adapter.as_model` takes.
    images : torch.Tensor
        N×C×H×W float images in [0, 1].
    methods : sequence of str, default ("gradcam", "eigencam", "normgrad")
        Names from :func:`method_names`.
    layers : str or sequence of str, optional
        Layer names; default the model's default CAM layer (``relu4`` for the zoo CNN, ``layer3`` for
        the zoo ResNet).
    target : None, int or sequence of int, optional
        The class to explain: None (the predicted class), one class for all, or one per image.
    labels : sequence of int, optional
        True classes; they only annotate the report.
    class_names : sequence of str, optional
        K names (default ``"0"``..``"K-1"``).
    metrics : bool, default True
        Measure deletion / insertion AUC (RISE) and class sensitivity per method and layer.
    boxes : sequence, optional
        ``(y0, x0, y1, x1)`` or N×4 boxes in input pixels (half-open): adds the pointing game.
    sanity : bool, default False
        Add the cascading model-randomization check (Adebayo et al. 2018).
    sanity_layers : int, optional
        Cap on the number of layers the randomization check re-initialises.
    combine : {"geometric", "sum"}, default "geometric"
        How each method's maps over several layers are combined.
    combine_weights : sequence of float, optional
        One non-negative weight per layer for the combination (default equal).
    n_steps : int, default 20
        Steps of the deletion / insertion curves.
    batch_size : int, default 64
        Images per forward and backward pass (maps are normalised per image, so they do not depend
        on it).
    progress : callable, optional
        ``progress(fraction, message)``, called per method (per shard when sharded).
    shards : int, optional
        Split the images into this many contiguous shards, each explained by :func:`explain_shard` as a
        unit of :func:`workbench.shards.run_shards` (default 1 serially; ``ceil(N / 256)`` on Ray).
        Maps, targets and predictions are per image and every metric is a mean of per-image values
        (the randomization check re-seeds each layer the same way in every shard), so the merged
        result equals the unsharded one up to float rounding, whatever the shard count; ``seconds``
        add up the shards' times.
    ray_address : str, optional
        ``"local"``, ``"auto"`` or ``"HOST:PORT"``: run the shards as Ray tasks (None: serially here).
    threads : int, optional
        Torch threads per shard.
    num_gpus : float, default 0
        GPUs per Ray task.
    device : str or torch.device, optional
        Where each shard runs the model; the model may be a :class:`~workbench.shards.ModelRef`
        (loaded by each shard) and the images a :class:`~workbench.shards.DataRef` (each shard reads
        its own rows).

    Returns
    -------
    SaliencyResult
        Maps, combinations, metrics, timings.

    Raises
    ------
    BadInput
        If no method is given, the images are not an N×C×H×W float tensor, a method or layer name is
        unknown, ``target`` or ``labels`` do not match the images, a target class is out of range, the
        number of class names differs from the model's outputs, or ``batch_size < 1``.

    Examples
    --------
    >>> import torch
    >>> from workbench.models import architecture
    >>> net = architecture("cnn", 1, 3, 8)
    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> res = explain(net, x, ["gradcam", "normgrad"], ["relu2", "relu4"], n_steps=4)
    >>> sorted(res.maps), res.map("gradcam", "relu4").shape
    (['gradcam@relu2', 'gradcam@relu4', 'normgrad@relu2', 'normgrad@relu4'], torch.Size([2, 8, 8]))
    >>> sorted(res.combined), len(res.metrics), res.metrics_table()[0][:3]
    (['gradcam', 'normgrad'], 6, ['method', 'layer', 'deletion AUC ↓'])
    """
    require(len(methods) > 0, "no saliency methods given")
    if ray_address is not None or (shards is not None and shards != 1):
        return _explain_sharded(model, images, list(methods), layers, target, labels=labels, class_names=class_names,
                                metrics=metrics, boxes=boxes, sanity=sanity, sanity_layers=sanity_layers,
                                combine=combine, combine_weights=combine_weights, n_steps=n_steps,
                                batch_size=batch_size, progress=progress, shards=shards, ray_address=ray_address,
                                threads=threads, num_gpus=num_gpus, device=device)
    model, images = resolve_model(model, device), resolve_images(images)
    model = as_model(model)
    require(isinstance(images, torch.Tensor) and images.ndim == 4,
            f"images must be an N×C×H×W tensor, got {getattr(images, 'shape', type(images).__name__)}")
    layers = resolve_default_layers(model, layers, tuple(images.shape[1:]))
    layers = [layers] if isinstance(layers, str) else list(layers)
    x = check_inputs(images, model)
    n = len(x)
    t = check_target_length(target, n)
    lab = None
    if labels is not None:
        lab = [int(v) for v in torch.as_tensor(labels).view(-1).tolist()]
        require(len(lab) == n, f"{n} images but {len(lab)} labels")
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, n, batch_size)])
    tgt = resolve_target(t, logits)
    k = logits.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    require(len(names) == k, f"{len(names)} class names for a model with {k} outputs")
    size = tuple(x.shape[-2:])
    built = [(m, make_method(m, model, layers)) for m in methods]  # validates names and layers first
    res = SaliencyResult(images=images.detach().cpu(), methods=list(methods), layers=list(built[0][1].layer_names),
                         targets=tgt.tolist(), predictions=logits.argmax(1).tolist(), labels=lab,
                         class_names=names, maps={}, combine_mode=combine,
                         boxes=None if boxes is None else torch.as_tensor(boxes).view(-1, 4).long().tolist())
    total = len(built)
    for i, (mname, method) in enumerate(built):
        if progress is not None:
            progress(i / total, f"{mname}")
        t0 = time.perf_counter()
        per_layer: dict[str, list[torch.Tensor]] = {lay: [] for lay in method.layer_names}
        combined: list[torch.Tensor] = []
        for b in range(0, n, batch_size):
            cap = method.capture(x[b:b + batch_size], tgt[b:b + batch_size])
            raw = method.maps_from(cap)
            res.layouts.update(cap.layouts)
            for lay in method.layer_names:
                per_layer[lay].append(upsample(raw[lay], size)[:, 0].cpu())
            if len(method.layer_names) > 1:
                combined.append(combine_maps([raw[l] for l in method.layer_names], size, mode=combine,
                                             weights=combine_weights)[:, 0].cpu())
            del cap, raw
        res.seconds[mname] = time.perf_counter() - t0
        for lay in method.layer_names:
            res.maps[f"{mname}@{lay}"] = torch.cat(per_layer[lay])
        if combined:
            res.combined[mname] = torch.cat(combined)
        if not metrics:
            continue
        cs = class_sensitivity(method, x) if method.uses_target else None
        rand = None
        if sanity:
            rc = randomization_check(method, x, tgt, max_layers=sanity_layers)
            rand = rc
            res.randomization[mname] = {"randomized": rc.randomized, "rho": rc.rho}
        keyed = [(lay, res.maps[f"{mname}@{lay}"]) for lay in method.layer_names]
        if mname in res.combined:
            keyed.append(("combined", res.combined[mname]))
        for lay, m in keyed:
            di = deletion_insertion(model, x, m[:, None], tgt, n_steps=n_steps)
            values = {"deletion AUC": di.deletion_auc, "insertion AUC": di.insertion_auc,
                      "class sensitivity": (cs.per_image[lay] if cs is not None and lay in cs.per_image else
                                            np.full(n, 1.0 if cs is None and lay != "combined" else np.nan))}
            if boxes is not None:
                values["pointing game"] = np.asarray(pointing_game(m, boxes).hits, dtype=np.float64)
            if rand is not None and lay in rand.per_image:
                values["randomization"] = rand.per_image[lay]
            res._per_image[f"{mname}@{lay}"] = values
            res.metrics.append(_metric_row(mname, lay, values))
    if progress is not None:
        progress(1.0, "done")
    return res


def explain_shard(model, images, start: int, *, device=None, **options) -> SaliencyResult:
    """One shard of a sharded :func:`explain`: its images explained with the same options.

    Parameters
    ----------
    model : nn.Module, callable, ModelAdapter or ModelRef
        The model, or a reference the shard loads on ``device``.
    images : torch.Tensor or DataRef
        The shard's images, or a reference the shard reads.
    start : int
        Position of the shard's first image in the whole set (the result does not depend on it).
    device : str or torch.device, optional
        Where a referenced model is loaded (default cpu).
    **options
        :func:`explain`'s other arguments, per-image ones cut to the shard.

    Returns
    -------
    SaliencyResult
        The shard's maps, per-image metric values and their means.
    """
    return explain(resolve_model(model, device), resolve_images(images), **options)


def check_methods(model, methods: Sequence[str], layers, input_shape: tuple[int, int, int]) -> None:
    """Build each method on ``model`` at ``layers`` (default: the model's CAM layer) without running it.

    For callers that hand the work to shards or Ray tasks: an unknown method or layer is bad input
    here, before any unit starts.

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The model.
    methods : sequence of str
        Method names (:func:`method_names`).
    layers : str, sequence of str or None
        The layers (None: the default CAM layer).
    input_shape : tuple of int
        ``(C, H, W)`` of the images.

    Returns
    -------
    None

    Raises
    ------
    BadInput
        For no methods, an unknown method name or a layer the model lacks.
    """
    require(len(methods) > 0, "no saliency methods given")
    model = as_model(model)
    chosen = resolve_default_layers(model, layers, tuple(input_shape))
    for name in methods:
        make_method(name, model, [chosen] if isinstance(chosen, str) else list(chosen))


def _explain_sharded(model, images, methods: list[str], layers, target, *, labels, boxes, shards, ray_address,
                     threads, num_gpus, device, progress, **options) -> SaliencyResult:
    """:func:`explain` over contiguous shards (:func:`workbench.shards.run_shards`), merged in input order."""
    if isinstance(images, torch.Tensor):
        require(images.ndim == 4, f"images must be an N×C×H×W tensor, got {tuple(images.shape)}")
    n = len(images)
    require(n >= 1, "no images to explain")
    t = check_target_length(target, n)
    per_target = t is not None and not isinstance(t, int)
    lab = None if labels is None else torch.as_tensor(labels).view(-1)
    require(lab is None or len(lab) == n, f"{n} images but {0 if lab is None else len(lab)} labels")
    box_rows = None if boxes is None else torch.as_tensor(boxes).view(-1, 4)
    per_box = box_rows is not None and len(box_rows) > 1
    require(not per_box or len(box_rows) == n, f"{n} images but {0 if box_rows is None else len(box_rows)} boxes")
    if not isinstance(model, ModelRef) and isinstance(images, torch.Tensor):  # bad names fail before any shard
        check_methods(model, methods, layers, tuple(images.shape[1:]))
    per_input = {"images": images, "labels": lab, **({"target": t} if per_target else {}),
                 **({"boxes": box_rows} if per_box else {})}
    common = {"model": model, "device": device, "methods": methods, "layers": layers, **options,
              **({} if per_target else {"target": t}), **({} if per_box or boxes is None else {"boxes": boxes})}
    parts = run_shards(explain_shard, n, per_input=per_input, common=common, shards=shards, ray_address=ray_address,
                       threads=threads, num_gpus=num_gpus, progress=progress)
    return _merge(parts, None if box_rows is None else box_rows.long().tolist())


def _merge(parts: list[SaliencyResult], boxes) -> SaliencyResult:
    """The shards' results as one, in input order; metric rows recomputed from the per-image values."""
    first = parts[0]
    res = SaliencyResult(images=torch.cat([p.images for p in parts]), methods=list(first.methods),
                         layers=list(first.layers), targets=[t for p in parts for t in p.targets],
                         predictions=[c for p in parts for c in p.predictions],
                         labels=None if first.labels is None else [c for p in parts for c in p.labels],
                         class_names=list(first.class_names),
                         maps={k: torch.cat([p.maps[k] for p in parts]) for k in first.maps},
                         combined={k: torch.cat([p.combined[k] for p in parts]) for k in first.combined},
                         combine_mode=first.combine_mode, boxes=boxes,
                         seconds={k: sum(p.seconds[k] for p in parts) for k in first.seconds})
    for p in parts:
        res.layouts.update(p.layouts)
    for key in first._per_image:
        values = {m: np.concatenate([p._per_image[key][m] for p in parts]) for m in first._per_image[key]}
        res._per_image[key] = values
        method, layer = key.split("@", 1)
        res.metrics.append(_metric_row(method, layer, values))
        if "randomization" in values:
            steps = values["randomization"]
            entry = res.randomization.setdefault(method, {"randomized": first.randomization[method]["randomized"],
                                                          "rho": {}})
            entry["rho"][layer] = [defined_mean(steps[:, k]) for k in range(steps.shape[1])]
    return res
