"""The app in a real browser: Data & model page, train a model, accuracy shown, no exception."""

import re

import pytest
from browser import assert_no_exception, browser_page, choose, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser


def test_data_and_model_page_trains_in_browser():
    require_browser()
    with streamlit_server() as url, browser_page() as page:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Data & model", exact=False).first.wait_for(timeout=60_000)
        # .streamlit/config.toml: client.toolbarMode = "viewer" shows no "Deploy" button
        page.get_by_test_id("stToolbar").first.wait_for(timeout=60_000)
        assert page.get_by_test_id("stAppDeployButton").count() == 0
        assert page.get_by_role("button", name="Deploy").count() == 0
        # .streamlit/config.toml: server.maxUploadSize = 128, stated under every upload box
        page.get_by_role("tab", name="Upload a model").click()
        limits = page.get_by_test_id("stFileUploaderDropzoneInstructions")
        limits.first.wait_for(timeout=60_000)
        stated = [t for t in limits.all_inner_texts() if t.strip()]
        assert stated and all(re.match(r"(Limit )?128(\.0)?\s?MB per file", t.strip()) for t in stated), stated
        page.get_by_role("tab", name="Train a model").click()
        # choose the small digits dataset
        choose(page, "Dataset", "digits")
        page.get_by_text("digits: 1797 images").wait_for(timeout=60_000)
        page.get_by_role("button", name="Train").click()
        metric = page.get_by_test_id("stMetricValue").first
        metric.wait_for(timeout=400_000)
        value = metric.inner_text()
        assert re.fullmatch(r"\d+\.\d\d%", value), value
        assert float(value.rstrip("%")) > 80
        assert_no_exception(page)
        screenshot(page, "data_model")
        # every page of the navigation opens without an exception
        for title in ("Saliency", "Backdoors", "Certifiers", "Label audit", "Diffusion backdoors"):
            page.get_by_role("link", name=title).first.click()
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            assert_no_exception(page)
