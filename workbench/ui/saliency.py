"""App page: Saliency — explain the current model's predictions with several methods and layers."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ..errors import BadInput
from ..report import overlay_heat
from .common import model_store, progress_callback, require_model_and_data

TITLE = "Saliency"
ICON = ":material/local_fire_department:"
URL = "saliency"

DEFAULT_METHODS = ["gradcam", "eigencam", "normgrad"]


def _spatial_layers(loaded) -> list[str]:
    from ..saliency import spatial_layers

    store = model_store()
    key = ("spatial_layers", id(loaded.model), tuple(loaded.card.input_shape))
    if key not in store:
        store[key] = spatial_layers(loaded.model, tuple(loaded.card.input_shape))
    return store[key]


def _default_layer(loaded) -> str | None:
    """The library's default CAM layer for this model (declared, else the last spatial layer whose
    gradient is not identically zero), computed once per model."""
    from ..layers import default_cam_layer

    store = model_store()
    key = ("default_cam_layer", id(loaded.model), tuple(loaded.card.input_shape))
    if key not in store:
        try:
            store[key] = default_cam_layer(loaded.model, tuple(loaded.card.input_shape))
        except BadInput:
            store[key] = None
    return store[key]


def _uploaded_images(files, input_shape) -> torch.Tensor | None:
    from PIL import Image

    from ..data import open_image

    c, h, w = input_shape
    out = []
    for f in files:
        try:
            with open_image(io.BytesIO(f.getvalue()), f.name) as im:  # a decompression bomb is refused unread
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        except Exception as exc:  # noqa: BLE001 - any unreadable upload is reported, not raised
            st.error(f"Cannot read {f.name}: {exc}")
            return None
        arr = np.asarray(im, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, 2, 0)
        out.append(torch.from_numpy(arr.copy()))
    return torch.stack(out) if out else None


def _choose_images(ds, input_shape):
    """(images, labels or None, captions) from the dataset or an upload."""
    source = st.radio("Images", ["from the dataset", "upload"], horizontal=True, key="sal_source")
    if source == "upload":
        files = st.file_uploader("Images (PNG/JPEG); resized to the model's input", type=["png", "jpg", "jpeg"],
                                 accept_multiple_files=True, key="sal_upload")
        if not files:
            st.info("Upload one or more images.")
            return None
        imgs = _uploaded_images(files, input_shape)
        return None if imgs is None else (imgs, None, [f.name for f in files])
    a, b = st.columns(2)
    n = int(a.number_input("Number of images", 1, min(64, len(ds)), min(8, len(ds)), key="sal_n"))
    seed = int(b.number_input("Sample seed", 0, 10_000, 0, key="sal_seed"))
    picked = ds.sample(n, seed)
    return picked.images, picked.labels, [f"#{int(i)}" for i in picked.indices]


def render() -> None:
    from ..saliency import combine_maps, explain
    from ..saliency.explain import method_names

    st.title(TITLE)
    st.caption("Grad-CAM, Eigen-CAM and NormGrad (all variants, meta-saliency) at any spatial layer, "
               "judged with deletion/insertion AUC, class sensitivity and the model-randomization check.")
    got = require_model_and_data()
    if got is None:
        return
    loaded, ds = got
    picked = _choose_images(ds, tuple(loaded.card.input_shape))
    if picked is None:
        return
    images, labels, names = picked
    layers_all = _spatial_layers(loaded)
    default_layer = _default_layer(loaded)
    c1, c2 = st.columns(2)
    methods = c1.multiselect("Methods", method_names(), DEFAULT_METHODS, key="sal_methods")
    layers = c2.multiselect("Layers", layers_all, [default_layer] if default_layer in layers_all else layers_all[-1:],
                            key="sal_layers")
    classes = list(loaded.card.class_names)
    c3, c4, c5 = st.columns(3)
    tmode = c3.radio("Explain", ["predicted class", "true class", "a chosen class"], key="sal_target",
                     disabled=False)
    cls = c4.selectbox("Class", classes, key="sal_class", disabled=tmode != "a chosen class")
    sanity = c5.checkbox("Model-randomization check", False, key="sal_sanity",
                         help="Re-initialise the layers top down and measure how much the maps change (slower).")
    if not methods or not layers:
        st.info("Pick at least one method and one layer.")
        return
    if tmode == "true class" and labels is None:
        st.warning("Uploaded images have no true class: explaining the predicted class.")
    target = None
    if tmode == "true class" and labels is not None:
        target = labels
    elif tmode == "a chosen class":
        target = classes.index(cls)

    key = ("saliency", id(loaded.model), tuple(methods), tuple(layers), tmode, str(cls), bool(sanity),
           tuple(names), int(images.shape[0]))
    if st.button("Explain", type="primary", key="sal_run"):
        bar = st.progress(0.0, text="starting")
        try:
            with st.status("Computing saliency maps…", expanded=False) as status:
                res = explain(loaded.model, images, methods, layers, target, labels=labels, class_names=classes,
                              sanity=sanity, progress=progress_callback(bar))
                status.update(label=f"Done: {len(methods)} methods × {len(layers)} layers", state="complete")
            st.session_state["saliency_result"] = (key, res)
        except BadInput as exc:
            st.error(str(exc))
            return
    stored = st.session_state.get("saliency_result")
    if stored is None or stored[0] != key:
        st.info("Press **Explain** to compute the maps.")
        return
    res = stored[1]

    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="sal_alpha")
    cap = [f"{n}: {classes[p]} (expl. {classes[t]})" for n, p, t in zip(names, res.predictions, res.targets)]
    for lay in res.layers:
        st.subheader(f"Layer {lay}")
        cols = st.columns(len(res.methods))
        for col, meth in zip(cols, res.methods):
            col.markdown(f"**{meth}**")
            over = np.clip(overlay_heat(res.images, res.map(meth, lay), alpha), 0, 1)
            col.image(list(over), caption=cap, width=96)

    st.subheader("Metrics")
    mcols, rows = res.metrics_table()
    st.dataframe(pd.DataFrame(rows, columns=mcols), hide_index=True)
    for meth, r in res.randomization.items():
        with st.expander(f"Model randomization: {meth}"):
            st.dataframe(pd.DataFrame({"randomized down to": r["randomized"],
                                       **{f"ρ at {l}": v for l, v in r["rho"].items()}}), hide_index=True)

    if len(res.layers) > 1:
        st.subheader("Layer combination")
        a, b = st.columns([1, 3])
        mode = a.radio("Combine", ["geometric", "sum"], key="sal_combine",
                       help="Weighted geometric mean (NormGrad's product) or weighted sum of the normalised maps.")
        weights = [b.slider(f"weight of {lay}", 0.0, 1.0, 1.0, 0.05, key=f"sal_w_{lay}") for lay in res.layers]
        if sum(weights) <= 0:
            st.warning("Give at least one layer a positive weight.")
            return
        cols = st.columns(len(res.methods))
        size = tuple(res.images.shape[-2:])
        for col, meth in zip(cols, res.methods):
            comb = combine_maps([res.map(meth, l)[:, None] for l in res.layers], size, mode=mode, weights=weights)
            col.markdown(f"**{meth}** combined")
            col.image(list(np.clip(overlay_heat(res.images, comb[:, 0], alpha), 0, 1)), caption=cap, width=96)
