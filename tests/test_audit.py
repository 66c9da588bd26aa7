"""The audit: registry validation, the backdoor scan on a backdoored vs a clean model, CLI exits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.audit import CHECKS, audit
from workbench.errors import BadInput


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Neural Cleanse's small batches run faster on one thread than on two contending ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(args):
    from workbench.cli import main

    return main(args)


# ---------------------------------------------------------------- registry and bad input
def test_registry_lists_every_check_with_needs_and_params():
    assert {"accuracy", "labels", "poison", "backdoor", "robustness", "explanations", "data"} <= set(CHECKS)
    for name, check in CHECKS.items():
        assert check.name == name and check.title
        for key, par in check.params.items():  # every default passes its own range check
            assert par.check(name, key, par.default) == par.default


def test_unknown_check_is_exit_2_naming_the_known_ones(tmp_path, capsys):
    code = _run(["audit", "run", "--model", str(tmp_path), "--data", "digits", "--checks", "accuracy,bogus",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown check 'bogus'" in err and "backdoor" in err and "labels" in err
    assert not (tmp_path / "out").exists()


def test_config_key_and_range_are_exit_2(tmp_path, capsys):
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[backdoor]\nthreshhold = 3\n")
    assert _run(["audit", "run", "--model", str(tmp_path), "--data", "digits", "--config", str(cfg),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'threshhold'" in err and "threshold" in err and "n_images" in err
    cfg.write_text("[accuracy]\nwarn_below = 1.5\n")
    assert _run(["audit", "run", "--model", str(tmp_path), "--data", "digits", "--config", str(cfg),
                 "--out", str(tmp_path / "out")]) == 2
    assert "accuracy.warn_below must be in [0.0, 1.0], got 1.5" in capsys.readouterr().err
    cfg.write_text("[nosuch]\nx = 1\n")
    assert _run(["audit", "run", "--model", str(tmp_path), "--data", "digits", "--config", str(cfg),
                 "--out", str(tmp_path / "out")]) == 2
    assert "no check 'nosuch'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unmet_needs_say_what_to_pass(digits):
    from workbench.zoo import build_model

    net = build_model("cnn", 1, 10, 8)  # no card: the held-out split is unknown, and no --test given
    with pytest.raises(BadInput, match="needs a small clean set: a test set \\(--test\\)"):
        audit(net, digits, checks=["backdoor"])
    # unnamed checks whose needs are not met are skipped, with the reason
    rep = audit(net, digits.sample(300), checks=None, config={"backdoor": {"steps": 1}})
    assert "backdoor" in rep.skipped and "--test" in rep.skipped["backdoor"]
    assert "backdoor" not in [o.check for o in rep.outcomes]


# ---------------------------------------------------------------- Neural Cleanse on a backdoored model
@pytest.fixture(scope="module")
def backdoored(digits):
    """A digits CNN with a BadNets backdoor (2×2 patch, 10% poisoned, target 0)."""
    from attacks.backdoor import run_backdoor_attack

    return run_backdoor_attack(digits, "badnets", 0.1, 0, seed=0, epochs=4, patch_size=2)


def test_train_test_overlap_is_a_share_of_the_test_set(digits):
    """5 of 20 test images are training images: 25% of the test set (5% of the training set, which
    an earlier rule divided by, passing a 20% threshold it should fail)."""
    train = digits.subset(range(100))
    test = digits.subset(list(range(0, 5)) + list(range(200, 215)))
    rep = audit(None, train, "data", {"data": {"test_overlap_fail_above": 0.2}}, test=test)
    r = rep.outcome("data").result
    assert (r.n_test, r.test_in_train) == (20, 5)
    assert list(r.test_overlap) == [0, 1, 2, 3, 4]
    cond = {c.name: c for c in rep.outcome("data").conditions}["train/test overlap"]
    assert cond.verdict == "fail"
    assert cond.reason == "5 of 20 (25.0%) test images also appear in the training set."


class _Planted(torch.nn.Module):
    """A clean model with a hand-planted backdoor: when the mean of the 2×2 block at rows and columns
    6-7 reaches 0.75, class 0's logit gains 30. Four pixels at 0.75 or more fire it, so the smallest
    trigger Neural Cleanse can find has a mask L1 of at most 4."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        gate = torch.sigmoid(10 * (x[:, :, 6:8, 6:8].mean((1, 2, 3)) - 0.75))
        out = self.base(x)
        return out + 30 * gate[:, None] * torch.nn.functional.one_hot(torch.tensor(0), out.shape[1]).to(out)


