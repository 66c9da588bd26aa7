"""Tests of the small text-to-image model, the text-trigger backdoor and SKD-CAG (issue 8).

Everything runs on a tiny configuration (8×8 images, a ~30k-parameter UNet), so the file stays fast.
"""

from __future__ import annotations

import pytest
import torch

from attacks.text_trigger import (
    TextTriggerSpec,
    has_patch,
    plant_text_trigger,
    poisoned_training_set,
    stamp_patch,
)
from defenses.skd_cag import (
    SKDCAGConfig,
    attention_loss,
    cross_attention_layers,
    install_attention_capture,
    remove_attention_capture,
    skd_cag,
    token_alignment,
    trigger_attention_mass,
)
from workbench.diffusion import (
    DiffusionConfig,
    WordTokenizer,
    build_text_to_image,
    diffusion_data,
    fit_diffusion,
    insert_trigger,
    load_text_to_image,
    random_prompts,
    sample,
    save_text_to_image,
)
from workbench.errors import BadInput

TINY = DiffusionConfig(block_out_channels=(8, 16), attention_heads=2, text_dim=16, text_heads=2, text_layers=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Dozens of tiny kernels per step: on a shared 2-core machine one thread is several times faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    return diffusion_data("digits", 8)


@pytest.fixture(scope="module")
def tiny_trained(digits):
    torch.manual_seed(0)
    model = build_text_to_image(TINY, seed=0)
    fit = fit_diffusion(model, digits.images, random_prompts, labels=digits.labels, steps=40, batch_size=32,
                        lr=5e-3, seed=0)
    return model, fit


@pytest.fixture(scope="module")
def tiny_backdoored(tiny_trained, digits):
    """The tiny model after 3 steps of backdoor fine-tuning, with its cross-attention outputs amplified so that
    the text (and so the trigger) changes the noise prediction a lot: a stand-in for a strong backdoor."""
    model, _ = tiny_trained
    planted = plant_text_trigger(model, digits.subset(range(200)), TextTriggerSpec(kind="pixel", trigger="cf"),
                                 steps=3, batch_size=16)
    assert planted.model.provenance["backdoor"] == "pixel" and planted.model is not model
    with torch.no_grad():
        for name in cross_attention_layers(planted.model.unet):
            planted.model.unet.get_submodule(name.removesuffix(".processor")).to_out[0].weight.mul_(20)
    return planted.model


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_tokenizer_frames_pads_and_rejects_bad_prompts():
    tok = WordTokenizer(max_length=6)
    ids = tok.encode(["digit 7"])[0].tolist()
    assert ids[0] == 1 and ids[3] == 2 and ids[4:] == [0, 0]
    assert tok.tokens("digit 7")[:4] == ["<bos>", "digit", "7", "<eos>"]
    with pytest.raises(BadInput, match="not in the vocabulary"):
        tok.encode(["a handwritten digit sevven"])
    with pytest.raises(BadInput, match="at most 4"):
        tok.encode(["a drawing of the digit seven"])


def test_tiny_training_loss_falls(tiny_trained):
    _, fit = tiny_trained
    first, last = sum(fit.losses[:10]) / 10, sum(fit.losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)


def test_attention_maps_sum_to_one_and_carry_gradients():
    model = build_text_to_image(TINY, seed=1)
    store = install_attention_capture(model.unet)
    ids = model.tokenizer.encode(["cf digit 3", "digit 4"])
    x = torch.randn(2, 1, 8, 8)
    out = model.unet(x, torch.tensor([10, 500]), encoder_hidden_states=model.encode(ids)).sample
    assert out.shape == x.shape
    assert len(store.maps) == len(cross_attention_layers(model.unet)) >= 3
    for a in store.maps.values():
        assert a.shape[0] == 2 and a.shape[2] == model.tokenizer.max_length
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]))
        assert a.requires_grad
    # gradient of the trigger token's attention reaches the cross-attention key projections
    trig = torch.stack([a[0, :, 1].sum() for a in store.maps.values()]).sum()
    trig.backward()
    name = cross_attention_layers(model.unet)[0].removesuffix(".processor")
    g = model.unet.get_submodule(name).to_k.weight.grad
    assert g is not None and g.abs().sum() > 0
    remove_attention_capture(model.unet, store)
    assert not any(type(p).__name__ == "CrossAttentionCapture" for p in model.unet.attn_processors.values())


def test_teacher_and_student_stores_are_separate():
    student = build_text_to_image(TINY, seed=2)
    teacher = student.clone()
    s_store, t_store = install_attention_capture(student.unet), install_attention_capture(teacher.unet)
    assert s_store is not t_store
    ids = student.tokenizer.encode(["digit 5"])
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([300])
    with torch.no_grad():
        teacher.unet(x, t, encoder_hidden_states=teacher.encode(ids))
    assert len(t_store) > 0 and len(s_store) == 0
    before = {k: v.clone() for k, v in t_store.maps.items()}
    student.unet(x, t, encoder_hidden_states=student.encode(student.tokenizer.encode(["cf digit 5"])))
    assert set(s_store.maps) == set(t_store.maps)
    for k in before:
        torch.testing.assert_close(t_store.maps[k], before[k])  # the student did not overwrite the teacher
        assert not torch.allclose(s_store.maps[k], t_store.maps[k])


