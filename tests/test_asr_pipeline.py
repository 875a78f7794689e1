"""Speech to text with a tiny real Whisper built locally (real tokenizer layout, real generate), through the worker."""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import subprocess
import wave
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.tasks import asr as asr_module
from pipelines.tasks.asr import ASRRequest, WHISPER_LANGUAGES, plan_windows, validate_asr
from pipelines.media.audio import SAMPLE_RATE, decode_audio
from pipelines.studio.jobs import JobState, RequestError
from pipelines.media.ffmpeg import ffmpeg_exe
from pipelines.device.worker import TaskContext
from tests.conftest import wait_finished
from tests.test_subtitles import assert_well_formed, parse_srt, parse_vtt

from pipelines.media.subtitles import SubtitleRules


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    data = np.clip(samples, -1, 1)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((data * 32767).astype("<i2").tobytes())
    return path


def speechlike(seconds: float, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Syllable-like bursts of a voiced harmonic sound with pauses, around -20 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (np.sin(2 * np.pi * 3.0 * t) > -0.2) * (np.sin(2 * np.pi * 0.25 * t) > -0.6)
    return (0.15 * voice * envelope + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    two_minutes = np.concatenate([speechlike(70, 1), np.zeros(40 * SAMPLE_RATE, np.float32), speechlike(10, 2)])
    files = {
        "two_minutes": write_wav(folder / "two minutes.wav", two_minutes),  # 70 s sound, 40 s silence, 10 s sound
        "short": write_wav(folder / "short.wav", speechlike(4, 3)),
        "forty": write_wav(folder / "forty.wav", speechlike(40, 4)),
        "silence": write_wav(folder / "silence.wav", np.zeros(3 * SAMPLE_RATE, np.float32)),
        "hiss": write_wav(folder / "hiss.wav", 0.0003 * np.random.default_rng(5).standard_normal(4 * SAMPLE_RATE)),
        "six_seconds": write_wav(folder / "six seconds.wav", speechlike(6, 6)),
        "empty": folder / "empty.wav",
        "junk": folder / "junk.mp3",
        "no_audio": folder / "no audio.mp4",
        "video": folder / "clip.mp4",
        "stereo48": folder / "stereo 48k.wav",
    }
    files["empty"].write_bytes(b"")
    files["junk"].write_bytes(np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(files["no_audio"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
           "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(files["video"]))
    left = 0.4 * np.sin(2 * np.pi * 440 * np.arange(3 * 48000) / 48000)
    right = 0.4 * np.sin(2 * np.pi * 1500 * np.arange(3 * 48000) / 48000)
    write_wav(files["stereo48"], np.stack([left, right], axis=1), rate=48000)
    return files


def record_steps(monkeypatch) -> list[tuple]:
    seen = []
    original = TaskContext.step

    def recording(self, clock, preview=None):
        original(self, clock, preview)
        p = self.job.progress
        seen.append((p.clip, p.clips, p.step, p.total))

    monkeypatch.setattr(TaskContext, "step", recording)
    return seen


def record_batches(monkeypatch) -> list[int]:
    sizes = []
    original = asr_module._Transcriber._generate

    def recording(self, features, attention_mask, language, **extra):
        sizes.append(int(features.shape[0]))
        return original(self, features, attention_mask, language, **extra)

    monkeypatch.setattr(asr_module._Transcriber, "_generate", recording)
    return sizes


def sidecar(entry: dict) -> dict:
    return json.loads(Path(entry["files"]["json"]).read_text(encoding="utf-8"))


# --- the tiny model ------------------------------------------------------------------------------------


def test_tiny_whisper_has_whisper_layout_and_loads_through_the_app(settings):
    from transformers import WhisperTokenizer

    from pipelines.tasks.asr import load_asr_model
    from pipelines.families.catalogue import get_spec

    loaded = load_asr_model(get_spec("whisper-large-v3"), settings, "cpu", "fp32")
    assert loaded.revision == "demo (random weights)" and loaded.attention == "sdpa"
    tokenizer = WhisperTokenizer.from_pretrained(loaded.source)
    config = loaded.pipe.model.generation_config
    ids = tokenizer.convert_tokens_to_ids
    assert len(config.lang_to_id) == 100 and config.lang_to_id["<|yue|>"] == ids("<|yue|>")
    assert ids("<|yue|>") == ids("<|startoftranscript|>") + 100  # Whisper finds languages by offset
    assert config.no_timestamps_token_id == tokenizer.all_special_ids[-1] == ids("<|0.00|>") - 1
    assert config.task_to_id == {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}
    assert config.alignment_heads and config.max_initial_timestamp_index == 50
    tokenizer.set_prefix_tokens(language="cantonese", task="translate", predict_timestamps=True)
    assert tokenizer.prefix_tokens == [ids("<|startoftranscript|>"), ids("<|yue|>"), ids("<|translate|>")]
    text = " hello the studio"
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(encoded) < len(text) / 2  # real merges, not one token per byte
    with_times = [ids("<|0.00|>"), *encoded, ids("<|1.50|>")]
    assert tokenizer.decode(with_times, decode_with_timestamps=True) == f"<|0.00|>{text}<|1.50|>"
    assert tokenizer.decode(with_times, skip_special_tokens=True) == text
    assert loaded.pipe.model.config.num_mel_bins == loaded.pipe.feature_extractor.feature_size == 128


def test_language_table_matches_transformers():
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert list(WHISPER_LANGUAGES.items()) == list(LANGUAGES.items())


# --- audio in ------------------------------------------------------------------------------------------


def test_48k_stereo_and_video_are_resampled_to_16k_mono(media):
    audio, info = decode_audio(media["stereo48"])
    assert (info.sample_rate, info.channels) == (48000, "stereo")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 3 * SAMPLE_RATE) <= 16
    spectrum = np.abs(np.fft.rfft(audio))
    peaks = sorted(np.argsort(spectrum)[-2:] * SAMPLE_RATE / audio.size)
    assert peaks == pytest.approx([440, 1500], abs=2)  # both channels are in the mix

    audio, info = decode_audio(media["video"])
    assert (info.audio_codec, info.sample_rate, info.video_streams) == ("aac", 44100, 1)
    assert abs(audio.size - 3 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * SAMPLE_RATE / audio.size == pytest.approx(1000, abs=2)


def test_windows_follow_the_asr_pipeline_chunking():
    windows = plan_windows(120 * SAMPLE_RATE, SAMPLE_RATE)
    assert [(w.start // SAMPLE_RATE, w.end // SAMPLE_RATE) for w in windows] == [
        (0, 30), (20, 50), (40, 70), (60, 90), (80, 110), (100, 120)]
    assert (windows[0].stride_left, windows[0].stride_right) == (0, 5 * SAMPLE_RATE)
    assert (windows[-1].stride_left, windows[-1].stride_right) == (5 * SAMPLE_RATE, 0)
    assert len(plan_windows(10 * SAMPLE_RATE, SAMPLE_RATE)) == 1


# --- jobs ----------------------------------------------------------------------------------------------


def test_two_minutes_go_through_batched_windows_to_well_formed_subtitles(worker, settings, media, monkeypatch):
    steps, batches = record_steps(monkeypatch), record_batches(monkeypatch)
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["two_minutes"])])), 300)
    assert job.state == JobState.DONE, job.error
    [entry] = job.result["files"]
    assert entry["ok"], entry
    # six windows, the one inside the 40 s pause skipped; the CPU batch size of 4
    assert batches == [4, 1]
    assert [s for s in steps if s[2] > 0][-5:] == [(1, 1, n, 5) for n in range(1, 6)]
    paths = {suffix: Path(p) for suffix, p in entry["files"].items()}
    assert re.fullmatch(r"\d{6}_asr_two-minutes", paths["json"].stem)
    assert {p.stem for p in paths.values()} == {paths["json"].stem}
    assert paths["json"].parent.parent == settings.outputs_dir

    data = sidecar(entry)
    rules = SubtitleRules()
    srt = parse_srt(paths["srt"].read_text(encoding="utf-8"))
    vtt = parse_vtt(paths["vtt"].read_text(encoding="utf-8"))
    assert srt and [c[:2] for c in srt] == [c[:2] for c in vtt]
    assert_well_formed(srt, rules, 120.0)
    assert len(srt) == data["subtitles"]["cues"]
    starts = [s["start"] for s in data["segments"]]
    assert starts == sorted(starts) and all(s["start"] <= s["end"] <= 120.0 for s in data["segments"])
    assert paths["txt"].read_text(encoding="utf-8").strip() == "\n".join(s["text"] for s in data["segments"])
    assert data["text"] and data["text"] in entry["text"]

    assert data["decoding"]["mode"] == "chunked"
    assert (data["decoding"]["windows"], data["decoding"]["silent_windows_skipped"]) == (6, 1)
    assert data["decoding"]["batch_size"]["used"] == 4 and data["decoding"]["out_of_memory_retries"] == []
    assert data["decoding"]["max_new_tokens"] == asr_module.DEMO_MAX_NEW_TOKENS and data["decoding"]["demo_token_cap"]
    assert data["language"]["requested"] == "auto" and data["language"]["detected"] in WHISPER_LANGUAGES
    assert 0 < data["language"]["probability"] <= 1
    assert data["model"]["id"] == "whisper-large-v3" and data["model"]["revision"] == "demo (random weights)"
    timings = data["timings_s"]
    assert all(timings[k] > 0 for k in ("decode", "features", "language", "generate", "total"))
    assert data["audio"]["duration_s"] == pytest.approx(120.0, abs=0.01)
    assert data["realtime_factor"] == pytest.approx(120.0 / timings["total"], rel=0.05)
    assert data["peak_memory_gib"] > 0 and data["runtime"]["attention"] == "sdpa"
    assert data["runtime"]["versions"]["transformers"]


def test_bad_inputs_get_their_messages_and_the_batch_goes_on(worker, media, monkeypatch):
    batches = record_batches(monkeypatch)
    names = ["short", "empty", "junk", "no_audio", "silence", "hiss", "six_seconds", "video"]
    files = [str(media[n]) for n in names] + [str(media["short"].with_name("gone.wav"))]
    job = wait_finished(worker.submit("asr", ASRRequest(files=files, max_duration_s=5)), 300)
    assert job.state == JobState.DONE, job.error
    results = {Path(f).name: r for f, r in zip(files, job.result["files"])}
    assert results["short.wav"]["ok"] and results["clip.mp4"]["ok"]
    expected = {
        "empty.wav": ("asr_file_empty", "empty"),
        "junk.mp3": ("asr_file_corrupt", "could not be read as audio or video"),
        "no audio.mp4": ("asr_no_audio", "has no audio stream"),
        "six seconds.wav": ("asr_too_long", "is 6.0 s long; the limit is 5.0 s"),
        "gone.wav": ("asr_file_missing", "does not exist"),
    }
    for name, (key, words) in expected.items():
        assert not results[name]["ok"] and results[name]["error_key"] == key, results[name]
        assert words in results[name]["error"] and name in results[name]["error"]
    for quiet in ("silence.wav", "hiss.wav"):  # pure silence and -70 dBFS hiss: nothing invented
        entry = results[quiet]
        assert entry["ok"] and entry["text"] == "" and entry["segments"] == 0
        assert parse_srt(Path(entry["files"]["srt"]).read_text(encoding="utf-8")) == []
        assert sidecar(entry)["decoding"]["skipped"] == "silent"
    assert len(batches) == 2  # the model ran for short.wav and clip.mp4 only
    done = [r for r in job.result["files"] if r["ok"]]
    with zipfile.ZipFile(job.result["zip"]) as archive:
        assert sorted(archive.namelist()) == sorted(Path(p).name for r in done for p in r["files"].values())


def test_sequential_long_form_with_a_given_language_and_word_timestamps(worker, media):
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["forty"])], mode="sequential", language="yue",
                                                        word_timestamps=True)), 300)
    assert job.state == JobState.DONE, job.error
    data = sidecar(job.result["files"][0])
    assert data["decoding"]["long_form"] is True and data["decoding"]["long_form_settings"]["temperature"][0] == 0.0
    assert data["language"] == {"requested": "yue", "detected": None, "probability": None, "used": "yue",
                                "name": "cantonese"}
    assert data["segments"], "the random model wrote nothing"
    worded = [s for s in data["segments"] if s.get("words")]
    assert worded
    for segment in worded:
        assert all(segment["start"] <= w["start"] <= w["end"] <= segment["end"] for w in segment["words"])
    assert_well_formed(parse_srt(Path(job.result["files"][0]["files"]["srt"]).read_text(encoding="utf-8")),
                       SubtitleRules(), 40.0)
    # word timestamps switch transformers to eager attention; the resident model must get SDPA back
    model = worker.models._resident["whisper-large-v3"].pipe.model
    assert model.config._attn_implementation == "sdpa"


