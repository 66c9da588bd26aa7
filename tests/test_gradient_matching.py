"""The gradient-matching poisoning engine (attacks/gradient_matching.py) and the attacks built on it (issue 16)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.gradient_matching import adversarial_gradient, gradient_matching, gradient_norms, project
from workbench.errors import BadInput


def _tiny_problem(seed: int = 0):
    """A 2-layer MLP on 6×6 images, poisons of classes 0-2, an adversarial objective: classify 8 target
    images (of other content) as class 1."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, 3))
    base = torch.rand(24, 1, 6, 6, generator=gen)
    labels = torch.arange(24) % 3
    targets = torch.rand(8, 1, 6, 6, generator=gen)

    def train_loss(m, x, y, g):
        return F.cross_entropy(m(x + 0.05 * torch.randn(x.shape, generator=g)), y)  # noise: differentiable augmentation

    def adv_loss(m, g):
        return F.cross_entropy(m(targets), torch.ones(8, dtype=torch.long))

    return model, base, labels, train_loss, adv_loss


def test_crafted_poison_keeps_the_bounds_and_only_moves_inside_the_mask():
    model, base, labels, tl, al = _tiny_problem()
    base[0] = 0.0  # corners of [0, 1]: the projection must keep base + Δ inside
    base[1] = 1.0
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 1:5, 2:6] = 1
    res = gradient_matching(base, labels, [model], tl, al, eps=0.07, mask=mask, steps=15, seed=3)
    assert res.images.shape == base.shape and len(res.alignment) == 15
    assert float(res.delta.abs().max()) <= 0.07 + 1e-6
    assert float(res.delta.abs().max()) > 0.06  # the budget is used, not left at zero
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    assert float(res.delta[:, :, mask[0, 0] == 0].abs().max()) == 0.0
    assert torch.allclose(res.images, base + res.delta, atol=1e-6)
    d = project(torch.full((1, 1, 2, 2), 0.5), torch.tensor([[[[0.9, 0.1], [0.0, 1.0]]]]), 0.2, None)
    assert d.flatten().tolist() == pytest.approx([0.1, 0.2, 0.2, 0.0])


def test_alignment_rises_and_a_training_step_on_the_poison_descends_the_adversarial_loss():
    model, base, labels, tl, al = _tiny_problem()
    res = gradient_matching(base, labels, [model], tl, al, eps=0.3, steps=40, restarts=2, seed=0)
    assert res.alignment[-1] > res.alignment[0] + 0.3, res.alignment
    assert len(res.restart_losses) == 2 and res.restart_losses[res.restart] == min(res.restart_losses)
    # what the poison is for: one SGD step on the poison batch lowers the adversarial loss, one on the
    # unperturbed base poisons raises it (their gradient points elsewhere)
    gen = torch.Generator().manual_seed(0)
    before = float(al(model, gen).detach())

    def after_step(x):
        m = copy.deepcopy(model)
        grads = torch.autograd.grad(F.cross_entropy(m(x), labels), list(m.parameters()))
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads):
                p -= 0.5 * g
        return float(al(m, gen).detach())

    assert after_step(res.images) < before - 0.01
    assert after_step(base) > after_step(res.images) + 0.01


def test_crafting_is_deterministic_given_a_seed_and_retrain_replaces_the_surrogates():
    model, base, labels, tl, al = _tiny_problem()
    a = gradient_matching(base, labels, [model], tl, al, eps=0.1, steps=6, seed=5)
    b = gradient_matching(base, labels, [model], tl, al, eps=0.1, steps=6, seed=5)
    c = gradient_matching(base, labels, [model], tl, al, eps=0.1, steps=6, seed=6)
    assert torch.equal(a.delta, b.delta) and a.alignment == b.alignment
    assert not torch.equal(a.delta, c.delta)
    calls = []

    def retrain(images, rnd):
        calls.append((rnd, images.shape))
        return [_tiny_problem(seed=10 + rnd)[0]]

    gradient_matching(base, labels, [model], tl, al, eps=0.1, steps=8, retrain=retrain, retrain_every=3, seed=0)
    assert calls == [(1, base.shape), (2, base.shape)]  # after steps 3 and 6 (never after step 0 or the last)


