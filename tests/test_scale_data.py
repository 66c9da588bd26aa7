"""Out-of-core data: uint8 kept as uint8, the memory-mapped ``npy:DIR`` format, its converter, and
methods that walk a dataset in batches giving the same figures as on in-memory float32 data."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from defenses.detectors import spectral_detect
from workbench.cli import main
from workbench.data import ImageDataset, convert_dataset, fingerprint, load_dataset, load_npy_dir
from workbench.errors import BadInput
from workbench.saliency.explain import explain
from workbench.training import fit, predict_logits
from workbench.zoo import build_model


def test_uint8_data_stays_uint8_and_reads_as_the_same_floats(mnist):
    assert mnist.storage == "uint8"  # 7.8 MB instead of 31 MB
    with np.load("workbench/assets/mnist10k.npz") as z:
        ref = torch.from_numpy(z["images"].astype(np.float32) / 255.0)[:, None]
    assert torch.equal(mnist.images, ref)
    idx = torch.tensor([5, 0, 9999, 17])
    assert torch.equal(mnist.pixels[idx], ref[idx]) and torch.equal(mnist.pixels[3:9], ref[3:9])
    sub = mnist.subset(idx)
    assert sub.storage == "uint8" and torch.equal(sub.images, ref[idx]) and sub.indices.tolist() == idx.tolist()


def test_convert_round_trip_is_memory_mapped_and_identical(tmp_path, mnist, digits):
    out = convert_dataset("mnist10k", tmp_path / "m", batch_size=3000)  # several chunks
    ds = load_dataset(f"npy:{out}")
    assert ds.storage == "memmap-uint8" and isinstance(ds._raw, np.memmap)
    assert ds.class_names == mnist.class_names and torch.equal(ds.labels, mnist.labels)
    assert torch.equal(ds.images, mnist.images) and fingerprint(ds) == fingerprint(mnist)
    f = load_dataset(f"npy:{convert_dataset(digits, tmp_path / 'd')}")
    assert f.storage == "memmap-float32" and torch.equal(f.images, digits.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "m"]  # no staging folder left


def test_convert_refuses_an_existing_target_without_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "convert", "digits", str(out)]) == 0
    before = (out / "images.npy").stat().st_mtime_ns
    assert main(["data", "convert", "mnist10k", str(out)]) == 2
    assert "exists; refusing to replace it (use --overwrite)" in capsys.readouterr().err
    assert (out / "images.npy").stat().st_mtime_ns == before
    assert main(["data", "convert", "mnist10k", str(out), "--overwrite"]) == 0
    assert len(load_npy_dir(out)) == 10000
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    assert main(["data", "convert", "digits", str(other), "--overwrite"]) == 2
    assert (other / "a.txt").read_text() == "mine"


def _npy_dir(path, images, labels, names=None):
    path.mkdir()
    np.save(path / "images.npy", images)
    np.save(path / "labels.npy", labels)
    if names is not None:
        (path / "class_names.json").write_text(json.dumps(names))
    return path


@pytest.mark.parametrize("images,labels,names,message", [
    (np.zeros((4, 1, 5, 5), np.uint8), np.array([0, 1, 0]), None, "4 images but 3 labels"),
    (np.zeros((4, 1, 5, 5), np.int16), np.array([0, 1, 0, 1]), None, "must be uint8 (0-255) or float32"),
    (np.full((4, 1, 5, 5), 2.0, np.float32), np.array([0, 1, 0, 1]), None, "must lie in [0, 1], got [2, 2]"),
    (np.zeros((4, 5, 5, 3), np.uint8), np.array([0, 1, 0, 1]), None, "N×C×H×W with C in 1 or 3"),
    (np.zeros((4, 1, 5, 5), np.uint8), np.array([0.5, 1, 0, 1]), None, "labels must be whole numbers"),
    (np.zeros((4, 1, 5, 5), np.uint8), np.array([0, 1, 0, 2]), ["a", "b"], "labels must lie in 0..1"),
    (np.zeros((4, 1, 5, 5), np.uint8), np.array([0, 1, 0, 1]), {"a": 1}, "JSON list of strings"),
])
def test_bad_npy_folders_are_refused(tmp_path, images, labels, names, message):
    d = _npy_dir(tmp_path / "bad", images, labels, names)
    with pytest.raises(BadInput, match=None) as err:
        load_dataset(f"npy:{d}")
    assert message in str(err.value)


def test_truncated_and_pickled_npy_files_are_refused(tmp_path):
    d = _npy_dir(tmp_path / "t", np.zeros((100, 1, 8, 8), np.uint8), np.arange(100) % 2)
    data = (d / "images.npy").read_bytes()
    (d / "images.npy").write_bytes(data[:-50])
    with pytest.raises(BadInput, match="cannot read"):
        load_npy_dir(d)
    np.save(d / "images.npy", np.array([{"x": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="cannot read"):
        load_npy_dir(d)
    assert main(["train", "--data", f"npy:{tmp_path / 'missing'}", "--out", str(tmp_path / "r")]) == 2


def test_training_on_uint8_and_memmap_gives_the_same_model(tmp_path, digits):
    q = ImageDataset((digits.images * 255).round().to(torch.uint8), digits.labels, digits.class_names, "q")
    mm = load_npy_dir(convert_dataset(q, tmp_path / "q"))
    floats = ImageDataset(q.images.clone(), q.labels, q.class_names, "f")
    nets = []
    for ds in (floats, q, mm):
        net = build_model("cnn", 1, 10, 8, seed=0)
        fit(net, ds, epochs=1, batch_size=64, seed=0)
        nets.append(net)
    for other in nets[1:]:
        for a, b in zip(nets[0].parameters(), other.parameters()):
            assert torch.equal(a, b)
    assert torch.equal(predict_logits(nets[0], mm.pixels, batch_size=100), predict_logits(nets[0], floats.images))


def test_spectral_detection_on_a_memmap_equals_in_memory(tmp_path, digits_model, digits):
    mm = load_npy_dir(convert_dataset(digits, tmp_path / "d"))
    a = spectral_detect(digits_model.model, digits)
    b = spectral_detect(digits_model.model, mm)
    assert torch.allclose(a.scores, b.scores, atol=1e-6) and torch.equal(a.flagged, b.flagged)
    assert "_float" not in mm.__dict__  # never converted whole


def test_explain_in_batches_gives_the_same_maps(digits_model, digits):
    x = digits.images[:10]
    one = explain(digits_model.model, x, ["gradcam", "eigencam"], ["conv2", "conv3"], metrics=False, batch_size=64)
    small = explain(digits_model.model, x, ["gradcam", "eigencam"], ["conv2", "conv3"], metrics=False, batch_size=3)
    assert one.maps.keys() == small.maps.keys() and one.targets == small.targets
    for k in one.maps:
        assert torch.allclose(one.maps[k], small.maps[k], atol=1e-5), k
    for k in one.combined:
        assert torch.allclose(one.combined[k], small.combined[k], atol=1e-5), k


def test_spectral_memory_is_bounded_by_the_batch_not_the_dataset(tmp_path):
    """20,000 × 28×28 memory-mapped uint8 (16 MB; 63 MB as float32) through a small network: detection
    must not hold the set as float32. Peak resident growth over a warm-up on 1,000 images stays under
    30 MB (benchmarks/scale.py measures 200,000 images with the default CNN)."""
    n = 20_000
    d = tmp_path / "big"
    d.mkdir()
    mm = np.lib.format.open_memmap(d / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 1, 28, 28))
    rng = np.random.default_rng(0)
    for i in range(0, n, 5_000):
        mm[i:i + 5_000] = rng.integers(0, 256, size=(5_000, 1, 28, 28), dtype=np.uint8)
    del mm
    np.save(d / "labels.npy", np.arange(n) % 10)
    code = textwrap.dedent(f"""
        import resource, torch
        torch.set_num_threads(1)
        from defenses.detectors import spectral_detect
        from workbench.data import load_npy_dir
        ds = load_npy_dir({str(d)!r})
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(676, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).eval()
        spectral_detect(net, ds.subset(range(1000)))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = spectral_detect(net, ds)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) / 1024, len(r.scores))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    growth_mb, scored = out.stdout.split()
    assert int(scored) == n
    assert float(growth_mb) < 30, f"peak resident memory grew by {growth_mb} MB"
