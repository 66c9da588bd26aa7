"""Size limits on what the workbench reads and builds, checked *before* anything is allocated.

A small hostile or broken file can declare far more than it holds: an ``.npz`` of 0.4 MB that
decompresses to gigabytes, an IDX header that announces 10⁹ images, a PNG of 20,000 × 20,000
pixels, one label of 10⁹ that would make a list of 10⁹ class names, a model card asking for a
network of billions of parameters, a batch size of 10⁸. Every loader compares the declared size
with a limit first and refuses with :class:`~workbench.errors.BadInput` (CLI exit code 2) naming
the file, the size, the limit and the environment variable that raises it.

The limits are generous for the small image models this workbench is for (the embedded MNIST-10k
is 7.8 MB decoded; CIFAR-10's training set 150 MB). A user with bigger data raises a limit for one
run, e.g. ``WORKBENCH_MAX_DATA_BYTES=16G workbench train --data npz:big.npz``. Values accept a plain
integer, a float such as ``2e9``, or a binary suffix ``K``, ``M``, ``G``, ``T`` (``512M``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import BadInput


@dataclass(frozen=True)
class Limit:
    """One size limit: its name, the environment variable that raises it, its default and unit.

    Parameters
    ----------
    name : str
        The key in :data:`LIMITS` (e.g. ``"data_bytes"``).
    env : str
        The environment variable that overrides the default (e.g. ``WORKBENCH_MAX_DATA_BYTES``).
    default : int
        The limit when the variable is not set.
    what : str
        A noun phrase for the docs (what is measured).
    unit : str
        The unit in messages (``"bytes"``, ``"pixels"``, ...).

    Returns
    -------
    A Limit (frozen dataclass).

    Examples
    --------
    >>> LIMITS["classes"].env, LIMITS["classes"].default
    ('WORKBENCH_MAX_CLASSES', 100000)
    """

    name: str
    env: str
    default: int
    what: str  # a noun phrase for the docs
    unit: str  # "bytes", "pixels", ...


LIMITS: dict[str, Limit] = {lim.name: lim for lim in (
    Limit("data_bytes", "WORKBENCH_MAX_DATA_BYTES", 2 << 30,
          "decoded size of a dataset (all arrays of an .npz, an IDX file after gunzip, all images of a folder)",
          "bytes"),
    Limit("image_pixels", "WORKBENCH_MAX_IMAGE_PIXELS", 64 << 20,
          "pixels of one image in a folder dataset or an upload (width × height)", "pixels"),
    Limit("classes", "WORKBENCH_MAX_CLASSES", 100_000, "number of classes of a dataset or a model", "classes"),
    Limit("model_parameters", "WORKBENCH_MAX_MODEL_PARAMETERS", 200_000_000,
          "parameters of a model built from a model card (before any weight is allocated)", "parameters"),
    Limit("batch_bytes", "WORKBENCH_MAX_BATCH_BYTES", 1 << 30,
          "input bytes of one forward batch (batch size × image size × 4)", "bytes"),
)}

_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, source: str = "size") -> int:
    """Read a size: ``"512M"`` → 536870912, ``"2e9"`` → 2000000000, ``"1000"`` → 1000; BadInput otherwise.

    Suffixes ``K``, ``M``, ``G``, ``T`` are binary (powers of 1024); a trailing ``B`` or ``iB`` is
    ignored; case does not matter.

    Parameters
    ----------
    text : str
        The size as written (an environment variable's value).
    source : str, default "size"
        Where it comes from, for the message.

    Returns
    -------
    int
        The size, in [1, 2**63).

    Raises
    ------
    BadInput
        If ``text`` is not a number with an optional suffix, or is not in [1, 2**63).

    Examples
    --------
    >>> parse_size("512M"), parse_size("2e9"), parse_size("1000")
    (536870912, 2000000000, 1000)
    >>> parse_size("lots")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: size: cannot read 'lots' as a size (e.g. 1000, 2e9, 512M, 4G)
    """
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if t and t[-1] in _SUFFIX:
        mult, t = _SUFFIX[t[-1]], t[:-1]
    try:
        value = float(t) * mult
    except ValueError:
        raise BadInput(f"{source}: cannot read {text!r} as a size (e.g. 1000, 2e9, 512M, 4G)") from None
    if not (value == value and 1 <= value < 2 ** 63):
        raise BadInput(f"{source}: a size must be a positive number below 2**63, got {text!r}")
    return int(value)


def limit(name: str) -> int:
    """The current value of limit ``name``: its environment variable if set, else the default.

    Parameters
    ----------
    name : str
        A key of :data:`LIMITS`.

    Returns
    -------
    int
        The limit (read from the environment at each call).

    Raises
    ------
    BadInput
        If the environment variable is set to something that is not a size (see :func:`parse_size`).
    KeyError
        If ``name`` is not a limit.
    """
    lim = LIMITS[name]
    raw = os.environ.get(lim.env, "").strip()
    return parse_size(raw, lim.env) if raw else lim.default


def check(name: str, value: int, what: str) -> int:
    """Raise :class:`BadInput` if ``value`` exceeds limit ``name``; ``what`` names the thing measured.

    Parameters
    ----------
    name : str
        A key of :data:`LIMITS`.
    value : int
        The declared size, measured before anything is allocated.
    what : str
        The start of the message: what was measured (e.g. ``"data.npz: the arrays"``).

    Returns
    -------
    int
        ``value``, when within the limit.

    Raises
    ------
    BadInput
        If ``value`` is over the limit; the message names the limit and its environment variable.

    Examples
    --------
    >>> check("classes", 10, "the labels")
    10
    """
    lim = LIMITS[name]
    cap = limit(name)
    if value > cap:
        raise BadInput(f"{what} is {value:,} {lim.unit}, over the limit of {cap:,} {lim.unit}; "
                       f"if you trust this input, raise the limit with {lim.env}=N")
    return int(value)


def check_batch(batch_size: int, input_shape, what: str = "--batch-size") -> int:
    """A batch size must be a positive integer whose input batch fits :data:`LIMITS` ``batch_bytes``.

    The batch's size is counted as float32: ``batch_size × prod(input_shape) × 4`` bytes.

    Parameters
    ----------
    batch_size : int
        The batch size to check.
    input_shape : sequence of int
        ``(C, H, W)`` of one input.
    what : str, default "--batch-size"
        The option's name, for the message.

    Returns
    -------
    int
        ``batch_size`` as an ``int``.

    Raises
    ------
    BadInput
        If ``batch_size`` is not an integer ≥ 1 or the batch is over the ``batch_bytes`` limit.

    Examples
    --------
    >>> check_batch(64, (3, 32, 32))
    64
    >>> check_batch(0, (3, 32, 32))
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: --batch-size must be an integer >= 1, got 0
    """
    try:
        ok = int(batch_size) == batch_size and batch_size >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise BadInput(f"{what} must be an integer >= 1, got {batch_size!r}")
    elements = 1
    for s in input_shape:
        elements *= int(s)
    check("batch_bytes", int(batch_size) * elements * 4,
          f"{what} {int(batch_size):,} on inputs {tuple(int(s) for s in input_shape)} asks for a batch that")
    return int(batch_size)
