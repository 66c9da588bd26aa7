"""App section: backdoor defenses (poison detection and NAB). Shown as a tab of the Backdoors page.

No science here: the page gathers parameters, calls :mod:`defenses.detectors` / :mod:`defenses.nab`
and renders their results. Results are cached in the process-wide :func:`model_store` keyed by
every parameter, so switching tabs or reloading never retrains.
"""

from __future__ import annotations

import streamlit as st

from ..errors import BadInput
from .common import cached_dataset, model_store, progress_callback, require_model_and_data, sample_grid

TITLE = "Backdoor defenses"
ICON = ":material/shield:"
URL = "defenses"


def _contrastive_available() -> bool:
    try:
        from .. import contrastive  # noqa: F401
    except ImportError:
        return False
    return True


def _show_detection(det, class_names, images, labels, truth_mask=None) -> None:
    """Quality metrics and the gallery of the most suspicious samples."""
    q = det.quality
    cols = st.columns(4)
    cols[0].metric("flagged", len(det.flagged))
    if q is not None:
        cols[1].metric("precision", f"{100 * q.precision:.1f}%")
        cols[2].metric("recall", f"{100 * q.recall:.1f}%")
        cols[3].metric("AUROC", f"{q.auroc:.3f}")
    top = det.flagged[:32]
    caps = []
    for i in top.tolist():
        cap = f"#{i} · {class_names[int(labels[i])]}"
        if truth_mask is not None and bool(truth_mask[i]):
            cap += " · ☠ poisoned"
        caps.append(cap)
    st.caption("Most suspicious training samples (index · given label" +
               (" · ☠ = truly poisoned)" if truth_mask is not None else ")"))
    sample_grid(images[top], caps)


def _layer_choice(key: str) -> str:
    from defenses.detectors import HEAD_INPUT, PENULTIMATE

    names = {HEAD_INPUT: "classifier-head input (first fully connected layer's input)",
             PENULTIMATE: "penultimate layer"}
    return st.radio("Features read by the detector", list(names), format_func=names.__getitem__, horizontal=True,
                    key=key, help="On the zoo CNN the head input (pooled conv features) separates BadNets and "
                    "Blended poison far better than the penultimate layer; on the zoo ResNet they coincide.")


def _simulated() -> None:
    from attacks.backdoor import ATTACKS, run_backdoor_attack
    from defenses.detectors import METHOD_NAMES, METHODS, detect
    from defenses.nab import run_nab

    c1, c2, c3 = st.columns(3)
    spec = c1.selectbox("Dataset", ["digits", "mnist10k"], key="def_data",
                        help="digits trains in seconds; mnist10k in about half a minute per model.")
    attack = c2.selectbox("Attack", list(ATTACKS), key="def_attack")
    rate = c3.number_input("Poison rate", 0.01, 0.3, 0.05, 0.01, key="def_rate")
    c4, c5, c6 = st.columns(3)
    method = c4.selectbox("Detector", list(METHODS), index=list(METHODS).index("spectral"),
                          format_func=lambda m: METHOD_NAMES[m], key="def_method")
    ratio = c5.number_input("Isolation ratio", 0.01, 0.5, 0.05, 0.01, key="def_ratio")
    seed = int(c6.number_input("Seed", 0, 10_000, 0, key="def_seed"))
    layer = _layer_choice("def_layer") if method != "lga" else None
    pseudo_opts = ["vd", "nc"] if _contrastive_available() else ["vd"]
    pseudo = st.radio("Pseudo labels", pseudo_opts, horizontal=True, key="def_pseudo",
                      format_func=lambda p: {"vd": "VD: model trained on a 5% clean subset",
                                             "nc": "NC: nearest class centre in SimCLR features"}[p])
    epochs = 4 if spec == "digits" else None
    store = model_store()
    akey = ("defense-attack", spec, attack, float(rate), seed, epochs)
    dkey = (*akey, method, float(ratio), layer)
    nkey = (*dkey, pseudo)
    if st.button("1 · Poison, train and detect", key="def_run_detect", type="primary"):
        ds = cached_dataset(spec)
        if akey not in store:
            with st.status(f"Training a model on {attack}-poisoned {spec}…"):
                store[akey] = run_backdoor_attack(ds, attack, rate, 0, seed=seed, epochs=epochs,
                                                  progress=progress_callback(st.progress(0.0)))
        att = store[akey]
        with st.status(f"Running {METHOD_NAMES[method]}…"):
            store[dkey] = detect(method, att.poisoned.dataset, att.model, ratio, layer=layer, seed=seed,
                                 poisoned_indices=att.poisoned.poisoned_indices,
                                 progress=progress_callback(st.progress(0.0)))
    if dkey not in store:
        st.info("Poison a dataset, train the victim and run the detector; then run NAB on the result.")
        return
    att, det = store[akey], store[dkey]
    m = att.metrics
    st.write(f"Undefended model: CA **{100 * m.clean_accuracy:.1f}%**, ASR **{100 * m.attack_success_rate:.1f}%** "
             f"({len(att.poisoned.poisoned_indices)} poisoned of {len(att.poisoned.dataset)} training samples).")
    pdata = att.poisoned.dataset
    _show_detection(det, pdata.class_names, pdata.images, pdata.labels, att.poisoned.is_poisoned)
    if st.button("2 · Run NAB (and the remove-and-retrain baseline)", key="def_run_nab"):
        with st.status("NAB: pseudo labels, stamping, retraining…"):
            store[nkey] = run_nab(spec, attack, rate, 0, seed=seed, pseudo=pseudo, epochs=epochs,
                                  attack_result=att, detection=det, progress=progress_callback(st.progress(0.0)))
    if nkey in store:
        _show_nab(store[nkey])


