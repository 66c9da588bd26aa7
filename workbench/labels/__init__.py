"""Label-error audit: out-of-sample probabilities, confident learning, review, correction, re-ranking.

The audit follows

* Northcutt, Jiang, Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels",
  JAIR 2021 (CL): the confident joint ``C[i][j]`` (Eq. 1: examples with given label i whose
  predicted probability of class j reaches the per-class threshold ``t_j``, Eq. 2: the mean
  self-confidence of class j), its calibration and the estimated joint ``Q[i][j]`` (Eq. 3), and
  the pruning rules of Sec. 3.2 (``prune_by_class``, ``prune_by_noise_rate``, ``both``,
  ``C_confusion`` = cleanlab's ``predicted_neq_given``, ``C_{ỹ,y*}`` = ``confident_learning``);
* Northcutt, Athalye, Mueller, "Pervasive Label Errors in Test Sets Destabilize Machine Learning
  Benchmarks", NeurIPS Datasets and Benchmarks 2021 (PLE): out-of-sample probabilities by
  cross-validation (Sec. 3, step 1), the candidate set "estimate the number of errors with
  confident learning, then take that many examples with the lowest normalized margin"
  (``filter_by="paper"``), human validation with the four categories given / suggested (CL guess)
  / both / neither (Sec. 3, step 2; :data:`VERDICTS`), and the benchmark re-ranking on corrected
  test labels (Sec. 5; :func:`rerank_models`).

All of the counting, pruning and scoring is cleanlab 2.9 (``cleanlab.filter``, ``cleanlab.count``,
``cleanlab.rank``, ``cleanlab.dataset``); this package produces the probabilities, validates
inputs, assembles the result and implements review and re-ranking. Like cleanlab, it is split into
a module per task, plain functions over arrays:

* :mod:`.validation` — labels, probabilities and folds checked, one-line :class:`BadInput`;
* :mod:`.pred_probs` — out-of-sample probabilities (K-fold, embeddings, a user's ``.npy``);
* :mod:`.calibration` — temperature scaling fitted out of sample (cross-fitted on the held-out fold);
* :mod:`.noise` — noise matrices, seeded label flips, flips to each class's most confused partner;
* :mod:`.issues` — finding and ranking issues, the estimated number of errors (:func:`assess`);
* :mod:`.batched` — the same check batch by batch over memory-mapped ``.npy`` files (large data);
* :mod:`.outliers` — Datalab-style outliers and near-duplicates on embeddings;
* :mod:`.audit` — :class:`LabelAudit` and :func:`audit_labels`, and scoring against known flips;
* :mod:`.review` — review files, applying verdicts, the corrected dataset;
* :mod:`.rerank` — model accuracy and rank on original vs corrected test labels.

Where we differ from the papers:

* PLE trained one model per dataset with 4-fold (ImageNet) or 5-fold cross-validation of large
  networks; here the folds train a zoo model with our own training loop (:func:`workbench.training.fit`),
  few epochs each, with small random shifts as augmentation.
* ``filter_by="paper"`` counts errors as the Confident Learning paper and PLE did (cleanlab 1.0's
  ``num_label_errors``): ``(1 − trace(C)/ΣC)·N`` on the *uncalibrated* confident joint C
  (:func:`paper_num_label_issues`), then takes that many lowest-margin examples. PLE used that count
  for every dataset except MNIST, where it took the size of the ``prune_by_class`` set (see
  ``get_label_error_indices_to_match_labelerrors_com`` in the cleanlab/label-errors repository); we
  use the general rule everywhere. cleanlab 2.9's ``num_label_issues(estimation_method="off_diagonal")``
  is a different count (off-diagonal examples whose argmax is not the given label); cut at it, the
  same ranking is cleanlab's ``low_normalized_margin``, which stays available under its own name.
  The dataset-health estimate reported next to the flagged count is the calibrated one
  (``"off_diagonal_calibrated"``: N·(1 − trace Q)).
* PLE validated with five Mechanical Turk workers per example; here one reviewer's verdict per
  example is taken as given. Validated precision = share of reviewed flags whose verdict is not
  ``given`` (PLE counts ``suggested``, ``both`` and ``neither`` all as label errors).
* Outliers and near-duplicates use cleanlab Datalab's rules computed directly on a scikit-learn
  kNN graph (:mod:`.outliers`), because ``Datalab`` itself needs the optional ``datasets`` package.
"""

from .audit import GALLERY, DetectionScore, LabelAudit, audit_labels, detection_score
from .batched import BATCH_SIZE, BATCHED_ABOVE, BATCHED_FILTERS, assess_batched, validate_batched
from .calibration import cross_fit_temperature, fit_temperature
from .issues import (
    FILTER_BY,
    RANK_BY,
    Assessment,
    assess,
    find_issues,
    label_quality_scores,
    paper_label_issues,
    paper_num_label_issues,
)
from .noise import flip_to_partner, inject_noise, most_confused_partner, noise_matrix
from .outliers import EmbeddingIssues, embedding_issues
from .pred_probs import (
    DEFAULT_CALIBRATE,
    DEFAULT_FOLDS,
    DEFAULT_SEEDS,
    DEFAULT_TTA,
    FoldResult,
    ModelFactory,
    OutOfSample,
    cross_val_pred_probs,
    embedding_pred_probs,
    load_pred_probs,
    train_fold,
)
from .rerank import Reranking, rerank_models
from .review import (
    VERDICTS,
    Correction,
    Review,
    apply_review,
    corrected_npz_bytes,
    csv_cell,
    csv_text,
    load_review,
    parse_review,
    save_corrected,
)
from .validation import ROW_SUM_TOL, check_folds, validate_labels, validate_pred_probs

__all__ = [
    "BATCHED_ABOVE", "BATCHED_FILTERS", "BATCH_SIZE", "assess_batched", "validate_batched", "Assessment", "assess",
    "DEFAULT_CALIBRATE", "DEFAULT_FOLDS", "DEFAULT_SEEDS", "DEFAULT_TTA", "FILTER_BY", "GALLERY", "RANK_BY", "ROW_SUM_TOL", "VERDICTS",
    "Correction", "DetectionScore", "EmbeddingIssues", "FoldResult", "LabelAudit", "ModelFactory", "OutOfSample", "Reranking",
    "Review",
    "apply_review", "audit_labels", "check_folds", "corrected_npz_bytes", "cross_fit_temperature", "csv_cell", "csv_text",
    "cross_val_pred_probs",
    "detection_score", "embedding_issues", "embedding_pred_probs", "find_issues", "fit_temperature", "flip_to_partner", "inject_noise",
    "most_confused_partner",
    "label_quality_scores", "load_pred_probs", "load_review", "noise_matrix", "paper_label_issues",
    "paper_num_label_issues",
    "parse_review", "rerank_models", "save_corrected", "train_fold", "validate_labels", "validate_pred_probs",
]