def test_backdoor_scan_finds_a_planted_trigger_of_known_size(digits_model):
    """A trained backdoor's trigger on 8×8 digits is not a fixed size: over seeds 0-4 × {1, 2} threads a
    2×2 BadNets (10%, 4 epochs) was flagged in 3 of 5 seeds (target anomaly index 1.1-2.5; in CI the
    target's mask was 5.7 against 11.3). A planted trigger has a known size. Measured over seeds 0-4
    at one thread (80 passes; the two-thread run did not finish in the session): the target's mask L1
    3.07-3.23, ≤ 0.50 × every other class's, anomaly index 2.16-3.42 and the largest; another class's
    natural trigger reached anomaly index 2.23 (seed 3), so the test does not ask for the target alone."""
    from defenses.neural_cleanse import neural_cleanse

    res = neural_cleanse(_Planted(digits_model.model.eval()), digits_model.test, n_images=100, steps=80, seed=0)
    assert 0 in res.flagged and int(np.argmax(res.anomaly_index)) == 0
    assert res.l1_norms[0] <= 4.0  # the planted trigger's own size bounds the smallest trigger
    assert res.l1_norms[0] < 0.6 * np.min(res.l1_norms[1:])


def test_backdoor_scan_passes_the_clean_model(digits_model):
    from defenses.neural_cleanse import neural_cleanse

    res = neural_cleanse(digits_model.model, digits_model.test, n_images=100, steps=20, seed=0)
    assert res.flagged == [] and res.max_anomaly_index < 2


def test_anomaly_index_matches_the_reference_formula():
    from defenses.neural_cleanse import anomaly_indices, flag_classes

    norms = np.array([10.0, 11.0, 12.0, 9.0, 10.5, 2.0, 11.5, 10.0, 9.5, 30.0])
    med = np.median(norms)
    mad = 1.4826 * np.median(np.abs(norms - med))
    assert np.allclose(anomaly_indices(norms), (med - norms) / mad)
    assert flag_classes(norms) == [5]  # 30 is an outlier too, but a large trigger is not a backdoor


