"""Human review (PLE Sec. 3 step 2): review files, applying verdicts, the corrected dataset."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write
from ..data import ImageDataset
from ..errors import BadInput, require
from .validation import validate_labels

#: PLE's human-validation categories.
VERDICTS = ("given", "suggested", "both", "neither")
#: A text cell starting with one of these is read as a formula by spreadsheet programs (OWASP "CSV
#: injection"); such cells get a leading apostrophe, which spreadsheets show as plain text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """Make one value safe as a CSV cell opened in a spreadsheet (no formula injection).

    Text starting with ``= + - @``, a tab or a carriage return is prefixed with ``'``; numbers are
    left as they are.

    Parameters
    ----------
    value : Any
        The cell's value.

    Returns
    -------
    Any
        ``value`` unchanged, or the text with a leading ``'``.

    Examples
    --------
    >>> csv_cell("=SUM(A1)"), csv_cell("cat"), csv_cell(-3)
    ("'=SUM(A1)", 'cat', -3)
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    r"""CSV text of ``header`` and ``rows`` with every text cell passed through :func:`csv_cell`.

    Parameters
    ----------
    header : sequence of str
        Column names.
    rows : iterable of sequence
        The rows, one value per column.

    Returns
    -------
    str
        The CSV text (``\r\n`` line ends, as the ``csv`` module writes).

    Examples
    --------
    >>> csv_text(["index", "verdict"], [[3, "@given"]]).splitlines()
    ['index,verdict', "3,'@given"]
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([csv_cell(h) for h in header])
    for row in rows:
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


@dataclass
class Review:
    """Reviewer verdicts: index → verdict, with the labels the verdicts refer to (when known).

    Parameters
    ----------
    verdicts : dict of int to str
        Example index → verdict (``"given"``, ``"suggested"``, ``"both"`` or ``"neither"``).
    given : dict of int to int, default {}
        Example index → the given label the reviewer saw (checked against the dataset).
    suggested : dict of int to int, default {}
        Example index → the suggested label the reviewer saw.

    Returns
    -------
    A Review (a dataclass) holding these fields.
    """

    verdicts: dict[int, str]
    given: dict[int, int] = field(default_factory=dict)
    suggested: dict[int, int] = field(default_factory=dict)


def _parse_int(v: Any, what: str, where: str) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise BadInput(f"{where}: {what} {v!r} is not an integer") from None
    require(f.is_integer(), f"{where}: {what} {v!r} is not an integer")
    return int(f)


def parse_review(rows: Sequence[Mapping[str, Any]], where: str = "review") -> Review:
    """Parse review rows into a :class:`Review`.

    Rows with ``index`` and ``verdict`` (and optional ``given`` / ``suggested``); empty verdicts skipped.

    Parameters
    ----------
    rows : sequence of mapping
        One mapping per reviewed example, e.g. CSV rows or JSON objects.
    where : str, default "review"
        What the rows came from, for error messages.

    Returns
    -------
    Review
        The verdicts and, where given, the labels they refer to.

    Raises
    ------
    BadInput
        On a row without ``index``, a non-integer index or label, an unknown verdict, conflicting
        verdicts for one index, or no verdict at all.

    Examples
    --------
    >>> parse_review([{"index": "4", "verdict": "suggested", "suggested": "7"}, {"index": 5, "verdict": ""}])
    Review(verdicts={4: 'suggested'}, given={}, suggested={4: 7})
    """
    rev = Review({})
    for n, row in enumerate(rows, 1):
        require(isinstance(row, Mapping), f"{where}: entry {n} is not an object with index and verdict")
        require("index" in row, f"{where}: entry {n} has no 'index'")
        verdict = str(row.get("verdict") or "").strip().lower()
        if not verdict:
            continue
        i = _parse_int(row["index"], "index", f"{where} entry {n}")
        require(verdict in VERDICTS, f"{where}: unknown verdict {verdict!r} for index {i}; "
                                     f"use one of {', '.join(VERDICTS)}")
        require(i not in rev.verdicts or rev.verdicts[i] == verdict,
                f"{where}: index {i} has two different verdicts ({rev.verdicts.get(i)!r}, {verdict!r})")
        rev.verdicts[i] = verdict
        for key in ("given", "suggested"):
            if row.get(key) not in (None, ""):
                getattr(rev, key)[i] = _parse_int(row[key], key, f"{where} entry {n}")
    require(len(rev.verdicts) > 0, f"{where}: no verdicts (every verdict is empty)")
    return rev


def load_review(path: str | Path) -> Review:
    """Read a review file.

    A CSV (header with ``index,verdict[,given,suggested]``) or JSON (``{"12": "suggested"}`` or a list
    of ``{"index": 12, "verdict": "suggested", "suggested": 7}``) review file.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.csv`` or ``.json`` file.

    Returns
    -------
    Review
        The verdicts, as :func:`parse_review` makes them.

    Raises
    ------
    BadInput
        When the file is missing, not valid JSON, lacks the ``index`` and ``verdict`` columns, or
        holds invalid rows.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"review file not found: {path}")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and "verdicts" in data:
            data = data["verdicts"]
        if isinstance(data, dict):
            data = [{"index": k, "verdict": v} if not isinstance(v, Mapping) else {"index": k, **v}
                    for k, v in data.items()]
        require(isinstance(data, list), f"{path}: JSON must be an object index → verdict or a list of entries")
        return parse_review(data, str(path))
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    require("index" in fields and "verdict" in fields,
            f"{path}: the CSV needs a header with columns 'index' and 'verdict', got {reader.fieldnames}")
    rows = [{k.strip().lower(): v for k, v in r.items() if k is not None} for r in reader]
    return parse_review(rows, str(path))