def test_out_of_memory_halves_the_batch_then_reports_the_file(worker, media, monkeypatch):
    import torch

    original = asr_module._Transcriber._generate
    sizes = []

    def tight(self, features, attention_mask, language, **extra):
        sizes.append(int(features.shape[0]))
        if features.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, features, attention_mask, language, **extra)

    monkeypatch.setattr(asr_module._Transcriber, "_generate", tight)
    files = [str(media["two_minutes"]), str(media["short"])]
    job = wait_finished(worker.submit("asr", ASRRequest(files=files)), 300)
    assert job.state == JobState.DONE, job.error
    assert sizes == [4, 2, 1, 1, 1, 1, 1, 1]  # 4 fails, 2 fails, then the five windows one by one; short.wav
    first, second = (sidecar(entry) for entry in job.result["files"])
    retries = first["decoding"]["out_of_memory_retries"]
    assert [(r["action"], r["from"], r["to"]) for r in retries] == [("halve batch size", 4, 2), ("halve batch size", 2, 1)]
    assert "CUDA out of memory" in retries[0]["error"]
    assert second["decoding"]["batch_size"]["used"] == 1  # the smaller size is kept for the rest of the job
    assert any("out of GPU memory with batch size 4; retrying with 2" in note for note in job.notes)

    def never(self, features, attention_mask, language, **extra):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(asr_module._Transcriber, "_generate", never)
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"]), str(media["video"])])), 300)
    assert job.state == JobState.DONE  # never dies silently: each file says why
    assert [r["error_key"] for r in job.result["files"]] == ["asr_out_of_memory"] * 2
    assert "out of memory even on the CPU" in job.result["files"][0]["error"]


