"""``workbench audit labels`` and ``workbench audit apply-review``: parse, call workbench.labels, render."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ..atomic import StagedDir, atomic_write, atomic_write_text
from ..data import load_dataset
from ..errors import BadInput, require
from ..labels import (
    BATCH_SIZE,
    BATCHED_ABOVE,
    DEFAULT_CALIBRATE,
    DEFAULT_FOLDS,
    DEFAULT_SEEDS,
    DEFAULT_TTA,
    FILTER_BY,
    RANK_BY,
    apply_review,
    audit_labels,
    load_review,
    save_corrected,
)
from ..report import write_report
from .base import (
    DataOpt,
    DeviceOpt,
    RayAddressOpt,
    SeedOpt,
    audit_app,
    check_out_option,
    console,
    done,
    num_gpus_option,
    open_model,
    progress_bar,
    threads_option,
)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)


def _model_for(ds, spec, data: str):
    """A saved model (any ``--model`` spec) that fits the dataset: its shape, channels and classes are
    checked against it (a 3-channel model on 1-channel data is bad input)."""
    return open_model(str(spec), ds, what=data).model


@audit_app.command("labels")
def labels_cmd(
    data: str | None = typer.Option(None, "--data", "-d",
                                    help="Dataset spec: mnist10k (default), digits, npz:PATH, folder:PATH, "
                                         "idx:IMAGES,LABELS. Leave out with --labels."),
    labels: Path | None = typer.Option(None, "--labels",
                                       help="Audit labels without images: a .npy of integer labels (N), with "
                                            "--pred-probs (N×K), as cleanlab takes them."),
    class_names: str | None = typer.Option(None, "--class-names",
                                           help="Comma-separated class names for --labels (default 0..K-1)."),
    model: str = typer.Option("cnn", "--model", "-m",
                              help="Zoo architecture trained per fold (cnn, resnet), or a saved model folder/file "
                                   "for --method embeddings."),
    pred_probs: Path | None = typer.Option(None, "--pred-probs",
                                           help="Out-of-sample probabilities you already have (.npy, N×K); "
                                                "skips training."),
    method: str = typer.Option("kfold", "--method", help="kfold (train per fold) or embeddings (logistic "
                                                         "regression on a trained model's penultimate features)."),
    folds: int = typer.Option(DEFAULT_FOLDS, "--folds", "-k", help="Cross-validation folds (stratified, seeded)."),
    epochs: int = typer.Option(0, "--epochs", help="Training epochs per model (0 = default: 2 for cnn)."),
    seeds: int = typer.Option(DEFAULT_SEEDS, "--seeds",
                              help="Models trained per fold (different seeds), their probabilities averaged."),
    tta: bool = typer.Option(DEFAULT_TTA, "--tta/--no-tta",
                             help="Average each model's probabilities over 1-pixel shifts of the image."),
    calibrate: bool = typer.Option(DEFAULT_CALIBRATE, "--calibrate/--no-calibrate",
                                   help="Temperature-scale each fold, cross-fitted on its held-out examples."),
    filter_by: str | None = typer.Option(None, "--filter-by",
                                         help="cleanlab filter_by (default prune_by_noise_rate), or 'paper' (the CL "
                                              f"paper's count of errors, then the lowest margins): {', '.join(FILTER_BY)}."),
    rank_by: str = typer.Option("self_confidence", "--rank-by", help=f"Label quality score: {', '.join(RANK_BY)}."),
    outliers: Path | None = typer.Option(None, "--outliers",
                                         help="Saved model whose penultimate features are used for outlier and "
                                              "near-duplicate detection."),
    out: Path = typer.Option(Path("runs/label-audit"), "--out", "-o", help="Folder for the report.",
                             callback=check_out_option),
    fail_above: float | None = typer.Option(None, "--fail-above",
                                            help="Exit with code 3 when the estimated error rate exceeds RATE "
                                                 "(a fraction, e.g. 0.02)."),
    n_jobs: int = typer.Option(1, "--n-jobs", help="cleanlab worker processes."),
    batched: bool | None = typer.Option(None, "--batched/--in-memory",
                                        help="Check labels batch by batch over memory-mapped .npy files (cleanlab's "
                                             "find_label_issues_batched; filter_by low_self_confidence or "
                                             "low_normalized_margin). Default: batched above "
                                             f"{BATCHED_ABOVE:,} probabilities (N×K)."),
    batch_size: int = typer.Option(BATCH_SIZE, "--batch-size", help="Rows per batch of the batched check."),
    ray_address: str | None = RayAddressOpt,
    threads: int | None = threads_option(None, "fold"),
    num_gpus: float = num_gpus_option("fold"),
    seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Find label errors with confident learning; write report.json/html, pred_probs.npy and review.csv.

    With --labels and --pred-probs no images are needed (and no pred_probs.npy is written: it is the input)."""
    if fail_above is not None:
        require(0.0 <= fail_above <= 1.0, f"--fail-above must be a fraction in [0, 1], got {fail_above}")
    if labels is not None:
        require(data is None, "give --data (images and labels) or --labels (labels alone), not both")
        require(pred_probs is not None, "--labels needs --pred-probs: the out-of-sample probabilities (.npy, N×K)")
        require(outliers is None, "--outliers needs images: use --data")
        names = [c.strip() for c in class_names.split(",")] if class_names else None
        with progress_bar(f"auditing labels in {labels.name}") as progress:
            audit = audit_labels(labels, pred_probs, class_names=names, filter_by=filter_by, rank_by=rank_by,
                                 n_jobs=n_jobs, batched=batched, batch_size=batch_size, ray_address=ray_address,
                                 progress=progress)
        title = f"Label audit: {labels.name}"
    else:
        require(class_names is None, "--class-names is for --labels; a dataset names its own classes")
        ds = load_dataset(data or "mnist10k")
        net = None
        if method == "embeddings" and pred_probs is None:
            net = _model_for(ds, model, ds.name)
        emb = _model_for(ds, outliers, ds.name) if outliers is not None else (True if net is not None else False)
        with progress_bar(f"auditing labels of {ds.name}") as progress:
            audit = audit_labels(ds, pred_probs=pred_probs, model=net if net is not None else model, method=method,
                                 folds=folds, epochs=epochs or None, seeds=seeds, tta=tta, calibrate=calibrate,
                                 filter_by=filter_by, rank_by=rank_by,
                                 embeddings=emb, n_jobs=n_jobs, batched=batched, batch_size=batch_size, seed=seed,
                                 device=device, ray_address=ray_address, threads=threads, num_gpus=num_gpus,
                                 progress=progress)
        title = f"Label audit: {ds.name}"
    with StagedDir(out) as stage:  # report, probabilities and review sheet replace the folder as one unit
        paths = write_report(audit, stage, title=title)
        if labels is None:
            paths["pred_probs"] = atomic_write(stage / "pred_probs.npy", lambda p: _save_npy(p, audit.pred_probs))
        paths["review"] = atomic_write_text(stage / "review.csv", audit.review_template())
        paths = stage.final(paths)
    console.print(f"out-of-sample accuracy [bold]{100 * audit.out_of_sample_accuracy:.2f}%[/bold]; "
                  f"estimated label errors [bold]{audit.estimated_errors}[/bold] "
                  f"({100 * audit.estimated_error_rate:.2f}%, {audit.estimate_method}); "
                  f"flagged [bold]{audit.num_flagged}[/bold] ({audit.filter_by}{', batched' if audit.batched else ''}); "
                  f"{audit.seconds_total:.1f} s (cleanlab {audit.seconds_cleanlab:.2f} s)")
    done(paths)
    if fail_above is not None and audit.estimated_error_rate > fail_above:
        console.print(f"[red]estimated error rate {audit.estimated_error_rate:.4f} exceeds --fail-above "
                      f"{fail_above}[/red]")
        raise typer.Exit(3)


