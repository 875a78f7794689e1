"""The Image to video tab in a real browser: drop a photo, see the size and first frame, generate, continue the clip.

Uses the same Chromium and Playwright set-up as ``tests/test_browser.py`` (skipped where they are missing).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, JOB_TIMEOUT_MS, VIEWPORT, _MISSING, log_tail

if not _MISSING:
    from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")]


@pytest.fixture(scope="module")
def page(served_app):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="en-US", viewport=VIEWPORT)
        page = context.new_page()
        page.goto(served_app.url)
        page.get_by_role("tab", name="Image to video").click()
        yield page
        context.close()
        browser.close()


def test_drop_a_photo_generate_and_continue(page, served_app, tmp_path):
    photo = tmp_path / "beach.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    page.locator("#i2v-image input[type=file]").set_input_files(str(photo))
    note = page.locator("#i2v-size")
    expect(note).to_contain_text("from the 400 × 300 image", timeout=20_000)
    expect(page.locator("#i2v-frame img")).to_be_visible(timeout=10_000)
    page.locator("#i2v-resolution label", has_text="128p").click()
    expect(note).to_contain_text("128 × 96", timeout=10_000)  # 4:3 kept at 128p in multiples of 32

    page.locator("#i2v-prompt textarea").fill("the waves roll in")
    page.locator("#i2v-generate").click()
    page.wait_for_function(
        """() => {
            const video = document.querySelector("#i2v-video video");
            const status = document.querySelector("#i2v-status")?.innerText || "";
            return (video && video.getAttribute("src") && status.includes("Done"))
                || document.querySelector('[data-testid="toast-body"].error');
        }""",
        timeout=JOB_TIMEOUT_MS,
    )
    toasts = page.locator('[data-testid="toast-body"].error')
    assert toasts.count() == 0, f"{toasts.all_inner_texts()}\n{log_tail(served_app)}"
    clips = sorted(served_app.outputs.rglob("*_i2v_*.mp4"))
    assert clips
    sidecar = json.loads(clips[-1].with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["settings"]["prompt"] == "the waves roll in"
    assert (sidecar["settings"]["width"], sidecar["settings"]["height"]) == (128, 96)  # the 4:3 photo stays 4:3
    assert (page.locator("#i2v-video video").get_attribute("src") or "").endswith(clips[-1].name)

    # Continue the clip: its last frame becomes the image.
    page.get_by_text("Continue from a clip").click()
    page.locator("#i2v-recent input").click()
    page.get_by_role("option", name=f"{clips[-1].parent.name} / {clips[-1].name}").click()
    page.locator("#i2v-use-last").click()
    expect(note).to_contain_text("from the 128 × 96 image", timeout=20_000)
    assert clips[-1].with_name(f"{clips[-1].stem}_lastframe.png").is_file()


def test_choices_and_labels_follow_the_language(page):
    page.locator("#cs-language label", has_text="简体中文").click()
    expect(page.get_by_role("tab", name="图片生成视频")).to_be_visible(timeout=10_000)
    expect(page.locator("#i2v-fit")).to_contain_text("裁剪")
    expect(page.locator("#i2v-aspect")).to_contain_text("与图片相同")
    expect(page.locator("#i2v-size")).to_contain_text("视频尺寸", timeout=10_000)
    page.locator("#cs-language label", has_text="English").click()
    expect(page.locator("#i2v-fit")).to_contain_text("Crop", timeout=10_000)
