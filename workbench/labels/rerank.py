"""PLE Sec. 5: re-ranking models on the corrected test labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import ImageDataset
from ..errors import require
from ..training import predict_proba
from .review import Correction
from .validation import validate_labels


@dataclass
class Reranking:
    """PLE Sec. 5: accuracy and rank of each model on the original vs the corrected test labels.

    Parameters
    ----------
    models : list of str
        Model names.
    accuracy_original : list of float
        Accuracy of each model on the original test labels, in [0, 1].
    accuracy_corrected : list of float
        Accuracy on the corrected labels (ambiguous examples dropped).
    accuracy_on_changed : list of float
        Accuracy on the corrected examples only, against their corrected labels.
    rank_original : list of int
        Rank of each model by original accuracy (1 = best).
    rank_corrected : list of int
        Rank by corrected accuracy.
    n_original : int
        Number of original test examples.
    n_corrected : int
        Number of examples kept after correction.
    n_changed : int
        Number of labels the review changed.

    Returns
    -------
    A Reranking (a dataclass) holding these fields.
    """

    models: list[str]
    accuracy_original: list[float]
    accuracy_corrected: list[float]
    accuracy_on_changed: list[float]  # on the corrected examples only, against their corrected labels
    rank_original: list[int]
    rank_corrected: list[int]
    n_original: int
    n_corrected: int
    n_changed: int

    @property
    def ranking_changed(self) -> bool:
        return self.rank_original != self.rank_corrected

    def rows(self) -> list[list]:
        return [[m, round(100 * a, 2), r, round(100 * b, 2), s, round(100 * c, 2) if not np.isnan(c) else "n/a"]
                for m, a, r, b, s, c in zip(self.models, self.accuracy_original, self.rank_original,
                                            self.accuracy_corrected, self.rank_corrected, self.accuracy_on_changed, strict=False)]

    def report_sections(self):
        from ..report import Table

        return [Table("Model ranking on original vs corrected test labels",
                      ["model", "acc. original %", "rank", "acc. corrected %", "rank", "acc. on corrected examples %"],
                      self.rows(), note=f"{self.n_original} original test examples, {self.n_corrected} after "
                                        f"dropping ambiguous ones, {self.n_changed} labels corrected.")]


def _ranks(acc: Sequence[float]) -> list[int]:
    order = sorted(range(len(acc)), key=lambda i: (-acc[i], i))
    ranks = [0] * len(acc)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks


def rerank_models(models: Mapping[str, nn.Module] | Mapping[str, np.ndarray], test: ImageDataset,
                  correction: Correction, *, device: str | torch.device | None = None) -> Reranking:
    """Rank models on the original and on the corrected test labels (Northcutt, Athalye, Mueller,
    "Pervasive Label Errors in Test Sets Destabilize Machine Learning Benchmarks", NeurIPS 2021, Sec. 5).

    Accuracy of each model (a module, or its N×K probabilities / N predictions on ``test``) on the
    original labels of ``test`` and on the corrected labels (ambiguous examples dropped).

    Parameters
    ----------
    models : mapping of str to nn.Module or numpy.ndarray
        Name → a trained model, or its probabilities ``(N, K)`` or predictions ``(N,)`` on ``test``.
    test : ImageDataset
        The test set, with its original labels.
    correction : Correction
        The reviewed labels of ``test`` (:func:`~workbench.labels.review.apply_review`).
    device : str or torch.device, optional
        Where modules run.

    Returns
    -------
    Reranking
        Accuracies and ranks of every model on both label sets.

    Raises
    ------
    BadInput
        When no model is given, the correction does not cover ``test``, or a model's predictions
        do not match its length.
    """
    require(len(models) >= 1, "give at least one model to rank")
    y = validate_labels(test.labels, test.num_classes)
    require(len(correction.labels) == len(y), f"the correction covers {len(correction.labels)} examples, "
                                              f"the test set has {len(y)}")
    names, a0, a1, a2 = [], [], [], []
    changed = correction.changed[correction.keep[correction.changed]]
    for name, m in models.items():
        if isinstance(m, nn.Module):
            pred = predict_proba(m, test.images, device=device).argmax(1).numpy()
        else:
            arr = np.asarray(m)
            pred = arr.argmax(1) if arr.ndim == 2 else arr.astype(np.int64)
            require(len(pred) == len(y), f"model {name!r}: {len(pred)} predictions for {len(y)} test examples")
        names.append(str(name))
        a0.append(float((pred == y).mean()))
        a1.append(float((pred[correction.keep] == correction.labels[correction.keep]).mean()))
        a2.append(float((pred[changed] == correction.labels[changed]).mean()) if len(changed) else float("nan"))
    return Reranking(names, a0, a1, a2, _ranks(a0), _ranks(a1), len(y), int(correction.keep.sum()), len(changed))