@audit_app.command("apply-review")
def apply_review_cmd(
    data: str = DataOpt,
    review: Path = typer.Option(..., "--review", "-r",
                                help="CSV (index,verdict[,given,suggested]) or JSON of index → given | suggested "
                                     "| both | neither."),
    out: Path = typer.Option(..., "--out", "-o", help="Corrected dataset (.npz)."),
    audit: Path | None = typer.Option(None, "--audit", help="The audit's folder (its pred_probs.npy gives the "
                                                            "suggested labels the review file lacks)."),
    keep_ambiguous: bool = typer.Option(False, "--keep-ambiguous",
                                        help="Keep 'both'/'neither' examples (unchanged) instead of dropping them."),
) -> None:
    """Apply reviewer verdicts: write the corrected dataset and print the validated precision."""
    ds = load_dataset(data)
    rev = load_review(review)
    suggested = None
    if audit is not None:
        pp_path = audit / "pred_probs.npy" if audit.is_dir() else audit
        if not pp_path.is_file():
            raise BadInput(f"no pred_probs.npy in {audit}")
        from ..labels import load_pred_probs

        suggested = load_pred_probs(pp_path, len(ds), ds.num_classes).argmax(1)
    corr = apply_review(ds.labels, ds.num_classes, rev, suggested=suggested, drop_ambiguous=not keep_ambiguous)
    path = save_corrected(ds, corr, out)
    console.print(f"reviewed {corr.reviewed}: " + ", ".join(f"{k} {v}" for k, v in corr.counts.items())
                  + f"; validated precision [bold]{corr.validated_precision:.3f}[/bold]; "
                  f"{len(corr.changed)} labels changed, {len(corr.dropped)} examples dropped")
    done({"corrected": path})
