import json

import numpy as np
import pytest

from workbench.cli import main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "info", "attack", "defend", "audit", "diffusion"):
        assert cmd in out


def test_version_is_the_packages(capsys):
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"workbench {declared}\n"
    assert main(["--version", "train", "--data", "nosuchdata"]) == 0  # eager: nothing else runs
    assert capsys.readouterr().out == f"workbench {declared}\n"


def test_train_then_info(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", "digits", "--epochs", "3", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["result"]["test_accuracy"] > 0.8
    assert (out / "model.safetensors").exists() and (out / "report.html").exists()
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "cnn" and info["input_shape"] == [1, 8, 8]
    assert {"name": "relu4", "type": "ReLU", "output_shape": [64, 4, 4], "parameters": 0} in info["layers"]


def test_exit_codes_for_bad_input(tmp_path, capsys):
    assert main(["train", "--data", "nosuchdata"]) == 2
    assert "unknown dataset spec" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert main(["train", "--no-such-option"]) == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.full((4, 8, 8), np.nan, np.float32), labels=np.array([0, 1, 0, 1]))
    assert main(["train", "--data", f"npz:{bad}"]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "Traceback" not in err
    assert main(["train", "--data", "digits", "--model", "vgg"]) == 2


def test_internal_failure_is_exit_1(monkeypatch, capsys):
    import workbench.cli.train as train_cmd

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(train_cmd, "train_classifier", broken)
    assert main(["train", "--data", "digits"]) == 1
    assert "internal error: RuntimeError: boom" in capsys.readouterr().err
