"""Held-out cluster test: a cluster of a class's training samples that its clean held-out samples do not fill.

Dirty-label poison (BadNets, Blended) puts images of other classes, carrying a trigger, into the
target class; in the features the classifier head reads they form a cluster of their own. Natural
structure forms clusters too (two writing styles of a digit, a thick ring and a thin one), and that is
where a rule that judges a class's clusters by their size (activation clustering's relative-size
rule, Chen et al. 2019) or a class's spread against the other classes' (a spectral-signature outlier
rule) fails on data it was not tuned on: a clean class with two modes looks like a poisoned one, and a
poisoned class among heterogeneous classes looks ordinary. What tells them apart is a clean reference
sample of the same class. Clean held-out images of class c fill each natural cluster of c in about
the share the training images do; they do not fill a poison cluster at all. Chen et al. settle the
same question by retraining without a cluster ("exclusionary reclassification"); a held-out set
settles it without training.

The test, per class c (given labels), on the features of ``layer`` (default: the input of the
model's first fully connected layer, :data:`~defenses.detectors.HEAD_INPUT`, or the penultimate
layer when the model has none):

1. PCA of the training features of class c to ``n_components`` dimensions, then k-means for k = 2,
   3, 4 (``max_clusters``): nine candidate clusters, so that a small poison cluster is isolated even
   when the class's natural modes dominate its first split; each held-out sample of class c goes to
   the nearest centroid of each clustering.
2. For every candidate cluster with training share s, the one-sided exact binomial test of its
   held-out count h out of m, ``h ~ Binomial(m, s)``, gives p; the cluster with the smallest p is the
   class's tested cluster.
3. The class is *poison likely* when p < ``alpha / (9K)`` (Bonferroni over the nine clusters and K
   classes) and the model predicts at least ``min_learned`` of the cluster as c (the trigger was
   learned). A cluster the held-out set does not fill but that the model does *not* learn as c is
   reported as *unlearned*: label errors, or a poison that did not take.
4. The class is *inconclusive* when the test has no power there: with m held-out samples even a
   cluster none of them fall in is significant only when its share exceeds ``1 − bar^(1/m)``; when
   that exceeds ``min_share`` (0.1: what a 1% poison makes of a 10-class set's target class) a poison
   of the size asked for could be neither found nor ruled out. On digits' 20% split, 36 held-out
   images per class, that smallest share is 27%, so every class of digits is inconclusive below a
   ``min_share`` of 0.27; MNIST-10k's 200 per class reach 6%. A class with no held-out sample is
   inconclusive too.
5. In a poison-likely class, the suspected samples are then the training samples that a linear
   discriminant (LDA, in the same PCA space) fitted on the cluster against the class's held-out
   samples puts on the cluster's side: the k-means boundary sits between the two groups' centres,
   while the discriminant uses the clean side's own spread (on digits with a 2×2 patch it raised the
   recall of the suspected set from 0.58 to 1.00 at precision 1.00).

Validity: under no poison, the
training and held-out samples of a class are exchangeable (a random split of one set), the clusters
are fitted on the training samples alone, so h is binomial given them and the false-alarm rate of
the whole test is at most ``alpha`` (up to overfitting, which draws training samples toward the
class's centre and makes the test conservative). A curated test set whose labels are cleaner than
the training set's is not exchangeable with it: clusters of mislabelled training samples then test
as under-filled, which is why the model's own predictions separate *learned* clusters (poison) from
*unlearned* ones (label errors).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workbench.adapter import as_model
from workbench.data import ImageDataset, as_dataset
from workbench.errors import BadInput, check_in_range, require
from workbench.training import predict_logits

POISON, UNLEARNED, INCONCLUSIVE, CLEAN = "poison likely", "unlearned cluster", "inconclusive", "no evidence"


@dataclass
class ClusterTestResult:
    """Per class: the cluster tested, its shares in the training and held-out samples, p, and the verdict.

    Parameters
    ----------
    class_names : list of str
        The K class names.
    verdicts : list of str
        Per class: ``"poison likely"``, ``"unlearned cluster"``, ``"inconclusive"`` or ``"no evidence"``.
    reasons : list of str
        Per class: one sentence with the figures behind the verdict.
    p_values : numpy.ndarray
        Shape (K,): the one-sided binomial p of the tested cluster (1 where nothing was tested).
    train_share, heldout_share : numpy.ndarray
        Shape (K,): the tested cluster's share of the class's training and held-out samples.
    n_train, n_heldout : numpy.ndarray
        Shape (K,): training and held-out samples per class.
    learned : numpy.ndarray
        Shape (K,): share of the tested cluster the model predicts as the class.
    bar : float
        The per-test significance bar, ``alpha / (9K)`` (with ``max_clusters`` 4).
    cluster : numpy.ndarray
        Shape (N,), bool: the training sample is in its class's tested cluster.
    likely_poison : numpy.ndarray
        Shape (N,), bool: in the tested cluster of a "poison likely" class.
    in_flagged_class : numpy.ndarray
        Shape (N,), bool: labelled with a "poison likely" class.
    scores : numpy.ndarray
        Shape (N,): ``−log10 p`` of its class for members of the tested cluster (capped at 300), 0 otherwise.
    layer : str
        The feature layer read.
    seconds : float
        Wall time.
    params : dict, default {}
        ``alpha``, ``min_learned``, ``n_components``, ``seed``.

    Returns
    -------
    A ClusterTestResult (dataclass)
        Returned by :func:`cluster_test`; :attr:`flagged` lists the poison-likely classes.
    """

    class_names: list[str]
    verdicts: list[str]
    reasons: list[str]
    p_values: np.ndarray
    train_share: np.ndarray
    heldout_share: np.ndarray
    n_train: np.ndarray
    n_heldout: np.ndarray
    learned: np.ndarray
    bar: float
    cluster: np.ndarray
    likely_poison: np.ndarray
    in_flagged_class: np.ndarray
    scores: np.ndarray
    layer: str
    seconds: float
    params: dict = field(default_factory=dict)

    def classes(self, verdict: str) -> list[int]:
        """The classes with a given verdict.

        Parameters
        ----------
        verdict : str
            One of ``"poison likely"``, ``"unlearned cluster"``, ``"inconclusive"``, ``"no evidence"``.

        Returns
        -------
        list of int
            Class indices, ascending.
        """
        return [c for c, v in enumerate(self.verdicts) if v == verdict]

    @property
    def flagged(self) -> list[int]:
        """The classes judged "poison likely".

        Returns
        -------
        list of int
            Class indices, smallest p first.
        """
        return sorted(self.classes(POISON), key=lambda c: self.p_values[c])


def binomial_below(h: int, m: int, s: float) -> float:
    """One-sided exact binomial p: P(H ≤ h) for H ~ Binomial(m, s).

    Parameters
    ----------
    h : int
        Observed count, 0..m.
    m : int
        Trials (held-out samples of the class), ≥ 1.
    s : float
        Success probability (the cluster's training share), in [0, 1].

    Returns
    -------
    float
        The p-value, in [0, 1].

    Examples
    --------
    >>> round(binomial_below(0, 10, 0.5), 6)  # 0.5 ** 10
    0.000977
    """
    from scipy.stats import binom

    return float(binom.cdf(h, m, s))


def _clusterings(x: np.ndarray, h: np.ndarray, n_components: int, max_clusters: int, seed: int):
    """k-means of the training features x for k = 2..max_clusters (after PCA fitted on x), the held-out
    features h assigned to each. Returns [(train labels, held-out labels)] per k, and x and h in PCA
    coordinates."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    mu = x.mean(0)
    d = max(1, min(n_components, x.shape[1], len(x) - 1))
    pca = PCA(n_components=d, random_state=seed).fit(x - mu)
    z = pca.transform(x - mu)
    zh = pca.transform(h - mu) if len(h) else np.zeros((0, d))
    out = []
    for k in range(2, max_clusters + 1):
        if k > len(x):
            break
        km = KMeans(n_clusters=k, n_init=5, random_state=seed).fit(z)
        out.append((km.labels_, km.predict(zh) if len(h) else np.zeros(0, dtype=int)))
    return out, z, zh


def _refine(z: np.ndarray, zh: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Training samples on the cluster's side of an LDA fitted on the cluster against the held-out samples."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis().fit(np.vstack([z[members], zh]),
                                           np.r_[np.ones(int(members.sum())), np.zeros(len(zh))])
    return lda.predict(z) == 1


def feature_layer(model: nn.Module, input_shape=None) -> str:
    """The layer the test reads by default: the head input when the model has an ``nn.Linear``, else
    the penultimate layer.

    Parameters
    ----------
    model : nn.Module
        The model (adapted or not).
    input_shape : tuple, optional
        C×H×W, to find the penultimate layer of a model without a fully connected layer.

    Returns
    -------
    str
        :data:`~defenses.detectors.HEAD_INPUT` or :data:`~defenses.detectors.PENULTIMATE`.

    Examples
    --------
    >>> from workbench.models import architecture
    >>> feature_layer(architecture("cnn", 1, 10, 28))
    'head-input'
    """
    from defenses.detectors import HEAD_INPUT, PENULTIMATE, head_input_layer

    try:
        head_input_layer(model)
        return HEAD_INPUT
    except BadInput:
        return PENULTIMATE


def cluster_test(model: nn.Module, data: ImageDataset, heldout: ImageDataset, *, layer: str | None = None,
                 alpha: float = 1e-3, min_learned: float = 0.5, min_share: float = 0.1, n_components: int = 10,
                 max_clusters: int = 4, seed: int = 0,
                 features=None, heldout_features=None, predictions=None) -> ClusterTestResult:
    """The held-out cluster test of the module docstring, every class of ``data``.

    Parameters
    ----------
    model : nn.Module
        A model trained on ``data`` (anything :func:`workbench.adapter.as_model` takes).
    data : ImageDataset
        The suspected training set, labels as given.
    heldout : ImageDataset
        Clean samples of the same classes that the model did not train on (a held-out split).
    layer : str, optional
        Feature layer: a name, :data:`~defenses.detectors.HEAD_INPUT` or
        :data:`~defenses.detectors.PENULTIMATE`; default :func:`feature_layer`.
    alpha : float, default 1e-3
        Family-wise false-alarm rate over the classes, in (0, 0.5).
    min_learned : float, default 0.5
        Share of an under-filled cluster the model must predict as its class for "poison likely", in [0, 1].
    min_share : float, default 0.1
        The smallest share of a class that a poison cluster is to be found at, in (0, 1): a class whose
        held-out samples are too few for that is inconclusive. 0.1 is what 1% poison of a 10-class
        set makes of its target class.
    n_components : int, default 10
        PCA dimensions before the k-means, ≥ 1.
    max_clusters : int, default 4
        k-means runs for k = 2..max_clusters and every cluster is tested, 2..20.
    seed : int, default 0
        Seeds PCA and k-means.
    features, heldout_features : array_like, optional
        N×D and M×D features already computed at ``layer`` (skip the feature passes).
    predictions : array_like, optional
        The model's predicted class of each training sample (skips the prediction pass).

    Returns
    -------
    ClusterTestResult
        Per-class verdicts and the per-sample clusters and scores.

    Raises
    ------
    BadInput
        When the sets differ in classes or image shape, ``alpha``, ``min_learned`` or
        ``n_components`` is out of range, or the features have the wrong shape.

    Examples
    --------
    >>> import torch
    >>> from workbench.data import ImageDataset
    >>> from workbench.models import architecture
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(400) % 2
    >>> tr = ImageDataset(torch.rand(400, 1, 8, 8, generator=g), y, ["a", "b"], "train")
    >>> ho = ImageDataset(torch.rand(100, 1, 8, 8, generator=g), y[:100], ["a", "b"], "held-out")
    >>> f, fh = torch.randn(400, 4, generator=g), torch.randn(100, 4, generator=g)
    >>> f[:120:2] += 8.0  # 60 samples of class a in a cluster of their own
    >>> r = cluster_test(architecture("cnn", 1, 2, 8), tr, ho, features=f, heldout_features=fh, predictions=y)
    >>> r.verdicts, int(r.likely_poison[:120:2].sum()), int(r.likely_poison.sum())
    (['poison likely', 'inconclusive'], 60, 60)
    """
    from defenses.detectors import _features, _given_features

    check_in_range("alpha", float(alpha), 0.0, 0.5, low_open=True, high_open=True)
    check_in_range("min_learned", float(min_learned), 0.0, 1.0)
    require(n_components >= 1, f"n_components must be >= 1, got {n_components}")
    require(2 <= max_clusters <= 20, f"max_clusters must be in 2..20, got {max_clusters}")
    check_in_range("min_share", float(min_share), 0.0, 1.0, low_open=True, high_open=True)
    data, heldout = as_dataset(data), as_dataset(heldout)
    require(heldout.num_classes == data.num_classes,
            f"the held-out set has {heldout.num_classes} classes, the training data {data.num_classes}")
    require(heldout.input_shape == data.input_shape,
            f"held-out images are {heldout.input_shape}, training images {data.input_shape}")
    t0 = time.perf_counter()
    model = as_model(model)
    layer = layer or feature_layer(model, data.input_shape)
    feats = (_given_features(features, len(data)) if features is not None else _features(model, data, layer)).double()
    hfeats = (_given_features(heldout_features, len(heldout)) if heldout_features is not None
              else _features(model, heldout, layer)).double()
    require(feats.shape[1] == hfeats.shape[1], f"training features have {feats.shape[1]} dimensions, held-out "
                                               f"features {hfeats.shape[1]}")
    if predictions is None:
        predictions = predict_logits(model, data.pixels).argmax(1)
    pred = torch.as_tensor(np.asarray(predictions)).numpy().astype(np.int64)
    require(pred.shape == (len(data),), f"predictions must have shape ({len(data)},), got {pred.shape}")
    labels, hlabels = data.labels.numpy(), heldout.labels.numpy()
    k = data.num_classes
    tests = sum(range(2, max_clusters + 1))  # clusters tested per class
    bar = float(alpha) / (tests * k)
    verdicts, reasons = [CLEAN] * k, [""] * k
    p_values, s_tr, s_ho = np.ones(k), np.zeros(k), np.zeros(k)
    n_tr, n_ho, learned = np.bincount(labels, minlength=k), np.bincount(hlabels, minlength=k), np.zeros(k)
    cluster = np.zeros(len(data), dtype=bool)
    scores = np.zeros(len(data))
    names = list(data.class_names)
    for c in range(k):
        idx, hidx = np.flatnonzero(labels == c), np.flatnonzero(hlabels == c)
        if len(idx) < 4:
            reasons[c] = f"class {names[c]}: {len(idx)} training samples, too few to cluster."
            continue
        if len(hidx) == 0:
            verdicts[c] = INCONCLUSIVE
            reasons[c] = f"class {names[c]}: no held-out sample of this class to compare its training samples with."
            continue
        m = len(hidx)
        splits, z, zh = _clusterings(feats[idx].numpy(), hfeats[hidx].numpy(), n_components, max_clusters, seed + c)
        best = None  # (p, training share, held-out count, members mask)
        for lab, hl in splits:
            for a in range(int(lab.max()) + 1):
                sa, ha = float(np.mean(lab == a)), int(np.sum(hl == a))
                pa = binomial_below(ha, m, sa)
                if best is None or pa < best[0]:
                    best = (pa, sa, ha, lab == a)
        p, sa, h, mask = best
        members = idx[mask]
        p_values[c], s_tr[c], s_ho[c] = p, sa, h / m
        learned[c] = float(np.mean(pred[members] == c)) if len(members) else 0.0
        cluster[members] = True
        scores[members] = min(300.0, -math.log10(max(p, 1e-300)))
        smallest = 1.0 - bar ** (1.0 / m)  # the smallest cluster share that h = 0 would make significant
        what = (f"class {names[c]}: a cluster of {sa:.0%} of its {len(idx)} training samples holds "
                f"{h} of its {m} held-out samples ({h / m:.0%}; binomial p {p:.1e}, bar {bar:.1e})")
        if p < bar and learned[c] >= min_learned:
            refined = idx[_refine(z, zh, mask)]
            cluster[members] = False
            scores[members] = 0.0
            cluster[refined] = True
            scores[refined] = min(300.0, -math.log10(max(p, 1e-300)))
            verdicts[c] = POISON
            reasons[c] = f"{what}, and the model puts {learned[c]:.0%} of it in the class: a learned cluster " \
                         f"that clean samples do not fill."
        elif p < bar:
            verdicts[c] = UNLEARNED
            reasons[c] = f"{what}, but the model puts only {learned[c]:.0%} of it in the class: label errors or " \
                         f"a poison the model did not learn."
        elif smallest > min_share:
            verdicts[c] = INCONCLUSIVE
            reasons[c] = (f"class {names[c]}: with {m} held-out samples the test can find only a poison cluster of "
                          f"at least {smallest:.0%} of the class, not one of {min_share:.0%} (the smallest share "
                          f"it is asked to find); the most under-filled cluster holds {sa:.0%} of the training "
                          f"and {h / m:.0%} of the held-out samples (p {p:.1e}).")
        else:
            reasons[c] = f"{what}."
    member = np.isin(labels, [c for c in range(k) if verdicts[c] == POISON])
    return ClusterTestResult(names, verdicts, reasons, p_values, s_tr, s_ho, n_tr, n_ho, learned, bar, cluster,
                             cluster & member, member, scores, layer, time.perf_counter() - t0,
                             {"alpha": float(alpha), "min_learned": float(min_learned), "min_share": float(min_share),
                              "n_components": n_components, "max_clusters": max_clusters, "seed": seed})
