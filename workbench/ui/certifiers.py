"""App page: Certifiers — certify the current model (smoothing or IBP) and run availability attacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ..errors import BadInput
from .common import current_dataset, model_store, progress_callback, require_model_and_data, sample_grid

TITLE = "Certifiers"
ICON = ":material/verified_user:"
URL = "certifiers"


def _test_images(ds, loaded, n: int, seed: int = 0):
    """``n`` images of the model's own held-out split (from its card), or of the whole dataset."""
    from ..data import held_out

    test = held_out(ds, loaded.card.provenance).data
    picked = test.sample(min(n, len(test)), seed)
    return picked.images, picked.labels


def _curve_png(curves: dict, unit: str) -> bytes:
    from ..certify.results import curve_figure
    from ..report import figure_png

    return figure_png(curve_figure({k: (np.asarray(r), np.asarray(a)) for k, (r, a) in curves.items()}, unit))


def _certify_section(loaded, ds) -> None:
    from ..certify import certify_ibp, certify_smoothing

    st.header("Certify the current model")
    method = st.radio("Certifier", ["smoothing", "ibp"], horizontal=True, key="cert_method",
                      help="smoothing: randomized smoothing, L2 radius (Cohen et al. 2019); "
                           "ibp: interval bound propagation, L∞ ε (Gowal et al. 2018).")
    c1, c2, c3, c4 = st.columns(4)
    n_inputs = c1.number_input("Test images", 1, 2000, 100, key="cert_inputs")
    if method == "smoothing":
        sigma = c2.number_input("σ", 0.0, 2.0, 0.25, step=0.05, key="cert_sigma")
        n = c3.number_input("n (estimation samples)", 0, 100_000, 1000, step=100, key="cert_n")
        alpha = c4.number_input("α", 0.0, 1.0, 0.001, step=0.001, format="%.4f", key="cert_alpha")
        n0 = 100
    else:
        eps = c2.number_input("ε (L∞)", -1.0, 1.0, 0.05, step=0.01, key="cert_eps")
    if not st.button("Certify", type="primary", key="cert_button"):
        res = st.session_state.get("cert_result")
        if res is None:
            return
    else:
        x, y = _test_images(ds, loaded, int(n_inputs))
        bar = st.progress(0.0, text="certifying")
        try:
            if method == "smoothing":
                res = certify_smoothing(loaded.model, x, float(sigma), n0=n0, n=int(n), alpha=float(alpha), labels=y,
                                        progress=progress_callback(bar))
            else:
                grid = sorted({float(eps) * f for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)})
                res = certify_ibp(loaded.model, x, float(eps), labels=y, progress=progress_callback(bar))
                curve = certify_ibp(loaded.model, x, grid, labels=y)
                res.extra["curve_radii"], res.extra["curve_accuracy"] = curve.certified_curve(grid)
        except BadInput as exc:
            st.error(f"Cannot certify: {exc}")
            return
        st.session_state["cert_result"] = res
    s = res.summary()
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Certified classifier accuracy", f"{100 * s['accuracy']:.1f}%")
    m2.metric("Abstain (fallback) rate", f"{100 * s['abstain_rate']:.1f}%")
    m3.metric("Base model accuracy", f"{100 * s['base_accuracy']:.1f}%")
    m4.metric("Average certified radius", f"{s['average_certified_radius']:.3f}")
    if "curve_radii" in res.extra:
        r, acc = res.extra["curve_radii"], res.extra["curve_accuracy"]
    else:
        r, acc = res.certified_curve()
    unit = "L2 radius" if res.norm == "l2" else "L∞ ε"
    st.image(_curve_png({res.method: (r, acc)}, unit), caption=f"Certified accuracy vs {unit}")


