"""Model zoo, safe model I/O and named-layer lookup.

Zoo: ``cnn`` (a LeNet-style CNN with BatchNorm) and ``resnet`` (a small ResNet of BasicBlocks), both
for 1- or 3-channel inputs from 8×8 to 64×64. Saved models are a directory with
``model.safetensors`` (weights) and ``model.json`` (a :class:`ModelCard`: architecture, input shape,
class names, training provenance).

Loading never unpickles arbitrary objects: safetensors, ``torch.load(..., weights_only=True)`` for
``.pt``/``.pth`` state dicts, or ``torch.jit.load`` for TorchScript archives.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write, atomic_write_text
from .errors import BadInput, require


class SmallCNN(nn.Module):
    """LeNet-style CNN: two blocks of two 3×3 conv+BN+ReLU and a max-pool, then a 2-layer head.

    Layer names worth explaining: ``relu2`` (H/1), ``relu4`` (H/2, the default CAM layer: the last
    conv activations before pooling); penultimate features: ``relu5`` (``width*4`` dims).
    """

    default_cam_layer = "relu4"
    feature_layer = "relu5"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.conv4, self.bn4, self.relu4 = nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(3)
        self.flatten = nn.Flatten()
        self.fc1, self.relu5 = nn.Linear(2 * w * 9, 4 * w), nn.ReLU()
        self.fc2 = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool1(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.pool2(self.relu4(self.bn4(self.conv4(x))))
        x = self.relu5(self.fc1(self.flatten(self.gap(x))))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with BatchNorm, identity or 1×1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet (3 stages of 2 BasicBlocks, widths w, 2w, 4w, global average pool).

    Layers are named like torchvision's (``layer2.1.conv1``); default CAM layer ``layer3``,
    penultimate features ``flatten``.
    """

    default_cam_layer = "layer3"
    feature_layer = "flatten"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


ZOO: dict[str, Callable[..., nn.Module]] = {"cnn": SmallCNN, "resnet": SmallResNet}
MIN_SIZE, MAX_SIZE = 8, 64


def build_model(arch: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | int = 28,
                seed: int | None = 0, **kwargs) -> nn.Module:
    """A fresh zoo model, its weights initialised from ``seed``."""
    require(arch in ZOO, f"unknown model {arch!r}; the zoo has: {', '.join(sorted(ZOO))}")
    require(in_channels in (1, 3), f"zoo models take 1 or 3 input channels, got {in_channels}")
    require(num_classes >= 2, f"need at least 2 classes, got {num_classes}")
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    require(all(MIN_SIZE <= s <= MAX_SIZE for s in hw),
            f"zoo models take images from {MIN_SIZE}×{MIN_SIZE} to {MAX_SIZE}×{MAX_SIZE}, got {hw[0]}×{hw[1]}")
    check_arch_kwargs(arch, in_channels, num_classes, kwargs)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ZOO[arch](in_channels=in_channels, num_classes=num_classes, **kwargs)
    return ZOO[arch](in_channels=in_channels, num_classes=num_classes, **kwargs)


def check_arch_kwargs(arch: str, in_channels: int, num_classes: int, kwargs: dict) -> None:
    """Refuse architecture options the constructor does not take, non-integer sizes, and a network
    over the ``model_parameters`` limit, counted on the ``meta`` device before any weight exists
    (a card asking for ``width: 20000`` would otherwise allocate 14 GB)."""
    import inspect

    from . import limits

    ctor = ZOO[arch]
    params = inspect.signature(ctor).parameters
    accepted = [p for p in params if p not in ("self", "in_channels", "num_classes")]
    unknown = sorted(set(kwargs) - set(accepted))
    require(not unknown, f"model {arch!r} takes no option {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(accepted) or 'none'}")
    for key, value in kwargs.items():
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"model option {key} must be an integer >= 1, got {value!r}")
    limits.check("classes", num_classes, f"model {arch!r}: the number of classes")
    if all(isinstance(params[k].default, int) and v <= params[k].default for k, v in kwargs.items()):
        return  # no larger than the zoo's defaults, which are small whatever the number of classes
    with torch.device("meta"):
        shell = ctor(in_channels=in_channels, num_classes=num_classes, **kwargs)
    limits.check("model_parameters", sum(p.numel() for p in shell.parameters()),
                 f"model {arch!r} with {kwargs or 'default options'} would have a parameter count that")


@dataclass
class ModelCard:
    """What a saved model is: architecture, inputs, classes and how it was trained."""

    arch: str
    input_shape: tuple[int, int, int]
    class_names: list[str]
    arch_kwargs: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["format"] = "workbench-model/1"
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        try:
            d = json.loads(text)
            check_card_fields(d, source)
            return cls(arch=str(d["arch"]), input_shape=tuple(int(s) for s in d["input_shape"]),
                       class_names=[str(c) for c in d["class_names"]],
                       arch_kwargs=dict(d.get("arch_kwargs", {})), provenance=dict(d.get("provenance", {})))
        except BadInput:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
            raise BadInput(f"{source}: not a valid model card ({exc})") from None


