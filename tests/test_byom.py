"""Bring your own model and data: third-party models (transformers ResNet, ConvNeXt, ViT; a factory
nn.Sequential) and data in the forms users have, through the library and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from byom import build_zoo, tinted_digits
from torch import nn

from workbench.adapter import as_model, logits_of, model_mode, num_classes_of
from workbench.cli import main
from workbench.data import ImageDataset, as_dataset, held_out, load_dataset, train_test_split
from workbench.errors import BadInput
from workbench.layers import default_cam_layer, default_feature_layer, spatial_layout
from workbench.models import load_model
from workbench.saliency import EigenCAM, GradCAM, NormGrad, explain


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("byom"))


# ---------------------------------------------------------------- the adapter
class _Returns(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return {"tensor": z, "dict": {"logits": z, "loss": None}, "tuple": (z, x),
                "object": SimpleNamespace(logits=z), "none": None}[self.kind]


def test_adapter_takes_every_output_form_and_normalises_in_pixel_space():
    x = torch.rand(5, 1, 2, 2)
    base = _Returns("tensor")
    for kind in ("dict", "tuple", "object"):
        m = _Returns(kind)
        m.fc = base.fc
        assert torch.equal(as_model(m)(x), base(x))
    assert torch.equal(as_model(lambda t: {"logits": base(t)})(x), base(x))  # a plain callable
    with pytest.raises(BadInput, match="returned NoneType, which holds no logits"):
        as_model(_Returns("none"))(x)
    with pytest.raises(BadInput, match="logits have shape"):
        logits_of(torch.zeros(2, 3, 4))
    # normalisation and resize happen inside the adapter: the model sees (resize(x) - mean) / std
    seen = {}

    def spy(t):
        seen["x"] = t
        return torch.zeros(len(t), 2)

    as_model(spy, mean=[0.5], std=[0.25], size=(4, 4))(x)
    expected = (torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False) - 0.5) / 0.25
    assert torch.allclose(seen["x"], expected)


def test_layer_names_are_the_users_own_and_modes_are_not_flipped():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3)).eval()
    adapter = as_model(net)
    maps = GradCAM(adapter, "1").attribute(torch.rand(2, 1, 4, 4))
    assert maps.shape == (2, 1, 4, 4)
    assert not net.training and not adapter.training  # probing never leaves the user's model in train mode
    with pytest.raises(BadInput, match="unknown layer 'inner.1'"):
        GradCAM(adapter, "inner.1")


def _frozen_bn_net() -> nn.Module:
    """A model in train mode whose BatchNorm the user froze (eval): fine-tuning with frozen statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2 * 4 * 4, 3)).train()
    net[1].eval()
    return net