def test_gradient_helpers_and_bad_input():
    model, base, labels, tl, al = _tiny_problem()
    g, norm = adversarial_gradient(model, al, torch.Generator().manual_seed(0))
    assert len(g) == 4 and float(norm) == pytest.approx(float(torch.sqrt(sum((t * t).sum() for t in g))))
    norms = gradient_norms(model, tl, base[:3], labels[:3])
    gen = torch.Generator().manual_seed(0)
    one = torch.autograd.grad(tl(model, base[1:2], labels[1:2], gen), list(model.parameters()))
    assert norms.shape == (3,) and float(norms.min()) > 0
    assert float(norms[1]) == pytest.approx(float(torch.sqrt(sum((t * t).sum() for t in one))), rel=0.3)
    for kwargs, msg in (({"eps": 0.0}, "epsilon"), ({"eps": 0.1, "steps": 0}, "steps"),
                        ({"eps": 0.1, "mask": torch.zeros(1, 1, 6, 6)}, "mask is empty"),
                        ({"eps": 0.1, "retrain_every": 2}, "retrain function")):
        with pytest.raises(BadInput, match=msg):
            gradient_matching(base, labels, [model], tl, al, **kwargs)
    with pytest.raises(BadInput, match="labels"):
        gradient_matching(base, labels[:3], [model], tl, al, eps=0.1)
    with pytest.raises(BadInput, match=r"\[0, 1\]"):
        gradient_matching(base + 1, labels, [model], tl, al, eps=0.1)


# ---------------------------------------------------------------- availability: the optimised design
def test_optimised_availability_poison_changes_only_the_budget_within_its_bound(digits):
    from attacks.availability import MatchingOptions, default_trigger, optimise_poison, poison_for_smoothing
    from workbench.data import stratified_subset

    ds = stratified_subset(digits, 600, seed=0)
    base = poison_for_smoothing(ds, default_trigger(3), 0.05, design="random-labels", seed=2)
    opts = MatchingOptions(base="random-labels", poison_eps=0.05, surrogates=1, steps=4, n_sources=32, draws=2)
    p = optimise_poison(base, "smoothing", opts, width=8, epochs=1, seed=2)
    moved = (p.dataset.images - base.dataset.images).flatten(1).abs().amax(1)
    assert set(torch.nonzero(moved > 0).flatten().tolist()) <= set(base.poisoned_indices.tolist())
    assert int((moved > 0).sum()) >= len(base.poisoned_indices) - 2  # (almost) every poison moved
    assert float(moved.max()) <= 0.05 + 1e-6
    assert torch.equal(p.dataset.labels, base.dataset.labels) and torch.equal(p.poisoned_indices, base.poisoned_indices)
    assert p.design == "gradient-matching" and p.crafting["base"] == "random-labels" and len(p.surrogates) == 1
    assert p.describe()["crafting"]["steps"] == 4
    with pytest.raises(BadInput, match="region"):
        optimise_poison(base, "smoothing", MatchingOptions(region="corner"), width=8, epochs=1)


def test_smoothing_vote_objective_equals_a_hand_computed_vote():
    from attacks.availability import smoothing_vote_loss

    class Fixed(nn.Module):  # logits (log 3, 0, 0) everywhere: softmax (0.6, 0.2, 0.2)
        def forward(self, x):
            return torch.log(torch.tensor([[3.0, 1.0, 1.0]])).expand(len(x), 3)

    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 2, 2)
    assert float(smoothing_vote_loss(x, 0.25, draws=3)(Fixed(), gen)) == pytest.approx(0.6)
    ent = -(0.6 * torch.log(torch.tensor(0.6)) + 0.4 * torch.log(torch.tensor(0.2)))
    assert float(smoothing_vote_loss(x, 0.25, objective="entropy")(Fixed(), gen)) == pytest.approx(-float(ent))
    assert float(smoothing_vote_loss(x, 0.25, temperature=0.5)(Fixed(), gen)) == pytest.approx(9 / 11)


