"""The History tab in a real browser: a finished job is listed with its thumbnail, plays, and "Reuse
settings" fills the Text to video tab with its settings."""

from __future__ import annotations

import pytest
from gradio_client import Client

from tests.conftest import start_app, stop_app
from tests.test_api import GOOD
from tests.test_browser import _MISSING, CHROMIUM, CHROMIUM_ARGS, VIEWPORT

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")]


def test_history_lists_plays_and_reuses_a_job(tmp_path, data_dir):
    app = start_app(tmp_path, data_dir)
    try:
        prompt = "a paper boat drifting down a gutter"
        status, *_ = Client(app.url, verbose=False).predict(
            **{**GOOD, "prompt_text": prompt, "seed_value": 4242, "n_steps": 3}, api_name="/t2v")
        assert "Done" in status
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(app.url)
            page.get_by_role("tab", name="History").click()
            table = page.locator("#history-table")
            expect(table.locator("span").get_by_text(prompt)).to_be_visible(timeout=30_000)
            page.locator("#history-reuse").click()  # nothing picked yet: said in the note, no badges, no toast
            expect(page.locator("#history-note")).to_contain_text("⚠", timeout=10_000)
            assert page.get_by_text("Error", exact=True).count() == 0
            thumbnail = table.locator("img:visible").first
            expect(thumbnail).to_be_visible()
            assert page.evaluate("img => img.naturalWidth", thumbnail.element_handle()) == 160, "a real JPEG loaded"
            table.locator("span").get_by_text(prompt).click()
            expect(page.locator("#history-video video")).to_be_visible(timeout=30_000)
            expect(page.locator("#history-settings")).to_contain_text("4242")
            cell = table.locator(".body-cell.cell-selected").first  # picked as a row: no edit ring on the cell
            assert cell.evaluate("e => getComputedStyle(e).boxShadow") in ("none", ""), "an edit box on the cell"
            page.locator("#history-reuse").click()
            expect(page.get_by_role("tab", name="Text to video")).to_have_attribute("aria-selected", "true",
                                                                                  timeout=15_000)
            expect(page.locator("#t2v-prompt textarea")).to_have_value(prompt)
            browser.close()
    finally:
        stop_app(app)
