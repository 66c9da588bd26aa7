"""workbench sweep: grids from TOML, bad sweep files, resumable runs, and a real Ray head node
started as a separate process giving the same per-run figures as the serial path."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from raytest import end_processes_of

from workbench.cli import main
from workbench.errors import BadInput
from workbench.sweep import parse_sweep, run_key, run_sweep

TINY = """
command = "attack"
[params]
data = "digits"
epochs = 1
[grid]
attack = ["badnets", "blended"]
seed = [0, 1]
"""


@pytest.mark.parametrize("text,message", [
    ('command = "fly"\n[grid]\nseed = [0]', "unknown command 'fly'; sweepable commands: attack, train"),
    ('command = "attack"\n[grid]\nsed = [0]', "unknown parameter 'sed' for command 'attack'"),
    ('command = "attack"\n[params]\nrat = 0.1\n[grid]\nseed = [0]', "unknown parameter 'rat'"),
    ('command = "attack"\n[params]\nrate = 0.1', "the grid is empty"),
    ('command = "attack"\n[grid]\nseed = []', "grid parameter 'seed' needs a non-empty list"),
    ('command = "attack"\n[params]\nseed = 1\n[grid]\nseed = [0]', "seed is both fixed and in the grid"),
    ('command = "attack"\ngrid = [', "not valid TOML"),
])
def test_bad_sweep_files_are_refused_with_exit_2(tmp_path, capsys, text, message):
    with pytest.raises(BadInput) as err:
        parse_sweep(text)
    assert message in str(err.value)
    f = tmp_path / "s.toml"
    f.write_text(text)
    assert main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_grid_and_keys():
    spec = parse_sweep(TINY)
    runs = spec.runs()
    assert runs == [{"data": "digits", "epochs": 1, "attack": a, "seed": s}
                    for a in ("badnets", "blended") for s in (0, 1)]
    assert run_key("attack", runs[0]) == run_key("attack", dict(reversed(list(runs[0].items()))))
    assert len({run_key("attack", r) for r in runs}) == 4


def test_failed_runs_are_reported_and_a_rerun_skips_finished_ones(tmp_path):
    text = TINY.replace('attack = ["badnets", "blended"]', 'attack = ["badnets"]\nrate = [0.05, 1.5]')
    text = text.replace("seed = [0, 1]", "seed = [0]")
    first = run_sweep(text, tmp_path / "o")
    assert [r["status"] for r in first.rows] == ["ok", "failed"] and first.n_failed == 1
    assert "rate" in first.rows[1]["error"]
    again = run_sweep(text, tmp_path / "o")
    assert again.n_skipped == 1 and again.n_run == 1  # only the failed run is tried again
    assert again.rows[0]["CA"] == first.rows[0]["CA"]
    table = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert table[0].startswith("key,attack,rate,seed,status,CA,ASR,RA") and len(table) == 3
    assert (tmp_path / "o" / "plot_CA.png").read_bytes()[:4] == b"\x89PNG"
    assert "Mean ± sd over seeds" in (tmp_path / "o" / "report.html").read_text()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(BadInput, match="holds other things than a sweep"):
        run_sweep(text, other)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_on_a_real_ray_head_node_matches_the_serial_path(tmp_path, monkeypatch):
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="wbray", dir="/tmp")  # short: Ray puts sockets under it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # Ray >= 2.5x: a token-less local test cluster
    # --block keeps the head in this process group, so the test stops exactly its own Ray processes
    # (``ray stop`` would stop every Ray instance of this user on the machine).
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        spec = tmp_path / "s.toml"
        spec.write_text(TINY)
        assert main(["-q", "sweep", str(spec), "--out", str(tmp_path / "ray"), "--ray-address",
                     f"127.0.0.1:{port}", "--threads", "1"]) == 0
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:  # 'ray start --block' may hang draining the node: end its group
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        left = end_processes_of(temp)
    assert left == [], f"Ray processes left behind: {left}"
    assert main(["-q", "sweep", str(spec), "--out", str(tmp_path / "serial"), "--threads", "1"]) == 0
    ray_runs = json.loads((tmp_path / "ray" / "results.json").read_text())["runs"]
    serial_runs = json.loads((tmp_path / "serial" / "results.json").read_text())["runs"]
    assert len(ray_runs) == 4
    for a, b in zip(ray_runs, serial_runs):
        assert a["key"] == b["key"] and a["status"] == b["status"] == "ok"
        assert (a["CA"], a["ASR"], a["RA"]) == (b["CA"], b["ASR"], b["RA"])  # identical, not close
