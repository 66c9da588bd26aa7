"""Results to JSON and to a self-contained HTML page (images inlined as base64 PNG).

A result is a dataclass. ``write_report(result, out_dir)`` writes ``report.json`` (every field;
tensors and arrays as lists, large ones moved to ``arrays.npz``) and ``report.html``. What the HTML
shows comes from the result's ``report_sections()`` when it has one (a list of :class:`Metrics`,
:class:`Table`, :class:`ImageGrid`, :class:`Heatmap`, :class:`Figure`, :class:`Text`); otherwise its
scalar fields form a metrics table. Every file is written atomically.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write, atomic_write_text

LARGE_ARRAY = 20_000  # elements; larger arrays go to arrays.npz, the JSON keeps their shape


@dataclass
class Metrics:
    """A report section: named values shown as a two-column table.

    Parameters
    ----------
    title : str
        The section heading.
    values : dict of str to Any
        Name → value; floats are shown with 4 significant digits.

    Returns
    -------
    A Metrics (dataclass) for ``report_sections()`` or :func:`write_report`'s ``sections``.

    Examples
    --------
    >>> render_section(Metrics("Accuracy", {"clean": 0.98765}))
    "<h2>Accuracy</h2><table class='metrics'><tr><th>clean</th><td>0.9877</td></tr></table>"
    """

    title: str
    values: dict[str, Any]


@dataclass
class Table:
    """A report section: a table with a header row and an optional note below it.

    Parameters
    ----------
    title : str
        The section heading.
    columns : list of str
        Column headers.
    rows : list of list
        One list per row, one value per column; floats are shown with 4 significant digits.
    note : str, default ""
        A line under the table (e.g. how the figures were measured).

    Returns
    -------
    A Table (dataclass) for ``report_sections()`` or :func:`write_report`'s ``sections``.

    Examples
    --------
    >>> render_section(Table("T", ["a", "b"], [[1, 2.5]]))
    '<h2>T</h2><table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2.5</td></tr></table>'
    """

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class ImageGrid:
    """Images N×C×H×W (or N×H×W) in [0, 1], optionally with per-image captions and heat overlays.

    Parameters
    ----------
    title : str
        The section heading.
    images : torch.Tensor or numpy.ndarray
        N×C×H×W (C = 1 or 3) or N×H×W, values in [0, 1] (clipped).
    captions : list of str, optional
        One caption per image.
    overlays : torch.Tensor or numpy.ndarray, optional
        N×H×W saliency in [0, 1], blended over the images as a 'jet' heat map.
    columns : int, default 8
        Images per row.
    scale : int, default 3
        Nearest-neighbour upscaling of each image.

    Returns
    -------
    An ImageGrid (dataclass) for ``report_sections()`` or :func:`write_report`'s ``sections``.
    """

    title: str
    images: Any
    captions: list[str] | None = None
    overlays: Any = None  # N×H×W saliency in [0, 1], blended as a heat map
    columns: int = 8
    scale: int = 3


@dataclass
class Heatmap:
    """A report section: a matrix drawn as a heat map (values written in cells up to 400 cells).

    Parameters
    ----------
    title : str
        The section heading.
    matrix : array-like
        R×C numbers (e.g. a confusion matrix).
    row_labels, col_labels : list of str, optional
        Tick labels of the rows and columns.
    xlabel, ylabel : str, default ""
        Axis labels.

    Returns
    -------
    A Heatmap (dataclass) for ``report_sections()`` or :func:`write_report`'s ``sections``.
    """

    title: str
    matrix: Any
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None
    xlabel: str = ""
    ylabel: str = ""


@dataclass
class Figure:
    """A ready PNG (e.g. from matplotlib via :func:`figure_png`).

    Parameters
    ----------
    title : str
        The section heading.
    png : bytes
        The PNG file's bytes (inlined as base64).

    Returns
    -------
    A Figure (dataclass) for ``report_sections()`` or :func:`write_report`'s ``sections``.
    """

    title: str
    png: bytes


@dataclass
class Text:
    """A report section: paragraphs of text (separated by blank lines; HTML-escaped).

    Parameters
    ----------
    title : str
        The section heading.
    body : str
        The text; ``"\\n\\n"`` separates paragraphs.

    Returns
    -------
    A Text (dataclass) for ``report_sections()`` or :func:`write_report`'s ``sections``.

    Examples
    --------
    >>> render_section(Text("Notes", "one\\n\\ntwo"))
    '<h2>Notes</h2><p>one</p><p>two</p>'
    """

    title: str
    body: str


Section = Metrics | Table | ImageGrid | Heatmap | Figure | Text


# ---------------------------------------------------------------- JSON
def to_jsonable(obj: Any, arrays: dict[str, np.ndarray], path: str = "") -> Any:
    """Convert a result into JSON types; arrays over LARGE_ARRAY elements go into ``arrays``.

    Dataclasses become dicts (fields starting with ``_`` left out), tensors and arrays lists, NumPy
    scalars Python numbers, non-finite floats ``None``, paths strings, bytes their length, modules
    their class name, and anything else its ``repr``.

    Parameters
    ----------
    obj : Any
        The result (usually a dataclass).
    arrays : dict of str to numpy.ndarray
        Filled with the arrays over :data:`LARGE_ARRAY` elements, keyed by their dotted path; the JSON
        keeps their shape, dtype and ``"arrays.npz:KEY"``.
    path : str, default ""
        The dotted path of ``obj`` inside the result (for the keys).

    Returns
    -------
    Any
        ``obj`` in JSON types (dict, list, str, int, float, bool, None).

    Examples
    --------
    >>> import numpy as np, torch
    >>> arrays = {}
    >>> to_jsonable({"acc": np.float32(0.5), "x": torch.arange(3), "nan": float("nan")}, arrays)
    {'acc': 0.5, 'x': [0, 1, 2], 'nan': None}
    >>> to_jsonable({"big": np.zeros(30000)}, arrays), list(arrays)
    ({'big': {'shape': [30000], 'dtype': 'float64', 'stored_in': 'arrays.npz:big'}}, ['big'])
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), arrays, f"{path}.{f.name}".strip("."))
                for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, torch.nn.Module):
        return {"module": type(obj).__name__}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.size > LARGE_ARRAY:
            key = path or f"array{len(arrays)}"
            arrays[key] = obj
            return {"shape": list(obj.shape), "dtype": str(obj.dtype), "stored_in": f"arrays.npz:{key}"}
        return to_jsonable(obj.tolist(), arrays, path)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, arrays, f"{path}.{k}".strip(".")) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, arrays, f"{path}.{i}".strip(".")) for i, v in enumerate(obj)]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return {"bytes": len(obj)}
    return repr(obj)


