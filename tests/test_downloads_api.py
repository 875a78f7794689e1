"""The API behind the Models tab (/models, /models_download, /models_progress, /models_delete) on a served
app shared with users (an admin and a creator), downloading a tiny real Whisper from a local server that
answers like the Hugging Face API."""

from __future__ import annotations

import time

import pytest

from tests.conftest import start_app, stop_app
from tests.test_downloads import Hub, tiny_repo  # noqa: F401
from tests.test_security import call
from tests.test_security_sharing import add_user, session


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir, tiny_repo):  # noqa: F811
    hub = Hub(tiny_repo)
    folder = tmp_path_factory.mktemp("models")
    users = folder / "users.txt"
    for name in ("ana", "bo"):  # ana is an admin, bo a creator
        add_user(users, name)
    # online, to the local hub only: download sizes are asked for before any download
    app = start_app(folder, data_dir, "--auth-file", str(users), env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"})
    yield app, hub
    stop_app(app)
    hub.server.shutdown()


def predict(client, api_name: str, **values):
    event, outputs = call(client, api_name, values)
    if event != "complete":
        raise RuntimeError(str(outputs))
    return outputs[0]


def test_models_lists_downloads_in_the_background_and_deletes(served):
    app, hub = served
    client = session(app, "ana")
    total = sum(len(d) for d in hub.files.values())
    for _ in range(120):  # the download size, from the source's file list, before the download
        rows = {row["id"]: row for row in predict(client, "models")}
        if rows["whisper-small"]["download_size"]:
            break
        assert rows["whisper-small"]["download_size_why"] == "checking", rows["whisper-small"]
        time.sleep(0.25)
    assert rows["whisper-small"]["state"] == "missing" and rows["whisper-small"]["download_size"] == total
    assert not hub.ranges  # nothing fetched yet
    assert rows["wan2.1-t2v-1.3b"]["vram_gb"] == 17.0
    assert rows["wan2.1-t2v-1.3b"]["download_size_why"].startswith(("checking", "not available"))  # 404 here
    started = predict(client, "models_download", model_id="whisper-small", source="huggingface")
    assert started["repo_id"] == "openai/whisper-small"
    for _ in range(120):
        progress = predict(client, "models_progress", model_id="whisper-small")
        if progress["state"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert progress["state"] == "done", progress
    assert progress["done"] == progress["total"] == total
    rows = {row["id"]: row for row in predict(client, "models")}
    assert rows["whisper-small"]["state"] == "on disk" and rows["whisper-small"]["source"].startswith("huggingface@")
    assert rows["whisper-small"]["folder"]  # an admin sees where it is
    with pytest.raises(RuntimeError, match="Confirm"):
        predict(client, "models_delete", model_id="whisper-small", confirm=False)
    assert predict(client, "models_delete", model_id="whisper-small", confirm=True) > 0
    rows = {row["id"]: row for row in predict(client, "models")}
    assert rows["whisper-small"]["state"] == "missing"


def test_only_admins_download_delete_or_follow_downloads(served):
    app, _ = served
    bo = session(app, "bo")
    for api_name, values in (("models_download", {"model_id": "whisper-small", "source": "huggingface"}),
                             ("models_progress", {"model_id": "whisper-small"}),
                             ("models_delete", {"model_id": "whisper-small", "confirm": True})):
        event, message = call(bo, api_name, values)
        assert event == "error" and "admin is needed" in str(message), (api_name, message)
    rows = predict(bo, "models")  # the list stays readable, without the folders
    assert rows and all("folder" not in row for row in rows)
    assert predict(session(app, "ana"), "models_progress", model_id="whisper-small")["state"] in (
        "idle", "done", "failed")  # no download started by bo


def test_model_source_flag_sets_the_pages_default_source():
    import app
    from ui.models_tab import ModelsApi

    settings = app.settings_from_args(app.parse_args(["--model-source", "modelscope"]))
    assert ModelsApi(settings, worker=None).source == "modelscope"
    assert ModelsApi(app.settings_from_args(app.parse_args([])), worker=None).source == "auto"
    with pytest.raises(SystemExit):
        app.parse_args(["--model-source", "ftp"])


def test_the_models_table_and_progress_speak_chinese(tmp_path):
    from pipelines.studio.settings import Settings
    from ui.i18n import STRINGS
    from ui.models_tab import ModelsApi, _table, progress_html, source_choices

    api = ModelsApi(Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data"), worker=None)
    table = _table(api, "zh")  # offline (HF_HUB_OFFLINE=1 in the tests): sizes unknown, and why
    assert {row[4] for row in table["data"]} == {"? (离线)"}
    assert table["headers"] == ["模型", "仓库", "状态", "占用空间", "下载大小", "显存需求 (GB)", "来源"]
    assert _table(api, "en")["headers"][4] == "Download size"
    assert {row[2] for row in table["data"]} <= {STRINGS["zh"][k] for k in STRINGS["zh"] if k.startswith("models_state_")}
    shown = progress_html("zh", {"repo_id": "openai/whisper-small", "state": "downloading", "done": 1 << 20,
                                 "total": 2 << 20, "speed": 1 << 20, "eta": 1.0, "message": ""})
    assert "下载中" in shown and "downloading" not in shown.replace("data-state='downloading'", "")
    assert source_choices("zh")[0] == ("自动（先 Hugging Face，不通则 ModelScope）", "auto")
    assert {k for k in STRINGS["en"] if k.startswith("models_")} <= set(STRINGS["zh"])
