"""The page as a creator first meets it, in a real browser: full labels on first load, Chinese throughout (Gradio's
own widgets too), errors in words by Generate with no "Error" badges, Duration and frames in step, a phone layout.

One app (conftest's ``served_app``) and one browser for the module; the same Chromium set-up as
``tests/test_browser.py``. ``CINESCRIBE_SCREENSHOT=1`` also refreshes ``docs/screenshots/*.png``.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT
from tests.test_browser import VIEWPORT, _MISSING, browser  # noqa: F401 (browser: the module's one Chromium)

if not _MISSING:
    from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")]

PHONE = {"width": 390, "height": 844}
SHOTS = ROOT / "docs" / "screenshots"
# Gradio's own texts that must not stay English on the Chinese page (upload box, microphone, footer)
GRADIO_ENGLISH = ["Drop File Here", "Click to Upload", "Record", "No microphone found", "Use via API",
                  "Built with Gradio", "Error"]
LABELS_JS = """() => Array.from(document.querySelectorAll(
    '[data-testid="block-info"], [data-testid="block-label"], button[role="tab"], .label-wrap span'))
    .filter((e) => e.offsetParent !== null).map((e) => e.innerText.trim()).filter((text) => text)"""


@pytest.fixture(scope="module")
def page(browser, served_app):
    """An English desktop page, shared by the tests that only look or type."""
    context = browser.new_context(locale="en-US", viewport=VIEWPORT)
    page = context.new_page()
    page.goto(served_app.url)
    expect(page.locator("#t2v-generate")).to_have_text("Generate", timeout=20_000)
    yield page
    context.close()


def switch(page, name: str, generate: str) -> None:
    page.locator("#cs-language label", has_text=name).click()
    expect(page.locator("#t2v-generate")).to_have_text(generate, timeout=10_000)


def shoot(page, name: str) -> None:
    if os.environ.get("CINESCRIBE_SCREENSHOT") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.mouse.move(0, 0)
        page.wait_for_timeout(600)
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_first_load_labels_are_the_full_ones(page):
    first = page.evaluate(LABELS_JS)
    assert any(text.startswith("Duration in seconds") for text in first), first
    switch(page, "简体中文", "生成")
    switch(page, "English", "Generate")
    assert page.evaluate(LABELS_JS) == first


def test_first_chinese_load_equals_a_round_trip(browser, served_app):
    context = browser.new_context(locale="zh-CN", viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(served_app.url)
        expect(page.locator("#t2v-generate")).to_have_text("生成", timeout=20_000)
        first = page.evaluate(LABELS_JS)
        assert any(text.startswith("时长") for text in first), first
        switch(page, "English", "Generate")
        switch(page, "简体中文", "生成")
        assert page.evaluate(LABELS_JS) == first
    finally:
        context.close()


def test_duration_sets_frames_before_generate(page):
    duration = page.locator("#t2v-duration input")
    duration.fill("2")
    duration.blur()
    frames = page.locator("input[aria-label='Number of frames']").first
    expect(frames).to_have_value("33", timeout=10_000)  # 2 s at 16 fps = 32 frames; Wan makes 4n+1
    expect(page.locator("#t2v-size-note")).to_contain_text("33 frames = 2.1 s", timeout=10_000)
    duration.fill("0")
    duration.blur()


def test_bad_input_is_said_by_generate_without_error_badges(page):
    page.locator("#t2v-prompt textarea").fill("")
    page.locator("#t2v-generate").click()
    status = page.locator("#t2v-status")
    expect(status).to_contain_text("Write a prompt", timeout=10_000)
    page.wait_for_timeout(500)
    assert page.get_by_text("Error", exact=True).count() == 0, "an Error badge or toast for bad input"
    assert page.locator('[data-testid="toast-body"]').count() == 0
    expect(page.locator("#t2v-stop")).to_be_disabled()  # no job: nothing to stop
    shoot(page, "en-desktop")


def test_speech_and_batch_errors_are_said_in_place(page):
    """The other tabs answer bad input the same way: words in their status line, no badges, no toasts."""
    page.get_by_role("tab", name="Speech to text").click()
    page.locator("#asr-run").click()
    expect(page.locator("#asr-status")).to_contain_text("⚠", timeout=10_000)
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-text textarea").fill("")
    page.locator("#batch-queue").click()
    expect(page.locator("#batch-status")).to_contain_text("⚠", timeout=10_000)
    page.wait_for_timeout(500)
    assert page.get_by_text("Error", exact=True).count() == 0, "an Error badge or toast for bad input"
    assert page.locator('[data-testid="toast-body"]').count() == 0
    page.get_by_role("tab", name="Text to video").click()


def test_restart_stands_apart_and_asks_first(page):
    page.get_by_role("tab", name="System").click()
    restart, release = page.locator("#cs-restart"), page.locator("#cs-release")
    expect(restart).to_be_visible(timeout=10_000)
    assert restart.bounding_box()["y"] > release.bounding_box()["y"] + 100, "Restart sits beside Release VRAM"
    asked = []

    def answer_no(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", answer_no)
    restart.click()
    page.wait_for_timeout(1000)
    assert asked and "Restart the app now?" in asked[0]
    assert "Restarting" not in page.locator("#cs-system-result").inner_text()  # "no" restarts nothing
    page.get_by_role("tab", name="Text to video").click()


def test_chinese_page_has_no_gradio_english(browser, served_app):
    """The app's language button, not the browser's, sets Gradio's own texts too."""
    context = browser.new_context(locale="en-US", viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(served_app.url)
        expect(page.locator("#t2v-generate")).to_have_text("Generate", timeout=20_000)
        switch(page, "简体中文", "生成")
        texts = []
        for tab in ("图片生成视频", "语音转文字", "文字生成视频"):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(800)
            texts.append(page.locator("body").inner_text())
        left = sorted({word for word in GRADIO_ENGLISH for text in texts if word in text})
        assert not left, f"English left on the Chinese page: {left}"
        assert "点击上传" in texts[0]  # the upload box speaks Chinese
        preset = page.locator("input[aria-label='预设']").first
        expect(preset).to_have_value("标准")  # preset names too (Standard)
        page.locator("#t2v-prompt textarea").fill("")
        page.locator("#t2v-generate").click()
        expect(page.locator("#t2v-status")).to_contain_text("请填写提示词", timeout=10_000)
        shoot(page, "zh-desktop")
    finally:
        context.close()


def test_phone_shows_every_tab_and_generate_on_the_first_screen(browser, served_app):
    context = browser.new_context(locale="en-US", viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(served_app.url)
        generate = page.locator("#t2v-generate")
        expect(generate).to_have_text("Generate", timeout=20_000)
        for name in ("Text to video", "Image to video", "Speech to text", "Batch", "History", "System"):
            expect(page.get_by_role("tab", name=name)).to_be_visible()
        shoot(page, "phone-390")
        box = generate.bounding_box()
        assert box and box["y"] + box["height"] <= PHONE["height"], f"Generate is below the first screen: {box}"
        model = page.locator("#t2v-model input").first
        assert model.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the model's name is cut off"
    finally:
        context.close()