# ---------------------------------------------------------------- images
def to_uint8_images(images: Any) -> np.ndarray:
    """N×H×W×3 uint8 from N×C×H×W / N×H×W tensors or arrays in [0, 1].

    One channel is repeated to three; more than three are cut to the first three; values are
    clipped to [0, 1] and rounded.

    Parameters
    ----------
    images : torch.Tensor or array-like
        N×C×H×W or N×H×W, values in [0, 1].

    Returns
    -------
    numpy.ndarray
        N×H×W×3, dtype uint8.

    Examples
    --------
    >>> import torch
    >>> out = to_uint8_images(torch.full((2, 1, 4, 5), 0.5))
    >>> out.shape, out[0, 0, 0].tolist()
    ((2, 4, 5, 3), [128, 128, 128])
    """
    arr = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    arr = np.moveaxis(arr[:, :3], 1, 3)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] values to RGB in [0, 1] with matplotlib's 'jet' colour map.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; values are clipped to [0, 1].

    Returns
    -------
    numpy.ndarray
        ``values.shape + (3,)``, floats in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> heat_colors(np.array([0.0, 1.0])).round(3).tolist()
    [[0.0, 0.0, 0.5], [0.5, 0.0, 0.0]]
    """
    from matplotlib import colormaps

    return colormaps["jet"](np.clip(values, 0, 1))[..., :3]


def overlay_heat(images: Any, heat: Any, alpha: float = 0.5) -> np.ndarray:
    """Blend N×H×W heat maps in [0, 1] over images: N×H×W×3 floats in [0, 1].

    Parameters
    ----------
    images : torch.Tensor or array-like
        N×C×H×W or N×H×W images in [0, 1].
    heat : torch.Tensor or array-like
        N×H×W (or N×1×H×W) heat maps in [0, 1], the images' size.
    alpha : float, default 0.5
        Weight of the heat map, in [0, 1].

    Returns
    -------
    numpy.ndarray
        N×H×W×3, ``(1 − alpha) · image + alpha · jet(heat)``.

    Examples
    --------
    >>> import torch
    >>> overlay_heat(torch.zeros(2, 3, 4, 4), torch.ones(2, 4, 4)).shape
    (2, 4, 4, 3)
    """
    base = to_uint8_images(images).astype(np.float32) / 255.0
    h = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    h = h.reshape(h.shape[0], *h.shape[-2:])
    return (1 - alpha) * base + alpha * heat_colors(h)


def png_bytes(image_hw3: np.ndarray, scale: int = 1) -> bytes:
    """One image as PNG bytes, optionally upscaled (nearest neighbour).

    Parameters
    ----------
    image_hw3 : numpy.ndarray
        H×W×3, uint8 or floats in [0, 1] (clipped and rounded).
    scale : int, default 1
        Integer upscaling factor.

    Returns
    -------
    bytes
        The PNG file.

    Examples
    --------
    >>> import numpy as np
    >>> png_bytes(np.zeros((4, 4, 3), np.uint8), scale=2)[:4]
    b'\\x89PNG'
    """
    from PIL import Image

    arr = image_hw3 if image_hw3.dtype == np.uint8 else (np.clip(image_hw3, 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(arr)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; saved at 110 dpi with a tight bounding box, then closed.

    Returns
    -------
    bytes
        The PNG file.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plain(text: Any) -> str:
    """``text`` for matplotlib as plain text: a ``$`` would start mathtext, so a class named
    ``$x^$`` would crash the drawing (and ``$\\alpha$`` would render as α); escaped, it prints as given.

    Parameters
    ----------
    text : Any
        A label (converted with ``str``).

    Returns
    -------
    str
        The text with every ``$`` escaped.

    Examples
    --------
    >>> print(plain("$x^$"))
    \\$x^\\$
    """
    return str(text).replace("$", r"\$")


def heatmap_png(matrix: Any, row_labels=None, col_labels=None, xlabel="", ylabel="", title="") -> bytes:
    """A matrix drawn as a 'viridis' heat map with a colour bar, as PNG bytes.

    Cell values are written in the cells when there are at most 400 (integers as such, others with
    two decimals). Labels are drawn as plain text (see :func:`plain`).

    Parameters
    ----------
    matrix : array-like
        R×C numbers.
    row_labels, col_labels : list of str, optional
        Tick labels.
    xlabel, ylabel, title : str, default ""
        Axis labels and title.

    Returns
    -------
    bytes
        The PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * m.shape[1], 1.0 + 0.4 * m.shape[0]))
    im = ax.imshow(m, cmap="viridis")
    if m.size <= 400:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = m[i, j]
                txt = f"{int(v)}" if float(v).is_integer() else f"{v:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="white" if v < (m.max() + m.min()) / 2 else "black")
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), [plain(t) for t in row_labels])
    if col_labels is not None:
        ax.set_xticks(range(len(col_labels)), [plain(t) for t in col_labels])
    ax.set_xlabel(plain(xlabel))
    ax.set_ylabel(plain(ylabel))
    if title:
        ax.set_title(plain(title))
    fig.colorbar(im, ax=ax, fraction=0.046)
    return figure_png(fig)


