"""``/asr`` through gradio_client against the app started with --demo, as any script would call it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from pipelines.media.ffmpeg import ffmpeg_exe
from tests.test_subtitles import parse_srt, parse_vtt

DEFAULTS = dict(microphone=None, model="whisper-large-v3", language="auto", task="transcribe", mode="chunked",
                batch_size=0, word_timestamps=False, max_line_chars=42, max_lines=2, max_cue_seconds=7,
                max_new_tokens=0)


@pytest.fixture(scope="module")
def client(served_app):
    return Client(served_app.url, verbose=False)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """A spoken sentence from espeak-ng (else a sox or ffmpeg tone), as a WAV file."""
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "Hello and welcome to the studio. Today we talk about speech."],
                       check=True)
    elif shutil.which("sox"):
        subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", str(path), "synth", "3", "sine", "300-900"], check=True)
    else:
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
                        str(path)], check=True)
    return path


def asr(client, files, **changes):
    return client.predict(files=[handle_file(str(f)) for f in files], **{**DEFAULTS, **changes}, api_name="/asr")


def test_asr_returns_text_subtitles_and_json(client, spoken, served_app):
    status, language, transcript, downloads, recorded = asr(client, [spoken])
    assert status.startswith("Done: 1 of 1 file(s)")
    assert language.startswith("hello.wav: ") and "sure" in language
    assert transcript.startswith("[00:00")
    by_suffix = {Path(f).suffix: Path(f) for f in downloads}
    assert set(by_suffix) == {".txt", ".srt", ".vtt", ".json"}
    assert len({p.stem for p in by_suffix.values()}) == 1 and by_suffix[".json"].stem.endswith("_asr_hello")
    assert parse_srt(by_suffix[".srt"].read_text(encoding="utf-8"))
    assert parse_vtt(by_suffix[".vtt"].read_text(encoding="utf-8"))
    data = json.loads(by_suffix[".json"].read_text(encoding="utf-8"))
    assert data["source"]["name"] == "hello.wav" and data["settings"]["model"] == "whisper-large-v3"
    assert json.loads(recorded)["job_id"] == data["job_id"]
    written = list(served_app.outputs.rglob("*_asr_hello.*"))
    assert {p.suffix for p in written} >= {".txt", ".srt", ".vtt", ".json"}


def test_a_batch_gets_a_zip_and_the_settings_are_used(client, spoken, tmp_path):
    copy = tmp_path / "second take.wav"
    shutil.copy(spoken, copy)
    status, _, transcript, downloads, recorded = asr(client, [spoken, copy], mode="sequential", language="Cantonese",
                                                     word_timestamps=True, max_line_chars=30, max_lines=1)
    assert status.startswith("Done: 2 of 2 file(s)")
    assert "=== hello.wav ===" in transcript and "=== second take.wav ===" in transcript
    zips = [Path(f) for f in downloads if f.endswith(".zip")]
    assert len(zips) == 1 and len(downloads) == 9
    settings = json.loads(recorded)["settings"]
    assert (settings["mode"], settings["language"], settings["word_timestamps"], settings["max_line_chars"],
            settings["max_lines"]) == ("sequential", "yue", True, 30, 1)


def test_bad_file_gets_its_message_in_the_callers_language(client, served_app, tmp_path):
    junk = tmp_path / "broken.mp3"
    junk.write_bytes(b"\x00\x01not audio at all" * 100)
    with pytest.raises(Exception) as raised:
        asr(client, [junk])
    assert "broken.mp3 could not be read as audio or video" in str(raised.value)
    chinese = Client(served_app.url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(Exception) as raised:
        asr(chinese, [junk])
    assert "broken.mp3 无法作为音频或视频读取" in str(raised.value)
    with pytest.raises(Exception) as raised:
        asr(client, [])
    assert "Add at least one audio or video file" in str(raised.value)
    with pytest.raises(Exception) as raised:
        asr(client, [junk], language="klingon")
    assert "Whisper has no language klingon" in str(raised.value)
