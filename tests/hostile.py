"""Builders of hostile and broken input files, shared by the hostile-input and fuzzing tests.

Each builder writes bytes a new user (or an attacker) could hand the workbench: files that lie about
their sizes, decompression bombs, pickles, wrong types. None of them needs more than a few KB of disk
or a second of CPU to build.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_member(shape, dtype="|u1", data: bytes = b"") -> bytes:
    """An .npy file whose header declares ``shape`` and ``dtype`` but which holds ``data``."""
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def zip_bytes(members: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def npz_bomb(megabytes: int) -> bytes:
    """A valid .npz whose ``images`` array of zeros decompresses to ``megabytes`` MB (about 1/1000 on disk)."""
    n = megabytes * (1 << 20) // 64
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("images.npy", "w", force_zip64=True) as fh:
            fh.write(npy_member((n, 8, 8)))
            chunk = b"\x00" * (1 << 20)
            for _ in range(megabytes):
                fh.write(chunk)
        z.writestr("labels.npy", npy_member((n,), "<i8", b""))  # inconsistent too, but never reached
    return buf.getvalue()


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def idx_header(dims, code: int = 0x08, data: bytes = b"") -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data


def gzip_bomb(megabytes: int) -> bytes:
    """A gzip IDX of ``megabytes`` MB of zero pixels (honest header), a few KB compressed."""
    import gzip

    n = megabytes * (1 << 20) // 784
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as g:
        g.write(idx_header((n, 28, 28)))
        chunk = b"\x00" * 784 * 1024
        left = n * 784
        while left > 0:
            g.write(chunk[: min(len(chunk), left)])
            left -= len(chunk)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` grey pixels (a decompression bomb's header) with a
    tiny IDAT: anything that decodes it before checking the size spends width·height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
            + chunk(b"IEND", b""))


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def card(**fields) -> str:
    base = {"arch": "cnn", "input_shape": [1, 8, 8], "class_names": [str(i) for i in range(10)],
            "arch_kwargs": {}, "provenance": {}, "format": "workbench-model/1"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP})


_DROP = object()
DROP = _DROP  # ``card(arch=DROP)`` leaves the field out
