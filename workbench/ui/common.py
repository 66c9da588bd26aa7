"""Widgets and cached state shared by the app's pages: dataset and model pickers, progress.

The current dataset and model live in ``st.session_state``; trained models also go into a
process-wide store (``st.cache_resource``) keyed by their parameters, so a page reload or another
session never retrains the same thing.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path

import streamlit as st
import torch

from ..data import ImageDataset, load_dataset, load_npz
from ..errors import BadInput
from ..models import LoadedModel, load_model

EMBEDDED = ("mnist10k", "digits")


@st.cache_resource(show_spinner="Loading dataset…")
def cached_dataset(spec: str) -> ImageDataset:
    return load_dataset(spec)


@st.cache_resource(show_spinner=False)
def model_store() -> dict:
    """Process-wide store of trained models and results: key → object."""
    return {}


class _SessionFolder:
    """A private folder (``mkdtemp``: mode 0700, unpredictable name) for one browser session's uploads,
    removed when the session's state is dropped or the server exits."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="workbench-session-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)


def session_folder() -> Path:
    """This session's private upload folder (created on first use)."""
    if "_upload_folder" not in st.session_state:
        st.session_state["_upload_folder"] = _SessionFolder()
    return st.session_state["_upload_folder"].path


def _upload_to_file(uploaded, name: str | None = None) -> Path:
    """Write an upload into its own subfolder of the session folder, named by its content's hash (the
    same upload is written once per session; nothing is shared between sessions)."""
    data = uploaded.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:24]
    folder = session_folder() / digest
    folder.mkdir(exist_ok=True)
    path = folder / (name or Path(uploaded.name).name or "upload")
    if not path.exists():
        path.write_bytes(data)
    return path


def upload_limit_note() -> str:
    """The page's statement of the upload size limit (``server.maxUploadSize``, in MB)."""
    return f"Uploads up to {st.get_option('server.maxUploadSize')} MB each (server.maxUploadSize)."


@st.cache_resource(show_spinner="Reading upload…")
def _dataset_from_upload(path: str) -> ImageDataset:
    return load_npz(path)


def dataset_picker(key: str = "data") -> ImageDataset | None:
    """Choose an embedded dataset or upload an .npz; returns the dataset (or None after an error)."""
    choice = st.selectbox("Dataset", [*EMBEDDED, "upload .npz"], key=f"{key}_choice",
                          help="mnist10k: 10,000 real MNIST digits shipped with the package; "
                               "digits: scikit-learn's 8×8 digits.")
    try:
        if choice == "upload .npz":
            up = st.file_uploader("An .npz with arrays 'images' and 'labels'", type=["npz"], key=f"{key}_upload",
                                  help=upload_limit_note())
            if up is None:
                return None
            ds = _dataset_from_upload(str(_upload_to_file(up)))
        else:
            ds = cached_dataset(choice)
    except BadInput as exc:
        st.error(f"Cannot use this dataset: {exc}")
        return None
    st.session_state["dataset"] = ds
    st.session_state["dataset_spec"] = choice if choice in EMBEDDED else ds.name
    return ds


def current_dataset() -> ImageDataset | None:
    return st.session_state.get("dataset")


def current_model() -> LoadedModel | None:
    """The model chosen on the Data & model page (trained there or uploaded)."""
    return st.session_state.get("model")


def set_current_model(loaded: LoadedModel) -> None:
    st.session_state["model"] = loaded


def require_model_and_data() -> tuple[LoadedModel, ImageDataset] | None:
    """The current model bound to the current dataset (its card completed from the data), or a hint
    to go to the Data & model page, or the reason they do not fit (shape, channels, classes)."""
    loaded, ds = current_model(), current_dataset()
    if loaded is None or ds is None:
        st.warning("Choose a dataset and train or upload a model on the **Data & model** page first.")
        return None
    try:
        bound = bind_model(loaded, ds)
    except BadInput as exc:
        st.error(f"The current model does not fit this dataset: {exc}")
        return None
    return bound, ds


def bind_model(loaded: LoadedModel, ds: ImageDataset) -> LoadedModel:
    """``loaded.bind`` for the dataset, cached per (model, dataset) in the session (the check probes the model)."""
    cache = st.session_state.setdefault("_bound", {})
    key = (id(loaded.model), loaded.source, ds.name, len(ds), tuple(ds.input_shape))
    if key not in cache:
        cache.clear()
        cache[key] = loaded.bind(ds.input_shape, ds.num_classes, ds.class_names, what=ds.name)
    return cache[key]


