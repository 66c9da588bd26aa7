"""Soundness of the certifiers: interval bounds that contain what the model can output (random small
models, sampled points and PGD), inputs and layers the bounds cannot describe refused, and the fused
inference copy of randomized smoothing checked before it is trusted."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from workbench.certify import certify_ibp, certify_smoothing, predict_smoothing
from workbench.certify.intervals import logit_bounds, margin_lower_bounds
from workbench.certify.smoothing import inference_copy
from workbench.errors import BadInput
from workbench.models import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ interval bounds: refusals
def test_ibp_refuses_inputs_outside_the_valid_range():
    """Normalised inputs: the box clipped to [0, 1] does not contain them, and on main 29 of 50 were
    "certified" with clean logits outside their own bounds. Refused; with the range they come from
    given, the bounds contain the clean logits again."""
    model = build_model("cnn", 1, 10, 8, seed=0).eval()
    x = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.1307) / 0.3081
    for call in (lambda: certify_ibp(model, x, 0.01), lambda: logit_bounds(model, x, 0.01),
                 lambda: margin_lower_bounds(model, x, 0.01)):
        with pytest.raises(BadInput, match=r"valid input range \[0, 1\]; got values in \[-0.42"):
            call()
    rng = (-0.1307 / 0.3081, (1 - 0.1307) / 0.3081)
    with torch.no_grad():
        lo, hi = logit_bounds(model, x, 0.01, input_range=rng)
        z = model(x)
    assert bool((lo <= z + 1e-5).all() and (z <= hi + 1e-5).all())
    assert len(certify_ibp(model, x, 0.0, input_range=rng)) == 6
    with pytest.raises(BadInput, match="NaN|valid input range"):
        certify_ibp(model, torch.full((1, 1, 8, 8), float("nan")), 0.01)


def test_ibp_refuses_batchnorm_without_running_statistics():
    """In eval mode such a layer still normalises with the batch: perturbing the other inputs of a
    batch moves an input's output, which per-input bounds cannot describe."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the unsoundness itself: the first input's logits depend on the second input
        assert not torch.allclose(model(x)[0], model(torch.stack([x[0], x[1] * 0.5]))[0])
    with pytest.raises(BadInput, match="layer '1'.*without running statistics"):
        certify_ibp(model, x, 0.01)
    with pytest.raises(BadInput, match="without running statistics"):
        logit_bounds(model, x, 0.01)
    assert not model.training  # certify restores the mode it found


def test_ibp_epsilon_must_be_finite():
    with pytest.raises(BadInput, match="finite number >= 0, got inf"):
        certify_ibp(build_model("cnn", 1, 10, 8), torch.rand(2, 1, 8, 8), float("inf"))


# ------------------------------------------------------------------ interval bounds: soundness property
def _random_model(draw, channels: int, size: int) -> nn.Module:
    layers: list[nn.Module] = []
    c, s = channels, size
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.integers(2, 5))
        k = draw(st.sampled_from([1, 3]))
        layers += [nn.Conv2d(c, out, k, stride=draw(st.sampled_from([1, 2])), padding=k // 2)]
        s = (s + 2 * (k // 2) - k) // layers[-1].stride[0] + 1
        c = out
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU())
        if s >= 2 and draw(st.booleans()):
            layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])))
            s //= 2
    hidden = draw(st.integers(3, 8))
    layers += [nn.Flatten(), nn.Linear(c * s * s, hidden), nn.ReLU(), nn.Linear(hidden, draw(st.integers(2, 5)))]
    model = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * draw(st.sampled_from([0.3, 1.0, 2.0])))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
    return model.eval()


@st.composite
def _cases(draw):
    channels, size = draw(st.sampled_from([1, 3])), draw(st.sampled_from([4, 6, 8]))
    model = _random_model(draw, channels, size)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    x = torch.rand(3, channels, size, size, generator=g)
    x[0] = (x[0] > 0.5).float()  # inputs on the edge of [0, 1], where the box is clipped
    return model, x, draw(st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.2]))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(_cases())
