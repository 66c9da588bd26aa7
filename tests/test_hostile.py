"""Hostile and broken input, tried as a new user would, through the CLI: every case must end with exit
code 2 and one line naming the problem (never a traceback or "internal error"), must write nothing,
and the decompression bombs must be refused before they are decoded (bounded memory).

Each case is one parametrized test id; ``len(CASES)`` is the number of hostile inputs tried.
"""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from hostile import (
    DROP,
    card,
    gzip_bomb,
    idx_bytes,
    idx_header,
    npy_member,
    npz_bomb,
    npz_bytes,
    png_bytes,
    png_header_only,
    write,
    zip_bytes,
)

from workbench.cli import main

IMG = np.zeros((60, 8, 8), np.uint8)
LAB = np.arange(60) % 3


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/workbench-hostile-pwned",))


# ------------------------------------------------------------------ datasets (workbench train --data ...)
def _npz(**arrays):
    return lambda d: ("npz:" + str(write(d / "data.npz", npz_bytes(**arrays))))


def _raw_npz(data: bytes):
    return lambda d: ("npz:" + str(write(d / "data.npz", data)))


def _idx(images: bytes, labels: bytes | None = None, gz: bool = False):
    import gzip

    def build(d):
        lab = labels if labels is not None else idx_bytes(np.array([0, 1, 0, 1], np.uint8))
        img = gzip.compress(images) if gz else images
        return f"idx:{write(d / 'img.idx', img)},{write(d / 'lab.idx', lab)}"
    return build


