"""Whisper's static KV cache (``--asr-static-cache``) gives the same transcript as the dynamic cache: the tiny
real Whisper, sequential decoding, short and long-form (40 s) audio, on the CPU (where transformers does not
compile; on a CUDA GPU its ``generate`` compiles the decoder for the static cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.tasks import asr as asr_module
from pipelines.tasks.asr import ASRRequest
from pipelines.studio.jobs import JobState
from tests.conftest import wait_finished
from tests.test_asr_pipeline import speechlike, write_wav


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("static_cache_audio")
    return {"short": write_wav(folder / "short.wav", speechlike(6, 11)),
            "long": write_wav(folder / "long.wav", speechlike(40, 12))}


def _transcribe(worker, path: Path) -> dict:
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(path)], mode="sequential", language="en")), 300)
    assert job.state == JobState.DONE, job.error
    entry = job.result["files"][0]
    assert entry["ok"], entry
    return json.loads(Path(entry["files"]["json"]).read_text(encoding="utf-8"))


@pytest.mark.parametrize("length", ["short", "long"])
def test_static_cache_gives_the_same_text(worker, audio, monkeypatch, length):
    # greedy only: the long-form temperature fallback samples, and the random tiny model's output always
    # fails the compression check, so with fallback two runs would differ whatever the cache
    monkeypatch.setitem(asr_module.LONG_FORM, "temperature", (0.0,))
    dynamic = _transcribe(worker, audio[length])
    monkeypatch.setattr(worker.settings, "asr_static_cache", True)
    static = _transcribe(worker, audio[length])
    assert dynamic["decoding"]["static_cache"] is False and static["decoding"]["static_cache"] is True
    assert static["decoding"]["long_form"] is (length == "long")
    assert static["text"] == dynamic["text"] and static["text"].strip()
    assert [(s["start"], s["end"], s["text"]) for s in static["segments"]] == \
        [(s["start"], s["end"], s["text"]) for s in dynamic["segments"]]
