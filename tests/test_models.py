import os
import pickle

import pytest
import torch

from workbench.errors import BadInput
from workbench.models import (
    ModelCard,
    build_model,
    describe_layers,
    get_layer,
    layer_names,
    load_model,
    save_model,
)


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32), (1, 64)])
def test_zoo_shapes(arch, channels, size):
    m = build_model(arch, channels, 7, size)
    assert m(torch.rand(2, channels, size, size)).shape == (2, 7)


def test_build_is_seeded_and_validates():
    a, b, c = build_model("cnn", 1, 10, 28, seed=1), build_model("cnn", 1, 10, 28, seed=1), build_model("cnn", 1, 10, 28, seed=2)
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)
    with pytest.raises(BadInput, match="the zoo has"):
        build_model("vgg", 1, 10, 28)
    with pytest.raises(BadInput, match="512×512"):
        build_model("cnn", 1, 10, 1024)
    with pytest.raises(BadInput, match="1 to 64 input channels"):
        build_model("cnn", 0, 10, 28)
    assert build_model("cnn", 1, 10, 96)(torch.rand(2, 1, 96, 96)).shape == (2, 10)  # any size in range


def test_save_load_round_trip_identical_outputs(digits_model, saved_digits_model, digits):
    loaded = load_model(saved_digits_model)
    x = digits.images[:50]
    with torch.no_grad():
        assert torch.equal(loaded.model(x), digits_model.model.eval()(x))
    assert loaded.card.arch == "cnn" and loaded.card.input_shape == (1, 8, 8)
    assert loaded.card.provenance["test_accuracy"] == digits_model.evaluation.accuracy
    assert sorted(os.listdir(saved_digits_model)) == ["model.json", "model.safetensors"]


def test_load_state_dict_pt_and_torchscript(digits_model, digits, tmp_path):
    m = digits_model.model.eval()
    x = digits.images[:8]
    torch.save(m.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(BadInput, match="no model.json"):
        load_model(tmp_path / "weights.pt")
    loaded = load_model(tmp_path / "weights.pt", arch="cnn", input_shape=(1, 8, 8), class_names=list("0123456789"))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), m(x))
    scripted = torch.jit.trace(m, x)
    scripted.save(str(tmp_path / "scripted.pt"))
    with pytest.raises(BadInput, match="TorchScript archive: loading it runs the code"):
        load_model(tmp_path / "scripted.pt", input_shape=(1, 8, 8), class_names=list("0123456789"))
    ts = load_model(tmp_path / "scripted.pt", input_shape=(1, 8, 8), class_names=list("0123456789"),
                    trust_code=True)
    with torch.no_grad():
        assert torch.allclose(ts.model(x), m(x), atol=1e-6)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EXPLOIT_MARKER']}",))


def test_pickle_with_code_is_refused_without_running(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"weight": _Exploit()}, evil)  # torch.save pickles the object
    with pytest.raises(BadInput, match="refused"):
        load_model(evil, arch="cnn", input_shape=(1, 8, 8), class_names=["a", "b"])
    assert not marker.exists()
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(BadInput):
        load_model(raw, arch="cnn", input_shape=(1, 8, 8), class_names=["a", "b"])
    assert not marker.exists()


def test_mismatched_and_corrupt_weights(digits_model, tmp_path):
    save_model(digits_model.model, tmp_path / "m", digits_model.card)
    card = ModelCard.from_json((tmp_path / "m" / "model.json").read_text())
    card.arch = "resnet"
    (tmp_path / "m" / "model.json").write_text(card.to_json())
    with pytest.raises(BadInput, match="does not fit"):
        load_model(tmp_path / "m")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(BadInput, match="cannot read"):
        load_model(tmp_path / "bad.safetensors", arch="cnn", input_shape=(1, 8, 8), class_names=["a", "b"])
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "model.safetensors").write_bytes(b"")
    (tmp_path / "m2" / "model.json").write_text("{not json")
    with pytest.raises(BadInput, match="model card"):
        load_model(tmp_path / "m2")
    with pytest.raises(BadInput, match="not found"):
        load_model(tmp_path / "nothing")


def test_layer_lookup():
    m = build_model("resnet", 1, 10, 28)
    assert get_layer(m, "layer2.1.conv1") is m.layer2[1].conv1
    with pytest.raises(BadInput, match="valid layers: .*layer2.1.conv1"):
        get_layer(m, "layer9")
    assert "layer3.0.shortcut.0" in layer_names(m)
    info = {l.name: l for l in describe_layers(m, (1, 28, 28))}
    assert info["layer3"].output_shape == (64, 7, 7) and info["fc"].parameters == 64 * 10 + 10
