"""Third-party models and 3-channel data for the bring-your-own-model tests (no downloads).

transformers' ResNet, ConvNeXt and ViT image classifiers are built from small configs, a hand-written
``nn.Sequential`` comes from a factory in a ``.py`` file; each is trained for a few steps on digits
resized to 32×32 and tinted to three channels, then saved the way its users save it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SEQUENTIAL_PY = '''
from torch import nn


def make(num_classes=10, width=16):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def broken(num_classes=10):
    raise ValueError("no such width")


def not_a_module():
    return 42
'''


def tinted_digits(seed: int = 0):
    """scikit-learn's digits at 32×32, each tinted by a random colour: 1,797 × 3×32×32 in [0, 1]."""
    from workbench.data import ImageDataset, load_dataset

    ds = load_dataset("digits").resized(32)
    gen = torch.Generator().manual_seed(seed)
    tint = 0.5 + 0.5 * torch.rand(len(ds), 3, 1, 1, generator=gen)
    return ImageDataset((ds.images * tint).clamp(0, 1), ds.labels, list(ds.class_names), "tinted-digits")


def hf_models() -> dict[str, torch.nn.Module]:
    """Small transformers image classifiers for 3×32×32 inputs and 10 classes (seeded)."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    labels = {i: str(i) for i in range(10)}
    torch.manual_seed(0)
    return {
        "resnet": ResNetForImageClassification(ResNetConfig(
            num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10,
            id2label=labels, label2id={v: k for k, v in labels.items()})),
        "convnext": ConvNextForImageClassification(ConvNextConfig(
            num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, patch_size=2, image_size=32,
            num_labels=10, id2label=labels, label2id={v: k for k, v in labels.items()})),
        "vit": ViTForImageClassification(ViTConfig(
            image_size=32, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, num_labels=10, id2label=labels,
            label2id={v: k for k, v in labels.items()})),
    }


def build_zoo(root: Path, epochs: int = 2, n_train: int = 256) -> dict:
    """Train each third-party model briefly on tinted digits and save it natively under ``root``.

    Returns paths: ``data`` (an .npz), ``resnet``/``convnext``/``vit`` (transformers folders; the ViT
    one with a preprocessor_config.json normalising by 0.5/0.5), ``factory`` (``mynet.py:make``),
    ``weights`` (its safetensors), and the trained modules under ``modules``.
    """
    import json

    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging

    from workbench.adapter import as_model
    from workbench.training import fit

    hf_logging.disable_progress_bar()
    root.mkdir(parents=True, exist_ok=True)
    ds = tinted_digits()
    np.savez(root / "tinted.npz", images=(ds.images.numpy() * 255).round().astype(np.uint8),
             labels=ds.labels.numpy())
    out: dict = {"data": root / "tinted.npz", "dataset": ds, "modules": {}}
    train = ds.subset(torch.arange(0, len(ds), len(ds) // n_train)[:n_train])  # a few dozen steps
    for name, net in hf_models().items():
        adapter = as_model(net, mean=[0.5] * 3, std=[0.5] * 3) if name == "vit" else as_model(net)
        fit(adapter, train, epochs=epochs, batch_size=32, lr=3e-3, seed=0)
        net.eval()
        folder = root / name
        net.save_pretrained(folder)
        if name == "vit":
            (folder / "preprocessor_config.json").write_text(json.dumps(
                {"do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                 "do_resize": True, "size": {"height": 32, "width": 32}, "do_rescale": True}))
        out[name] = folder
        out["modules"][name] = adapter
    (root / "mynet.py").write_text(SEQUENTIAL_PY)
    namespace: dict = {}
    exec(SEQUENTIAL_PY, namespace)  # noqa: S102 - our own test source
    torch.manual_seed(0)
    seq = namespace["make"]()
    fit(seq, train, epochs=epochs, batch_size=32, lr=3e-3, seed=0)
    seq.eval()
    save_file({k: v.contiguous() for k, v in seq.state_dict().items()}, str(root / "mynet.safetensors"))
    out["factory"] = f"{root / 'mynet.py'}:make"
    out["weights"] = root / "mynet.safetensors"
    out["modules"]["sequential"] = seq
    return out
