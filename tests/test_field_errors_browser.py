"""Bad input said at its field, in a real browser: a red line under the field (``role="alert"``) and the field
outlined, in English and Chinese, gone once the field is fixed; the message stays by Generate too. And the Batch
tab's Stop all: enabled only while a batch of this page runs.

One app (conftest's ``served_app``) and one Chromium for the module, set up as ``tests/test_page_browser.py``.
``CINESCRIBE_SCREENSHOT=1`` also refreshes ``docs/screenshots/field-error-zh.png``.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.test_browser import VIEWPORT, _MISSING, browser  # noqa: F401 (browser: the module's one Chromium)
from tests.test_page_browser import shoot, switch

if not _MISSING:
    from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")]

MARK = "cs-field-error"


def open_page(browser, served_app, locale: str, generate: str):
    context = browser.new_context(locale=locale, viewport=VIEWPORT)
    page = context.new_page()
    page.goto(served_app.url)
    expect(page.locator("#t2v-generate")).to_have_text(generate, timeout=20_000)
    return context, page


def marked(page, elem_id: str) -> bool:
    return MARK in (page.locator(f"#{elem_id}").get_attribute("class") or "").split()


def test_prompt_and_frames_errors_show_under_their_fields_and_go_when_fixed(browser, served_app):
    context, page = open_page(browser, served_app, "en-US", "Generate")
    try:
        prompt_line, frames_line = page.locator("#t2v-prompt-error"), page.locator("#t2v-frames-error")
        expect(prompt_line).to_be_hidden()
        page.locator("#t2v-prompt textarea").fill("")
        page.locator("#t2v-generate").click()
        expect(prompt_line.get_by_role("alert")).to_have_text("⚠ Write a prompt: it is empty.", timeout=10_000)
        expect(page.locator("#t2v-status")).to_contain_text("Write a prompt")  # by Generate too
        assert marked(page, "t2v-prompt") and not marked(page, "t2v-frames")
        box = page.locator("#t2v-prompt").bounding_box()
        line = prompt_line.bounding_box()
        assert line["y"] >= box["y"] + box["height"] - 1, "the line is under the prompt box"

        page.locator("#t2v-prompt textarea").fill("a kite over a hill")  # fixed: the line goes at once
        expect(prompt_line).to_be_hidden(timeout=10_000)
        assert not marked(page, "t2v-prompt")

        frames = page.locator("input[aria-label='Number of frames']").first
        frames.fill("0")
        frames.blur()
        page.locator("#t2v-generate").click()
        expect(frames_line).to_contain_text("Number of frames must be between 1 and", timeout=10_000)
        assert marked(page, "t2v-frames") and not marked(page, "t2v-prompt")
        expect(prompt_line).to_be_hidden()
        frames.fill("9")
        frames.blur()
        expect(frames_line).to_be_hidden(timeout=10_000)
        expect(page.locator("#t2v-stop")).to_be_disabled()  # nothing was queued
    finally:
        context.close()


def test_field_error_in_chinese_follows_the_language_switch(browser, served_app):
    context, page = open_page(browser, served_app, "zh-CN", "生成")
    try:
        page.locator("#t2v-prompt textarea").fill("")
        page.locator("#t2v-generate").click()
        line = page.locator("#t2v-prompt-error")
        expect(line.get_by_role("alert")).to_have_text("⚠ 请填写提示词：当前为空。", timeout=10_000)
        assert marked(page, "t2v-prompt")
        shoot(page, "field-error-zh")
        switch(page, "English", "Generate")
        expect(line).to_contain_text("Write a prompt: it is empty.", timeout=10_000)  # said again in English
        expect(page.locator("#t2v-status")).to_contain_text("⚠ Write a prompt: it is empty.")  # by Generate too
        switch(page, "简体中文", "生成")
        expect(line).to_contain_text("请填写提示词", timeout=10_000)
        expect(page.locator("#t2v-status")).to_contain_text("⚠ 请填写提示词")
    finally:
        context.close()


def test_the_status_line_follows_the_language_switch_and_typing_sends_no_clear(browser, served_app):
    context, page = open_page(browser, served_app, "en-US", "Generate")
    try:
        with urllib.request.urlopen(served_app.url + "config", timeout=30) as response:
            config = json.load(response)
        prompt_ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "t2v-prompt"}
        assert prompt_ids, "no #t2v-prompt in the page's config"
        posts = []
        page.on("request", lambda r: posts.append(r) if "/gradio_api/" in r.url and r.method == "POST" else None)
        page.locator("#t2v-prompt textarea").press_sequentially("a kite", delay=20)  # no error shown
        switch(page, "简体中文", "生成")
        # the live panel's timers post too; none of the posts may come from the prompt's own events
        sent = [json.loads(r.post_data) for r in posts if (r.post_data or "").startswith("{")]
        from_prompt = [body for body in sent if body.get("trigger_id") in prompt_ids]
        assert not from_prompt, from_prompt
        assert any('"zh"' in json.dumps(body) for body in sent), "the language switch itself was not seen"
        switch(page, "English", "Generate")

        line, status = page.locator("#t2v-prompt-error"), page.locator("#t2v-status")
        page.locator("#t2v-prompt textarea").fill("")
        page.locator("#t2v-generate").click()
        expect(line).to_contain_text("Write a prompt: it is empty.", timeout=10_000)
        page.locator("#t2v-prompt textarea").fill("a kite over a hill")  # cleared in the browser
        expect(line).to_be_hidden(timeout=10_000)
        assert not marked(page, "t2v-prompt")
        switch(page, "简体中文", "生成")
        expect(status).to_contain_text("⚠ 请填写提示词", timeout=10_000)  # the refusal, said again
        expect(line).to_be_hidden()  # the cleared line stays cleared
        page.locator("#t2v-prompt textarea").fill("")  # the same refusal again is shown again
        page.locator("#t2v-generate").click()
        expect(line).to_contain_text("请填写提示词", timeout=10_000)
        page.locator("#t2v-prompt textarea").fill("a kite over a hill")
        expect(line).to_be_hidden(timeout=10_000)

        page.locator("#t2v-generate").click()  # a demo clip: seconds
        expect(status).to_contain_text("完成：1 个视频", timeout=60_000)
        switch(page, "English", "Generate")
        expect(status).to_contain_text("Done: 1 clip(s) in", timeout=10_000)
        expect(status).not_to_contain_text("完成")
        switch(page, "简体中文", "生成")
        expect(status).to_contain_text("完成：1 个视频", timeout=10_000)
    finally:
        context.close()


def test_batch_stop_all_is_enabled_only_while_its_batch_runs(browser, served_app):
    context, page = open_page(browser, served_app, "en-US", "Generate")
    try:
        page.get_by_role("tab", name="Batch").click()
        stop, status = page.locator("#batch-stop"), page.locator("#batch-status")
        expect(stop).to_be_disabled()  # no batch yet
        page.locator("#batch-text textarea").fill("")
        page.locator("#batch-queue").click()  # refused: nothing to stop
        expect(status).to_contain_text("⚠", timeout=10_000)
        expect(stop).to_be_disabled()

        page.locator("#batch-text textarea").fill("a red kite\na blue kite")
        page.locator("#batch-queue").click()
        expect(stop).to_be_enabled(timeout=20_000)  # two demo jobs: seconds each
        expect(status).to_contain_text("finished: 2 of 2", timeout=60_000)
        expect(stop).to_be_disabled(timeout=10_000)  # the batch ended by itself

        page.reload()  # a fresh page: its Queue is not still finishing the last batch's event
        page.get_by_role("tab", name="Batch").click()
        expect(stop).to_be_disabled(timeout=20_000)
        page.locator("#batch-text textarea").fill("a green kite\na white kite\na grey kite\na black kite")
        page.locator("#batch-queue").click()
        expect(stop).to_be_enabled(timeout=20_000)
        stop.click()
        expect(status).to_contain_text("stopped", timeout=10_000)
        expect(stop).to_be_disabled(timeout=10_000)  # stopped: nothing left to stop
        # all four stopped while queued, or the running one ends by itself (1: Stop came as it ended)
        expect(status).to_contain_text(re.compile(r"finished: [01] of 4|4 job\(s\) stopped"), timeout=60_000)
        expect(stop).to_be_disabled()
    finally:
        context.close()