def test_model_stays_resident_and_release_drops_it(worker, media):
    first = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"])])))
    second = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"])], model="whisper-large-v3")))
    assert first.state == second.state == JobState.DONE
    assert worker.models.load_counts == {"whisper-large-v3": 1}
    assert sidecar(second.result["files"][0])["timings_s"]["load"] == 0.0
    model = weakref.ref(worker.models._resident["whisper-large-v3"].pipe.model)
    report = worker.release_vram(timeout=60)
    gc.collect()
    assert report["released"] == ["whisper-large-v3"] and model() is None


def test_cancel_stops_between_files_and_keeps_finished_ones(worker, media, settings):
    job = worker.submit("asr", ASRRequest(files=[str(media["short"])] * 30))
    seen = -1
    while not job.state.finished and (job.progress.clip < 2):
        seen = job.wait_for_change(seen, 5)
    assert worker.cancel(job.id)
    wait_finished(job, 120)
    assert job.state == JobState.CANCELLED
    written = list(settings.outputs_dir.rglob("*_asr_short*.json"))
    assert 1 <= len(written) < 30
    assert wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"])]))).state == JobState.DONE


def test_missing_weights_name_the_fetch_command(worker, media, monkeypatch):
    monkeypatch.setattr(worker.settings, "demo", False)
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"])], model="whisper-small")))
    assert job.state == JobState.FAILED and job.error_key == "model_missing"
    assert "python scripts/download_models.py whisper-small" in job.error and "openai/whisper-small" in job.error


