"""App page: Data & model — pick data, see it, train a model with progress or upload one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ..data import held_out
from ..errors import BadInput
from ..models import LoadedModel, describe_layers
from ..report import heatmap_png
from ..training import evaluate, train_classifier
from .common import (
    bind_model,
    current_model,
    dataset_picker,
    model_store,
    progress_callback,
    sample_grid,
    set_current_model,
    upload_model,
)

TITLE = "Data & model"
ICON = ":material/dataset:"
URL = "data"


def render() -> None:
    st.title("Data & model")
    ds = dataset_picker()
    if ds is None:
        return
    c1, c2 = st.columns([3, 2])
    with c1:
        st.subheader(f"{ds.name}: {len(ds)} images, {ds.channels}×{ds.image_size[0]}×{ds.image_size[1]}")
        n = min(24, len(ds))
        step = max(1, len(ds) // n)
        idx = list(range(0, len(ds), step))[:n]
        sample_grid(ds.images[idx], [ds.class_names[int(ds.labels[i])] for i in idx])
    with c2:
        counts = pd.DataFrame({"class": ds.class_names, "images": ds.class_counts()}).set_index("class")
        st.bar_chart(counts)

    st.header("Model")
    tab_train, tab_upload = st.tabs(["Train a model", "Upload a model"])
    with tab_train:
        a, b, c = st.columns(3)
        arch = a.selectbox("Architecture", ["cnn", "resnet"], key="arch")
        epochs = b.number_input("Epochs", 1, 50, 4 if ds.image_size[0] <= 16 else 6, key="epochs")
        seed = c.number_input("Seed", 0, 10_000, 0, key="seed")
        key = ("train", st.session_state.get("dataset_spec"), ds.name, len(ds), arch, int(epochs), int(seed))
        store = model_store()
        if st.button("Train", type="primary", key="train_button"):
            bar = st.progress(0.0, text="starting")
            with st.status(f"Training {arch} on {ds.name}…", expanded=False) as status:
                trained = train_classifier(ds, arch, epochs=int(epochs), seed=int(seed),
                                           progress=progress_callback(bar))
                status.update(label=f"Trained in {trained.history.seconds:.1f} s", state="complete")
            store[key] = trained
        trained = store.get(key)
        if trained is not None:
            set_current_model(LoadedModel(trained.model, trained.card, "trained in the app"))
            st.metric("Test accuracy", f"{100 * trained.evaluation.accuracy:.2f}%")
            st.image(heatmap_png(trained.evaluation.confusion, ds.class_names, ds.class_names,
                                 "predicted", "true"), caption="Confusion matrix on the held-out test split")
    with tab_upload:
        loaded = upload_model()
        if loaded is not None:
            try:
                bound = bind_model(loaded, ds)
            except BadInput as exc:
                st.error(f"Loaded {loaded.source}, but it does not fit {ds.name}: {exc}")
            else:
                set_current_model(bound)
                split = held_out(ds, bound.card.provenance)
                ev = evaluate(bound.model, split.data)
                st.success(f"Loaded {bound.card.arch} from {Path(bound.source).name}: "
                           f"{bound.card.num_classes} classes, inputs {tuple(bound.card.input_shape)}")
                st.metric("Accuracy", f"{100 * ev.accuracy:.2f}%", help=f"Evaluated on {len(split.data)} images: "
                          f"{split.note}")
                st.image(heatmap_png(ev.confusion, ds.class_names, ds.class_names, "predicted", "true"),
                         caption="Confusion matrix of the uploaded model")

    loaded = current_model()
    if loaded is not None:
        with st.expander(f"Current model: {loaded.card.arch} ({loaded.source}) — layers"):
            try:
                layers = describe_layers(loaded.model, tuple(loaded.card.input_shape or ds.input_shape))
            except BadInput as exc:
                st.info(str(exc))
            else:
                st.dataframe(pd.DataFrame([{"layer": l.name, "type": l.type, "output": str(l.output_shape),
                                            "params": l.parameters} for l in layers]), hide_index=True)
