"""The History: built from sidecars (and the job store), per owner, with thumbnails, reuse and delete to trash."""

from __future__ import annotations

import shutil

import pytest
from gradio_client import Client

from pipelines.tasks.asr import ASRRequest
from pipelines.studio.history import History
from pipelines.studio.jobs import JobState
from pipelines.studio.store import JobStore
from pipelines.tasks.t2v import T2VRequest
from pipelines.device.worker import GPUWorker
from tests.conftest import start_app, stop_app, wait_finished
from tests.test_api import GOOD
from tests.test_asr_pipeline import speechlike, write_wav


@pytest.fixture(scope="module")
def made(tmp_path_factory, data_dir):
    """A worker with a store that made one clip for ana, one transcript for bo, and one failed job for ana."""
    from pipelines.studio.settings import Settings

    root = tmp_path_factory.mktemp("history")
    settings = Settings(outputs_dir=root / "outputs", data_dir=data_dir, demo=True)
    store = JobStore(root / "jobs.sqlite3")
    worker = GPUWorker(settings, store=store)
    worker.start()
    assert worker.wait_ready(60)
    try:
        clip = wait_finished(worker.submit("t2v", T2VRequest(prompt="a red kite over hills", resolution="240p",
                                                             frames=9, steps=2, seed=5), owner="ana"))
        audio = write_wav(root / "talk.wav", speechlike(4.0))
        words = wait_finished(worker.submit("asr", ASRRequest(files=[str(audio)]), owner="bo"))
        failed = wait_finished(worker.submit("t2v", T2VRequest(prompt="", resolution="240p"), owner="ana"))
    finally:
        worker.stop()
    assert clip.state == JobState.DONE and words.state == JobState.DONE and failed.state == JobState.FAILED
    return settings, store, clip, words, failed


def test_every_job_is_listed_with_its_owner_state_and_preview(made):
    settings, store, clip, words, failed = made
    history = History(settings.outputs_dir, store)
    entries = history.entries()
    assert [(e.task, e.state) for e in entries] == [("t2v", "failed"), ("asr", "done"), ("t2v", "done")]
    video = entries[2]
    assert video.owner == "ana" and video.title == "a red kite over hills" and video.settings["seed"] == 5
    assert video.video.suffix == ".mp4" and video.timings["denoise"] >= 0
    thumb = history.thumbnail(video)
    assert thumb.is_file() and thumb.read_bytes()[:2] == b"\xff\xd8", "a JPEG thumbnail"
    assert history.thumbnail(video) == thumb, "made once, then cached"
    transcript = entries[1]
    assert transcript.owner == "bo" and transcript.title == "talk.wav" and transcript.text
    assert {p.suffix for p in transcript.files} >= {".txt", ".srt", ".vtt", ".json"}
    assert entries[0].job_id == failed.id and entries[0].error


def test_each_owner_sees_only_their_own(made):
    settings, store, *_ = made
    history = History(settings.outputs_dir, store)
    assert {e.task for e in history.entries("ana")} == {"t2v"}
    assert {e.task for e in history.entries("bo")} == {"asr"}
    assert history.entries("carla") == []
    assert history.entries("ana", task="t2v", state="done")[0].state == "done"


def test_a_copied_outputs_folder_shows_up_without_the_store(made, tmp_path):
    settings, *_ = made
    copy = tmp_path / "elsewhere"
    shutil.copytree(settings.outputs_dir, copy, ignore=shutil.ignore_patterns(".thumbnails"))
    entries = History(copy).entries()
    assert sorted(e.task for e in entries) == ["asr", "t2v"]
    assert all(e.state == "done" for e in entries)


def test_delete_moves_files_to_the_trash_and_forgets_failed_jobs(made, tmp_path):
    settings, store, *_ = made
    outputs = tmp_path / "outputs"
    shutil.copytree(settings.outputs_dir, outputs)
    history = History(outputs, store)
    video = next(e for e in history.entries() if e.task == "t2v" and e.state == "done")
    files = list(video.files)
    with pytest.raises(KeyError):
        history.delete(video.key, owner="bo")  # not bo's
    moved = history.delete(video.key, owner="ana")
    assert sorted(p.name for p in moved) == sorted(p.name for p in files)
    assert all(p.parent.parent.name == ".trash" and p.is_file() for p in moved)
    assert not any(p.exists() for p in files)
    assert history.find(video.key) is None
    failed = next(e for e in history.entries() if e.state == "failed")
    assert history.delete(failed.key) == []
    assert store.get(failed.job_id) is None


def test_history_through_the_api_with_two_users(tmp_path, data_dir):
    users = tmp_path / "users.txt"
    users.write_text("ana:pw-a\nbo:pw-b\n", encoding="utf-8")
    app = start_app(tmp_path, data_dir, "--auth-file", str(users))
    try:
        ana = Client(app.url, auth=("ana", "pw-a"), verbose=False)
        bo = Client(app.url, auth=("bo", "pw-b"), verbose=False)
        status, *_ = ana.predict(**{**GOOD, "seed_value": 77}, api_name="/t2v")
        assert "Done" in status
        mine = ana.predict(api_name="/history_list")
        assert [(e["task"], e["state"]) for e in mine] == [("t2v", "done")]
        assert bo.predict(api_name="/history_list") == [], "bo does not see ana's clip"
        entry = ana.predict(mine[0]["key"], api_name="/history_entry")
        assert entry["settings"]["seed"] == 77 and entry["video"].endswith(".mp4")
        with pytest.raises(Exception):
            bo.predict(mine[0]["key"], api_name="/history_entry")
        with pytest.raises(Exception):
            bo.predict(mine[0]["key"], "", "", "", "en", api_name="/history_delete")
        ana.predict(mine[0]["key"], "", "", "", "en", api_name="/history_delete")
        assert ana.predict(api_name="/history_list") == []
        assert list((app.outputs / ".trash").rglob("*_t2v_77.mp4")), "the clip went to the trash, not away"
    finally:
        stop_app(app)
