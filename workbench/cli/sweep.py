"""``workbench sweep SWEEP.toml --out DIR``: a grid of one command's runs, serially or on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from ..sweep import SWEEP_COMMANDS, run_sweep
from .base import RayAddressOpt, app, console, done, num_gpus_option, progress_bar, threads_option


@app.command()
def sweep(spec: Path = typer.Argument(..., metavar="SWEEP.toml",
                                      help=f"TOML: command ({', '.join(SWEEP_COMMANDS)}), [params], [grid]."),
          out: Path = typer.Option(..., "--out", "-o", help="Folder for runs/, results.csv/json, plots and the "
                                                            "report; re-running skips finished runs."),
          ray_address: str = RayAddressOpt,
          threads: int = threads_option(1, "run"),
          num_gpus: float = num_gpus_option("run", 'give device="cuda" in [params]')) -> int:
    """Run every combination of a grid of parameters, gather the runs' metrics, plot them, report."""
    with progress_bar(f"sweep {spec.name}") as progress:
        res = run_sweep(spec, out, ray_address=ray_address, threads=threads, num_gpus=num_gpus, progress=progress)
    console.print(f"{len(res.rows)} runs: {res.n_run} ran, {res.n_skipped} already finished, "
                  f"{res.n_failed} failed ({res.seconds:.1f} s)")
    for r in res.rows:
        if r["status"] != "ok":
            console.print(f"[red]failed[/red] {r['key']}: {r.get('error', '')}")
    done({"table": out / "results.csv", "report": out / "report.html"})
    return 1 if res.n_failed else 0
