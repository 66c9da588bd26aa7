"""The model adapter: any image classifier seen the same way by every method.

Methods work in [0, 1] pixel space on N×C×H×W images and need logits N×K. Users' models take
normalised inputs of a fixed size and return tensors, transformers' ``ModelOutput`` objects, dicts or
tuples. :class:`ModelAdapter` closes that gap once, so smoothing noise, interval boxes, triggers and
saliency overlays all stay in pixel space:

    images in [0, 1] ──► resize (optional) ──► (x − mean) / std (optional) ──► model ──► logits

It accepts an ``nn.Module`` or any callable (``lambda t: hf(t).logits``, as captum does); with a callable,
``module=`` names the ``nn.Module`` that holds the layers and parameters. Layers keep the user's own
dotted names (:func:`workbench.layers.layer_root` looks through the adapter). :func:`as_model` is what
every library entry point calls on the model it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BadInput, require


@contextmanager
def model_mode(model: nn.Module, train: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode for a block, then give every module back its own flag.

    Saving only the top module's flag (``was = m.training ... m.train(was)``) flips, on restore, any
    submodule the user had set otherwise: a BatchNorm frozen in eval inside a model in train mode comes
    back in train mode and updates its running statistics. Here each module's own ``.training`` is
    recorded on entry and set back on exit, also when the block raises.

    Parameters
    ----------
    model : nn.Module
        The model (a :class:`ModelAdapter` or any module; all of its submodules are recorded).
    train : bool, default False
        The mode inside the block: ``model.train(train)``.

    Returns
    -------
    contextlib.AbstractContextManager of nn.Module
        Yields ``model``, in the requested mode inside the block.

    Raises
    ------
    BadInput
        If ``model`` is not an ``nn.Module``.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).train()
    >>> _ = net[1].eval()  # a frozen BatchNorm inside a model in train mode
    >>> with model_mode(net) as m:
    ...     print(m.training, m[1].training)
    False False
    >>> net.training, net[0].training, net[1].training
    (True, True, False)
    """
    require(isinstance(model, nn.Module), f"model_mode needs an nn.Module, got {type(model).__name__}")
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.train(train)
        yield model
    finally:
        for m, f in flags:
            m.training = f


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output.

    Accepts a tensor, ``.logits`` (``ModelOutput``, dataclasses), a dict's ``"logits"``, or the first
    element of a tuple or list.

    Parameters
    ----------
    output : Any
        What a model's forward returned.

    Returns
    -------
    torch.Tensor
        The logits, shape N×K (the tensor itself, not a copy).

    Raises
    ------
    BadInput
        If ``output`` holds no logits, or the logits are not two-dimensional.

    Examples
    --------
    >>> import torch
    >>> logits_of({"logits": torch.zeros(2, 3)}).shape
    torch.Size([2, 3])
    >>> logits_of((torch.ones(1, 4), "aux")).tolist()
    [[1.0, 1.0, 1.0, 1.0]]
    """
    if isinstance(output, torch.Tensor):
        out = output
    elif isinstance(output, Mapping) and "logits" in output:
        out = output["logits"]
    elif hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        out = output.logits
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        out = output[0]
    else:
        raise BadInput(f"the model returned {type(output).__name__}, which holds no logits: expected a tensor "
                       "N×classes, an object with .logits, a dict with 'logits', or a tuple whose first element "
                       "is the logits")
    if out.ndim != 2:
        raise BadInput(f"the model's logits have shape {tuple(out.shape)}; expected N×classes")
    return out


class Normalize(nn.Module):
    """``(x − mean) / std`` per channel: an affine, monotone map (interval bounds go through it).

    Parameters
    ----------
    mean : Sequence[float]
        One value per channel (or one value for all channels); finite.
    std : Sequence[float]
        One value per channel (or one value), same length as ``mean``; each > 0.

    Returns
    -------
    A Normalize module
        Its forward maps N×C×H×W to N×C×H×W.

    Raises
    ------
    BadInput
        If ``mean`` and ``std`` differ in length, are empty or non-finite, or a ``std`` is ≤ 0; at
        forward time, if the channel count does not match the images'.

    Examples
    --------
    >>> import torch
    >>> Normalize([0.5], [0.25])(torch.ones(1, 1, 1, 2)).tolist()
    [[[[2.0, 2.0]]]]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        m = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        require(m.numel() == s.numel() and m.numel() >= 1, f"mean and std need one value per channel (or one "
                                                           f"value), got {m.numel()} and {s.numel()}")
        require(bool(torch.isfinite(m).all() and torch.isfinite(s).all()) and bool((s > 0).all()),
                f"std must be > 0 and mean and std finite, got mean {m.flatten().tolist()} std {s.flatten().tolist()}")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.shape[1] not in (1, x.shape[1]):
            raise BadInput(f"the normalisation has {self.mean.shape[1]} channels but the images have {x.shape[1]}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Resize(nn.Module):
    """Bilinear resize to ``size`` (a linear map with non-negative weights, so also monotone).

    Parameters
    ----------
    size : tuple of int
        ``(H, W)`` of the output; both ≥ 1. Inputs already of that size pass unchanged.

    Returns
    -------
    A Resize module
        Its forward maps N×C×h×w to N×C×H×W (``align_corners=False``).

    Raises
    ------
    BadInput
        If a side of ``size`` is < 1.

    Examples
    --------
    >>> import torch
    >>> Resize((4, 6))(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 3, 4, 6])
    """

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        require(min(self.size) >= 1, f"size must be positive, got {self.size}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class ModelAdapter(nn.Module):
    """A classifier from [0, 1] pixel images N×C×H×W to logits N×K (see the module docstring).

    Parameters
    ----------
    model : nn.Module or callable
        An ``nn.Module`` or a callable taking the (resized, normalised) batch and returning logits N×K,
        a ``ModelOutput``, a dict with ``"logits"`` or a tuple whose first element is the logits.
    mean, std : Sequence[float], optional
        Per-channel normalisation the model expects (default ``None``: none); give both or neither.
    size : tuple of int, optional
        ``(H, W)`` the model takes; other sizes are resized to it (default ``None``: inputs pass as
        they are).
    module : nn.Module, optional
        For a callable ``model``: the ``nn.Module`` holding its layers and parameters (default ``None``).
    input_shape : tuple of int, optional
        ``(C, H, W)`` of the images the adapter takes, when known (used to probe layers).
    hooks_error : str, optional
        Set for models that cannot run layer hooks (TorchScript): the message naming what works.

    Returns
    -------
    A ModelAdapter (an ``nn.Module``) whose forward maps pixel images N×C×H×W in [0, 1] to logits N×K.

    Raises
    ------
    BadInput
        If ``model`` is not callable, only one of ``mean``/``std`` is given, or ``module`` is given
        with an ``nn.Module`` model or is not an ``nn.Module``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    >>> adapted = ModelAdapter(net, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2], size=(4, 4))
    >>> adapted(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 5])
    """

    def __init__(self, model: nn.Module | Callable[[torch.Tensor], Any], *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, size: tuple[int, int] | None = None,
                 module: nn.Module | None = None, input_shape: tuple[int, int, int] | None = None,
                 hooks_error: str | None = None):
        super().__init__()
        require(callable(model), f"a model must be an nn.Module or a callable, got {type(model).__name__}")
        require((mean is None) == (std is None), "give both mean and std, or neither")
        if isinstance(model, nn.Module):
            require(module is None or module is model, "module= is only for callables")
            self.inner: nn.Module | None = model
            self._fn = None
        else:
            require(module is None or isinstance(module, nn.Module),
                    f"module= must be an nn.Module, got {type(module).__name__}")
            self.inner = module
            self._fn = model
        self.resize = Resize(size) if size is not None else None
        self.normalize = Normalize(mean, std) if mean is not None else None
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        self.hooks_error = hooks_error
        # The adapter's own mode follows the wrapped module's, so that the adapter reports the mode
        # the user's module is in (:func:`model_mode` restores each module's own flag).
        self.training = bool(self.inner.training) if self.inner is not None else False
        for m in (self.resize, self.normalize):
            if m is not None:
                m.training = self.training

    # ------------------------------------------------------------ what the workbench asks of a model
    @property
    def layer_root(self) -> nn.Module | None:
        """The module whose named submodules are the layers (no adapter prefix).

        Returns
        -------
        nn.Module or None
            The wrapped module (``module=`` for a callable; ``None`` if none was given).
        """
        return self.inner

    @property
    def hooks_supported(self) -> bool:
        """Whether the model can run layer hooks (not TorchScript).

        Returns
        -------
        bool
            False when ``hooks_error`` is set.
        """
        return self.hooks_error is None

    @property
    def default_cam_layer(self) -> str | None:
        """The wrapped model's declared default saliency layer, if any.

        Returns
        -------
        str or None
            The model's ``default_cam_layer`` attribute.
        """
        return getattr(self.inner, "default_cam_layer", None)

    @property
    def feature_layer(self) -> str | None:
        """The wrapped model's declared penultimate feature layer, if any.

        Returns
        -------
        str or None
            The model's ``feature_layer`` attribute.
        """
        return getattr(self.inner, "feature_layer", None)

    @property
    def preprocess(self) -> list[nn.Module]:
        """The pixel-space → model-space maps in order (resize, normalise); each one monotone.

        Returns
        -------
        list of nn.Module
            The :class:`Resize` and :class:`Normalize` in use (possibly none).
        """
        return [m for m in (self.resize, self.normalize) if m is not None]

    def with_inner(self, inner: nn.Module) -> ModelAdapter:
        """The same adapter around another module (e.g. an inference copy of the wrapped model).

        Parameters
        ----------
        inner : nn.Module
            The module to wrap instead; the preprocessing modules are shared, not copied.

        Returns
        -------
        ModelAdapter
            A new adapter whose mode follows ``inner``'s.
        """
        new = ModelAdapter.__new__(ModelAdapter)
        nn.Module.__init__(new)
        new.inner, new._fn = inner, None
        new.resize, new.normalize = self.resize, self.normalize
        new.input_shape, new.hooks_error = self.input_shape, self.hooks_error
        new.training = bool(inner.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = self.resize(x)
        if self.normalize is not None:
            x = self.normalize(x)
        out = self._fn(x) if self._fn is not None else self.inner(x)
        return logits_of(out)

    def extra_repr(self) -> str:
        return "callable" if self._fn is not None else ""


def as_model(model, **kwargs) -> ModelAdapter:
    """The :class:`ModelAdapter` of ``model`` (returned as is if it already is one).

    A :class:`workbench.models.LoadedModel` (what :func:`workbench.models.load_model` returns) gives
    its adapter, so every library function takes a loaded model folder as it is. ``kwargs`` (``mean``, ``std``, ``size``, ``module``, ``input_shape``) configure a new adapter;
    they cannot be given together with an adapter. TorchScript models are adapted with hooks marked
    unsupported.

    Parameters
    ----------
    model : nn.Module, callable, ModelAdapter or LoadedModel
        The user's classifier (see :class:`ModelAdapter`).
    **kwargs
        Keyword arguments of :class:`ModelAdapter` for a new adapter.

    Returns
    -------
    ModelAdapter
        ``model`` itself if it is already an adapter, else a new adapter around it.

    Raises
    ------
    BadInput
        If ``model`` is not callable, or ``kwargs`` are given with an adapter.

    Examples
    --------
    >>> from torch import nn
    >>> m = as_model(nn.Linear(2, 2))
    >>> as_model(m) is m
    True
    """
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), ModelAdapter) \
            and hasattr(model, "card"):  # a LoadedModel (not imported here: models imports this module)
        model = model.model
    if isinstance(model, ModelAdapter):
        require(not kwargs, f"{', '.join(kwargs)} cannot be set on a model that is already adapted")
        return model
    if isinstance(model, torch.jit.ScriptModule) and "hooks_error" not in kwargs:
        kwargs["hooks_error"] = TORCHSCRIPT_HOOKS
    if not callable(model):
        raise BadInput(f"a model must be an nn.Module or a callable returning logits, got {type(model).__name__}")
    return ModelAdapter(model, **kwargs)


TORCHSCRIPT_HOOKS = ("TorchScript models cannot run layer hooks, which this needs: use a workbench model folder, "
                     "a transformers folder (save_pretrained), or your architecture's factory "
                     "(file.py:factory) with its weights (.safetensors or a state dict)")


def unwrap(model) -> nn.Module | Callable:
    """The user's own model inside an adapter (for saving weights); the model itself otherwise.

    Parameters
    ----------
    model : ModelAdapter, nn.Module or callable
        A model, adapted or not.

    Returns
    -------
    nn.Module or callable
        The wrapped module (or callable, for an adapter around a callable); ``model`` if it is not
        an adapter.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Linear(2, 2)
    >>> unwrap(as_model(net)) is net
    True
    """
    if isinstance(model, ModelAdapter):
        return model.inner if model._fn is None else model._fn
    return model


def model_device(model) -> torch.device:
    """The device of the model's first parameter (CPU for parameterless callables).

    Falls back to the first buffer's device when there are no parameters.

    Parameters
    ----------
    model : ModelAdapter, nn.Module or callable
        A model, adapted or not.

    Returns
    -------
    torch.device
        Where the model's weights live; ``cpu`` when it has none.

    Examples
    --------
    >>> from torch import nn
    >>> model_device(nn.Linear(2, 2))
    device(type='cpu')
    """
    root = model.inner if isinstance(model, ModelAdapter) else model
    if isinstance(root, nn.Module):
        p = next(root.parameters(), None)
        if p is not None:
            return p.device
        b = next(root.buffers(), None)
        if b is not None:
            return b.device
    return torch.device("cpu")


def num_classes_of(model, input_shape: tuple[int, ...]) -> int:
    """The number of logits ``model`` gives for one input of ``input_shape`` (one probe forward).

    The probe runs in eval mode without gradients on a zero image; the modules' train/eval flags are
    restored afterwards.

    Parameters
    ----------
    model : nn.Module, callable or ModelAdapter
        The classifier.
    input_shape : tuple of int
        ``(C, H, W)`` of one image.

    Returns
    -------
    int
        K, the number of classes (width of the logits).

    Raises
    ------
    BadInput
        If the model cannot take images of that shape, or returns no N×K logits.

    Examples
    --------
    >>> from torch import nn
    >>> num_classes_of(nn.Sequential(nn.Flatten(), nn.Linear(12, 7)), (3, 2, 2))
    7
    """
    m = as_model(model)
    try:
        with model_mode(m), torch.no_grad():
            return int(m(torch.zeros(1, *input_shape, device=model_device(m))).shape[1])
    except BadInput:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"the model cannot take images of shape {tuple(input_shape)}: {first}") from None
