"""Models from where users keep them: one spec string, safe loading, cards, fresh architectures.

A **model spec** (the CLI's ``--model``, the app's upload, :func:`load_model`) is one of:

- a **workbench folder**: ``model.safetensors`` + ``model.json`` (a :class:`ModelCard`), as
  :func:`save_model` and ``workbench train`` write it;
- a **transformers folder**: ``config.json`` + weights, as ``save_pretrained`` writes it (image
  classification heads; loaded locally, never from the network, never with remote code);
  ``preprocessor_config.json``'s mean, std and size become the adapter's normalisation and resize;
- a **factory**: ``path/to/file.py:factory`` or ``package.module:factory`` with ``weights=`` (a
  ``.safetensors`` file or a state dict read with ``torch.load(..., weights_only=True)``): the user's
  own architecture, as ``torch.hub`` entry points and timm's ``create_model`` work. Importing the
  factory **runs the user's code** — by design, since it is theirs; a card that names a factory is
  only followed with ``trust_code=True``;
- a **weights file** (``.safetensors``, ``.pt``, ``.pth``, ``.bin`` state dict) with a ``model.json``
  beside it, or an architecture given here;
- a **zip** of either folder (one file to upload or pass around), extracted safely into a private
  temporary folder (:func:`workbench.archive.safe_extract`);
- a **TorchScript archive**: TorchScript is code, not weights (loading it runs the archive's code),
  so it is refused unless ``trust_code=True``, and then serves only what needs no layer hooks
  (randomized smoothing, accuracy).

Loading never unpickles arbitrary objects. Every loaded model comes wrapped in a
:class:`~workbench.adapter.ModelAdapter` (pixel-space inputs, logits out, the user's layer names).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import sys
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter import ModelAdapter, as_model, model_device, num_classes_of, unwrap
from .atomic import atomic_write, atomic_write_text
from .errors import BadInput, require
from .layers import LayerInfo, describe_layers, get_layer, layer_name_of, layer_names
from .zoo import MAX_SIZE, MIN_SIZE, ZOO, BasicBlock, SmallCNN, SmallResNet, build_model, check_arch_kwargs

__all__ = ["BasicBlock", "LayerInfo", "LoadedModel", "MAX_SIZE", "MIN_SIZE", "ModelAdapter", "ModelCard",
           "SmallCNN", "SmallResNet", "ZOO", "architecture", "as_model", "build_model", "check_arch_kwargs", "describe_layers",
           "get_layer", "is_factory_spec", "layer_name_of", "layer_names", "load_model", "model_device",
           "save_model"]

TRANSFORMERS = "transformers"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
TRUST_HINT = "pass --trust-code (library: trust_code=True) only if you trust its author"


@dataclass
class ModelCard:
    """What a saved model is: architecture, inputs, classes, preprocessing and how it was trained.

    ``arch`` is a zoo name (``cnn``, ``resnet``), ``transformers`` (a ``config.json`` lies beside the
    weights) or a factory spec (``path/to/file.py:factory``, ``package.module:factory``);
    ``arch_kwargs`` are passed to the zoo constructor or the factory. ``input_shape`` is (C, H, W) of
    the images the model takes (``None`` when not known). ``preprocess`` holds the adapter's ``mean``,
    ``std`` and ``size``.

    Parameters
    ----------
    arch : str
        A zoo name, ``"transformers"`` or a factory spec.
    input_shape : tuple of int or None
        ``(C, H, W)`` the model takes, each ≥ 1; ``None`` when the model takes any size.
    class_names : list of str
        One name per class (at least two); their number is the model's number of logits.
    arch_kwargs : dict, default {}
        Keyword arguments of the zoo constructor or factory.
    provenance : dict, default {}
        How the model was made (training run, weights file, transformers config folder).
    preprocess : dict, default {}
        ``mean``, ``std`` (per channel) and ``size`` (``[H, W]``) for the adapter.

    Returns
    -------
    A ModelCard (dataclass)
        ``to_json`` / ``from_json`` write and read it as ``model.json``.

    Examples
    --------
    >>> card = ModelCard("cnn", (1, 8, 8), ["0", "1"], preprocess={"mean": [0.5], "std": [0.25]})
    >>> card.num_classes, card.adapter_kwargs()
    (2, {'mean': [0.5], 'std': [0.25]})
    >>> ModelCard.from_json(card.to_json()) == card
    True
    """

    arch: str
    input_shape: tuple[int, int, int] | None
    class_names: list[str]
    arch_kwargs: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """The number of classes.

        Returns
        -------
        int
            ``len(class_names)``.
        """
        return len(self.class_names)

    def to_json(self) -> str:
        """The card as ``model.json`` text (``format: workbench-model/1``, sorted keys).

        Returns
        -------
        str
            Indented JSON.
        """
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        d["format"] = "workbench-model/1"
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        """Parse and check a card (see :func:`check_card_fields`).

        Parameters
        ----------
        text : str
            The JSON text.
        source : str, default "model card"
            Where it comes from (a path), for the messages.

        Returns
        -------
        ModelCard
            The card.

        Raises
        ------
        BadInput
            If the text is not JSON or not a valid card.
        """
        try:
            d = json.loads(text)
            check_card_fields(d, source)
            shape = d.get("input_shape")
            card = cls(arch=str(d["arch"]), input_shape=None if shape is None else tuple(int(s) for s in shape),
                       class_names=[str(c) for c in d["class_names"]],
                       arch_kwargs=dict(d.get("arch_kwargs") or {}), provenance=dict(d.get("provenance") or {}),
                       preprocess=dict(d.get("preprocess") or {}))
        except BadInput:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
            raise BadInput(f"{source}: not a valid model card ({exc})") from None
        require(card.input_shape is None or (len(card.input_shape) == 3 and min(card.input_shape) >= 1),
                f"{source}: input_shape must be [C, H, W] with positive sizes, got {card.input_shape}")
        return card

    def adapter_kwargs(self) -> dict:
        """``mean``/``std``/``size`` for :class:`~workbench.adapter.ModelAdapter` from ``preprocess``.

        Returns
        -------
        dict
            Keyword arguments for :func:`workbench.adapter.as_model` (empty without preprocessing).
        """
        p = self.preprocess or {}
        out: dict[str, Any] = {}
        if p.get("mean") is not None:
            out["mean"], out["std"] = list(p["mean"]), list(p["std"])
        if p.get("size") is not None:
            out["size"] = tuple(int(s) for s in p["size"])
        return out


def check_card_fields(d, source: str = "model card") -> None:
    """Check the fields of a parsed card before anything is built from them.

    The card must be an object with ``arch`` (text), ``input_shape`` (three integers >= 1 within the
    image-size limit), ``class_names`` (a list of 2 or more names within the classes limit), and
    ``arch_kwargs`` / ``provenance`` objects when present.

    Parameters
    ----------
    d : Any
        The parsed JSON of a ``model.json``.
    source : str, default "model card"
        What the card is (a path), for the messages.

    Returns
    -------
    None

    Raises
    ------
    BadInput
        If a field is missing, of the wrong type, or over a limit (:mod:`workbench.limits`).

    Examples
    --------
    >>> check_card_fields({"arch": "cnn", "input_shape": [1, 8, 8], "class_names": ["a", "b"]})
    >>> check_card_fields({"arch": "cnn", "class_names": ["a"]})
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: model card: not a valid model card (need at least two class names, got 1)
    """
    from . import limits

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise BadInput(f"{source}: not a valid model card ({why})")

    need(isinstance(d, dict), f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in ("arch", "class_names") if k not in d]
    need(not missing, f"missing {', '.join(missing)}")
    need(isinstance(d["arch"], str), "arch must be a name")
    shape = d.get("input_shape")  # null: the model takes any size (a transformers model, a factory)
    if shape is not None:
        need(isinstance(shape, list) and len(shape) == 3
             and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape),
             f"input_shape must be three integers >= 1 (channels, height, width), got {shape!r}"[:200])
        limits.check("image_pixels", shape[0] * shape[1] * shape[2], f"{source}: input_shape {shape}")
    names = d["class_names"]
    need(isinstance(names, list) and all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in names),
         "class_names must be a list of names")
    limits.check("classes", len(names), f"{source}: the number of class names")
    need(len(names) >= 2, f"need at least two class names, got {len(names)}")
    for key in ("arch_kwargs", "provenance", "preprocess"):
        need(isinstance(d.get(key) or {}, dict), f"{key} must be an object")


def read_card(path: Path) -> ModelCard:
    """Read a model card file (small JSON: refused over 16 MiB before it is read).

    Parameters
    ----------
    path : Path
        The ``model.json`` file.

    Returns
    -------
    ModelCard
        The checked card (see :func:`check_card_fields`).

    Raises
    ------
    BadInput
        If the file is over 16 MiB, not UTF-8, not JSON, or not a valid card.
    """
    size = path.stat().st_size
    require(size <= 16 << 20, f"{path}: {size:,} bytes is too large for a model card (a JSON file of a few KB)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not a valid model card (not UTF-8 text: {exc})") from None
    return ModelCard.from_json(text, str(path))


@dataclass
class LoadedModel:
    """A model ready for evaluation (``eval()`` mode), wrapped in a :class:`ModelAdapter`, and what is
    known about it: its card, where it came from, and how to build an untrained copy (``spec``).

    Parameters
    ----------
    model : ModelAdapter
        The model (a plain module or callable is adapted with the card's preprocessing).
    card : ModelCard
        What the model is.
    source : str
        Where it was loaded from (a path or spec), for messages and reports.
    spec : str, optional
        Architecture spec for :func:`architecture` (``None`` for TorchScript and callables; a zoo
        card's ``arch`` by default).

    Returns
    -------
    A LoadedModel (dataclass)
        :meth:`fresh` builds an untrained copy, :meth:`bind` checks it against a data set.
    """

    model: ModelAdapter
    card: ModelCard
    source: str
    #: Architecture spec for :func:`architecture` (None for TorchScript and callables).
    spec: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelAdapter):
            self.model = as_model(self.model, **self.card.adapter_kwargs())
        if self.spec is None and self.card.arch in ZOO:
            self.spec = self.card.arch

    @property
    def module(self) -> nn.Module:
        """The user's own module inside the adapter.

        Returns
        -------
        nn.Module or callable
            See :func:`workbench.adapter.unwrap`.
        """
        return unwrap(self.model)

    def fresh(self, seed: int = 0, input_shape: tuple[int, int, int] | None = None) -> ModelAdapter:
        """An untrained model of the same architecture and preprocessing (weights from ``seed``).

        Parameters
        ----------
        seed : int, default 0
            Seed of the weight initialisation.
        input_shape : tuple of int, optional
            ``(C, H, W)``; default the card's.

        Returns
        -------
        ModelAdapter
            The fresh model, adapted like this one.

        Raises
        ------
        BadInput
            If there is no architecture spec or no known input shape.
        """
        require(self.spec is not None, f"{self.source}: cannot build an untrained copy of this model "
                                       f"({self.card.arch}); give an architecture spec instead")
        shape = input_shape or self.card.input_shape
        require(shape is not None, f"{self.source}: the input shape is not known; give input_shape")
        net = architecture(self.spec, shape[0], self.card.num_classes, shape[1:], seed=seed,
                           arch_kwargs=self.card.arch_kwargs, trust_code=True, config_dir=self._config_dir())
        return as_model(net, **self.card.adapter_kwargs(), input_shape=tuple(shape))

    def _config_dir(self) -> str | None:
        return self.card.provenance.get("config_dir")

    def bind(self, data_shape: tuple[int, int, int], num_classes: int, class_names=None,
             what: str = "the data") -> LoadedModel:
        """Check that the model takes images of ``data_shape`` and has ``num_classes`` outputs; return it
        with the card completed from the data (input shape, class names) where the card did not know.

        Parameters
        ----------
        data_shape : tuple of int
            ``(C, H, W)`` of the data's images.
        num_classes : int
            The data's number of classes.
        class_names : list of str, optional
            The data's class names (default: ``"0"``, ``"1"``, …).
        what : str, default "the data"
            The data's name, for messages.

        Returns
        -------
        LoadedModel
            A copy with the completed card (the adapter's ``input_shape`` is set in place if unknown).

        Raises
        ------
        BadInput
            Naming the expected shape or the class counts when they do not match.
        """
        data_shape = tuple(int(s) for s in data_shape)
        expected = self.card.input_shape
        if expected is not None and expected[0] != data_shape[0]:
            raise BadInput(f"the model takes {expected[0]}-channel images {tuple(expected)} but {what} has "
                           f"{data_shape[0]}-channel images {data_shape}")
        if expected is not None and tuple(expected) != data_shape and self.model.resize is None \
                and self.card.arch in ZOO:
            raise BadInput(f"the model takes images of shape {tuple(expected)} but {what} has {data_shape}")
        k = num_classes_of(self.model, data_shape)  # also: can it take this size at all?
        if k != num_classes:
            raise BadInput(f"the model has {k} classes but {what} has {num_classes}")
        card = self.card
        if card.input_shape is None or not card.class_names or len(card.class_names) != k:
            names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
            card = replace(card, input_shape=card.input_shape or data_shape,
                           class_names=card.class_names if len(card.class_names) == k else names)
        if self.model.input_shape is None:
            self.model.input_shape = data_shape
        return replace(self, card=card)


# ---------------------------------------------------------------- specs
def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names a model factory: ``path/to/file.py:name`` or ``package.module:name``.

    Zoo names and other strings are not factory specs.

    Parameters
    ----------
    spec : str
        A model or architecture spec.

    Returns
    -------
    bool
        True for exactly one ``:`` followed by an identifier, preceded by a ``.py`` path or a dotted
        module name.

    Examples
    --------
    >>> is_factory_spec("nets.py:make"), is_factory_spec("mypkg.nets:make"), is_factory_spec("cnn")
    (True, True, False)
    """
    if not isinstance(spec, str) or ":" not in spec or spec.count(":") != 1:
        return False
    target, name = spec.rsplit(":", 1)
    if not name.isidentifier():
        return False
    return target.endswith(".py") or all(p.isidentifier() for p in target.split("."))


def _import_factory(spec: str):
    target, name = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            require(path.is_file(), f"factory file not found: {path}")
            mod_name = f"_workbench_factory_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(mod_name)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(mod_name, path)
                require(loader_spec is not None and loader_spec.loader is not None, f"cannot import {path}")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[mod_name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(mod_name, None)
                    raise
        else:
            module = importlib.import_module(target)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is their input's
        raise BadInput(f"importing {target} for model factory {spec!r} failed: {type(exc).__name__}: {exc}") \
            from None
    fn = getattr(module, name, None)
    require(callable(fn), f"{target} has no callable {name!r} (model factory {spec!r})")
    return fn


def _call_factory(spec: str, kwargs: dict, seed: int | None) -> nn.Module:
    fn = _import_factory(spec)
    try:
        if seed is None:
            net = fn(**kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory
        raise BadInput(f"model factory {spec!r} raised {type(exc).__name__}: {exc}") from None
    require(isinstance(net, nn.Module), f"model factory {spec!r} returned {type(net).__name__}, not an nn.Module")
    return net


def architecture(spec: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | int = 28, *,
                 seed: int | None = 0, arch_kwargs: dict | None = None, trust_code: bool = False,
                 config_dir: str | Path | None = None) -> nn.Module:
    """A fresh, untrained model from an architecture spec, weights initialised from ``seed``.

    ``spec``: a zoo name (``cnn``, ``resnet``; built for ``in_channels``, ``num_classes``,
    ``image_size``), a factory (``file.py:fn`` / ``package.module:fn``, called with ``arch_kwargs``;
    runs the user's code), a transformers folder (its ``config.json``; a fresh
    ``AutoModelForImageClassification.from_config``), or a workbench model folder (its card's arch).

    Parameters
    ----------
    spec : str
        The architecture spec (see above); a zip of a folder is extracted safely first.
    in_channels : int
        Image channels C (zoo models).
    num_classes : int
        Number of logits K (zoo models).
    image_size : int or tuple of int, default 28
        ``H`` or ``(H, W)`` of the images (zoo models).
    seed : int or None, default 0
        Seed of the weight initialisation (``None``: the global RNG).
    arch_kwargs : dict, optional
        Keyword arguments of the zoo constructor or factory.
    trust_code : bool, default False
        Allow a model folder's card to name a factory (importing it runs its code).
    config_dir : str or Path, optional
        For ``spec="transformers"``: the folder holding ``config.json``.

    Returns
    -------
    nn.Module
        The untrained model (not adapted).

    Raises
    ------
    BadInput
        If the spec is unknown, the factory fails or returns no ``nn.Module``, or a card names a factory
        without ``trust_code``.

    Examples
    --------
    >>> import torch
    >>> net = architecture("cnn", 1, 10, 8)
    >>> type(net).__name__, net(torch.zeros(2, 1, 8, 8)).shape
    ('SmallCNN', torch.Size([2, 10]))
    """
    kwargs = dict(arch_kwargs or {})
    if spec in ZOO:
        return build_model(spec, in_channels, num_classes, image_size, seed=seed, **kwargs)
    if spec == TRANSFORMERS:
        require(config_dir is not None, "a transformers architecture needs the folder holding its config.json")
        return _transformers_fresh(Path(config_dir), seed)
    if is_factory_spec(spec) and not Path(spec).exists():
        return _call_factory(spec, kwargs, seed)
    path = Path(spec)
    if path.suffix.lower() == ".zip" and path.is_file():
        from .archive import safe_extract

        return architecture(str(safe_extract(path, _extraction_dir(path))), in_channels, num_classes, image_size,
                            seed=seed, arch_kwargs=arch_kwargs, trust_code=trust_code)
    if path.is_dir():
        if (path / "model.json").is_file():
            card = read_card(path / "model.json")
            if is_factory_spec(card.arch):
                require(trust_code, f"{path}'s card names the factory {card.arch!r}, which runs code when "
                                    f"imported: {TRUST_HINT}")
            return architecture(card.arch, in_channels, num_classes, image_size, seed=seed,
                                arch_kwargs=card.arch_kwargs, trust_code=trust_code,
                                config_dir=card.provenance.get("config_dir", path))
        if (path / "config.json").is_file():
            return _transformers_fresh(path, seed)
    raise BadInput(f"unknown architecture {spec!r}: use a zoo name ({', '.join(sorted(ZOO))}), a factory "
                   "(path/to/file.py:factory or package.module:factory), a transformers folder or a workbench "
                   "model folder")


# ---------------------------------------------------------------- transformers folders
def _quiet_transformers() -> None:
    """No progress bars or warnings from transformers on the CLI's stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _transformers_config(folder: Path):
    from transformers import AutoConfig

    _quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unusable configs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{folder}: not a usable transformers config ({first})") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    archs = list(getattr(config, "architectures", None) or [])
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES or \
            (archs and not any(a.endswith("ForImageClassification") for a in archs)):
        what = ", ".join(archs) or config.model_type
        raise BadInput(f"{folder} holds a transformers {what} model, not an image classifier "
                       "(…ForImageClassification)")
    return config


def _transformers_fresh(folder: Path, seed: int | None) -> nn.Module:
    from transformers import AutoModelForImageClassification

    config = _transformers_config(folder)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return AutoModelForImageClassification.from_config(config)


def _read_preprocessor(folder: Path) -> dict:
    """mean/std/size from ``preprocessor_config.json`` (read as JSON; no image processor is built)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        p = json.loads(path.read_text())
        out: dict[str, Any] = {}
        if p.get("do_normalize", True) and p.get("image_mean") is not None and p.get("image_std") is not None:
            mean, std = p["image_mean"], p["image_std"]
            out["mean"] = [float(v) for v in (mean if isinstance(mean, list) else [mean])]
            out["std"] = [float(v) for v in (std if isinstance(std, list) else [std])]
        size = p.get("size")
        if p.get("do_resize", True) and isinstance(size, dict) and "height" in size and "width" in size:
            out["size"] = [int(size["height"]), int(size["width"])]
        elif p.get("do_resize", True) and isinstance(size, int):
            out["size"] = [size, size]
        return out
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{path}: not a valid preprocessor config ({exc})") from None


def _load_transformers(folder: Path) -> tuple[nn.Module, ModelCard]:
    from transformers import AutoModelForImageClassification

    config = _transformers_config(folder)
    has_weights = any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin",
                                                       "model.safetensors.index.json"))
    require(has_weights, f"{folder} has a config.json but no weights (model.safetensors)")
    try:
        net, info = AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{folder}: cannot load the transformers model ({first})") from None
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        what = (f"missing {missing[:4]}" if missing else "") + (f" mismatched {mismatched[:2]}" if mismatched else "")
        raise BadInput(f"{folder}: its weights do not fit its config ({what.strip()}); a model whose classifier "
                       "was never trained is not an image classifier to audit")
    pre = _read_preprocessor(folder)
    channels = int(getattr(config, "num_channels", 3))
    size = getattr(config, "image_size", None)
    hw = tuple(pre["size"]) if "size" in pre else ((int(size), int(size)) if isinstance(size, int) else
                                                   tuple(int(s) for s in size) if size else None)
    labels = getattr(config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), i))) for i in range(int(config.num_labels))]
    card = ModelCard(TRANSFORMERS, (channels, *hw) if hw else None, names, preprocess=pre,
                     provenance={"config_dir": str(folder.resolve()), "transformers_class": type(net).__name__})
    return net, card


