"""The check registry and what every check shares.

A check is one module in this package holding a subclass of :class:`Check` decorated with
:func:`register`: a ``name``, what it ``needs`` (``model``, ``train``: the training data, ``clean``:
a small clean set), its :class:`Param` s with defaults and ranges, ``run(ctx, params) -> result`` (a
dataclass) and ``conditions(result, params) -> [Condition]`` giving pass / warn / inconclusive / fail,
each with a one-sentence reason. A check that cannot decide (too little data, a statistic without
power, a search that did not converge) says ``"inconclusive"`` with its reason, never ``"pass"``. The shape follows the model/data validation suites run in CI (a suite of
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
#: Verdicts from least to most severe. ``inconclusive``: the check could not decide (its reason says why);
#: it is not a pass, and ``workbench audit run`` gates on it by default.
VERDICTS = ("pass", "warn", "inconclusive", "fail")
NEEDS = {"model": "a trained model (--model)",
         "train": "the model's training data (--data)",
         "clean": "a small clean set: a test set (--test) or a model card that records its held-out split"}


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a check: its default, a help line and the range a value must lie in.

    Parameters
    ----------
    default : Any
        The value used when the config does not set this parameter.
    help : str
        One line saying what the parameter does (shown by ``workbench audit checks`` and the app).
    low, high : float or None, default None
        Inclusive bounds for a numeric value; None means unbounded on that side.
    kind : type, default float
        ``float``, ``int``, ``bool`` or ``str``: what a value must be.

    Returns
    -------
    A Param (frozen dataclass)
        Validate a value with :meth:`check`.

    Examples
    --------
    >>> Param(0.5, "threshold", 0.0, 1.0).check("poison", "z", 1)
    1.0
    """

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    kind: type = float

    def check(self, check: str, key: str, value: Any) -> Any:
        """Validate ``value`` for this parameter and convert it to :attr:`kind`.

        Parameters
        ----------
        check : str
            The check's name (for the error message).
        key : str
            The parameter's name (for the error message).
        value : Any
            The value from the config.

        Returns
        -------
        Any
            ``value`` converted to :attr:`kind` (a bool or str is returned as given).

        Raises
        ------
        BadInput
            When ``value`` is not of the parameter's kind (a bool is not a number), not an integer for
            an ``int`` parameter, not finite, or outside ``[low, high]``.
        """
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
    """One condition of a check's outcome: a verdict with the sentence that justifies it.

    Parameters
    ----------
    name : str
        What is judged (e.g. ``"accuracy"``, ``"trigger anomaly"``).
    verdict : str
        ``"pass"``, ``"warn"``, ``"inconclusive"`` (the check could not decide) or ``"fail"``.
    reason : str
        One sentence with the figure and the threshold it was compared with.

    Returns
    -------
    A Condition (dataclass)
        Returned in a list by :meth:`Check.conditions`.
    """

    name: str
    verdict: str  # pass | warn | inconclusive | fail
    reason: str  # one sentence


@dataclass
class CheckOutcome:
    """What one check gave in an audit: its verdict, conditions, result and cost.

    Parameters
    ----------
    check : str
        The check's registered name.
    verdict : str
        The worst of its conditions' verdicts (``"pass"`` < ``"warn"`` < ``"inconclusive"`` < ``"fail"``).
    key_figure : str
        A short figure for the verdict table (from :meth:`Check.key_figure`).
    conditions : list of Condition
        Every condition the check evaluated.
    result : Any
        The check's result dataclass (from :meth:`Check.run`).
    params : dict
        The parameter values it ran with (defaults merged with the config).
    seconds : float
        Wall time of the check's run.

    Returns
    -------
    A CheckOutcome (dataclass)
        One per check in :attr:`workbench.audit.run.AuditReport.outcomes`.
    """

    check: str
    verdict: str  # the worst of its conditions
    key_figure: str
    conditions: list[Condition]
    result: Any
    params: dict
    seconds: float

    @property
    def failing(self) -> list[Condition]:
        """The conditions whose verdict is ``"fail"``.

        Parameters: none

        Returns
        -------
        list of Condition
            Possibly empty, in the check's order.
        """
        return [c for c in self.conditions if c.verdict == "fail"]


