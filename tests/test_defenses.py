"""Poison detectors, NAB preprocessing and test-time stamping, DER, the defend/detect CLI and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.poison import poison_dataset
from attacks.triggers import PatchTrigger
from defenses.detectors import (
    HEAD_INPUT,
    activation_clustering_detect,
    check_ratio,
    detect,
    detection_quality,
    flag_top,
    head_input_layer,
    head_inputs,
    lga_detect,
    spectral_detect,
)
from defenses.metrics import defense_effectiveness_rating, der
from defenses.nab import (
    StampedModel,
    defensive_trigger,
    filter_inputs,
    nab_stamp,
    pseudo_labels_nc,
    pseudo_labels_vd,
)
from workbench.data import ImageDataset, train_test_split
from workbench.errors import BadInput
from workbench.layers import default_feature_layer
from workbench.training import train_on_split


@pytest.fixture(scope="module")
def poisoned_digits(digits):
    """A strong BadNets poison on digits: 5% of the training split, 3×3 checkerboard in the corner."""
    train, test = train_test_split(digits, 0.2, 0)
    p = poison_dataset(train, PatchTrigger(size=3, margin=0, pattern="checkerboard"), 0.05, 0, seed=0)
    victim = train_on_split(p.dataset, test, epochs=6, seed=0)
    return p, victim, train, test


# ----------------------------------------------------------------------------- detectors
def test_detectors_find_strong_badnets_poison(poisoned_digits):
    """Activation clustering and spectral signatures read the victim's features and find the poison.

    LGA trains its own model, and at this scale whether that model learns the trigger within a few
    flooded epochs depends on the seed, the thread count and the CPU (README, "LGA is unstable at this
    scale"): measured here for seeds 0-4 at 1 and 2 threads, its precision at 5% ranged from 0.00 to
    1.00 and its AUROC from 0.30 to 1.00, for 3 to 10 epochs and lr 1e-3 or 3e-3 alike. So no detection
    bar is asserted for LGA; what it reliably does is asserted instead: the same seed on the same
    machine gives the same scores, its flagged set is the lowest-loss samples, and the flood holds the
    training loss up (median per-sample CE 0.16-0.42 after flooded training vs at most 0.001 after
    plain cross-entropy training with the same data, epochs and learning rate, measured in those runs).
    """
    p, victim, _, _ = poisoned_digits
    pi = p.poisoned_indices
    chance = len(pi) / len(p.dataset)  # precision of a random flagged set
    ac = activation_clustering_detect(victim.model, p.dataset, 0.05).with_truth(pi)
    assert ac.quality.precision >= 0.8 and ac.quality.recall >= 0.8, ac.quality
    lga = lga_detect(p.dataset, 0.05, epochs=3, batch_size=32, lr=3e-3).with_truth(pi)
    again = lga_detect(p.dataset, 0.05, epochs=3, batch_size=32, lr=3e-3)
    assert torch.equal(lga.scores, again.scores) and torch.equal(lga.flagged, again.flagged)
    ce = -lga.scores  # score = -CE of the flooded model, per sample
    assert float(ce.median()) >= 0.05, float(ce.median())  # plain CE training: <= 0.001
    assert float(ce[lga.flagged].max()) <= float(ce[lga.flagged_mask.logical_not()].min())
    spec = spectral_detect(victim.model, p.dataset, 0.05).with_truth(pi)
    assert spec.quality.auroc >= 0.85 and spec.quality.precision >= 5 * chance, spec.quality
    for res in (ac, lga, spec):
        assert res.scores.shape == (len(p.dataset),)
        assert len(res.flagged) == round(0.05 * len(p.dataset)) and len(res.flagged.unique()) == len(res.flagged)
        # the flagged set is exactly the top-scored samples
        assert res.scores[res.flagged].min() >= res.scores[res.flagged_mask.logical_not()].max()


def test_head_input_features_find_what_the_penultimate_layer_misses(poisoned_digits):
    """NAB's default detector: spectral signatures on the input of the first fully connected layer.

    On the zoo CNN the penultimate layer (relu5, after fc1) splits the poison by source class; the
    pooled conv features feeding fc1 keep the trigger as one direction (digits fixture: recall 0.89
    vs 0.38, AUROC 0.998 vs 0.948 when written)."""
    p, victim, _, _ = poisoned_digits
    pi = p.poisoned_indices
    head = spectral_detect(victim.model, p.dataset, 0.05, layer=HEAD_INPUT).with_truth(pi)
    pen = spectral_detect(victim.model, p.dataset, 0.05).with_truth(pi)
    assert head.quality.recall >= 0.8 and head.quality.auroc >= 0.99, head.quality
    assert head.quality.recall > pen.quality.recall + 0.2, (head.quality, pen.quality)
    assert head.params["layer"] == HEAD_INPUT and pen.params["layer"] == "relu5"
    ac = detect("ac", p.dataset, victim.model, 0.05, layer=HEAD_INPUT, poisoned_indices=pi)
    assert ac.quality.recall >= 0.9, ac.quality
    assert torch.equal(detect("spectral", p.dataset, victim.model, 0.05, layer="penultimate").scores, pen.scores)


def test_head_input_is_the_first_linear_layers_input():
    from workbench.hooks import layer_outputs
    from workbench.models import build_model

    x = torch.rand(5, 1, 16, 16)
    cnn = build_model("cnn", 1, 10, 16, seed=0)
    assert head_input_layer(cnn) == "fc1" and torch.equal(head_inputs(cnn, x), layer_outputs(cnn, x, "gap"))
    res = build_model("resnet", 1, 10, 16, seed=0)
    assert head_input_layer(res) == "fc" and torch.equal(head_inputs(res, x), layer_outputs(res, x, "flatten"))
    convs = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(BadInput, match="no fully connected"):
        spectral_detect(convs, ImageDataset(x, torch.arange(5) % 2, ["a", "b"], "x"), layer=HEAD_INPUT)


def test_nab_default_detector_is_the_same_in_library_and_cli():
    import inspect

    from defenses.nab import run_nab
    from workbench.cli.defend import nab

    lib = inspect.signature(run_nab).parameters
    cli = inspect.signature(nab).parameters
    assert lib["detector"].default == cli["detector"].default.default == "spectral"
    assert lib["layer"].default == cli["layer"].default.default == HEAD_INPUT
    assert lib["ratio"].default == cli["ratio"].default.default == 0.05


def test_activation_clustering_uses_the_relative_size_rule():
    """Chen et al.'s rule: a class is suspicious only when its smaller cluster holds <= 35% of it. Here
    class 0 is clean but splits cleanly in two halves (a tight two-style class, silhouette ~0.98) and
    class 1 hides 5 poisoned samples in a small far cluster (silhouette ~0.7). Scoring every small
    cluster above every large one, as before, flagged class 0's half (precision 0 at the poison's
    ratio); with the rule the poison is flagged and class 0 is not suspected."""
    g = torch.Generator().manual_seed(0)
    two_styles = torch.cat([torch.full((50, 2), 0.1), torch.full((50, 2), 0.9)]) + 0.01 * torch.randn(100, 2, generator=g)
    wide = torch.tensor([0.3, 0.7]) + 0.08 * torch.randn(95, 2, generator=g)
    poison = torch.tensor([0.9, 0.1]) + 0.01 * torch.randn(5, 2, generator=g)
    feats = torch.cat([two_styles, wide, poison]).clamp(0, 1)
    ds = ImageDataset(feats.view(200, 1, 1, 2), torch.tensor([0] * 100 + [1] * 100), ["clean", "target"], "toy")
    model = nn.Sequential(nn.Flatten())  # the features are the inputs
    res = activation_clustering_detect(model, ds, 5 / 200, layer="0").with_truth(range(195, 200))
    per_class = res.details["per_class"]
    assert per_class["clean"]["small_cluster_share"] >= 0.45 and not per_class["clean"]["suspected"]
    assert per_class["target"]["small_cluster_share"] == 0.05 and per_class["target"]["suspected"]
    assert per_class["clean"]["silhouette"] > per_class["target"]["silhouette"]
    assert res.flagged.sort().values.tolist() == [195, 196, 197, 198, 199] and res.quality.auroc == 1.0
    assert res.details["suspected_classes"] == ["target"]
    with pytest.raises(BadInput, match="size_threshold"):
        activation_clustering_detect(model, ds, 0.05, layer="0", size_threshold=0.9)


def test_detection_quality_hand_computed():
    scores = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    flagged = flag_top(scores, 0.5)  # 3 of 6
    assert flagged.tolist() == [0, 1, 3]
    q = detection_quality(scores, flagged, [0, 2])
    assert (q.precision, q.recall, q.n_true_positives) == (1 / 3, 0.5, 1)
    # AUROC by hand: positives {0.9, 0.1} vs negatives {0.8, 0.7, 0.2, 0.3}: 4 + 0 wins of 8 pairs
    assert q.auroc == pytest.approx(0.5)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 0.51, 1.0, float("nan")])
def test_isolation_ratio_out_of_range(ratio, digits):
    with pytest.raises(BadInput, match="isolation ratio"):
        check_ratio(ratio)
    with pytest.raises(BadInput, match="isolation ratio"):
        detect("spectral", digits, nn.Linear(2, 2), ratio)


def test_detector_needs_a_feature_layer(digits):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # declares no feature layer: its head's input is used
    assert default_feature_layer(plain, (1, 8, 8)) == "1:input"
    no_head = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())  # no Linear and nothing declared
    with pytest.raises(BadInput, match="no nn.Linear classifier layer and declares no feature layer"):
        spectral_detect(no_head, digits)
    with pytest.raises(BadInput, match="unknown layer 'relu9'"):
        activation_clustering_detect(plain, digits, layer="relu9")
    with pytest.raises(BadInput, match="needs a model"):
        detect("ac", digits, None)
    with pytest.raises(BadInput, match="unknown detector"):
        detect("strip", digits, plain)


# ----------------------------------------------------------------------------- NAB preprocessing
def _toy(n=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 1, 8, 8, generator=g) * 0.5, torch.arange(n) % k, [str(c) for c in range(k)], "toy")


def test_stamping_touches_exactly_isolated_samples_whose_label_changes():
    ds = _toy()
    trig = defensive_trigger(margin=0)
    isolated = torch.tensor([1, 4, 6, 10])
    given = ds.labels[isolated]  # 1, 1, 0, 1
    pseudo = torch.tensor([1, 2, 0, 0])  # changes at samples 4 and 10 only
    out = nab_stamp(ds, isolated, pseudo, trig)
    assert out.stamped.tolist() == [4, 10]
    changed = (out.dataset.labels != ds.labels).nonzero().flatten().tolist()
    assert changed == [4, 10] and out.dataset.labels[[4, 10]].tolist() == [2, 0]
    touched = (out.dataset.images != ds.images).flatten(1).any(1).nonzero().flatten().tolist()
    assert touched == [4, 10]
    assert torch.equal(out.dataset.images[[4, 10]], trig(ds.images[[4, 10]]))
    assert torch.equal(out.dataset.images[[4, 10], :, :2, :2], torch.ones(2, 1, 2, 2))
    assert given.tolist() == [1, 1, 0, 1] and torch.equal(ds.labels, torch.arange(12) % 3)  # input untouched
    with pytest.raises(BadInput, match="pseudo labels"):
        nab_stamp(ds, isolated, pseudo[:3], trig)


def test_pseudo_labels_nc_nearest_centre():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 1.0], [1.0, 0.1]])
    labels = torch.tensor([0, 0, 1, 1, 0, 1])  # samples 4 and 5 carry the wrong label
    got = pseudo_labels_nc(feats, labels, torch.tensor([4, 5]), 2)
    assert got.tolist() == [1, 0]


def test_pseudo_labels_vd_and_missing_class(poisoned_digits):
    p, _, train, test = poisoned_digits
    clean = train.subset(torch.arange(600))  # a third of the training split, as a defender's clean subset
    labels, _, acc = pseudo_labels_vd(clean, p.dataset.images[p.poisoned_indices], epochs=8, test=test)
    true = p.original_labels[p.poisoned_indices]
    assert acc > 0.8 and float((labels == true).float().mean()) > 0.8
    no_nines = train.subset(torch.nonzero(train.labels != 9).flatten()[:200])
    with pytest.raises(BadInput, match="no sample of class"):
        pseudo_labels_vd(no_nines, p.dataset.images[:5])


# ----------------------------------------------------------------------------- test time
class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []
        self.lin = nn.Linear(64, 3)

    def forward(self, x):
        self.seen.append(x.clone())
        return self.lin(x.flatten(1))


def test_wrapper_stamps_every_input():
    trig = defensive_trigger()
    rec = _Recorder()
    wrapped = StampedModel(rec, trig)
    x = torch.rand(7, 1, 8, 8) * 0.5
    out = wrapped(x)
    y0, x0, y1, x1 = trig.box(8, 8)
    assert len(rec.seen) == 1 and torch.all(rec.seen[0][:, :, y0:y1, x0:x1] == 1.0)
    assert torch.equal(rec.seen[0], trig(x)) and torch.equal(out, rec.lin(trig(x).flatten(1)))
    # the filter rejects exactly the inputs whose prediction the stamp changes
    pred, rejected = filter_inputs(rec, trig, x)
    plain = rec.lin(x.flatten(1)).argmax(1)
    assert torch.equal(pred, out.argmax(1)) and torch.equal(rejected, plain != pred)


# ----------------------------------------------------------------------------- DER
def test_der_sign_on_hand_made_numbers():
    # ASR 100% -> 2%, CA 99% -> 98%: [0.98 - 0.01 + 1] / 2
    assert defense_effectiveness_rating(0.99, 1.0, 0.98, 0.02) == pytest.approx(0.985)
    # a "defense" that raises ASR and lowers CA can never score above 0.5
    assert defense_effectiveness_rating(0.99, 0.5, 0.90, 0.9) == pytest.approx((0 - 0.09 + 1) / 2)
    # gaining CA is not rewarded (max(0, ΔCA)), nothing changed -> 0.5
    assert defense_effectiveness_rating(0.9, 0.9, 0.95, 0.9) == pytest.approx(0.5)

    class M:  # BackdoorMetrics-like
        def __init__(self, ca, asr):
            self.clean_accuracy, self.attack_success_rate = ca, asr

    assert der(M(0.99, 1.0), M(0.98, 0.02)) == pytest.approx(0.985)
    assert der(M(0.99, 1.0), M(0.98, 0.02)) > der(M(0.99, 1.0), M(0.98, 0.5))
    with pytest.raises(BadInput):
        defense_effectiveness_rating(99.0, 100.0, 98.0, 2.0)  # percentages, not rates


# ----------------------------------------------------------------------------- CLI
def test_cli_detect_and_errors(tmp_path, saved_digits_model):
    from workbench.cli import main

    out = tmp_path / "det"
    assert main(["-q", "detect", "--data", "digits", "--model", str(saved_digits_model), "--method", "spectral",
                 "--out", str(out)]) == 0
    rows = (out / "flagged.csv").read_text().splitlines()
    assert rows[0] == "index,score" and len(rows) - 1 == round(0.05 * 1797)
    assert (out / "report.html").exists()
    assert main(["-q", "detect", "--data", "digits", "--method", "ac", "--out", str(out)]) == 2  # no model
    assert main(["-q", "detect", "--data", "digits", "--model", str(saved_digits_model), "--ratio", "0.7",
                 "--out", str(out)]) == 2
    np.save(tmp_path / "truth.npy", np.array([1, 2, 99999]))
    assert main(["-q", "detect", "--data", "digits", "--model", str(saved_digits_model), "--method", "spectral",
                 "--truth", str(tmp_path / "truth.npy"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_cli_defend_nab_end_to_end(tmp_path):
    import json

    from workbench.cli import main

    out = tmp_path / "nab"
    code = main(["-q", "defend", "nab", "--data", "digits", "--attack", "badnets", "--rate", "0.05",
                 "--epochs", "3", "--detector", "ac", "--ratio", "0.1", "--no-baselines", "--out", str(out)])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["n_isolated"] == round(0.1 * 1437)
    before, after = rep["undefended"], rep["nab"]
    # NAB defends exactly as well as its detection. The default (spectral signatures at 5%, set on MNIST-10k)
    # isolates only 22-67% of the poison on digits' 3-epoch model (AUROC 0.71-0.97), and NAB left ASR at
    # 27-80% over seeds 0-4 (80.5% in CI). Activation clustering at 10%, measured over seeds 0-4 × {1, 2}
    # threads: ASR 81-100% -> 0.0-0.3%, CA 96-99% -> 83.6-94.2%.
    assert before["attack_success_rate"] >= 0.8  # the backdoor took
    assert after["attack_success_rate"] <= 0.05, (before, after)
    assert after["clean_accuracy"] >= 0.80 and rep["der_nab"] >= 0.8, (after, rep["der_nab"])
    assert rep["der_nab"] == pytest.approx(defense_effectiveness_rating(
        before["clean_accuracy"], before["attack_success_rate"], after["clean_accuracy"], after["attack_success_rate"]))
    # the saved model is the NAB model: its card carries the figures the report shows
    from workbench.models import load_model

    card = load_model(out).card
    assert card.provenance["attack_success_rate"] == pytest.approx(after["attack_success_rate"])
    assert (out / "report.html").exists()
    assert main(["-q", "defend", "nab", "--data", "digits", "--ratio", "0.6", "--out", str(out)]) == 2


# ----------------------------------------------------------------------------- app
@pytest.mark.slow
def test_app_section_detect_then_nab():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string("from workbench.ui import defenses\ndefenses.render()", default_timeout=600)
    at.run()
    at.selectbox(key="def_method").set_value("spectral")
    at.button(key="def_run_detect").click().run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    # the figures shown are the library's: the same attack and detector, run again from scratch
    from attacks.backdoor import run_backdoor_attack
    from workbench.data import load_dataset

    att = run_backdoor_attack(load_dataset("digits"), "badnets", 0.05, 0, seed=0, epochs=4)
    q = detect("spectral", att.poisoned.dataset, att.model, 0.05, layer=HEAD_INPUT,
               poisoned_indices=att.poisoned.poisoned_indices).quality
    assert shown == {"flagged": str(round(0.05 * 1437)), "precision": f"{100 * q.precision:.1f}%",
                     "recall": f"{100 * q.recall:.1f}%", "AUROC": f"{q.auroc:.3f}"}
    at.button(key="def_run_nab").click().run()
    assert not at.exception and len(at.dataframe) == 1
    table = at.dataframe[0].value
    assert list(table["defense"])[0] == "no defense" and len(table) == 3
    undefended = table.iloc[0]
    assert (float(undefended["CA %"]), float(undefended["ASR %"])) == (
        round(100 * att.metrics.clean_accuracy, 2), round(100 * att.metrics.attack_success_rate, 2))
    assert float(undefended["ASR %"]) >= 80 and all(float(a) < float(undefended["ASR %"]) for a in table["ASR %"][1:])
    at.radio(key="def_mode").set_value("My dataset and model").run()
    assert not at.exception and "Data & model" in at.warning[0].value