# ---------------------------------------------------------------- weights
def _is_torchscript(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):  # which itself raises on some broken zip64 records
            return False
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:  # e.g. member names that are not UTF-8
        raise BadInput(f"cannot read {path}: not a valid zip archive ({exc})") from None


def _check_torch_file(path: Path) -> None:
    """A ``.pt``/``.pth``/``.bin`` must be what ``torch.save`` writes: a zip archive (PyTorch ≥ 1.6)
    whose members' declared sizes are within the ``data_bytes`` limit, or a legacy pickle stream."""
    from . import limits

    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                total = sum(i.file_size for i in zf.infolist())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise BadInput(f"cannot read {path}: not a valid zip archive ({exc})") from None
        limits.check("data_bytes", total, f"{path}: the archive's members decompress to a size that")
    elif not head.startswith(b"\x80"):
        raise BadInput(f"{path} is not a PyTorch file (torch.save writes a zip archive; this file starts "
                       f"with bytes {head.hex() or '(empty)'})")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadInput(f"cannot read safetensors file {path}: {exc}") from None
    if suffix in (".pt", ".pth", ".bin"):
        _check_torch_file(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
            raise BadInput(f"refused to load {path}: it holds pickled objects other than tensors, which "
                           f"could run code ({first}). Save a state dict or use safetensors.") from None
        except Exception as exc:  # noqa: BLE001 - any failure to parse a user's file is bad input
            raise BadInput(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not (isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())):
            raise BadInput(f"{path} does not hold a state dict (a mapping of names to tensors)")
        return obj
    raise BadInput(f"unsupported weights file {path}: use .safetensors or a .pt/.pth state dict")


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = (f"the architecture's {missing[0]} {tuple(own[missing[0]].shape)} is missing" if missing else
                 f"{unexpected[0]} {tuple(state[unexpected[0]].shape)} is not in the architecture")
        raise BadInput(f"{source} does not fit the architecture: {first} ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected keys; missing {missing[:4]}, unexpected {unexpected[:4]})")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise BadInput(f"{source} does not fit the architecture: tensor {k} has shape {tuple(state[k].shape)}, "
                       f"the architecture expects {tuple(own[k].shape)}")
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise BadInput(f"{source}: tensor {nonfinite[0]} holds NaN or infinite values")
    model.load_state_dict(state)
    return model


def _torchscript(path: Path, trust_code: bool) -> nn.Module:
    require(trust_code, f"{path} is a TorchScript archive: loading it runs the code stored in the file "
                        f"(TorchScript is code, not weights), so it is refused; {TRUST_HINT}. Even then it "
                        "serves only what needs no layer hooks (smoothing, accuracy); for everything else save a "
                        "state dict (.safetensors) and give its factory (file.py:factory), or use save_pretrained")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise BadInput(f"cannot load TorchScript archive {path}: {exc}") from None


# ---------------------------------------------------------------- save / load
def save_model(model, directory: str | Path, card: ModelCard) -> Path:
    """Write ``model.safetensors`` + ``model.json`` (+ ``config.json`` for transformers models) into
    ``directory``, each atomically, so that :func:`load_model` rebuilds the same model.

    ``card.arch`` must say how to rebuild the architecture: a zoo name, a factory spec
    (``path/to/file.py:factory``; stored with its absolute path) or, for a transformers model,
    anything (it becomes ``transformers`` and the model's config is saved beside the weights).
    The adapter's normalisation and resize go into ``card.preprocess``.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
        The model to save (not TorchScript, not a callable).
    directory : str or Path
        The folder to write into (created if missing).
    card : ModelCard
        What the model is; a copy is completed and saved, the argument is not changed.

    Returns
    -------
    Path
        ``directory``.

    Raises
    ------
    BadInput
        If the model is not an ``nn.Module`` or the card does not say how to rebuild the architecture.
    """
    from safetensors.torch import save_file

    adapter = model if isinstance(model, ModelAdapter) else None
    net = unwrap(model)
    require(isinstance(net, nn.Module) and not isinstance(net, torch.jit.ScriptModule),
            "only nn.Module models can be saved as weights (a TorchScript archive or a callable cannot)")
    directory = Path(directory)
    card = replace(card)
    config = getattr(net, "config", None)
    if config is not None and hasattr(config, "to_json_string") and hasattr(net, "save_pretrained"):
        card.arch = TRANSFORMERS
        card.provenance = {k: v for k, v in card.provenance.items() if k != "config_dir"}
    elif is_factory_spec(card.arch) and card.arch.rsplit(":", 1)[0].endswith(".py"):
        target, name = card.arch.rsplit(":", 1)
        card.arch = f"{Path(target).expanduser().resolve()}:{name}"
    else:
        require(card.arch in ZOO or is_factory_spec(card.arch),
                f"cannot save a model whose card says arch={card.arch!r}: say how to rebuild it, with a zoo name "
                f"({', '.join(sorted(ZOO))}) or a factory spec (card.arch = 'path/to/file.py:factory' or "
                "'package.module:factory', card.arch_kwargs = its keyword arguments)")
    if adapter is not None and not card.preprocess:
        pre: dict[str, Any] = {}
        if adapter.normalize is not None:
            pre["mean"] = adapter.normalize.mean.flatten().tolist()
            pre["std"] = adapter.normalize.std.flatten().tolist()
        if adapter.resize is not None:
            pre["size"] = list(adapter.resize.size)
        card.preprocess = pre
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if card.arch == TRANSFORMERS:
        atomic_write_text(directory / "config.json", config.to_json_string())
    atomic_write(directory / "model.safetensors", lambda p: save_file(state, str(p)))
    atomic_write_text(directory / "model.json", card.to_json())
    return directory


def _card_beside(path: Path) -> Path | None:
    return next((p for p in (path.with_suffix(".json"), path.parent / "model.json") if p.is_file()), None)


_EXTRACTED: list = []  # temporary folders of zipped models, removed when the process exits


def _extraction_dir(path: Path) -> Path:
    """A fresh private folder (0700) for one zipped model; it lives as long as the process, because a
    loaded model may rebuild its architecture from the extracted config (``LoadedModel.fresh``)."""
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="workbench-model-")
    _EXTRACTED.append(tmp)
    return Path(tmp.name)