def test_ibp_bounds_contain_every_sampled_point_and_pgd_on_random_models(case):
    """The property the certificate rests on: for any point of the ε-box (within [0, 1]) every logit lies
    within its interval bound and every margin above its lower bound. Checked at random points and
    corners and at the end of PGD that pushes each logit up and down and each margin down."""
    model, x, eps = case
    tol = 1e-4
    with torch.no_grad():
        lo, hi = logit_bounds(model, x, eps)
        lb, p = margin_lower_bounds(model, x, eps)
    box_lo, box_hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    points = [x]
    for s in range(6):
        u = torch.rand(x.shape, generator=torch.Generator().manual_seed(s))
        points.append(box_lo + (box_hi - box_lo) * (u.round() if s % 2 else u))
    k = lo.shape[1]
    for target in range(k):  # PGD on each logit, both directions, and on each margin z_p - z_target
        for sign in (1.0, -1.0, 0.0):
            d = x.clone()
            for _ in range(10):
                d.requires_grad_(True)
                z = model(d)
                obj = (z[:, target] * sign).sum() if sign else (z.gather(1, p[:, None])[:, 0] - z[:, target]).sum()
                (grad,) = torch.autograd.grad(-obj if not sign else obj, d)
                d = torch.minimum(torch.maximum(d.detach() + max(eps, 1e-3) / 4 * grad.sign(), box_lo), box_hi)
            points.append(d)
    with torch.no_grad():
        for pt in points:
            z = model(pt)
            assert bool((lo <= z + tol * (1 + z.abs())).all()) and bool((z <= hi + tol * (1 + z.abs())).all())
            margin = z.gather(1, p[:, None]) - z
            finite = torch.isfinite(lb)
            assert bool((lb[finite] <= margin[finite] + tol * (1 + margin[finite].abs())).all())


# ------------------------------------------------------------------ smoothing
@pytest.fixture(scope="module")
def bn_model():
    """A zoo CNN (Conv+BN pairs, which the fused copy folds) with non-trivial BatchNorm statistics."""
    from workbench.data import load_dataset
    from workbench.training import fit

    model = build_model("cnn", 1, 10, 8, seed=0, width=8)
    fit(model, load_dataset("digits").subset(range(600)), epochs=1, batch_size=64, seed=0)
    return model.eval()


def test_fused_and_unfused_smoothing_give_identical_counts(bn_model, digits):
    x = digits.images[1500:1530]
    fused = certify_smoothing(bn_model, x, 0.25, n0=20, n=200, alpha=0.01, batch_size=500, seed=3, fuse=True)
    plain = certify_smoothing(bn_model, x, 0.25, n0=20, n=200, alpha=0.01, batch_size=500, seed=3, fuse=False)
    assert torch.equal(fused.extra["counts_selection"], plain.extra["counts_selection"])
    assert torch.equal(fused.extra["counts_estimation"], plain.extra["counts_estimation"])
    assert torch.equal(fused.predictions, plain.predictions) and torch.equal(fused.radii, plain.radii)
    assert inference_copy(bn_model, x[:4])[1]  # the copy was used, not the fallback


class _ViewHead(nn.Module):
    """Traces fine, but ``view`` fails on the channels-last tensors the fused copy runs on."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 64, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.view(y.shape[0], -1))


def test_a_fused_copy_that_fails_or_differs_is_not_used(digits):
    x = digits.images[:20]
    view = _ViewHead().eval()
    assert inference_copy(view, x[:4]) == (view, False)
    res = certify_smoothing(view, x, 0.25, n0=10, n=50, alpha=0.05, seed=0)  # main: RuntimeError in view
    ref = certify_smoothing(view, x, 0.25, n0=10, n=50, alpha=0.05, seed=0, fuse=False)
    assert torch.equal(res.extra["counts_estimation"], ref.extra["counts_estimation"])



def test_a_fused_copy_whose_logits_differ_is_not_used(bn_model, digits, monkeypatch):
    """A copy that runs but computes something else (simulated: the fusion returns a copy with one
    weight changed) is caught on the probe batch; without a probe it would have been used."""
    import copy

    import torch.fx.experimental.optimization as fx_opt

    real_fuse = fx_opt.fuse

    def wrong_fuse(model, *a, **k):
        fused = real_fuse(copy.deepcopy(model), *a, **k)
        with torch.no_grad():
            next(fused.parameters()).mul_(1.5)
        return fused

    monkeypatch.setattr(fx_opt, "fuse", wrong_fuse)
    x = digits.images[:20]
    assert inference_copy(bn_model, x[:4]) == (bn_model, False)
    assert inference_copy(bn_model)[1]  # the old behaviour: trusted because it traced


def test_smoothing_refuses_an_empty_batch():
    model = build_model("cnn", 1, 10, 8, seed=0)
    for fn in (predict_smoothing, certify_smoothing):
        with pytest.raises(BadInput, match="non-empty"):
            fn(model, torch.zeros(0, 1, 8, 8), 0.25, n=10)
