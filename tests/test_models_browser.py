"""The Models tab in Chromium: download a tiny real Whisper (the demo build, saved with save_pretrained and
served by a local server that answers like the Hugging Face API) from the page, then transcribe with it:
the app runs without --demo, so the job loads the downloaded files, and its sidecar names their source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from tests.conftest import ROOT, free_port
from tests.test_asr_api import DEFAULTS, spoken  # noqa: F401
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, expect, pytestmark, sync_playwright  # noqa: F401
from tests.test_downloads import Hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from pipelines.families.demo import ensure_demo_model
    from pipelines.families.demo_asr import build_whisper

    folder = ensure_demo_model("whisper", tmp_path_factory.mktemp("tiny"), build_whisper)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    server = Hub(files)
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def app(tmp_path_factory, hub):
    base = tmp_path_factory.mktemp("models_app")
    port = free_port()
    log = base / "app.log"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(base / "hf")}
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", "cpu",
                                "--asr-engine", "transformers", "--outputs", str(base / "outputs"),
                                "--data-dir", str(base / "data")], cwd=ROOT, env=env,
                               stdout=log.open("w", encoding="utf-8"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "gradio_api/info", timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(log.read_text(encoding="utf-8"))
            time.sleep(0.5)
    yield url, base
    process.terminate()
    process.wait(30)


def test_a_job_whose_model_is_missing_offers_its_download_in_the_tab(app, hub, spoken):  # noqa: F811
    """Runs first, while nothing is downloaded: the job fails naming the model, the tab offers "Download
    Whisper small" (the Models tab's own download), and once it is done the same job runs."""
    url, base = app
    installed = base / "data" / "models" / "openai--whisper-small" / "cinescribe-source.json"
    assert not installed.exists()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Speech to text").click()
        page.locator("#asr-files input[type=file]").set_input_files(str(spoken))
        model = page.locator("#asr-model input")
        model.click()
        model.fill("Whisper small")
        page.get_by_role("option", name="Whisper small", exact=True).click()
        offer = page.locator("#asr-missing-model-download")
        expect(offer).to_be_hidden()
        page.locator("#asr-run").click()
        expect(page.locator("#asr-status")).to_contain_text("openai/whisper-small", timeout=60_000)
        expect(offer).to_have_text("Download Whisper small", timeout=15_000)
        offer.click()
        expect(page.locator("#asr-missing-model-note")).to_contain_text("Downloading Whisper small")
        expect(offer).to_be_disabled()
        deadline = time.time() + 60
        while not installed.exists():
            assert time.time() < deadline, "the offered download never finished"
            time.sleep(0.5)
        page.locator("#asr-run").click()
        expect(page.locator("#asr-status")).to_contain_text("Done: 1 of 1", timeout=120_000)
        expect(page.locator("#asr-missing-model")).to_be_hidden()
        browser.close()
    client = Client(url, verbose=False)  # as it was, for the next test: released and deleted
    client.predict(api_name="/release_vram")
    assert client.predict("whisper-small", True, api_name="/models_delete") > 0


def test_download_from_the_models_page_then_transcribe_with_it(app, hub, spoken):  # noqa: F811
    url, base = app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Models").click()
        pick = page.locator("#cs-models-pick input")
        pick.click()
        pick.fill("whisper-small")
        page.get_by_role("option", name="whisper-small", exact=True).click()
        page.locator("#cs-models-download").click()
        page.locator("#cs-model-progress[data-state='done']").wait_for(timeout=60_000)
        assert "openai/whisper-small" in page.locator("#cs-model-progress").inner_text()
        # In Chinese: the table's headers, its states and the progress line too
        page.locator("#cs-language label", has_text="简体中文").click()
        table = page.locator("#cs-models-table")
        expect(table.get_by_text("下载大小").first).to_be_visible(timeout=15_000)
        expect(table).to_contain_text("已在磁盘")  # the row may sit below the table's scroll
        expect(page.locator("#cs-model-progress")).to_contain_text("已完成")
        browser.close()
    assert (base / "data" / "models" / "openai--whisper-small" / "cinescribe-source.json").is_file()
    client = Client(url, verbose=False)
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["whisper-small"]["state"] == "on disk"
    status, _, transcript, files, _ = client.predict(files=[handle_file(str(spoken))],
                                                     **{**DEFAULTS, "model": "whisper-small"}, api_name="/asr")
    assert status.startswith("Done: 1 of 1"), status
    sidecar = next(Path(f) for f in files if f.endswith(".json"))
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert data["settings"]["model"] == "whisper-small"
    assert "huggingface@c0ffee" in json.dumps(data)  # the files' source and revision
