"""The documentation's Python examples run as written (each block on its own, in a fresh namespace)."""

from __future__ import annotations

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
    """`mkdocs build --strict`: a broken link, a missing page or an unresolved API reference fails."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "api" / "core" / "index.html").read_text().count("doc-function") > 20
