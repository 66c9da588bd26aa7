"""App page: Audit — every check on the current model and data, with progress per check, the verdict
table first, each check's figures below it, and the suspects table (filterable, CSV download).

No science here: the page gathers input, calls :func:`workbench.audit.audit` and renders its report.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ..audit import CHECKS, NEEDS, audit
from ..errors import BadInput
from ..report import Heatmap, ImageGrid, Metrics, Table, Text, heatmap_png, to_uint8_images
from .common import current_dataset, require_model_and_data

TITLE = "Audit"
ICON = ":material/fact_check:"
URL = "audit"
COLOR = {"pass": "green", "warn": "orange", "inconclusive": "violet", "fail": "red", "skipped": "gray"}


def _section(sec) -> None:
    """Render one report section with Streamlit widgets."""
    if isinstance(sec, Metrics):
        st.markdown(f"**{sec.title}**")
        cols = st.columns(min(4, max(1, len(sec.values))))
        for i, (k, v) in enumerate(sec.values.items()):
            cols[i % len(cols)].metric(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    elif isinstance(sec, Table):
        st.markdown(f"**{sec.title}**")
        st.dataframe(pd.DataFrame(sec.rows, columns=sec.columns), hide_index=True)
    elif isinstance(sec, Heatmap):
        st.image(heatmap_png(sec.matrix, sec.row_labels, sec.col_labels, sec.xlabel, sec.ylabel, sec.title))
    elif isinstance(sec, ImageGrid):
        st.markdown(f"**{sec.title}**")
        st.image(list(to_uint8_images(sec.images)), caption=sec.captions, width=72)
    elif isinstance(sec, Text):
        st.markdown(f"**{sec.title}**")
        st.text(sec.body)


def render() -> None:
    st.title(TITLE)
    if current_dataset() is None:
        st.warning("Choose a dataset and train or upload a model on the **Data & model** page first.")
        return
    got = require_model_and_data()
    if got is None:
        return
    loaded, ds = got
    chosen = st.multiselect("Checks", list(CHECKS), default=list(CHECKS), key="audit_checks",
                            help="; ".join(f"{n}: {c.title} (needs {', '.join(c.needs)})" for n, c in CHECKS.items()))
    with st.expander("Thresholds and parameters"):
        config: dict = {}
        for name in chosen:
            check = CHECKS[name]
            for key, par in check.params.items():
                if par.kind is str:
                    v = st.text_input(f"{name}.{key}", value=par.default, help=par.help, key=f"audit_{name}_{key}")
                elif par.kind is int:
                    v = st.number_input(f"{name}.{key}", value=int(par.default), min_value=int(par.low),
                                        max_value=int(par.high), help=par.help, key=f"audit_{name}_{key}")
                else:
                    v = st.number_input(f"{name}.{key}", value=float(par.default), min_value=float(par.low),
                                        max_value=float(par.high), help=par.help, format="%.4g",
                                        key=f"audit_{name}_{key}")
                if v != par.default:
                    config.setdefault(name, {})[key] = v
    st.caption("The clean set for the model-only checks is the model's held-out split of this dataset "
               f"(from its card); without one, those checks are skipped ({NEEDS['clean']}).")
    if st.button("Run the audit", key="audit_run", type="primary", disabled=not chosen):
        statuses: dict = {}
        bars: dict = {}

        def progress(check: str, fraction: float, message: str) -> None:
            if check not in statuses:
                statuses[check] = st.status(f"{check}: running", expanded=False)
                bars[check] = statuses[check].progress(0.0)
            bars[check].progress(min(1.0, float(fraction)), text=message)
            if fraction >= 1.0:
                statuses[check].update(label=f"{check}: {message}", state="complete")

        try:
            st.session_state["audit_report"] = audit(loaded, ds, chosen, config, progress=progress)
        except BadInput as exc:
            st.error(str(exc))
            return
    report = st.session_state.get("audit_report")
    if report is None:
        return
    st.subheader(f"Verdict: :{COLOR[report.verdict]}[{report.verdict}]")
    st.dataframe(pd.DataFrame(report.verdict_rows(), columns=["check", "verdict", "key figure", "reason"]),
                 hide_index=True)
    for o in report.outcomes:
        check = CHECKS[o.check]
        with st.expander(f"{check.title}: {o.verdict}", expanded=o.verdict != "pass"):
            for c in o.conditions:
                st.markdown(f":{COLOR[c.verdict]}[{c.verdict}] **{c.name}**: {c.reason}")
            for sec in check.sections(o.result):
                _section(sec)
    s = report.suspects
    if s is not None and len(s.order):
        st.subheader(f"Suspects ({len(s.order)})")
        frame = pd.DataFrame(s.rows())
        kinds = sorted(frame["verdict"].unique())
        keep = st.multiselect("Show verdicts", kinds, default=kinds, key="audit_suspect_filter")
        shown = frame[frame["verdict"].isin(keep)]
        st.dataframe(shown, hide_index=True)
        st.download_button("Download suspects.csv", s.csv(), "suspects.csv", "text/csv", key="audit_csv")
        top = shown["index"].to_numpy()[:24]
        if len(top):
            st.image(list(to_uint8_images(ds.images[top])), caption=[f"#{i} {v}" for i, v in
                                                                     zip(top, shown["verdict"][:24], strict=False)],
                     width=72)
