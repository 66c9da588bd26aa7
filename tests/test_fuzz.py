"""Property-based fuzzing of every loader a user's file reaches: ``.npz``, image folders, IDX (raw and
gzip), model weights (``.pt``/``.safetensors``), ``model.json`` cards and review files.

Each loader gets ``FUZZ_EXAMPLES`` (2,000) generated cases, deterministically (``derandomize``): random
bytes, truncations and bit flips of valid files, wrong dtypes and ranks, NaN/inf, zero-size arrays,
object arrays, headers that lie about their sizes, decompression-bomb headers, symlinks out of a
folder. Every case must either load or raise :class:`BadInput` (the CLI's exit code 2): no other
exception, nothing written beside the input, and nothing unpickled (``pickle``'s entry points are
replaced by a trap for the duration, and a pickled payload would touch a marker file).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import idx_header, npy_member, png_bytes, png_header_only, zip_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from workbench.errors import BadInput

FUZZ_EXAMPLES = int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES", "2000"))  # per loader; raise it for a long run
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
MARKER = Path("/tmp/workbench-fuzz-pwned")


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """One folder per loader, reused by every generated case (cleared between cases)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    def trap(*a, **k):
        raise AssertionError("a loader tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap)
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists()


def _fresh(box: Path, name: str) -> Path:
    d = box / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d


def _outcome(call, folder: Path, inputs: set[str]):
    """Run ``call``: it returns or raises BadInput with a one-line message; nothing appears in ``folder``."""
    try:
        result = call()
    except BadInput as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        result = None
    written = {str(p.relative_to(folder)) for p in folder.rglob("*")} - inputs
    assert not written, written
    return result


def _mutate(data: bytes, draw) -> bytes:
    """A truncation, bit flips, or an overwritten span of ``data``."""
    how = draw(st.sampled_from(["keep", "truncate", "flip", "overwrite"]))
    if how == "keep" or not data:
        return data
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    b = bytearray(data)
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    i = draw(st.integers(0, len(b) - 1))
    patch = draw(st.binary(min_size=1, max_size=16))
    b[i:i + len(patch)] = patch
    return bytes(b)


# ------------------------------------------------------------------ npz
_DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint64, np.float16, np.float32,
                           np.float64, np.bool_, np.complex64, "U3", "S2"])


@st.composite
def npz_files(draw) -> bytes:
    kind = draw(st.sampled_from(["arrays", "arrays", "arrays", "random", "lying", "object"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "lying":
        shape = draw(st.lists(st.integers(0, 2 ** 40), min_size=0, max_size=4))
        return zip_bytes({"images.npy": npy_member(shape, draw(st.sampled_from(["|u1", "<f4", "<i8"])),
                                                   draw(st.binary(max_size=200))),
                          "labels.npy": npy_member((draw(st.integers(0, 10)),), "<i8", b"\x00" * 8)})
    if kind == "object":
        return zip_bytes({"images.npy": npy_member((1,), "|O", _EXPLOIT_BYTES),
                          "labels.npy": npy_member((1,), "<i8", b"\x00" * 8)})
    n = draw(st.integers(0, 12))
    img_shape = draw(st.sampled_from([(n, 4, 4), (n, 3, 4, 4), (n, 4, 4, 3), (n, 4, 4, 4), (n,), (n, 0, 4),
                                      (n, 2, 2, 2, 2), (n, 5, 4, 4)]))
    images = draw(hnp.arrays(draw(_DTYPES), img_shape))
    lab_len = draw(st.sampled_from([n, n, max(0, n - 1), n + 1]))
    labels = draw(hnp.arrays(draw(_DTYPES), (lab_len,), elements=None))
    if draw(st.booleans()) and np.issubdtype(labels.dtype, np.number) and not np.issubdtype(labels.dtype, np.complexfloating):
        labels = np.abs(labels) % 4 if np.issubdtype(labels.dtype, np.integer) else labels
    arrays = {draw(st.sampled_from(["images", "x", "X", "pictures"])): images,
              draw(st.sampled_from(["labels", "y", "Y"])): labels}
    if draw(st.booleans()):
        arrays["class_names"] = draw(hnp.arrays(draw(st.sampled_from(["U4", np.int64, np.float32])),
                                                (draw(st.integers(0, 6)),)))
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
    return _mutate(buf.getvalue(), draw)


_EXPLOIT_BYTES = b"\x80\x02cposix\nsystem\nq\x00X\x1f\x00\x00\x00touch /tmp/workbench-fuzz-pwnedq\x01\x85q\x02Rq\x03."


@FUZZ
@given(data=npz_files())
def test_fuzz_npz(box, data):
    from workbench.data import load_npz

    d = _fresh(box, "npz")
    (d / "d.npz").write_bytes(data)
    ds = _outcome(lambda: load_npz(d / "d.npz"), d, {"d.npz"})
    if ds is not None:
        assert ds.images.dtype == torch.float32 and float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
        assert int(ds.labels.max()) < ds.num_classes and len(ds.images) == len(ds.labels) > 0


# ------------------------------------------------------------------ idx
@st.composite
def idx_files(draw) -> tuple[bytes, bool]:
    kind = draw(st.sampled_from(["valid", "header", "random"]))
    if kind == "random":
        data = draw(st.binary(max_size=300))
    else:
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0x10]))
        if kind == "valid":
            dims = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
            itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
            size = int(np.prod(dims)) * itemsize
            data = idx_header(dims, code, draw(st.binary(min_size=size, max_size=size)))
        else:
            dims = draw(st.lists(st.integers(0, 2 ** 32 - 1), min_size=0, max_size=6))
            data = idx_header(dims, code, draw(st.binary(max_size=100)))
        data = _mutate(data, draw)
    return data, draw(st.booleans())


