"""A Whisper given as a Hugging Face repo id (a fine-tune the creator fetched before) is found in the local
Hugging Face cache, offline, and transcribes: a tiny real ``WhisperForConditionalGeneration`` and its
``WhisperProcessor`` saved in the hub's snapshot layout (``models--org--name/snapshots/<rev>/``, ``refs/main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.studio.jobs import JobState, RequestError
from tests.conftest import wait_finished

REPO = "someone/whisper-tiny-cantonese"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An HF_HUB_CACHE holding ``REPO`` at ``REVISION``, with the hub offline."""
    import huggingface_hub.constants as constants
    from transformers import WhisperProcessor

    from pipelines.families.demo_asr import build_whisper

    cache = tmp_path / "hub"
    repo = cache / ("models--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    bundle = build_whisper()
    bundle.model.save_pretrained(snapshot)
    WhisperProcessor(feature_extractor=bundle.feature_extractor, tokenizer=bundle.tokenizer).save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION, encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read when the hub client was imported
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return snapshot


def test_a_cached_repo_id_is_found_offline_and_transcribes(hub_cache, tmp_path, data_dir):
    from pipelines.bench.workloads import speech_like_audio
    from pipelines.device.worker import GPUWorker
    from pipelines.studio.settings import Settings
    from pipelines.tasks.asr import ASRRequest, asr_spec

    spec = asr_spec(REPO)
    assert spec.id == REPO and spec.extra["hub_repo"] == REPO and Path(spec.repo_id) == hub_cache
    assert spec.extra["kind"] == "transformers" and not spec.extra["english_only"]

    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, device="cpu", asr_engine="auto")
    worker = GPUWorker(settings)
    worker.start()
    try:
        assert worker.wait_ready(60)
        audio = speech_like_audio(tmp_path, 5)
        # random weights never end a window by themselves: a few tokens; the synthetic voice is not speech to
        # Silero, so voice detection is off
        request = ASRRequest(files=[str(audio)], model=REPO, language="yue", max_new_tokens=8, vad=False)
        job = wait_finished(worker.submit("asr", request), 120)
    finally:
        worker.stop()
    assert job.state == JobState.DONE, job.error
    [entry] = job.result["files"]
    assert entry["ok"] and entry["text"].strip(), entry
    sidecar = json.loads(Path(entry["files"]["json"]).read_text(encoding="utf-8"))
    assert sidecar["model"]["engine"] == "transformers"  # a transformers checkpoint, though auto prefers CTranslate2
    assert sidecar["model"]["id"] == REPO and sidecar["model"]["revision"] == REVISION
    assert Path(sidecar["model"]["folder"]) == hub_cache
    assert sidecar["language"]["used"] == "yue"


def test_a_repo_id_not_in_the_cache_says_where_it_looked(hub_cache):
    from pipelines.tasks.asr import asr_spec

    with pytest.raises(RequestError, match="Hugging Face repo id already in the cache") as raised:
        asr_spec("someone/not-downloaded")
    assert raised.value.key == "model_unknown"
