"""Shared fixtures: small real datasets and a quickly trained model, built once per session."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _threads_are_left_as_found():
    """A test (or the code it runs) that changes torch's thread count and leaves it changed fails here:
    the timing bars of every later test would be measured on fewer cores. (Module fixtures that pin one
    thread for their module and restore it afterwards are set before this runs, so they pass.)"""
    before = torch.get_num_threads()
    yield
    leaked = torch.get_num_threads()
    if leaked != before:
        torch.set_num_threads(before)
        pytest.fail(f"torch thread count left at {leaked} (it was {before} when the test started)")


@pytest.fixture(scope="session")
def digits():
    from workbench.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def mnist():
    from workbench.data import load_dataset

    return load_dataset("mnist10k")


@pytest.fixture(scope="session")
def digits_model(digits):
    """The default CNN trained on scikit-learn's digits (a few seconds)."""
    from workbench.training import train_classifier

    return train_classifier(digits, "cnn", epochs=4, seed=0)


@pytest.fixture(scope="session")
def saved_digits_model(digits_model, tmp_path_factory):
    from workbench.models import save_model

    out = tmp_path_factory.mktemp("model")
    save_model(digits_model.model, out, digits_model.card)
    return out
