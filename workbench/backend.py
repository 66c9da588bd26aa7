"""Run independent units of work (folds, sweep runs, shards) serially or as Ray tasks.

The one place in the workbench that knows about Ray (https://docs.ray.io, Moritz et al., "Ray: A
Distributed Framework for Emerging AI Applications", OSDI 2018). Every capability that has
independent units calls :func:`run_tasks`; without ``ray_address`` they run one after the other in
this process, as before. With ``ray_address="local"`` a private Ray instance is started on this
machine (no dashboard) and shut down after; ``"auto"`` or ``"HOST:PORT"`` joins a running cluster
(``ray start --head`` on one machine, ``ray start --address HOST:PORT`` on the others).

Ray is optional: ``pip install ".[scale]"``. Asking for it without it installed is a
:class:`~workbench.errors.BadInput` that says so. A unit that raises is reported in its
:class:`TaskResult` and does not stop the others.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadInput, require

INSTALL_HINT = 'Ray is not installed; install the optional scale extra: pip install ".[scale]"'
CONNECT_TIMEOUT_S = 10.0  # a head node that does not answer is reported well within 30 s


@dataclass
class TaskResult:
    """What one unit of :func:`run_tasks` gave: ``value`` when ``ok``, else ``error``.

    Parameters
    ----------
    index : int
        The unit's position in ``kwargs_list``.
    ok : bool
        Whether the unit returned (False: it raised, or its Ray worker died).
    value : Any, default None
        What the unit returned; for a unit that raised, ``{"traceback": ...}`` (up to 8 frames).
    error : str, optional
        One line, ``"ExceptionType: message"``, when not ``ok``.
    seconds : float, default 0.0
        Wall time of the unit (inside the worker).

    Returns
    -------
    A TaskResult (dataclass)
    """

    index: int
    ok: bool
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


def _call(fn: Callable, kwargs: dict, threads: int | None, index: int) -> TaskResult:
    """Run one unit and catch its failure (inside the worker, so Ray never retries a failing unit).

    ``threads`` holds only for the unit: the caller's torch thread count comes back afterwards, so a
    serial run (in the user's own process) leaves it as it found it."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        return TaskResult(index, True, fn(**kwargs), seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - reported per unit; the others go on
        first = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        return TaskResult(index, False, error=first, seconds=time.perf_counter() - t0,
                          value={"traceback": traceback.format_exc(limit=8)})
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class UnitFailed(RuntimeError):
    """A unit of work failed with an error other than bad input; the worker's traceback is its cause.

    Raised by :func:`task_values` (the CLI maps it to exit 1, an internal failure).

    Parameters
    ----------
    message : str
        One line: the unit, the error's type and message.

    Returns
    -------
    A UnitFailed (a ``RuntimeError``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class _WorkerTraceback(Exception):
    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


#: Errors a unit reports that are re-raised as themselves by :func:`task_values` (both mean bad input).
_RERAISED = {"BadInput": BadInput, "FileNotFoundError": FileNotFoundError}


def task_values(results: Sequence[TaskResult], what: str = "unit") -> list[Any]:
    """The units' values in input order, for callers whose units must all succeed (folds, shards).

    The first failed unit raises: a :class:`~workbench.errors.BadInput` (or ``FileNotFoundError``)
    raised in the unit is raised again with its message, so bad input stays a one-line exit 2; any
    other error is a :class:`UnitFailed` naming the unit, with the worker's traceback as its cause.

    Parameters
    ----------
    results : sequence of TaskResult
        What :func:`run_tasks` returned.
    what : str, default "unit"
        The unit's name in the message (``fold``, ``shard``).

    Returns
    -------
    list
        Each unit's value.

    Raises
    ------
    BadInput, FileNotFoundError, UnitFailed
        For the first unit that failed.
    """
    for r in results:
        if not r.ok:
            kind, _, message = (r.error or "").partition(": ")
            if kind in _RERAISED:
                raise _RERAISED[kind](message)
            tb = r.value.get("traceback") if isinstance(r.value, dict) else None
            raise UnitFailed(f"{what} {r.index + 1} of {len(results)} failed: {r.error}") from (
                _WorkerTraceback(tb) if tb else None)
    return [r.value for r in results]


def import_ray():
    """The ``ray`` module, imported on first use (Ray is optional: the ``scale`` extra).

    Parameters: none

    Returns
    -------
    module
        ``ray``.

    Raises
    ------
    BadInput
        If Ray is not installed; the message gives the install command (``pip install ".[scale]"``).
    """
    try:
        import ray
    except ImportError:
        raise BadInput(INSTALL_HINT) from None
    return ray


def _check_reachable(address: str) -> None:
    """A HOST:PORT that does not accept a connection: one-line BadInput, within CONNECT_TIMEOUT_S."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("ray://")
    require(sep == ":" and host and port.isdigit(),
            f"--ray-address must be 'auto', 'local' or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise BadInput(f"no Ray head node answers at {address} ({exc.strerror or exc}); start one with "
                       "'ray start --head --port PORT' or check the address") from None


def init_ray(ray_address: str, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray, unless this process is already connected.

    ``"local"`` starts a private instance on this machine (no dashboard, usage stats off); ``"auto"``
    joins the cluster this machine belongs to; ``"HOST:PORT"`` (or ``ray://HOST:PORT``) joins that
    head node, checked first to answer within :data:`CONNECT_TIMEOUT_S` seconds.

    Parameters
    ----------
    ray_address : str
        ``"local"``, ``"auto"`` or ``"HOST:PORT"``.
    num_cpus : int, optional
        CPUs of a ``"local"`` instance (default: every core of the machine).

    Returns
    -------
    bool
        True when this call started the connection (the caller must then ``ray.shutdown()``); False
        when Ray was already initialised.

    Raises
    ------
    BadInput
        If Ray is not installed, the address is malformed, no head node answers there, or joining fails.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = None if ray_address == "local" else ray_address
    if address not in (None, "auto"):
        _check_reachable(address)
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise BadInput(f"cannot join the Ray cluster at {ray_address}: {exc}".splitlines()[0]) from None
    return True


def run_tasks(fn: Callable[..., Any], kwargs_list: Sequence[dict], *, ray_address: str | None = None,
              num_cpus_per_task: float = 1, num_gpus: float = 0, threads: int | None = None,
              on_result: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
    """Call ``fn(**kwargs)`` for each entry of ``kwargs_list``; the results come back in input order.

    A unit that raises is reported in its :class:`TaskResult` and does not stop the others (and Ray
    never retries it). With Ray, a ``"local"`` instance or a connection this call made is shut down
    before it returns.

    Parameters
    ----------
    fn : callable
        The unit of work. With Ray it must be importable by the workers (a module-level function).
    kwargs_list : sequence of dict
        One dict of keyword arguments per unit.
    ray_address : str, optional
        None (default): run serially in this process. ``"local"``, ``"auto"`` or ``"HOST:PORT"``: run
        each unit as a Ray task (see :func:`init_ray`).
    num_cpus_per_task : float, default 1
        CPUs Ray reserves per task (> 0).
    num_gpus : float, default 0
        GPUs Ray reserves per task (≥ 0; a fraction shares one GPU).
    threads : int, optional
        ``torch.set_num_threads`` inside each unit (≥ 1); the caller's thread count is restored after
        each serial unit. Default: unchanged.
    on_result : callable, optional
        Called with each :class:`TaskResult` as its unit finishes (completion order), e.g. to save it
        at once so that an interrupted run keeps what is done.

    Returns
    -------
    list of TaskResult
        One per entry of ``kwargs_list``, in input order.

    Raises
    ------
    BadInput
        If ``fn`` is not callable, ``num_cpus_per_task`` ≤ 0, ``num_gpus`` < 0 or ``threads`` < 1, or
        Ray is asked for and not installed or not reachable.

    Examples
    --------
    >>> def divide(a, b):
    ...     return a / b
    >>> results = run_tasks(divide, [{"a": 1, "b": 2}, {"a": 1, "b": 0}], threads=1)
    >>> [(r.index, r.ok, r.value if r.ok else r.error) for r in results]
    [(0, True, 0.5), (1, False, 'ZeroDivisionError: division by zero')]
    """
    require(callable(fn), "fn must be callable")
    require(num_cpus_per_task > 0 and num_gpus >= 0, "num_cpus_per_task must be > 0 and num_gpus >= 0")
    require(threads is None or threads >= 1, f"threads must be >= 1, got {threads}")
    kwargs_list = list(kwargs_list)
    results: list[TaskResult | None] = [None] * len(kwargs_list)
    if ray_address is None:
        for i, kw in enumerate(kwargs_list):
            results[i] = _call(fn, kw, threads, i)
            if on_result is not None:
                on_result(results[i])
        return results  # type: ignore[return-value]
    if not kwargs_list:
        return []
    ray = import_ray()
    started = init_ray(ray_address)
    try:
        remote = ray.remote(num_cpus=num_cpus_per_task, num_gpus=num_gpus, max_retries=0)(_call)
        pending = {remote.remote(fn, kw, threads, i): i for i, kw in enumerate(kwargs_list)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died: reported for this unit only
                    res = TaskResult(i, False, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
                results[i] = res
                if on_result is not None:
                    on_result(res)
    finally:
        if started:
            ray.shutdown()
    return results  # type: ignore[return-value]