def worst(verdicts) -> str:
    """The most severe of some verdicts (``"fail"`` over ``"inconclusive"`` over ``"warn"`` over ``"pass"``).

    Parameters
    ----------
    verdicts : iterable of str
        Each one of :data:`VERDICTS`.

    Returns
    -------
    str
        The worst one; ``"pass"`` when ``verdicts`` is empty.

    Examples
    --------
    >>> worst(["pass", "warn", "pass"]), worst(["warn", "inconclusive"]), worst([])
    ('warn', 'inconclusive', 'pass')
    """
    vs = list(verdicts)
    return max(vs, key=VERDICTS.index) if vs else "pass"


class Check:
    """One audit check; subclasses set the class attributes and implement :meth:`run` and :meth:`conditions`.

    Class attributes: ``name`` (the registry key and config table name), ``title`` (shown in reports),
    ``needs`` (a subset of ``("model", "train", "clean")``, see :data:`NEEDS`) and ``params`` (name →
    :class:`Param`). Subclasses are registered with :func:`register`.

    Parameters: none

    Returns
    -------
    A Check
        A stateless check; :func:`register` keeps one instance in :data:`CHECKS`.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[dict[str, Param]] = {}

    def run(self, ctx: AuditContext, p: dict, progress: Progress) -> Any:  # pragma: no cover - interface
        """Run the check.

        Parameters
        ----------
        ctx : AuditContext
            The model, the data and the shared computations.
        p : dict
            Parameter values (validated, defaults filled in by :func:`resolve_params`).
        progress : callable
            ``progress(fraction, message)`` with ``fraction`` in [0, 1].

        Returns
        -------
        Any
            The check's result dataclass.
        """
        raise NotImplementedError

    def conditions(self, result: Any, p: dict) -> list[Condition]:  # pragma: no cover - interface
        """Judge a result against the parameters' thresholds.

        Parameters
        ----------
        result : Any
            What :meth:`run` returned.
        p : dict
            The parameter values it ran with.

        Returns
        -------
        list of Condition
            One or more, each with a verdict and a one-sentence reason.
        """
        raise NotImplementedError

    def key_figure(self, result: Any) -> str:
        """A short figure summarising ``result`` for the verdict table.

        Parameters
        ----------
        result : Any
            What :meth:`run` returned.

        Returns
        -------
        str
            Empty unless a subclass overrides it.
        """
        return ""

    def sections(self, result: Any) -> list:
        """The report sections showing ``result`` (see :mod:`workbench.report`).

        Parameters
        ----------
        result : Any
            What :meth:`run` returned.

        Returns
        -------
        list
            :class:`workbench.report.Metrics`, ``Table``, ``ImageGrid``... sections; empty by default.
        """
        return []

    def suspects(self, result: Any) -> dict[str, np.ndarray]:
        """Per-training-sample columns this check contributes to the suspects table (arrays of length N).

        Parameters
        ----------
        result : Any
            What :meth:`run` returned.

        Returns
        -------
        dict of str to numpy.ndarray
            Column name → array of length N (the training set's size); empty by default.
        """
        return {}


CHECKS: dict[str, Check] = {}


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: put one instance of ``cls`` into :data:`CHECKS` under ``cls.name``.

    Parameters
    ----------
    cls : type of Check
        The check class; a later class with the same name replaces the earlier one.

    Returns
    -------
    type of Check
        ``cls`` itself, unchanged.
    """
    CHECKS[cls.name] = cls()
    return cls


def resolve_params(name: str, overrides: dict | None) -> dict:
    """A check's parameter values: its defaults with ``overrides`` validated and applied.

    Parameters
    ----------
    name : str
        A registered check's name.
    overrides : dict or None
        Parameter name → value; None or empty for the defaults.

    Returns
    -------
    dict
        Every parameter of the check → its value.

    Raises
    ------
    BadInput
        When ``overrides`` names a parameter the check does not have, or a value fails
        :meth:`Param.check`.

    Examples
    --------
    >>> resolve_params("accuracy", {"warn_below": 0.95})["warn_below"]
    0.95
    """
    check = CHECKS[name]
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in check.params]
    if unknown:
        raise BadInput(f"check {name!r} has no parameter {unknown[0]!r}; its parameters: "
                       f"{', '.join(check.params) or '(none)'}")
    return {k: (par.check(name, k, overrides[k]) if k in overrides else par.default)
            for k, par in check.params.items()}