def _folder(files: dict[str, bytes], links: dict[str, str] | None = None):
    def build(d):
        root = d / "imgs"
        root.mkdir()
        for name, data in files.items():
            write(root / name, data)
        for name, target in (links or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(d / target, root / name)
        write(d / "outside" / "secret.png", png_bytes(np.zeros((8, 8), np.uint8)))
        return f"folder:{root}"
    return build


OK_PNG = png_bytes(np.zeros((8, 8), np.uint8))
DATA_CASES = {
    "npz-random-bytes": (_raw_npz(os.urandom(2000)), "is not an .npz file"),
    "npz-zip-garbage": (_raw_npz(b"PK\x03\x04" + os.urandom(500)), "cannot read npz"),
    "npz-truncated": (_raw_npz(npz_bytes(images=IMG, labels=LAB)[:900]), "cannot read npz"),
    "npz-empty-file": (_raw_npz(b""), "is not an .npz file"),
    "npz-single-npy": (_raw_npz(npy_member((2,), "<i8", b"\x00" * 16)), "single .npy"),
    "npz-object-images": (_npz(images=np.array([object()] * 3, dtype=object), labels=np.arange(3)),
                          "Python objects"),
    "npz-object-class-names": (_npz(images=IMG, labels=LAB, class_names=np.array([1, "a", None], dtype=object)),
                               "Python objects"),
    "npz-pickled-payload": (_raw_npz(zip_bytes({"images.npy": npy_member((1,), "|O", pickle.dumps(_Exploit())),
                                                "labels.npy": npy_member((1,), "<i8", b"\x00" * 8)})),
                            "Python objects"),
    "npz-label-1e9": (_npz(images=IMG, labels=np.r_[LAB[:-1], 10 ** 9]), "largest label is 1e\\+09"),
    "npz-label-float-1e20": (_npz(images=IMG, labels=np.r_[LAB[:-1], 1e20].astype(np.float64)),
                             "largest label is 1e\\+20"),
    "npz-label-nan": (_npz(images=IMG, labels=np.r_[LAB[:-1], np.nan]), "NaN"),
    "npz-label-fraction": (_npz(images=IMG, labels=np.r_[LAB[:-1], 0.5]), "whole numbers"),
    "npz-label-negative": (_npz(images=IMG, labels=np.r_[LAB[:-1], -1]), "non-negative"),
    "npz-label-bool": (_npz(images=IMG, labels=LAB > 0), "integers"),
    "npz-label-strings": (_npz(images=IMG, labels=np.array(["a"] * 60)), "integers"),
    "npz-labels-2d": (_npz(images=IMG, labels=LAB.reshape(30, 2)), "one-dimensional"),
    "npz-length-mismatch": (_npz(images=IMG, labels=LAB[:59]), "60 images but 59 labels"),
    "npz-images-rank2": (_npz(images=IMG.reshape(60, 64), labels=LAB), "rank"),
    "npz-images-rank5": (_npz(images=IMG.reshape(60, 1, 1, 8, 8), labels=LAB), "rank"),
    "npz-images-nan": (_npz(images=np.full((60, 8, 8), np.nan, np.float32), labels=LAB), "NaN"),
    "npz-images-inf": (_npz(images=np.full((60, 8, 8), np.inf, np.float32), labels=LAB), "NaN or infinite"),
    "npz-images-float-255": (_npz(images=np.full((60, 8, 8), 255.0, np.float32), labels=LAB), "lie in \\[0, 1\\]"),
    "npz-images-int-1000": (_npz(images=np.full((60, 8, 8), 1000, np.int32), labels=LAB), "0..255"),
    "npz-images-complex": (_npz(images=np.zeros((60, 8, 8), np.complex64), labels=LAB), "unsupported image dtype"),
    "npz-images-strings": (_npz(images=np.array([["a"] * 8] * 8 * 60).reshape(60, 8, 8), labels=LAB),
                           "unsupported image dtype"),
    "npz-zero-size": (_npz(images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, np.int64)), "empty"),
    "npz-zero-width": (_npz(images=np.zeros((60, 8, 0), np.uint8), labels=LAB), "zero-size dimension"),
    "npz-one-class": (_npz(images=IMG, labels=np.zeros(60, np.int64)), "two classes"),
    "npz-too-few-class-names": (_npz(images=IMG, labels=LAB, class_names=np.array(["a", "b"])), "0..1"),
    "npz-no-images-key": (_npz(pictures=IMG, labels=LAB), "no images array"),
    "npz-lying-npy-header": (_raw_npz(zip_bytes({"images.npy": npy_member((10 ** 6, 28, 28), "|u1", b"\x00" * 64),
                                                 "labels.npy": npy_member((2,), "<i8", b"\x00" * 16)})),
                             "declares shape"),
    "npz-declared-petabyte": (_raw_npz(zip_bytes({"images.npy": npy_member((2 ** 50,), "|u1", b"")})),
                              "declares shape"),
    "npz-missing": (lambda d: f"npz:{d / 'nope.npz'}", "not found"),
    "npz-is-a-folder": (lambda d: f"npz:{(d / 'dir.npz').mkdir() or d / 'dir.npz'}", "not a file"),
    "idx-bad-magic": (_idx(b"\x12\x34\x56\x78"), "magic"),
    "idx-empty": (_idx(b""), "magic"),
    "idx-zero-dims": (_idx(bytes([0, 0, 8, 0])), "zero dimensions"),
    "idx-truncated-header": (_idx(bytes([0, 0, 8, 3, 0, 0])), "truncated IDX header"),
    "idx-dims-overflow": (_idx(idx_header((2 ** 32 - 1,) * 4)), "over the limit"),
    "idx-lying-header": (_idx(idx_header((10 ** 9, 28, 28), data=b"\x00" * 784)), "over the limit"),
    "idx-short-data": (_idx(idx_header((4, 8, 8), data=b"\x00" * 100)), "holds 100 bytes"),
    "idx-trailing-data": (_idx(idx_header((4, 8, 8), data=b"\x00" * 300)), "more than that"),
    "idx-corrupt-gzip": (_idx(b"\x1f\x8b\x08\x00" + os.urandom(100)), "corrupt gzip"),
    "idx-label-count-mismatch": (_idx(idx_bytes(np.zeros((5, 8, 8), np.uint8))), "5 images but 4 labels"),
    "idx-float-labels-1e20": (_idx(idx_bytes(np.zeros((4, 8, 8), np.uint8)),
                                   idx_bytes(np.array([0, 1, 0, 1e20], ">f8"), code=0x0E)), "largest label"),
    "folder-png-bomb-20000": (_folder({"a/big.png": png_header_only(20000, 20000), "b/0.png": OK_PNG}),
                              "big.png declares 20000×20000 pixels .* over the limit"),
    "folder-png-bomb-100000": (_folder({"a/0.png": OK_PNG, "b/huge.png": png_header_only(100000, 100000)}),
                               "huge.png.*decompression bomb.*WORKBENCH_MAX_IMAGE_PIXELS"),
    "folder-truncated-png": (_folder({"a/0.png": OK_PNG, "b/t.png": OK_PNG[:40]}), "unreadable image .*t.png"),
    "folder-not-an-image": (_folder({"a/0.png": OK_PNG, "b/x.png": b"hello world"}), "unreadable image .*x.png"),
    "folder-symlink-out": (_folder({"a/0.png": OK_PNG}, {"b/link.png": "outside/secret.png"}),
                           "symbolic link .* outside the dataset folder"),
    "folder-symlink-class-out": (_folder({"a/0.png": OK_PNG}, {"b": "outside"}), "outside the dataset folder"),
    "folder-symlink-dev-zero": (lambda d: (write(d / "imgs/a/0.png", OK_PNG), (d / "imgs/b").mkdir(),
                                           os.symlink("/dev/zero", d / "imgs/b/z.png"), f"folder:{d / 'imgs'}")[-1],
                                "outside the dataset folder"),
    "folder-mixed-sizes": (_folder({"a/0.png": OK_PNG, "b/1.png": png_bytes(np.zeros((9, 9), np.uint8))}),
                           "resize the images"),
    "folder-empty": (_folder({}), "no class subfolders"),
    "folder-no-images": (_folder({"a/readme.txt": b"x", "b/notes.md": b"y"}), "hold no images"),
    "folder-is-a-file": (lambda d: f"folder:{write(d / 'f.png', OK_PNG)}", "not a folder"),
    "spec-unknown": (lambda d: "imagenet", "unknown dataset spec"),
    "spec-empty-path": (lambda d: "npz:", "unknown dataset spec"),
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_hostile_dataset_is_refused_with_one_line(name, tmp_path, capsys, monkeypatch):
    build, message = DATA_CASES[name]
    monkeypatch.chdir(tmp_path)
    spec = build(tmp_path)
    out = tmp_path / "run"
    code = main(["-q", "train", "--data", spec, "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    _one_line_bad_input(err, message)
    assert not out.exists() and not (tmp_path / "runs").exists()


def _one_line_bad_input(err: str, message: str) -> None:
    import re

    assert err.startswith("workbench: error: ") and "\n" not in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert re.search(message, err), err


# ------------------------------------------------------------------ bombs: refused before decoding
@pytest.mark.parametrize("kind", ["npz", "idx.gz", "png"])
def test_decompression_bombs_are_refused_before_decoding(kind, tmp_path, monkeypatch, capsys):
    """A 64 MB bomb against a 16 MB limit: refused, with a peak of Python-visible allocation far below
    what decoding it would take; and with the limit raised above it, the same file is decoded."""
    from workbench.data import load_dataset
    from workbench.errors import BadInput

    if kind == "npz":
        spec = "npz:" + str(write(tmp_path / "bomb.npz", npz_bomb(64)))
    elif kind == "idx.gz":
        spec = (f"idx:{write(tmp_path / 'bomb.idx.gz', gzip_bomb(64))},"
                f"{write(tmp_path / 'l.idx', idx_bytes(np.array([0, 1], np.uint8)))}")
    else:
        write(tmp_path / "f" / "a" / "bomb.png", png_header_only(4096, 4096))  # 16 Mpx declared
        write(tmp_path / "f" / "b" / "0.png", png_bytes(np.zeros((8, 8), np.uint8)))
        spec = f"folder:{tmp_path / 'f'}"
    env = "WORKBENCH_MAX_IMAGE_PIXELS" if kind == "png" else "WORKBENCH_MAX_DATA_BYTES"
    monkeypatch.setenv(env, "8M" if kind == "png" else "16M")
    tracemalloc.start()
    try:
        with pytest.raises(BadInput, match=f"over the limit.*{env}|{env}"):
            load_dataset(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # decoding would take 64 MB (16 Mpx for the PNG)
    monkeypatch.setenv(env, "1G")
    with pytest.raises(BadInput) as raised:  # now decoded: each bomb is then inconsistent in its own way
        load_dataset(spec)
    assert "over the limit" not in str(raised.value)


# ------------------------------------------------------------------ model files (workbench info MODEL)
def _model_dir(weights: bytes | None, card_text: str | None):
    def build(d):
        m = d / "model"
        m.mkdir()
        if weights is not None:
            write(m / "model.safetensors", weights)
        if card_text is not None:
            write(m / "model.json", card_text)
        return str(m)
    return build


def _pt(data: bytes, card_text: str | None = None):
    def build(d):
        p = write(d / "w.pt", data)
        if card_text is not None:
            write(d / "w.json", card_text)
        return str(p)
    return build


def _good_weights() -> bytes:
    from safetensors.torch import save

    from workbench.models import build_model

    return save({k: v.contiguous() for k, v in build_model("cnn", 1, 10, 8, seed=0).state_dict().items()})


def _torch_save(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


GOOD = card()
MODEL_CASES = {
    "pt-random-bytes": (_pt(os.urandom(1000), GOOD), "not a PyTorch file"),
    "pt-short-text": (_pt(b"hello", GOOD), "not a PyTorch file"),
    "pt-empty": (_pt(b"", GOOD), "not a PyTorch file"),
    "pt-pickle-with-code": (_pt(pickle.dumps(_Exploit(), protocol=2), GOOD), "refused|cannot read"),
    "pt-torch-save-with-code": (_pt(_torch_save({"w": _Exploit()}), GOOD), "refused"),
    "pt-zip-not-torch": (_pt(zip_bytes({"a.txt": b"hello"}), GOOD), "cannot read"),
    "pt-truncated-zip": (_pt(_torch_save({"w": torch.zeros(100)})[:300], GOOD), "cannot read"),
    "pt-not-a-state-dict": (_pt(_torch_save([torch.zeros(2)]), GOOD), "does not hold a state dict"),
    "pt-wrong-tensors": (_pt(_torch_save({"w": torch.zeros(2)}), GOOD), "does not fit the architecture"),
    "pt-without-card": (_pt(_torch_save({"w": torch.zeros(2)})), "no model.json"),
    "safetensors-random": (_model_dir(os.urandom(500), GOOD), "cannot read safetensors"),
    "safetensors-header-lies": (_model_dir(b"\xff" * 8 + b"{}", GOOD), "cannot read safetensors"),
    "safetensors-empty": (_model_dir(b"", GOOD), "cannot read safetensors"),
    "weights-nan": (lambda d: _nan_weights(d), "NaN or infinite"),
    "folder-without-weights": (_model_dir(None, GOOD), "but no model.safetensors"),
    "card-not-json": (_model_dir(b"", "{not json"), "not a valid model card"),
    "card-a-list": (_model_dir(b"", "[1, 2]"), "expected a JSON object"),
    "card-missing-arch": (_model_dir(b"", card(arch=DROP)), "missing arch"),
    "card-arch-number": (_model_dir(b"", card(arch=7)), "arch must be a name"),
    "card-unknown-arch": (lambda d: _model_dir(_good_weights(), card(arch="vgg"))(d), "the zoo has"),
    "card-width-20000": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"width": 20000}))(d),
                         "parameter count that is .* over the limit"),
    "card-width-1e30": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"width": 10 ** 30}))(d),
                        "width is 1e\\+30, beyond any buildable size"),
    "card-width-negative": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"width": -4}))(d),
                            "integer >= 1"),
    "card-width-string": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"width": "big"}))(d),
                          "integer >= 1"),
    "card-width-float": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"width": 1.5}))(d), "integer >= 1"),
    "card-width-bool": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"width": True}))(d), "integer >= 1"),
    "card-unknown-kwarg": (lambda d: _model_dir(_good_weights(), card(arch_kwargs={"depth": 3}))(d),
                           "takes no option 'depth'"),
    "card-kwargs-not-object": (_model_dir(b"", card(arch_kwargs=[1, 2])), "arch_kwargs must be an object"),
    "card-shape-two-dims": (_model_dir(b"", card(input_shape=[1, 8])), "three integers"),
    "card-shape-zero": (_model_dir(b"", card(input_shape=[1, 0, 8])), "three integers"),
    "card-shape-strings": (_model_dir(b"", card(input_shape=["a", "b", "c"])), "three integers"),
    "card-shape-huge": (_model_dir(b"", card(input_shape=[3, 10 ** 6, 10 ** 6])), "over the limit"),
    "card-shape-inf": (_model_dir(b"", card(input_shape=[1, 1e400, 8])), "three integers"),
    "card-one-class": (_model_dir(b"", card(class_names=["a"])), "at least two class names"),
    "card-million-classes": (_model_dir(b"", card(class_names=list(range(10 ** 6)))), "over the limit"),
    "card-class-names-string": (_model_dir(b"", card(class_names="abc")), "list of names"),
    "card-class-names-objects": (_model_dir(b"", card(class_names=[{"a": 1}, 2])), "list of names"),
    "card-deeply-nested": (_model_dir(b"", "[" * 100000 + "]" * 100000), "not a valid model card"),
    "card-not-utf8": (_model_dir(b"", "\udcff"), "not a valid model card"),
    "card-too-large": (lambda d: _model_dir(b"", card(provenance={"x": "a" * (17 << 20)}))(d), "too large"),
    "card-provenance-list": (_model_dir(b"", card(provenance=[1])), "provenance must be an object"),
    "model-missing": (lambda d: str(d / "nothing"), "not found"),
    "model-unsupported-suffix": (lambda d: (write(d / "m.json", GOOD), str(write(d / "m.onnx", b"x")))[1],
                                 "unsupported model file"),
}


