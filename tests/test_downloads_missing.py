"""A job whose model is not on this machine: the tab's offer ("Download <model>" for admins, a note to ask an
admin for the others) and its download through the Models tab's ``ModelsApi``, on a real GPU worker (no
--demo, an empty Hugging Face cache) and the local server that answers like the Hugging Face API."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipelines.studio.jobs import JobState
from tests.conftest import wait_finished
from tests.test_downloads import hub, tiny_repo  # noqa: F401


@pytest.fixture()
def failed_job(tmp_path, monkeypatch):
    """A speech job for Whisper small that failed because the model is nowhere on this machine."""
    import huggingface_hub.constants as constants

    from pipelines.bench.workloads import speech_like_audio
    from pipelines.device.worker import GPUWorker
    from pipelines.studio.settings import Settings
    from pipelines.tasks.asr import ASRRequest

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", device="cpu")
    worker = GPUWorker(settings)
    worker.start()
    assert worker.wait_ready(60)
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(speech_like_audio(tmp_path, 3))],
                                                        model="whisper-small"), owner="bo"), 60)
    yield worker, settings, job
    worker.stop()


def offers(worker, settings, access=None):
    from ui.missing_model import MissingModelOffers
    from ui.models_tab import ModelsApi

    return MissingModelOffers(ModelsApi(settings, worker), worker, access)


def test_a_missing_model_is_offered_for_download_and_the_download_lands(failed_job, hub):  # noqa: F811
    from ui.missing_model import missing_model_id

    worker, settings, job = failed_job
    assert job.state == JobState.FAILED and job.error_key == "model_missing", job.error
    assert missing_model_id(job) == "whisper-small"
    offer = offers(worker, settings)
    row, note, button, model = offer.answer(job.id, "en")
    assert row["visible"] and model == "whisper-small"
    assert "Whisper small" in note and button["value"] == "Download Whisper small" and button["visible"]
    assert offer.answer(job.id, "zh")[2]["value"] == "下载 Whisper small"
    note, button = offer.download(model, "en")
    assert "Downloading Whisper small" in note and button["interactive"] is False
    done = offer.api.manager.wait("openai/whisper-small", 60)  # the Models tab's own manager and progress
    assert done.state == "done", done
    rows = {row["id"]: row for row in offer.api.list_models()}
    assert rows["whisper-small"]["state"] == "on disk"


def test_other_jobs_get_no_offer(failed_job):
    worker, settings, job = failed_job
    offer = offers(worker, settings)
    assert offer.answer("", "en")[0]["visible"] is False  # no job yet
    assert offer.answer("no-such-job", "en")[0]["visible"] is False


def test_a_creator_is_told_to_ask_an_admin_and_cannot_download(failed_job):
    from pipelines.studio.users import User, UserBook
    from ui.auth_access import Access

    worker, settings, job = failed_job
    access = Access(UserBook([User("ana", "x", "admin"), User("bo", "y", "creator")]))
    offer = offers(worker, settings, access)
    row, note, button, _ = offer.answer(job.id, "en", SimpleNamespace(username="bo"))
    assert row["visible"] and "Ask an admin" in note and button["visible"] is False
    note, _ = offer.download("whisper-small", "en", SimpleNamespace(username="bo"))
    assert "admin is needed" in note and offer.api.manager.status("openai/whisper-small").state == "idle"
    assert offer.answer(job.id, "en", SimpleNamespace(username="ana"))[0]["visible"] is False  # bo's job, not ana's
