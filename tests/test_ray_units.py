"""Independent units on Ray (issue 14): the label audit's K fold trainings, and certification and
saliency over shards of a test set, on one real private Ray instance shared by this module, give what
the serial path gives; and the shard mechanics without Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from raytest import private_ray

from workbench.certify import certify_smoothing
from workbench.cli import main
from workbench.errors import BadInput
from workbench.labels import audit_labels, cross_val_pred_probs
from workbench.saliency import explain
from workbench.shards import DataRef, ModelRef, shard_bounds, shard_seed


@pytest.fixture(scope="module")
def ray_local():
    """One private Ray instance (2 CPUs) for the module; run_tasks(ray_address="local") joins it.
    Shut down at the end, failing if any of its processes is left."""
    pytest.importorskip("ray")
    with private_ray(num_cpus=2) as temp:
        yield temp


def _rank_tolerance(n_pix: int, n_img: int) -> float:
    """How far a mean over ``n_img`` maps of a Spearman ρ over ``n_pix`` pixels may move when float32
    rounding that differs across batch sizes swaps one pair of near-tied pixels: one adjacent swap moves
    Σd² by at most 4(n-1)+2, so one map's ρ by at most 6(4n-2)/(n(n²-1)), the mean by that over n_img."""
    return 6 * (4 * n_pix - 2) / (n_pix * (n_pix**2 - 1)) / n_img


def _same_rows(rows_a: list[dict], rows_b: list[dict], rho_tol: float = 1e-6) -> None:
    """Metric rows with the same keys and labels, numbers equal to 1e-6 (float32 means of the model's
    outputs), rank correlations (keys with ρ) to ``rho_tol``; NaN where the other has NaN."""
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            if isinstance(v, float):
                tol = rho_tol if "ρ" in k else 1e-6
                assert (np.isnan(v) and np.isnan(rb[k])) or abs(v - rb[k]) <= tol, (k, ra, rb)
            else:
                assert v == rb[k]


# ---------------------------------------------------------------- without Ray
def test_shard_bounds_cover_the_inputs_in_order():
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert shard_seed(5, 0) == 5 and shard_seed(5, 40) != shard_seed(5, 80)
    with pytest.raises(BadInput, match="shards must be an integer >= 1"):
        shard_bounds(10, 0)


def test_one_shard_is_the_unsharded_call_and_saliency_does_not_depend_on_shards(digits_model, digits,
                                                                                 saved_digits_model):
    model = digits_model.model
    x, y = digits.images[:24], digits.labels[:24]
    kw = {"n0": 10, "n": 60, "alpha": 0.01, "labels": y, "batch_size": 400, "seed": 2}
    whole = certify_smoothing(model, x, 0.25, **kw)
    one = certify_smoothing(model, x, 0.25, shards=1, **kw)
    assert torch.equal(whole.predictions, one.predictions) and torch.equal(whole.radii, one.radii)
    # three shards: the same draws whether the shards get the module and tensors or load them by reference
    kw["fuse"] = False  # (the fused copy is checked above; here it would only be traced once per shard)
    three = certify_smoothing(model, x, 0.25, shards=3, **kw)
    refs = certify_smoothing(ModelRef.of(saved_digits_model, input_shape=digits.input_shape, num_classes=10),
                             DataRef.of("digits", n=24), 0.25, shards=3, **kw)
    assert torch.equal(three.extra["counts_estimation"], refs.extra["counts_estimation"])
    assert torch.equal(three.radii, refs.radii) and three.params["shards"] == 3
    # shard 0 keeps the seed: the first shard's counts are the unsharded call's on those inputs
    first = certify_smoothing(model, x[:8], 0.25, **{**kw, "labels": y[:8]})
    assert torch.equal(three.extra["counts_selection"][:8], first.extra["counts_selection"])

    opts = {"labels": y[:12], "sanity": True, "sanity_layers": 2, "n_steps": 3, "boxes": (1, 1, 5, 5)}
    a = explain(model, x[:12], ["gradcam", "eigencam"], ["relu2", "relu4"], **opts)
    b = explain(model, x[:12], ["gradcam", "eigencam"], ["relu2", "relu4"], shards=5, **opts)
    for key in a.maps:  # per image, so equal whatever the batches (to float rounding across batch sizes)
        assert (a.maps[key] - b.maps[key]).abs().max() <= 1e-6
    assert a.targets == b.targets and a.predictions == b.predictions and a.boxes == b.boxes
    # ρ over 12 maps of 64 pixels: measured on a 2-core EPYC to move 4.0e-6 across shard counts, which a
    # 1e-6 tolerance did not allow; one swap of near-tied pixels allows 4.8e-4
    rho_tol = _rank_tolerance(x.shape[-1] * x.shape[-2], 12)
    _same_rows(a.metrics, b.metrics, rho_tol)
    assert a.randomization.keys() == b.randomization.keys()
    for m in a.randomization:
        assert a.randomization[m]["randomized"] == b.randomization[m]["randomized"]
        for lay, rho in a.randomization[m]["rho"].items():
            np.testing.assert_allclose(rho, b.randomization[m]["rho"][lay], atol=rho_tol, rtol=0)
    with pytest.raises(BadInput, match="unknown saliency method 'gradcan'"):
        explain(model, x, ["gradcan"], shards=2)