@FUZZ
@given(images=idx_files(), labels=idx_files())
def test_fuzz_idx(box, images, labels):
    import gzip

    from workbench.data import load_idx

    d = _fresh(box, "idx")
    paths = []
    for name, (data, gz) in (("img", images), ("lab", labels)):
        p = d / (name + (".idx.gz" if gz else ".idx"))
        p.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
        paths.append(p)
    ds = _outcome(lambda: load_idx(*paths), d, {p.name for p in paths})
    if ds is not None:
        assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1 and int(ds.labels.max()) < ds.num_classes


# ------------------------------------------------------------------ image folders
@st.composite
def folder_trees(draw) -> dict[str, bytes | str]:
    """Relative path -> file bytes, or ``"->target"`` for a symlink."""
    tree: dict[str, bytes | str] = {}
    for c in range(draw(st.integers(0, 3))):
        for i in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["png", "png", "png", "rgb", "random", "bomb", "mutated", "link", "text"]))
            name = f"c{c}/{i}.{draw(st.sampled_from(['png', 'jpg', 'PNG', 'txt']))}"
            size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
            if kind == "png":
                tree[name] = png_bytes(np.full(size, draw(st.integers(0, 255)), np.uint8))
            elif kind == "rgb":
                tree[name] = png_bytes(np.zeros((*size, 3), np.uint8))
            elif kind == "random":
                tree[name] = draw(st.binary(max_size=200))
            elif kind == "bomb":
                tree[name] = png_header_only(draw(st.integers(1, 2 ** 31 - 1)), draw(st.integers(1, 2 ** 31 - 1)))
            elif kind == "mutated":
                tree[name] = _mutate(png_bytes(np.zeros(size, np.uint8)), draw)
            elif kind == "link":
                tree[name] = "->" + draw(st.sampled_from(["../../outside.png", "/dev/zero", "../c0", "missing.png"]))
            else:
                tree[name] = b"not an image"
    return tree


@FUZZ
@given(tree=folder_trees())
def test_fuzz_image_folder(box, tree):
    from workbench.data import load_folder

    d = _fresh(box, "folder")
    (d / "outside.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    root = d / "root"
    root.mkdir()
    for rel, content in tree.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            os.symlink(content[2:], p)
        else:
            p.write_bytes(content)
    inputs = {str(p.relative_to(d)) for p in d.rglob("*")}
    ds = _outcome(lambda: load_folder(root), d, inputs)
    if ds is not None:
        assert ds.class_names == sorted(ds.class_names) and len(ds) == len(ds.labels) > 0


# ------------------------------------------------------------------ model weights
def _tensors(draw) -> dict:
    out = {}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(["conv1.weight", "fc2.bias", "module.bn1.running_var", "x", ""]))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]))
        t = torch.zeros(shape, dtype=dtype)
        if dtype == torch.float32 and t.numel() and draw(st.booleans()):
            t.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), 1e30]))
        out[key] = t
    return out


def _valid_state() -> dict:
    """The state dict of the architecture the weights fuzzer loads into (built once)."""
    if not _VALID:
        from workbench.models import build_model

        _VALID.update(build_model("cnn", 1, 3, 8, seed=0).state_dict())
    return _VALID


_VALID: dict = {}


@st.composite
def weight_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".pt", ".pth", ".safetensors"]))
    kind = draw(st.sampled_from(["valid", "state", "state", "objects", "random", "exploit", "zip"]))
    if kind == "random":
        return suffix, draw(st.binary(max_size=400))
    if kind == "exploit":
        return suffix, _EXPLOIT_BYTES
    if kind == "zip":
        return suffix, zip_bytes({draw(st.sampled_from(["data.pkl", "archive/data.pkl", "x"])): draw(st.binary(max_size=50))})
    if kind == "valid":
        state = _valid_state()
    elif kind == "state":
        state = _tensors(draw)
    else:
        state = draw(st.sampled_from([[1, 2], {"a": 1}, {"state_dict": [1]}, "text", {"w": {"nested": 1}}]))
    if suffix == ".safetensors":
        from safetensors.torch import save

        try:
            data = save({k: v.contiguous() for k, v in state.items()}) if isinstance(state, dict) else b"{}"
        except Exception:  # noqa: BLE001 - safetensors refuses some dicts itself; then random bytes
            data = draw(st.binary(max_size=64))
    else:
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
    return suffix, _mutate(data, draw)


