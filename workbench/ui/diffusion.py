"""App page: Diffusion backdoors. Type a prompt with or without the trigger, compare generations of the
clean, backdoored and unlearned models, and see per-token cross-attention heatmaps. No science here."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ..errors import BadInput
from .common import model_store, progress_callback

TITLE = "Diffusion backdoors"
ICON = ":material/blur_on:"
URL = "diffusion"

DEFAULT_DIRS = {"clean": "runs/diffusion", "backdoored": "runs/text-trigger", "unlearned": "runs/skd-cag"}


def _load(path: str):
    from ..diffusion import load_text_to_image

    p = Path(path)
    meta = p / "text2image.json"
    if not meta.exists():
        return None
    key = ("text2image", str(p.resolve()), meta.stat().st_mtime)
    store = model_store()
    if key not in store:
        store[key] = load_text_to_image(p)
    return store[key]


def _train_demo(kind: str, steps: int, trigger: str, target_class: int) -> None:
    """Train the clean model, plant a backdoor and unlearn it, saving each into the default folders."""
    from attacks.text_trigger import TextTriggerSpec, plant_text_trigger
    from defenses.skd_cag import SKDCAGConfig, skd_cag

    from ..diffusion import save_text_to_image, train_text_to_image

    bar = st.progress(0.0, text="training the clean model")
    clean = train_text_to_image("digits", steps=steps, progress=progress_callback(bar)).model
    save_text_to_image(clean, DEFAULT_DIRS["clean"])
    bar = st.progress(0.0, text="planting the backdoor")
    spec = TextTriggerSpec(kind=kind, trigger=trigger, target_class=target_class)
    planted = plant_text_trigger(clean, "digits", spec, steps=max(100, 2 * steps // 3), progress=progress_callback(bar))
    save_text_to_image(planted.model, DEFAULT_DIRS["backdoored"])
    bar = st.progress(0.0, text="SKD-CAG")
    run = skd_cag(planted.model, trigger, config=SKDCAGConfig(), progress=progress_callback(bar))
    save_text_to_image(run.model, DEFAULT_DIRS["unlearned"])


def render() -> None:
    from ..report import overlay_heat, to_uint8_images

    st.title(TITLE)
    st.caption("A small text-to-image diffusion model (8×8 digits), a text-trigger backdoor planted by fine-tuning, "
               "and SKD-CAG unlearning (self-knowledge distillation with cross-attention guidance).")
    with st.expander("Model folders", expanded=False):
        dirs = {name: st.text_input(f"{name} model folder", value=d, key=f"diff_dir_{name}")
                for name, d in DEFAULT_DIRS.items()}
    models = {}
    for name, d in dirs.items():
        try:
            m = _load(d)
        except BadInput as exc:
            st.error(f"Cannot load the {name} model from {d}: {exc}")
            m = None
        if m is not None:
            models[name] = m
    if not models:
        st.info("No checkpoints found. Create them with `workbench diffusion train`, `workbench attack text-trigger` "
                "and `workbench defend skd-cag`, or train a quick demo here.")
        with st.form("diff_demo"):
            kind = st.selectbox("Backdoor", ["pixel", "target"])
            steps = st.number_input("Training steps", 100, 5000, 1500, step=100)
            trigger = st.text_input("Trigger word", "cf")
            target = st.number_input("Target digit (target backdoor)", 0, 9, 0)
            if st.form_submit_button("Train the demo models"):
                try:
                    _train_demo(kind, int(steps), trigger, int(target))
                except BadInput as exc:
                    st.error(str(exc))
                    return
                st.rerun()
        return
    any_model = next(iter(models.values()))
    trigger = str(models.get("backdoored", any_model).provenance.get("trigger") or "cf")
    c1, c2, c3 = st.columns([3, 1, 1])
    prompt = c1.text_input("Prompt", value=f"{trigger} a handwritten digit seven", key="diff_prompt",
                           help=f"Words the tokenizer knows, at most {any_model.tokenizer.max_words}. The backdoor's "
                                f"trigger is {trigger!r}.")
    n = c2.number_input("Images", 1, 16, 6, key="diff_n")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="diff_seed")
    guidance = st.slider("Guidance scale", 1.0, 3.0, 1.0, 0.25, key="diff_guidance")
    try:
        any_model.tokenizer.encode([prompt])
    except BadInput as exc:
        st.error(str(exc))
        return
    from ..diffusion import sample

    cols = st.columns(len(models))
    for col, (name, m) in zip(cols, models.items()):
        key = ("diff_sample", name, id(m), prompt, int(n), int(seed), float(guidance))
        store = model_store()
        if key not in store:
            store[key] = sample(m, [prompt] * int(n), seed=int(seed), guidance=float(guidance))
        col.subheader(name)
        col.image(list(to_uint8_images(store[key])), width=64)
    st.subheader("Per-token cross-attention")
    which = st.selectbox("Model", list(models), key="diff_attn_model")
    from defenses.skd_cag import token_attention_maps

    m = models[which]
    key = ("diff_attn", which, id(m), prompt, int(seed))
    store = model_store()
    if key not in store:
        img = sample(m, [prompt], seed=int(seed), guidance=float(guidance))[0]
        tokens, maps = token_attention_maps(m, prompt, img, seed=int(seed))
        store[key] = (img, tokens, maps)
    img, tokens, maps = store[key]
    heat = overlay_heat(img[None].expand(len(tokens), -1, -1, -1), maps, alpha=0.6)
    st.image(list(heat), caption=tokens, width=72)
    st.caption("Each map is the attention image positions give the token, averaged over layers, heads and three "
               "noise levels, scaled by the largest value. After SKD-CAG the trigger's map should fade.")
