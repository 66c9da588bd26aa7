"""The app through streamlit.testing.v1.AppTest (no browser)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

TIMEOUT = 300  # importing torch and training take longer than AppTest's 3 s default
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_app_starts_on_data_and_model_page():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Data & model"
    assert at.selectbox(key="data_choice").value == "mnist10k"


def test_training_button_produces_accuracy(digits_model):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key="data_choice").select("digits").run()
    at.number_input(key="epochs").set_value(4).run()
    at.button(key="train_button").click().run()
    assert not at.exception
    value = at.metric[0].value
    assert value.endswith("%") and float(value.rstrip("%")) > 90
    # the figure shown is the library's: the same recipe (cnn, 4 epochs, seed 0) trained outside the app
    assert value == f"{100 * digits_model.evaluation.accuracy:.2f}%"
    assert at.session_state["model"].card.input_shape == (1, 8, 8)


WITHOUT_A_MODEL = {  # what each page tells a user who has no model (or data) yet, and whether it offers a run
    "saliency": ("warning", "Choose a dataset and train or upload a model on the **Data & model** page", 0),
    "certifiers": ("warning", "Choose a dataset and train or upload a model on the **Data & model** page", 0),
    "label_audit": ("warning", "Choose a dataset on the **Data & model** page first.", 0),
    "audit": ("warning", "Choose a dataset and train or upload a model on the **Data & model** page", 0),
    "backdoors": ("info", "Run a poisoning attack in the first tab first.", 3),  # trains its own victim
    "diffusion": ("info", "No checkpoints found. Create them with `workbench diffusion train`", 1),
}


@pytest.mark.parametrize("module", sorted(WITHOUT_A_MODEL))
def test_every_page_renders_without_a_model(module):
    import importlib

    at = AppTest.from_string(f"from workbench.ui import {module}\n{module}.render()", default_timeout=TIMEOUT).run()
    assert not at.exception
    kind, message, buttons = WITHOUT_A_MODEL[module]
    assert [t.value for t in at.title] == [importlib.import_module(f"workbench.ui.{module}").TITLE]
    assert any(m.value.startswith(message) for m in getattr(at, kind)), [m.value for m in getattr(at, kind)]
    assert len(at.button) == buttons and not at.error


def test_diffusion_page_compares_models_and_rejects_unknown_words(tmp_path):
    from workbench.diffusion import DiffusionConfig, build_text_to_image, save_text_to_image

    tiny = DiffusionConfig(block_out_channels=(8, 16), attention_heads=2, text_dim=16, text_heads=2, text_layers=1)
    for name, seed in (("clean", 0), ("backdoored", 1)):
        save_text_to_image(build_text_to_image(tiny, seed=seed), tmp_path / name)
    at = AppTest.from_string("from workbench.ui import diffusion\ndiffusion.render()", default_timeout=TIMEOUT).run()
    at.text_input(key="diff_dir_clean").set_value(str(tmp_path / "clean"))
    at.text_input(key="diff_dir_backdoored").set_value(str(tmp_path / "backdoored"))
    at.text_input(key="diff_dir_unlearned").set_value(str(tmp_path / "missing"))
    at.run()
    at.number_input(key="diff_n").set_value(3).run()
    assert not at.exception and not at.error
    assert [h.value for h in at.subheader][:2] == ["clean", "backdoored"]  # side by side, one column per model
    assert at.selectbox(key="diff_attn_model").options == ["clean", "backdoored"]
    at.text_input(key="diff_prompt").set_value("a handwritten zebra seven").run()
    assert not at.exception
    assert any("zebra" in e.value for e in at.error)