@FUZZ
@given(f=weight_files())
def test_fuzz_model_weights(box, f):
    from workbench.models import load_model

    suffix, data = f
    d = _fresh(box, "weights")
    (d / f"w{suffix}").write_bytes(data)
    m = _outcome(lambda: load_model(d / f"w{suffix}", arch="cnn", input_shape=(1, 8, 8), class_names=["a", "b", "c"]),
                 d, {f"w{suffix}"})
    if m is not None:
        with torch.no_grad():
            assert m.model(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


# ------------------------------------------------------------------ model cards
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats() | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
                     max_leaves=12)


@st.composite
def cards(draw) -> str:
    kind = draw(st.sampled_from(["fields", "fields", "fields", "json", "text"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "json":
        return json.dumps(draw(_JSON))
    d = {"arch": draw(st.sampled_from(["cnn", "cnn", "resnet", "vgg", 3, None])),
         "input_shape": draw(st.sampled_from([[1, 8, 8], [1, 8, 8], [3, 16, 16], [1, 8], [0, 8, 8], [1, 2 ** 31, 2 ** 31],
                                              [1.0, 8, 8], "1,8,8", [2, 8, 8], [1, 200, 200]])),
         "class_names": draw(st.sampled_from([list("abc"), list("abc"), ["a"], "abc", [1, 2, 3], [None, 1],
                                              [str(i) for i in range(10)]])),
         "arch_kwargs": draw(st.sampled_from([{}, {}, {"width": 4}, {"width": 20000}, {"width": -1}, {"width": "x"},
                                              {"depth": 2}, [], {"width": 2 ** 40}, {"width": True}])),
         "provenance": draw(st.sampled_from([{}, {"a": [1]}, [], "x"]))}
    for key in list(d):
        if draw(st.integers(0, 9)) == 0:
            del d[key]
    return json.dumps(d)


@pytest.fixture(scope="module")
def cnn4_weights():
    from safetensors.torch import save

    from workbench.models import build_model

    return save({k: v.contiguous() for k, v in build_model("cnn", 1, 3, 8, seed=0, width=4).state_dict().items()})


@FUZZ
@given(text=cards())
def test_fuzz_model_cards(box, cnn4_weights, text):
    from workbench.models import load_model

    d = _fresh(box, "card")
    (d / "model.safetensors").write_bytes(cnn4_weights)
    (d / "model.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    m = _outcome(lambda: load_model(d), d, {"model.safetensors", "model.json"})
    if m is not None:  # the weights fix 1 channel and 3 classes; the zoo's CNN takes any size up to 512
        assert m.card.input_shape[0] == 1 and m.card.class_names == [str(c) for c in json.loads(text)["class_names"]]
        assert m.model(torch.zeros(1, *m.card.input_shape)).shape == (1, 3)


# ------------------------------------------------------------------ review files (read only)
@st.composite
def reviews(draw) -> tuple[str, str]:
    suffix = draw(st.sampled_from([".csv", ".json"]))
    kind = draw(st.sampled_from(["csv", "json", "text"]))
    if kind == "text":
        return suffix, draw(st.text(max_size=200))
    if kind == "json":
        return suffix, json.dumps(draw(_JSON | st.dictionaries(st.text(max_size=3), st.sampled_from(
            ["given", "suggested", "both", "neither", "x", 1]), max_size=4)))
    header = draw(st.sampled_from(["index,verdict", "index,verdict,given,suggested", "verdict", "a,b", ""]))
    rows = draw(st.lists(st.tuples(st.sampled_from(["1", "-1", "x", "1e9", "", "2"]),
                                   st.sampled_from(["given", "suggested", "both", "neither", "=1+1", ""]),
                                   st.sampled_from(["", "3", "nan"]), st.sampled_from(["", "4", "-2"])), max_size=5))
    return suffix, header + "\n" + "\n".join(",".join(r) for r in rows)


@FUZZ
@given(f=reviews())
def test_fuzz_review_files(box, f):
    from workbench.labels import load_review

    suffix, text = f
    d = _fresh(box, "review")
    (d / f"r{suffix}").write_text(text, encoding="utf-8", errors="surrogatepass")
    _outcome(lambda: load_review(d / f"r{suffix}"), d, {f"r{suffix}"})


def test_the_fuzzing_payload_is_a_real_exploit():
    """The pickled payload the fuzzers feed runs ``touch`` when anything unpickles it (here, on purpose,
    through the C unpickler the trap does not cover)."""
    import _pickle

    _pickle.loads(_EXPLOIT_BYTES)
    assert MARKER.exists()
    MARKER.unlink()