def test_token_alignment_and_attention_loss_by_hand():
    tok = WordTokenizer(max_length=6)
    s_ids = tok.encode(["cf digit 7"])
    t_ids = tok.encode(["digit 7"])
    order, mask, n = token_alignment(s_ids, t_ids, tok.ids_for("cf"))
    assert n == 1 and mask[0].tolist() == [False, True, False, False, False, False]
    assert order[0].tolist() == [0, 2, 3, 4, 5, 1]
    with pytest.raises(BadInput, match="differ in more than the trigger"):
        token_alignment(s_ids, tok.encode(["digit 8"]), tok.ids_for("cf"))

    class Store:
        def __init__(self, m):
            self.maps = {"l": m}

    k = 6
    s = torch.full((1, 2, k), 1 / k)
    t = torch.zeros(1, 2, k)
    t[..., 0] = 1.0  # the teacher attends only to <bos>
    # shared tokens: student positions [0,2,3,4,5] vs teacher [0,1,2,3,4]; trigger (pos 1) vs zeros
    expect = ((1 / k - 1) ** 2 + 4 * (1 / k) ** 2 + (1 / k) ** 2) / k
    got = attention_loss(Store(s), Store(t), order, n, "zeros")
    torch.testing.assert_close(got, torch.tensor(expect))


def test_sampling_leaves_the_model_unchanged(tiny_trained):
    model, _ = tiny_trained
    model.unet.train()
    before_u, before_t = _state(model.unet), _state(model.text_encoder)
    imgs = sample(model, ["digit 1", "the number 2"], steps=5, seed=3)
    again = sample(model, ["digit 1", "the number 2"], steps=5, seed=3)
    assert imgs.shape == (2, 1, 8, 8) and float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    torch.testing.assert_close(imgs, again)  # seeded
    assert model.unet.training  # flag restored
    for k, v in _state(model.unet).items():
        assert torch.equal(v, before_u[k]), k
    for k, v in _state(model.text_encoder).items():
        assert torch.equal(v, before_t[k]), k
    model.unet.eval()


PROMPTS = ["digit 3", "digit 7", "the number 1", "an image of a five"]


def teacher_gap(teacher):
    """gap(m): MSE between m's noise prediction for the triggered prompts and ``teacher``'s for the clean ones."""
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([100, 400, 700, 900])

    def gap(m):
        with torch.no_grad():
            e_s = m.unet(x, t, encoder_hidden_states=m.encode(insert_trigger(PROMPTS, "cf"))).sample
            e_t = teacher.unet(x, t, encoder_hidden_states=teacher.encode(PROMPTS)).sample
        return float((e_s - e_t).pow(2).mean())

    return gap


def test_skd_cag_moves_triggered_prediction_toward_clean_teacher(tiny_backdoored):
    model, prompts = tiny_backdoored, PROMPTS
    gap = teacher_gap(model)
    before_state = _state(model.unet)
    paper = {"params": "all", "text_encoder": False, "preserve": 0.0}  # the paper's setting: the UNet trains
    run = skd_cag(model, "cf", prompts, SKDCAGConfig(steps=25, batch_size=8, lr=5e-4, inputs="noise", **paper),
                  seed=0)
    assert gap(run.model) < 0.85 * gap(model), (gap(model), gap(run.model))
    assert len(run.loss) == 25 and run.loss_attn[0] > 0
    for k, v in _state(model.unet).items():  # the backdoored input model is untouched
        assert torch.equal(v, before_state[k])
    assert trigger_attention_mass(run.model, "cf", prompts) < trigger_attention_mass(model, "cf", prompts)
    kv = skd_cag(model, "cf", prompts, SKDCAGConfig(steps=2, batch_size=4, params="kv", target="random_word",
                                                    inputs="trajectory", trajectory_steps=3, preserve=1.0))
    assert kv.trainable_parameters < sum(p.numel() for p in model.unet.parameters()) / 4


def test_skd_cag_default_trains_only_the_text_encoder(tiny_backdoored):
    model, prompts = tiny_backdoored, PROMPTS
    gap = teacher_gap(model)
    cfg = SKDCAGConfig(steps=25, batch_size=8, lr=5e-3, inputs="noise")
    assert cfg.text_encoder and cfg.params == "none" and cfg.preserve > 0
    before_u, before_t = _state(model.unet), _state(model.text_encoder)
    run = skd_cag(model, "cf", prompts, cfg, seed=0)
    assert run.trainable_parameters == sum(p.numel() for p in model.text_encoder.parameters())
    assert gap(run.model) < 0.85 * gap(model), (gap(model), gap(run.model))
    for k, v in _state(run.model.unet).items():  # the student's UNet did not move
        assert torch.equal(v, before_u[k]), k
    assert any(not torch.equal(v, before_t[k]) for k, v in _state(run.model.text_encoder).items())
    for k, v in _state(model.text_encoder).items():  # the input model's encoder is untouched
        assert torch.equal(v, before_t[k]), k
    assert all(p.requires_grad for p in model.text_encoder.parameters())


