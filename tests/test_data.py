import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data import (
    ImageDataset,
    load_dataset,
    load_folder,
    load_npz,
    read_idx,
    stratified_subset,
    train_test_split,
)
from workbench.errors import BadInput


def test_embedded_mnist10k_matches_its_provenance(mnist):
    assert mnist.images.shape == (10000, 1, 28, 28)
    assert mnist.class_counts() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert mnist.images.dtype == torch.float32 and 0 <= float(mnist.images.min()) and float(mnist.images.max()) == 1.0


def test_digits(digits):
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.num_classes == 10 and float(digits.images.max()) == 1.0


def _write_npz(path, images, labels, **extra):
    np.savez(path, images=images, labels=labels, **extra)
    return path


@pytest.mark.parametrize("layout", ["hw", "hwc", "chw"])
def test_npz_layouts_and_dtypes(tmp_path, layout):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(6, 5, 7), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    if layout == "hw":
        arr = base
    elif layout == "hwc":
        arr = np.repeat(base[..., None], 3, axis=3)
    else:
        arr = np.repeat(base[:, None], 3, axis=1)
    ds = load_npz(_write_npz(tmp_path / "d.npz", arr, labels))
    c = 1 if layout == "hw" else 3
    assert ds.images.shape == (6, c, 5, 7)
    assert torch.allclose(ds.images[:, 0], torch.from_numpy(base).float() / 255)
    assert ds.labels.tolist() == labels.tolist()
    # the same data as float 0-1 gives the same tensor
    ds2 = load_npz(_write_npz(tmp_path / "f.npz", arr.astype(np.float32) / 255, labels))
    assert torch.allclose(ds.images, ds2.images)


def test_npz_class_names(tmp_path):
    p = _write_npz(tmp_path / "d.npz", np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]),
                   class_names=np.array(["cat", "dog"]))
    assert load_npz(p).class_names == ["cat", "dog"]


@pytest.mark.parametrize("images,labels,message", [
    (np.zeros((3, 8, 8), np.uint8), np.array([0, 1]), "3 images but 2 labels"),
    (np.zeros((3, 8), np.uint8), np.array([0, 1, 1]), "rank"),
    (np.zeros((2, 2, 2, 8, 8), np.uint8), np.array([0, 1]), "rank"),
    (np.full((2, 8, 8), np.nan, np.float32), np.array([0, 1]), "NaN"),
    (np.full((2, 8, 8), 3.0, np.float32), np.array([0, 1]), "[0, 1]"),
    (np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64), "empty"),
    (np.zeros((3, 8, 8), np.uint8), np.array([1, 1, 1]), "two classes"),
    (np.zeros((2, 8, 8), np.uint8), np.array([0, -1]), "non-negative"),
])
def test_npz_bad_input(tmp_path, images, labels, message):
    p = _write_npz(tmp_path / "bad.npz", images, labels)
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_npz(p)


