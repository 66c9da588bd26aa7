import numpy as np
import pytest
import torch

from workbench.errors import BadInput
from workbench.models import build_model
from workbench.training import (
    confusion_matrix,
    evaluate,
    fit,
    gaussian_noise,
    predict_proba,
    random_shift,
    resolve_device,
    train_classifier,
)


def test_random_shift_moves_pixels_exactly():
    x = torch.zeros(3, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0
    gen = torch.Generator().manual_seed(0)
    out, _ = random_shift(2)(x, torch.zeros(3), gen)
    gen = torch.Generator().manual_seed(0)
    shifts = torch.randint(-2, 3, (3, 2), generator=gen)
    for i in range(3):
        dy, dx = shifts[i].tolist()
        expected = torch.zeros(6, 6)
        expected[2 + dy, 3 + dx] = 1.0
        assert torch.equal(out[i, 0], expected)


def test_gaussian_noise_statistics():
    x = torch.zeros(200, 1, 16, 16)
    out, _ = gaussian_noise(0.25)(x, None, torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - 0.25) < 0.005 and abs(float(out.mean())) < 0.005


def test_training_is_deterministic(digits):
    small = digits.subset(range(300))
    a, b = build_model("cnn", 1, 10, 8, seed=0), build_model("cnn", 1, 10, 8, seed=0)
    fit(a, small, epochs=1, seed=3, transform=random_shift(1))
    fit(b, small, epochs=1, seed=3, transform=random_shift(1))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_fit_bad_input(digits, monkeypatch):
    m = build_model("cnn", 1, 10, 8)
    with pytest.raises(BadInput, match="epochs"):
        fit(m, digits, epochs=0)
    with pytest.raises(BadInput, match="labels"):
        fit(m, (digits.images[:10], digits.labels[:9]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on a machine with CUDA
    with pytest.raises(BadInput, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(BadInput, match="CUDA is not available"):
        fit(m, digits, epochs=1, device="cuda:1")
    assert resolve_device("auto") == torch.device("cpu")


def test_digits_model_learns(digits_model):
    # default CNN, 4 epochs on 1,437 digits: a held-out 20% is classified well above chance
    assert digits_model.evaluation.accuracy >= 0.95
    cm = digits_model.evaluation.confusion
    assert cm.sum() == len(digits_model.test) and np.trace(cm) / cm.sum() == pytest.approx(digits_model.evaluation.accuracy)
    p = predict_proba(digits_model.model, digits_model.test.images[:20])
    assert torch.allclose(p.sum(1), torch.ones(20), atol=1e-5)


def test_confusion_matrix_hand_case():
    cm = confusion_matrix(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


@pytest.mark.slow
def test_default_cnn_bar_on_mnist10k(mnist):
    """The Foundation bar: >= 97% on a seeded held-out 20% of MNIST-10k in under 2 minutes."""
    r = train_classifier(mnist, "cnn", seed=0)
    assert r.evaluation.accuracy >= 0.97
    assert r.history.seconds < 120
    assert evaluate(r.model, r.test).accuracy == r.evaluation.accuracy
