"""workbench.backend: units in order, failures per unit, Ray optional with clear errors."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from workbench.backend import INSTALL_HINT, run_tasks
from workbench.errors import BadInput


def _divide(a, b):
    return a / b


def test_serial_units_come_back_in_order_and_a_failure_stops_nothing():
    res = run_tasks(_divide, [{"a": 6, "b": 3}, {"a": 1, "b": 0}, {"a": 5, "b": 2}])
    assert [r.index for r in res] == [0, 1, 2]
    assert [r.ok for r in res] == [True, False, True]
    assert res[0].value == 2.0 and res[2].value == 2.5
    assert res[1].error == "ZeroDivisionError: division by zero"


def _threads():
    import torch

    return torch.get_num_threads()


def test_threads_hold_inside_a_serial_unit_and_the_callers_count_comes_back():
    """A serial sweep with --threads 1 once left the whole process on one thread (the CNN bar test
    that ran after it took twice as long)."""
    import torch

    torch.set_num_threads(2)
    res = run_tasks(_threads, [{}, {}], threads=1)
    assert [r.value for r in res] == [1, 1]
    assert torch.get_num_threads() == 2
    failing = run_tasks(_divide, [{"a": 1, "b": 0}], threads=1)
    assert not failing[0].ok and torch.get_num_threads() == 2


def test_asking_for_ray_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BadInput) as err:
        run_tasks(_divide, [{"a": 1, "b": 1}], ray_address="local")
    assert str(err.value) == INSTALL_HINT and 'pip install ".[scale]"' in INSTALL_HINT
    assert run_tasks(_divide, [{"a": 1, "b": 1}])[0].value == 1.0  # serial needs no Ray


def test_a_ray_address_that_does_not_answer_fails_in_one_line_quickly():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(BadInput) as err:
        run_tasks(_divide, [{"a": 1, "b": 1}], ray_address=f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 30
    assert f"no Ray head node answers at 127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BadInput, match="must be 'auto', 'local' or HOST:PORT"):
        run_tasks(_divide, [{"a": 1, "b": 1}], ray_address="nohost")