def test_npz_missing_corrupt_and_pickled(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(BadInput, match="cannot read"):
        load_npz(bad)
    obj = tmp_path / "obj.npz"
    np.savez(obj, images=np.array([object(), object()], dtype=object), labels=np.array([0, 1]))
    with pytest.raises(BadInput, match="unpickling"):
        load_npz(obj)
    wrong = _write_npz(tmp_path / "keys.npz", np.zeros((2, 8, 8)), np.array([0, 1]))
    np.savez(wrong, pictures=np.zeros((2, 8, 8)))
    with pytest.raises(BadInput, match="no images array"):
        load_npz(wrong)


def _save_png(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    imgs = {}
    for cls in ("apple", "banana"):
        for i in range(3):
            a = rng.integers(0, 256, (10, 12), dtype=np.uint8)
            imgs[(cls, i)] = a
            _save_png(tmp_path / cls / f"{i}.png", a)
    ds = load_folder(tmp_path)
    assert ds.class_names == ["apple", "banana"]
    assert ds.images.shape == (6, 1, 10, 12)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(ds.images[4, 0], torch.from_numpy(imgs[("banana", 1)]).float() / 255)
    # RGB images give three channels
    _save_png(tmp_path / "banana" / "rgb.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), "RGB")
    assert load_folder(tmp_path).images.shape == (7, 3, 10, 12)


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_folder(tmp_path / "missing")
    _save_png(tmp_path / "a" / "0.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(BadInput, match="unreadable image .*broken.png"):
        load_folder(tmp_path)
    (tmp_path / "b" / "broken.png").unlink()
    _save_png(tmp_path / "b" / "big.png", np.zeros((9, 9), np.uint8))
    with pytest.raises(BadInput, match="resize the images to one size"):
        load_folder(tmp_path)
    assert load_folder(tmp_path, size=8).images.shape == (2, 1, 8, 8)


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def test_idx_raw_and_gz(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "img.idx").write_bytes(_idx_bytes(images))
    (tmp_path / "lab.idx.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    assert np.array_equal(read_idx(tmp_path / "img.idx"), images)
    ds = load_dataset(f"idx:{tmp_path / 'img.idx'},{tmp_path / 'lab.idx.gz'}")
    assert ds.images.shape == (5, 1, 28, 28) and ds.labels.tolist() == [3, 1, 4, 1, 5]
    assert ds.num_classes == 6


def test_idx_bad_input(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(BadInput, match="magic"):
        read_idx(tmp_path / "bad.idx")
    full = _idx_bytes(np.zeros((4, 3, 3), np.uint8))
    (tmp_path / "short.idx").write_bytes(full[:-5])
    with pytest.raises(BadInput, match="announces"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(BadInput, match="gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(BadInput, match="not found"):
        read_idx(tmp_path / "none.idx")


@pytest.mark.parametrize("spec", ["", "imagenet", "npz:", "idx:onlyone"])
def test_bad_specs(spec):
    with pytest.raises(BadInput):
        load_dataset(spec)


def test_split_is_seeded_stratified_and_disjoint(digits):
    a_train, a_test = train_test_split(digits, 0.2, seed=7)
    b_train, b_test = train_test_split(digits, 0.2, seed=7)
    c_train, _ = train_test_split(digits, 0.2, seed=8)
    assert torch.equal(a_test.indices, b_test.indices) and torch.equal(a_train.images, b_train.images)
    assert not torch.equal(a_train.indices, c_train.indices)
    assert set(a_train.indices.tolist()).isdisjoint(a_test.indices.tolist())
    assert len(a_train) + len(a_test) == len(digits)
    frac = np.array(a_test.class_counts()) / np.array(digits.class_counts())
    assert np.all(np.abs(frac - 0.2) < 0.02)
    assert torch.equal(a_test.images, digits.images[a_test.indices])
    sub = stratified_subset(digits, 100, seed=0)
    assert len(sub) == 100 and torch.equal(sub.images, digits.images[sub.indices])


def test_split_bad_input(digits):
    with pytest.raises(BadInput, match="test_fraction"):
        train_test_split(digits, 1.5)
    tiny = ImageDataset(torch.zeros(3, 1, 8, 8), torch.tensor([0, 0, 1]), ["a", "b"], "tiny")
    with pytest.raises(BadInput, match="single sample"):
        train_test_split(tiny, 0.3)


def test_dataset_constructor_validates():
    with pytest.raises(BadInput, match="labels must lie"):
        ImageDataset(torch.zeros(2, 1, 8, 8), torch.tensor([0, 5]), ["a", "b"], "x")
    with pytest.raises(BadInput, match="NaN"):
        ImageDataset(torch.full((2, 1, 8, 8), float("nan")), torch.tensor([0, 1]), ["a", "b"], "x")


def test_resized(mnist):
    small = mnist.subset(range(10)).resized(14)
    assert small.images.shape == (10, 1, 14, 14)
    ref = mnist.images[:10].reshape(10, 1, 14, 2, 14, 2).mean((3, 5))
    assert torch.allclose(small.images, ref, atol=1e-6)


def test_sample_is_seeded_and_keeps_indices(digits):
    a, b, c = digits.sample(20, seed=1), digits.sample(20, seed=1), digits.sample(20, seed=2)
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    assert len(set(a.indices.tolist())) == 20 and torch.equal(a.images, digits.images[a.indices])
    assert len(digits.subset(range(5)).sample(50)) == 5
    with pytest.raises(BadInput, match="sample size"):
        digits.sample(0)