def _flags(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_model_mode_restores_each_modules_own_flag():
    net = _frozen_bn_net()
    want = [True, True, False, True, True, True]
    assert _flags(net) == want
    with model_mode(net) as m:
        assert m is net and _flags(net) == [False] * 6
    assert _flags(net) == want  # the frozen BatchNorm is still eval, the rest still train
    with model_mode(net, train=True):
        assert _flags(net) == [True] * 6
    assert _flags(net) == want
    with pytest.raises(RuntimeError, match="boom"), model_mode(net):
        raise RuntimeError("boom")
    assert _flags(net) == want  # restored when the block raises
    with pytest.raises(BadInput, match="needs an nn.Module"), model_mode(lambda x: x):
        pass


def test_library_entry_points_keep_a_frozen_batchnorm_frozen():
    from workbench.certify.smoothing import sample_counts
    from workbench.hooks import layer_outputs
    from workbench.saliency.base import eval_mode
    from workbench.training import predict_logits

    net = _frozen_bn_net()
    want = _flags(net)
    stats = (net[1].running_mean.clone(), net[1].running_var.clone())
    x = torch.rand(6, 1, 4, 4)
    predict_logits(net, x, batch_size=4)
    layer_outputs(net, x, "1", batch_size=4)
    sample_counts(net, x, 3, 0.25, batch_size=5)
    assert num_classes_of(net, (1, 4, 4)) == 3
    with eval_mode(net):
        pass
    GradCAM(net, "0").attribute(x)
    assert _flags(net) == want
    # The old save-and-restore (model.train(was)) set the BatchNorm back to train; a later forward would
    # then have moved its running statistics. With its flag kept, they stay put.
    with torch.no_grad():
        net(x)
    assert torch.equal(net[1].running_mean, stats[0]) and torch.equal(net[1].running_var, stats[1])


# ---------------------------------------------------------------- layers of real architectures
def test_layouts_channels_last_and_tokens(zoo):
    convnext, vit = zoo["modules"]["convnext"], zoo["modules"]["vit"]
    x = zoo["dataset"].images[:4]
    res = explain(convnext, x, ["gradcam"], ["convnext.encoder.stages.1.layers.0.pwconv1"], metrics=False)
    assert res.layouts["convnext.encoder.stages.1.layers.0.pwconv1"] == "nhwc"
    assert res.maps["gradcam@convnext.encoder.stages.1.layers.0.pwconv1"].shape == (4, 32, 32)
    # the permuted view is what a by-hand permute gives
    layer = "convnext.encoder.stages.1.layers.0.pwconv1"
    raw = {}
    mod = dict(convnext.inner.named_modules())[layer]
    h = mod.register_forward_hook(lambda m, i, o: raw.__setitem__("a", o))
    convnext(x)
    h.remove()
    lay = spatial_layout(layer, raw["a"], (32, 32), mod)
    assert torch.equal(lay.to_nchw(raw["a"]), raw["a"].permute(0, 3, 1, 2))
    res = explain(vit, x, ["gradcam", "eigencam"], ["vit.layers.1.layernorm_before"], metrics=False)
    assert res.layouts["vit.layers.1.layernorm_before"] == "tokens (1 prefix token dropped, 8×8 grid)"
    assert res.maps["gradcam@vit.layers.1.layernorm_before"].shape == (4, 32, 32)
    assert float(res.maps["gradcam@vit.layers.1.layernorm_before"].std()) > 0  # not a flat map
    with pytest.raises(BadInput, match=r"'classifier' has output shape \(4, 10\).*spatial layers: "):
        GradCAM(vit, "classifier").attribute(x)


def test_default_layers_for_unknown_models(zoo):
    shape = (3, 32, 32)
    m = zoo["modules"]
    assert default_cam_layer(m["resnet"], shape) == "resnet.encoder.stages.1"
    assert default_cam_layer(m["convnext"], shape) == "convnext.encoder.stages.1"
    # the final layernorm's patch tokens do not reach the class token: the last block's input norm is taken
    assert default_cam_layer(m["vit"], shape) == "vit.layers.1.layernorm_before"
    assert default_feature_layer(m["resnet"], shape) == "classifier.1:input"
    assert default_feature_layer(m["sequential"], shape) == "8:input"


def test_adapter_gradcam_equals_captum_on_the_same_callable(zoo):
    from captum.attr import LayerGradCam

    x = zoo["dataset"].images[:6]
    for name, layer in (("resnet", "resnet.encoder.stages.1.layers.0"), ("convnext", "convnext.encoder.stages.0")):
        hf = zoo["modules"][name].inner

        def fn(t, hf=hf):
            return hf(t).logits

        ours = GradCAM(as_model(fn, module=hf), layer).attribute(x, target=3)
        mod = dict(hf.named_modules())[layer]
        ref = LayerGradCam(fn, mod).attribute(x, target=3, relu_attributions=True).detach()
        assert float(ref.abs().max()) > 0
        assert float((ours - ref).abs().max()) <= 1e-5


def test_nested_layers_and_all_methods_on_a_factory_sequential(zoo):
    seq = zoo["modules"]["sequential"]
    x = zoo["dataset"].images[:5]
    for method in (GradCAM(seq, "2.2"), EigenCAM(seq, "2.2"), NormGrad(seq, "2.0", variant="proper")):
        maps = method.attribute(x)
        assert maps.shape == (5, 1, 32, 32) and float(maps.abs().sum()) > 0


# ---------------------------------------------------------------- data in the forms users have
def test_data_forms_give_the_same_dataset():
    ds = load_dataset("digits")
    x, y = ds.images[:200], ds.labels[:200]
    ref = as_dataset((x, y))
    assert torch.equal(ref.images, x) and torch.equal(ref.labels, y)
    from_int32 = as_dataset(x.numpy(), y.numpy().astype(np.int32))
    assert from_int32.labels.dtype == torch.int64 and torch.equal(from_int32.labels, y)
    channels_last = as_dataset((x.permute(0, 2, 3, 1).numpy(), y.numpy().astype(np.uint8)))
    assert torch.equal(channels_last.images, x)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    assert torch.equal(as_dataset(loader).images, x) and torch.equal(as_dataset(loader).labels, y)
    assert torch.equal(as_dataset(torch.utils.data.TensorDataset(x, y)).labels, y)
    normalised = (x - 0.5) / 0.25
    with pytest.raises(BadInput, match="look normalised; give the normalisation's mean and std"):
        as_dataset((normalised, y))
    assert torch.allclose(as_dataset((normalised, y), mean=[0.5], std=[0.25]).images, x, atol=1e-6)
    direct = ImageDataset(x, y.int(), [str(i) for i in range(10)], "direct")  # any integer label dtype
    assert direct.labels.dtype == torch.int64
    with pytest.raises(BadInput, match="cannot use dict as image data"):
        as_dataset({"a": 1})


def test_library_entry_points_take_tensors_and_loaders(zoo):
    from defenses.detectors import spectral_detect
    from workbench.certify import certify_smoothing
    from workbench.training import evaluate

    ds = zoo["dataset"]
    model = zoo["modules"]["resnet"]
    x, y = ds.images[:300], ds.labels[:300]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    assert evaluate(model, (x, y)).accuracy == evaluate(model, loader).accuracy == evaluate(model, ds.subset(
        range(300))).accuracy
    a = spectral_detect(model, (x, y), 0.05)
    b = spectral_detect(model, loader, 0.05)
    assert torch.equal(a.flagged, b.flagged) and a.params["layer"] == "classifier.1:input"
    cert = certify_smoothing(model, x[:3], 0.25, n0=10, n=50, alpha=0.01, labels=y[:3])
    assert len(cert) == 3


# ---------------------------------------------------------------- splits follow the model
def test_certify_uses_the_models_own_split_whatever_the_seed(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["-q", "train", "--data", "digits", "--epochs", "2", "--seed", "0", "--out", str(run)]) == 0
    ds = load_dataset("digits")
    card = load_model(run).card
    split = held_out(ds, card.provenance)
    _, test0 = train_test_split(ds, 0.2, 0)
    _, test1 = train_test_split(ds, 0.2, 1)
    assert split.reproduced and torch.equal(split.data.indices, test0.indices)
    assert len(set(test1.indices.tolist()) - set(test0.indices.tolist())) > 200  # seed 1 would re-split
    capsys.readouterr()
    out = tmp_path / "cert"
    assert main(["-q", "certify", "--model", str(run), "--data", "digits", "--seed", "1", "--limit", "0",
                 "--n0", "5", "--n", "20", "--alpha", "0.1", "--out", str(out)]) == 0
    assert "split seed 0" in _flat(capsys.readouterr().err)
    rep = json.loads((out / "report.json").read_text())["result"]
    assert len(rep["predictions"]) == len(test0) and "split seed 0" in rep["params"]["images"]
    other = ImageDataset(ds.images[:500], ds.labels[:500], ds.class_names, "digits[:500]")
    moved = held_out(other, card.provenance)
    assert not moved.reproduced and len(moved.data) == 500 and "not the dataset" in moved.note


# ---------------------------------------------------------------- the CLI on each third-party model
@pytest.mark.parametrize("name,layer", [("resnet", "resnet.encoder.stages.1.layers.0.shortcut"),
                                        ("convnext", "convnext.encoder.stages.1.layers.0.pwconv1"),
                                        ("vit", "vit.layers.1.layernorm_before"), ("sequential", "2.2")])
def test_cli_on_third_party_models(zoo, name, layer, tmp_path, capsys):
    spec = ["--model", zoo["factory"], "--weights", str(zoo["weights"])] if name == "sequential" else \
        ["--model", str(zoo[name])]
    data = ["--data", f"npz:{zoo['data']}"]
    info_args = ["info", *spec[1:2]] if name != "sequential" else ["info", zoo["factory"], "--weights",
                                                                   str(zoo["weights"]), "--input-shape", "3,32,32"]
    assert main([*info_args, "--json"]) == 0, capsys.readouterr().err
    info = json.loads(capsys.readouterr().out)
    assert layer in {l["name"] for l in info["layers"]} and info["default_cam_layer"]
    methods = "gradcam,eigencam,normgrad"
    assert main(["-q", "saliency", *spec, *data, "--methods", methods, "--layers", layer, "--n", "6",
                 "--no-sanity", "--steps", "4", "--out", str(tmp_path / "sal")]) == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "sal" / "report.json").read_text())["result"]
    assert rep["layers"] == [layer] and len(rep["metrics"]) == 3
    assert main(["-q", "certify", *spec, *data, "--method", "smoothing", "--n0", "5", "--n", "20",
                 "--limit", "4", "--out", str(tmp_path / "cert")]) == 0, capsys.readouterr().err
    assert "every sample is evaluated" in _flat(capsys.readouterr().err)  # no split recorded for a foreign model
    assert main(["-q", "detect", *spec, *data, "--method", "spectral", "--out", str(tmp_path / "det")]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "det" / "flagged.csv").read_text().count("\n") == 1 + round(0.05 * 1797)


