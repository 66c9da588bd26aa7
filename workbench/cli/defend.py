"""``workbench defend nab`` (attack, detect, NAB-train, evaluate, report) and ``workbench detect``
(poison detection on a user's own suspected dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ..atomic import StagedDir, atomic_write_text
from ..errors import BadInput, require
from ..report import write_report
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
    defend_app,
    done,
    open_model,
    progress_bar,
)


@defend_app.command("nab")
def nab(data: str = DataOpt,
        attack: str = typer.Option("badnets", "--attack", help="Attack to defend against: badnets or blended."),
        rate: float = typer.Option(0.05, "--rate", help="Poisoned share of the training set."),
        target: int = typer.Option(0, "--target", help="Backdoor target class."),
        detector: str = typer.Option("spectral", "--detector", help="Poison detector: lga, spectral or ac."),
        ratio: float = typer.Option(0.05, "--ratio", help="Isolation ratio, in (0, 0.5]."),
        layer: str = typer.Option("head-input", "--layer", help="Feature layer of spectral / ac: head-input "
                                  "(the input of the first fully connected layer), a layer name, or "
                                  "penultimate."),
        pseudo: str = typer.Option("vd", "--pseudo", help="Pseudo labels: vd (clean-subset model) or nc "
                                   "(nearest class centre in SimCLR feature space)."),
        alpha: float = typer.Option(0.15, "--alpha", help="Blend strength of the blended attack."),
        epochs: int = typer.Option(0, "--epochs", help="Training epochs (0 = the architecture's default)."),
        arch: str = typer.Option("cnn", "--arch", help=ARCH_HELP),
        baselines: bool = typer.Option(True, "--baselines/--no-baselines",
                                       help="Also run the remove-detected-and-retrain baseline."),
        out: Path = typer.Option(Path("runs/nab"), "--out", "-o", help="Folder for the report and NAB model.",
                                 callback=check_out_option),
        seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Run NAB end to end: poison, train the victim, detect, pseudo-label, stamp, retrain, evaluate."""
    from defenses.nab import run_nab

    from ..models import save_model

    with progress_bar(f"NAB against {attack} on {data}") as progress:
        res = run_nab(data, attack, rate, target, seed=seed, detector=detector, ratio=ratio,
                      layer=layer, pseudo=pseudo,
                      epochs=epochs or None, arch=arch, device=device, alpha=alpha, baselines=baselines,
                      progress=progress)
    from ..models import ModelCard

    card = ModelCard(arch=arch, input_shape=tuple(res.input_shape), class_names=res.class_names,
                     provenance={**res.provenance, "defense": "NAB", "stamp_at_test_time": res.defense_trigger,
                                 "clean_accuracy": res.nab.clean_accuracy,
                                 "attack_success_rate": res.nab.attack_success_rate})
    with StagedDir(out) as stage:
        save_model(res.model, stage, card)
        paths = stage.final(write_report(res, stage, title=f"NAB against {attack} on {data}"))
    for r in res.rows():
        console.print(f"{r.defense:<28} CA {100 * r.clean_accuracy:6.2f}%  ASR {100 * r.attack_success_rate:6.2f}%  "
                      f"RA {100 * r.robust_accuracy:6.2f}%  DER {'  —  ' if r.der is None else f'{r.der:.3f}'}")
    console.print("the NAB model expects the defensive trigger stamped on every input: "
                  f"{res.defense_trigger}")
    done({"model": out / "model.safetensors", **paths})


def _read_indices(path: Path) -> np.ndarray:
    """Ground-truth poisoned indices from .npy (no pickles) or a text/CSV file of integers."""
    require(path.exists(), f"truth file {path} does not exist")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().replace(",", " ").split()
            arr = np.array([int(float(t)) for t in text], dtype=np.int64)
    except (ValueError, OSError, SyntaxError) as exc:
        raise BadInput(f"cannot read poisoned indices from {path}: {exc}") from None
    arr = np.asarray(arr).reshape(-1)
    if arr.dtype == bool:
        arr = np.nonzero(arr)[0]
    require(np.issubdtype(arr.dtype, np.integer), f"{path}: indices must be integers (or a boolean mask)")
    return arr.astype(np.int64)


@app.command("detect")
def detect_cmd(data: str = DataOpt,
               model: str = typer.Option(None, "--model", "-m", help="Model trained on the suspected data (needed "
                                         "by spectral and ac; lga trains a fresh copy of its architecture). "
                                         + MODEL_HELP),
               weights: Path = WeightsOpt, trust_code: bool = TrustOpt,
               method: str = typer.Option("lga", "--method", help="lga, spectral or ac."),
               ratio: float = typer.Option(0.05, "--ratio", help="Isolation ratio, in (0, 0.5]."),
               layer: str = typer.Option(None, "--layer", help="Feature layer (default: penultimate; "
                                         "head-input: the input of the first fully connected layer)."),
               lga_epochs: int = typer.Option(2, "--lga-epochs", help="Flooded-loss epochs of LGA."),
               arch: str = typer.Option("cnn", "--arch", help="Architecture LGA trains when no --model is given. "
                                        + ARCH_HELP),
               truth: Path = typer.Option(None, "--truth", help="Known poisoned indices (.npy or text) to score "
                                          "precision, recall and AUROC."),
               out: Path = typer.Option(Path("runs/detect"), "--out", "-o", help="Folder for the report.",
                                        callback=check_out_option),
               seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Find suspected poisoned samples in a dataset; writes a report and flagged.csv (index, score)."""
    from defenses.detectors import check_ratio, detect, summarize_detection

    from ..data import load_dataset

    check_ratio(ratio)
    method = method.lower()
    ds = load_dataset(data)
    net = None
    if model is not None:
        loaded = open_model(model, ds, weights=weights, trust_code=trust_code, device=device, what=data)
        net = loaded.model
        if method == "lga":
            require(loaded.spec is not None, f"LGA trains a fresh copy of the model's architecture, which cannot be "
                                             f"rebuilt from {model} ({loaded.card.arch}); give --arch instead")
            arch = loaded
    elif method in ("spectral", "ac"):
        raise BadInput(f"--method {method} needs --model, a model trained on the suspected data")
    elif method == "lga":
        console.print(f"LGA trains a fresh {arch} on the data (no --model given; pass --model to train your "
                      "own architecture)")
    idx = _read_indices(truth) if truth is not None else None
    if idx is not None:
        require(len(idx) == 0 or (idx.min() >= 0 and idx.max() < len(ds)),
                f"poisoned indices must lie in 0..{len(ds) - 1}")
    with progress_bar(f"{method} detection on {data}") as progress:
        res = detect(method, ds, net, ratio, layer=layer, seed=seed, device=device, lga_epochs=lga_epochs,
                     arch=arch, poisoned_indices=idx, progress=progress)
    summary = summarize_detection(res, ds, idx)
    with StagedDir(out) as stage:
        paths = stage.final(write_report(summary, stage, title=f"Poison detection ({method}) on {data}"))
        atomic_write_text(stage / "flagged.csv",
                          "index,score\n" + "".join(f"{int(i)},{float(res.scores[i]):.6g}\n" for i in res.flagged))
    csv = out / "flagged.csv"
    msg = f"flagged {len(res.flagged)} of {len(ds)} samples"
    if res.quality is not None:
        q = res.quality
        msg += f": precision {100 * q.precision:.1f}%, recall {100 * q.recall:.1f}%, AUROC {q.auroc:.3f}"
    console.print(msg)
    done({"flagged": csv, **paths})
