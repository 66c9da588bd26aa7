"""Helpers for tests that run real Ray processes and must leave none behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    """Ids of this machine's processes whose command line contains ``text`` (e.g. a Ray temp folder)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if text.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def end_processes_of(temp: str, wait_s: float = 30) -> list[int]:
    """Wait for the processes of a Ray instance (those naming its temp folder) to end; kill (by id)
    and return those still there after ``wait_s``, and remove the folder."""
    deadline = time.time() + wait_s
    while processes_mentioning(temp) and time.time() < deadline:
        time.sleep(0.5)
    left = processes_mentioning(temp)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    return left


@contextlib.contextmanager
def private_ray(num_cpus: int = 2) -> Iterator[str]:
    """A private Ray instance on this machine (``ray.init``, no dashboard) under its own short temp
    folder; ``run_tasks(..., ray_address="local")`` inside uses it. On exit: ``ray.shutdown()``, and
    an AssertionError if any of its processes had to be killed."""
    import ray

    temp = tempfile.mkdtemp(prefix="wbray", dir="/tmp")  # short: Ray puts sockets under it
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=temp)
    try:
        yield temp
    finally:
        ray.shutdown()
        left = end_processes_of(temp)
        assert left == [], f"Ray processes left behind: {left}"