def select_checks(checks: str | list[str] | None) -> list[str]:
    """The names of the checks to run, validated, in the order given and without repeats.

    Parameters
    ----------
    checks : str, list of str or None
        A comma-separated string (``"labels,poison"``) or a list of names; None for every registered check.

    Returns
    -------
    list of str
        Registered check names.

    Raises
    ------
    BadInput
        When no name is given (an empty string or list) or a name is not a registered check.

    Examples
    --------
    >>> select_checks("labels, poison,labels")
    ['labels', 'poison']
    """
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
    """Validate a whole audit config and give the parameter values of each check that will run.

    ``config`` maps check name → {parameter: value}; every key must name a known check and parameter.
    A check that does not run this time is still validated.

    Parameters
    ----------
    config : dict or None
        Check name → parameter overrides (e.g. from a TOML file's tables).
    names : list of str
        The checks that will run (from :func:`select_checks`).

    Returns
    -------
    dict of str to dict
        For each of ``names``: its parameter values (:func:`resolve_params`).

    Raises
    ------
    BadInput
        When a key names no registered check, its value is not a table (dict), or
        :func:`resolve_params` rejects it.
    """
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
    """What the checks are given, and the shared computations (each done once, on first use).

    Parameters
    ----------
    model : ModelAdapter or None, default None
        The model under audit (:func:`workbench.adapter.as_model`).
    train : ImageDataset or None, default None
        The model's training data.
    test : ImageDataset or None, default None
        A held-out test set.
    provenance : dict or None, default None
        The model card's provenance (gives the held-out split of ``train`` when ``test`` is None).
    seed : int, default 0
        Seed for every random choice the checks make.
    device : str, default "cpu"
        Torch device the checks run the model on.

    Returns
    -------
    An AuditContext (dataclass)
        Passed to every :meth:`Check.run` of one audit.
    """

    model: Any = None  # ModelAdapter
    train: ImageDataset | None = None
    test: ImageDataset | None = None
    provenance: dict | None = None
    seed: int = 0
    device: str = "cpu"
    _cache: dict = field(default_factory=dict, repr=False)

    def has(self, need: str) -> bool:
        """Whether this context meets one of a check's needs.

        Parameters
        ----------
        need : str
            ``"model"``, ``"train"`` or ``"clean"`` (see :data:`NEEDS`).

        Returns
        -------
        bool
            True when the model, the training data or a clean set (:meth:`clean`) is available.

        Raises
        ------
        KeyError
            When ``need`` is none of those.
        """
        if need == "model":
            return self.model is not None
        if need == "train":
            return self.train is not None
        if need == "clean":
            return self.clean() is not None
        raise KeyError(need)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """The cached value under ``key``, made by calling ``make()`` the first time.

        Parameters
        ----------
        key : str
            Cache key shared by the checks.
        make : callable
            Takes no argument and returns the value.

        Returns
        -------
        Any
            The cached value.
        """
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def evaluation(self):
        """The data the model was not trained on: ``test`` when given, else its held-out split of
        ``train`` from the card (:func:`workbench.data.held_out`), else None.

        Parameters: none

        Returns
        -------
        tuple of (ImageDataset or None, str)
            The evaluation set (None when there is none) and a note saying where it came from or why
            there is none.
        """
        def make():
            if self.test is not None:
                return self.test, "the given test set"
            if self.train is None:
                return None, "no data"
            h = held_out(self.train, self.provenance)
            return (h.data, h.note) if h.reproduced else (None, h.note)
        return self.once("evaluation", make)

    def clean(self) -> ImageDataset | None:
        """The clean (held-out) set, the first element of :meth:`evaluation`.

        Parameters: none

        Returns
        -------
        ImageDataset or None
            None when neither a test set nor a reproducible held-out split is available.
        """
        return self.evaluation()[0]

    def out_of_sample(self):
        """Cross-validated probabilities over the training data (5-fold logistic regression on the
        model's penultimate features, :func:`workbench.labels.embedding_pred_probs`).

        Parameters: none

        Returns
        -------
        OutOfSample
            What :func:`workbench.labels.embedding_pred_probs` returns (``pred_probs`` of shape N×K,
            ``features``), computed once.
        """
        from ..labels import embedding_pred_probs

        return self.once("oos", lambda: embedding_pred_probs(self.train, self.model, seed=self.seed))

    def features(self) -> torch.Tensor:
        """The model's penultimate features of every training image (N×D), computed once; taken from the
        out-of-sample probabilities' pass when that ran first.

        Parameters: none

        Returns
        -------
        torch.Tensor
            Shape N×D, one row per training image.
        """
        from ..hooks import layer_outputs

        if "oos" in self._cache and self._cache["oos"].features is not None:
            return torch.as_tensor(self._cache["oos"].features)
        return self.once("features", lambda: layer_outputs(self.model, self.train.images))