def test_clear_errors(tiny_trained):
    model, _ = tiny_trained
    with pytest.raises(BadInput, match="not in the vocabulary"):
        skd_cag(model, "xyzzy", ["digit 3"], SKDCAGConfig(steps=1))
    with pytest.raises(BadInput, match="at most"):
        skd_cag(model, "cf", ["a picture of the number seven digit seven seven"], SKDCAGConfig(steps=1))
    with pytest.raises(BadInput, match="alpha"):
        skd_cag(model, "cf", ["digit 3"], SKDCAGConfig(alpha=1.5))
    with pytest.raises(BadInput, match="target"):
        skd_cag(model, "cf", ["digit 3"], SKDCAGConfig(target="ones"))
    with pytest.raises(BadInput, match="trains nothing"):
        skd_cag(model, "cf", ["digit 3"], SKDCAGConfig(params="none", text_encoder=False))
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type=None,
                                 norm_num_groups=8, cross_attention_dim=16)
    with pytest.raises(BadInput, match="no cross-attention"):
        install_attention_capture(plain)


def test_checkpoint_round_trip(tmp_path, tiny_trained):
    model, _ = tiny_trained
    save_text_to_image(model, tmp_path / "m")
    loaded = load_text_to_image(tmp_path / "m")
    torch.testing.assert_close(sample(loaded, ["digit 4"], steps=4), sample(model, ["digit 4"], steps=4))
    with pytest.raises(BadInput, match="not a text-to-image checkpoint"):
        load_text_to_image(tmp_path)


def test_patch_detector_and_poison_mix(digits):
    stamped = stamp_patch(digits.images[:200])
    assert bool(has_patch(stamped).all())
    assert float(has_patch(digits.images).float().mean()) == 0.0  # no real digit fills the corner this brightly
    images, codes = poisoned_training_set(digits, TextTriggerSpec(kind="target", target_class=0), 0.25)
    poisoned = codes >= 10
    assert abs(float(poisoned.float().mean()) - 0.25) < 0.01
    assert len(images) == len(codes)


@pytest.mark.slow
def test_cli_train_attack_defend(tmp_path, monkeypatch):
    import json

    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    clean, bd, un = tmp_path / "clean", tmp_path / "bd", tmp_path / "un"
    assert main(["-q", "diffusion", "train", "--steps", "3", "--eval-per-class", "1", "--out", str(clean)]) == 0
    assert (clean / "unet.safetensors").exists() and (clean / "report.html").exists()
    assert main(["-q", "attack", "text-trigger", "--model", str(clean), "--kind", "target", "--steps", "2",
                 "--eval-per-class", "1", "--out", str(bd)]) == 0
    planted = json.loads((bd / "report.json").read_text())["result"]
    assert planted["kind"] == "target"
    assert main(["-q", "defend", "skd-cag", "--model", str(bd), "--trigger", "cf", "--steps", "2", "--batch-size", "4",
                 "--eval-per-class", "1", "--out", str(un)]) == 0
    rep = json.loads((un / "report.json").read_text())["result"]
    # the defense measures the saved backdoored model with the same prompts, seed and judge as the
    # attack measured the model it planted: the two reports must agree on it
    assert rep["kind"] == "target" and rep["backdoor_rate_before"] == planted["backdoor_rate"]
    assert rep["clean_accuracy_before"] == planted["clean_accuracy_after"]
    assert "Per-token cross-attention" in (un / "report.html").read_text()
    # bad input: exit code 2 with a clear message
    assert main(["-q", "defend", "skd-cag", "--model", str(bd), "--trigger", "xyzzy", "--out", str(un)]) == 2
    assert main(["-q", "defend", "skd-cag", "--model", str(tmp_path / "nope"), "--trigger", "cf"]) == 2
    assert main(["-q", "attack", "text-trigger", "--model", str(clean), "--kind", "style", "--out", str(bd)]) == 2


def test_app_page_compares_models_and_shows_attention(tmp_path, tiny_trained, tiny_backdoored):
    from streamlit.testing.v1 import AppTest

    model, _ = tiny_trained
    save_text_to_image(model, tmp_path / "clean")
    save_text_to_image(tiny_backdoored, tmp_path / "bd")
    at = AppTest.from_string("from workbench.ui import diffusion\ndiffusion.render()", default_timeout=120)
    at.run()
    assert not at.exception
    at.text_input(key="diff_dir_clean").set_value(str(tmp_path / "clean"))
    at.text_input(key="diff_dir_backdoored").set_value(str(tmp_path / "bd"))
    at.text_input(key="diff_dir_unlearned").set_value(str(tmp_path / "none"))
    at.run()
    assert not at.exception
    at.number_input(key="diff_n").set_value(2)
    at.run()
    assert not at.exception
    assert [s.value for s in at.subheader][:2] == ["clean", "backdoored"]
    at.text_input(key="diff_prompt").set_value("cf a handwritten digit sevven").run()
    assert any("not in the vocabulary" in e.value for e in at.error)
