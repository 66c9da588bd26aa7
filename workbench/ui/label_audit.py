"""App page: Label audit — run the audit with progress, review the flagged examples, download results.

No science here: the page gathers input, calls :mod:`workbench.labels` and renders its results.
cleanlab runs with ``n_jobs=1`` (its multiprocessing misbehaves inside Streamlit).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ..atomic import atomic_write_text
from ..errors import BadInput
from ..labels import (
    DEFAULT_FOLDS,
    DEFAULT_SEEDS,
    FILTER_BY,
    RANK_BY,
    VERDICTS,
    Review,
    apply_review,
    audit_labels,
    corrected_npz_bytes,
    csv_text,
)
from ..report import heatmap_png, to_uint8_images
from .common import current_dataset, current_model, model_store, progress_callback

TITLE = "Label audit"
ICON = ":material/label:"
URL = "label-audit"
PAGE_SIZE = 24

SOURCES = {"kfold": "K-fold cross-validation (train a zoo model per fold)",
           "embeddings": "Embeddings of the current model + logistic regression (fast)",
           "upload": "Upload out-of-sample probabilities (.npy)"}


def _verdict_file(key: tuple) -> Path:
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"workbench-label-verdicts-{digest}.json"


def _verdicts(key: tuple) -> dict[int, str]:
    """Verdicts of this audit: kept process-wide (survive a reload) and on disk."""
    store = model_store()
    vk = ("label_verdicts", key)
    if vk not in store:
        path = _verdict_file(key)
        try:
            store[vk] = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
        except (OSError, ValueError):
            store[vk] = {}
    return store[vk]


def _save_verdicts(key: tuple, verdicts: dict[int, str]) -> None:
    atomic_write_text(_verdict_file(key), json.dumps({str(k): v for k, v in sorted(verdicts.items())}))


def _verdicts_csv(audit, verdicts: dict[int, str]) -> str:
    return csv_text(["index", "given", "suggested", "verdict"],
                    ([i, int(audit.labels[i]), int(audit.suggested[i]), v] for i, v in sorted(verdicts.items())))


def _ranked_csv(audit) -> str:
    flagged = set(audit.flagged.tolist())
    return csv_text(["rank", "index", "given", "suggested", "given_name", "suggested_name", "score", "flagged"],
                    ([r, int(i), int(audit.labels[i]), int(audit.suggested[i]), audit.class_names[audit.labels[i]],
                      audit.class_names[audit.suggested[i]], f"{audit.scores[i]:.6f}", int(i in flagged)]
                     for r, i in enumerate(audit.ranked, 1)))


def _run_controls(ds):
    loaded = current_model()
    c1, c2, c3 = st.columns(3)
    options = list(SOURCES)
    source = c1.selectbox("Probabilities", options, format_func=SOURCES.get, key="la_source")
    folds = c2.number_input("Folds", 2, 10, DEFAULT_FOLDS, key="la_folds")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="la_seed")
    arch, epochs, seeds, upload = "cnn", 0, DEFAULT_SEEDS, None
    if source == "kfold":
        a, b, c = st.columns(3)
        arch = a.selectbox("Model per fold", ["cnn", "resnet"], key="la_arch")
        epochs = b.number_input("Epochs per model (0 = default)", 0, 50, 0, key="la_epochs")
        seeds = c.number_input("Models per fold", 1, 10, DEFAULT_SEEDS, key="la_seeds",
                               help="Models with different seeds trained per fold; their probabilities are averaged.")
    elif source == "embeddings" and loaded is None:
        st.warning("The embeddings path needs a trained model: train or upload one on the **Data & model** page.")
    elif source == "upload":
        upload = st.file_uploader(f"N×K probabilities ({len(ds)}×{ds.num_classes}), .npy", type=["npy"],
                                  key="la_upload")
    d1, d2, d3 = st.columns(3)
    filter_by = d1.selectbox("filter_by", FILTER_BY, key="la_filter",
                             help="cleanlab's pruning rule; 'paper' = the Confident Learning paper's count of "
                                  "errors (1 − trace C/ΣC)·N, then the lowest margins (Northcutt et al. 2021).")
    rank_by = d2.selectbox("Rank by", RANK_BY, key="la_rank")
    outliers = d3.checkbox("Outliers & near-duplicates (needs the current model)", value=False, key="la_outliers",
                           disabled=loaded is None)
    return dict(source=source, folds=int(folds), seed=int(seed), arch=arch, epochs=int(epochs), seeds=int(seeds),
                upload=upload,
                filter_by=filter_by, rank_by=rank_by, outliers=bool(outliers and loaded is not None)), loaded


def _run(ds, cfg, loaded, key) -> None:
    pred_probs = None
    if cfg["source"] == "upload":
        if cfg["upload"] is None:
            st.error("Upload a .npy of probabilities first.")
            return
        try:
            pred_probs = np.load(io.BytesIO(cfg["upload"].getvalue()), allow_pickle=False)
        except (OSError, ValueError, SyntaxError) as exc:
            st.error(f"Cannot read the upload as a .npy array: {exc}")
            return
    if cfg["source"] == "embeddings" and loaded is None:
        st.error("The embeddings path needs a trained model.")
        return
    bar = st.progress(0.0, text="starting")
    with st.status(f"Auditing the labels of {ds.name}…", expanded=False) as status:
        try:
            audit = audit_labels(
                ds, pred_probs=pred_probs,
                model=loaded.model if cfg["source"] == "embeddings" else cfg["arch"],
                method="embeddings" if cfg["source"] == "embeddings" else "kfold", folds=cfg["folds"],
                epochs=cfg["epochs"] or None, seeds=cfg["seeds"], filter_by=cfg["filter_by"], rank_by=cfg["rank_by"],
                embeddings=loaded.model if cfg["outliers"] else False, n_jobs=1, seed=cfg["seed"],
                progress=progress_callback(bar))
        except BadInput as exc:
            status.update(label="Failed", state="error")
            st.error(str(exc))
            return
        status.update(label=f"Done in {audit.seconds_total:.1f} s (cleanlab {audit.seconds_cleanlab:.2f} s)",
                      state="complete")
    model_store()[key] = audit
    st.session_state["la_key"] = key


def _gallery(audit, key) -> None:
    verdicts = _verdicts(key)
    names = audit.class_names
    candidates = audit.flagged if len(audit.flagged) else audit.ranked[:PAGE_SIZE]
    pages = max(1, (len(candidates) + PAGE_SIZE - 1) // PAGE_SIZE)
    st.subheader(f"Review: {len(audit.flagged)} flagged examples, most likely errors first")
    page = st.number_input("Page", 1, pages, 1, key="la_page") if pages > 1 else 1
    idx = candidates[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    ds = current_dataset()
    imgs = to_uint8_images(ds.images[idx]) if ds is not None and len(ds) == audit.n else None
    cols_per_row = 6
    for start in range(0, len(idx), cols_per_row):
        cols = st.columns(cols_per_row)
        for c, i in zip(cols, idx[start:start + cols_per_row], strict=False):
            i = int(i)
            with c:
                g, s = int(audit.labels[i]), int(audit.suggested[i])
                cap = (f"#{i} given **{names[g]}** → suggested **{names[s]}** "
                       f"(p={audit.pred_probs[i, s]:.2f}, score {audit.scores[i]:.3f})")
                if imgs is not None:
                    st.image(imgs[start + list(idx[start:start + cols_per_row]).index(i)], width=84)
                st.markdown(cap)
                current = verdicts.get(i)
                bcols = st.columns(2)
                for j, v in enumerate(VERDICTS):
                    label = ("✓ " if current == v else "") + v
                    if bcols[j % 2].button(label, key=f"la_v_{i}_{v}",
                                           type="primary" if current == v else "secondary"):
                        if current == v:
                            verdicts.pop(i, None)
                        else:
                            verdicts[i] = v
                        _save_verdicts(key, verdicts)
                        st.rerun()


def _review_outputs(audit, key) -> None:
    verdicts = _verdicts(key)
    st.subheader("Verdicts and corrected dataset")
    if not verdicts:
        st.info("No verdicts yet: mark examples above as given / suggested / both / neither.")
        return
    corr = apply_review(audit.labels, len(audit.class_names), Review(dict(verdicts)), suggested=audit.suggested)
    m = st.columns(4)
    m[0].metric("Reviewed", corr.reviewed)
    m[1].metric("Validated precision", f"{100 * corr.validated_precision:.1f}%",
                help="Share of reviewed flags that are label errors (verdict other than 'given').")
    m[2].metric("Labels changed", len(corr.changed))
    m[3].metric("Dropped (both/neither)", len(corr.dropped))
    st.caption(f"Verdicts saved to {_verdict_file(key)}")
    c1, c2 = st.columns(2)
    c1.download_button("Download verdicts (CSV)", _verdicts_csv(audit, verdicts), "verdicts.csv", "text/csv",
                       key="la_dl_verdicts")
    ds = current_dataset()
    if ds is not None and len(ds) == audit.n:
        c2.download_button("Download corrected dataset (.npz)", corrected_npz_bytes(ds, corr), "corrected.npz",
                           "application/octet-stream", key="la_dl_corrected")


def _health(audit) -> None:
    names = audit.class_names
    m = st.columns(4)
    m[0].metric("Out-of-sample accuracy", f"{100 * audit.out_of_sample_accuracy:.2f}%")
    m[1].metric("Estimated label errors", f"{audit.estimated_errors} ({100 * audit.estimated_error_rate:.2f}%)",
                help=f"cleanlab num_label_issues, {audit.estimate_method}")
    m[2].metric(f"Flagged ({audit.filter_by})", f"{audit.num_flagged}")
    m[3].metric("Label health score", f"{audit.health_score:.3f}")
    st.caption(audit.flagged_vs_estimate)
    st.caption(f"Probabilities: {audit.pred_probs_method}; {audit.seconds_total:.1f} s total, cleanlab "
               f"{audit.seconds_cleanlab:.2f} s.")
    with st.expander("Per-class health, joint and noise matrices, overlapping classes", expanded=False):
        st.dataframe(pd.DataFrame(audit.per_class).drop(columns=["index"]), hide_index=True)
        h1, h2 = st.columns(2)
        h1.image(heatmap_png(np.round(audit.joint * audit.n).astype(int), names, names, "true (estimated)", "given",
                             "Estimated joint × N"))
        h2.image(heatmap_png(np.round(audit.noise_matrix, 3), names, names, "true (estimated)", "given",
                             "Noise matrix P(given | true)"))
        if audit.overlapping:
            st.dataframe(pd.DataFrame(audit.overlapping)[["class_a", "class_b", "num_overlapping",
                                                          "joint_probability"]], hide_index=True)
        if audit.embedding is not None:
            e = audit.embedding
            st.write(f"Outliers: {e.num_outliers}; examples in near-duplicate sets: {e.num_near_duplicates} "
                     f"({e.metric} distance, k={e.k}).")
    st.download_button("Download the full ranking (CSV)", _ranked_csv(audit), "label_ranking.csv", "text/csv",
                       key="la_dl_ranking")


def render() -> None:
    st.title(TITLE)
    ds = current_dataset()
    if ds is None:
        st.warning("Choose a dataset on the **Data & model** page first.")
        return
    st.caption(f"{ds.name}: {len(ds)} images, {ds.num_classes} classes. Confident learning (cleanlab) on "
               "out-of-sample probabilities; review the flags, download corrected labels.")
    cfg, loaded = _run_controls(ds)
    upload_digest = hashlib.sha256(cfg["upload"].getvalue()).hexdigest()[:12] if cfg["upload"] is not None else None
    key = ("label_audit", st.session_state.get("dataset_spec"), ds.name, len(ds), cfg["source"], cfg["folds"],
           cfg["seed"], cfg["arch"], cfg["epochs"], cfg["seeds"], upload_digest, cfg["filter_by"], cfg["rank_by"], cfg["outliers"],
           id(loaded.model) if loaded is not None and cfg["source"] == "embeddings" else None)
    if st.button("Run audit", type="primary", key="la_run"):
        _run(ds, cfg, loaded, key)
    audit = model_store().get(key)
    if audit is None:
        return
    _health(audit)
    _gallery(audit, key)
    _review_outputs(audit, key)
