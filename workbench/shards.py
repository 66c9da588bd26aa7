"""Work over a large set of inputs split into contiguous shards, each a unit of
:func:`workbench.backend.run_tasks` (serially here, or as Ray tasks), the shards' results merged in
input order.

Certification (:func:`workbench.certify.smoothing.certify`) and saliency
(:func:`workbench.saliency.explain`) both go through :func:`run_shards`. A shard's unit receives
only its own part of every per-input argument (a tensor's rows, a :class:`DataRef`'s positions) and
the model either as the module itself (pickled to a Ray worker) or, better for a cluster, as a
:class:`ModelRef` that each unit loads from its saved folder or file; a :class:`DataRef` likewise
makes each unit read its own rows of a dataset opened by spec (a memory-mapped ``npy:DIR`` is never
read whole). Paths in both are made absolute here, so a worker whose working directory differs
still finds them (on a cluster the files must be at the same path on every machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backend import TaskResult, run_tasks, task_values
from .errors import require

#: Inputs per shard when sharding is asked for (a Ray address) without a shard count: a fixed size,
#: so that the layout, and with it any per-shard random stream, does not depend on the machine.
SHARD_SIZE = 256


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges that cover ``0..n`` in order, sizes differing by at most one.

    Parameters
    ----------
    n : int
        Number of inputs, ≥ 1.
    shards : int
        Number of shards, ≥ 1; more shards than inputs gives one input per shard.

    Returns
    -------
    list of tuple of int
        ``min(shards, n)`` ranges, the first ``n % shards`` one input larger.

    Raises
    ------
    BadInput
        If ``n`` or ``shards`` is below 1.

    Examples
    --------
    >>> shard_bounds(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    >>> shard_bounds(2, 5)
    [(0, 1), (1, 2)]
    """
    require(isinstance(n, (int, np.integer)) and n >= 1, f"nothing to shard: {n} inputs")
    require(isinstance(shards, (int, np.integer)) and not isinstance(shards, bool) and shards >= 1,
            f"shards must be an integer >= 1, got {shards}")
    k = min(int(shards), int(n))
    size, extra = divmod(int(n), k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def default_shards(n: int, shards: int | None, ray_address: str | None) -> int:
    """The shard count: ``shards`` when given, else 1 serially and ``ceil(n / SHARD_SIZE)`` on Ray.

    Parameters
    ----------
    n : int
        Number of inputs.
    shards : int, optional
        Asked-for count.
    ray_address : str, optional
        Where the units run (None: serially).

    Returns
    -------
    int
        The count, ≥ 1.

    Examples
    --------
    >>> default_shards(1000, None, None), default_shards(1000, None, "local"), default_shards(1000, 3, None)
    (1, 4, 3)
    """
    if shards is not None:
        return shards
    return 1 if ray_address is None else max(1, math.ceil(n / SHARD_SIZE))


def shard_seed(seed: int, start: int) -> int:
    """The seed of the random stream of the shard that starts at input ``start``.

    The first shard keeps ``seed`` itself, so one shard is the unsharded call; every other start gets
    an independent seed drawn from NumPy's ``SeedSequence((seed, start))``.

    Parameters
    ----------
    seed : int
        The call's seed.
    start : int
        The shard's first input.

    Returns
    -------
    int
        A seed in ``0 .. 2**63 - 1``.

    Examples
    --------
    >>> shard_seed(7, 0), shard_seed(7, 256) == shard_seed(7, 256), shard_seed(7, 256) == shard_seed(8, 256)
    (7, True, False)
    """
    if start == 0:
        return int(seed)
    hi, lo = np.random.SeedSequence((int(seed), int(start))).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def _absolute_path(text: str) -> str:
    p = Path(text).expanduser()
    return str(p.resolve()) if p.exists() else text


def absolute_model_spec(spec: str | Path) -> str:
    """A model spec with its file part made absolute when it exists here (``folder``, ``file.py:name``).

    Parameters
    ----------
    spec : str or pathlib.Path
        Any ``--model`` spec.

    Returns
    -------
    str
        The spec, its path absolute; a zoo name or ``package.module:factory`` unchanged.

    Examples
    --------
    >>> absolute_model_spec("cnn"), absolute_model_spec("mypkg.nets:make")
    ('cnn', 'mypkg.nets:make')
    """
    spec = str(spec)
    if Path(spec).expanduser().exists():
        return _absolute_path(spec)
    target, sep, name = spec.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{_absolute_path(target)}:{name}"
    return spec


def absolute_data_spec(spec: str) -> str:
    """A dataset spec (:func:`workbench.data.load_dataset`) with its paths made absolute.

    Parameters
    ----------
    spec : str
        ``mnist10k``, ``digits``, ``npz:PATH``, ``folder:PATH``, ``idx:IMAGES,LABELS``, ``npy:DIR``
        or a path ending in ``.npz``.

    Returns
    -------
    str
        The same spec, each existing path absolute.

    Examples
    --------
    >>> absolute_data_spec("digits")
    'digits'
    """
    kind, sep, arg = spec.strip().partition(":")
    if not sep:
        return _absolute_path(spec.strip()) if spec.strip().endswith(".npz") else spec.strip()
    if kind.lower() == "idx":
        return f"{kind}:" + ",".join(_absolute_path(p) for p in arg.split(","))
    return f"{kind}:{_absolute_path(arg)}"


@dataclass(frozen=True)
class ModelRef:
    """A saved model by reference: each unit loads it itself (nothing but the spec travels).

    Parameters
    ----------
    spec : str
        A ``--model`` spec (:func:`workbench.models.load_model`), made absolute.
    weights : str, optional
        Weights for a factory spec.
    trust_code : bool, default False
        As for :func:`~workbench.models.load_model`.
    input_shape : tuple of int, optional
        ``(C, H, W)`` of the data: the loaded model is bound to it (the same checks and preprocessing
        as the caller's :meth:`~workbench.models.LoadedModel.bind`).
    num_classes : int, optional
        The data's number of classes (with ``input_shape``).

    Returns
    -------
    A ModelRef (frozen dataclass); :meth:`load` gives the model.
    """

    spec: str
    weights: str | None = None
    trust_code: bool = False
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None

    @classmethod
    def of(cls, spec: str | Path, *, weights: str | Path | None = None, trust_code: bool = False,
           input_shape=None, num_classes: int | None = None) -> ModelRef:
        """A reference with absolute paths (see :func:`absolute_model_spec`).

        Parameters
        ----------
        spec, weights, trust_code, input_shape, num_classes
            As for the class.

        Returns
        -------
        ModelRef
            The reference.
        """
        return cls(absolute_model_spec(spec), None if weights is None else _absolute_path(str(weights)),
                   bool(trust_code), None if input_shape is None else tuple(int(s) for s in input_shape),
                   None if num_classes is None else int(num_classes))

    def load(self, device: str | torch.device = "cpu"):
        """Load the model on ``device`` (bound to the data's shape when known).

        Parameters
        ----------
        device : str or torch.device, default "cpu"
            Where the model goes.

        Returns
        -------
        ModelAdapter
            The model, in eval mode.
        """
        from .models import load_model

        loaded = load_model(self.spec, weights=self.weights, trust_code=self.trust_code, device=device)
        if self.input_shape is not None and self.num_classes is not None:
            loaded = loaded.bind(self.input_shape, self.num_classes)
        return loaded.model


@dataclass(frozen=True)
class DataRef:
    """Images of a dataset by reference: a spec and positions; each unit opens the dataset itself.

    Parameters
    ----------
    spec : str
        A dataset spec (:func:`workbench.data.load_dataset`), made absolute.
    indices : numpy.ndarray
        Positions of the images, in order.

    Returns
    -------
    A DataRef (frozen dataclass); ``len`` is the number of images, :meth:`part` a slice of them,
    :meth:`load` the float32 images.
    """

    spec: str
    indices: np.ndarray

    @classmethod
    def of(cls, spec: str, indices=None, n: int | None = None) -> DataRef:
        """A reference to ``indices`` of the dataset ``spec`` (default: its first ``n`` images).

        Parameters
        ----------
        spec : str
            The dataset spec.
        indices : array-like of int, optional
            Positions (e.g. a subset's ``indices``).
        n : int, optional
            Without ``indices``: the dataset's size.

        Returns
        -------
        DataRef
            The reference, its paths absolute.
        """
        require(indices is not None or n is not None, "DataRef.of needs indices or n")
        idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(
            indices.numpy() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        return cls(absolute_data_spec(spec), idx)

    def __len__(self) -> int:
        return int(len(self.indices))

    def part(self, start: int, stop: int) -> DataRef:
        """The reference to images ``start..stop-1`` of this one.

        Parameters
        ----------
        start, stop : int
            The range.

        Returns
        -------
        DataRef
            A smaller reference.
        """
        return DataRef(self.spec, self.indices[start:stop])

    def load(self) -> torch.Tensor:
        """The images, N×C×H×W float32 in [0, 1] (read row by row from a memory map).

        Returns
        -------
        torch.Tensor
            The images.
        """
        from .data import load_dataset

        return load_dataset(self.spec).pixels[torch.as_tensor(self.indices)]


def resolve_model(model, device=None):
    """``model`` itself, or the model a :class:`ModelRef` loads on ``device`` (default cpu).

    Parameters
    ----------
    model : nn.Module, callable, ModelAdapter or ModelRef
        The model or its reference.
    device : str or torch.device, optional
        Where a referenced model is loaded.

    Returns
    -------
    The model.
    """
    return model.load(device or "cpu") if isinstance(model, ModelRef) else model


def resolve_images(images):
    """``images`` itself, or the images a :class:`DataRef` reads.

    Parameters
    ----------
    images : torch.Tensor or DataRef
        The images or their reference.

    Returns
    -------
    torch.Tensor
        The images.
    """
    return images.load() if isinstance(images, DataRef) else images


def take(value, start: int, stop: int):
    """Rows ``start..stop-1`` of a per-input argument (tensor, array, list, :class:`DataRef`); None stays None.

    Parameters
    ----------
    value : torch.Tensor, numpy.ndarray, list, tuple, DataRef or None
        The argument.
    start, stop : int
        The range.

    Returns
    -------
    The part, of the same kind.

    Examples
    --------
    >>> take([1, 2, 3, 4], 1, 3), take(None, 0, 2)
    ([2, 3], None)
    """
    if value is None:
        return None
    if isinstance(value, DataRef):
        return value.part(start, stop)
    return value[start:stop]


def run_shards(fn: Callable[..., Any], n: int, *, per_input: dict[str, Any], common: dict[str, Any],
               shards: int | None = None, ray_address: str | None = None, threads: int | None = None,
               num_gpus: float = 0, what: str = "shard",
               progress: Callable[[float, str], None] | None = None) -> list[Any]:
    """Call ``fn(**common, **parts, start=START)`` for each contiguous shard of ``n`` inputs, where
    ``parts`` holds each ``per_input`` argument's rows of the shard (:func:`take`); the values come
    back in input order.

    The units run through :func:`workbench.backend.run_tasks`: serially here (``ray_address``
    None) or as Ray tasks with ``threads`` CPUs (and torch threads) and ``num_gpus`` GPUs each.
    A failing shard raises (:func:`workbench.backend.task_values`).

    Parameters
    ----------
    fn : callable
        A module-level function (importable by Ray workers).
    n : int
        Number of inputs, ≥ 1.
    per_input : dict
        Arguments with one row per input, split between the shards.
    common : dict
        Arguments every shard gets whole.
    shards : int, optional
        Number of shards (default :func:`default_shards`).
    ray_address : str, optional
        None (serially), ``"local"``, ``"auto"`` or ``"HOST:PORT"``.
    threads : int, optional
        Torch threads per unit (and Ray CPUs per task; default 1 on Ray).
    num_gpus : float, default 0
        GPUs per Ray task.
    what : str, default "shard"
        The unit's name in messages.
    progress : callable, optional
        ``progress(fraction, message)`` as each shard finishes.

    Returns
    -------
    list
        Each shard's value, in input order.

    Raises
    ------
    BadInput
        For a bad shard count or Ray address, or a shard that raised BadInput.
    """
    bounds = shard_bounds(n, default_shards(n, shards, ray_address))
    for name, value in per_input.items():
        require(value is None or len(value) == n, f"{name} has {len(value)} rows for {n} inputs")
    kwargs_list = [{**common, **{k: take(v, a, b) for k, v in per_input.items()}, "start": a} for a, b in bounds]
    finished = [0]

    def tick(_res: TaskResult) -> None:
        finished[0] += 1
        if progress is not None:
            progress(finished[0] / len(bounds), f"{finished[0]}/{len(bounds)} {what}s")

    results = run_tasks(fn, kwargs_list, ray_address=ray_address, num_cpus_per_task=threads or 1,
                        num_gpus=num_gpus, threads=threads, on_result=tick)
    return task_values(results, what)