def _vote_histograms(votes: torch.Tensor, class_names: list[str], captions: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report import figure_png, plain

    m = len(votes)
    cols = min(4, m)
    rows = (m + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= m:
            ax.axis("off")
            continue
        ax.bar(range(len(class_names)), votes[i].numpy(), color="tab:orange")
        ax.axhline(votes[i].sum().item() / 2, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(class_names)), [plain(c) for c in class_names], fontsize=6)
        ax.set_title(plain(captions[i]), fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return figure_png(fig)


def _attack_section(ds) -> None:
    from attacks.availability import (
        DEFAULT_DESIGN,
        DESIGNS,
        REPORT_RADII,
        MatchingOptions,
        default_trigger,
        run_availability,
    )

    st.header("Availability attack: poisoning that forces the fallback")
    st.caption("Lorenz, Kwiatkowska, Fritz (AISec 2023): poison a few training images with a trigger so that the "
               "certifier abstains on triggered inputs. Trains a clean and a poisoned model on the current dataset.")
    c1, c2, c3, c4 = st.columns(4)
    certifier = c1.radio("Certifier", ["smoothing", "ibp"], key="av_cert")
    rate = c2.number_input("Poison rate (%)", 0.1, 20.0, 1.0, step=0.5, key="av_rate") / 100
    n_test = c3.number_input("Test images", 10, 1000, 100, key="av_ntest")
    epochs = c4.number_input("Epochs", 1, 30, 6 if certifier == "smoothing" else 8, key="av_epochs")
    n = st.select_slider("Smoothing samples n", [100, 200, 500, 1000], 1000, key="av_n") if certifier == "smoothing" else 1000
    design = st.selectbox("Poison design", DESIGNS, index=DESIGNS.index(DEFAULT_DESIGN[certifier]), key="av_design",
                          help="masking (smoothing's default): a centred grey square hiding the content, labels "
                               "spread over all classes; gradient-matching optimises a poison on surrogate models "
                               "(slower)")
    steps = st.number_input("Crafting steps", 1, 500, 100, key="av_steps") if design == "gradient-matching" else 100
    key = ("availability", ds.name, len(ds), certifier, float(rate), int(n_test), int(epochs), int(n), design, int(steps))
    store = model_store()
    if st.button("Run attack", type="primary", key="av_button"):
        bar = st.progress(0.0, text="starting")
        with st.status(f"Poisoning {100 * rate:g}% and training two models…", expanded=False) as status:
            try:
                trig = None if design == "masking" else default_trigger(6 if ds.image_size[0] >= 16 else 4)
                store[key] = run_availability(ds, certifier, rate, trigger=trig,
                                              n_test=int(n_test), epochs=int(epochs), n=int(n), design=design,
                                              matching=MatchingOptions(steps=int(steps)),
                                              progress=progress_callback(bar))
            except BadInput as exc:
                status.update(label="failed", state="error")
                st.error(f"Cannot run the attack: {exc}")
                return
            status.update(label=f"Done in {store[key].seconds:.0f} s", state="complete")
    res = store.get(key)
    if res is None:
        return
    table = pd.DataFrame([{"model": r["model"], "inputs": r["inputs"], "fallback %": round(100 * r["fallback"], 1),
                           "certified accuracy %": round(100 * r["accuracy"], 1),
                           **{f"not certified at r={q:g} %": round(100 * r[f"not_certified@{q:g}"], 1)
                              for q in REPORT_RADII if f"not_certified@{q:g}" in r},
                           "base accuracy %": round(100 * r["base_accuracy"], 1)} for r in res.rows])
    st.dataframe(table, hide_index=True)
    craft = res.poison.get("crafting")
    if craft:
        st.caption(f"Gradient-matching poison (from {craft['base']}): gradient alignment {craft['alignment_first']:.2f} → "
                   f"{craft['alignment_last']:.2f}, crafted in {craft['seconds']:.0f} s")
    chart = table.pivot(index="model", columns="inputs", values="fallback %")
    st.bar_chart(chart, stack=False, y_label="fallback %")
    unit = "L2 radius" if certifier == "smoothing" else "L∞ ε"
    st.image(_curve_png(res.curves, unit), caption=f"Certified accuracy vs {unit}")
    st.subheader("Triggered test inputs (poisoned model)")
    k = min(8, len(res.example_images))
    sample_grid(res.example_images[:k], res.example_captions[:k])
    if certifier == "smoothing":
        st.image(_vote_histograms(res.example_votes[:k], res.class_names, res.example_captions[:k]),
                 caption="Votes of the base classifier under σ-noise (dashed: half of n)")


def render() -> None:
    st.title(TITLE)
    got = require_model_and_data()
    if got is not None:
        _certify_section(*got)
    ds = current_dataset()
    if ds is not None:
        _attack_section(ds)