def _img_tag(png: bytes, alt: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return html.escape(f"[{len(v)} values]")
    return html.escape(str(v))


def render_section(sec: Section) -> str:
    """One report section as an HTML fragment (a heading and its content; text is HTML-escaped).

    Parameters
    ----------
    sec : Metrics, Table, ImageGrid, Heatmap, Figure or Text
        The section.

    Returns
    -------
    str
        HTML: an ``<h2>`` heading followed by a table, an image grid, an inlined PNG or paragraphs.

    Raises
    ------
    TypeError
        If ``sec`` is not one of the section types.

    Examples
    --------
    >>> render_section(Metrics("Accuracy", {"clean": 0.5}))
    "<h2>Accuracy</h2><table class='metrics'><tr><th>clean</th><td>0.5</td></tr></table>"
    """
    title = f"<h2>{html.escape(sec.title)}</h2>"
    if isinstance(sec, Metrics):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in sec.values.items())
        return f"{title}<table class='metrics'>{rows}</table>"
    if isinstance(sec, Table):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in sec.columns)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in sec.rows)
        note = f"<p class='note'>{html.escape(sec.note)}</p>" if sec.note else ""
        return f"{title}<table><tr>{head}</tr>{body}</table>{note}"
    if isinstance(sec, ImageGrid):
        imgs = overlay_heat(sec.images, sec.overlays) if sec.overlays is not None else to_uint8_images(sec.images)
        cells = []
        for i, im in enumerate(imgs):
            cap = html.escape(sec.captions[i]) if sec.captions and i < len(sec.captions) else ""
            cells.append(f"<figure>{_img_tag(png_bytes(im, sec.scale), cap)}<figcaption>{cap}</figcaption></figure>")
        return f"{title}<div class='grid' style='grid-template-columns: repeat({sec.columns}, auto)'>{''.join(cells)}</div>"
    if isinstance(sec, Heatmap):
        png = heatmap_png(sec.matrix, sec.row_labels, sec.col_labels, sec.xlabel, sec.ylabel)
        return f"{title}{_img_tag(png, sec.title)}"
    if isinstance(sec, Figure):
        return f"{title}{_img_tag(sec.png, sec.title)}"
    if isinstance(sec, Text):
        paras = "".join(f"<p>{html.escape(p)}</p>" for p in sec.body.split("\n\n"))
        return f"{title}{paras}"
    raise TypeError(f"unknown report section {type(sec).__name__}")


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}.metrics th{text-align:left}.grid{display:grid;gap:6px}
figure{margin:0;text-align:center;font-size:11px}img{image-rendering:pixelated}.note{color:#555;font-size:90%}
footer{margin-top:2em;color:#777;font-size:85%}"""


def default_sections(result: Any) -> list[Section]:
    """The sections of a result that has no ``report_sections()``: its scalar fields as metrics.

    Parameters
    ----------
    result : Any
        A dataclass (its int, float, str and bool fields are shown) or any value.

    Returns
    -------
    list of Metrics
        One :class:`Metrics` section titled "Results".

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class R:
    ...     accuracy: float
    ...     per_class: list
    >>> default_sections(R(0.9, [1, 2]))
    [Metrics(title='Results', values={'accuracy': 0.9})]
    """
    if dataclasses.is_dataclass(result):
        scalars = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                   if isinstance(getattr(result, f.name), (int, float, str, bool))}
        return [Metrics("Results", scalars)]
    return [Metrics("Results", {"value": result})]


def render_html(title: str, sections: Sequence[Section], provenance: dict | None = None) -> str:
    """A self-contained HTML page (inline CSS and images) of the sections.

    Parameters
    ----------
    title : str
        The page's title and ``<h1>``.
    sections : sequence of sections
        Rendered in order with :func:`render_section`.
    provenance : dict, optional
        Shown in a footer as ``key: value`` pairs (version, time written, result type).

    Returns
    -------
    str
        The HTML document.

    Examples
    --------
    >>> render_html("Audit", [Text("Notes", "all clear")]).startswith("<!doctype html>")
    True
    """
    body = "".join(render_section(s) for s in sections)
    prov = ""
    if provenance:
        prov = "<footer>" + " · ".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in provenance.items()) + "</footer>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}{prov}</body></html>")


