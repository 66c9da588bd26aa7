"""The documentation's examples run as written: each page's Python blocks on their own, in a fresh
namespace; each tutorial (docs/tutorials/) as one session, its Python blocks in one namespace and its
bash blocks in one shell."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Every page's Python examples (docs/index.md repeats the README, so it is not run twice).
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")


def _blocks(page: str) -> list[tuple[str, str]]:
    text = (ROOT / page).read_text()
    return [(f"{page}#{i}", m) for i, m in enumerate(re.findall(r"```python\n(.*?)```", text, re.S))]


# README blocks that train for minutes (the library tour, the backdoor attack) are exercised by their
# own tests; the rest run here.
SLOW = ("train_classifier(", "run_backdoor_attack(")
BLOCKS = [b for page in PAGES for b in _blocks(page) if not any(s in b[1] for s in SLOW)]


@pytest.mark.parametrize("block", [code for _, code in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_python_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write runs/… write into a scratch folder
    exec(compile(block, "<docs>", "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own documentation


TUTORIALS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "tutorials").glob("*.md"))


def _fenced(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / page).read_text(), re.S)


@contextlib.contextmanager
def _one_thread():
    """One torch thread and one BLAS thread, restored after: the tiny digits models run no slower on
    one, and a busy two-core machine runs them several times faster than on two."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def test_every_tutorial_block_is_run():
    """A tutorial holds only blocks the tests below run: ``python`` (one session) and ``bash`` (one shell)."""
    langs = {page: set(re.findall(r"^```(\S*)", (ROOT / page).read_text(), re.M)) - {""} for page in TUTORIALS}
    assert {"docs/tutorials/app.md", "docs/tutorials/cli.md", "docs/tutorials/library.md"} <= set(TUTORIALS)
    assert all(lang <= {"python", "bash"} for lang in langs.values()), langs


@pytest.mark.parametrize("page", [p for p in TUTORIALS if _fenced(p, "python")])
def test_tutorial_python_session(page, tmp_path, monkeypatch):
    """A tutorial's Python blocks are one session: run in order in one namespace, in a scratch folder,
    on one thread as the shell session runs."""
    monkeypatch.chdir(tmp_path)
    with _one_thread():
        ns = {"__name__": "__docs__"}
        for i, code in enumerate(_fenced(page, "python")):
            exec(compile(code, f"{page}#{i}", "exec"), ns)  # noqa: S102 - our own documentation


@pytest.mark.parametrize("page", [p for p in TUTORIALS if _fenced(p, "bash")])
def test_tutorial_shell_session(page, tmp_path):
    """A tutorial's bash blocks run in order in one ``bash -e`` in a scratch folder, ``workbench`` being
    this checkout's CLI run by this interpreter (``python -m workbench.cli``), on one thread."""
    import os
    import subprocess
    import sys

    script = ("set -euo pipefail\nworkbench() { \"$WORKBENCH_PYTHON\" -m workbench.cli \"$@\"; }\n"
              + "\n".join(_fenced(page, "bash")))
    env = {**os.environ, "WORKBENCH_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])


def test_app_tutorial_follows_the_app():
    """docs/tutorials/app.md has one numbered section per page of the app, in the app's order."""
    from workbench.ui import PAGES

    sections = re.findall(r"^## \d+\. (.+)$", (ROOT / "docs" / "tutorials" / "app.md").read_text(), re.M)
    assert sections == [page.TITLE for page in PAGES]


def _figures_script():
    """benchmarks/figures.py, the script that draws the docs' figures, as a module."""
    import importlib.util
    import sys

    if "docs_figures" not in sys.modules:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "benchmarks" / "figures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["docs_figures"] = module
        spec.loader.exec_module(module)
    return sys.modules["docs_figures"]


def test_figures_are_committed_small_and_shown():
    """The figures benchmarks/figures.py draws are committed, each under 200 KB, and shown by the page
    of their capability and by every tutorial."""
    figures = _figures_script()
    pages = {"saliency": "docs/saliency.md", "certify": "docs/certifiers.md", "labels": "docs/label-audit.md"}
    assert set(figures.FILES) == set(pages)
    for key, name in figures.FILES.items():
        path = ROOT / "docs" / "img" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 200_000, name
        for page in [pages[key], *TUTORIALS]:
            assert f"img/{name})" in (ROOT / page).read_text(), f"{page} does not show {name}"


def test_figures_script_draws_every_figure(tmp_path):
    """``benchmarks/figures.py --quick``: the same three figures from small runs (1 epoch, n = 100,
    2 folds on 400 digits), each a PNG under 200 KB, from the runs asked for."""
    figures = _figures_script()
    with _one_thread():
        numbers = figures.make_figures(tmp_path, figures.QUICK)
    for name in figures.FILES.values():
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000, name
    assert numbers["labels"]["n"] == 400
    assert list(numbers["certify"]) == ["plain CNN", "trained with noise σ = 0.25"]
    assert numbers["saliency"]["layer"] == "relu4"


def test_docs_home_is_the_readme():
    """The site's home page is the README with links made relative to docs/ (regenerate it with
    ``sed -e 's#](docs/#](#g' -e 's#(docs/img/#(img/#g' README.md > docs/index.md``)."""
    readme = (ROOT / "README.md").read_text()
    want = readme.replace("](docs/", "](").replace("(docs/img/", "(img/")
    assert (ROOT / "docs" / "index.md").read_text() == want


def test_readme_is_short():
    """A newcomer reads the README in five minutes: under 12,000 characters; the rest is in docs/."""
    assert len((ROOT / "README.md").read_text()) < 12_000


def test_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict` with no warning at all: a broken link, a missing page, an unresolved API
    reference or a docstring griffe cannot match to its signature fails. Not ``-q``: it raises the log
    level to ERROR, so warnings never reach the counter that ``--strict`` aborts on."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert proc.returncode == 0 and not problems, "\n".join(problems) or log[-3000:]
    assert (tmp_path / "api" / "core" / "index.html").read_text().count("doc-function") > 20


def test_every_module_is_in_the_api_reference():
    """Each module of workbench, attacks and defenses (not the CLI and app faces, not the packages that
    only re-export) has a ``::: module`` entry on one of the docs/api pages."""
    import importlib
    import pkgutil

    listed = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        listed |= set(re.findall(r"^::: (\S+)", page.read_text(), re.M))
    missing = []
    for pkg in ("workbench", "attacks", "defenses"):
        for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, prefix=pkg + "."):
            if not m.ispkg and ".cli" not in m.name and ".ui" not in m.name and m.name not in listed:
                missing.append(m.name)
    assert not missing, f"not in docs/api: {', '.join(missing)}"
