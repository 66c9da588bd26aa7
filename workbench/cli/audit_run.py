"""``workbench audit run``: every audit check on a model and its data; parse, call workbench.audit, render."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..atomic import StagedDir, atomic_write_text
from ..data import load_dataset
from ..errors import BadInput
from ..report import write_report
from .base import (
    MODEL_HELP,
    STATE,
    DeviceOpt,
    SeedOpt,
    TrustOpt,
    WeightsOpt,
    audit_app,
    check_out_option,
    console,
    done,
    open_model,
)

#: --fail-on value → the condition verdicts that exit 3.
GATES = {"fail": ("fail",), "inconclusive": ("fail", "inconclusive"), "warn": ("fail", "inconclusive", "warn")}
STYLE = {"pass": "green", "warn": "yellow", "inconclusive": "magenta", "fail": "red", "skipped": "dim"}


def read_config(path: Path | None) -> dict:
    """``audit.toml``: one table per check, ``[poison] max_false_alarm = 0.01``."""
    if path is None:
        return {}
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise BadInput("--config needs Python >= 3.11 (tomllib) or the tomli package") from None
    if not path.is_file():
        raise BadInput(f"--config {path}: no such file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"--config {path}: not valid TOML ({exc})") from None


def _checks_help() -> str:
    from ..audit import CHECKS

    return ", ".join(CHECKS)


@audit_app.command("run")
def run_cmd(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    data: str = typer.Option(..., "--data", "-d", help="The model's training data (a dataset spec: mnist10k, "
                                                        "digits, npz:PATH, folder:PATH, idx:IMAGES,LABELS)."),
    test: str | None = typer.Option(None, "--test", help="A clean test set (dataset spec); default: the model's "
                                                        "held-out split of --data from its card."),
    checks: str | None = typer.Option(None, "--checks", help="Comma-separated checks (default: all whose needs "
                                                            "are met)."),
    config: Path | None = typer.Option(None, "--config", help="TOML file of per-check parameters and thresholds, "
                                                             "e.g. [poison] max_false_alarm = 0.01."),
    fail_on: str = typer.Option("inconclusive", "--fail-on",
                                help="Exit 3 when a condition is at least this severe: 'fail', 'inconclusive' "
                                     "(default: a check that could not decide is not a pass) or 'warn'."),
    as_json: bool = typer.Option(False, "--json", help="Print the machine-readable summary on stdout."),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o", help="Folder for report.json/html and suspects.csv.",
                             callback=check_out_option),
    weights: Path | None = WeightsOpt, trust_code: bool = TrustOpt,
    seed: int = SeedOpt, device: str = DeviceOpt) -> None:
    """Audit a model and its data with every check; exit 3 when a condition fails or is inconclusive (each reason
    printed)."""
    from ..audit import CHECKS, audit
    from ..audit.base import select_checks, validate_config

    if fail_on not in GATES:
        raise BadInput(f"--fail-on must be one of {', '.join(GATES)}, got {fail_on!r}")
    names = select_checks(checks) if checks is not None else None
    cfg = read_config(config)
    validate_config(cfg, names or list(CHECKS))  # unknown keys and bad values: exit 2 before any work
    ds = load_dataset(data)
    test_ds = load_dataset(test) if test is not None else None
    loaded = open_model(model, ds, weights=weights, trust_code=trust_code, device=device)
    current = {"name": None}

    def progress(check: str, fraction: float, message: str) -> None:
        if STATE.quiet:
            return
        if current["name"] != check:
            current["name"] = check
            console.print(f"[bold]{check}[/bold] …")
        if fraction >= 1.0:
            console.print(f"  {check}: {message}")

    report = audit(loaded, ds, names, cfg, test=test_ds, seed=seed, device=device, progress=progress)
    with StagedDir(out) as stage:
        paths = write_report(report, stage, title=f"Audit: {report.model} on {report.data}")
        if report.suspects is not None:
            paths["suspects"] = atomic_write_text(stage / "suspects.csv", report.suspects.csv())
        paths["summary"] = atomic_write_text(stage / "summary.json", json.dumps(report.summary(), indent=2))
        paths = stage.final(paths)
    table = Table(title=f"audit: {report.verdict}")
    for col in ("check", "verdict", "key figure", "reason"):
        table.add_column(col)
    for check, verdict, key, reason in report.verdict_rows():
        table.add_row(check, f"[{STYLE[verdict]}]{verdict}[/{STYLE[verdict]}]", key, reason)
    console.print(table)
    done(paths)
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
    gate = GATES[fail_on]
    bad = [(o.check, c) for o in report.outcomes for c in o.conditions if c.verdict in gate]
    if bad:
        for check, c in bad:
            console.print(f"[red]{check}: {c.name} {c.verdict}:[/red] {c.reason}")
        console.print(f"[red]audit: {len(bad)} condition(s) at or over --fail-on {fail_on}: exit 3[/red]")
        raise typer.Exit(3)
