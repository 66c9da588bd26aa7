"""Does saliency reveal a backdoor? The pointing game with the trigger's box as ground truth.

For each saliency method (Grad-CAM, Eigen-CAM, NormGrad from :mod:`workbench.saliency`), explain
the backdoored model's and a clean model's predictions on triggered test images (true class not the
target) and count a hit when a map's maximum falls within the pointing game's tolerance of the
trigger box (Zhang et al., "Top-down Neural Attention by Excitation Backprop", 2016/2018, the
pointing game; tolerance 15 px at 224 px, scaled to the image). A backdoored model that predicts the
target because of the patch should point at the patch; a clean model should not. Only patch
triggers have a meaningful box (a blend covers the whole image: every map hits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.data import ImageDataset
from workbench.errors import require
from workbench.training import predict_logits

from .poison import triggered_test_set
from .triggers import Trigger

DEFAULT_METHODS = ("gradcam", "eigencam", "normgrad")


@dataclass
class BackdoorSaliency:
    """Pointing-game hit rates per method and model, and example maps (triggered images).

    Parameters
    ----------
    box : tuple of (int, int, int, int)
        The trigger's box ``(y0, x0, y1, x1)``.
    layer : str
        The layer the CAM methods used.
    rows : list of list
        One row per method and model: method, model, pointing-game hit rate, n, share predicted as
        the target.
    images : torch.Tensor
        Examples: clean then triggered, ``(2n, C, H, W)``.
    maps : dict of str to torch.Tensor, default {}
        ``"method/model"`` → maps ``(2n, H, W)`` for ``images``.
    provenance : dict, default {}
        How the run was made.

    Returns
    -------
    A BackdoorSaliency (a dataclass) holding these fields; ``hit_rate(method, model)`` looks one up.
    """

    box: tuple[int, int, int, int]
    layer: str
    rows: list[list]  # method, model, pointing-game hit rate, n, share predicted as the target
    images: torch.Tensor  # examples: clean then triggered, N×C×H×W
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # "method/model" -> 2N×H×W for `images`
    provenance: dict = field(default_factory=dict)

    def hit_rate(self, method: str, model: str) -> float:
        for r in self.rows:
            if r[0] == method and r[1] == model:
                return float(r[2])
        raise KeyError((method, model))

    def report_sections(self):
        from workbench.report import ImageGrid, Table

        secs = [Table(f"Pointing game on triggered test images (trigger box {self.box}, layer {self.layer})",
                      ["method", "model", "hit rate", "images", "predicted as target"],
                      [[m, mod, f"{100 * h:.1f}%", n, f"{100 * t:.1f}%"] for m, mod, h, n, t in self.rows],
                      note="Hit: the map's maximum lies within the tolerance of the trigger box.")]
        n = len(self.images) // 2
        for key, maps in self.maps.items():
            secs.append(ImageGrid(f"{key}: clean (top) and triggered (bottom)", self.images,
                                  overlays=maps, columns=max(1, n), scale=4))
        return secs


def backdoor_saliency(models: dict[str, nn.Module], test: ImageDataset, trigger: Trigger, target: int | None, *,
                      methods: Sequence[str] = DEFAULT_METHODS, layer: str | None = None, n_images: int = 200,
                      n_examples: int = 6, seed: int = 0) -> BackdoorSaliency:
    """Does saliency point at the trigger? The pointing game on triggered images.

    Pointing game of each method on each model (e.g. ``{"backdoored": m1, "clean": m2}``) with the
    trigger's box; maps explain each model's own prediction.

    Parameters
    ----------
    models : dict of str to nn.Module
        Name → model; all share ``layer``.
    test : ImageDataset
        The clean test set.
    trigger : Trigger
        The trigger.
    target : int or None
        The target class, or ``None`` for all-to-all.
    methods : sequence of str, default ("gradcam", "eigencam", "normgrad")
        Saliency methods (:func:`workbench.saliency.make_method` names).
    layer : str, optional
        The layer (default: the first model's ``default_cam_layer``).
    n_images : int, default 200
        Triggered test images scored (a seeded random subset).
    n_examples : int, default 6
        Example images kept with their maps.
    seed : int, default 0
        Seed of the subset.

    Returns
    -------
    BackdoorSaliency
        Hit rates per method and model, and example maps.

    Raises
    ------
    BadInput
        When no model is given, no layer can be found, or every test image is of the target class.
    """
    from workbench.saliency import make_method, pointing_game, upsample

    require(len(models) > 0, "give at least one model")
    xt, _, _ = triggered_test_set(test, trigger, target)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(xt), generator=gen)[:n_images]
    keep = torch.ones(len(test), dtype=torch.bool) if target is None else test.labels != target
    clean_all = test.images[keep]
    xt, xc = xt[idx], clean_all[idx]
    h, w = test.image_size
    box = trigger.box(h, w)
    first = next(iter(models.values()))
    layer = layer or getattr(first, "default_cam_layer", None)
    require(layer is not None, "name a layer: the model does not declare a default CAM layer")
    ex = torch.cat([xc[:n_examples], xt[:n_examples]])
    rows, maps = [], {}
    for name in methods:
        for mname, model in models.items():
            method = make_method(name, model, layer)
            m = upsample(method.attribute(xt, None), (h, w))
            pg = pointing_game(m, box)
            pred = predict_logits(model, xt).argmax(1)
            share = float((pred == target).float().mean()) if target is not None else float("nan")
            rows.append([name, mname, pg.accuracy, len(xt), share])
            maps[f"{name}/{mname}"] = upsample(method.attribute(ex, None), (h, w)).reshape(len(ex), h, w).detach()
    return BackdoorSaliency(box, layer, rows, ex, maps, {"methods": list(methods), "n_images": len(xt),
                                                          "seed": seed, "trigger": trigger.describe()})
