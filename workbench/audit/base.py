"""The check registry and what every check shares.

A check is one module in this package holding a subclass of :class:`Check` decorated with
:func:`register`: a ``name``, what it ``needs`` (``model``, ``train``: the training data, ``clean``:
a small clean set), its :class:`Param` s with defaults and ranges, ``run(ctx, params) -> result`` (a
dataclass) and ``conditions(result, params) -> [Condition]`` giving pass / warn / fail, each with a
one-sentence reason. The shape follows the model/data validation suites run in CI (a suite of
checks, each with conditions) and cleanlab's Datalab (a registry of issue managers over one call).

Shared work lives in :class:`AuditContext` and is computed once, on first use: the feature pass over
the training data and the out-of-sample probabilities made from it, the evaluation (held-out) set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..data import ImageDataset, held_out
from ..errors import BadInput

Progress = Callable[[float, str], None]
VERDICTS = ("pass", "warn", "fail")
NEEDS = {"model": "a trained model (--model)",
         "train": "the model's training data (--data)",
         "clean": "a small clean set: a test set (--test) or a model card that records its held-out split"}


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    kind: type = float

    def check(self, check: str, key: str, value: Any) -> Any:
        where = f"{check}.{key}"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise BadInput(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise BadInput(f"{where} must be a string, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{where} must be a number, got {value!r}")
        if self.kind is int and int(value) != value:
            raise BadInput(f"{where} must be an integer, got {value!r}")
        v = self.kind(value)
        if not math.isfinite(float(v)) or (self.low is not None and v < self.low) or \
                (self.high is not None and v > self.high):
            raise BadInput(f"{where} must be in [{self.low}, {self.high}], got {value!r}")
        return v


@dataclass
class Condition:
    name: str
    verdict: str  # pass | warn | fail
    reason: str  # one sentence


@dataclass
class CheckOutcome:
    check: str
    verdict: str  # the worst of its conditions
    key_figure: str
    conditions: list[Condition]
    result: Any
    params: dict
    seconds: float

    @property
    def failing(self) -> list[Condition]:
        return [c for c in self.conditions if c.verdict == "fail"]


def worst(verdicts) -> str:
    vs = list(verdicts)
    return max(vs, key=VERDICTS.index) if vs else "pass"


class Check:
    """One audit check; subclasses set the class attributes and implement :meth:`run` and :meth:`conditions`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[dict[str, Param]] = {}

    def run(self, ctx: AuditContext, p: dict, progress: Progress) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def conditions(self, result: Any, p: dict) -> list[Condition]:  # pragma: no cover - interface
        raise NotImplementedError

    def key_figure(self, result: Any) -> str:
        return ""

    def sections(self, result: Any) -> list:
        return []

    def suspects(self, result: Any) -> dict[str, np.ndarray]:
        """Per-training-sample columns this check contributes to the suspects table (arrays of length N)."""
        return {}


CHECKS: dict[str, Check] = {}


def register(cls: type[Check]) -> type[Check]:
    CHECKS[cls.name] = cls()
    return cls


def resolve_params(name: str, overrides: dict | None) -> dict:
    check = CHECKS[name]
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in check.params]
    if unknown:
        raise BadInput(f"check {name!r} has no parameter {unknown[0]!r}; its parameters: "
                       f"{', '.join(check.params) or '(none)'}")
    return {k: (par.check(name, k, overrides[k]) if k in overrides else par.default)
            for k, par in check.params.items()}


def select_checks(checks: str | list[str] | None) -> list[str]:
    if checks is None:
        return list(CHECKS)
    names = [c.strip() for c in (checks.split(",") if isinstance(checks, str) else checks) if c.strip()]
    if not names:
        raise BadInput(f"no checks named; known checks: {', '.join(CHECKS)}")
    for n in names:
        if n not in CHECKS:
            raise BadInput(f"unknown check {n!r}; known checks: {', '.join(CHECKS)}")
    return list(dict.fromkeys(names))


def validate_config(config: dict | None, names: list[str]) -> dict[str, dict]:
    """``config`` maps check name → {parameter: value}; every key must name a known check and parameter."""
    config = dict(config or {})
    for k, v in config.items():
        if k not in CHECKS:
            raise BadInput(f"config names no check {k!r}; known checks: {', '.join(CHECKS)}")
        if not isinstance(v, dict):
            raise BadInput(f"config for check {k!r} must be a table of parameters, got {v!r}")
        resolve_params(k, v)  # a check that does not run this time is still checked
    return {n: resolve_params(n, config.get(n)) for n in names}


@dataclass
class AuditContext:
    """What the checks are given, and the shared computations (each done once, on first use)."""

    model: Any = None  # ModelAdapter
    train: ImageDataset | None = None
    test: ImageDataset | None = None
    provenance: dict | None = None
    seed: int = 0
    device: str = "cpu"
    _cache: dict = field(default_factory=dict, repr=False)

    def has(self, need: str) -> bool:
        if need == "model":
            return self.model is not None
        if need == "train":
            return self.train is not None
        if need == "clean":
            return self.clean() is not None
        raise KeyError(need)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def evaluation(self):
        """The data the model was not trained on: ``test`` when given, else its held-out split of
        ``train`` from the card (:func:`workbench.data.held_out`), else None."""
        def make():
            if self.test is not None:
                return self.test, "the given test set"
            if self.train is None:
                return None, "no data"
            h = held_out(self.train, self.provenance)
            return (h.data, h.note) if h.reproduced else (None, h.note)
        return self.once("evaluation", make)

    def clean(self) -> ImageDataset | None:
        return self.evaluation()[0]

    def out_of_sample(self):
        """Cross-validated probabilities over the training data (5-fold logistic regression on the
        model's penultimate features, :func:`workbench.labels.embedding_pred_probs`)."""
        from ..labels import embedding_pred_probs

        return self.once("oos", lambda: embedding_pred_probs(self.train, self.model, seed=self.seed))

    def features(self) -> torch.Tensor:
        """The model's penultimate features of every training image (N×D), computed once; taken from the
        out-of-sample probabilities' pass when that ran first."""
        from ..hooks import layer_outputs

        if "oos" in self._cache and self._cache["oos"].features is not None:
            return torch.as_tensor(self._cache["oos"].features)
        return self.once("features", lambda: layer_outputs(self.model, self.train.images))