def _show_nab(res) -> None:
    import pandas as pd

    from defenses.metrics import TABLE_COLUMNS

    rows = res.rows()
    st.subheader("Before / after")
    cells = [[*r.cells()[:4], None if r.der is None else round(r.der, 4), r.cells()[5]] for r in rows]
    st.dataframe(pd.DataFrame(cells, columns=TABLE_COLUMNS), hide_index=True)
    chart = pd.DataFrame({"CA": [100 * r.clean_accuracy for r in rows],
                          "ASR": [100 * r.attack_success_rate for r in rows],
                          "RA": [100 * r.robust_accuracy for r in rows]}, index=[r.defense for r in rows])
    st.bar_chart(chart, stack=False)
    st.caption("CA: clean test accuracy. ASR: share of triggered test images of non-target classes classified "
               "as the target. RA: share of them classified as their true class. DER = [max(0, ΔASR) − "
               "max(0, ΔCA) + 1]/2 against the undefended model (1 is best, 0.5 is no change).")
    c = st.columns(3)
    c[0].metric("isolated", res.n_isolated)
    c[1].metric("stamped & relabelled", res.n_stamped)
    c[2].metric("pseudo-label accuracy", f"{100 * res.pseudo_label_accuracy:.1f}%")
    if res.filter is not None:
        f = res.filter
        st.write(f"Input filter (reject if the stamp changes the prediction): clean rejection "
                 f"**{100 * f.clean_rejection:.1f}%**, backdoor rejection **{100 * f.backdoor_rejection:.1f}%**, "
                 f"ASR after filtering **{100 * f.filtered_asr:.1f}%**.")
    st.caption(f"Deploy the NAB model with the defensive trigger stamped on every input: {res.defense_trigger} "
               "(defenses.nab.StampedModel).")


def _own_data() -> None:
    from defenses.detectors import METHOD_NAMES, METHODS, detect

    got = require_model_and_data()
    if got is None:
        return
    loaded, ds = got
    c1, c2 = st.columns(2)
    method = c1.selectbox("Detector", list(METHODS), format_func=lambda m: METHOD_NAMES[m], key="own_method")
    ratio = c2.number_input("Isolation ratio", 0.01, 0.5, 0.05, 0.01, key="own_ratio")
    layer = _layer_choice("own_layer") if method != "lga" else None
    own_arch = method == "lga" and loaded.spec is not None
    st.caption("Spectral signatures and activation clustering read the current model's features (it should "
               "have been trained on this dataset); LGA trains a fresh copy of the model's architecture with a "
               "flooded loss" + ("." if own_arch or method != "lga" else
                                 " (this model cannot be rebuilt untrained, so LGA trains the zoo's cnn)."))
    key = ("defense-own", ds.name, len(ds), loaded.source, method, float(ratio), layer)
    store = model_store()
    if st.button("Detect suspected poison", key="own_run", type="primary"):
        with st.status(f"Running {METHOD_NAMES[method]}…"):
            try:
                store[key] = detect(method, ds, loaded.model, ratio, layer=layer,
                                    arch=loaded if own_arch else "cnn",
                                    progress=progress_callback(st.progress(0.0)))
            except BadInput as exc:
                st.error(str(exc))
    if key in store:
        _show_detection(store[key], ds.class_names, ds.images, ds.labels)


def render() -> None:
    """Detection and NAB on a simulated attack, or detection on the current dataset and model."""
    st.header(f"{ICON} {TITLE}")
    mode = st.radio("What to inspect", ["Simulated attack + NAB", "My dataset and model"], horizontal=True,
                    key="def_mode")
    if mode == "Simulated attack + NAB":
        _simulated()
    else:
        _own_data()
