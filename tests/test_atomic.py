"""Outputs written as a unit: files with the umask's permissions, output folders staged beside ``--out``
and swapped in whole, leftovers of killed runs removed, and real ``workbench train`` processes
interrupted (SIGINT, SIGKILL) at several points leaving the previous run intact."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workbench.atomic as atomic
from workbench.atomic import StagedDir, atomic_write_text, clean_leftovers
from workbench.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umasks_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        p = atomic_write_text(tmp_path / "report.json", "{}")
        with StagedDir(tmp_path / "run") as stage:
            atomic_write_text(stage / "a.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == mode
    assert (tmp_path / "run" / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~umask


def _run_folder(path: Path, **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in {"report.json": "{}", **files}.items():
        (path / name.replace("_", ".")).write_text(text)
    return path


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.rglob(".*"))


@pytest.mark.parametrize("exchange", [True, False])
def test_staged_dir_replaces_the_run_as_a_unit(tmp_path, monkeypatch, exchange):
    if not exchange:  # systems without renameat2(RENAME_EXCHANGE): two renames
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = _run_folder(tmp_path / "run", model_safetensors="old weights", model_json="old card", report_html="old")
    with StagedDir(out) as stage:
        (stage / "report.json").write_text('{"new": 1}')
        (stage / "report.html").write_text("new")
        assert not (out / "report.html").read_text() == "new"  # nothing visible before the swap
    assert (out / "report.json").read_text() == '{"new": 1}' and (out / "report.html").read_text() == "new"
    # files of the previous run the new one did not write stay (a report written into a model's folder)
    assert (out / "model.safetensors").read_text() == "old weights" and (out / "model.json").read_text() == "old card"
    assert _hidden(tmp_path) == []


def test_a_failing_run_leaves_the_previous_one_and_no_stage(tmp_path):
    out = _run_folder(tmp_path / "run", model_json="old card")
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with StagedDir(out) as stage:
                (stage / "model.json").write_text("new card")
                raise exc
        assert (out / "model.json").read_text() == "old card" and (out / "report.json").read_text() == "{}"
        assert _hidden(tmp_path) == []


def test_out_must_be_a_replaceable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is an existing file"):
        StagedDir(tmp_path / "file")
    with pytest.raises(BadInput, match="is a file, not a folder"):
        StagedDir(tmp_path / "file" / "run")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(BadInput, match="holds other things than a workbench run"):
        StagedDir(tmp_path / "home")
    assert (tmp_path / "home" / "thesis.tex").read_text() == "years of work"
    with StagedDir(tmp_path / "new" / "deeper") as stage:  # missing parents are created at the swap
        (stage / "report.json").write_text("{}")
    assert (tmp_path / "new" / "deeper" / "report.json").exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_of_killed_runs_are_removed(tmp_path):
    out = _run_folder(tmp_path / "run", model_json="card")
    dead = _dead_pid()
    stale_stage = tmp_path / f".run.stage-{dead}-abcd1234"
    stale_stage.mkdir()
    (stale_stage / "model.safetensors").write_text("half")
    stale_tmp = out / f".model.safetensors.{dead}-0badf00d.tmp"
    stale_tmp.write_text("half")
    live = tmp_path / f".run.stage-{os.getpid()}-live0000"  # a running process's stage is left alone
    live.mkdir()
    other = tmp_path / ".bashrc"
    other.write_text("mine")
    removed = clean_leftovers(out)
    assert sorted(removed) == sorted([stale_stage, stale_tmp])
    assert live.exists() and other.exists() and (out / "model.json").read_text() == "card"


def test_a_swap_cut_between_two_renames_is_restored(tmp_path):
    """Without RENAME_EXCHANGE the swap is two renames; killed between them, the next run puts the old
    run back before anything else."""
    out = _run_folder(tmp_path / "run", model_json="card")
    dead = _dead_pid()
    os.rename(out, tmp_path / f".run.old-{dead}-12345678")
    (tmp_path / f".run.stage-{dead}-87654321").mkdir()
    clean_leftovers(out)
    assert (out / "model.json").read_text() == "card" and _hidden(tmp_path) == []


# ------------------------------------------------------------------ a real `workbench train`, interrupted
_WRAPPER = r"""
import os, sys, time
import workbench.atomic as A
import workbench.training as T

point, marker = os.environ["PAUSE_AT"], os.environ["MARKER"]

def pause():
    open(marker, "w").close()
    time.sleep(120)

if point == "training":
    fit = T.fit
    def paused_fit(*a, **k):
        pause()
        return fit(*a, **k)
    T.fit = paused_fit
elif point in ("weights", "report"):
    name = {"weights": "model.safetensors", "report": "report.json"}[point]
    write = A.atomic_write
    def paused_write(path, writer):
        out = write(path, writer)
        if os.path.basename(str(path)) == name:
            pause()
        return out
    A.atomic_write = paused_write
    import workbench.models as M, workbench.report as R
    M.atomic_write = R.atomic_write = paused_write
    R.atomic_write_text = lambda p, text: paused_write(p, lambda q: q.write_text(text, encoding="utf-8"))
elif point == "swap":
    exchange = A._exchange
    def paused_exchange(a, b):
        done = exchange(a, b)
        pause()
        return done
    A._exchange = paused_exchange
from workbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    from workbench.cli import main

    out = tmp_path_factory.mktemp("prev") / "run"
    assert main(["-q", "train", "--data", "digits", "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("point", ["training", "weights", "report", "swap"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_train_leaves_the_previous_run_or_the_new_one_whole(point, sig, previous_run, tmp_path):
    from workbench.cli import main
    from workbench.models import load_model

    out = tmp_path / "run"
    shutil.copytree(previous_run, out)
    before = _digest(out)
    marker = tmp_path / "paused"
    env = {**os.environ, "PAUSE_AT": point, "MARKER": str(marker), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    # SIGINT's default disposition in the child whatever the test process inherited (an ignored SIGINT
    # would be inherited too, and Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, "-q", "train", "--data", "digits", "--epochs", "1",
                             "--seed", "7", "--out", str(out)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the pause point"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"Traceback" not in err, err
    if point == "swap":  # the new run was swapped in whole before the signal
        assert set(_digest(out)) == set(before) and _digest(out) != before
    else:
        assert _digest(out) == before  # the previous run, byte for byte
    assert load_model(out).card.arch == "cnn"
    if sig == signal.SIGINT:  # cleaned up on the way out
        assert _hidden(tmp_path) == []
    else:  # the next run removes whatever a SIGKILL left, and works
        assert main(["-q", "train", "--data", "digits", "--epochs", "1", "--out", str(out)]) == 0
        assert _hidden(tmp_path) == [] and set(_digest(out)) == set(before)