def test_cli_embeddings_audit_on_a_transformers_model(zoo, tmp_path, capsys):
    assert main(["-q", "audit", "labels", "--data", f"npz:{zoo['data']}", "--method", "embeddings", "--model",
                 str(zoo["resnet"]), "--folds", "3", "--out", str(tmp_path / "aud")]) == 0, capsys.readouterr().err
    pp = np.load(tmp_path / "aud" / "pred_probs.npy")
    assert pp.shape == (1797, 10) and np.allclose(pp.sum(1), 1, atol=1e-4)


# ---------------------------------------------------------------- bad input: one line, exit 2
def test_bad_models_are_clear_errors(zoo, tmp_path, capsys):
    data = ["--data", f"npz:{zoo['data']}"]
    mynet = zoo["factory"].rsplit(":", 1)[0]
    cases = [
        (["--model", f"{mynet}:broken", "--weights", str(zoo["weights"])], "raised ValueError: no such width"),
        (["--model", f"{mynet}:not_a_module", "--weights", str(zoo["weights"])], "returned int, not an nn.Module"),
        (["--model", f"{mynet}:make", "--weights", str(zoo["vit"] / "model.safetensors")], "does not fit the "
                                                                                           "architecture: the "),
        (["--model", f"{mynet}:make"], "give its trained weights"),
        (["--model", "cnn"], "names a zoo architecture, not a trained model"),
    ]
    for args, msg in cases:
        assert main(["-q", "certify", *args, *data, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
    # a transformers folder that is not an image classifier
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8], depths=[1])).save_pretrained(
        tmp_path / "backbone")
    with pytest.raises(BadInput, match="not an image classifier"):
        load_model(tmp_path / "backbone")
    # class count and image shape mismatches name what the model expects
    loaded = load_model(zoo["vit"])
    with pytest.raises(BadInput, match="the model has 10 classes but the data has 2"):
        loaded.bind((3, 32, 32), 2)
    with pytest.raises(BadInput, match=r"takes 3-channel images \(3, 32, 32\) but the data has 1-channel"):
        loaded.bind((1, 32, 32), 10)
    seq = load_model(zoo["factory"], weights=zoo["weights"])
    with pytest.raises(BadInput, match="cannot take images of shape"):
        seq.bind((1, 8, 8), 10)