# --- validation ----------------------------------------------------------------------------------------


def test_translation_with_turbo_switches_to_large_v3_with_a_note():
    request = validate_asr(ASRRequest(files=["a.wav"], model="whisper-large-v3-turbo", task="translate"))
    assert request.model == "whisper-large-v3"
    assert "not trained to translate" in request.notes[0]
    kept = validate_asr(ASRRequest(files=["a.wav"], model="whisper-large-v3-turbo", task="transcribe"))
    assert kept.model == "whisper-large-v3-turbo" and not kept.notes


@pytest.mark.parametrize("language, code", [("auto", "auto"), ("", "auto"), ("EN", "en"), ("Cantonese", "yue"),
                                            ("<|yue|>", "yue"), ("mandarin", "zh")])
def test_languages_are_understood(language, code):
    assert validate_asr(ASRRequest(files=["a.wav"], language=language)).language == code


@pytest.mark.parametrize(
    "changes, key, words",
    [
        (dict(files=[]), "asr_no_files", "Add at least one"),
        (dict(files=["a.wav"] * 101), "asr_too_many_files", "limit is 100"),
        (dict(language="klingon"), "asr_language", "'klingon'"),
        (dict(task="summarise"), "asr_task", "'summarise'"),
        (dict(mode="fast"), "asr_mode", "'fast'"),
        (dict(batch_size=65), "asr_batch_range", "between 0 and 64, not 65"),
        (dict(batch_size="many"), "asr_batch_type", "'many'"),
        (dict(max_line_chars=5), "asr_line_chars_range", "not 5"),
        (dict(max_cue_seconds=0), "asr_cue_seconds_range", "between 1 and 30"),
        (dict(model="wan2.1-t2v-1.3b"), "asr_model_wrong_task", "not a speech recognition model"),
    ],
)
def test_bad_requests_are_refused_before_any_gpu_work(changes, key, words):
    with pytest.raises(RequestError) as raised:
        validate_asr(dataclasses.replace(ASRRequest(files=["a.wav"]), **changes))
    assert raised.value.key == key and words in str(raised.value)


def test_a_language_the_model_lacks_is_refused(worker, media, monkeypatch):
    """Whisper small and medium (the v2 vocabulary) have no <|yue|>: the job says so instead of guessing."""
    assert wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"])]))).state == JobState.DONE
    model = worker.models._resident["whisper-large-v3"].pipe.model
    monkeypatch.delitem(model.generation_config.lang_to_id, "<|yue|>")
    job = wait_finished(worker.submit("asr", ASRRequest(files=[str(media["short"])], language="yue")))
    assert job.state == JobState.FAILED and job.error_key == "asr_language_model"
    assert "does not know cantonese (yue)" in job.error