def _nan_weights(d):
    from safetensors.torch import save

    from workbench.models import build_model

    state = {k: v.contiguous() for k, v in build_model("cnn", 1, 10, 8, seed=0).state_dict().items()}
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    return _model_dir(save(state), GOOD)(d)


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_hostile_model_file_is_refused_with_one_line(name, tmp_path, capsys):
    build, message = MODEL_CASES[name]
    if name == "card-not-utf8":
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "model.safetensors").write_bytes(b"")
        (tmp_path / "model" / "model.json").write_bytes(b'{"arch": "\xff\xfe"}')
        path = str(tmp_path / "model")
    else:
        path = build(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(["info", path])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    _one_line_bad_input(err, message)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert not os.path.exists("/tmp/workbench-hostile-pwned")


# ------------------------------------------------------------------ options, checked before any work
@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    from workbench.models import ModelCard, build_model, save_model

    path = tmp_path_factory.mktemp("untrained") / "m"
    save_model(build_model("cnn", 1, 10, 8, seed=0), path, ModelCard("cnn", (1, 8, 8), [str(i) for i in range(10)]))
    return path


def _certify(*extra):
    return lambda m: ["certify", "--model", str(m), "--data", "digits", "--limit", "5", *extra]


def _rgb_model(d):
    """A saved 3-channel model (the digits are 1-channel)."""
    from workbench.models import ModelCard, build_model, save_model

    save_model(build_model("cnn", 3, 10, 8, seed=0), d / "rgb", ModelCard("cnn", (3, 8, 8), [str(i) for i in range(10)]))
    return str(d / "rgb")


OPTION_CASES = {
    "out-is-a-file": (lambda m, d: ["train", "--data", "digits", "--out", str(write(d / "f.txt", "x"))],
                      "is an existing file"),
    "out-under-a-file": (lambda m, d: ["train", "--data", "digits", "--out", str(write(d / "f.txt", "x") / "run")],
                         "is a file, not a folder"),
    "out-foreign-folder": (lambda m, d: ["train", "--data", "digits", "--out", str(write(d / "home/notes.txt", "x").parent)],
                           "holds other things than a workbench run"),
    "out-folder-with-subfolders": (lambda m, d: ["train", "--data", "digits", "--out",
                                                 str((write(d / "r/report.json", "{}"), write(d / "r/sub/x", "y"))[0].parent)],
                                   "holds other things"),
    "device-cuda": (lambda m, d: _certify("--device", "cuda")(m), "CUDA is not available"),
    "device-train-cuda": (lambda m, d: ["train", "--data", "digits", "--device", "cuda:3"], "CUDA is not available"),
    "device-nonsense": (lambda m, d: _certify("--device", "gpu-please")(m), "unknown device"),
    "seed-negative": (lambda m, d: ["train", "--data", "digits", "--seed", "-1"], "--seed must be"),
    "seed-too-big": (lambda m, d: ["train", "--data", "digits", "--seed", str(2 ** 32)], "--seed must be"),
    "seed-detect-negative": (lambda m, d: ["detect", "--data", "digits", "--seed", "-5"], "--seed must be"),
    "eps-inf": (lambda m, d: _certify("--method", "ibp", "--eps", "inf")(m), "finite number >= 0, got inf"),
    "eps-nan": (lambda m, d: _certify("--method", "ibp", "--eps", "nan")(m), "epsilon must be >= 0, got nan"),
    "eps-negative": (lambda m, d: _certify("--method", "ibp", "--eps", "-1")(m), "epsilon must be >= 0"),
    "sigma-nan": (lambda m, d: _certify("--sigma", "nan")(m), "sigma must be > 0"),
    "sigma-inf": (lambda m, d: _certify("--sigma", "inf")(m), "sigma must be > 0"),
    "alpha-one": (lambda m, d: _certify("--alpha", "1")(m), "alpha"),
    "fail-abstain-nan": (lambda m, d: _certify("--fail-abstain", "nan")(m), "--fail-abstain must be in"),
    "fail-abstain-negative": (lambda m, d: _certify("--fail-abstain", "-1")(m), "--fail-abstain must be in"),
    "fail-abstain-percent": (lambda m, d: _certify("--fail-abstain", "5")(m), "--fail-abstain must be in"),
    "batch-size-1e8": (lambda m, d: _certify("--batch-size", "100000000")(m), "--batch-size 100,000,000 .* over the limit"),
    "batch-size-zero": (lambda m, d: _certify("--batch-size", "0")(m), "--batch-size must be an integer >= 1"),
    "diffusion-batch-size-1e8": (lambda m, d: ["diffusion", "train", "--batch-size", "100000000"], "over the limit"),
    "test-fraction-1.5": (lambda m, d: ["train", "--data", "digits", "--test-fraction", "1.5"], "test_fraction"),
    "epochs-negative": (lambda m, d: ["train", "--data", "digits", "--epochs", "-2"], "epochs must be >= 1"),
    "certify-wrong-shape": (lambda m, d: ["certify", "--model", str(m), "--data", "mnist10k", "--limit", "5"],
                            r"takes images of shape \(1, 8, 8\) but mnist10k has \(1, 28, 28\)"),
    "audit-embeddings-wrong-channels": (lambda m, d: ["audit", "labels", "--data", "digits", "--method", "embeddings",
                                                      "--model", _rgb_model(d)], r"takes 3-channel images \(3, 8, 8\)"),
    "audit-embeddings-wrong-size": (lambda m, d: ["audit", "labels", "--data", "mnist10k", "--method", "embeddings",
                                                  "--model", str(m)], r"takes images of shape \(1, 8, 8\) but mnist10k"),
    "audit-outliers-wrong-channels": (lambda m, d: ["audit", "labels", "--data", "digits", "--outliers", _rgb_model(d)],
                                      r"takes 3-channel images \(3, 8, 8\)"),
    "detect-truth-out-of-range": (lambda m, d: ["detect", "--data", "digits", "--model", str(m), "--method", "spectral",
                                                "--truth", str(write(d / "t.txt", "1 2 99999"))], "must lie in"),
}
USAGE_CASES = {  # rejected by the option parser itself (click's usage message, exit 2)
    "limit-negative": lambda m, d: _certify("--limit", "-5")(m),
    "batch-size-float": lambda m, d: _certify("--batch-size", "1e8")(m),
    "seed-text": lambda m, d: ["train", "--seed", "abc"],
    "unknown-option": lambda m, d: ["train", "--no-such-option"],
}


@pytest.mark.parametrize("name", sorted(OPTION_CASES))
def test_bad_option_is_refused_before_any_work(name, untrained_model, tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    args, message = OPTION_CASES[name]
    argv = args(untrained_model, tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    t0 = time.perf_counter()
    code = main(["-q", *argv, *([] if "--out" in argv else ["--out", str(tmp_path / "out")])])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    _one_line_bad_input(err, message)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert time.perf_counter() - t0 < 60  # refused up front, not after training


@pytest.mark.parametrize("name", sorted(USAGE_CASES))
def test_usage_errors_exit_2(name, untrained_model, tmp_path, capsys):
    code = main([*USAGE_CASES[name](untrained_model, tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "Error" in err, err
    assert not (tmp_path / "out").exists()


def test_read_only_out_is_refused_before_training(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the check is os.access, which root passes")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["-q", "train", "--data", "digits", "--out", str(ro / "run")]) == 2
        assert "no permission" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_class_names_with_markup_render_as_text(tmp_path, capsys):
    """Class names are user data: mathtext (``$...$``) must not crash the figures, and HTML stays
    escaped in the report (a class named ``<script>alert(1)</script>``)."""
    names = np.array(["$x^$", "<script>alert(1)</script>", "=1+1"])
    p = write(tmp_path / "d.npz", npz_bytes(images=np.random.default_rng(0).integers(0, 256, (60, 8, 8), np.uint8),
                                            labels=LAB, class_names=names))
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", f"npz:{p}", "--epochs", "1", "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert json.loads((out / "model.json").read_text())["class_names"] == names.tolist()
    from workbench.report import heatmap_png

    png = heatmap_png(np.eye(3), list(names), list(names), "$pred$", "$true")
    assert png.startswith(b"\x89PNG")
    from workbench.report import plain
    from workbench.ui.certifiers import _vote_histograms

    # the certifier page's vote histograms take the same class names (and captions naming them)
    assert _vote_histograms(torch.tensor([[3, 1, 0]]), list(names), ["true $x^$"]).startswith(b"\x89PNG")
    assert plain("$\\alpha$") == "\\$\\alpha\\$"  # printed as typed, not as mathtext's α


# ------------------------------------------------------------------ names printed in messages
@pytest.mark.parametrize("name", ["a\nb.npz", "c\x1b[31mred.npz", "d\r\u202eevil.npz"])
def test_file_names_with_control_characters_print_on_one_line(name, tmp_path, capsys):
    """A name with a newline, an ANSI colour code or a bidi override is printed escaped: one line, no
    raw ESC reaching the terminal."""
    out = tmp_path / "run"
    code = main(["-q", "train", "--data", f"npz:{tmp_path / name}", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    _one_line_bad_input(err, "not found")
    assert "\x1b" not in err and "\r" not in err and "\u202e" not in err
    from workbench.errors import printable

    assert printable(name) in err and not out.exists()


def test_data_convert_to_an_empty_name_is_refused_and_leaves_the_current_folder(tmp_path, capsys, monkeypatch):
    """``data convert digits ""``: typer turns "" into Path("") == ".", which convert would swap out."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["-q", "data", "convert", "digits", ""]) == 2
    _one_line_bad_input(capsys.readouterr().err.strip(), "OUT_DIR is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