def test_torchscript_needs_trust_and_is_never_loaded_without_it(zoo, tmp_path, monkeypatch, capsys):
    seq = zoo["modules"]["sequential"]
    x = zoo["dataset"].images[:2]
    torch.jit.trace(seq, x).save(str(tmp_path / "scripted.pt"))
    calls = []
    real = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(["-q", "info", str(tmp_path / "scripted.pt"), "--input-shape", "3,32,32"]) == 2
    assert "TorchScript archive: loading it runs the code" in capsys.readouterr().err and calls == []
    data = ["--data", f"npz:{zoo['data']}"]
    assert main(["-q", "saliency", "--model", str(tmp_path / "scripted.pt"), "--trust-code", *data,
                 "--out", str(tmp_path / "s")]) == 2
    assert "TorchScript models cannot run layer hooks" in capsys.readouterr().err
    assert main(["-q", "certify", "--model", str(tmp_path / "scripted.pt"), "--trust-code", *data, "--n0", "5",
                 "--n", "20", "--limit", "3", "--out", str(tmp_path / "c")]) == 0
    assert len(calls) == 2  # saliency and certify each loaded it once, with --trust-code


def test_a_custom_module_round_trips_through_save_and_load(zoo, tmp_path):
    from workbench.models import ModelCard, save_model

    seq = zoo["modules"]["sequential"]
    with pytest.raises(BadInput, match="say how to rebuild it"):
        save_model(seq, tmp_path / "m", ModelCard("custom", (3, 32, 32), [str(i) for i in range(10)]))
    save_model(seq, tmp_path / "m", ModelCard(zoo["factory"], (3, 32, 32), [str(i) for i in range(10)]))
    with pytest.raises(BadInput, match="names the factory .* runs that code"):
        load_model(tmp_path / "m")
    back = load_model(tmp_path / "m", trust_code=True)
    x = zoo["dataset"].images[:4]
    assert torch.equal(back.model(x), seq(x))
    # a transformers model saved by the workbench is a workbench folder and a transformers folder at once
    vit = zoo["modules"]["vit"]
    save_model(vit, tmp_path / "v", ModelCard("anything", (3, 32, 32), [str(i) for i in range(10)]))
    for loaded in (load_model(tmp_path / "v"),):
        assert torch.allclose(loaded.model(x), vit(x), atol=1e-6) and loaded.card.arch == "transformers"


