"""The procedurally generated ``shapes`` set: seeded, balanced, the spec's sizes, and refusals of bad specs."""

import numpy as np
import pytest

from workbench.data import load_dataset
from workbench.errors import BadInput
from workbench.synthetic import CLASS_NAMES, make_shapes, parse_spec


def test_same_seed_same_images_other_seed_other_images():
    a, la = make_shapes(n=200, seed=5)
    b, lb = make_shapes(n=200, seed=5)
    c, lc = make_shapes(n=200, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(la, lc)
    assert np.mean(a != c) > 0.5  # nearly every pixel differs between seeds


def test_classes_are_balanced_and_the_spec_sets_size_and_channels():
    x, y = make_shapes(n=1003, seed=0)
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
    ds = load_dataset("shapes:rgb,n=50")
    assert ds.input_shape == (3, 32, 32) and len(ds) == 50 and ds.class_names == CLASS_NAMES
    assert load_dataset("shapes:n=40,size=16").input_shape == (1, 16, 16)


def test_shapes_are_drawn_where_the_class_says():
    # a disk covers its centre; a ring of thin stroke leaves its centre at the background level
    from workbench.synthetic import _shape_alpha

    g = np.linspace(-1.5, 1.5, 31)
    y, x = np.meshgrid(g, g, indexing="ij")
    p = {"stroke": np.full((1, 1, 1), 0.2)}
    aa = np.full((1, 1, 1), 0.05)
    disk = _shape_alpha(0, x[None], y[None], x[None], y[None], p, aa)[0]
    ring = _shape_alpha(1, x[None], y[None], x[None], y[None], p, aa)[0]
    assert disk[15, 15] == 1.0 and disk[0, 0] == 0.0
    assert ring[15, 15] == 0.0 and ring[15, 15 + 9] == 1.0  # radius 0.9 lies on the stroke [0.8, 1.0]


@pytest.mark.parametrize("spec", ["shapes:size=4", "shapes:channels=2", "shapes:n=1e9", "shapes:bogus",
                                  "shapes:seed=-1", "shapes:n=5"])
def test_bad_specs_are_refused_in_one_line(spec):
    with pytest.raises(BadInput) as e:
        load_dataset(spec)
    assert "\n" not in str(e.value) and "shapes spec" in str(e.value)


def test_parse_spec_variants():
    assert parse_spec("") == {"size": 28, "channels": 1, "n": 12000, "seed": 0}
    assert parse_spec("rgb,seed=2") == {"size": 32, "channels": 3, "n": 12000, "seed": 2}
