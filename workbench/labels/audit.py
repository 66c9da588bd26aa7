"""The audit: out-of-sample probabilities → confident learning → a :class:`LabelAudit`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import ImageDataset
from ..errors import require
from ..training import Progress
from .batched import BATCH_SIZE, BATCHED_ABOVE, BATCHED_FILTERS, assess_batched, open_labels, open_pred_probs
from .issues import FILTER_BY, RANK_BY, assess
from .outliers import EmbeddingIssues, embedding_issues
from .pred_probs import (
    DEFAULT_CALIBRATE,
    DEFAULT_FOLDS,
    DEFAULT_SEEDS,
    DEFAULT_TTA,
    ModelFactory,
    OutOfSample,
    cross_val_pred_probs,
    embedding_pred_probs,
    model_features,
)
from .validation import validate_labels, validate_pred_probs

#: How many examples to keep images of for the report gallery.
GALLERY = 24


@dataclass
class LabelAudit:
    """Everything the label audit found. Arrays are indexed like the dataset.

    Made by :func:`audit_labels`; ``flagged_rows()``, ``review_template()`` (a CSV for reviewers)
    and ``report_sections()`` (for :func:`workbench.report.write_report`) present it.

    Parameters
    ----------
    dataset : str
        Name of the audited data.
    class_names : list of str
        K class names.
    n : int
        N, the number of examples.
    labels : numpy.ndarray
        Given labels, shape ``(N,)``.
    pred_probs : numpy.ndarray
        Out-of-sample probabilities, shape ``(N, K)``.
    pred_probs_method : str
        How they were made (see :class:`~workbench.labels.pred_probs.OutOfSample`).
    folds : int
        Cross-validation folds (0 when the probabilities were given).
    out_of_sample_accuracy : float
        Argmax accuracy against the given labels, in [0, 1].
    filter_by, rank_by : str
        The cleanlab filter and label quality score used.
    flagged : numpy.ndarray
        Indices of flagged examples, most likely errors first.
    suggested : numpy.ndarray
        Argmax of ``pred_probs``, shape ``(N,)``.
    scores : numpy.ndarray
        Label quality score, shape ``(N,)``, lower = more likely mislabelled.
    ranked : numpy.ndarray
        All N indices, ascending score.
    num_flagged : int
        ``len(flagged)``.
    estimated_errors : int
        Estimated number of label errors.
    estimate_method : str
        How ``estimated_errors`` was computed.
    estimated_error_rate : float
        ``estimated_errors / N``.
    flagged_vs_estimate : str
        Why the flagged count differs from the estimate, in words.
    health_score : float
        cleanlab's overall label health (trace of the joint), in [0, 1].
    per_class, overlapping : list of dict
        Per-class health and the most overlapping class pairs.
    confident_joint : numpy.ndarray
        K×K calibrated confident joint.
    joint : numpy.ndarray
        K×K estimate of P(given=i, true=j).
    noise_matrix : numpy.ndarray
        K×K estimate of P(given=i | true=j).
    embedding : EmbeddingIssues, optional
        Outliers and near-duplicates, when asked for.
    seconds_pred_probs, seconds_cleanlab, seconds_total : float, default 0.0
        Time taken by each stage.
    fold_accuracies : list of float, default []
        Held-out accuracy of each fold.
    pred_probs_detail : str, default ""
        How the probabilities were made, in words.
    batched : bool, default False
        True when the label check ran batched over (memory-mapped) arrays.

    Returns
    -------
    A LabelAudit (a dataclass) holding these fields.
    """

    dataset: str
    class_names: list[str]
    n: int
    labels: np.ndarray  # given labels
    pred_probs: np.ndarray  # out-of-sample N×K
    pred_probs_method: str
    folds: int
    out_of_sample_accuracy: float
    filter_by: str
    rank_by: str
    # per flagged example, ranked by score (most likely error first)
    flagged: np.ndarray
    suggested: np.ndarray  # argmax of pred_probs, for all N
    scores: np.ndarray  # label quality score, all N
    ranked: np.ndarray  # all N indices, ascending score
    # health
    num_flagged: int
    estimated_errors: int
    estimate_method: str
    estimated_error_rate: float
    flagged_vs_estimate: str
    health_score: float
    per_class: list[dict]
    overlapping: list[dict]
    confident_joint: np.ndarray
    joint: np.ndarray  # P(given=i, true=j)
    noise_matrix: np.ndarray  # P(given=i | true=j)
    embedding: EmbeddingIssues | None = None
    seconds_pred_probs: float = 0.0
    seconds_cleanlab: float = 0.0
    seconds_total: float = 0.0
    fold_accuracies: list[float] = field(default_factory=list)
    pred_probs_detail: str = ""  # how the probabilities were made, in words
    batched: bool = False  # True when the label check ran batched over (memory-mapped) arrays
    _gallery_images: Any = field(default=None, repr=False)  # images of the top GALLERY ranked examples

    @property
    def flagged_rate(self) -> float:
        return self.num_flagged / self.n

    def flagged_rows(self, limit: int | None = None) -> list[dict]:
        """Index, given label, suggested label, p(given), p(suggested), score per flagged example."""
        idx = self.flagged if limit is None else self.flagged[:limit]
        pg = self.pred_probs[idx, self.labels[idx]]
        ps = self.pred_probs[idx, self.suggested[idx]]
        return [{"index": int(i), "given": int(self.labels[i]), "suggested": int(self.suggested[i]),
                 "p_given": float(a), "p_suggested": float(b), "score": float(self.scores[i])}
                for i, a, b in zip(idx, pg, ps, strict=False)]

    def review_template(self) -> str:
        """CSV for reviewers: one row per flagged example, the verdict column left empty."""
        from .review import csv_text

        return csv_text(["index", "given", "suggested", "given_name", "suggested_name", "score", "verdict"],
                        ([r["index"], r["given"], r["suggested"], self.class_names[r["given"]],
                          self.class_names[r["suggested"]], f"{r['score']:.5f}", ""] for r in self.flagged_rows()))

    def report_sections(self):
        from ..report import Heatmap, ImageGrid, Metrics, Table, Text

        names = self.class_names
        secs = [
            Metrics("Dataset health", {
                "dataset": self.dataset, "examples": self.n,
                "probabilities": self.pred_probs_detail or self.pred_probs_method,
                "out-of-sample accuracy": f"{100 * self.out_of_sample_accuracy:.2f}%",
                f"estimated label errors ({self.estimate_method})":
                    f"{self.estimated_errors} ({100 * self.estimated_error_rate:.2f}%)",
                f"flagged ({self.filter_by})": f"{self.num_flagged} ({100 * self.flagged_rate:.2f}%)",
                "overall label health score": round(self.health_score, 4),
                "ranked by": self.rank_by,
                "time: probabilities / cleanlab / total (s)":
                    f"{self.seconds_pred_probs:.1f} / {self.seconds_cleanlab:.2f} / {self.seconds_total:.1f}"}),
            Text("Why the flagged count differs from the estimate", self.flagged_vs_estimate),
        ]
        if self._gallery_images is not None and len(self.flagged):
            k = min(len(self._gallery_images), len(self.flagged))
            rows = self.flagged_rows(k)
            secs.append(ImageGrid(f"Top {k} flagged examples (given → suggested)", self._gallery_images[:k],
                                  [f"#{r['index']}: {names[r['given']]} → {names[r['suggested']]} "
                                   f"({r['p_suggested']:.2f})" for r in rows], columns=8, scale=3))
        secs.append(Table("Flagged examples (most likely errors first)",
                          ["index", "given", "suggested", "p(given)", "p(suggested)", "score"],
                          [[r["index"], names[r["given"]], names[r["suggested"]], round(r["p_given"], 4),
                            round(r["p_suggested"], 4), round(r["score"], 5)] for r in self.flagged_rows(200)],
                          note=f"{self.num_flagged} flagged; the first 200 shown. The full ranking of all "
                               f"{self.n} examples is in report.json (ranked, scores)."))
        cols = ["class", "examples", "flagged", "% flagged", "label issues", "inverse label issues",
                "label noise", "inverse label noise", "label quality"]
        secs.append(Table("Per-class health (cleanlab.dataset.rank_classes_by_label_quality)", cols,
                          [[r[c] for c in cols] for r in self.per_class],
                          note="label issues: estimated examples given this class whose true class differs; "
                               "label noise: that count over the class size; label quality = 1 − label noise."))
        secs.append(Heatmap("Estimated joint P(given, true) × N", np.round(self.joint * self.n).astype(int),
                            names, names, xlabel="true label (estimated)", ylabel="given label"))
        secs.append(Heatmap("Estimated noise matrix P(given | true)", np.round(self.noise_matrix, 3), names, names,
                            xlabel="true label (estimated)", ylabel="given label"))
        if self.overlapping:
            secs.append(Table("Most overlapping class pairs (cleanlab.dataset.find_overlapping_classes)",
                              ["class A", "class B", "overlapping examples", "joint probability"],
                              [[r["class_a"], r["class_b"], r["num_overlapping"], round(r["joint_probability"], 5)]
                               for r in self.overlapping]))
        if self.embedding is not None:
            e = self.embedding
            out_idx = np.argsort(e.outlier_scores)[:10]
            secs.append(Metrics("Outliers and near-duplicates (embeddings)", {
                "metric / k": f"{e.metric} / {e.k}", "outliers": e.num_outliers,
                "examples in near-duplicate sets": e.num_near_duplicates,
                "most outlying": ", ".join(str(int(i)) for i in out_idx)}))
        return secs


def _explain(filter_by: str, num_flagged: int, estimated: int, n_reduced: int) -> str:
    how = {
        "prune_by_noise_rate": "prune_by_noise_rate removes, for every off-diagonal cell (given i, true j) of the "
                               "calibrated confident joint, that many examples of given label i with the largest "
                               "margin p_j − p_i",
        "prune_by_class": "prune_by_class removes, per given class, as many examples as its off-diagonal row "
                          "count, those with the lowest p(given)",
        "both": "both keeps only examples removed by prune_by_class and by prune_by_noise_rate",
        "confident_learning": "confident_learning flags the uncalibrated off-diagonal examples of the confident joint",
        "predicted_neq_given": "predicted_neq_given flags every example whose argmax is not its given label, "
                               "confident or not",
        "low_normalized_margin": "low_normalized_margin flags the uncalibrated off-diagonal count of lowest "
                                 "normalized-margin examples",
        "low_self_confidence": "low_self_confidence flags the uncalibrated off-diagonal count of lowest "
                               "self-confidence examples",
        "paper": "the paper's setting flags (1 − trace C / ΣC)·N examples (the Confident Learning paper's count "
                 "on the uncalibrated confident joint C) with the lowest margin p_given − max_other",
    }[filter_by]
    rel = "fewer than" if num_flagged < estimated else ("more than" if num_flagged > estimated else "as many as")
    tail = ("; cleanlab then drops flags whose model prediction equals the given label"
            if filter_by not in ("low_normalized_margin", "low_self_confidence", "paper") else "")
    return (f"{num_flagged} flagged is {rel} the {estimated} estimated: the estimate is N·(1 − trace) of the "
            f"calibrated joint (a rate, rows rescaled to the given-label counts), while {how}{tail}. "
            f"{n_reduced} examples have an out-of-sample argmax different from their given label.")


def _labels_array(labels: Any) -> np.ndarray:
    """Labels as given (an array, tensor, list or a path to a ``.npy``), before range checks."""
    if isinstance(labels, (str, Path)):
        return open_labels(labels)
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    return np.asarray(labels)


def audit_labels(data: ImageDataset | Any, pred_probs: Any = None, *, class_names: Sequence[str] | None = None,
                 model: str | ModelFactory | nn.Module = "cnn", method: str = "kfold", folds: int = DEFAULT_FOLDS,
                 epochs: int | None = None, seeds: int = DEFAULT_SEEDS, tta: bool = DEFAULT_TTA,
                 calibrate: bool = DEFAULT_CALIBRATE, filter_by: str | None = None,
                 rank_by: str = "self_confidence", embeddings: bool | np.ndarray | nn.Module = False,
                 embedding_layer: str | None = None, n_jobs: int | None = None, batched: bool | None = None,
                 batch_size: int = BATCH_SIZE, seed: int = 0, device: str | torch.device | None = "cpu",
                 ray_address: str | None = None, threads: int | None = None, num_gpus: float = 0,
                 progress: Progress | None = None) -> LabelAudit:
    """Audit labels: ``audit_labels(dataset)`` or, as cleanlab takes them, ``audit_labels(labels, pred_probs)``.

    ``data`` is an :class:`ImageDataset`, or the labels alone (any integer array, tensor or list,
    or a path to a ``.npy``), which then needs ``pred_probs``; ``class_names`` name the classes of
    bare labels (default ``"0"``, ``"1"``, …).

    Probabilities: ``pred_probs`` (an N×K array, an :class:`OutOfSample`, or a path to a ``.npy``)
    when given; else, for a dataset, ``method="kfold"`` (train ``model`` — a zoo name or factory —
    ``seeds`` times per fold, see :func:`cross_val_pred_probs`) or ``method="embeddings"``
    (``model`` must be a trained ``nn.Module``; cross-validated logistic regression on its
    penultimate features). ``embeddings`` adds Datalab-style outlier and near-duplicate detection:
    ``True`` (the features of the embeddings method, or of ``model`` if it is a trained module), an
    N×D array, or a trained module to embed with.

    ``filter_by`` defaults to ``prune_by_noise_rate``. ``batched`` (default: when N·K exceeds
    :data:`~workbench.labels.batched.BATCHED_ABOVE`) runs the label check with cleanlab's
    ``find_label_issues_batched`` over ``batch_size`` rows at a time, reading ``.npy`` files
    memory-mapped (:mod:`workbench.labels.batched`); it supports ``filter_by``
    ``low_self_confidence`` (then its default) and ``low_normalized_margin``. ``n_jobs`` goes to
    cleanlab (use 1 inside Streamlit).

    Parameters
    ----------
    data : ImageDataset or array-like or str or pathlib.Path
        The dataset, or the labels alone (shape ``(N,)``, integers in ``0..K-1``, or a ``.npy`` path).
    pred_probs : array-like or OutOfSample or str or pathlib.Path, optional
        Out-of-sample probabilities, shape ``(N, K)``; required for bare labels.
    class_names : sequence of str, optional
        K class names of bare labels (must match a dataset's own).
    model : str or callable or nn.Module, default "cnn"
        Zoo name or factory (``kfold``), or a trained module (``embeddings``).
    method : {"kfold", "embeddings"}, default "kfold"
        How to make the probabilities when none are given.
    folds : int, default DEFAULT_FOLDS
        Cross-validation folds.
    epochs : int, optional
        Epochs per model (``kfold``; default by data size).
    seeds : int, default DEFAULT_SEEDS
        Models per fold (``kfold``).
    tta : bool, default DEFAULT_TTA
        Test-time shifted views (``kfold``).
    calibrate : bool, default DEFAULT_CALIBRATE
        Cross-fitted temperature scaling (``kfold``).
    filter_by : str, optional
        One of :data:`~workbench.labels.issues.FILTER_BY` (default ``prune_by_noise_rate``, or
        ``low_self_confidence`` when batched).
    rank_by : str, default "self_confidence"
        One of :data:`~workbench.labels.issues.RANK_BY`.
    embeddings : bool or numpy.ndarray or nn.Module, default False
        Outlier and near-duplicate detection: ``True``, N×D features, or a module to embed with.
    embedding_layer : str, optional
        Layer to embed with (default: the penultimate one).
    n_jobs : int, optional
        Processes cleanlab may use.
    batched : bool, optional
        Force the batched label check on or off (default: when N·K > ``BATCHED_ABOVE``).
    batch_size : int, default BATCH_SIZE
        Rows per batch of the batched check.
    seed : int, default 0
        Seed of folds, models and noise-free choices.
    device : str or torch.device, optional, default "cpu"
        Where models run.
    ray_address : str, optional
        ``kfold``: None trains the folds here, one after the other; ``"local"``, ``"auto"`` or
        ``"HOST:PORT"`` trains each fold as a Ray task (:func:`cross_val_pred_probs`).
    threads : int, optional
        ``kfold``: torch threads per fold (and Ray CPUs per task).
    num_gpus : float, default 0
        ``kfold``: GPUs per Ray task.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    LabelAudit
        The flagged examples, every example's score and suggested label, the noise estimates and
        the per-class tables.

    Raises
    ------
    BadInput
        On an unknown ``method``, ``filter_by`` or ``rank_by``, bare labels without ``pred_probs``,
        mismatched class names or shapes, a single class, or options the chosen path cannot honour
        (e.g. embeddings with the batched check).
    """
    t_start = time.perf_counter()
    ds = data if isinstance(data, ImageDataset) else None
    require(method in ("kfold", "embeddings"), f"method must be kfold or embeddings, got {method!r}")
    require(rank_by in RANK_BY, f"unknown rank_by {rank_by!r}; choose one of {', '.join(RANK_BY)}")
    require(n_jobs is None or (isinstance(n_jobs, (int, np.integer)) and not isinstance(n_jobs, bool)
                               and n_jobs >= 1), f"n_jobs must be an integer >= 1 (or None for every core), got {n_jobs}")
    require(ray_address is None or (pred_probs is None and method == "kfold"),
            "a Ray address runs the K-fold trainings: it needs method 'kfold' and no pred_probs")
    require(filter_by is None or filter_by in FILTER_BY,
            f"unknown filter_by {filter_by!r}; choose one of {', '.join(FILTER_BY)}")
    if ds is not None:
        raw_labels, names, name = ds.labels, list(ds.class_names), ds.name
        require(class_names is None or list(class_names) == names,
                "class_names differ from the dataset's; leave them out for a dataset")
    else:
        require(pred_probs is not None, "auditing labels without images needs their out-of-sample probabilities: "
                                        "audit_labels(labels, pred_probs), as cleanlab takes them")
        raw_labels, names, name = _labels_array(data), None, "labels"
        if isinstance(data, (str, Path)):
            name = Path(data).name

    # Probabilities given as a file stay memory-mapped until the check reads them (batched or not).
    src = None
    if isinstance(pred_probs, (str, Path)):
        pp_in = open_pred_probs(pred_probs)
        src = f"file:{Path(pred_probs).name}"
    elif isinstance(pred_probs, OutOfSample):
        pp_in = pred_probs.pred_probs
    elif pred_probs is not None:
        pp_in = pred_probs.detach().cpu().numpy() if isinstance(pred_probs, torch.Tensor) else np.asarray(pred_probs)
    else:
        pp_in = None
    if names is None:
        require(pp_in.ndim == 2, f"pred_probs must be a 2-D array N×K, got shape {pp_in.shape}")
        k = int(pp_in.shape[1])
        names = [str(c) for c in class_names] if class_names is not None else [str(c) for c in range(k)]
        require(len(names) == k, f"{len(names)} class names for {k} columns of pred_probs")
    n = len(raw_labels)
    use_batched = batched if batched is not None else (pp_in is not None and n * len(names) > BATCHED_ABOVE)
    require(not use_batched or pp_in is not None,
            "the batched label check needs pred_probs (a .npy file or array); K-fold probabilities fit in memory")
    filter_by = filter_by or ("low_self_confidence" if use_batched else "prune_by_noise_rate")
    if use_batched:
        require(filter_by in BATCHED_FILTERS, f"the batched label check supports filter_by "
                                              f"{' or '.join(BATCHED_FILTERS)} (cleanlab's find_label_issues_batched), "
                                              f"not {filter_by!r}")
        require(embeddings is False or embeddings is None, "outliers and near-duplicates need the in-memory audit")
        if progress is not None:
            progress(0.0, "batched confident learning")
        res = assess_batched(raw_labels, pp_in, filter_by=filter_by, rank_by=rank_by, class_names=names,
                             batch_size=batch_size, n_jobs=n_jobs)
        labels, pp, a = res.labels, pp_in, res.assessment
        oos = OutOfSample(pp, src or "given", 0, res.accuracy)
    else:
        labels = validate_labels(raw_labels, len(names))
        require(len(np.unique(labels)) >= 2, "the labels hold a single class: nothing to audit")
        oos = _probabilities(ds, labels, names, pp_in, pred_probs, src, model=model, method=method, folds=folds,
                             epochs=epochs, seeds=seeds, tta=tta, calibrate=calibrate,
                             embedding_layer=embedding_layer, seed=seed, device=device, ray_address=ray_address,
                             threads=threads, num_gpus=num_gpus, progress=progress)
        pp = oos.pred_probs
        if progress is not None:
            progress(1.0, "confident learning")
        a = assess(labels, pp, filter_by=filter_by, rank_by=rank_by, class_names=names, n_jobs=n_jobs)

    emb = None
    if embeddings is not False and embeddings is not None:
        feats = None
        if isinstance(embeddings, (np.ndarray, torch.Tensor)):
            feats = embeddings
        elif isinstance(embeddings, nn.Module):
            require(ds is not None, "embedding with a model needs the images: audit a dataset, or pass N×D features")
            feats = model_features(embeddings, ds, embedding_layer)
        elif oos.features is not None:
            feats = oos.features
        elif isinstance(model, nn.Module) and ds is not None:
            feats = model_features(model, ds, embedding_layer)
        require(feats is not None, "outlier and near-duplicate detection needs embeddings: pass a trained model "
                                   "or an N×D feature array")
        require(len(feats) == n, f"embeddings have {len(feats)} rows for {n} examples")
        emb = embedding_issues(feats)

    n_neq = int((a.suggested != labels).sum())
    top = a.ranked[:GALLERY] if len(a.flagged) == 0 else a.flagged[:GALLERY]
    gallery = ds.images[torch.as_tensor(top)].clone() if ds is not None else None
    return LabelAudit(
        dataset=name, class_names=names, n=n, labels=labels, pred_probs=pp,
        pred_probs_method=oos.method, folds=oos.folds, out_of_sample_accuracy=oos.accuracy,
        filter_by=filter_by, rank_by=rank_by, flagged=a.flagged, suggested=a.suggested, scores=a.scores,
        ranked=a.ranked, num_flagged=int(len(a.flagged)), estimated_errors=a.estimated_errors,
        estimate_method="off_diagonal_calibrated", estimated_error_rate=a.estimated_error_rate,
        flagged_vs_estimate=_explain(filter_by, len(a.flagged), a.estimated_errors, n_neq),
        health_score=a.health_score, per_class=a.per_class, overlapping=a.overlapping,
        confident_joint=a.confident_joint, joint=a.joint, noise_matrix=a.noise_matrix, embedding=emb,
        seconds_pred_probs=oos.seconds, seconds_cleanlab=a.seconds, seconds_total=time.perf_counter() - t_start,
        fold_accuracies=list(oos.fold_accuracies), pred_probs_detail=oos.describe(), batched=a.batched,
        _gallery_images=gallery)


def _probabilities(ds: ImageDataset | None, labels: np.ndarray, names: list[str], pp_in: np.ndarray | None,
                   pred_probs: Any, src: str | None, *, model, method, folds, epochs, seeds, tta, calibrate,
                   embedding_layer, seed, device, ray_address, threads, num_gpus, progress) -> OutOfSample:
    """The audit's probabilities: validated given ones, or out-of-sample ones made from the dataset."""
    n, k = len(labels), len(names)
    if pp_in is not None:
        pp = validate_pred_probs(pp_in, n, k)
        if isinstance(pred_probs, OutOfSample):
            return pred_probs if pred_probs.pred_probs is pp else replace(pred_probs, pred_probs=pp)
        return OutOfSample(pp, src or "given", 0, float((pp.argmax(1) == labels).mean()))
    require(ds is not None, "without pred_probs the audit needs the images (an ImageDataset)")
    if method == "embeddings":
        require(isinstance(model, nn.Module), "method 'embeddings' needs a trained model (an nn.Module)")
        return embedding_pred_probs(ds, model, layer=embedding_layer, folds=folds, seed=seed, progress=progress)
    require(isinstance(model, str) or callable(model), "method 'kfold' needs a zoo architecture name or a model factory")
    return cross_val_pred_probs(ds, model, folds=folds, epochs=epochs, seeds=seeds, tta=tta, calibrate=calibrate,
                                seed=seed, device=device, ray_address=ray_address, threads=threads,
                                num_gpus=num_gpus, progress=progress)


@dataclass
class DetectionScore:
    """How well an audit's flags find known label errors.

    Parameters
    ----------
    precision : float
        Share of flagged examples whose label is wrong, in [0, 1].
    recall : float
        Share of wrong labels that are flagged, in [0, 1].
    auroc : float
        AUROC of (1 − label quality score) for "label was flipped" (NaN when all or no labels are wrong).
    num_flagged : int
        Number of flagged examples.
    num_errors : int
        Number of wrong labels.

    Returns
    -------
    A DetectionScore (a dataclass) holding these fields.
    """
    precision: float
    recall: float
    auroc: float  # of (1 − label quality score) for "label was flipped"
    num_flagged: int
    num_errors: int


def detection_score(audit: LabelAudit, true_labels: Any) -> DetectionScore:
    """Precision and recall of the flagged set, and the score's AUROC, against known true labels.

    Parameters
    ----------
    audit : LabelAudit
        An audit of labels with injected noise.
    true_labels : array-like
        The clean labels, shape ``(N,)``.

    Returns
    -------
    DetectionScore
        Precision, recall, AUROC and counts.

    Raises
    ------
    BadInput
        When ``true_labels`` are invalid or not N long.
    """
    from sklearn.metrics import roc_auc_score

    truth = validate_labels(true_labels, len(audit.class_names))
    require(len(truth) == audit.n, f"{len(truth)} true labels for {audit.n} examples")
    err = truth != audit.labels
    flag = np.zeros(audit.n, dtype=bool)
    flag[audit.flagged] = True
    tp = int((flag & err).sum())
    auroc = float(roc_auc_score(err, -audit.scores)) if 0 < err.sum() < audit.n else float("nan")
    return DetectionScore(tp / max(int(flag.sum()), 1), tp / max(int(err.sum()), 1), auroc, int(flag.sum()),
                          int(err.sum()))