def write_report(result: Any, out_dir: str | Path, title: str | None = None,
                 sections: Sequence[Section] | None = None) -> dict[str, Path]:
    """Write ``report.json`` (+ ``arrays.npz`` for large arrays) and ``report.html`` into ``out_dir``.

    Each file is written atomically. The JSON holds the title, provenance (workbench version, UTC time
    written, result type) and the result (:func:`to_jsonable`); the HTML shows ``sections``, else the
    result's ``report_sections()``, else :func:`default_sections`.

    Parameters
    ----------
    result : Any
        The result, usually a dataclass.
    out_dir : str or Path
        The folder to write into (created if missing).
    title : str, optional
        The report's title (default: the result's class name).
    sections : sequence of sections, optional
        What the HTML shows (default: from the result).

    Returns
    -------
    dict of str to Path
        ``"json"`` and ``"html"`` paths, and ``"arrays"`` when ``arrays.npz`` was written.
    """
    from . import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or type(result).__name__
    arrays: dict[str, np.ndarray] = {}
    provenance = {"workbench": __version__, "written": _dt.datetime.now(_dt.timezone.utc).isoformat(
        timespec="seconds"), "result": type(result).__name__}
    payload = {"title": title, "provenance": provenance, "result": to_jsonable(result, arrays)}
    paths = {"json": out / "report.json", "html": out / "report.html"}
    atomic_write_text(paths["json"], json.dumps(payload, indent=2))
    if arrays:
        paths["arrays"] = out / "arrays.npz"
        atomic_write(paths["arrays"], lambda p: np.savez_compressed(open(p, "wb"), **arrays))
    if sections is None:
        sections = result.report_sections() if hasattr(result, "report_sections") else default_sections(result)
    atomic_write_text(paths["html"], render_html(title, sections, provenance))
    return paths
