"""What pyproject.toml promises, and CI failing for real when pytest collects no tests."""

import os
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def test_dependency_floors_and_bounds_match_the_code_and_the_tested_versions():
    req = _requirements()
    # the saliency metrics call np.trapezoid, which NumPy 1.x does not have
    assert "1.26.4" not in req["numpy"].specifier and "2.0.0" in req["numpy"].specifier
    for name, next_major in (("transformers", "6.0.0"), ("diffusers", "1.0.0")):
        assert version(name) in req[name].specifier, (name, version(name))  # the version the tests run on
        assert next_major not in req[name].specifier, name  # a major version nobody tested


def _fake_checkout(tmp_path: Path, pytest_code: int) -> Path:
    """The Makefile and .ci/run in a folder whose venv's python exits with ``pytest_code`` for pytest."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    py = bin_ / "python"
    py.write_text(f'#!/bin/sh\nif [ "$2" = "pytest" ]; then exit {pytest_code}; fi\nexit 0\n')
    py.chmod(0o755)
    for prerequisite in (py, tmp_path / "pyproject.toml"):
        os.utime(prerequisite, (1e9, 1e9))  # older than .installed: make does not set up again
    (tmp_path / ".venv" / ".installed").touch()
    return tmp_path


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists() or shutil.which("make") is None,
                    reason=".ci/run would install Chromium; needs make")
@pytest.mark.parametrize("pytest_code,ci_code", [(0, 0), (1, 2), (5, 1)])
def test_ci_fails_when_pytest_collects_no_tests(tmp_path, pytest_code, ci_code):
    root = _fake_checkout(tmp_path, pytest_code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "WORKBENCH_"))}
    run = subprocess.run(["bash", str(root / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == ci_code, (run.stdout, run.stderr)
    assert ("collected no tests" in run.stderr) == (pytest_code == 5)
