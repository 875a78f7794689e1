"""What every speech-to-text engine shares: one file's stages around the engine's decoding, the outputs
(.txt, .srt, .vtt, and the .json that is transcript and sidecar), the batch zip, and the files an
interrupted job had already done. An engine subclasses ``TranscriberBase`` and gives ``_decode``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import zipfile
from pathlib import Path
from typing import Any

from ..families.whisper import WHISPER_LANGUAGES
from .asr_request import DEMO_MAX_NEW_TOKENS, RANDOM_WEIGHTS_NEW_TOKENS

logger = logging.getLogger("pipelines.tasks.asr")


class TranscriberBase:
    """One job's files on the resident model; subclasses set the attributes the sidecar reads
    (``batch_size``, ``first_batch_size``, ``batch_how``, ``max_new_tokens``, ``demo``, ``random_weights``,
    ``model_dtype``, ``device``, ``first_file``) and give ``_decode`` and ``_back_to_device``."""

    def _decode(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        raise NotImplementedError

    def _back_to_device(self) -> None:
        """After a file: undo what an out-of-memory fallback changed (nothing by default)."""

    def transcribe(self, path: str, name: str, index: int, count: int) -> dict:
        from ..media.audio import SAMPLE_RATE, decode_audio, is_silent, loudest_dbfs
        from ..device.memory import PeakTracker

        ctx = self.ctx
        ctx.peak.sample()
        peak = PeakTracker(self.device)
        started = time.perf_counter()
        timings = {"decode": 0.0, "features": 0.0, "language": 0.0, "generate": 0.0, "write": 0.0}
        notes: list[str] = []
        retries: list[dict] = []
        ctx.start_steps(1, clip=index + 1, clips=count)

        # 1. Decode to 16 kHz mono.
        clock = time.perf_counter()
        with ctx.stage("asr_decode"):
            audio, info = decode_audio(Path(path), name, self.request.max_duration_s)
        timings["decode"] = time.perf_counter() - clock
        duration = audio.size / SAMPLE_RATE
        loudest = loudest_dbfs(audio)
        ctx.check_cancel()

        # 2. Silence gate, 3. features, language, generation.
        language = {"requested": self.request.language, "detected": None, "probability": None, "used": None}
        decoding: dict[str, Any] = {"mode": self.request.mode}
        segments: list = []
        if is_silent(audio):
            notes.append(f"{name}: no sound above {_silence_threshold()} dBFS (loudest {loudest:.0f} dBFS): "
                         "empty transcript, the model was not run.")
            ctx.note(notes[-1])
            decoding["skipped"] = "silent"
        else:
            try:
                segments = self._decode(audio, name, index, count, timings, language, decoding, retries)
            finally:
                self._back_to_device()
        ctx.check_cancel()

        # 4. Subtitles and files.
        from ..media.subtitles import SubtitleRules, segments_to_cues, tidy_segments, timestamped_text

        segments = tidy_segments(segments, duration)
        rules = SubtitleRules(self.request.max_line_chars, self.request.max_lines, self.request.max_cue_seconds)
        cues = segments_to_cues(segments, rules)
        peak.sample()
        ctx.peak.sample()
        result = {
            "name": name, "ok": True, "language": language["used"] or language["detected"],
            "language_probability": language["probability"], "duration_s": round(duration, 3),
            "segments": len(segments), "cues": len(cues), "notes": notes,
            "text": " ".join(s.text for s in segments), "transcript": timestamped_text(segments),
        }
        clock = time.perf_counter()
        with ctx.stage("asr_write"):
            paths = self._write(name, audio_info=info, duration=duration, loudest=loudest, segments=segments,
                                cues=cues, rules=rules, language=language, decoding=decoding, retries=retries,
                                timings=timings, started=started, write_clock=clock, peak=peak.peak, notes=notes)
        result["files"] = {suffix: str(p) for suffix, p in paths.items()}
        self.first_file = False
        logger.info("Job %s: %s transcribed (%.1f s of audio, %d segments) into %s", self.job.id, name, duration,
                    len(segments), paths["json"].name)
        return result

    def _write(self, name: str, **data) -> dict[str, Path]:
        from ..studio.outputs import output_stem, safe_tag, write_atomic, write_json_atomic
        from ..media.subtitles import to_srt, to_txt, to_vtt

        stem = _free_stem(output_stem(self.ctx.settings.outputs_dir, "asr", safe_tag(Path(name).stem.replace(".", "-"))))
        texts = {"txt": to_txt(data["segments"]), "srt": to_srt(data["cues"]), "vtt": to_vtt(data["cues"])}
        paths = {}
        for suffix, text in texts.items():
            paths[suffix] = write_atomic(stem.with_name(f"{stem.name}.{suffix}"),
                                         lambda temp, text=text: temp.write_text(text, encoding="utf-8"))
        json_path = stem.with_name(f"{stem.name}.json")
        data["timings"]["write"] = time.perf_counter() - data["write_clock"]
        sidecar = self._sidecar(name, json_path, paths, **data)
        paths["json"] = write_json_atomic(json_path, sidecar)
        return paths

    def _sidecar(self, name, json_path: Path, paths: dict, *, audio_info, duration, loudest, segments, cues, rules,
                 language, decoding, retries, timings, started, write_clock, peak, notes) -> dict:
        ctx, request, spec = self.ctx, self.request, self.loaded.spec
        total = time.perf_counter() - started
        load = round(ctx.timings.get("load", 0.0), 3) if self.loaded_now and self.first_file else 0.0
        decoding = {
            **decoding,
            "batch_size": {"requested": request.batch_size, "first": self.first_batch_size,
                           "how": self.batch_how, "used": decoding.get("batch_size", self.batch_size)},
            "out_of_memory_retries": retries,
            "ran_on": "cpu (after running out of GPU memory)"
            if any(r["action"] == "retry on the CPU" for r in retries) else self.ctx.device,
            "max_new_tokens": self.max_new_tokens,
            "demo_token_cap": (f"demo mode: at most {DEMO_MAX_NEW_TOKENS} tokens per 30-second window (random weights "
                               "never end by themselves)") if self.demo else None,
            "random_weights_token_count": (f"random weights: exactly {RANDOM_WEIGHTS_NEW_TOKENS} tokens per 30-second "
                                           "window (about what speech holds; random weights never end by themselves)")
            if self.random_weights else None,
        }
        return {
            "app": "cinescribe",
            "task": "asr",
            "job_id": self.job.id,
            "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "file": json_path.name,
            "source": {"name": name, **audio_info.as_dict()},
            "text": " ".join(s.text for s in segments),
            "language": {**language, "name": WHISPER_LANGUAGES.get(language["used"] or "", None)},
            "task_done": request.task,
            "segments": [s.as_dict() for s in segments],
            "subtitles": {"max_line_chars": rules.max_line_chars, "max_lines": rules.max_lines,
                          "max_cue_seconds": rules.max_cue_seconds, "cues": len(cues)},
            "outputs": {suffix: Path(p).name for suffix, p in paths.items()} | {"json": json_path.name},
            "settings": {
                "model": spec.id, "language": request.language, "task": request.task, "mode": request.mode,
                "batch_size": request.batch_size, "word_timestamps": request.word_timestamps,
                "max_line_chars": request.max_line_chars, "max_lines": request.max_lines,
                "max_cue_seconds": request.max_cue_seconds, "max_new_tokens": request.max_new_tokens,
                "max_duration_s": request.max_duration_s, "vad": request.vad,
            },
            "model": {
                "id": spec.id, "title": spec.title, "repo_id": spec.repo_id, "revision": self.loaded.revision,
                "class": spec.pipeline_class, "loaded_for_this_job": self.loaded_now,
                "demo_random_weights": self.demo, "engine": self.loaded.optimisations.get("engine", "transformers"),
                "compute_type": self.loaded.optimisations.get("compute_type", self.loaded.dtype),
                "folder": self.loaded.optimisations.get("folder"), "weights_sha256": self.loaded.optimisations.get("weights_sha256"),
            },
            "decoding": decoding,
            "audio": {"duration_s": round(duration, 3), "sample_rate": 16000, "channels": 1,
                      "loudest_dbfs": None if loudest == -math.inf else round(loudest, 1),
                      "silence_threshold_dbfs": _silence_threshold()},
            "runtime": {**ctx.environment(), "attention": self.loaded.attention, "model_dtype": str(self.model_dtype)},
            "timings_s": {"load": load, **{k: round(v, 3) for k, v in timings.items()}, "total": round(total, 3)},
            "realtime_factor": round(duration / total, 2) if total > 0 else None,
            "realtime_factor_means": "seconds of audio per second of processing (decode to write; higher is faster)",
            "peak_memory_gib": round(peak / 2**30, 3),
            "peak_memory_kind": "torch allocator (VRAM)" if self.ctx.device.startswith("cuda") else "process RSS (CPU)",
            "notes": [*request.notes, *notes],
        }


def _silence_threshold() -> float:
    from ..media.audio import SILENCE_DBFS

    return SILENCE_DBFS


def _attach_words(segments: list, words: list) -> None:
    """Give each segment the words whose middle falls inside it (the nearest segment otherwise)."""
    if not segments:
        return
    for word in words:
        middle = (word.start + word.end) / 2
        best = min(segments, key=lambda s: 0.0 if (s.start or 0) <= middle <= (s.end if s.end is not None else math.inf)
                   else min(abs(middle - (s.start or 0)), abs(middle - (s.end or s.start or 0))))
        best.words.append(word)


def _free_stem(stem: Path) -> Path:
    """``stem`` or ``stem_2``, ``stem_3``...: the first for which no .txt/.srt/.vtt/.json exists yet."""
    for attempt in range(1, 10_000):
        candidate = stem if attempt == 1 else stem.with_name(f"{stem.name}_{attempt}")
        if not any(candidate.with_name(f"{candidate.name}.{s}").exists() for s in ("txt", "srt", "vtt", "json")):
            return candidate
    raise FileExistsError(f"No free name for {stem}")


def _write_zip(outputs_dir: Path, results: list[dict]) -> Path:
    from ..studio.outputs import output_stem, write_atomic

    done = [r for r in results if r.get("ok")]
    stem = output_stem(outputs_dir, "asr", f"batch-{len(done)}-files")

    def write(temp: Path) -> None:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for result in done:
                for path in result["files"].values():
                    archive.write(path, arcname=Path(path).name)

    return write_atomic(stem.with_name(f"{stem.name}.zip"), write)


def _transcribed_before(ctx, job) -> dict[str, dict]:
    """The files an earlier, interrupted run of this job transcribed (it runs again after a restart), by
    name, as ``transcribe`` returns them, rebuilt from their sidecars. Empty on a first attempt."""
    if job.attempts < 2:
        return {}
    from ..studio.history import History
    from ..media.subtitles import Segment, timestamped_text

    found = {}
    for entry in History(ctx.settings.outputs_dir).entries():
        if entry.job_id != job.id or entry.task != "asr" or entry.sidecar is None:
            continue
        try:
            data = json.loads(entry.sidecar.read_text(encoding="utf-8"))
            segments = [Segment(d["start"], d["end"], d["text"]) for d in data["segments"]]
            found[data["source"]["name"]] = {
                "name": data["source"]["name"], "ok": True,
                "language": data["language"].get("used") or data["language"].get("detected"),
                "language_probability": data["language"].get("probability"),
                "duration_s": data["audio"]["duration_s"], "segments": len(data["segments"]),
                "cues": data["subtitles"]["cues"], "notes": [], "text": data["text"],
                "transcript": timestamped_text(segments),
                "files": {suffix: str(entry.sidecar.parent / name) for suffix, name in data["outputs"].items()},
            }
        except (OSError, ValueError, KeyError, TypeError) as error:  # an unreadable sidecar: transcribe again
            logger.warning("Job %s: cannot reuse %s (%s)", job.id, entry.sidecar, error)
    if found:
        ctx.note(f"{len(found)} file(s) were transcribed before the app stopped; they are kept, not done again.")
    return found
