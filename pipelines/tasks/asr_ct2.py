"""The CTranslate2 engine (faster-whisper): the same request, outputs and sidecar as transformers.

``chunked`` runs faster-whisper's ``BatchedInferencePipeline`` (voice-detected pieces, or 30-second windows
with voice detection off, decoded in batches); ``sequential`` runs ``WhisperModel.transcribe`` (Whisper's
long-form algorithm with temperature fallback). Silero voice detection (faster-whisper ships its ONNX
model) is on unless the request turns it off: music and silence are not decoded, long pauses get no
invented text, and segments start where the voice starts. Out of GPU memory, a file is retried with half
the batch, down to 1, then the job's model is loaded again on the CPU (int8). Stop is checked between
segments and between files.
"""

from __future__ import annotations

import logging
import time

from ..studio.jobs import Job, RequestError
from .asr_outputs import TranscriberBase
from .asr_request import CHUNK_SECONDS, CPU_BATCH_SIZE, MAX_AUTO_BATCH_SIZE, ASRRequest

logger = logging.getLogger("pipelines.tasks.asr")

GPU_BATCH_SIZE = 16  # faster-whisper's batched pipeline: 16 pieces of up to 30 s at once


def _is_out_of_memory(error: Exception) -> bool:
    return "out of memory" in str(error).lower()


class CT2Transcriber(TranscriberBase):
    """One job's files on a resident faster-whisper ``WhisperModel``."""

    def __init__(self, job: Job, ctx, request: ASRRequest, loaded, loaded_now: bool):
        self.job, self.ctx, self.request, self.loaded, self.loaded_now = job, ctx, request, loaded, loaded_now
        self.model = loaded.pipe
        self.device = ctx.device
        self.model_dtype = loaded.dtype
        self.demo = False
        self.random_weights = False
        self.max_new_tokens = request.max_new_tokens or None
        on_gpu = self.device.startswith("cuda")
        if request.batch_size:
            self.batch_size, self.batch_how = request.batch_size, "set in the request"
        elif on_gpu:
            self.batch_size, self.batch_how = min(GPU_BATCH_SIZE, MAX_AUTO_BATCH_SIZE), "CTranslate2 default on a GPU"
        else:
            self.batch_size, self.batch_how = CPU_BATCH_SIZE, "default on the CPU"
        self.first_batch_size = self.batch_size
        self.first_file = True
        self.cpu_model = None  # loaded once, after running out of GPU memory at batch size 1

    def check_language(self) -> None:
        """An English-only (``.en``) model transcribes English: another language asked for is refused."""
        if not self.model.model.is_multilingual and self.request.language not in ("auto", "en"):
            raise RequestError(f"{self.loaded.spec.title} is an English-only model: it transcribes English only.",
                               key="asr_english_only", model=self.loaded.spec.title)

    def _options(self, language: dict) -> dict:
        request = self.request
        options = {"task": request.task, "word_timestamps": request.word_timestamps, "vad_filter": request.vad}
        if not self.model.model.is_multilingual:
            options["language"] = "en"
            options["task"] = "transcribe"
            language["forced"] = "English-only model"
        elif request.language != "auto":
            options["language"] = request.language
        if self.max_new_tokens:
            options["max_new_tokens"] = self.max_new_tokens
        return options

    def _decode(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        options = self._options(language)
        decoding.update(engine="ctranslate2", compute_type=self.loaded.dtype, vad=self.request.vad)
        model = self.cpu_model or self.model
        size = self.batch_size
        while True:
            try:
                return self._run(model, audio, options, size, timings, language, decoding, index, count)
            except RuntimeError as error:
                if not _is_out_of_memory(error):
                    raise
                if size > 1:
                    retries.append({"action": "halve the batch", "from": size, "to": size // 2, "error": str(error)[:200]})
                    size //= 2
                    self.batch_size = size
                else:
                    retries.append({"action": "retry on the CPU", "error": str(error)[:200]})
                    self.cpu_model = model = self._cpu_model()
                self.ctx.note(f"{name}: out of memory; {retries[-1]['action']}.")

    def _cpu_model(self):
        from ..families.whisper_load import load_ct2

        return load_ct2(self.loaded.spec, self.loaded.source, self.loaded.revision, "cpu", "int8").pipe

    def _run(self, model, audio, options, size, timings, language, decoding, index, count) -> list:
        from faster_whisper import BatchedInferencePipeline

        from ..media.audio import SAMPLE_RATE
        from ..media.subtitles import Segment, Word

        clock = time.perf_counter()
        if self.request.mode == "chunked":
            extra = {}
            if not self.request.vad:  # 30-second windows instead of voice-detected pieces
                seconds = audio.size / SAMPLE_RATE
                extra["clip_timestamps"] = [{"start": float(s), "end": float(min(s + CHUNK_SECONDS, seconds))}
                                            for s in range(0, max(1, int(seconds + 0.999)), CHUNK_SECONDS)]
            pieces, info = BatchedInferencePipeline(model).transcribe(audio, batch_size=size, **options, **extra)
            decoding["batch_size"] = size
        else:
            pieces, info = model.transcribe(audio, **options)
        language.update(detected=info.language, probability=round(float(info.language_probability), 4),
                        used=options.get("language") or info.language)
        if getattr(info, "duration_after_vad", None) is not None:
            decoding["seconds_of_voice"] = round(float(info.duration_after_vad), 3)
        timings["language"] += time.perf_counter() - clock
        clock = time.perf_counter()
        segments = []
        total = max(audio.size / SAMPLE_RATE, 1e-6)
        clock_steps = self.ctx.start_steps(100, clip=index + 1, clips=count)
        done = 0
        for piece in pieces:  # a lazy generator: Stop is checked after each segment
            self.ctx.check_cancel()
            words = [Word(float(w.start), float(w.end), w.word) for w in (piece.words or [])]
            text = piece.text.strip()
            if text:
                segments.append(Segment(float(piece.start), float(piece.end), text, words))
            while done < min(100, int(100 * piece.end / total)):
                done += 1
                self.ctx.step(clock_steps)
        timings["generate"] += time.perf_counter() - clock
        return segments