@dataclass
class Correction:
    """Labels after review: corrected where the reviewer chose ``suggested``; ``both``/``neither`` dropped.

    Parameters
    ----------
    labels : numpy.ndarray
        Corrected labels, shape ``(N,)`` (dropped rows keep their given label).
    keep : numpy.ndarray
        Shape ``(N,)``, bool: False where dropped.
    changed : numpy.ndarray
        Indices whose label changed.
    dropped : numpy.ndarray
        Indices removed (``both``/``neither`` when ``drop_ambiguous``).
    counts : dict of str to int
        Number of each verdict.
    reviewed : int
        Number of reviewed examples.
    validated_precision : float
        Share of reviewed flags that are label errors (verdict != given), in [0, 1].
    correctable_precision : float
        Share whose verdict is ``suggested``, in [0, 1].

    Returns
    -------
    A Correction (a dataclass) holding these fields; ``report_sections()`` renders it in a report.
    """

    labels: np.ndarray  # N corrected labels (dropped rows keep their given label)
    keep: np.ndarray  # N bool: False where dropped
    changed: np.ndarray  # indices whose label changed
    dropped: np.ndarray  # indices removed (both/neither when drop_ambiguous)
    counts: dict[str, int]
    reviewed: int
    validated_precision: float  # share of reviewed flags that are label errors (verdict != given)
    correctable_precision: float  # share whose verdict is suggested

    def report_sections(self):
        from ..report import Metrics

        return [Metrics("Review", {"reviewed": self.reviewed, **{f"verdict {k}": v for k, v in self.counts.items()},
                                   "validated precision": round(self.validated_precision, 4),
                                   "correctable precision": round(self.correctable_precision, 4),
                                   "labels changed": len(self.changed), "examples dropped": len(self.dropped)})]


