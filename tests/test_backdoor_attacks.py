"""Backdoor attacks: triggers, poisoning, BadNets/Blended end to end, SimCLR and BLTO (issue 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from attacks.backdoor import make_trigger, run_backdoor_attack
from attacks.bilevel import (
    TriggerGenerator,
    make_learned_trigger,
    optimize_bilevel_trigger,
    poison_unlabelled,
    stamp,
)
from attacks.poison import backdoor_metrics, poison_dataset
from attacks.triggers import BlendTrigger, LearnedTrigger, PatchTrigger
from workbench.contrastive import Augment, encode, linear_probe, nt_xent, train_simclr
from workbench.data import ImageDataset, stratified_subset, train_test_split
from workbench.errors import BadInput


# ---------------------------------------------------------------- triggers
def test_patch_trigger_stamps_exactly_its_box():
    x = torch.rand(5, 1, 28, 28) * 0.5
    t = PatchTrigger(size=3, position="bottom-right", margin=1)
    assert t.box(28, 28) == (24, 24, 27, 27)
    out = t(x)
    mask = torch.zeros(28, 28, dtype=torch.bool)
    mask[24:27, 24:27] = True
    assert torch.equal(out[:, :, mask], torch.ones(5, 1, 9))
    assert torch.equal(out[:, :, ~mask], x[:, :, ~mask])
    assert PatchTrigger(size=4, position="top-left", margin=0).box(8, 8) == (0, 0, 4, 4)
    assert PatchTrigger(size=2, position=(3, 5)).box(8, 8) == (3, 5, 5, 7)
    checker = PatchTrigger(size=2, position="top-left", pattern="checkerboard", margin=0)(torch.zeros(1, 3, 8, 8))
    assert checker[0, :, :2, :2].tolist() == [[[1.0, 0.0], [0.0, 1.0]]] * 3
    assert float(checker[0, :, 2:, :].abs().sum()) == 0.0


def test_blend_trigger_is_the_convex_combination():
    x = torch.rand(4, 1, 8, 8)
    t = BlendTrigger(alpha=0.15, seed=3)
    pattern = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(t(x), 0.85 * x + 0.15 * pattern, atol=1e-7)
    assert t.box(8, 8) == (0, 0, 8, 8)
    assert torch.equal(make_trigger("blended", alpha=0.15, pattern_seed=3)(x), t(x))  # seeded: reproducible


def test_learned_trigger_and_generator_respect_the_linf_bound():
    trig = make_learned_trigger(1, epsilon=0.05, seed=0)
    with torch.no_grad():
        for p in trig.generator.parameters():  # large weights: tanh saturates, the bound must still hold
            p.mul_(50)
    x = torch.cat([torch.zeros(2, 1, 12, 12), torch.ones(2, 1, 12, 12), torch.rand(4, 1, 12, 12)])
    out = stamp(trig, x)
    assert out.shape == x.shape
    assert float((out - x).abs().max()) <= 0.05 + 1e-6
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().max()) > 0.04  # it does perturb, up to the bound
    assert TriggerGenerator(3)(torch.rand(2, 3, 9, 11)).shape == (2, 3, 9, 11)  # odd sizes keep their shape


# ---------------------------------------------------------------- poisoning and metrics
def test_poisoned_indices_and_labels_are_what_was_asked(digits):
    trig = PatchTrigger(size=2)
    p = poison_dataset(digits, trig, rate=0.05, target=3, seed=1)
    n = round(0.05 * len(digits))
    idx = p.poisoned_indices
    assert len(idx) == n and len(set(idx.tolist())) == n
    assert bool((digits.labels[idx] != 3).all())
    assert bool((p.dataset.labels[idx] == 3).all())
    untouched = ~p.is_poisoned
    assert torch.equal(p.dataset.labels[untouched], digits.labels[untouched])
    assert torch.equal(p.dataset.images[untouched], digits.images[untouched])
    assert torch.equal(p.dataset.images[idx], trig(digits.images[idx]))
    assert torch.equal(p.original_labels, digits.labels)
    # all-to-all and a source-class filter
    a2a = poison_dataset(digits, trig, rate=0.05, target=None, seed=1)
    assert torch.equal(a2a.dataset.labels[a2a.poisoned_indices], (digits.labels[a2a.poisoned_indices] + 1) % 10)
    src = poison_dataset(digits, trig, rate=0.02, target=0, source_classes=[1, 2], seed=0)
    assert set(digits.labels[src.poisoned_indices].tolist()) <= {1, 2}
    # clean-label: only target-class images, labels unchanged
    clean = poison_dataset(digits, trig, rate=0.05, target=4, mode="clean", seed=0)
    assert bool((digits.labels[clean.poisoned_indices] == 4).all())
    assert torch.equal(clean.dataset.labels, digits.labels)


class _PixelClassifier(nn.Module):
    """Predicts the class written into pixel (0, 0) as value/10: ignores any trigger elsewhere."""

    def forward(self, x):
        return nn.functional.one_hot((x[:, 0, 0, 0] * 10).round().long(), 10).float()


class _Constant(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()


def test_asr_excludes_target_class_images():
    labels = torch.arange(10).repeat(5)
    images = torch.zeros(50, 1, 8, 8)
    images[:, 0, 0, 0] = labels / 10
    test = ImageDataset(images, labels, [str(k) for k in range(10)], "pixels")
    trig = PatchTrigger(size=2)
    # a model that ignores the trigger predicts target-class images as the target: not counted
    m = backdoor_metrics(_PixelClassifier(), test, trig, target=0)
    assert m.n_triggered == 45 and m.attack_success_rate == 0.0
    assert m.clean_accuracy == 1.0 and m.robust_accuracy == 1.0
    m = backdoor_metrics(_Constant(0), test, trig, target=0)
    assert m.attack_success_rate == 1.0 and math.isclose(m.clean_accuracy, 0.1, rel_tol=1e-6)
    # all-to-all: every triggered image counts, success means y + 1
    assert backdoor_metrics(_PixelClassifier(), test, trig, target=None).n_triggered == 50


# ---------------------------------------------------------------- bad input
def test_clear_errors_on_bad_input(digits):
    tr, te = train_test_split(digits, 0.2, 0)
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(BadInput, match="rate"):
            run_backdoor_attack(digits, "badnets", rate=rate, train=tr, test=te)
    with pytest.raises(BadInput, match="target class"):
        run_backdoor_attack(digits, "badnets", rate=0.05, target=10, train=tr, test=te)
    with pytest.raises(BadInput, match="does not fit"):
        run_backdoor_attack(digits, "badnets", rate=0.05, patch_size=9, train=tr, test=te)
    for alpha in (-0.1, 1.5):
        with pytest.raises(BadInput, match="alpha"):
            run_backdoor_attack(digits, "blended", rate=0.05, alpha=alpha, train=tr, test=te)
    with pytest.raises(BadInput, match="unknown attack"):
        make_trigger("trojannn")
    with pytest.raises(BadInput, match="candidates of target class 0"):  # ~11% of digits are zeros
        run_backdoor_attack(digits, "badnets", rate=0.2, mode="clean", train=tr, test=te)
    with pytest.raises(BadInput, match="only .* images of target class 0"):
        optimize_bilevel_trigger(tr, target=0, rate=0.2, rounds=1)
    with pytest.raises(BadInput, match="epsilon"):
        make_learned_trigger(1, epsilon=0.0)
    with pytest.raises(BadInput, match="target class"):
        optimize_bilevel_trigger(tr, target=-1, rate=0.01, rounds=1)


# ---------------------------------------------------------------- BadNets end to end
@pytest.mark.slow
def test_small_badnets_run_reaches_high_asr_and_saliency_points_at_the_patch(digits, digits_model):
    r = run_backdoor_attack(digits, "badnets", rate=0.1, target=0, patch_size=3, epochs=4, seed=0)
    assert r.metrics.attack_success_rate >= 0.9
    assert r.metrics.clean_accuracy >= 0.9
    assert len(r.poisoned.poisoned_indices) == round(0.1 * len(r.train))
    assert r.triggered_confusion.sum() == r.metrics.n_triggered
    assert r.triggered_confusion[0].sum() == 0  # target-class rows are excluded
    s = r.summary(n_examples=4)
    assert s.example_triggered.shape == (4, 1, 8, 8) and s.poisoned_indices == r.poisoned.poisoned_indices.tolist()
    # saliency: the backdoored model's maps point at the patch far more often than a clean model's
    # (digits_model: the same split, seed and recipe without poison)
    from attacks.backdoor_saliency import backdoor_saliency

    sal = backdoor_saliency({"backdoored": r.model, "clean": digits_model.model}, r.test, r.trigger, 0,
                            methods=["normgrad"], layer="relu2", n_images=100)
    assert sal.box == (4, 4, 7, 7)
    assert sal.hit_rate("normgrad", "backdoored") >= sal.hit_rate("normgrad", "clean") + 0.2


# ---------------------------------------------------------------- SimCLR
def test_nt_xent_matches_a_hand_computed_case():
    z1 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised: a1 = (1, 0), a2 = (0, 1)
    z2 = torch.tensor([[5.0, 0.0], [-1.0, 0.0]])  # b1 = (1, 0), b2 = (-1, 0)
    e = math.e
    # anchor: similarities to the three others (positive first), tau = 1
    a1 = -math.log(e ** 1 / (e ** 1 + e ** 0 + e ** -1))  # b1 = 1, a2 = 0, b2 = -1
    a2 = -math.log(e ** 0 / (3 * e ** 0))  # b2 = 0, a1 = 0, b1 = 0
    b1 = a1  # a1 = 1, a2 = 0, b2 = -1
    b2 = -math.log(e ** 0 / (e ** 0 + e ** -1 + e ** -1))  # a2 = 0, a1 = -1, b1 = -1
    assert math.isclose(float(nt_xent(z1, z2, temperature=1.0)), (a1 + a2 + b1 + b2) / 4, rel_tol=1e-6)
    # only the second pair's anchors (a2, b2); the first pair's views stay negatives
    assert math.isclose(float(nt_xent(z1, z2, 1.0, anchors=torch.tensor([False, True]))), (a2 + b2) / 2, rel_tol=1e-6)
    # temperature 0.5 doubles every similarity
    a1h = -math.log(e ** 2 / (e ** 2 + 1 + e ** -2))
    b2h = -math.log(1 / (1 + 2 * e ** -2))
    assert math.isclose(float(nt_xent(z1, z2, temperature=0.5)), (2 * a1h + math.log(3) + b2h) / 4, rel_tol=1e-6)


def test_augment_is_seeded_batched_and_in_range():
    x = torch.rand(16, 1, 28, 28)
    a, b = Augment()(x, torch.Generator().manual_seed(0)), Augment()(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a[0], Augment()(x, torch.Generator().manual_seed(1))[0])


@pytest.mark.slow
def test_simclr_learns_features_a_linear_probe_can_use(digits):
    tr, te = train_test_split(digits, 0.3, 0)
    r = train_simclr(tr, epochs=3, batch_size=128, seed=0)
    assert r.loss_per_epoch[-1] < r.loss_per_epoch[0]
    feats = encode(r.encoder, te)
    assert feats.shape == (len(te), 128)
    probe = linear_probe(r.encoder, tr, te)
    assert probe.accuracy >= 0.85
    # the probe as a torch classifier agrees with sklearn's predictions
    logits = probe.as_classifier()(te.images)
    assert (logits.argmax(1) == probe.predict(te.images)).float().mean() >= 0.99


# ---------------------------------------------------------------- BLTO mechanics
def test_blto_optimisation_keeps_the_bound_and_poisons_target_images_only(digits):
    tr = stratified_subset(digits, 400, 0)
    bt = optimize_bilevel_trigger(tr, target=2, rate=0.05, epsilon=0.1, rounds=3, inner_steps=2, outer_steps=3,
                                  reinit_every=2, batch_size=64, lr=1e-2, seed=0)
    assert len(bt.outer_similarity) == 3 and len(bt.inner_loss) == 3
    assert isinstance(bt.trigger, LearnedTrigger) and bt.trigger.epsilon == 0.1
    out = stamp(bt.trigger, tr.images)
    assert float((out - tr.images).abs().max()) <= 0.1 + 1e-6
    p = poison_unlabelled(tr, bt.trigger, 0.05, 2, seed=0)
    assert len(p.poisoned_indices) == 20 and bool((tr.labels[p.poisoned_indices] == 2).all())
    assert torch.equal(p.dataset.labels, tr.labels) and not p.dataset.images.requires_grad
    moved = (p.dataset.images - tr.images).abs().flatten(1).amax(1)
    assert bool((moved[p.is_poisoned] > 0).all()) and float(moved[~p.is_poisoned].max()) == 0.0


# ---------------------------------------------------------------- CLI and app page
def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, capsys):
    from workbench.cli import main

    out = str(tmp_path / "r")
    assert main(["attack", "badnets", "--data", "digits", "--rate", "1.5", "--out", out]) == 2
    assert "rate" in capsys.readouterr().err
    assert main(["attack", "badnets", "--data", "digits", "--patch-size", "9", "--out", out]) == 2
    assert main(["attack", "blended", "--data", "digits", "--alpha", "2", "--out", out]) == 2
    assert main(["attack", "badnets", "--data", "digits", "--target", "12", "--out", out]) == 2
    assert main(["attack", "badnets", "--data", "digits", "--target", "seven", "--out", out]) == 2
    assert main(["attack", "bilevel", "--data", "digits", "--rate", "0.5", "--out", out]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_badnets_and_bilevel_write_reports(tmp_path):
    import json

    from workbench.cli import main
    from workbench.models import load_model

    out = tmp_path / "bd"
    assert main(["-q", "attack", "badnets", "--data", "digits", "--rate", "0.1", "--patch-size", "2",
                 "--epochs", "1", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["n_poisoned"] == len(rep["poisoned_indices"]) == round(0.1 * 1437)
    assert (out / "report.html").stat().st_size > 1000
    saved = load_model(out)
    assert saved.card.provenance["backdoor"]["attack"] == "badnets"
    # the reported figures are those of the saved model, recomputed from scratch on the same split
    from workbench.data import load_dataset, train_test_split

    _, test = train_test_split(load_dataset("digits"), 0.2, 0)
    m = backdoor_metrics(saved.model, test, make_trigger("badnets", patch_size=2), 0)
    assert rep["attack_success_rate"] == pytest.approx(m.attack_success_rate)
    assert rep["clean_accuracy"] == pytest.approx(m.clean_accuracy)
    assert saved.card.provenance["attack_success_rate"] == pytest.approx(m.attack_success_rate)
    conf = np.array(rep["triggered_confusion"])
    assert conf[:, 0].sum() / conf.sum() == pytest.approx(m.attack_success_rate)  # ASR = target column share
    out2 = tmp_path / "blto"
    assert main(["-q", "attack", "bilevel", "--data", "digits", "--rate", "0.02", "--rounds", "1", "--inner-steps",
                 "1", "--outer-steps", "1", "--simclr-epochs", "1", "--out", str(out2)]) == 0
    rep = json.loads((out2 / "report.json").read_text())["result"]
    assert rep["n_poisoned"] == round(0.02 * 1437) and (out2 / "trigger_generator.safetensors").exists()


def test_backdoors_page_shows_the_trigger_preview_and_defenses_tab(digits):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string("from workbench.ui import backdoors\nbackdoors.render()", default_timeout=300)
    at.session_state["dataset"] = digits
    at.run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Poisoning attack", "BLTO (contrastive)", "Saliency", "Defenses"]
    assert any("Trigger preview" in m.value for m in at.markdown)
    at.selectbox(key="bd_attack").select("blended").run()
    assert not at.exception
    assert any("'alpha': 0.15" in m.value for m in at.markdown)
