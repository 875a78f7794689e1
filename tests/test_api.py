"""The app launched with --demo on a free port, driven through gradio_client like any script would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from gradio_client import Client

from pipelines.media.ffmpeg import probe_video
from pipelines.studio.settings import RESTART_EXIT_CODE
from tests.conftest import start_app, stop_app

GOOD = dict(
    model_id="wan2.1-t2v-1.3b", preset_name="Preview", prompt_text="a cat walking", negative_text="", res="240p",
    asp="16:9", n_frames=9, seconds=0, n_steps=2, cfg=5.0, flow_shift=3.0, seed_value=42, frame_rate=16, n_clips=1,
)


@pytest.fixture(scope="module")
def client(served_app):
    return Client(served_app.url, verbose=False)


def t2v(client, **changes):
    return client.predict(**{**GOOD, **changes}, api_name="/t2v")


def test_t2v_returns_a_video_with_its_sidecar(client, served_app):
    status, _preview, video, files, seed, recorded = t2v(client)
    assert "Done" in status
    assert seed == "42"
    video_path = Path(video["video"] if isinstance(video, dict) else video)
    info = probe_video(video_path)
    assert (info["frames"], info["width"], info["height"]) == (9, 416, 240)
    assert json.loads(recorded)["settings"]["seed"] == 42
    written = list(served_app.outputs.rglob("*_t2v_42.mp4"))
    assert written and written[0].with_suffix(".json").is_file()
    assert {Path(f).suffix for f in files} == {".mp4", ".json"}


def test_status_and_release_vram_answer(client):
    t2v(client)
    status = client.predict(api_name="/status")
    assert status["device"] == "cpu"
    assert [m["id"] for m in status["resident"]] == ["wan2.1-t2v-1.3b"]
    assert status["queue"] == 0
    message, info = client.predict(api_name="/release_vram")
    assert "Released wan2.1-t2v-1.3b" in message
    assert json.loads(info)["resident_models"] == []
    assert client.predict(api_name="/status")["resident"] == []


@pytest.mark.parametrize(
    "changes, expected",
    [
        (dict(prompt_text="   "), "prompt: it is empty"),
        (dict(n_frames=0), "between 1 and"),
        (dict(n_frames=100000), "between 1 and"),
        (dict(seed_value="abc"), ""),  # gradio's Number refuses it, or our validation names the seed
        (dict(n_steps=0), "minimum value 1"),  # gradio's Slider checks its own range
        (dict(res="8k"), ""),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_next_job_succeeds(client, changes, expected):
    with pytest.raises(Exception) as raised:
        t2v(client, **changes)
    assert expected in str(raised.value)
    status, *_ = t2v(client)
    assert "Done" in status


def test_errors_follow_the_callers_language(served_app):
    chinese = Client(served_app.url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(Exception) as raised:
        t2v(chinese, prompt_text="")
    assert "请填写提示词" in str(raised.value)


def test_head_of_the_page_answers_at_once_and_get_still_serves_it(served_app):
    """Gradio's own launch check is one HEAD / with a 3 s limit: it gets an empty 200 without the page being built."""
    import httpx

    head = httpx.head(served_app.url, timeout=10)
    assert head.status_code == 200 and head.headers["content-length"] == "0"  # the page itself is not built
    page = httpx.get(served_app.url, timeout=30)
    assert page.status_code == 200 and "Cinescribe" in page.text and len(page.text) > 10_000


def test_restart_exits_with_the_launcher_code(tmp_path, data_dir):
    app = start_app(tmp_path, data_dir, env={"CINESCRIBE_LAUNCHER": "1"})
    try:
        message = Client(app.url, verbose=False).predict(api_name="/restart")
        assert "Restarting" in message
        assert app.process.wait(60) == RESTART_EXIT_CODE
    except subprocess.TimeoutExpired:
        pytest.fail("the app did not exit after /restart:\n" + app.log.read_text(encoding="utf-8"))
    finally:
        stop_app(app)


def test_doctor_runs_from_the_page(client):
    table = client.predict(api_name="/doctor")
    assert "| OK | Python |" in table and "| Status | Check | Found | How to fix |" in table
    assert "ffmpeg" in table
    assert "Port" not in table  # the app holds its own port; that check is for before starting


def test_system_tab_shows_the_newest_benchmark(tmp_path):
    from pipelines.studio.settings import Settings
    from ui.system_tab import last_benchmark

    settings = Settings(outputs_dir=tmp_path)
    assert last_benchmark(settings) == ""
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "20260101-000000_benchmark.md").write_text("old", encoding="utf-8")
    (folder / "20260102-000000_benchmark.md").write_text("new", encoding="utf-8")
    assert last_benchmark(settings) == "new"


def test_auth_protects_the_page_and_the_api(tmp_path, data_dir):
    app = start_app(tmp_path, data_dir, "--auth", "ana:s3cret")
    try:
        with pytest.raises(Exception):
            Client(app.url, verbose=False).predict(api_name="/status")
        status = Client(app.url, auth=("ana", "s3cret"), verbose=False).predict(api_name="/status")
        assert status["device"] == "cpu"
    finally:
        stop_app(app)