def load_model(spec: str | Path, *, weights: str | Path | None = None, trust_code: bool = False,
               arch: str | None = None, arch_kwargs: dict | None = None,
               input_shape: tuple[int, int, int] | None = None, class_names: list[str] | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model from a spec (see the module docstring); returns a :class:`LoadedModel`.

    ``weights``: the state dict for a factory spec. ``arch`` (a zoo name or factory spec),
    ``input_shape`` and ``class_names`` describe a bare weights file that has no ``model.json`` beside it.
    ``trust_code`` allows what runs code stored with the model: TorchScript archives and cards that
    name a factory.

    Parameters
    ----------
    spec : str or Path
        A workbench or transformers folder, a zip of one, a weights file, a TorchScript archive or a
        factory spec.
    weights : str or Path, optional
        The weights (``.safetensors`` or state dict) for a factory spec.
    trust_code : bool, default False
        Allow loading what runs code (TorchScript, a card naming a factory).
    arch : str, optional
        Architecture of a bare weights file (zoo name or factory spec).
    arch_kwargs : dict, optional
        Keyword arguments of the factory or zoo constructor.
    input_shape : tuple of int, optional
        ``(C, H, W)`` for a bare weights file or a factory.
    class_names : list of str, optional
        Class names for a bare weights file or a factory.
    device : str or torch.device, default "cpu"
        Where to put the model (``"auto"`` picks an accelerator when there is one).

    Returns
    -------
    LoadedModel
        The model in eval mode, adapted, with its card and source.

    Raises
    ------
    BadInput
        If the model is missing or unusable: unknown format, weights that do not fit the architecture or
        hold non-finite values or pickled objects, code that is not trusted, an invalid card.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if is_factory_spec(text) and not path.exists():
        require(weights is not None, f"the factory {text!r} builds an architecture: give its trained weights "
                                     "(--weights W.safetensors)")
        wpath = Path(weights)
        require(wpath.is_file(), f"weights not found: {wpath}")
        net = _call_factory(text, dict(arch_kwargs or {}), seed=None)
        _load_into(net, _read_state_dict(wpath), str(wpath))
        names = list(class_names) if class_names is not None else []
        card = ModelCard(text, tuple(input_shape) if input_shape else None, names, dict(arch_kwargs or {}),
                         provenance={"weights": str(wpath)})
        return _ready(net, card, f"{text} + {wpath}", text, device)
    if text in ZOO and not path.exists():
        raise BadInput(f"{text!r} names a zoo architecture, not a trained model: train one first "
                       f"(workbench train --model {text} --out runs/{text}) and pass its folder")
    if not path.exists():
        raise BadInput(f"model not found: {path} (a model is a workbench folder, a transformers folder, a weights "
                       "file with its model.json, or a factory spec path/to/file.py:factory with --weights)")
    if path.suffix.lower() == ".zip" and path.is_file():
        from .archive import safe_extract

        folder = safe_extract(path, _extraction_dir(path))
        loaded = load_model(folder, trust_code=trust_code, device=device)
        return replace(loaded, source=str(path))
    if path.is_dir():
        if (path / "model.json").is_file():
            card = read_card(path / "model.json")
            wfile = path / "model.safetensors"
            require(wfile.is_file(), f"{path} has a model.json but no model.safetensors")
            return _from_card(card, wfile, path, trust_code, device)
        if (path / "config.json").is_file():
            net, card = _load_transformers(path)
            return _ready(net, card, str(path), str(path), device)
        raise BadInput(f"{path} is a folder without model.json (a workbench model) or config.json (a transformers "
                       "model)")
    if _is_torchscript(path):
        net = _torchscript(path, trust_code)
        card_path = _card_beside(path)
        if card_path is not None:
            card = read_card(card_path)
        else:
            card = ModelCard("torchscript", tuple(input_shape) if input_shape else None,
                             list(class_names) if class_names else [])
        return _ready(net, card, str(path), None, device)
    require(path.suffix.lower() in WEIGHT_SUFFIXES,
            f"unsupported model file {path}: use a workbench or transformers folder, a weights file "
            "(.safetensors, .pt/.pth state dict) with its model.json, or a factory spec")
    card_path = _card_beside(path)
    if card_path is not None and arch is None:
        card = read_card(card_path)
    else:
        require(arch is not None, f"{path} has no model.json beside it: give its architecture (a zoo name: "
                                  f"{', '.join(sorted(ZOO))}, or a factory spec) and input shape and class names")
        require(input_shape is not None and class_names is not None or is_factory_spec(arch),
                f"{path}: give input_shape and class_names for a zoo architecture")
        card = ModelCard(arch, tuple(input_shape) if input_shape else None,
                         list(class_names) if class_names else [], dict(arch_kwargs or {}))
    return _from_card(card, path, path.parent, trust_code or card_path is None, device)


def _from_card(card: ModelCard, weights: Path, folder: Path, trust_code: bool, device) -> LoadedModel:
    if is_factory_spec(card.arch):
        require(trust_code, f"{folder}'s model.json names the factory {card.arch!r}: loading it imports and runs "
                            f"that code; {TRUST_HINT}, or give the factory yourself (--model {card.arch} --weights "
                            f"{weights})")
        net = _call_factory(card.arch, card.arch_kwargs, seed=None)
    elif card.arch == TRANSFORMERS:
        require((folder / "config.json").is_file(), f"{folder}: a transformers model card needs config.json beside it")
        net = _transformers_fresh(folder, seed=None)
        card.provenance["config_dir"] = str(folder.resolve())
    else:
        require(card.arch in ZOO, f"{folder}: unknown architecture {card.arch!r} in the model card (the zoo has "
                                  f"{', '.join(sorted(ZOO))}; other models name a factory: path/to/file.py:factory)")
        require(card.input_shape is not None, f"{folder}: a zoo model card needs input_shape")
        try:
            net = build_model(card.arch, card.input_shape[0], card.num_classes, card.input_shape[1:], seed=None,
                              **card.arch_kwargs)
        except TypeError as exc:
            raise BadInput(f"{folder}: the card's arch_kwargs do not fit {card.arch} ({exc})") from None
    _load_into(net, _read_state_dict(weights), str(weights))
    spec = card.arch if card.arch != TRANSFORMERS else str(folder)
    return _ready(net, card, str(folder if weights.name == "model.safetensors" else weights), spec, device)


def _ready(net, card: ModelCard, source: str, spec: str | None, device) -> LoadedModel:
    from .training import resolve_device

    dev = resolve_device(device)
    kwargs = card.adapter_kwargs()
    adapter = as_model(net, **kwargs, input_shape=card.input_shape)
    adapter = adapter.to(dev).eval()
    return LoadedModel(adapter, card, source, spec)
