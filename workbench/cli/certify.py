"""``workbench certify`` (randomized smoothing or interval bounds) and ``workbench attack availability``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import StagedDir
from ..errors import require
from .base import (
    MODEL_HELP,
    DataOpt,
    DeviceOpt,
    RayAddressOpt,
    SeedOpt,
    TrustOpt,
    WeightsOpt,
    _check_seed,
    app,
    attack_app,
    by_reference,
    check_fraction_option,
    check_out_option,
    console,
    done,
    num_gpus_option,
    open_model,
    progress_bar,
    shards_option,
    threads_option,
)


@app.command()
def certify(model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
            data: str = DataOpt, weights: Path = WeightsOpt, trust_code: bool = TrustOpt,
            method: str = typer.Option("smoothing", "--method", help="smoothing (L2) or ibp (L∞)."),
            sigma: float = typer.Option(0.25, "--sigma", help="Smoothing noise level σ (> 0)."),
            n0: int = typer.Option(100, "--n0", help="Smoothing: selection samples."),
            n: int = typer.Option(1000, "--n", help="Smoothing: estimation samples."),
            alpha: float = typer.Option(0.001, "--alpha", help="Smoothing: failure probability in (0, 1)."),
            eps: float = typer.Option(0.05, "--eps", help="IBP: L∞ radius ε (>= 0)."),
            limit: int = typer.Option(200, "--limit", min=0, help="Certify at most this many test images (0 = all)."),
            batch_size: int = typer.Option(1000, "--batch-size", help="Rows per forward pass."),
            out: Path = typer.Option(Path("runs/certify"), "--out", "-o", help="Folder for the report.",
                                     callback=check_out_option),
            fail_abstain: float = typer.Option(None, "--fail-abstain",
                                               callback=lambda v: check_fraction_option(v, "--fail-abstain"),
                                               help="Exit 3 if the abstain rate exceeds this share, in [0, 1]."),
            seed: int = typer.Option(0, "--seed", callback=_check_seed,
                                     help="Seed of the smoothing noise and of the --limit sample "
                                          "(the test split is the model's own, from its card)."),
            ray_address: str | None = RayAddressOpt,
            shards: int | None = shards_option("Smoothing draws its noise per shard: the same --shards and "
                                               "--seed give the same results serially and on Ray."),
            threads: int | None = threads_option(None, "shard"),
            num_gpus: float = num_gpus_option("shard"),
            device: str = DeviceOpt) -> None:
    """Certify a model's held-out predictions; report accuracy, abstain rate, certified accuracy vs radius, ACR.

    The images certified are the model's own held-out split when its card records one (the same seeded
    split as its training run), else every image of --data; --seed never changes the split.
    """
    from ..certify import certify_ibp, certify_smoothing
    from ..certify.intervals import check_eps
    from ..certify.smoothing import check_params
    from ..data import held_out, load_dataset
    from ..limits import check_batch
    from ..report import write_report

    require(method in ("smoothing", "ibp"), f"unknown method {method!r}; use smoothing or ibp")
    require(method == "smoothing" or (ray_address is None and shards is None),
            "--ray-address and --shards are for --method smoothing (interval bounds take one pass here)")
    if method == "smoothing":
        check_params(sigma=sigma, n0=n0, n=n, alpha=alpha)
    else:
        check_eps(eps)
    ds = load_dataset(data)
    check_batch(batch_size, ds.input_shape)
    loaded = open_model(model, ds, weights=weights, trust_code=trust_code, device=device, what=data)
    split = held_out(ds, loaded.card.provenance)
    test = split.data
    if 0 < limit < len(test):
        test = test.sample(limit, seed)
    console.print(f"certifying {len(test)} images: {split.note}")
    with progress_bar(f"certifying with {method}") as progress:
        if method == "smoothing":
            net, images = by_reference(loaded, test.images, model=model, data=data, weights=weights,
                                       trust_code=trust_code, ds=ds, subset=test, ray_address=ray_address)
            res = certify_smoothing(net, images, sigma, n0=n0, n=n, alpha=alpha, labels=test.labels,
                                    batch_size=batch_size, seed=seed, device=device, progress=progress,
                                    shards=shards, ray_address=ray_address, threads=threads, num_gpus=num_gpus)
        else:
            grid = sorted({eps * f for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)})
            res = certify_ibp(loaded.model, test.images, [eps], labels=test.labels, device=device, progress=progress)
            curve = certify_ibp(loaded.model, test.images, grid, labels=test.labels, device=device)
            res.extra["curve_radii"], res.extra["curve_accuracy"] = curve.certified_curve(grid)
    res.params["images"] = split.note
    with StagedDir(out) as stage:
        paths = stage.final(write_report(res, stage, title=f"Certification ({method}) of {model} on {data}"))
    console.print(f"accuracy {100 * res.accuracy:.1f}% · abstain {100 * res.abstain_rate:.1f}% · "
                  f"ACR {res.average_certified_radius:.3f} on {len(res)} inputs ({res.seconds:.1f} s)")
    done(paths)
    if fail_abstain is not None and res.abstain_rate > fail_abstain:
        console.print(f"[red]abstain rate {100 * res.abstain_rate:.1f}% is over --fail-abstain "
                      f"{100 * fail_abstain:g}%[/red]: exit 3")
        raise typer.Exit(3)


@attack_app.command("availability")
def availability(data: str = DataOpt,
                 certifier: str = typer.Option("smoothing", "--certifier", help="smoothing or ibp."),
                 rate: float = typer.Option(0.01, "--rate", help="Share of the training set poisoned."),
                 sigma: float = typer.Option(0.25, "--sigma", help="Smoothing σ (training and certification)."),
                 eps: float = typer.Option(0.1, "--eps", help="IBP ε (training and certification)."),
                 n0: int = typer.Option(100, "--n0"), n: int = typer.Option(1000, "--n"),
                 alpha: float = typer.Option(0.001, "--alpha"),
                 n_test: int = typer.Option(200, "--n-test", help="Test images certified (clean and triggered)."),
                 epochs: int = typer.Option(0, "--epochs", help="Training epochs (0 = default)."),
                 width: int = typer.Option(0, "--width", help="CNN width (0 = the zoo default)."),
                 design: str = typer.Option("", "--design",
                                            help="masking (smoothing's default), noise-directions (IBP's default), "
                                                 "random-labels or gradient-matching (optimised)."),
                 num_labels: int = typer.Option(0, "--num-labels",
                                                help="Poison labels (0 = the design's default: all classes for masking)."),
                 craft_steps: int = typer.Option(100, "--craft-steps", help="Gradient-matching steps (optimised design)."),
                 patch: int = typer.Option(0, "--patch", help="Side of the mid-grey patch trigger (0 = the design's: "
                                                              "a centred ceil(0.65·side) square for masking, a 6 px "
                                                              "corner patch otherwise)."),
                 out: Path = typer.Option(Path("runs/availability"), "--out", "-o", help="Folder for the report.",
                                          callback=check_out_option),
                 seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Poison, train clean and poisoned victims, certify clean and triggered inputs, write the report."""
    from attacks.availability import (
        DEFAULT_DESIGN,
        DESIGNS,
        MatchingOptions,
        default_trigger,
        masking_trigger,
        run_availability,
    )

    from ..data import load_dataset
    from ..report import write_report

    require(certifier in ("smoothing", "ibp"), f"unknown certifier {certifier!r}; use smoothing or ibp")
    design = design or DEFAULT_DESIGN[certifier]
    require(design in DESIGNS, f"unknown design {design!r}; use one of {', '.join(DESIGNS)}")
    require(not (design == "masking" and certifier == "ibp"),
            "the masking design is built against smoothing; for IBP use noise-directions")
    require(patch >= 0, f"--patch must be >= 0, got {patch}")
    require(num_labels == 0 or num_labels >= 2, f"--num-labels must be >= 2 (or 0 for the default), got {num_labels}")
    if certifier == "smoothing":
        from ..certify.smoothing import check_params

        check_params(sigma=sigma, n0=n0, n=n, alpha=alpha)
    else:
        from ..certify.intervals import check_eps

        require(check_eps(eps) > 0, f"epsilon must be > 0 for the IBP attack, got {eps}")
    ds = load_dataset(data)
    if not patch:
        trigger = None  # the design's own
    elif design == "masking":
        trigger = masking_trigger(*ds.image_size, side=patch)
        trigger.box(*ds.image_size)  # BadInput now if it does not fit
    else:
        trigger = default_trigger(patch)
        trigger.box(*ds.image_size)
    with progress_bar(f"availability attack on {certifier}") as progress:
        res = run_availability(ds, certifier, rate, trigger=trigger, seed=seed, sigma=sigma, eps=eps,
                               n0=n0, n=n, alpha=alpha, n_test=n_test, epochs=epochs or None, width=width or None,
                               design=design, num_labels=num_labels or None,
                               matching=MatchingOptions(steps=craft_steps), device=device,
                               progress=progress)
    with StagedDir(out) as stage:
        paths = stage.final(write_report(res, stage, title=f"Availability attack on {certifier} "
                                                          f"({100 * rate:g}% poison, {data})"))
    console.print(f"fallback on triggered inputs: poisoned model {100 * res.fallback('poisoned', 'triggered'):.1f}%, "
                  f"clean model {100 * res.fallback('clean', 'triggered'):.1f}%; on clean inputs: poisoned "
                  f"{100 * res.fallback('poisoned', 'clean'):.1f}%, clean {100 * res.fallback('clean', 'clean'):.1f}%")
    if certifier == "smoothing":
        from attacks.availability import REPORT_RADII

        console.print("not certified at " + "; ".join(
            f"r={r:g}: triggered {100 * res.not_certified('poisoned', 'triggered', r):.1f}%, clean (poisoned model) "
            f"{100 * res.not_certified('poisoned', 'clean', r):.1f}%, clean (clean model) "
            f"{100 * res.not_certified('clean', 'clean', r):.1f}%" for r in REPORT_RADII))
    done(paths)