def test_a_fold_that_fails_on_bad_input_is_bad_input(digits):
    def not_a_module(c, k, size, seed):
        return "a string"

    with pytest.raises(BadInput, match="the model factory returned str, not an nn.Module"):
        cross_val_pred_probs(digits.subset(range(200)), not_a_module, folds=2, epochs=1, seeds=1)


def test_ray_options_refused_where_they_do_not_apply(tmp_path, saved_digits_model, capsys):
    assert main(["-q", "certify", "--model", str(saved_digits_model), "--data", "digits", "--method", "ibp",
                 "--ray-address", "local", "--out", str(tmp_path / "c")]) == 2
    assert "are for --method smoothing" in capsys.readouterr().err
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1]))
    np.save(tmp_path / "p.npy", np.full((4, 2), 0.5))
    assert main(["-q", "audit", "labels", "--labels", str(tmp_path / "y.npy"), "--pred-probs",
                 str(tmp_path / "p.npy"), "--ray-address", "local", "--out", str(tmp_path / "a")]) == 2
    assert "needs method 'kfold' and no pred_probs" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "a").exists()


# ---------------------------------------------------------------- on Ray
def test_label_audit_folds_on_ray_give_the_serial_probabilities(ray_local, digits, tmp_path):
    kw = {"folds": 3, "epochs": 1, "seeds": 1, "seed": 4, "threads": 1}
    serial = audit_labels(digits, **kw)
    assert main(["-q", "audit", "labels", "--data", "digits", "--folds", "3", "--epochs", "1", "--seeds", "1",
                 "--seed", "4", "--threads", "1", "--ray-address", "local", "--out", str(tmp_path)]) == 0
    on_ray = np.load(tmp_path / "pred_probs.npy")
    assert np.abs(on_ray - serial.pred_probs).max() <= 1e-6
    assert serial.out_of_sample_accuracy > 0.85  # a real audit, not a degenerate one
    flagged = json.loads((tmp_path / "report.json").read_text())["result"]["flagged"]
    assert flagged == serial.flagged.tolist()


def _result(folder):
    return json.loads((folder / "report.json").read_text())["result"]


def test_certify_and_saliency_shards_on_ray_give_the_serial_results(ray_local, saved_digits_model, tmp_path):
    model = ["--model", str(saved_digits_model), "--data", "digits", "--threads", "1"]
    cert = ["certify", *model, "--limit", "90", "--n0", "20", "--n", "200", "--alpha", "0.01", "--seed", "3",
            "--shards", "3"]
    assert main(["-q", *cert, "--out", str(tmp_path / "c_serial")]) == 0
    assert main(["-q", *cert, "--ray-address", "local", "--out", str(tmp_path / "c_ray")]) == 0
    a, b = _result(tmp_path / "c_serial"), _result(tmp_path / "c_ray")
    assert len(a["predictions"]) == 90 and a["params"]["shards"] == 3
    assert a["predictions"] == b["predictions"] and a["radii"] == b["radii"]  # identical, not close
    assert sum(p >= 0 for p in a["predictions"]) > 45  # most inputs certified: a real run

    sal = ["saliency", *model, "--n", "30", "--methods", "gradcam,normgrad", "--layers", "relu2,relu4",
           "--steps", "5", "--no-sanity"]
    assert main(["-q", *sal, "--out", str(tmp_path / "s_serial")]) == 0  # unsharded
    assert main(["-q", *sal, "--ray-address", "local", "--shards", "3", "--out", str(tmp_path / "s_ray")]) == 0
    a, b = _result(tmp_path / "s_serial"), _result(tmp_path / "s_ray")
    assert list(a["maps"]) == list(b["maps"]) == [f"{m}@{l}" for m in ("gradcam", "normgrad") for l in ("relu2", "relu4")]
    for key in ("maps", "combined"):
        for name, m in a[key].items():
            assert np.abs(np.array(m) - np.array(b[key][name])).max() <= 1e-6, name
    assert a["targets"] == b["targets"] and a["predictions"] == b["predictions"]
    _same_rows(a["metrics"], b["metrics"])
