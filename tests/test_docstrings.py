"""Every public function and class has a numpy-style docstring with Parameters and Returns sections,
and the docstrings' examples run (doctest)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ("workbench", "attacks", "defenses")
# The CLI and the app are faces, documented by --help and the pages, not API.
FACES = (".cli", ".ui")


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=pkg + ".")]
    return [n for n in names if not any(f in n for f in FACES)]


def _public(module) -> list[tuple[str, object]]:
    return [(k, v) for k, v in vars(module).items()
            if not k.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", None) == module.__name__]


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_public_names_have_parameters_and_returns(name):
    module = importlib.import_module(name)
    missing = []
    for key, obj in _public(module):
        doc = inspect.getdoc(obj) or ""
        has_params = "Parameters\n----------" in doc or "Parameters: none" in doc
        if not (has_params and "Returns\n-------" in doc):
            missing.append(key)
    assert not missing, f"{name}: no Parameters/Returns section in {', '.join(missing)}"


@pytest.mark.parametrize("name", [m for m in MODULES if ">>>" in (inspect.getsource(importlib.import_module(m))
                                                                    if importlib.import_module(m).__file__ else "")])
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} failed"
