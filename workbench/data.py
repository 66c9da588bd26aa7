"""Datasets: the embedded defaults, a user's own files, one spec string, seeded stratified splits.

Every loader returns an :class:`ImageDataset` holding images N×C×H×W, int64 labels 0..K-1, class
names and a name. Images are stored as they came: uint8 stays uint8 (a quarter of float32), a
memory-mapped ``npy:DIR`` folder stays on disk, and float32 is read per batch through
:attr:`ImageDataset.pixels`; :attr:`ImageDataset.images` still gives the whole set as float32 in [0, 1]
for code that wants it in memory. Loaders validate what they read and raise
:class:`~workbench.errors.BadInput` with a message naming the problem (missing file, unreadable
image, length mismatch, wrong rank, NaN or out-of-range values, empty data, a single class).

Spec strings (CLI and app): ``mnist10k``, ``digits``, ``shapes[:ARGS]`` (procedurally generated, see
:mod:`workbench.synthetic`), ``npz:PATH``, ``folder:PATH``,
``idx:IMAGES,LABELS``, ``npy:DIR`` (a memory-mapped folder, see :func:`load_npy_dir` and
:func:`convert_dataset`).
"""

from __future__ import annotations

import gzip
import math
import struct
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import limits
from .errors import BadInput, require

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MNIST10K_SHA256 = "a9c444adb7dac046fe419c1988c0811da067438961b66d8322526e6e844cae2d"


class ImageView:
    """Float32 [0, 1] images read per index from a dataset's storage, one batch at a time.

    ``view[i:j]`` or ``view[index_tensor]`` converts just those rows (uint8 is divided by 255), so code
    that walks images in batches (``predict_logits``, ``layer_outputs``, ``fit``) holds one batch in
    float32, never the whole set. Has ``shape``, ``ndim``, ``dtype`` (always ``torch.float32``) and
    ``len`` like a tensor; iterating yields one C×H×W image at a time.

    Parameters
    ----------
    raw : torch.Tensor or numpy.ndarray
        The stored images, N×C×H×W, uint8 (0-255) or float32 (0-1); a memory-mapped NumPy array is read
        from disk only for the rows asked for.

    Returns
    -------
    An ImageView
        Indexing it returns a float32 tensor in [0, 1] (a copy for uint8 and NumPy storage).

    Examples
    --------
    >>> import torch
    >>> view = ImageView(torch.tensor([[[[0, 255]]], [[[255, 0]]]], dtype=torch.uint8))
    >>> view.shape, len(view)
    (torch.Size([2, 1, 1, 2]), 2)
    >>> view[1:].tolist()
    [[[[1.0, 0.0]]]]
    """

    dtype = torch.float32

    def __init__(self, raw):
        self.raw = raw

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.raw.shape)

    @property
    def ndim(self) -> int:
        return len(self.raw.shape)

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def __getitem__(self, key) -> torch.Tensor:
        raw = self.raw
        if isinstance(raw, np.ndarray):
            if isinstance(key, torch.Tensor):
                key = key.numpy()
            part = torch.from_numpy(np.array(raw[key]))  # a copy of the rows read from disk
        else:
            part = raw[key]
        if part.dtype == torch.uint8:
            return part.float().div_(255.0)
        return part if part.dtype == torch.float32 else part.float()

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