def apply_review(labels: Any, num_classes: int, review: Review, *, suggested: Any = None,
                 drop_ambiguous: bool = True) -> Correction:
    """Apply verdicts exactly: ``suggested`` → the suggested label; ``given`` → unchanged; ``both`` and
    ``neither`` → dropped (or kept unchanged with ``drop_ambiguous=False``).

    The suggested label comes from the review row, else from ``suggested`` (an N array, e.g. the
    audit's argmax). A review's ``given`` column must match ``labels`` (guards against reviewing
    another dataset or ordering).

    Parameters
    ----------
    labels : array-like
        The given labels, shape ``(N,)``, integers in ``0..K-1``.
    num_classes : int
        K.
    review : Review
        The verdicts.
    suggested : array-like, optional
        Suggested label of every example, shape ``(N,)``, used where a review row names none.
    drop_ambiguous : bool, default True
        Drop ``both``/``neither`` examples (else keep them with their given label).

    Returns
    -------
    Correction
        The corrected labels, the rows kept, changed and dropped, and the review's precisions.

    Raises
    ------
    BadInput
        When the review names unknown indices, its ``given`` labels disagree with ``labels``, a
        ``suggested`` verdict has no suggested label, or a label is out of range.

    Examples
    --------
    >>> c = apply_review([0, 1, 1], 2, Review({0: "suggested", 2: "neither"}), suggested=[1, 1, 0])
    >>> c.labels.tolist(), c.keep.tolist(), c.changed.tolist()
    ([1, 1, 1], [True, True, False], [0])
    """
    y = validate_labels(labels, num_classes)
    n = len(y)
    sugg = None if suggested is None else validate_labels(np.asarray(suggested), num_classes)
    require(sugg is None or len(sugg) == n, f"suggested labels have length {0 if sugg is None else len(sugg)}, "
                                            f"expected {n}")
    unknown = sorted(i for i in review.verdicts if not 0 <= i < n)
    require(not unknown, f"review names unknown indices {unknown[:5]}{' …' if len(unknown) > 5 else ''}; "
                         f"the dataset has indices 0..{n - 1}")
    out = y.copy()
    keep = np.ones(n, dtype=bool)
    for i, g in review.given.items():
        require(g == y[i], f"review says index {i} has given label {g}, but the dataset's label is {y[i]}: "
                           "is this the review of another dataset?")
    for i, v in review.verdicts.items():
        if v == "suggested":
            s = review.suggested.get(i, None if sugg is None else int(sugg[i]))
            require(s is not None, f"verdict 'suggested' for index {i} but no suggested label: add a "
                                   "'suggested' column or pass the audit's suggested labels")
            require(0 <= s < num_classes, f"suggested label {s} for index {i} is outside 0..{num_classes - 1}")
            out[i] = s
        elif v in ("both", "neither") and drop_ambiguous:
            keep[i] = False
    counts = {v: sum(1 for x in review.verdicts.values() if x == v) for v in VERDICTS}
    reviewed = len(review.verdicts)
    return Correction(out, keep, np.flatnonzero(out != y), np.flatnonzero(~keep), counts, reviewed,
                      (reviewed - counts["given"]) / reviewed, counts["suggested"] / reviewed)


def save_corrected(ds: ImageDataset, correction: Correction, path: str | Path) -> Path:
    """Write the corrected dataset as ``.npz`` (images uint8 if exact, labels, class names, original
    indices and labels), atomically. Readable by ``load_dataset("npz:PATH")``.

    Parameters
    ----------
    ds : ImageDataset
        The reviewed dataset.
    correction : Correction
        The result of :func:`apply_review` on its labels.
    path : str or pathlib.Path
        Output file, ending in ``.npz``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    BadInput
        When ``path`` does not end in ``.npz``.
    """
    path = Path(path)
    require(path.suffix == ".npz", f"output must end in .npz, got {path.name}")
    keep = np.flatnonzero(correction.keep)
    imgs = ds.images[torch.as_tensor(keep)].numpy()
    as_u8 = np.round(imgs * 255)
    images = as_u8.astype(np.uint8) if np.allclose(as_u8 / 255, imgs, atol=1e-6) else imgs
    arrays = {"images": images, "labels": correction.labels[keep].astype(np.int64),
              "class_names": np.array(ds.class_names, dtype=str),
              "original_index": keep.astype(np.int64),
              "original_labels": validate_labels(ds.labels, ds.num_classes)[keep]}

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def corrected_npz_bytes(ds: ImageDataset, correction: Correction) -> bytes:
    """The same ``.npz`` as :func:`save_corrected`, in memory (app downloads).

    Parameters
    ----------
    ds : ImageDataset
        The reviewed dataset.
    correction : Correction
        The result of :func:`apply_review` on its labels.

    Returns
    -------
    bytes
        The ``.npz`` file's content.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = save_corrected(ds, correction, Path(d) / "corrected.npz")
        return p.read_bytes()