def test_lga_trains_the_users_architecture_at_any_size(zoo, tmp_path, capsys):
    big = tinted_digits().resized(96)
    np.savez(tmp_path / "big.npz", images=(big.images[:300].numpy() * 255).astype(np.uint8),
             labels=big.labels[:300].numpy())
    assert main(["-q", "detect", "--data", f"npz:{tmp_path / 'big.npz'}", "--method", "lga", "--lga-epochs", "1",
                 "--out", str(tmp_path / "d")]) == 0, capsys.readouterr().err
    assert "LGA trains a fresh cnn" in _flat(capsys.readouterr().err)
    assert main(["-q", "detect", "--data", f"npz:{tmp_path / 'big.npz'}", "--method", "lga", "--lga-epochs", "1",
                 "--model", zoo["factory"], "--weights", str(zoo["weights"]), "--out", str(tmp_path / "e")]) == 0
    rep = json.loads((tmp_path / "e" / "report.json").read_text())["result"]
    assert rep["params"]["arch"] == "the given model's architecture"


def test_zipped_model_folders_load_and_hostile_zips_are_refused(tmp_path):
    import stat
    import zipfile

    from workbench.archive import safe_extract
    from workbench.models import ModelCard, save_model
    from workbench.zoo import build_model

    net = build_model("cnn", 1, 10, 8, seed=0, width=4).eval()
    save_model(net, tmp_path / "m", ModelCard("cnn", (1, 8, 8), [str(i) for i in range(10)], {"width": 4}))
    good = tmp_path / "m.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for f in (tmp_path / "m").iterdir():
            zf.write(f, f"m/{f.name}")
    loaded = load_model(good)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.model(x), net(x)) and loaded.source == str(good)
    for name, member, msg in [("slip", "../evil.txt", "outside the folder"), ("abs", "/tmp/evil.txt", "outside"),
                              ("drive", "C:/evil.txt", "outside")]:
        bad = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr(member, "x")
        with pytest.raises(BadInput, match=msg):
            safe_extract(bad, tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}").exists() and not (tmp_path / "evil.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("m/model.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BadInput, match="symbolic links"):
        safe_extract(link, tmp_path / "out-link")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert main(["-q", "info", str(tmp_path / "junk.zip")]) == 2