def test_cli_and_app_reach_the_gradient_matching_design(tmp_path, digits):
    import json

    from streamlit.testing.v1 import AppTest

    from workbench.cli import main

    out = tmp_path / "gm"
    assert main(["-q", "attack", "availability", "--data", "digits", "--certifier", "ibp", "--design",
                 "gradient-matching", "--craft-steps", "8", "--rate", "0.05", "--eps", "0.05", "--n-test", "20",
                 "--epochs", "2", "--width", "8", "--patch", "3", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())["result"]
    craft = rep["poison"]["crafting"]
    assert rep["poison"]["design"] == "gradient-matching" and craft["base"] == "noise-directions" and craft["steps"] == 8
    assert craft["alignment_last"] > craft["alignment_first"]
    assert main(["-q", "attack", "availability", "--data", "digits", "--design", "witches", "--out", str(out)]) == 2
    at = AppTest.from_string("from workbench.ui import certifiers\ncertifiers.render()", default_timeout=300)
    at.session_state["dataset"] = digits
    at.run()
    at.radio(key="av_cert").set_value("ibp").run()
    at.number_input(key="av_ntest").set_value(20)
    at.number_input(key="av_epochs").set_value(2)
    at.selectbox(key="av_design").set_value("gradient-matching").run()
    at.number_input(key="av_steps").set_value(3)
    at.button(key="av_button").click().run()
    assert not at.exception
    assert any("Gradient-matching poison (from noise-directions)" in c.value for c in at.caption)


# ---------------------------------------------------------------- BLTO: long-lived surrogates, matched poison
def test_blto_gradient_matching_poison_is_clean_label_within_its_budget(digits):
    from attacks.bilevel import (
        gradient_matching_poison,
        make_learned_trigger,
        optimize_bilevel_trigger,
        poison_unlabelled,
    )
    from workbench.data import train_test_split

    tr, _ = train_test_split(digits, 0.2, 0)
    trig = make_learned_trigger(1, 0.1, seed=0)
    mp = gradient_matching_poison(tr, trig, 0, 0.03, epsilon=0.1, simclr_epochs=1, steps=6, negatives=32,
                                  n_sources=32, seed=0)
    idx = mp.poisoned.poisoned_indices
    assert torch.equal(idx, poison_unlabelled(tr, trig, 0.03, 0, seed=0).poisoned_indices)  # the same budget
    assert len(idx) == round(0.03 * len(tr)) and bool((tr.labels[idx] == 0).all())
    assert torch.equal(mp.poisoned.dataset.labels, tr.labels)  # clean label
    moved = (mp.poisoned.dataset.images - tr.images).flatten(1).abs().amax(1)
    assert set(torch.nonzero(moved > 0).flatten().tolist()) == set(idx.tolist())
    assert float(moved.max()) <= 0.1 + 1e-6 and float(mp.poisoned.dataset.images.min()) >= 0.0
    assert len(mp.alignment) == 6 and mp.alignment[-1] > mp.alignment[0], mp.alignment
    # a surrogate lives through one victim run: 1 epoch of 1437 // 128 = 11 steps, 2 inner steps a round
    bt = optimize_bilevel_trigger(tr, 0, 0.03, epsilon=0.1, rounds=2, inner_steps=2, outer_steps=1,
                                  surrogate_epochs=1, batch_size=128, seed=0)
    assert bt.provenance["reinit_every"] == 6 and bt.provenance["surrogate_epochs"] == 1
    with pytest.raises(BadInput, match="surrogate_epochs"):
        optimize_bilevel_trigger(tr, 0, 0.03, surrogate_epochs=-1)