UPLOAD_KINDS = {
    "zip": "A zipped model folder (.zip): transformers save_pretrained, or workbench",
    "weights": "Weights (.safetensors / .pt state dict) with their model.json",
    "factory": "Your architecture: a .py file with a factory function, plus weights",
    "torchscript": "A TorchScript archive (.pt)",
}


def upload_model(key: str = "model_upload") -> LoadedModel | None:
    """Upload a model in any of :data:`UPLOAD_KINDS`; returns it loaded (or None, with the reason shown).

    Kinds that run code stored with the model (a factory ``.py``, TorchScript) are refused unless the
    page's trust switch is on (off by default), as ``--trust-code`` on the command line. Files go to
    this session's private folder; the loaded model is cached in the session by the files' hashes.
    """
    kind = st.radio("What are you uploading?", list(UPLOAD_KINDS), format_func=UPLOAD_KINDS.get, key=f"{key}_kind")
    st.caption(upload_limit_note())
    files: dict[str, object] = {}
    arch_name = "factory"
    if kind == "zip":
        files["model.zip"] = st.file_uploader("Zipped model folder", type=["zip"], key=f"{key}_zip")
    elif kind == "weights":
        w = st.file_uploader("Weights", type=["safetensors", "pt", "pth", "bin"], key=f"{key}_w")
        files["model" + (Path(w.name).suffix if w is not None else "")] = w
        files["model.json"] = st.file_uploader("model.json", type=["json"], key=f"{key}_j")
    elif kind == "factory":
        files["architecture.py"] = st.file_uploader("Architecture (.py)", type=["py"], key=f"{key}_py")
        arch_name = st.text_input("Factory function in that file", "make_model", key=f"{key}_fn")
        w = st.file_uploader("Weights", type=["safetensors", "pt", "pth"], key=f"{key}_fw")
        files["weights" + (Path(w.name).suffix if w is not None else "")] = w
    else:
        files["model.pt"] = st.file_uploader("TorchScript archive", type=["pt", "pth"], key=f"{key}_ts")
    runs_code = kind in ("factory", "torchscript")
    trust = False
    if runs_code:
        trust = st.toggle("I trust this file: allow it to run its code (like --trust-code)", value=False,
                          key=f"{key}_trust",
                          help="A factory .py is imported and TorchScript's code runs when it is loaded: "
                               "turn this on only for files you trust.")
    if any(f is None for f in files.values()):
        return None
    if runs_code and not trust:
        st.warning("This kind of model runs code stored with it; it is not loaded unless you trust it "
                   "(the switch above).")
        return None
    digest = hashlib.sha256(b"".join(f.getvalue() for f in files.values()) + arch_name.encode()).hexdigest()
    cache = st.session_state.setdefault("_uploaded_models", {})
    if digest in cache:
        return cache[digest]
    folder = session_folder() / f"model-{digest[:24]}"
    folder.mkdir(exist_ok=True)
    for name, f in files.items():
        (folder / name).write_bytes(f.getvalue())
    try:
        with st.spinner("Loading the model…"):
            if kind == "zip":
                loaded = load_model(folder / "model.zip")
            elif kind == "weights":
                loaded = load_model(next(p for p in folder.iterdir() if p.name.startswith("model.")
                                         and p.suffix != ".json"))
            elif kind == "factory":
                wfile = next(p for p in folder.iterdir() if p.name.startswith("weights"))
                loaded = load_model(f"{folder / 'architecture.py'}:{arch_name}", weights=wfile, trust_code=True)
            else:
                loaded = load_model(folder / "model.pt", trust_code=True)
    except BadInput as exc:
        st.error(f"Cannot load this model: {exc}")
        return None
    cache.clear()  # one uploaded model per session is kept
    cache[digest] = loaded
    return loaded


def progress_callback(bar):
    """Adapt ``st.progress`` to the library's ``progress(fraction, message)``."""
    return lambda fraction, message="": bar.progress(min(1.0, float(fraction)), text=message)


def sample_grid(images: torch.Tensor, captions: list[str], columns: int = 8, width: int = 72) -> None:
    from ..report import to_uint8_images

    imgs = to_uint8_images(images)
    st.image(list(imgs), caption=captions, width=width)
