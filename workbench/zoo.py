"""The model zoo: small, fast architectures for 1- or 3-channel images, built seeded.

``cnn`` (a LeNet-style CNN with BatchNorm, 140k parameters) and ``resnet`` (a small ResNet of
BasicBlocks, 175k parameters). Both declare ``default_cam_layer`` and ``feature_layer``, so the
saliency methods and detectors need no layer names for them. Any other ``nn.Module`` works with the
workbench too (see :mod:`workbench.adapter`); the zoo is what ``workbench train`` builds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import BadInput, require


class SmallCNN(nn.Module):
    """LeNet-style CNN: two blocks of two 3×3 conv+BN+ReLU and a max-pool, then a 2-layer head.

    Layer names worth explaining: ``relu2`` (H/1), ``relu4`` (H/2, the default CAM layer: the last
    conv activations before pooling); penultimate features: ``relu5`` (``width*4`` dims).
    An adaptive 3×3 pool before the head makes it take any image size from 8×8 up.

    Parameters
    ----------
    in_channels : int, default 1
        Image channels C.
    num_classes : int, default 10
        Number of logits K.
    width : int, default 32
        Channels of the first block (the second has ``2*width``); 140k parameters at the default.

    Returns
    -------
    A SmallCNN (``nn.Module``) mapping N×C×H×W to logits N×K.

    Examples
    --------
    >>> import torch
    >>> SmallCNN(in_channels=1, num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
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
    """ResNet basic block: two 3×3 convs with BatchNorm, identity or 1×1 projection shortcut.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.

    Parameters
    ----------
    cin : int
        Input channels.
    cout : int
        Output channels (a 1×1 projection shortcut when they differ from ``cin``).
    stride : int, default 1
        Stride of the first conv (and of the shortcut): 2 halves H and W.

    Returns
    -------
    A BasicBlock (``nn.Module``) mapping N×cin×H×W to N×cout×(H/stride)×(W/stride).

    Examples
    --------
    >>> import torch
    >>> BasicBlock(4, 8, stride=2)(torch.zeros(1, 4, 8, 8)).shape
    torch.Size([1, 8, 4, 4])
    """

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

    Parameters
    ----------
    in_channels : int, default 1
        Image channels C.
    num_classes : int, default 10
        Number of logits K.
    width : int, default 16
        Channels of the first stage (w, 2w, 4w); 175k parameters at the default.

    Returns
    -------
    A SmallResNet (``nn.Module``) mapping N×C×H×W to logits N×K.

    Examples
    --------
    >>> import torch
    >>> SmallResNet(in_channels=3, num_classes=5)(torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 5])
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
#: Image sizes the zoo builds for: both nets end in adaptive pooling, so any size in this range works;
#: compute grows with the pixel count.
MIN_SIZE, MAX_SIZE = 8, 512


def build_model(arch: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | int = 28,
                seed: int | None = 0, **kwargs) -> nn.Module:
    """A fresh zoo model, its weights initialised from ``seed``.

    The global RNG is left as it was (the seed is applied inside ``torch.random.fork_rng``).

    Parameters
    ----------
    arch : str
        A key of :data:`ZOO`: ``"cnn"`` or ``"resnet"``.
    in_channels : int
        Image channels, 1 to 64.
    num_classes : int
        Number of logits, ≥ 2 (within the ``classes`` limit).
    image_size : int or tuple of int, default 28
        ``H`` or ``(H, W)``, each in [:data:`MIN_SIZE`, :data:`MAX_SIZE`] = [8, 512].
    seed : int or None, default 0
        Seed of the weight initialisation (``None``: the global RNG).
    **kwargs
        Constructor options (``width``), checked by :func:`check_arch_kwargs`.

    Returns
    -------
    nn.Module
        The untrained model.

    Raises
    ------
    BadInput
        If the architecture is unknown or a size, class count or option is out of range.

    Examples
    --------
    >>> type(build_model("resnet", 1, 3, 12)).__name__
    'SmallResNet'
    """
    require(arch in ZOO, f"unknown model {arch!r}; the zoo has: {', '.join(sorted(ZOO))}")
    require(isinstance(in_channels, int) and 1 <= in_channels <= 64,
            f"zoo models take 1 to 64 input channels, got {in_channels}")
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
    (a card asking for ``width: 20000`` would otherwise allocate 14 GB).

    Parameters
    ----------
    arch : str
        A key of :data:`ZOO`.
    in_channels : int
        Image channels.
    num_classes : int
        Number of logits (checked against the ``classes`` limit).
    kwargs : dict
        The constructor options to check (each an integer ≥ 1).

    Returns
    -------
    None

    Raises
    ------
    BadInput
        If an option is unknown or not an integer ≥ 1, or the network would be over a limit or cannot
        be built at all (sizes beyond what a tensor can describe).

    Examples
    --------
    >>> check_arch_kwargs("cnn", 1, 10, {"width": 8})
    >>> check_arch_kwargs("cnn", 1, 10, {"depth": 3})
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: model 'cnn' takes no option 'depth'; it takes: width
    """
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
                f"model option {key} must be an integer >= 1, got {value!r}"[:200])
        require(value < 2 ** 31, f"model option {key} is {value:.3g}, beyond any buildable size (below 2**31)")
    limits.check("classes", num_classes, f"model {arch!r}: the number of classes")
    if all(isinstance(params[k].default, int) and v <= params[k].default for k, v in kwargs.items()):
        return  # no larger than the zoo's defaults, which are small whatever the number of classes
    try:
        with torch.device("meta"):
            shell = ctor(in_channels=in_channels, num_classes=num_classes, **kwargs)
    except (RuntimeError, ValueError, OverflowError, TypeError) as exc:  # sizes beyond what a tensor can describe
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadInput(f"model {arch!r} with {kwargs} cannot be built: {first}") from None
    limits.check("model_parameters", sum(p.numel() for p in shell.parameters()),
                 f"model {arch!r} with {kwargs or 'default options'} would have a parameter count that")