def check_card_fields(d, source: str = "model card") -> None:
    """The fields of a parsed card, checked before anything is built from them: an object with
    ``arch`` (text), ``input_shape`` (three integers >= 1 within the image-size limit),
    ``class_names`` (a list of 2 or more names within the classes limit), and ``arch_kwargs`` /
    ``provenance`` objects when present."""
    from . import limits

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise BadInput(f"{source}: not a valid model card ({why})")

    need(isinstance(d, dict), f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in ("arch", "input_shape", "class_names") if k not in d]
    need(not missing, f"missing {', '.join(missing)}")
    need(isinstance(d["arch"], str), "arch must be a name")
    shape = d["input_shape"]
    need(isinstance(shape, list) and len(shape) == 3
         and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape),
         f"input_shape must be three integers >= 1 (channels, height, width), got {shape!r}"[:200])
    limits.check("image_pixels", shape[0] * shape[1] * shape[2], f"{source}: input_shape {shape}")
    names = d["class_names"]
    need(isinstance(names, list) and all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in names),
         "class_names must be a list of names")
    limits.check("classes", len(names), f"{source}: the number of class names")
    need(len(names) >= 2, f"need at least two class names, got {len(names)}")
    for key in ("arch_kwargs", "provenance"):
        need(isinstance(d.get(key, {}), dict), f"{key} must be an object")


def read_card(path: Path) -> ModelCard:
    """A model card file (small JSON: refused over 16 MiB before it is read)."""
    size = path.stat().st_size
    require(size <= 16 << 20, f"{path}: {size:,} bytes is too large for a model card (a JSON file of a few KB)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not a valid model card (not UTF-8 text: {exc})") from None
    return ModelCard.from_json(text, str(path))


@dataclass
class LoadedModel:
    """A model ready for evaluation (``eval()`` mode) and what is known about it."""

    model: nn.Module
    card: ModelCard
    source: str


def save_model(model: nn.Module, directory: str | Path, card: ModelCard) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory`` (each atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / "model.safetensors", lambda p: save_file(state, str(p)))
    atomic_write_text(directory / "model.json", card.to_json())
    return directory


def _is_torchscript(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):  # which itself raises on some broken zip64 records
            return False
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:  # e.g. member names that are not UTF-8
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
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
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
    raise BadInput(f"unsupported model file {path}: use a saved model directory, .safetensors, .pt/.pth "
                   "(state dict) or a TorchScript archive")


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = [], []
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise BadInput(f"{source} does not fit the architecture: missing {missing[:6]}"
                       f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                       f"{'...' if len(unexpected) > 6 else ''}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise BadInput(f"{source}: tensor {k} has shape {tuple(state[k].shape)}, the architecture expects "
                       f"{tuple(own[k].shape)}")
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise BadInput(f"{source}: tensor {nonfinite[0]} holds NaN or infinite values")
    model.load_state_dict(state)
    return model


def load_model(path: str | Path, *, arch: str | None = None, input_shape: tuple[int, int, int] | None = None,
               class_names: list[str] | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a saved model directory, a state dict (.safetensors/.pt/.pth) or a TorchScript archive.

    A bare state dict needs its architecture: a ``model.json`` beside it (same stem ``X.json`` or
    ``model.json``), or ``arch``, ``input_shape`` and ``class_names`` given here.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"model not found: {path}")
    if path.is_dir():
        weights = path / "model.safetensors"
        require(weights.exists(), f"{path} is a folder without model.safetensors")
        card_path = path / "model.json"
    else:
        weights = path
        card_path = next((p for p in (path.with_suffix(".json"), path.parent / "model.json") if p.exists()), None)
    if not path.is_dir() and _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise BadInput(f"cannot load TorchScript archive {path}: {exc}") from None
        card = read_card(card_path) if card_path else None
        if card is None:
            require(input_shape is not None and class_names is not None,
                    f"{path} is TorchScript without a model.json: give input_shape and class_names")
            card = ModelCard("torchscript", tuple(input_shape), list(class_names))
        return LoadedModel(model.to(device).eval(), card, str(path))
    if card_path is not None and card_path.exists():
        card = read_card(card_path)
    else:
        require(arch is not None and input_shape is not None and class_names is not None,
                f"{path} has no model.json beside it: give arch, input_shape and class_names "
                f"(zoo: {', '.join(sorted(ZOO))})")
        card = ModelCard(arch, tuple(input_shape), list(class_names))
    state = _read_state_dict(weights)
    model = build_model(card.arch, card.input_shape[0], card.num_classes, card.input_shape[1:], seed=None,
                        **card.arch_kwargs)
    _load_into(model, state, str(weights))
    return LoadedModel(model.to(device).eval(), card, str(path))


def layer_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def get_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The submodule named ``layer`` (e.g. ``"layer2.1.conv1"``); the error lists the valid names."""
    if isinstance(layer, nn.Module):
        require(any(m is layer for m in model.modules()), "the given layer module is not part of the model")
        return layer
    modules = dict(model.named_modules())
    if layer in modules and layer != "":
        return modules[layer]
    raise BadInput(f"unknown layer {layer!r}; valid layers: {', '.join(layer_names(model))}")


def layer_name_of(model: nn.Module, module: nn.Module) -> str:
    for n, m in model.named_modules():
        if m is module:
            return n
    raise BadInput("the given layer module is not part of the model")


@dataclass
class LayerInfo:
    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int


def describe_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
    """Every named layer with its type, output shape (one forward on zeros) and parameter count."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])

        handles.append(mod.register_forward_hook(hook))
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(1, *input_shape, device=device))
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return [LayerInfo(n, type(m).__name__, shapes.get(n), sum(p.numel() for p in m.parameters(recurse=False)))
            for n, m in model.named_modules() if n]


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