# ---------------------------------------------------------------- the whole audit through the CLI
def test_cli_audit_passes_clean_model_and_a_toml_override_fails_it(saved_digits_model, tmp_path, capsys):
    out = tmp_path / "audit"
    args = ["-q", "audit", "run", "--model", str(saved_digits_model), "--data", "digits",
            "--checks", "accuracy,backdoor,data", "--out", str(out), "--json"]
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[backdoor]\nsteps = 20\nn_images = 100\n")
    assert _run([*args, "--config", str(cfg)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [c["check"] for c in summary["checks"]] == ["accuracy", "backdoor", "data"]
    assert {c["check"]: c["verdict"] for c in summary["checks"]}["backdoor"] == "pass"
    report = (out / "report.html").read_text()
    assert report.index("Verdicts") < report.index("Neural Cleanse")
    # the same model fails once the accuracy bar is raised above what it reaches
    cfg.write_text("[backdoor]\nsteps = 20\nn_images = 100\n[accuracy]\nfail_below = 0.999\n")
    assert _run([*args, "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert "accuracy: accuracy fail:" in err and "is below 100%" in err


def test_audit_report_joins_poison_and_label_evidence(backdoored):
    ds = backdoored.poisoned.dataset
    rep = audit(backdoored.model, ds, checks=["labels", "poison"], test=backdoored.test)
    poison, labels = rep.outcome("poison").result, rep.outcome("labels").result
    s = rep.suspects
    assert set(s.columns) >= {"given", "suggested", "label_score", "poison_score", "likely_poison", "verdict"}
    issue = np.zeros(len(ds), dtype=bool)
    issue[labels.flagged] = True
    v = s.columns["verdict"]
    assert np.array_equal(v == "both", issue & poison.likely_poison)
    assert np.array_equal(v == "likely poison", ~issue & poison.likely_poison)
    assert np.array_equal(v == "label error", issue & ~poison.likely_poison)
    assert sorted(s.order.tolist()) == np.flatnonzero(v != "").tolist()
    csv = s.csv().splitlines()
    assert csv[0].startswith("index,given") and len(csv) == len(s.order) + 1


# ---------------------------------------------------------------- the poison check (held-out cluster test)
def _toy(n_train=800, n_held=400, seed=0):
    """Two classes of 4-d Gaussian features: class a has a natural second mode (30% of it, in training and
    held-out samples alike), which the relative-size rule of activation clustering takes for poison."""
    from workbench.data import ImageDataset

    g = torch.Generator().manual_seed(seed)
    y, yh = torch.arange(n_train) % 2, torch.arange(n_held) % 2
    f, fh = torch.randn(n_train, 4, generator=g), torch.randn(n_held, 4, generator=g)
    f[: int(0.6 * n_train * 0.5):2, 1] += 6.0  # 30% of class a's training samples in a second mode
    fh[: int(0.6 * n_held * 0.5):2, 1] += 6.0  # and 30% of its held-out samples
    tr = ImageDataset(torch.zeros(n_train, 1, 8, 8, dtype=torch.uint8), y, ["a", "b"], "train")
    ho = ImageDataset(torch.zeros(n_held, 1, 8, 8, dtype=torch.uint8), yh, ["a", "b"], "held-out")
    return tr, ho, f, fh, y.clone()


def test_cluster_test_passes_a_natural_mode_and_its_p_is_the_binomial_tail():
    from scipy.stats import binom

    from defenses.cluster_test import cluster_test
    from defenses.detectors import activation_clustering_detect
    from workbench.models import architecture

    tr, ho, f, fh, pred = _toy()
    net = architecture("cnn", 1, 2, 8)
    assert activation_clustering_detect(net, tr, features=f).details["per_class"]["a"]["suspected"]
    r = cluster_test(net, tr, ho, features=f, heldout_features=fh, predictions=pred)
    assert r.verdicts == ["no evidence", "no evidence"] and r.flagged == [] and not r.likely_poison.any()
    # the tested cluster's p is the exact binomial tail of its held-out count at its training share
    h = round(r.heldout_share[0] * r.n_heldout[0])
    assert r.p_values[0] == pytest.approx(binom.cdf(h, r.n_heldout[0], r.train_share[0]), rel=1e-12)
    assert r.bar == pytest.approx(1e-3 / (9 * 2))  # nine clusters (k = 2, 3, 4) per class, two classes


def test_cluster_test_flags_a_learned_cluster_the_held_out_set_lacks_and_warns_on_an_unlearned_one():
    from defenses.cluster_test import cluster_test
    from workbench.models import architecture

    tr, ho, f, fh, pred = _toy()
    f[1:241:2, 2] += 8.0  # 120 samples of class b (30% of it) in a cluster no held-out b fills
    net = architecture("cnn", 1, 2, 8)
    r = cluster_test(net, tr, ho, features=f, heldout_features=fh, predictions=pred)
    assert r.verdicts == ["no evidence", "poison likely"] and r.flagged == [1]
    assert r.likely_poison[1:241:2].all() and int(r.likely_poison.sum()) == 120
    assert r.in_flagged_class.tolist() == (tr.labels == 1).tolist()
    pred[1:241:2] = 0  # the model does not put them in class b: label errors, not a learned trigger
    r = cluster_test(net, tr, ho, features=f, heldout_features=fh, predictions=pred)
    assert r.verdicts == ["no evidence", "unlearned cluster"] and not r.likely_poison.any()


def test_cluster_test_is_inconclusive_when_too_few_held_out_samples_could_show_it():
    from defenses.cluster_test import cluster_test
    from workbench.models import architecture

    tr, ho, f, fh, pred = _toy()
    f[1:241:2, 2] += 8.0
    keep = list(range(0, 400, 2)) + list(range(1, 40, 2))  # 20 held-out samples of class b
    r = cluster_test(architecture("cnn", 1, 2, 8), tr, ho.subset(keep), features=f, heldout_features=fh[keep],
                     predictions=pred)
    # 1 - bar^(1/20) = 39% > min_share 10%: a 30% poison cluster can be neither found nor ruled out
    assert r.verdicts == ["no evidence", "inconclusive"] and r.flagged == []
    assert "at least 39% of the class" in r.reasons[1]
    r = cluster_test(architecture("cnn", 1, 2, 8), tr, ho.subset(keep), features=f, heldout_features=fh[keep],
                     predictions=pred, min_share=0.4)  # asked only for clusters of 40%: no evidence
    assert r.verdicts == ["no evidence", "no evidence"]


def test_poison_check_flags_the_backdoor_target_and_its_samples(backdoored):
    """Measured on this fixture's recipe (digits, 2×2 patch, 10%, target 0, 4 epochs) over seeds 0-4 ×
    {1, 2} threads: fail with class 0 alone in 10 of 10, precision 1.00 and recall 1.00 in 10 of 10,
    the target's p 1.5e-11..2.6e-6 against a bar of 5e-5, the other classes' smallest p 3.9e-3..0.12.
    Bars: precision and recall 0.95."""
    ds = backdoored.poisoned.dataset
    rep = audit(backdoored.model, ds, checks=["poison"], test=backdoored.test)
    out = rep.outcome("poison")
    r = out.result
    assert out.verdict == "fail" and r.flagged == [0]
    truth = backdoored.poisoned.is_poisoned.numpy()
    tp = int((r.likely_poison & truth).sum())
    assert tp / r.likely_poison.sum() >= 0.95 and tp / truth.sum() >= 0.95
    assert "class 0: poison likely" in out.failing[0].reason


def test_poison_check_on_digits_is_inconclusive_not_a_pass_and_passes_at_the_share_it_can_see(digits_model):
    """digits' 20% split holds 36 images per class: the test can find only a cluster of 27% of a class,
    not the 10% a 1% poison makes, so the clean model's check is inconclusive; asked for 30%, it passes.
    Measured on the fixture's recipe (digits, 4 epochs) over seeds 0-4 × {1, 2} threads: the smallest
    per-class p 5.4e-3..4.9e-2 against a bar of 1.1e-5, so 'no evidence' at min_share 0.3 in 10 of 10."""
    rep = audit(digits_model.model, digits_model.train, checks=["poison"], test=digits_model.test)
    out = rep.outcome("poison")
    assert out.verdict == "inconclusive" and "at least 27% of the class" in out.conditions[0].reason
    rep = audit(digits_model.model, digits_model.train, checks=["poison"], config={"poison": {"min_share": 0.3}},
                test=digits_model.test)
    assert rep.outcome("poison").verdict == "pass"
    assert rep.outcome("poison").result.p_values.min() > 1e-3


# ---------------------------------------------------------------- the app page
def test_app_audit_page_shows_verdicts_first_and_the_suspects(digits_model, digits):
    from streamlit.testing.v1 import AppTest

    from workbench.models import LoadedModel

    at = AppTest.from_string("from workbench.ui import audit\naudit.render()", default_timeout=300)
    at.session_state["dataset"] = digits  # the card's held-out split of it is the poison check's clean set
    at.session_state["model"] = LoadedModel(digits_model.model, digits_model.card, "digits-cnn")
    at.run()
    at.multiselect(key="audit_checks").set_value(["labels", "poison"]).run()
    at.button(key="audit_run").click().run()
    assert not at.exception and not at.error
    verdicts = at.dataframe[0].value
    assert list(verdicts["check"]) == ["labels", "poison"]
    report = at.session_state["audit_report"]
    assert list(verdicts["verdict"]) == [o.verdict for o in report.outcomes]
    assert any(s.value.startswith("Suspects") for s in at.subheader) == (len(report.suspects.order) > 0)
