"""Data check: exact and near duplicates (and duplicates shared with the test set), outliers, class
imbalance, constant images.

Exact duplicates compare the images' 8-bit pixels; near duplicates and outliers are cleanlab
Datalab's rules on the shared feature pass (:func:`workbench.labels.embedding_issues`) when a model
is given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..report import Metrics, Table
from .base import Check, Condition, Param, register


def image_hashes(images: torch.Tensor) -> list[str]:
    """A hash of each image's 8-bit pixels (what a saved PNG would hold).

    Pixels are clamped to [0, 1] and rounded to 8 bits first, so images that differ by less than half
    a grey level hash the same.

    Parameters
    ----------
    images : torch.Tensor
        N×C×H×W images in [0, 1] (on the CPU).

    Returns
    -------
    list of str
        N hexadecimal BLAKE2b digests (12 bytes, 24 characters).

    Examples
    --------
    >>> h = image_hashes(torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.001), torch.ones(1, 4, 4)]))
    >>> h[0] == h[1], h[0] == h[2], len(h[0])
    (True, False, 24)
    """
    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [hashlib.blake2b(x.tobytes(), digest_size=12).hexdigest() for x in u8]


@dataclass
class DataResult:
    """What the data check found in the training data.

    Parameters
    ----------
    n : int
        Training samples.
    class_counts : list of int
        Samples per class.
    class_names : list of str
        The class names.
    imbalance : float
        Smallest class count over the largest, in [0, 1].
    exact_duplicates : numpy.ndarray
        Indices whose 8-bit image repeats an earlier one (:func:`image_hashes`).
    constant : numpy.ndarray
        Indices of images holding a single pixel value.
    test_overlap : numpy.ndarray
        Training indices whose image is also in the test set (empty without one).
    near_duplicates : numpy.ndarray or None
        Indices in a near-duplicate set in feature space (cleanlab Datalab's rule); None without a model.
    outliers : numpy.ndarray or None
        Indices of outliers in feature space; None without a model.
    n_test : int, default 0
        Size of the test set (0 without one).
    test_in_train : int, default 0
        Test images whose 8-bit image is also a training image (the overlap condition's numerator).

    Returns
    -------
    A DataResult (dataclass)
        Returned by :meth:`DataCheck.run`.
    """

    n: int
    class_counts: list[int]
    class_names: list[str]
    imbalance: float  # smallest class count / largest
    exact_duplicates: np.ndarray  # indices that repeat an earlier image
    constant: np.ndarray  # indices of images with a single pixel value
    test_overlap: np.ndarray  # training indices whose image is also in the test set
    near_duplicates: np.ndarray | None  # indices in a near-duplicate set (features), None without a model
    outliers: np.ndarray | None
    n_test: int = 0
    test_in_train: int = 0

    @property
    def duplicate_share(self) -> float:
        """Share of the training samples that repeat an earlier image.

        Parameters: none

        Returns
        -------
        float
            ``len(exact_duplicates) / n``, in [0, 1) (0 for an empty set).
        """
        return len(self.exact_duplicates) / max(self.n, 1)


@register
class DataCheck(Check):
    """Duplicates, train/test overlap, outliers, class imbalance and constant images (check ``data``).

    Needs the training data; near duplicates and outliers also need a model. Conditions warn when
    exact duplicates exceed ``duplicate_warn_above`` (0.01), near duplicates
    ``near_duplicate_warn_above`` (0.05), outliers ``outlier_warn_above`` (0.05), when any image is
    constant, or when the smallest/largest class count is below ``imbalance_warn_below`` (0.2);
    ``train/test overlap`` fails when the share of the test set whose image is also a training image
    exceeds ``test_overlap_fail_above`` (0).
    Contributes ``exact_duplicate`` and ``outlier`` to the suspects.

    Parameters: none

    Returns
    -------
    A DataCheck
        Registered in :data:`workbench.audit.base.CHECKS` as ``"data"``.
    """

    name = "data"
    title = "Data quality"
    needs = ("train",)
    params = {"duplicate_warn_above": Param(0.01, "warn when exact duplicates exceed this share", 0.0, 1.0),
              "near_duplicate_warn_above": Param(0.05, "warn when near duplicates exceed this share", 0.0, 1.0),
              "outlier_warn_above": Param(0.05, "warn when outliers exceed this share", 0.0, 1.0),
              "imbalance_warn_below": Param(0.2, "warn when smallest/largest class count is below this", 0.0, 1.0),
              "test_overlap_fail_above": Param(0.0, "fail when this share of the test set is also in training",
                                               0.0, 1.0)}

    def run(self, ctx, p, progress):
        from ..labels import embedding_issues

        ds = ctx.train
        hashes = image_hashes(ds.images)
        seen: dict[str, int] = {}
        dup = []
        for i, h in enumerate(hashes):
            if h in seen:
                dup.append(i)
            else:
                seen[h] = i
        flat = ds.images.flatten(1)
        constant = torch.nonzero(flat.amax(1) - flat.amin(1) <= 1e-6).flatten().numpy()
        overlap = np.array([], dtype=int)
        n_test = test_in_train = 0
        if ctx.test is not None:
            test_hashes = image_hashes(ctx.test.images)
            test_h, train_h = set(test_hashes), set(hashes)
            overlap = np.array([i for i, h in enumerate(hashes) if h in test_h], dtype=int)
            n_test, test_in_train = len(test_hashes), sum(h in train_h for h in test_hashes)
        near = out = None
        if ctx.model is not None:
            progress(0.5, "near duplicates and outliers on the features")
            issues = embedding_issues(ctx.features())
            near, out = np.flatnonzero(issues.is_near_duplicate), np.flatnonzero(issues.is_outlier)
        counts = ds.class_counts()
        return DataResult(len(ds), counts, list(ds.class_names), min(counts) / max(max(counts), 1),
                          np.asarray(dup, dtype=int), constant, overlap, near, out, n_test, test_in_train)

    def conditions(self, r, p):
        out = []

        def share(k, n):
            return f"{k} of {n} ({k / max(n, 1):.1%})"
        d = len(r.exact_duplicates)
        out.append(Condition("exact duplicates", "warn" if r.duplicate_share > p["duplicate_warn_above"] else "pass",
                             f"{share(d, r.n)} images repeat an earlier image."))
        out.append(Condition("constant images", "warn" if len(r.constant) else "pass",
                             f"{len(r.constant)} images hold a single pixel value."))
        worst = int(np.argmin(r.class_counts))
        out.append(Condition("class balance", "warn" if r.imbalance < p["imbalance_warn_below"] else "pass",
                             f"smallest class {r.class_names[worst]} has {r.imbalance:.0%} of the largest's samples."))
        ov = r.test_in_train
        out.append(Condition("train/test overlap",
                             "fail" if ov / max(r.n_test, 1) > p["test_overlap_fail_above"] else "pass",
                             f"{share(ov, r.n_test)} test images also appear in the training set."))
        if r.near_duplicates is not None:
            k = len(r.near_duplicates)
            out.append(Condition("near duplicates", "warn" if k / r.n > p["near_duplicate_warn_above"] else "pass",
                                 f"{share(k, r.n)} images have a near duplicate in feature space."))
            k = len(r.outliers)
            out.append(Condition("outliers", "warn" if k / r.n > p["outlier_warn_above"] else "pass",
                                 f"{share(k, r.n)} images are outliers in feature space."))
        return out

    def key_figure(self, r):
        return f"{len(r.exact_duplicates)} dup, imbalance {r.imbalance:.2f}"

    def sections(self, r):
        vals = {"samples": r.n, "exact duplicates": len(r.exact_duplicates), "constant images": len(r.constant),
                "smallest/largest class": round(r.imbalance, 3), "train/test overlap": len(r.test_overlap)}
        if r.near_duplicates is not None:
            vals.update({"near duplicates": len(r.near_duplicates), "outliers": len(r.outliers)})
        return [Metrics("Data", vals),
                Table("Class counts", ["class", "count"], [[n, c] for n, c in zip(r.class_names, r.class_counts,
                                                                                 strict=True)])]

    def suspects(self, r):
        dup = np.zeros(r.n, dtype=bool)
        dup[r.exact_duplicates] = True
        cols = {"exact_duplicate": dup}
        if r.outliers is not None:
            o = np.zeros(r.n, dtype=bool)
            o[r.outliers] = True
            cols["outlier"] = o
        return cols
