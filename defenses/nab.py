"""NAB, the non-adversarial backdoor defense, and its baselines.

Liu, Sangiovanni-Vincentelli, Yue, "Beating Backdoor Attack at Its Own Game", ICCV 2023
(arXiv 2307.15539; code damianliumin/non-adversarial_backdoor, also ported in BackdoorBench
``defense/nab.py``). The defender plants a harmless backdoor of its own that suppresses the attacker's:

1. **Detect** a small set of suspected samples (Sec. 3.2; any detector of :mod:`defenses.detectors`
   works; the authors' code uses LGA from ABL at an isolation ratio of 5%). Our default is spectral
   signatures on the victim's classifier-head input (``layer="head-input"``) at 5%: measured on
   MNIST-10k (default CNN, 5% poison, seeds 0-2, one thread) it isolated 99-100% of the BadNets and
   Blended poison (AUROC 1.000), where LGA (2 epochs) found 28-81% of BadNets' and 8-90% of
   Blended's and activation clustering on the penultimate layer 46-90% of BadNets'; NAB works
   exactly as well as its detection (``benchmarks/backdoor_defenses.py``).
2. **Pseudo-label** the isolated samples (Sec. 3.3), either *VD* (the prediction of a model trained
   on a small clean subset, the authors' shipped default, and ours) or *NC* (the nearest class centre
   in a self-supervised feature space; needs :mod:`workbench.contrastive`'s SimCLR encoder).
3. **Stamp** the defensive trigger on the isolated samples whose pseudo label differs from the given
   label, and relabel those to the pseudo label (Eq. 1 of the paper; ``train_nab.py``'s "core" lines).
4. **Train** on the processed data with the ordinary training loop (Eq. 2).
5. **Test**: stamp the defensive trigger on every input (:class:`StampedModel`, deployable as is).
   Optional input filter (Sec. 3.4, ``evaluate_filter.py``): reject an input whose prediction changes
   when the stamp is added.

Differences from the authors' code, all forced by our setting or chosen for clarity:

- The defensive trigger is a 2×2 patch near the top-left corner, as in the paper, but *white* (1.0):
  the authors set the pixels to 0 in ImageNet-normalised space (the mean colour), which on MNIST's
  black background would be nearly invisible. :func:`defensive_trigger` takes any patch.
- The authors stamp on the fly after augmentation; we stamp once before training (NAB is "pure
  data preprocessing"), so our ±2-pixel random-shift augmentation moves the stamp with the image.
  The patch therefore sits 2 pixels in from the corner (``margin=2``) so that no shift crops it.
  Measured on MNIST-10k / BadNets 5% (seed 0): in the very corner the stamp was learned weakly
  (ASR 16.7% after NAB).
- Our addition (``stamp_clean_subset=True``, VD only, on by default): the processed training set also
  holds stamped copies of the clean subset with their true labels. Without them every stamped
  training image carries a label other than the target, and the model learns "stamp ⇒ not the
  target class": measured on MNIST-10k / BadNets 5% (seed 0) that cost 12 points of clean accuracy
  (CA 87.3%, the target class misclassified when stamped). :func:`nab_stamp` itself still touches
  exactly the isolated samples whose label changes; ``stamp_clean_subset=False`` is the paper's recipe.
- The clean subset for VD is a stratified 5% of the *clean* training split (the authors draw a
  random 5% of the clean CIFAR-10 training set, ``create_clean_lite.py``). VD does not stamp the
  defensive trigger on the images it pseudo-labels (the authors' ``pseudo_label_vd.py`` does).
- NC centres are the mean features of each class over the non-isolated samples (given labels).
- Training recipe: our zoo model and :func:`workbench.training.train_on_split`, not a ResNet-18 with
  SGD for 100 epochs.

Metrics (CA, ASR with target-class images excluded, RA, DER) are defined in :mod:`defenses.metrics`.
Baselines in the same table: no defense, and "remove the detected samples and retrain".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from attacks.poison import BackdoorMetrics, backdoor_metrics, triggered_test_set
from attacks.triggers import PatchTrigger, Trigger
from workbench.data import ImageDataset, load_dataset, stratified_subset, train_test_split
from workbench.errors import check_in_range, require
from workbench.training import Progress, predict_logits, train_on_split

from .detectors import HEAD_INPUT, METHODS, DetectionResult, check_ratio, detect
from .metrics import TABLE_COLUMNS, DefenseRow, der

PSEUDO_METHODS = ("vd", "nc")


def defensive_trigger(size: int = 2, position: str | tuple[int, int] = "top-left", pattern="solid",
                      margin: int = 2) -> PatchTrigger:
    """The defender's own trigger for NAB.

    A ``size``×``size`` patch (default a white 2×2 near the top-left corner, ``margin`` pixels in, so
    that the training loop's ±2-pixel shifts never push it out).

    Parameters
    ----------
    size : int, default 2
        Patch side in pixels.
    position : str or tuple of (int, int), default "top-left"
        Where the patch goes (see :class:`~attacks.triggers.PatchTrigger`).
    pattern : str or torch.Tensor, default "solid"
        The patch's pattern.
    margin : int, default 2
        Pixels between the patch and the border.

    Returns
    -------
    PatchTrigger
        The defensive trigger.

    Examples
    --------
    >>> defensive_trigger().box(28, 28)
    (2, 2, 4, 4)
    """
    return PatchTrigger(size=size, position=position, pattern=pattern, margin=margin)


# ----------------------------------------------------------------------------- pseudo labels
def check_clean_subset(clean: ImageDataset, num_classes: int) -> None:
    """Check a clean subset for VD pseudo-labelling.

    A clean subset must hold every class, or VD can never predict the missing one.

    Parameters
    ----------
    clean : ImageDataset
        The defender's clean subset.
    num_classes : int
        K of the training set.

    Returns
    -------
    None
        Returns nothing when the subset is usable.

    Raises
    ------
    BadInput
        When the subset has another number of classes or lacks a class.
    """
    require(clean.num_classes == num_classes,
            f"the clean subset has {clean.num_classes} classes, the training set {num_classes}")
    counts = clean.class_counts()
    missing = [clean.class_names[c] for c, n in enumerate(counts) if n == 0]
    require(not missing, f"the clean subset has no sample of class(es) {', '.join(missing)}; "
                         "VD pseudo labels need every class")


def pseudo_labels_vd(clean: ImageDataset, images: torch.Tensor, *, arch: str = "cnn", epochs: int = 20,
                     seed: int = 0, device="cpu", test: ImageDataset | None = None,
                     progress: Progress | None = None) -> tuple[torch.Tensor, nn.Module, float | None]:
    """VD pseudo labels: predictions on ``images`` of a fresh model trained on the small ``clean`` set.

    Returns ``(labels, model, accuracy of that model on test or None)``.

    Parameters
    ----------
    clean : ImageDataset
        The small clean subset (every class present).
    images : torch.Tensor
        Images to pseudo-label ``(M, C, H, W)``.
    arch : str, default "cnn"
        Zoo architecture of the VD model.
    epochs : int, default 20
        Its training epochs.
    seed : int, default 0
        Seed of its training.
    device : str or torch.device, default "cpu"
        Where it trains.
    test : ImageDataset, optional
        Where to measure its accuracy.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    tuple of (torch.Tensor, nn.Module, float or None)
        Pseudo labels ``(M,)``, the VD model, and its test accuracy (``None`` without ``test``).

    Raises
    ------
    BadInput
        When the clean subset lacks a class.
    """
    check_clean_subset(clean, clean.num_classes)
    trained = train_on_split(clean, test if test is not None else clean, arch, epochs=epochs, seed=seed,
                             device=device, progress=progress, data_spec=f"{clean.name} (clean subset)")
    labels = predict_logits(trained.model, images, device=device).argmax(1) if len(images) else \
        torch.empty(0, dtype=torch.long)
    return labels, trained.model, (trained.evaluation.accuracy if test is not None else None)


def pseudo_labels_nc(features: torch.Tensor, labels: torch.Tensor, isolated: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """NC pseudo labels: the class whose centre (mean feature of its non-isolated samples, by given
    label) is nearest in cosine similarity to each isolated sample's feature.

    Parameters
    ----------
    features : torch.Tensor
        Features of every training sample ``(N, D)`` (e.g. a SimCLR encoder's).
    labels : torch.Tensor
        Given labels ``(N,)``.
    isolated : torch.Tensor
        Indices of the isolated samples ``(M,)``.
    num_classes : int
        K.

    Returns
    -------
    torch.Tensor
        Pseudo labels ``(M,)``, in the order of ``isolated``.

    Raises
    ------
    BadInput
        When features and labels do not match, or a class has no non-isolated sample.
    """
    require(features.ndim == 2 and len(features) == len(labels),
            f"features must be N×D for the {len(labels)} samples, got {tuple(features.shape)}")
    isolated = torch.as_tensor(isolated, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[isolated] = False
    f = F.normalize(features.float(), dim=1)
    counts = torch.bincount(labels[keep], minlength=num_classes)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    require(not missing, f"no non-isolated sample of class(es) {missing}: cannot form their centres")
    centres = torch.zeros(num_classes, f.shape[1]).index_add_(0, labels[keep], f[keep]) / counts[:, None]
    return (f[isolated] @ F.normalize(centres, dim=1).T).argmax(1)


# ----------------------------------------------------------------------------- stamping
@dataclass
class NabData:
    """The NAB-processed training set and what was done to it.

    Parameters
    ----------
    dataset : ImageDataset
        The processed training set.
    isolated : torch.Tensor
        Indices of the isolated (suspected) samples.
    pseudo_labels : torch.Tensor
        Pseudo label of each isolated sample, same order.
    stamped : torch.Tensor
        Indices stamped with the defensive trigger and relabelled (label changed), sorted.

    Returns
    -------
    A NabData (a dataclass) holding these fields.
    """

    dataset: ImageDataset
    isolated: torch.Tensor  # indices of the isolated (suspected) samples
    pseudo_labels: torch.Tensor  # pseudo label of each isolated sample, same order
    stamped: torch.Tensor  # indices stamped with the defensive trigger and relabelled (label changed)


def nab_stamp(data: ImageDataset, isolated, pseudo_labels, trigger: Trigger) -> NabData:
    """NAB's data processing (paper Eq. 1).

    Stamp ``trigger`` on the isolated samples whose pseudo label differs from the given label and
    give them the pseudo label; every other sample is left exactly as it was.

    Parameters
    ----------
    data : ImageDataset
        The (possibly poisoned) training set.
    isolated : array-like
        Indices of the isolated samples ``(M,)``, distinct.
    pseudo_labels : array-like
        Their pseudo labels ``(M,)``, in ``0..K-1``.
    trigger : Trigger
        The defensive trigger.

    Returns
    -------
    NabData
        The processed copy and which samples were stamped.

    Raises
    ------
    BadInput
        On mismatched shapes, repeated or out-of-range indices, or pseudo labels out of range.
    """
    isolated = torch.as_tensor(isolated, dtype=torch.long)
    pseudo = torch.as_tensor(pseudo_labels, dtype=torch.long)
    require(isolated.ndim == 1 and pseudo.shape == isolated.shape,
            f"{len(isolated)} isolated samples but {len(pseudo)} pseudo labels")
    require(len(isolated.unique()) == len(isolated), "isolated indices repeat")
    if len(isolated):
        require(int(isolated.min()) >= 0 and int(isolated.max()) < len(data),
                f"isolated indices must lie in 0..{len(data) - 1}")
        require(int(pseudo.min()) >= 0 and int(pseudo.max()) < data.num_classes,
                f"pseudo labels must lie in 0..{data.num_classes - 1}")
    change = pseudo != data.labels[isolated]
    stamped = isolated[change]
    images = data.images.clone()
    labels = data.labels.clone()
    if len(stamped):
        images[stamped] = trigger(data.images[stamped])
        labels[stamped] = pseudo[change]
    out = ImageDataset(images, labels, list(data.class_names), f"{data.name}+nab", indices=data.indices)
    return NabData(out, isolated, pseudo, stamped.sort().values)


# ----------------------------------------------------------------------------- test time
class StampedModel(nn.Module):
    """A deployable wrapper: stamps the defensive trigger on every input, then runs the model.

    Parameters
    ----------
    model : nn.Module
        The NAB-trained model.
    trigger : Trigger
        The defensive trigger.

    Returns
    -------
    A StampedModel (an ``nn.Module``): ``forward(x)`` returns ``model(trigger(x))``, logits ``(N, K)``.
    """

    def __init__(self, model: nn.Module, trigger: Trigger):
        super().__init__()
        self.model = model
        self.trigger = trigger

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.trigger(x))


@dataclass
class FilterMetrics:
    """NAB's input filter: reject an input whose prediction changes when the stamp is added.

    Parameters
    ----------
    clean_rejection : float
        Share of clean test images rejected.
    backdoor_rejection : float
        Share of triggered non-target test images rejected.
    filtered_asr : float
        Share of triggered non-target images accepted AND classified as the backdoor label.
    filtered_clean_accuracy : float
        Share of clean images accepted AND classified correctly.

    Returns
    -------
    A FilterMetrics (a dataclass) holding these fields (all in [0, 1]).
    """

    clean_rejection: float  # share of clean test images rejected
    backdoor_rejection: float  # share of triggered non-target test images rejected
    filtered_asr: float  # triggered non-target images accepted AND classified as the backdoor label
    filtered_clean_accuracy: float  # clean images accepted AND classified correctly


@torch.no_grad()
def filter_inputs(model: nn.Module, trigger: Trigger, images: torch.Tensor, *, device=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """NAB's input filter (paper Sec. 3.4): predictions with the stamp, and which inputs to reject.

    ``(prediction with the stamp, rejected mask)`` for each image.

    Parameters
    ----------
    model : nn.Module
        The NAB-trained model (unwrapped).
    trigger : Trigger
        The defensive trigger.
    images : torch.Tensor
        Inputs ``(N, C, H, W)``.
    device : str or torch.device, optional
        Where the model runs.

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor)
        Predictions on the stamped inputs ``(N,)`` and the rejected mask ``(N,)`` (prediction
        changed by the stamp).
    """
    plain = predict_logits(model, images, device=device).argmax(1)
    stamped = predict_logits(model, trigger(images), device=device).argmax(1)
    return stamped, plain != stamped


def filter_metrics(model: nn.Module, defense: Trigger, test: ImageDataset, attack: Trigger, target: int | None,
                   *, device=None) -> FilterMetrics:
    """Measure NAB's input filter on clean and triggered test images.

    Parameters
    ----------
    model : nn.Module
        The NAB-trained model (unwrapped).
    defense : Trigger
        The defensive trigger.
    test : ImageDataset
        The clean test set.
    attack : Trigger
        The attacker's trigger.
    target : int or None
        The attack's target class, or ``None`` for all-to-all.
    device : str or torch.device, optional
        Where the model runs.

    Returns
    -------
    FilterMetrics
        Rejection rates and the ASR and accuracy after filtering.

    Raises
    ------
    BadInput
        When every test image is of the target class.
    """
    pred_c, rej_c = filter_inputs(model, defense, test.images, device=device)
    xt, y_true, y_bd = triggered_test_set(test, attack, target)
    pred_t, rej_t = filter_inputs(model, defense, xt, device=device)
    return FilterMetrics(clean_rejection=float(rej_c.float().mean()), backdoor_rejection=float(rej_t.float().mean()),
                         filtered_asr=float(((pred_t == y_bd) & ~rej_t).float().mean()),
                         filtered_clean_accuracy=float(((pred_c == test.labels) & ~rej_c).float().mean()))


# ----------------------------------------------------------------------------- end to end
@dataclass
class NabResult:
    """NAB against one attack: detection, pseudo labels, the before/after table and timings.

    Parameters
    ----------
    attack, data : str
        The attack and the data spec.
    seed : int
        The seed used.
    detector : str
        The detector that isolated samples.
    ratio : float
        The isolation ratio.
    pseudo : str
        ``"vd"`` or ``"nc"``.
    undefended, nab : BackdoorMetrics
        CA/ASR/RA before and after NAB.
    remove_retrain : BackdoorMetrics or None
        The remove-and-retrain baseline, when run.
    der_nab : float
        NAB's DER.
    der_remove_retrain : float or None
        The baseline's DER.
    detection : DetectionResult
        The detector's scores.
    n_poisoned, n_isolated, n_stamped : int
        Poisoned, isolated and stamped training samples.
    n_stamped_clean_copies : int
        Stamped copies of the clean subset added (0 = the paper's recipe).
    pseudo_label_accuracy : float
        Pseudo label == true (pre-poison) label, over the isolated samples.
    pseudo_label_accuracy_poisoned : float or None
        The same, over the isolated samples that are poisoned.
    vd_model_accuracy : float or None
        Test accuracy of the VD model.
    filter : FilterMetrics or None
        The input filter's metrics, when run.
    seconds : dict
        Step → seconds.
    defense_trigger, attack_trigger : dict
        The triggers' ``describe()``.
    class_names : list of str
        K class names.
    input_shape : tuple of (int, int, int)
        ``(C, H, W)``.
    flagged_images : torch.Tensor
        Up to 32 most suspicious training images.
    flagged_labels : list of int
        Their given labels.
    flagged_poisoned : list of bool
        Whether each is truly poisoned.
    model : nn.Module, optional
        The NAB-trained model (stamp inputs: wrap it in :class:`StampedModel`).
    provenance : dict, default {}
        How the run was made.

    Returns
    -------
    A NabResult (a dataclass) holding these fields.
    """

    attack: str
    data: str
    seed: int
    detector: str
    ratio: float
    pseudo: str
    undefended: BackdoorMetrics
    nab: BackdoorMetrics
    remove_retrain: BackdoorMetrics | None
    der_nab: float
    der_remove_retrain: float | None
    detection: DetectionResult
    n_poisoned: int
    n_isolated: int
    n_stamped: int
    n_stamped_clean_copies: int  # stamped copies of the clean subset added (0 = the paper's recipe)
    pseudo_label_accuracy: float  # pseudo label == true (pre-poison) label, over the isolated samples
    pseudo_label_accuracy_poisoned: float | None  # same, over the isolated samples that are poisoned
    vd_model_accuracy: float | None
    filter: FilterMetrics | None
    seconds: dict  # step -> seconds
    defense_trigger: dict
    attack_trigger: dict
    class_names: list[str]
    input_shape: tuple[int, int, int]
    flagged_images: torch.Tensor  # up to 32 most suspicious training images
    flagged_labels: list[int]  # their given labels
    flagged_poisoned: list[bool]  # whether each is truly poisoned
    model: nn.Module | None = field(default=None, repr=False)  # the NAB-trained model (stamp inputs!)
    provenance: dict = field(default_factory=dict)

    def rows(self) -> list[DefenseRow]:
        s = self.seconds
        out = [DefenseRow("no defense", self.undefended.clean_accuracy, self.undefended.attack_success_rate,
                          self.undefended.robust_accuracy, None, s.get("attack", 0.0))]
        if self.remove_retrain is not None:
            out.append(DefenseRow("remove detected & retrain", self.remove_retrain.clean_accuracy,
                                  self.remove_retrain.attack_success_rate, self.remove_retrain.robust_accuracy,
                                  self.der_remove_retrain, s.get("detection", 0.0) + s.get("remove_retrain", 0.0)))
        out.append(DefenseRow(f"NAB ({self.detector}, {self.pseudo.upper()})", self.nab.clean_accuracy,
                              self.nab.attack_success_rate, self.nab.robust_accuracy, self.der_nab,
                              s.get("detection", 0.0) + s.get("pseudo_labels", 0.0) + s.get("nab_train", 0.0)))
        return out

    def report_sections(self):
        from workbench.report import Figure, ImageGrid, Metrics, Table, Text, figure_png

        q = self.detection.quality
        layer = self.detection.params.get("layer")
        det = {"detector": self.detector + (f" @ {layer}" if layer else ""),
               "isolation ratio": f"{100 * self.ratio:.1f}%",
               "isolated": self.n_isolated, "truly poisoned": self.n_poisoned}
        if q is not None:
            det.update({"precision": f"{100 * q.precision:.2f}%", "recall": f"{100 * q.recall:.2f}%",
                        "AUROC": round(q.auroc, 4)})
        det.update({"pseudo labels": self.pseudo.upper(),
                    "pseudo-label accuracy (isolated)": f"{100 * self.pseudo_label_accuracy:.2f}%",
                    "stamped & relabelled": self.n_stamped})
        if self.vd_model_accuracy is not None:
            det["VD model test accuracy"] = f"{100 * self.vd_model_accuracy:.2f}%"
        names = self.class_names
        caps = [f"{names[y]}{' · POISON' if p else ''}" for y, p in zip(self.flagged_labels, self.flagged_poisoned)]
        secs = [
            Metrics(f"NAB against {self.attack} ({self.data}, seed {self.seed})", det),
            Table("Before / after (CA: clean accuracy; ASR: attack success rate on triggered non-target test "
                  "images; RA: robust accuracy; DER: defense effectiveness rating)", TABLE_COLUMNS,
                  [r.cells() for r in self.rows()]),
        ]
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            rows = self.rows()
            fig, ax = plt.subplots(figsize=(6, 3))
            x = range(len(rows))
            w = 0.27
            for k, (lab, key) in enumerate((("CA", "clean_accuracy"), ("ASR", "attack_success_rate"),
                                            ("RA", "robust_accuracy"))):
                ax.bar([i + (k - 1) * w for i in x], [100 * getattr(r, key) for r in rows], w, label=lab)
            ax.set_xticks(list(x), [r.defense for r in rows], fontsize=8)
            ax.set_ylabel("%")
            ax.legend(fontsize=8)
            fig.tight_layout()
            secs.append(Figure("CA / ASR / RA before and after", figure_png(fig)))
            plt.close(fig)
        except Exception:  # noqa: BLE001 - the chart is optional decoration
            pass
        if self.filter is not None:
            f = self.filter
            secs.append(Metrics("Input filter (reject if the stamp changes the prediction)",
                                {"clean rejection": f"{100 * f.clean_rejection:.2f}%",
                                 "backdoor rejection": f"{100 * f.backdoor_rejection:.2f}%",
                                 "ASR after filtering": f"{100 * f.filtered_asr:.2f}%",
                                 "CA after filtering": f"{100 * f.filtered_clean_accuracy:.2f}%"}))
        if len(self.flagged_images):
            secs.append(ImageGrid("Most suspicious training samples (given label; POISON = truly poisoned)",
                                  self.flagged_images, caps, columns=8, scale=3))
        secs.append(Metrics("Time per step (s)", {k: round(v, 1) for k, v in self.seconds.items()}))
        secs.append(Text("How to deploy", "The NAB model must see every input with the defensive trigger "
                         f"stamped ({self.defense_trigger}); use defenses.nab.StampedModel(model, trigger)."))
        return secs


def run_nab(data: str | ImageDataset = "mnist10k", attack: str = "badnets", rate: float = 0.05, target: int | None = 0,
            *, seed: int = 0, detector: str = "spectral", ratio: float = 0.05, layer: str | None = HEAD_INPUT,
            pseudo: str = "vd",
            clean_fraction: float = 0.05, epochs: int | None = None, vd_epochs: int = 20, lga_epochs: int = 2,
            arch: str = "cnn", device="cpu", alpha: float = 0.15, patch_size: int = 3,
            trigger: Trigger | None = None, stamp_clean_subset: bool = True, baselines: bool = True,
            with_filter: bool = True,
            test_fraction: float = 0.2, attack_result=None, detection: DetectionResult | None = None,
            progress: Progress | None = None) -> NabResult:
    """Attack (BadNets or Blended via :func:`attacks.backdoor.run_backdoor_attack`), detect, NAB-train,
    evaluate, and (with ``baselines``) remove-and-retrain; every step timed.

    ``detector`` (``lga``, ``spectral`` or ``ac``) isolates the ``ratio`` most suspicious samples;
    ``layer`` is the feature layer spectral / ac read on the victim (default ``"head-input"``, the
    input of its first fully connected layer; ``None`` or ``"penultimate"``: the penultimate layer).
    ``trigger`` is the defensive trigger (default :func:`defensive_trigger`). ``stamp_clean_subset``
    (our addition, VD only) also trains on stamped copies of the clean subset with their true labels,
    so that the stamp cannot come to mean "not the target class" (see the module docstring). ``attack_result`` (a
    :class:`attacks.backdoor.BackdoorAttackResult`) and ``detection`` (a :class:`DetectionResult` on its
    poisoned training set) skip those steps when already computed (the app runs them one by one).

    Parameters
    ----------
    data : str or ImageDataset, default "mnist10k"
        A dataset spec or a dataset.
    attack : {"badnets", "blended"}, default "badnets"
        The attack.
    rate : float, default 0.05
        Poison rate, in (0, 1).
    target : int or None, default 0
        The attack's target class, or ``None`` for all-to-all.
    seed : int, default 0
        Seed of every step.
    detector : {"lga", "spectral", "ac"}, default "spectral"
        The detector.
    ratio : float, default 0.05
        Share of samples isolated.
    layer : str or None, default "head-input"
        Feature layer of spectral / ac.
    pseudo : {"vd", "nc"}, default "vd"
        Pseudo-labelling method.
    clean_fraction : float, default 0.05
        Share of the training split the defender holds as clean, in (0, 1].
    epochs : int, optional
        Training epochs of the victim, the NAB model and the baseline.
    vd_epochs : int, default 20
        Epochs of the VD model.
    lga_epochs : int, default 2
        Epochs of LGA's isolation training.
    arch : str, default "cnn"
        Zoo architecture.
    device : str or torch.device, default "cpu"
        Where models run.
    alpha : float, default 0.15
        Blend weight of the Blended attack.
    patch_size : int, default 3
        Patch side of the BadNets attack.
    trigger : Trigger, optional
        The defensive trigger (default :func:`defensive_trigger`).
    stamp_clean_subset : bool, default True
        Also train on stamped copies of the clean subset (VD only).
    baselines : bool, default True
        Also run remove-and-retrain.
    with_filter : bool, default True
        Also measure the input filter.
    test_fraction : float, default 0.2
        Share held out as the test split.
    attack_result : BackdoorAttackResult, optional
        A finished attack to defend (skips the attack).
    detection : DetectionResult, optional
        A finished detection on its poisoned set (skips detection).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    NabResult
        Detection, pseudo labels, the before/after table and timings.

    Raises
    ------
    BadInput
        On an unknown detector or pseudo-label method, a clean fraction outside (0, 1], a bad ratio,
        a detection for another dataset, or invalid attack settings.
    """
    from attacks.backdoor import run_backdoor_attack

    ratio = check_ratio(ratio)
    detector = str(detector).lower()
    pseudo = str(pseudo).lower()
    require(detector in METHODS, f"unknown detector {detector!r}; choose one of {', '.join(METHODS)}")
    require(pseudo in PSEUDO_METHODS, f"unknown pseudo-label method {pseudo!r}; choose vd or nc")
    check_in_range("clean fraction", float(clean_fraction), 0.0, 1.0, low_open=True)
    defense = trigger if trigger is not None else defensive_trigger()
    if attack_result is not None:
        ds, train, test = attack_result.train, attack_result.train, attack_result.test
    else:
        ds = load_dataset(data) if isinstance(data, str) else data
        train, test = train_test_split(ds, test_fraction, seed)
    defense.box(*train.image_size)  # a defensive patch that does not fit is bad input: fail early
    n_steps = 4 + int(baselines)
    step = [0]

    def sub():
        k = step[0]
        step[0] += 1
        return None if progress is None else (lambda f, m="": progress((k + min(1.0, f)) / n_steps, m))

    times: dict[str, float] = {}
    t = time.perf_counter()
    if attack_result is None:
        att = run_backdoor_attack(ds, attack, rate, target, seed=seed, epochs=epochs, arch=arch, device=device,
                                  alpha=alpha, patch_size=patch_size, train=train, test=test, progress=sub())
        times["attack"] = time.perf_counter() - t
    else:
        att = attack_result
        attack = att.attack
        sub()
        times["attack"] = float(att.provenance.get("seconds", att.history.seconds))
    poisoned = att.poisoned
    pdata = poisoned.dataset

    t = time.perf_counter()
    if detection is None:
        det = detect(detector, pdata, att.model, ratio, layer=layer, seed=seed, device=device, lga_epochs=lga_epochs,
                     arch=arch, poisoned_indices=poisoned.poisoned_indices, progress=sub())
        times["detection"] = time.perf_counter() - t
    else:
        require(len(detection.scores) == len(pdata), "the detection result is for another dataset")
        det, detector, ratio = detection, detection.method, detection.ratio
        if det.quality is None:
            det.with_truth(poisoned.poisoned_indices)
        sub()
        times["detection"] = det.seconds
    isolated = det.flagged.sort().values

    t = time.perf_counter()
    vd_acc, clean = None, None
    if pseudo == "vd":
        n_clean = max(train.num_classes, int(round(clean_fraction * len(train))))
        clean = stratified_subset(train, n_clean, seed=seed)
        plabels, _, vd_acc = pseudo_labels_vd(clean, pdata.images[isolated], arch=arch, epochs=vd_epochs, seed=seed,
                                              device=device, test=test, progress=sub())
    else:
        feats = _contrastive_features(pdata.images, seed=seed, device=device, progress=sub())
        plabels = pseudo_labels_nc(feats, pdata.labels, isolated, pdata.num_classes)
    times["pseudo_labels"] = time.perf_counter() - t
    truth = poisoned.original_labels[isolated]
    is_p = poisoned.is_poisoned[isolated]
    pl_acc = float((plabels == truth).float().mean()) if len(isolated) else float("nan")
    pl_acc_p = float((plabels[is_p] == truth[is_p]).float().mean()) if bool(is_p.any()) else None

    t = time.perf_counter()
    processed = nab_stamp(pdata, isolated, plabels, defense)
    train_set = processed.dataset
    n_anchor = 0
    if stamp_clean_subset and clean is not None:
        train_set = _with_stamped_copies(train_set, clean, defense)
        n_anchor = len(clean)
    nab_model = train_on_split(train_set, test, arch, epochs=epochs, seed=seed, device=device,
                               progress=sub(), data_spec=f"{att.provenance['data']} poisoned by {attack}, NAB").model
    times["nab_train"] = time.perf_counter() - t
    m_nab = backdoor_metrics(nab_model, test, att.trigger, att.target, device=device, stamp=defense)
    filt = filter_metrics(nab_model, defense, test, att.trigger, att.target, device=device) if with_filter else None

    m_rr, der_rr = None, None
    if baselines:
        t = time.perf_counter()
        keep = torch.ones(len(pdata), dtype=torch.bool)
        keep[isolated] = False
        rr = train_on_split(pdata.subset(torch.nonzero(keep).flatten()), test, arch, epochs=epochs, seed=seed,
                            device=device, progress=sub())
        times["remove_retrain"] = time.perf_counter() - t
        m_rr = backdoor_metrics(rr.model, test, att.trigger, att.target, device=device)
        der_rr = der(att.metrics, m_rr)

    top = det.flagged[:32]
    mask = poisoned.is_poisoned
    if progress is not None:
        progress(1.0, f"NAB: CA {100 * m_nab.clean_accuracy:.1f}% ASR {100 * m_nab.attack_success_rate:.1f}%")
    return NabResult(
        attack=attack, data=str(att.provenance["data"]), seed=seed, detector=detector, ratio=ratio, pseudo=pseudo,
        undefended=att.metrics, nab=m_nab, remove_retrain=m_rr, der_nab=der(att.metrics, m_nab),
        der_remove_retrain=der_rr, detection=det, n_poisoned=len(poisoned.poisoned_indices),
        n_isolated=len(isolated), n_stamped=len(processed.stamped), pseudo_label_accuracy=pl_acc,
        pseudo_label_accuracy_poisoned=pl_acc_p, vd_model_accuracy=vd_acc, filter=filt, seconds=times,
        defense_trigger=defense.describe(), attack_trigger=att.trigger.describe(),
        class_names=list(train.class_names), input_shape=train.input_shape, flagged_images=pdata.images[top], flagged_labels=pdata.labels[top].tolist(),
        flagged_poisoned=mask[top].tolist(), model=nab_model,
        n_stamped_clean_copies=n_anchor,
        provenance={**att.provenance, "detector": detector, "detector_layer": det.params.get("layer"),
                    "ratio": ratio, "pseudo": pseudo,
                    "clean_fraction": clean_fraction, "vd_epochs": vd_epochs, "lga_epochs": lga_epochs})


def _with_stamped_copies(data: ImageDataset, clean: ImageDataset, trigger: Trigger) -> ImageDataset:
    """``data`` plus stamped copies of the clean samples, with their true labels."""
    images = torch.cat([data.images, trigger(clean.images)])
    labels = torch.cat([data.labels, clean.labels])
    return ImageDataset(images, labels, list(data.class_names), f"{data.name}+stamped-clean")


def _contrastive_features(images: torch.Tensor, *, seed: int, device, progress=None) -> torch.Tensor:
    from workbench import contrastive

    trained = contrastive.train_simclr(images, seed=seed, device=device, progress=progress)
    return contrastive.encode(trained.encoder, images)
