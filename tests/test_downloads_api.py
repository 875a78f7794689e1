"""The API behind the Models tab (/models, /models_download, /models_progress, /models_delete) on a served
app, downloading a tiny real Whisper from a local server that answers like the Hugging Face API."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client

from tests.conftest import start_app, stop_app
from tests.test_downloads import Hub, tiny_repo  # noqa: F401


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir, tiny_repo):  # noqa: F811
    hub = Hub(tiny_repo)
    app = start_app(tmp_path_factory.mktemp("models"), data_dir, env={"HF_ENDPOINT": hub.url})
    yield app, hub
    stop_app(app)
    hub.server.shutdown()


def test_models_lists_downloads_in_the_background_and_deletes(served):
    app, hub = served
    client = Client(app.url, verbose=False)
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["whisper-small"]["state"] == "missing" and rows["wan2.1-t2v-1.3b"]["vram_gb"] == 17.0
    started = client.predict("whisper-small", "huggingface", api_name="/models_download")
    assert started["repo_id"] == "openai/whisper-small"
    for _ in range(120):
        progress = client.predict("whisper-small", api_name="/models_progress")
        if progress["state"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert progress["state"] == "done", progress
    assert progress["done"] == progress["total"] == sum(len(d) for d in hub.files.values())
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["whisper-small"]["state"] == "on disk" and rows["whisper-small"]["source"].startswith("huggingface@")
    with pytest.raises(Exception, match="Confirm"):
        client.predict("whisper-small", False, api_name="/models_delete")
    assert client.predict("whisper-small", True, api_name="/models_delete") > 0
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["whisper-small"]["state"] == "missing"


def test_model_source_flag_sets_the_pages_default_source():
    import app
    from ui.models_tab import ModelsApi

    settings = app.settings_from_args(app.parse_args(["--model-source", "modelscope"]))
    assert ModelsApi(settings, worker=None).source == "modelscope"
    assert ModelsApi(app.settings_from_args(app.parse_args([])), worker=None).source == "auto"
    with pytest.raises(SystemExit):
        app.parse_args(["--model-source", "ftp"])