@dataclass
class ImageDataset:
    """Images N×C×H×W, labels N (int64), class names and provenance: what every loader returns.

    ``images`` may be given as a float32 tensor in [0, 1], a uint8 tensor (0-255, kept as uint8) or a
    NumPy array of either dtype (a memory-mapped one stays on disk). Read them per batch as float32
    with :attr:`pixels` (``ds.pixels[idx]``); :attr:`images` returns the whole set as one float32
    tensor (kept for in-memory storage, rebuilt on each access for memory-mapped storage). Labels of
    any integer dtype are converted to int64.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        N×C×H×W, float32 in [0, 1] or uint8.
    labels : torch.Tensor
        N integer labels in ``0..len(class_names) - 1``.
    class_names : list of str
        One name per class (K ≥ 1; the loaders ask for K ≥ 2).
    name : str
        Where the data came from (a spec, ``"digits/train"``, ``"npz:file.npz"``); shown in reports.
    indices : torch.Tensor, optional
        Positions of these samples in the dataset they were taken from (set by :meth:`subset`, splits);
        default ``None``.

    Returns
    -------
    An ImageDataset (dataclass)
        With ``len``, :attr:`pixels`, :attr:`images`, :attr:`storage`, :attr:`num_classes`,
        :attr:`channels`, :attr:`image_size`, :attr:`input_shape`, :meth:`class_counts`, :meth:`subset`,
        :meth:`sample`, :meth:`with_labels` and :meth:`resized`.

    Raises
    ------
    BadInput
        If the arrays cannot form a dataset (see :func:`validate_arrays`).

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"], "toy")
    >>> len(ds), ds.input_shape, ds.storage, ds.class_counts()
    (4, (1, 2, 2), 'uint8', [2, 2])
    >>> ds.images.dtype
    torch.float32
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor
    class_names: list[str]
    name: str
    #: Positions of these samples in the dataset they were taken from (splits, subsets).
    indices: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.labels, torch.Tensor) and self.labels.dtype != torch.int64 and not (
                self.labels.is_floating_point() or self.labels.is_complex() or self.labels.dtype == torch.bool):
            self.labels = self.labels.long()  # any integer dtype
        validate_arrays(self._raw, self.labels, len(self.class_names), self.name)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getstate__(self) -> dict:
        """Pickled (e.g. sent to a Ray task) without the float32 copy :attr:`images` may have cached."""
        return {k: v for k, v in self.__dict__.items() if k != "_float"}

    @property
    def pixels(self) -> ImageView:
        """The images as float32 [0, 1], converted per index or slice (memory bounded by the batch).

        Returns
        -------
        ImageView
            A view over the stored images; ``ds.pixels[i:j]`` is a float32 tensor.
        """
        return ImageView(self._raw)

    @property
    def storage(self) -> str:
        """How the images are held: ``uint8``, ``float32`` or ``memmap-uint8`` / ``memmap-float32``.

        Returns
        -------
        str
            The storage kind.
        """
        raw = self._raw
        dtype = str(raw.dtype).replace("torch.", "")
        return f"memmap-{dtype}" if isinstance(raw, np.memmap) else dtype

    @property
    def num_classes(self) -> int:
        """The number of classes, K (the number of class names).

        Returns
        -------
        int
        """
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """The number of channels, C (1 for grey, 3 for RGB).

        Returns
        -------
        int
        """
        return int(self._raw.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """The image size ``(H, W)``.

        Returns
        -------
        tuple of int
        """
        return int(self._raw.shape[2]), int(self._raw.shape[3])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)`` (what a model built for this data takes).

        Returns
        -------
        tuple of int
        """
        return (self.channels, *self.image_size)

    def class_counts(self) -> list[int]:
        """How many samples each class has.

        Parameters: none

        Returns
        -------
        list of int
            K counts, class 0 first (0 for a class without samples).
        """
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def _replace(self, **changes) -> ImageDataset:
        """``dataclasses.replace`` that passes the stored images (uint8, memory-mapped) unconverted."""
        kw = {"images": self._raw, "labels": self.labels, "class_names": list(self.class_names),
              "name": self.name, "indices": self.indices}
        kw.update(changes)
        return ImageDataset(**kw)

    def subset(self, indices, name: str | None = None) -> ImageDataset:
        """The samples at ``indices``, stored as this dataset stores them.

        Rows of a memory-mapped set are read into memory. The result's ``indices`` point into the
        original data (through any earlier subsets).

        Parameters
        ----------
        indices : sequence of int or torch.Tensor
            Positions in this dataset (repeats allowed).
        name : str, optional
            The subset's name (default: this dataset's name).

        Returns
        -------
        ImageDataset
            ``len(indices)`` samples with the same class names.
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        base = self.indices[idx] if self.indices is not None else idx
        raw = self._raw
        part = torch.from_numpy(np.array(raw[idx.numpy()])) if isinstance(raw, np.ndarray) else raw[idx]
        return ImageDataset(part, self.labels[idx], list(self.class_names), name or self.name, indices=base)

    def sample(self, n: int, seed: int = 0) -> ImageDataset:
        """A seeded random sample of ``min(n, len)`` samples, in random order (``indices`` kept).

        Parameters
        ----------
        n : int
            How many samples; ≥ 1.
        seed : int, default 0
            Seed of the permutation.

        Returns
        -------
        ImageDataset
            The sampled subset (see :meth:`subset`).

        Raises
        ------
        BadInput
            If ``n < 1``.
        """
        require(n >= 1, f"sample size must be >= 1, got {n}")
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.subset(pick)

    def with_labels(self, labels) -> ImageDataset:
        """The same images with other labels (e.g. corrected or poisoned ones).

        Parameters
        ----------
        labels : sequence of int or torch.Tensor
            N new labels in ``0..K-1``.

        Returns
        -------
        ImageDataset
            A new dataset sharing this one's image storage.

        Raises
        ------
        BadInput
            If the shape differs from the current labels' or a label is out of range.
        """
        labels = torch.as_tensor(labels, dtype=torch.long)
        require(labels.shape == self.labels.shape,
                f"new labels have shape {tuple(labels.shape)}, expected {tuple(self.labels.shape)}")
        return self._replace(labels=labels)

    def resized(self, size: int | tuple[int, int], batch_size: int = 4096) -> ImageDataset:
        """Resample every image to ``size`` (area-averaging when shrinking, bilinear otherwise).

        Parameters
        ----------
        size : int or tuple of int
            The new ``(H, W)`` (an int: square); both ≥ 1.
        batch_size : int, default 4096
            Images resampled at a time.

        Returns
        -------
        ImageDataset
            Float32 images in [0, 1] named ``NAME@HxW``; this dataset itself when the size is unchanged.

        Raises
        ------
        BadInput
            If a side of ``size`` is < 1.
        """
        hw = (size, size) if isinstance(size, int) else tuple(size)
        require(min(hw) >= 1, f"size must be positive, got {hw}")
        if hw == self.image_size:
            return self
        shrink = hw[0] <= self.image_size[0] and hw[1] <= self.image_size[1]
        mode = "area" if shrink else "bilinear"
        kwargs = {} if shrink else {"align_corners": False}
        px = self.pixels
        images = torch.cat([F.interpolate(px[i:i + batch_size], size=hw, mode=mode, **kwargs).clamp_(0, 1)
                            for i in range(0, len(px), batch_size)])
        return self._replace(images=images, name=f"{self.name}@{hw[0]}x{hw[1]}")


def _get_images(self: ImageDataset) -> torch.Tensor:
    cached = self.__dict__.get("_float")
    if cached is not None:
        return cached
    raw = self._raw
    if isinstance(raw, torch.Tensor) and raw.dtype == torch.float32:
        return raw
    full = ImageView(raw)[:]
    if not isinstance(raw, np.ndarray):  # in-memory storage: convert once (same tensor on every access)
        self.__dict__["_float"] = full
    return full


def _set_images(self: ImageDataset, value) -> None:
    if isinstance(value, np.ndarray) and not isinstance(value, np.memmap):
        value = torch.from_numpy(value)
    self.__dict__["_raw"] = value
    self.__dict__.pop("_float", None)


# ``images`` is a dataclass field (constructor, positional order) read through a property: the storage
# stays uint8 / memory-mapped and float32 appears only where asked for.
ImageDataset.images = property(_get_images, _set_images, doc="All images as one float32 tensor in [0, 1].")


def _check_float_range(images, name: str, batch: int = 65536) -> None:
    """Finite and within [0, 1], checked in chunks (a memory-mapped array is never read whole)."""
    lo, hi, finite = math.inf, -math.inf, True
    for i in range(0, int(images.shape[0]), batch):
        part = images[i:i + batch]
        part = torch.from_numpy(np.array(part)) if isinstance(part, np.ndarray) else part
        if not bool(torch.isfinite(part).all()):
            finite = False
            break
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    require(finite, f"{name}: images contain NaN or infinite values")
    require(lo >= 0.0 and hi <= 1.0, f"{name}: image values must lie in [0, 1], got [{lo:g}, {hi:g}]"
            + (": they look normalised; give the normalisation's mean and std (as_dataset(..., mean=, std=)) to "
               "map them back to pixels, and the same mean and std to the model (as_model(model, mean=, std=))"
               if lo < 0.0 else ""))


def validate_arrays(images, labels: torch.Tensor, num_classes: int, name: str) -> None:
    """Raise :class:`BadInput` if the arrays cannot form a dataset.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        N×C×H×W, float32 in [0, 1] or uint8 (a memory-mapped array is checked in chunks).
    labels : torch.Tensor
        N int64 labels.
    num_classes : int
        K; labels must lie in ``0..K-1``.
    name : str
        The dataset's name, at the start of each message.

    Returns
    -------
    None

    Raises
    ------
    BadInput
        If either is not a tensor (or array), the images are not rank 4, the labels not rank 1, the set
        is empty, the lengths differ, the images are neither float32 nor uint8, the labels not int64,
        float images hold NaN, ±inf or values outside [0, 1], or a label lies outside ``0..K-1``.

    Examples
    --------
    >>> import torch
    >>> validate_arrays(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), 2, "toy")
    >>> validate_arrays(torch.zeros(2, 3, 3), torch.tensor([0, 1]), 2, "toy")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: toy: images must be N×C×H×W, got shape (2, 3, 3)
    """
    require(isinstance(images, (torch.Tensor, np.ndarray)) and isinstance(labels, torch.Tensor),
            f"{name}: images and labels must be tensors")
    require(images.ndim == 4, f"{name}: images must be N×C×H×W, got shape {tuple(images.shape)}")
    require(labels.ndim == 1, f"{name}: labels must be one-dimensional, got shape {tuple(labels.shape)}")
    require(images.shape[0] > 0, f"{name}: the dataset is empty")
    require(images.shape[0] == labels.shape[0],
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
    dtype = str(images.dtype).replace("torch.", "")
    require(dtype in ("float32", "uint8"), f"{name}: images must be float32 (in [0, 1]) or uint8, got {dtype}")
    require(labels.dtype == torch.int64, f"{name}: labels must be integers, got {labels.dtype}")
    if dtype == "float32":
        _check_float_range(images, name)
    require(int(labels.min()) >= 0 and int(labels.max()) < num_classes,
            f"{name}: labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")


def _from_arrays(images: np.ndarray, labels: np.ndarray, name: str,
                 class_names: list[str] | None = None, layout: str | None = None) -> ImageDataset:
    """Normalise user arrays (any supported layout and dtype) into an :class:`ImageDataset`."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    require(images.shape[0] > 0 if images.ndim else False, f"{name}: the dataset is empty")
    require(labels.ndim == 1, f"{name}: labels must be one-dimensional, got shape {labels.shape}")
    require(images.shape[0] == labels.shape[0],
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
    labels_i = _integer_labels(labels, name, len(labels), class_names)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        channels_first = images.shape[1] in (1, 3)
        channels_last = images.shape[3] in (1, 3, 4)
        if layout == "nhwc" or (layout is None and channels_last and not channels_first):
            images = images[..., :3] if images.shape[3] == 4 else images
            images = np.moveaxis(images, 3, 1)
        elif layout == "nchw" or channels_first:
            pass
        else:
            raise BadInput(f"{name}: cannot tell the channel axis of images with shape {images.shape}; "
                           "expected N×H×W, N×H×W×C or N×C×H×W with C in 1 or 3")
    else:
        raise BadInput(f"{name}: images must have rank 3 (N×H×W) or 4 (N×H×W×C or N×C×H×W), "
                       f"got rank {images.ndim} with shape {images.shape}")
    require(min(images.shape[1:]) > 0, f"{name}: images have a zero-size dimension (shape {images.shape})")
    if images.dtype == np.uint8:
        arr = images  # kept as uint8: converted to float32 per batch (ImageDataset.pixels)
    elif np.issubdtype(images.dtype, np.floating):
        require(bool(np.all(np.isfinite(images))), f"{name}: images contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())  # checked before the cast (1e300 would overflow)
        require(lo >= 0.0 and hi <= 1.0,
                f"{name}: float images must lie in [0, 1], got values in [{lo:g}, {hi:g}] "
                + ("(they look normalised; give the normalisation's mean and std, as_dataset(..., mean=, std=), "
                   "to map them back to pixels, and the same to the model, as_model(model, mean=, std=))"
                   if lo < 0.0 else "(scale them, or save them as uint8 0-255)"))
        arr = images.astype(np.float32)
    elif np.issubdtype(images.dtype, np.integer):
        lo, hi = int(images.min()), int(images.max())
        require(lo >= 0 and hi <= 255,
                f"{name}: integer images must lie in 0..255, got values in [{lo}, {hi}]")
        arr = images.astype(np.uint8)
    else:
        raise BadInput(f"{name}: unsupported image dtype {images.dtype}")
    if class_names is None:
        num_classes = int(labels_i.max()) + 1
        class_names = [str(k) for k in range(num_classes)]
    require(len(class_names) >= 2, f"{name}: need at least two classes, got {len(class_names)}")
    present = np.unique(labels_i)
    require(len(present) >= 2, f"{name}: all labels are {present[0]}: need at least two classes")
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(labels_i),
                        list(class_names), name)


def _integer_labels(labels: np.ndarray, name: str, n: int, class_names: list[str] | None) -> np.ndarray:
    """Labels as int64, checked *before* anything is sized by them: integers (or integral floats),
    non-negative, below the number of class names when given, and otherwise below
    ``max(n, 1000)`` (the classes are then 0..max label, one name each) and the classes limit."""
    kind = labels.dtype.kind
    require(kind in "iuf", f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return labels.astype(np.int64)
    if kind == "f":
        require(bool(np.all(np.isfinite(labels))), f"{name}: labels contain NaN or infinite values")
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            raise BadInput(f"{name}: labels must be whole numbers, got {fractional[0]:g}")
    lo, hi = labels.min(), labels.max()
    require(lo >= 0, f"{name}: labels must be non-negative, got {lo:g}")
    if class_names is not None:
        limits.check("classes", len(class_names), f"{name}: the number of class names")
        require(hi < len(class_names), f"{name}: labels must lie in 0..{len(class_names) - 1} "
                f"({len(class_names)} class names), got {hi:g}")
    else:
        cap = max(n, 1000)
        require(hi < cap, f"{name}: the largest label is {hi:g} but there are only {n} samples; without "
                f"class names the classes are 0..largest label, so labels must be below {cap} (give "
                "class_names for more classes)")
        limits.check("classes", int(hi) + 1, f"{name}: the number of classes")
    return labels.astype(np.int64)


def open_image(source, name: str):
    """Open an image lazily (header only) with PIL, refusing it by its declared size first.

    No pixel is decoded before the check: one image over the ``image_pixels`` limit (a decompression
    bomb) is refused. The caller decodes it with ``im.load()`` inside a ``with``.

    Parameters
    ----------
    source : str, Path or file object
        What ``PIL.Image.open`` takes.
    name : str
        How the image is named in error messages (its path).

    Returns
    -------
    PIL.Image.Image
        The opened, not yet decoded image.

    Raises
    ------
    BadInput
        If PIL cannot identify the image, or its width × height exceeds the ``image_pixels`` limit
        (:mod:`workbench.limits`).

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.new("L", (3, 2)).save(buf, format="PNG")
    >>> with open_image(buf, "tiny.png") as im:
    ...     _ = im.load()
    ...     print(im.size, im.mode)
    (3, 2) L
    """
    from PIL import Image, UnidentifiedImageError

    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # PIL's own check, replaced by ours below (open reads the header only)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(f"unreadable image {name}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        w, h = im.size
        limits.check("image_pixels", w * h, f"{name} declares {w}×{h} pixels (a decompression bomb?), which")
    except BadInput:
        im.close()
        raise
    return im


def _require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise BadInput(f"{what} not found: {path}")
    if not path.is_file():
        raise BadInput(f"{what} is not a file: {path}")
    return path


def load_mnist10k() -> ImageDataset:
    """The first 10,000 MNIST training digits, shipped with the package (``workbench/assets/``).

    28×28 grey, uint8, classes ``"0"``..``"9"``; provenance and licence in ``assets/README.md``.

    Parameters: none

    Returns
    -------
    ImageDataset
        10,000 samples named ``mnist10k``, stored as uint8.

    Examples
    --------
    >>> ds = load_mnist10k()
    >>> len(ds), ds.input_shape, ds.storage, ds.class_counts()[:3]
    (10000, (1, 28, 28), 'uint8', [1001, 1127, 991])
    """
    with resources.files("workbench").joinpath("assets/mnist10k.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            return _from_arrays(z["images"], z["labels"], "mnist10k")


def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 8×8 digits (UCI optdigits), values 0-16 scaled to [0, 1].

    Parameters: none

    Returns
    -------
    ImageDataset
        1,797 samples named ``digits``, 1×8×8 float32, classes ``"0"``..``"9"``.

    Examples
    --------
    >>> ds = load_digits()
    >>> len(ds), ds.input_shape, ds.storage
    (1797, (1, 8, 8), 'float32')
    """
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = (d.images / 16.0).astype(np.float32)
    return _from_arrays(images, d.target, "digits")


def load_npz(path: str | Path, images_key: str | None = None, labels_key: str | None = None) -> ImageDataset:
    """A ``.npz`` holding an images array and a labels array (and optionally ``class_names``).

    Images are found under ``images``, ``x``, ``X`` or ``x_train``, labels under ``labels``, ``y``,
    ``Y`` or ``y_train`` unless the keys are given; ``class_names`` is an optional array of strings.
    The archive is checked by what it declares before NumPy reads any array (zip of ``.npy`` members,
    no Python objects, sizes as declared, the ``data_bytes`` limit); it never unpickles
    (``allow_pickle=False``). Images may be N×H×W, N×H×W×C or N×C×H×W, uint8 0-255, integers 0-255 or
    floats in [0, 1].

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.
    images_key, labels_key : str, optional
        Array names to use instead of the defaults above (default ``None``).

    Returns
    -------
    ImageDataset
        Named ``npz:FILENAME``.

    Raises
    ------
    BadInput
        If the file is missing, not an ``.npz`` (e.g. a single ``.npy``), corrupt, holds object arrays,
        declares more than it holds or more than the limits allow, lacks an images or labels array, or
        its arrays do not form a dataset (shape, range, fewer than two classes).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "toy.npz")
    >>> np.savez(path, images=np.zeros((4, 5, 5), np.uint8), labels=np.array([0, 1, 0, 1]))
    >>> ds = load_npz(path)
    >>> ds.name, ds.input_shape, ds.class_names
    ('npz:toy.npz', (1, 5, 5), ['0', '1'])
    >>> tmp.cleanup()
    """
    path = _require_file(Path(path), "npz file")
    _check_npz(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, SyntaxError, tokenize.TokenError) as exc:
        raise BadInput(f"cannot read npz file {path}: {exc}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise BadInput(f"{path} is a single .npy array, expected an .npz with images and labels")
    with z:
        keys = set(z.files)

        def pick(given, candidates, what):
            if given is not None:
                if given not in keys:
                    raise BadInput(f"{path}: no array named {given!r}; arrays present: {sorted(keys)}")
                return given
            for c in candidates:
                if c in keys:
                    return c
            raise BadInput(f"{path}: no {what} array (looked for {', '.join(candidates)}); "
                           f"arrays present: {sorted(keys)}")

        ik = pick(images_key, ("images", "x", "X", "x_train"), "images")
        lk = pick(labels_key, ("labels", "y", "Y", "y_train"), "labels")
        try:
            images, labels = z[ik], z[lk]
            names = [str(s) for s in z["class_names"].tolist()] if "class_names" in keys else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError, tokenize.TokenError) as exc:  # corrupt
            raise BadInput(f"cannot read npz file {path}: {exc}".splitlines()[0]) from None
    ds = _from_arrays(images, labels, f"npz:{path.name}", class_names=names)
    return ds


def _check_npz(path: Path) -> None:
    """Refuse an ``.npz`` by what it declares, before NumPy reads (and allocates) any array: it must
    be a zip of ``.npy`` members whose headers name no Python objects, whose data sizes match their
    headers, and whose decoded total is within the ``data_bytes`` limit."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise BadInput(f"{path} is a single .npy array, expected an .npz with images and labels")
    if not magic.startswith(b"PK"):
        raise BadInput(f"{path} is not an .npz file (an .npz is a zip archive; this file starts with "
                       f"bytes {magic[:4].hex()})")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            total = 0
            for info in members:
                total += info.file_size
                limits.check("data_bytes", total, f"{path}: the arrays decompress to a size that")
                require(not info.flag_bits & 0x1, f"{path}: member {info.filename!r} is encrypted; refused "
                        "(store the arrays unencrypted)")
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(fh)
                    header_end = fh.tell()
                key = info.filename.removesuffix(".npy")
                require(not dtype.hasobject, f"{path}: array {key!r} holds Python objects (dtype object), "
                        "which would need unpickling; refused (store numbers and strings only)")
                declared = math.prod(shape) * dtype.itemsize
                require(declared == info.file_size - header_end,
                        f"{path}: array {key!r} declares shape {tuple(shape)} of {dtype} ({declared:,} bytes) "
                        f"but holds {info.file_size - header_end:,} bytes")
    except BadInput:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error,
            NotImplementedError, SyntaxError, tokenize.TokenError) as exc:  # a header NumPy cannot parse
        raise BadInput(f"cannot read npz file {path}: {exc}".splitlines()[0]) from None


def load_folder(path: str | Path, size: int | tuple[int, int] | None = None) -> ImageDataset:
    """An image folder with one subfolder per class (sorted subfolder names = class order).

    Images (PNG, JPEG, BMP, GIF, TIFF, WebP) are read with Pillow, each refused by its declared size
    before decoding (:func:`open_image`); symbolic links may not lead out of the folder. Grayscale when
    every image is single-channel, RGB otherwise.

    Parameters
    ----------
    path : str or Path
        The dataset folder.
    size : int or tuple of int, optional
        Resize every image to ``(H, W)`` (an int: square). Default ``None``: all images must share one
        size.

    Returns
    -------
    ImageDataset
        uint8 images named ``folder:FOLDERNAME``, class names = the subfolder names.

    Raises
    ------
    BadInput
        If the folder is missing or holds no class subfolders or no images, an image is unreadable or
        a link leads outside, the images differ in size (without ``size``), or a limit is exceeded.

    Examples
    --------
    >>> import os, tempfile
    >>> from PIL import Image
    >>> tmp = tempfile.TemporaryDirectory()
    >>> for cls in ("cat", "dog"):
    ...     os.makedirs(os.path.join(tmp.name, cls))
    ...     for i in range(2):
    ...         Image.new("L", (6, 4)).save(os.path.join(tmp.name, cls, f"{i}.png"))
    >>> ds = load_folder(tmp.name)
    >>> ds.class_names, ds.input_shape, len(ds)
    (['cat', 'dog'], (1, 4, 6), 4)
    >>> load_folder(tmp.name, size=3).input_shape
    (1, 3, 3)
    >>> tmp.cleanup()
    """
    from PIL import Image

    root = Path(path)
    if not root.exists():
        raise BadInput(f"image folder not found: {root}")
    require(root.is_dir(), f"not a folder: {root}")
    real_root = root.resolve()

    def inside(p: Path) -> Path:  # a symbolic link may not lead out of the dataset folder
        target = p.resolve()
        require(target == real_root or real_root in target.parents,
                f"{p} is a symbolic link to {target}, outside the dataset folder {root}; copy the file in")
        return p

    classes = sorted(inside(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    require(len(classes) > 0, f"{root}: no class subfolders (expected one subfolder per class)")
    limits.check("classes", len(classes), f"{root}: the number of class subfolders")
    files: list[tuple[Path, int]] = []
    for k, cdir in enumerate(classes):
        for f in sorted(cdir.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and (f.is_symlink() or f.is_file()):
                require(inside(f).is_file(), f"{f} is not a regular file")
                files.append((f, k))
    require(len(files) > 0, f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    pil = []
    total = 0
    for f, _ in files:
        with open_image(f, str(f)) as im:
            total += im.size[0] * im.size[1] * min(3, len(im.getbands()))  # checked before decoding
            limits.check("data_bytes", total, f"{root}: the decoded images up to {f.name} take a size that")
            try:
                im.load()
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise BadInput(f"unreadable image {f}: {exc}") from None
            pil.append(im.copy())
    gray = all(im.mode in ("L", "1", "I", "I;16", "F") for im in pil)
    mode = "L" if gray else "RGB"
    target = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    arrays = []
    first_size = pil[0].size
    for (f, _), im in zip(files, pil):
        im = im.convert(mode)
        if target is not None:
            im = im.resize((target[1], target[0]), Image.BILINEAR)
        elif im.size != first_size:
            raise BadInput(f"{f} is {im.size[0]}×{im.size[1]} but {files[0][0]} is "
                           f"{first_size[0]}×{first_size[1]}; resize the images to one size (or load them with "
                           "workbench.data.load_folder(path, size=(H, W)))")
        arrays.append(np.asarray(im, dtype=np.uint8))
    images = np.stack(arrays)
    labels = np.array([k for _, k in files], dtype=np.int64)
    return _from_arrays(images, labels, f"folder:{root.name}", class_names=[c.name for c in classes],
                        layout="nhwc" if not gray else None)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an MNIST-style IDX file, raw or gzip-compressed.

    The header's declared size is checked against the file (and the ``data_bytes`` limit) before the
    data is read; gzip data is decompressed in a stream that stops at the declared size.

    Parameters
    ----------
    path : str or Path
        The IDX file (``.gz`` or raw; detected by its first bytes).

    Returns
    -------
    numpy.ndarray
        The array, of the shape and dtype the header declares, in native byte order.

    Raises
    ------
    BadInput
        If the file is missing, the magic number is wrong, the header is truncated, the data is
        shorter or longer than declared, the declared size exceeds the limit, or gzip data is corrupt.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "labels.idx")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 1, 2]))
    >>> read_idx(path).tolist()
    [7, 1, 2]
    >>> tmp.cleanup()
    """
    path = _require_file(Path(path), "IDX file")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if not gzipped:
        limits.check("data_bytes", path.stat().st_size, f"{path}: the file size")
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise BadInput(f"{path}: not an IDX file (bad magic number {magic.hex()})")
            ndim = magic[3]
            require(ndim >= 1, f"{path}: IDX file declares zero dimensions")
            head = fh.read(4 * ndim)
            require(len(head) == 4 * ndim, f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", head)
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            expected = math.prod(dims) * dtype.itemsize  # Python integers: no overflow
            limits.check("data_bytes", expected, f"{path}: the IDX header announces shape {dims}, a size that")
            data = fh.read(expected + 1)  # one byte more than announced reveals trailing data
    except BadInput:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise BadInput(f"{path}: corrupt {'gzip' if gzipped else 'IDX'} data ({exc})") from None
    require(len(data) == expected,
            f"{path}: IDX header announces shape {dims} ({expected} bytes) but the file holds "
            f"{'more than that' if len(data) > expected else f'{len(data)} bytes'} of data")
    try:
        return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    except ValueError as exc:  # e.g. a zero dimension beside dimensions whose product NumPy cannot index
        raise BadInput(f"{path}: IDX header announces an unusable shape {dims} ({exc})") from None


def load_idx(images_path: str | Path, labels_path: str | Path) -> ImageDataset:
    """A dataset from MNIST-style IDX files: N×H×W (or N×H×W×C) images and N labels.

    Parameters
    ----------
    images_path : str or Path
        The images file (raw or ``.gz``).
    labels_path : str or Path
        The labels file (raw or ``.gz``).

    Returns
    -------
    ImageDataset
        Named ``idx:IMAGESFILENAME``; classes ``"0"``..max label.

    Raises
    ------
    BadInput
        As :func:`read_idx` for either file, or if the arrays do not form a dataset.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> def write(name, dims, data):
    ...     with open(os.path.join(tmp.name, name), "wb") as f:
    ...         _ = f.write(bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + bytes(data))
    >>> write("images.idx", (2, 2, 2), range(8))
    >>> write("labels.idx", (2,), [1, 0])
    >>> ds = load_idx(os.path.join(tmp.name, "images.idx"), os.path.join(tmp.name, "labels.idx"))
    >>> ds.name, ds.input_shape, ds.labels.tolist()
    ('idx:images.idx', (1, 2, 2), [1, 0])
    >>> tmp.cleanup()
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    return _from_arrays(images, labels, f"idx:{Path(images_path).name}")


NPY_IMAGES, NPY_LABELS, NPY_CLASSES = "images.npy", "labels.npy", "class_names.json"


def load_npy_dir(path: str | Path) -> ImageDataset:
    """A memory-mapped dataset folder, read page by page as batches need it.

    The folder holds ``images.npy`` (N×C×H×W or N×H×W, uint8 or float32 in [0, 1], opened with
    ``mmap_mode="r"``), ``labels.npy`` (N integers) and optionally ``class_names.json`` (a list of
    strings). Write one with :func:`convert_dataset` (``workbench data convert``). Never unpickles.

    Parameters
    ----------
    path : str or Path
        The folder.

    Returns
    -------
    ImageDataset
        Named ``npy:FOLDERNAME``, storage ``memmap-uint8`` or ``memmap-float32``.

    Raises
    ------
    BadInput
        If the folder or a file is missing or unreadable, the images are not uint8/float32 or not
        N×C×H×W with C in 1 or 3, the lengths differ, the class names are not a list of strings, or
        the labels are invalid.

    Examples
    --------
    See :func:`convert_dataset`.
    """
    root = Path(path)
    if not root.exists():
        raise BadInput(f"dataset folder not found: {root}")
    require(root.is_dir(), f"npy: {root} is not a folder (expected {NPY_IMAGES}, {NPY_LABELS})")
    name = f"npy:{root.name}"
    try:
        images = np.load(_require_file(root / NPY_IMAGES, "images file"), mmap_mode="r", allow_pickle=False)
        labels = np.load(_require_file(root / NPY_LABELS, "labels file"), mmap_mode="r", allow_pickle=False)
    except BadInput:
        raise
    except (OSError, ValueError, EOFError, SyntaxError) as exc:  # truncated data, object arrays, not an .npy
        raise BadInput(f"{name}: cannot read {root}: {exc}".splitlines()[0]) from None
    require(isinstance(images, np.ndarray) and isinstance(labels, np.ndarray),
            f"{name}: {NPY_IMAGES} and {NPY_LABELS} must each hold one array")
    require(images.dtype in (np.uint8, np.float32),
            f"{name}: {NPY_IMAGES} must be uint8 (0-255) or float32 (0-1), got {images.dtype}")
    if images.ndim == 3:
        images = images.reshape(images.shape[0], 1, *images.shape[1:])  # still a memory map
    require(images.ndim == 4 and images.shape[1] in (1, 3),
            f"{name}: {NPY_IMAGES} must be N×C×H×W with C in 1 or 3 (or N×H×W), got shape {images.shape}; "
            "convert channels-last data with 'workbench data convert'")
    require(min(images.shape) > 0, f"{name}: {NPY_IMAGES} has a zero-size dimension (shape {images.shape})")
    require(labels.ndim == 1, f"{name}: {NPY_LABELS} must be one-dimensional, got shape {labels.shape}")
    require(labels.shape[0] == images.shape[0],
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
    class_names = None
    if (root / NPY_CLASSES).exists():
        import json

        try:
            class_names = json.loads(_require_file(root / NPY_CLASSES, "class names file").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(f"{name}: cannot read {NPY_CLASSES}: {exc}") from None
        require(isinstance(class_names, list) and all(isinstance(c, str) for c in class_names),
                f"{name}: {NPY_CLASSES} must be a JSON list of strings")
    labels_i = _integer_labels(np.asarray(labels), name, len(labels), class_names)
    if class_names is None:
        class_names = [str(k) for k in range(int(labels_i.max()) + 1)]
    require(len(class_names) >= 2, f"{name}: need at least two classes, got {len(class_names)}")
    return ImageDataset(images, torch.from_numpy(labels_i), class_names, name)


def convert_dataset(spec: str | ImageDataset, out: str | Path, *, overwrite: bool = False,
                    batch_size: int = 8192) -> Path:
    """Write a dataset as a memory-mapped folder that ``npy:OUT`` / :func:`load_npy_dir` reads back.

    ``images.npy`` is uint8 when the source is uint8, float32 otherwise; ``labels.npy`` int64;
    ``class_names.json``. The images are written ``batch_size`` rows at a time into a memory-mapped
    file in a staging folder beside ``out``, which replaces ``out`` in one step when complete: an
    interrupted run leaves nothing.

    Parameters
    ----------
    spec : str or ImageDataset
        Any spec :func:`load_dataset` reads, or a dataset.
    out : str or Path
        The folder to write.
    overwrite : bool, default False
        Replace an existing ``out`` (only a folder that is empty or holds a converted dataset).
    batch_size : int, default 8192
        Rows copied at a time.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    BadInput
        If ``out`` is a file, exists and is not empty without ``overwrite``, holds other things than a
        converted dataset, or cannot be written; or if ``spec`` cannot be loaded.

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> tmp = tempfile.TemporaryDirectory()
    >>> ds = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"], "toy")
    >>> out = convert_dataset(ds, os.path.join(tmp.name, "toy"))
    >>> sorted(p.name for p in out.iterdir())
    ['class_names.json', 'images.npy', 'labels.npy']
    >>> back = load_npy_dir(out)
    >>> back.name, back.storage, back.class_names
    ('npy:toy', 'memmap-uint8', ['a', 'b'])
    >>> del back
    >>> tmp.cleanup()
    """
    import json
    import tempfile

    from .atomic import swap_in

    out = Path(out)
    if out.exists():
        require(out.is_dir(), f"{out} is an existing file; give a folder to convert into")
        entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        require(overwrite or not entries, f"{out} exists; refusing to replace it (use --overwrite)")
        require(not entries or (out / NPY_IMAGES).is_file(),
                f"{out} holds other things than a converted dataset ({', '.join(sorted(entries)[:4])}); "
                "choose a new or empty folder")
    ds = spec if isinstance(spec, ImageDataset) else load_dataset(spec)
    raw = ds._raw
    dtype = np.uint8 if str(raw.dtype).endswith("uint8") else np.float32
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        mm = np.lib.format.open_memmap(stage / NPY_IMAGES, mode="w+", dtype=dtype, shape=tuple(raw.shape))
        for i in range(0, len(ds), batch_size):
            part = raw[i:i + batch_size]
            mm[i:i + len(part)] = part.numpy() if isinstance(part, torch.Tensor) else part
        mm.flush()
        del mm
        np.save(stage / NPY_LABELS, ds.labels.numpy().astype(np.int64), allow_pickle=False)
        (stage / NPY_CLASSES).write_text(json.dumps(list(ds.class_names)))
        swap_in(stage, out)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def load_dataset(spec: str) -> ImageDataset:
    """Load a dataset from a spec string (the same strings in the CLI and the app).

    Specs: ``mnist10k``, ``digits``, ``shapes[:ARGS]`` (:mod:`workbench.synthetic`), ``npz:PATH`` (or a
    bare path ending in ``.npz``),
    ``folder:PATH``, ``idx:IMAGES,LABELS``, ``npy:DIR`` (memory-mapped). The kind is case-insensitive.

    Parameters
    ----------
    spec : str
        The spec.

    Returns
    -------
    ImageDataset
        What the matching loader returns.

    Raises
    ------
    BadInput
        If the spec is empty or unknown, or the loader refuses the data.

    Examples
    --------
    >>> load_dataset("mnist10k").name
    'mnist10k'
    >>> load_dataset("cifar10")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: unknown dataset spec 'cifar10'; use one of: mnist10k, digits, shapes, npz:PATH, folder:PATH, idx:IMAGES,LABELS, npy:DIR
    """
    require(isinstance(spec, str) and spec.strip() != "", "empty dataset spec")
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "mnist10k" and not arg:
        return load_mnist10k()
    if kind == "digits" and not arg:
        return load_digits()
    if kind == "shapes":
        from .synthetic import load_shapes

        return load_shapes(arg)
    if kind == "npz" and arg:
        return load_npz(arg)
    if kind == "folder" and arg:
        return load_folder(arg)
    if kind == "npy" and arg:
        return load_npy_dir(arg)
    if kind == "idx" and arg:
        parts = arg.split(",")
        require(len(parts) == 2, f"idx spec needs two paths, 'idx:IMAGES,LABELS', got {spec!r}")
        return load_idx(parts[0], parts[1])
    if arg == "" and spec.endswith(".npz"):
        return load_npz(spec)
    raise BadInput(f"unknown dataset spec {spec!r}; use one of: mnist10k, digits, shapes, npz:PATH, "
                   "folder:PATH, idx:IMAGES,LABELS, npy:DIR")


DATASET_SPECS = ("mnist10k", "digits", "shapes", "npz:PATH", "folder:PATH", "idx:IMAGES,LABELS", "npy:DIR")


def train_test_split(ds: ImageDataset, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[ImageDataset, ImageDataset]:
    """A seeded, stratified split; each part's ``indices`` point into ``ds``.

    Parameters
    ----------
    ds : ImageDataset
        The data; every class present needs at least two samples.
    test_fraction : float, default 0.2
        Share of samples in the test part, in (0, 1); the test part has ``round(test_fraction · N)``.
    seed : int, default 0
        Seed of the split (scikit-learn's ``train_test_split``).

    Returns
    -------
    tuple of ImageDataset
        ``(train, test)``, named ``NAME/train`` and ``NAME/test``, each in the original order.

    Raises
    ------
    BadInput
        If ``test_fraction`` is outside (0, 1), a class has a single sample, or either part would be
        smaller than the number of classes.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.zeros(10, 1, 2, 2), torch.tensor([0, 1] * 5), ["a", "b"], "toy")
    >>> train, test = train_test_split(ds, 0.2, seed=0)
    >>> len(train), len(test), test.class_counts(), test.name
    (8, 2, [1, 1], 'toy/test')
    """
    from sklearn.model_selection import train_test_split as sk_split

    require(0.0 < test_fraction < 1.0, f"test_fraction must be in (0, 1), got {test_fraction}")
    counts = np.bincount(ds.labels.numpy(), minlength=ds.num_classes)
    present = counts[counts > 0]
    n_test = int(round(test_fraction * len(ds)))
    require(present.min() >= 2,
            f"{ds.name}: class {int(np.argmin(np.where(counts > 0, counts, 10**9)))} has a single sample; "
            "a stratified split needs at least two per class")
    require(n_test >= len(present) and len(ds) - n_test >= len(present),
            f"{ds.name}: {len(ds)} samples are too few for a stratified {test_fraction:.0%} split over "
            f"{len(present)} classes")
    idx = np.arange(len(ds))
    tr, te = sk_split(idx, test_size=n_test, random_state=seed, stratify=ds.labels.numpy())
    return ds.subset(np.sort(tr), f"{ds.name}/train"), ds.subset(np.sort(te), f"{ds.name}/test")


def stratified_subset(ds: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """A seeded stratified sample of ``n`` examples (for quick runs and tests).

    Parameters
    ----------
    ds : ImageDataset
        The data.
    n : int
        How many samples, in ``1..len(ds)``.
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    ImageDataset
        ``n`` samples with the class proportions of ``ds``, named ``NAME[n]``; ``ds`` itself when
        ``n == len(ds)``.

    Raises
    ------
    BadInput
        If ``n`` is out of range, or too small to hold every class (see :func:`train_test_split`).

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.zeros(10, 1, 2, 2), torch.tensor([0, 1] * 5), ["a", "b"], "toy")
    >>> part = stratified_subset(ds, 4)
    >>> part.name, part.class_counts()
    ('toy[4]', [2, 2])
    """
    require(1 <= n <= len(ds), f"n must be in 1..{len(ds)}, got {n}")
    if n == len(ds):
        return ds
    _, part = train_test_split(ds, test_fraction=n / len(ds), seed=seed)
    return part._replace(name=f"{ds.name}[{n}]")


# ---------------------------------------------------------------- data in the forms users have
def _batch_arrays(batch, where: str) -> tuple:
    """``(images, labels)`` of one item or batch: a pair, or a dict with image and label keys."""
    if isinstance(batch, dict):
        ik = next((k for k in ("pixel_values", "images", "image", "x") if k in batch), None)
        lk = next((k for k in ("labels", "label", "y") if k in batch), None)
        require(ik is not None and lk is not None,
                f"{where} yields dicts with keys {sorted(batch)}; expected an image key (pixel_values, images, "
                "image or x) and a label key (labels, label or y)")
        return batch[ik], batch[lk]
    require(isinstance(batch, (tuple, list)) and len(batch) >= 2,
            f"{where} must yield (image, label) pairs, got {type(batch).__name__}")
    return batch[0], batch[1]


def _to_numpy(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, (int, float, np.integer, np.floating)):
        return np.asarray(a)
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"cannot read {what} as an array ({exc})") from None
    require(arr.dtype != object, f"{what} must be numeric arrays or tensors, got objects")
    return arr


def _gather_torch_data(data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        require(len(data) > 0, "the dataset is empty")
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    else:
        loader = data
    xs, ys = [], []
    for batch in loader:
        x, y = _batch_arrays(batch, type(data).__name__)
        xs.append(_to_numpy(x, "images"))
        ys.append(_to_numpy(y, "labels").reshape(-1))
    require(len(xs) > 0, f"{type(data).__name__} yielded no batches")
    return np.concatenate(xs), np.concatenate(ys)


def as_dataset(data, labels=None, *, class_names: list[str] | None = None, num_classes: int | None = None,
               name: str | None = None, mean=None, std=None, layout: str | None = None,
               batch_size: int = 256) -> ImageDataset:
    """Any image data as an :class:`ImageDataset`: what every library entry point calls on its data.

    ``data`` may be an :class:`ImageDataset` (returned as is), a spec string (:func:`load_dataset`),
    images with ``labels`` given separately, an ``(images, labels)`` pair of tensors or arrays, or a
    ``torch.utils.data.Dataset`` / ``DataLoader`` yielding ``(x, y)`` (or dicts with ``pixel_values``
    / ``images`` / ``image`` / ``x`` and ``labels`` / ``label`` / ``y``).

    Parameters
    ----------
    data : ImageDataset, str, tensor, array, tuple, Dataset or DataLoader
        The data (see above). Images N×H×W, N×C×H×W or channels-last N×H×W×C (C in 1 or 3; a 4th
        alpha channel is dropped); uint8 or integers 0-255, or floats in [0, 1].
    labels : tensor or array, optional
        N labels of any integer dtype (or integral floats) when ``data`` is images only.
    class_names : list of str, optional
        One name per class (default: ``"0"``..max label).
    num_classes : int, optional
        The class count (≥ 2) when the labels do not show every class (e.g. the model's).
    name : str, optional
        The dataset's name (default ``"arrays"`` or the Dataset's class name).
    mean, std : sequence of float, optional
        A per-channel normalisation to undo (``x · std + mean``) for normalised float images; give
        both or neither.
    layout : {"nhwc", "nchw"}, optional
        Force the channel axis of 4-d images (default: inferred).
    batch_size : int, default 256
        Batch size for reading a ``Dataset``.

    Returns
    -------
    ImageDataset
        uint8 storage for integer images, float32 for float images.

    Raises
    ------
    BadInput
        If ``data`` is of an unsupported kind, labels are given twice, only one of ``mean``/``std`` is
        given (or they are given for integer images), or the arrays do not form a dataset (rank, channel
        axis, value range, NaN, length mismatch, fewer than two classes, non-integer labels).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> ds = as_dataset(np.zeros((4, 5, 5, 3), np.uint8), np.array([0, 1, 2, 1]))
    >>> ds.input_shape, ds.class_names, ds.name, ds.storage
    ((3, 5, 5), ['0', '1', '2'], 'arrays', 'uint8')
    >>> as_dataset((torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])), num_classes=4).class_names
    ['0', '1', '2', '3']
    >>> as_dataset((torch.full((2, 1, 2, 2), -1.0), torch.tensor([0, 1])), mean=[0.5], std=[0.5]).images.max().item()
    0.0
    """
    if isinstance(data, ImageDataset):
        require(labels is None, "labels are given twice: the dataset already has labels")
        return data
    if isinstance(data, str):
        require(labels is None, "labels cannot be given with a dataset spec")
        return load_dataset(data)
    from torch.utils.data import DataLoader, Dataset

    if labels is not None:
        images, labs = _to_numpy(data, "images"), _to_numpy(labels, "labels")
        default_name = "arrays"
    elif isinstance(data, (DataLoader, Dataset)):
        images, labs = _gather_torch_data(data, batch_size)
        default_name = type(data).__name__
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labs = _to_numpy(data[0], "images"), _to_numpy(data[1], "labels")
        default_name = "arrays"
    else:
        raise BadInput(f"cannot use {type(data).__name__} as image data: give an ImageDataset, a spec string, "
                       "(images, labels) tensors or arrays, or a torch Dataset/DataLoader yielding (x, y)")
    if mean is not None or std is not None:
        require(mean is not None and std is not None, "give both mean and std to undo a normalisation")
        require(np.issubdtype(images.dtype, np.floating), "mean/std undo a normalisation of float images; these "
                                                          f"images are {images.dtype}")
        m = np.asarray(mean, dtype=np.float32).reshape(-1)
        sd = np.asarray(std, dtype=np.float32).reshape(-1)
        axis = 3 if (layout == "nhwc" or (images.ndim == 4 and images.shape[-1] == len(m)
                                          and images.shape[1] != len(m))) else 1
        shape = [1] * images.ndim
        if images.ndim == 4:
            shape[axis] = -1
        images = images.astype(np.float32) * sd.reshape(shape) + m.reshape(shape)
        if float(images.min()) >= -1e-4 and float(images.max()) <= 1 + 1e-4:  # float rounding of the round trip
            images = np.clip(images, 0.0, 1.0)
    if class_names is None and num_classes is not None:
        require(num_classes >= 2, f"num_classes must be >= 2, got {num_classes}")
        class_names = [str(k) for k in range(num_classes)]
    return _from_arrays(images, labs, name or default_name, class_names=class_names, layout=layout)


def fingerprint(ds: ImageDataset) -> str:
    """A short hash of a dataset: enough to tell the dataset a model was trained on from another one.

    It covers the shape, every label and up to 256 evenly spaced images (as 0-255 grey levels); not
    the name.

    Parameters
    ----------
    ds : ImageDataset
        The data.

    Returns
    -------
    str
        16 hexadecimal characters.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), ["a", "b"], "toy")
    >>> len(fingerprint(ds)), fingerprint(ds) == fingerprint(ds.with_labels([1, 0, 0, 1]))
    (16, False)
    """
    import hashlib

    h = hashlib.sha256()
    h.update(str(tuple(ds.pixels.shape)).encode())
    h.update(ds.labels.numpy().astype(np.int64).tobytes())
    pick = torch.linspace(0, len(ds) - 1, min(256, len(ds))).long()
    h.update((ds.pixels[pick] * 255).round().to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class HeldOut:
    """The evaluation data of a trained model on a dataset, and how it was chosen.

    Parameters
    ----------
    data : ImageDataset
        The samples to evaluate on.
    reproduced : bool
        True: the model's own held-out split was rebuilt; False: every sample is used.
    note : str
        One sentence for reports saying which data this is.

    Returns
    -------
    A HeldOut (dataclass)
    """

    data: ImageDataset
    reproduced: bool  # True: the model's own held-out split; False: every sample
    note: str


def held_out(ds: ImageDataset, provenance: dict | None) -> HeldOut:
    """The test split a model was *not* trained on, from its card's provenance.

    When ``ds`` is the training run's dataset (same fingerprint, or, without one, the same size), the
    same seeded stratified split is rebuilt and its test part returned; otherwise (a dataset the model
    never saw, or a model trained elsewhere) every sample is, with a note saying why.

    Parameters
    ----------
    ds : ImageDataset
        The data to evaluate on.
    provenance : dict or None
        A :class:`~workbench.models.ModelCard`'s provenance: ``seed``, ``test_fraction`` and
        ``data_fingerprint`` (or ``n_train`` / ``n_test``) as :func:`workbench.training.train_classifier`
        records them.

    Returns
    -------
    HeldOut
        The data, whether the split was reproduced, and a note.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.rand(10, 1, 2, 2), torch.tensor([0, 1] * 5), ["a", "b"], "toy")
    >>> h = held_out(ds, {"seed": 0, "test_fraction": 0.2, "data_fingerprint": fingerprint(ds)})
    >>> h.reproduced, len(h.data)
    (True, 2)
    >>> held_out(ds, None).reproduced
    False
    """
    prov = provenance or {}
    seed, frac, fp = prov.get("seed"), prov.get("test_fraction"), prov.get("data_fingerprint")
    if seed is None or frac is None:
        return HeldOut(ds, False, "the model's card records no training split, so every sample is evaluated")
    if fp is not None and fp != fingerprint(ds):
        return HeldOut(ds, False, f"{ds.name} is not the dataset the model was trained on ({prov.get('data')}; "
                                  "fingerprints differ), so every sample is evaluated")
    if fp is None and prov.get("n_train") is not None and \
            int(prov.get("n_train", 0)) + int(prov.get("n_test", 0)) != len(ds):
        return HeldOut(ds, False, f"{ds.name} has {len(ds)} samples but the model was trained on a split of "
                                  f"{int(prov['n_train']) + int(prov.get('n_test', 0))}, so every sample is evaluated")
    _, test = train_test_split(ds, float(frac), int(seed))
    return HeldOut(test, True, f"the held-out {float(frac):.0%} of the model's training run (split seed {seed})")
