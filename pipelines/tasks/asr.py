"""Speech to text with transformers' Whisper: validate a request, transcribe a batch of files, write them out.

``run_asr`` takes each file through the same stages: decode (ffmpeg, to 16 kHz mono), a silence gate,
log-mel features, language detection (when asked), generation, subtitles. Two ways to decode long audio:

- ``chunked`` (default, fastest): 30-second windows overlapping by 5 s on each side, batched on the GPU,
  merged by transformers' own Whisper chunk-merging (the ASR pipeline's ``_decode_asr``). Windows that
  are silent are not sent to the model.
- ``sequential``: Whisper's long-form algorithm (``model.generate`` over the whole file, each window
  starting where the last segment ended), with temperature fallback, compression-ratio, log-prob and
  no-speech thresholds: slower, more faithful across window boundaries.

A file whose loudest 100 ms is below ``pipelines.media.audio.SILENCE_DBFS`` gets an empty transcript without
running the model (Whisper invents text on silence). Out of GPU memory, a file is retried with half the
batch size, down to 1, then on the CPU (each step is logged and kept in the sidecar); the job goes on.
A bad file (missing, empty, corrupt, no audio stream, too long) gets its message and the job goes on with
the others.

Outputs, per file, share one stem ``outputs/<date>/<time>_asr_<file name>``:

- ``.txt``  the plain transcript, one segment per line;
- ``.srt`` and ``.vtt``  subtitles, cut by ``pipelines.media.subtitles.SubtitleRules``;
- ``.json`` the transcript (text, language, segments, words when asked) **and** the sidecar: settings,
  model and revision, device/dtype/attention, batch size and every out-of-memory retry, chunking mode,
  timings (decode, features, language, generate, write), audio duration, real-time factor, peak memory.
  There is no separate ``.settings.json``: the ``.json`` is both.

A batch with two or more transcribed files also gets ``<time>_asr_batch-<n>-files.zip`` next to them,
holding all of them. In ``--demo`` mode the tiny random Whisper decodes at most ``DEMO_MAX_NEW_TOKENS``
tokens per 30-second window (it never stops by itself); the sidecar says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..studio.jobs import Job, JobCancelled, RequestError, parse_number
from ..families.catalogue import DEFAULT_MODEL, get_spec
from ..families.whisper import WHISPER_LANGUAGES, WhisperBundle  # noqa: F401  (named here too, for the UI)

logger = logging.getLogger(__name__)

CHUNK_SECONDS = 30  # Whisper's window
STRIDE_SECONDS = CHUNK_SECONDS / 6  # overlap on each side of a window, as transformers' ASR pipeline
DEMO_MAX_NEW_TOKENS = 20  # per 30-second window, for the tiny random model that never says "end of text"
# Benchmarks with --random-weights (real architecture, random weights): exactly this many tokens per 30-second
# window, about what 30 s of speech holds, so the figure stays comparable with real weights.
RANDOM_WEIGHTS_NEW_TOKENS = 100
MAX_FILES = 100
MAX_BATCH_SIZE = 64
MAX_AUTO_BATCH_SIZE = 24  # more windows at once gains little; large-v3 at 24 needs ~16 GB besides weights
CPU_BATCH_SIZE = 4
VRAM_RESERVE_BYTES = 1 << 30  # kept free when choosing a batch size from free VRAM
LANGUAGE_DETECT_WINDOWS = 3  # language detection averages the first few windows with sound
TRANSLATION_MODEL = "whisper-large-v3"
NOT_TRAINED_TO_TRANSLATE = ("whisper-large-v3-turbo",)
MODES = ("chunked", "sequential")
TASKS = ("transcribe", "translate")
# Whisper's long-form decoding settings (the paper's, as transformers documents them).
LONG_FORM = {
    "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    "compression_ratio_threshold": 1.35,
    "logprob_threshold": -1.0,
    "no_speech_threshold": 0.6,
    "condition_on_prev_tokens": False,
}

_LANGUAGE_BY_NAME = {name: code for code, name in WHISPER_LANGUAGES.items()} | {"mandarin": "zh", "burmese": "my"}


@dataclass
class ASRRequest:
    """Everything that defines a transcription job; each file's sidecar records it."""

    files: list[str]
    model: str = DEFAULT_MODEL["asr"]
    language: str = "auto"  # "auto" (detect) or a Whisper language code / name
    task: str = "transcribe"  # or "translate" (to English)
    mode: str = "chunked"  # or "sequential"
    batch_size: int = 0  # 30-second windows per batch in chunked mode; 0 = chosen from free memory
    word_timestamps: bool = False
    max_line_chars: int = 42
    max_lines: int = 2
    max_cue_seconds: float = 7.0
    max_new_tokens: int = 0  # per 30-second window; 0 = the model's own limit
    max_duration_s: float = 0  # longest file accepted; 0 = ``pipelines.media.audio.MAX_DURATION_S``
    names: list[str] = field(default_factory=list)  # shown names, parallel to files (default: file names)
    notes: list[str] = field(default_factory=list)


# --- validation ----------------------------------------------------------------------------------------


def language_code(value: Any) -> str:
    """``"auto"`` or the Whisper code for a code, a name (English), or a token like ``<|yue|>``."""
    text = str(value or "").strip().lower()
    if text in ("", "auto", "detect", "none"):
        return "auto"
    if text.startswith("<|") and text.endswith("|>"):
        text = text[2:-2]
    if text in WHISPER_LANGUAGES:
        return text
    if text in _LANGUAGE_BY_NAME:
        return _LANGUAGE_BY_NAME[text]
    raise RequestError(
        f"Whisper has no language {value!r}. Use a code such as en, zh, yue, ja, or auto to detect it.",
        key="asr_language", value=str(value),
    )


def _as_list(value: Any) -> list:
    """A list of files or names from whatever came: one path is a list of one, not of its characters."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def validate_asr(request: ASRRequest, demo: bool = False) -> ASRRequest:
    """Check and normalise a request before any GPU work; returns a new request (notes say what changed)."""
    from ..media.audio import MAX_DURATION_S

    notes: list[str] = []
    files = [str(f) for f in _as_list(request.files) if f not in (None, "")]
    if not files:
        raise RequestError("Add at least one audio or video file, or record from the microphone.", key="asr_no_files")
    if len(files) > MAX_FILES:
        raise RequestError(f"{len(files)} files in one job; the limit is {MAX_FILES}.", key="asr_too_many_files",
                           count=len(files), limit=MAX_FILES)
    names = [str(n) for n in _as_list(request.names)][: len(files)]
    names += [Path(f).name for f in files[len(names):]]
    try:
        spec = get_spec(request.model if isinstance(request.model, str) else str(request.model))  # a list: no KeyError
    except ValueError as error:
        raise RequestError(str(error), key="model_unknown", model=str(request.model)) from None
    if spec.task != "asr":
        raise RequestError(f"{spec.title} is not a speech recognition model.", key="asr_model_wrong_task", model=spec.title)
    task = str(request.task or "transcribe").strip().lower()
    if task not in TASKS:
        raise RequestError(f"Task must be transcribe or translate, not {request.task!r}.", key="asr_task",
                           value=str(request.task))
    model_id = spec.id
    if task == "translate" and spec.id in NOT_TRAINED_TO_TRANSLATE:
        model_id = TRANSLATION_MODEL
        notes.append(f"{spec.title} was not trained to translate; translation uses {get_spec(model_id).title}.")
    mode = str(request.mode or "chunked").strip().lower()
    if mode not in MODES:
        raise RequestError(f"Long-audio mode must be chunked or sequential, not {request.mode!r}.", key="asr_mode",
                           value=str(request.mode))
    return dataclasses.replace(
        request,
        files=files,
        names=names,
        model=model_id,
        language=language_code(request.language),
        task=task,
        mode=mode,
        batch_size=parse_number(request.batch_size or 0, "Batch size", int, 0, MAX_BATCH_SIZE, "asr_batch"),
        word_timestamps=bool(request.word_timestamps),
        max_line_chars=parse_number(request.max_line_chars, "Characters per line", int, 10, 120, "asr_line_chars"),
        max_lines=parse_number(request.max_lines, "Lines per subtitle", int, 1, 4, "asr_lines"),
        max_cue_seconds=parse_number(request.max_cue_seconds, "Subtitle duration", float, 1.0, 30.0, "asr_cue_seconds"),
        max_new_tokens=parse_number(request.max_new_tokens or 0, "Tokens per window", int, 0, 440, "asr_tokens"),
        max_duration_s=parse_number(request.max_duration_s or MAX_DURATION_S, "Longest file", float, 1.0, MAX_DURATION_S,
                               "asr_max_duration"),
        notes=[*request.notes, *notes],
    )


# --- loading -------------------------------------------------------------------------------------------


def load_asr_model(spec, settings, device: str, dtype: str):
    """Load a Whisper checkpoint (HF cache, local folder, or the tiny demo build) ready to run on ``device``.

    fp16/bf16 on a GPU (``--dtype``), fp32 on the CPU; flash attention when installed and asked for (or
    ``auto``), else PyTorch SDPA.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from ..device.attention import choose_backend
    from ..device.loading import LoadedModel, resolve_source

    random_weights = settings.random_weights and not settings.demo
    folder, revision = ("random weights", "random weights (real architecture)") if random_weights \
        else resolve_source(spec, settings)
    started = time.perf_counter()
    on_gpu = device.startswith("cuda")
    dtype = dtype if on_gpu else "fp32"
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    backend = choose_backend(settings.attention, device)
    if backend == "flash3":  # flash-attn 3 for diffusers' dispatcher; transformers takes flash-attn 2
        backend = "flash"
    if backend not in ("flash", "sdpa"):
        if backend != "cudnn":  # PyTorch's SDPA chooses cuDNN itself where it is fastest
            logger.info("Attention: %s is not available for Whisper in transformers; using PyTorch SDPA.", backend)
        backend = "sdpa"

    def load(attention: str) -> WhisperBundle:
        if random_weights:  # benchmarks: the real architecture, created on the device (assets/model_configs)
            from ..bench.random_whisper import build_random_whisper

            return build_random_whisper(spec.id, device, torch_dtype, attention)
        model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch_dtype, attn_implementation=attention)
        return WhisperBundle(model=model, feature_extractor=WhisperFeatureExtractor.from_pretrained(folder),
                             tokenizer=WhisperTokenizer.from_pretrained(folder))

    try:
        bundle = load("flash_attention_2" if backend == "flash" else "sdpa")
    except (ImportError, ValueError) as error:
        if backend != "flash":
            raise
        logger.warning("Attention: flash attention could not be used for Whisper (%s); using PyTorch SDPA.", error)
        backend = "sdpa"
        bundle = load("sdpa")
    model = bundle.model
    model.to(device).eval()
    n_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    seconds = time.perf_counter() - started
    logger.info("Loaded %s from %s in %.1f s (%s, %s, attention %s)", spec.title, folder, seconds, device, dtype, backend)
    return LoadedModel(spec=spec, pipe=bundle, source=str(folder), revision=revision, n_bytes=n_bytes,
                       load_seconds=seconds, attention=backend, device=device, dtype=dtype)


# --- running -------------------------------------------------------------------------------------------


@dataclass
class _Window:
    """One 30-second window of a file, in samples, with the overlap shared with its neighbours."""

    start: int
    end: int
    stride_left: int
    stride_right: int
    silent: bool = False


def plan_windows(n_samples: int, sample_rate: int) -> list[_Window]:
    """Windows as transformers' ASR pipeline cuts them (``chunk_iter``): 30 s long, 5 s overlap each side."""
    chunk = CHUNK_SECONDS * sample_rate
    stride = int(STRIDE_SECONDS * sample_rate)
    step = chunk - 2 * stride
    windows = []
    for start in range(0, n_samples, step):
        end = min(start + chunk, n_samples)
        is_last = start + chunk >= n_samples
        left = 0 if start == 0 else stride
        if end - start > left:
            windows.append(_Window(start, end, left, 0 if is_last else stride))
        if is_last:
            break
    return windows


RETRY = object()  # what ``_Transcriber._attempt`` answers when the caller should redo the work, smaller


class _Transcriber:
    """Runs the files of one job on the resident model, keeping the batch size and device state."""

    def __init__(self, job: Job, ctx, request: ASRRequest, loaded, loaded_now: bool):
        import torch

        self.job, self.ctx, self.request, self.loaded, self.loaded_now = job, ctx, request, loaded, loaded_now
        self.bundle: WhisperBundle = loaded.pipe
        self.model = self.bundle.model
        self.tokenizer = self.bundle.tokenizer
        self.feature_extractor = self.bundle.feature_extractor
        self.generation_config = self.model.generation_config
        self.device = ctx.device
        self.model_dtype = self.model.dtype
        self.torch = torch
        self.demo = ctx.settings.demo
        if request.batch_size:
            self.batch_size, self.batch_how = request.batch_size, "set in the request"
        else:
            self.batch_size, self.batch_how = self._auto_batch_size()
        self.first_batch_size = self.batch_size
        self.max_new_tokens = request.max_new_tokens or None
        if self.demo:
            self.max_new_tokens = min(self.max_new_tokens or DEMO_MAX_NEW_TOKENS, DEMO_MAX_NEW_TOKENS)
        self.random_weights = ctx.settings.random_weights and not self.demo
        if self.random_weights:  # never ends by itself: a fixed count (``min_new_tokens`` too, in ``_generate``)
            self.max_new_tokens = RANDOM_WEIGHTS_NEW_TOKENS
        self.time_precision = self.feature_extractor.chunk_length / self.model.config.max_source_positions
        self.first_file = True
        self.stuck_on_cpu = False

    # --- batch size and out-of-memory ------------------------------------------------------------------

    def _item_bytes(self) -> int:
        """A generous estimate of the memory one 30-second window takes while it is decoded."""
        config = self.model.config
        element = self.torch.finfo(self.model_dtype).bits // 8
        frames = config.max_source_positions
        cross_cache = 2 * config.decoder_layers * frames * config.d_model * element
        self_cache = 2 * config.decoder_layers * config.max_target_positions * config.d_model * element
        encoder = frames * (4 * config.d_model + config.encoder_ffn_dim) * element
        attention = config.encoder_attention_heads * frames * frames * element  # if SDPA falls back to math
        scores = config.max_target_positions * config.vocab_size * 4  # kept for the long-form thresholds
        return int(1.5 * (cross_cache + self_cache + encoder + attention + scores))

    def _auto_batch_size(self) -> tuple[int, str]:
        if not self.device.startswith("cuda"):
            return CPU_BATCH_SIZE, "default on the CPU"
        from ..device.memory import read_memory

        free = read_memory(self.device).free - VRAM_RESERVE_BYTES
        size = max(1, min(MAX_AUTO_BATCH_SIZE, free // self._item_bytes()))
        return int(size), f"from free VRAM ({free / 2**30:.1f} GiB after a 1 GiB reserve)"

    def _out_of_memory(self, name: str, record: list[dict], message: str, size: int) -> None:
        """After a CUDA out-of-memory with ``size`` windows at once: halve that, else move to the CPU, else give
        up on this file."""
        from ..device.memory import free_memory

        free_memory(self.device)
        if size > 1:
            self.batch_size = max(1, size // 2)
            record.append({"action": "halve batch size", "from": size, "to": self.batch_size, "error": message})
            self.ctx.note(f"{name}: out of GPU memory with batch size {size}; retrying with {self.batch_size}.")
            return
        if self.device.startswith("cuda"):
            record.append({"action": "retry on the CPU", "batch_size": size, "error": message})
            self.ctx.note(f"{name}: out of GPU memory even with batch size {size}; retrying on the CPU (much slower).")
            self.model.to("cpu", self.torch.float32)
            self.device = "cpu"
            free_memory(self.ctx.device)
            return
        raise RequestError(f"{name}: out of memory even on the CPU ({message}).", key="asr_out_of_memory", name=name)

    def _back_to_device(self) -> None:
        """After a file finished on the CPU: the resident model goes back to the GPU. If even that fails, it
        stays on the CPU for the rest of this job and leaves the resident set (the next job loads it afresh)."""
        if self.device == self.ctx.device or self.stuck_on_cpu:
            return
        try:
            self.model.to(self.ctx.device, self.model_dtype)
            self.device = self.ctx.device
        except Exception as error:
            self.model.to("cpu", self.torch.float32)
            self.stuck_on_cpu = True
            self.ctx.note(f"{self.loaded.spec.title} could not go back to {self.ctx.device} ({type(error).__name__}); "
                          "the rest of this job runs on the CPU and the model is released after it.")
            self.ctx.worker.models.evict(self.loaded.spec.id)

    def _attempt(self, name: str, record: list[dict], run, again: bool = True, size: int = 1):
        """``run()`` (on ``size`` windows at once), after out-of-memory retried (``again``) or answered with
        ``RETRY`` for the caller to redo with the smaller batch; ``_out_of_memory`` decides what changes."""
        from ..device.memory import is_out_of_memory

        while True:
            try:
                return run()
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                message = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            # outside the except block: the failed attempt's tensors are no longer referenced
            self._out_of_memory(name, record, message, size)
            size = 1
            if not again:
                return RETRY

    # --- model calls ------------------------------------------------------------------------------------

    def _features(self, arrays, long_form: bool = False):
        """Log-mel features (on the GPU when there is one) and their attention mask, on the model's device."""
        from ..media.audio import SAMPLE_RATE

        options = dict(sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True,
                       device="cuda" if self.device.startswith("cuda") else "cpu")
        if long_form:
            options.update(truncation=False, padding="longest")
        batch = self.feature_extractor(arrays, **options)
        features = batch["input_features"].to(self.device, self.model.dtype)
        return features, batch["attention_mask"].to(self.device)

    def _detect_language(self, features) -> tuple[str, float]:
        """Whisper's language detection (as ``WhisperForConditionalGeneration.detect_language``: the logits of
        the language tokens after ``<|startoftranscript|>``), averaged over the given windows."""
        torch = self.torch
        features = features.to(self.device, self.model.dtype)
        lang_to_id = self.generation_config.lang_to_id
        ids = list(lang_to_id.values())
        start = torch.full((features.shape[0], 1), self.generation_config.decoder_start_token_id, device=self.device)
        with torch.no_grad():
            logits = self.model(input_features=features, decoder_input_ids=start, use_cache=False).logits[:, -1]
        probabilities = logits[:, ids].float().softmax(-1).mean(0)
        best = int(probabilities.argmax())
        token = next(t for t, i in lang_to_id.items() if i == ids[best])
        return token[2:-2], float(probabilities[best])

    def _generate(self, features, attention_mask, language: str, **extra):
        """``model.generate`` with timestamps; returns its dict (sequences, segments, token timestamps)."""
        kwargs: dict[str, Any] = dict(
            attention_mask=attention_mask, task=self.request.task, language=language, return_timestamps=True,
            return_segments=True,
        )
        if self.max_new_tokens:
            kwargs["max_new_tokens"] = self.max_new_tokens
        if self.random_weights:  # exactly this many tokens per window, in one pass
            from ..bench.random_whisper import fixed_token_count

            kwargs.update(fixed_token_count(self.generation_config, self.max_new_tokens))
        if self.request.word_timestamps:
            kwargs["return_token_timestamps"] = True
        kwargs.update(extra)
        config = self.model.config
        attention = config._attn_implementation
        try:
            with self.torch.no_grad():
                return self.model.generate(input_features=features, **kwargs)
        finally:
            # word timestamps switch the model to eager attention for good: switch back, it stays resident
            if config._attn_implementation != attention:
                config._attn_implementation = attention
                self.model.model.config._attn_implementation = attention

    # --- one file ---------------------------------------------------------------------------------------

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
                if self.request.mode == "chunked":
                    segments = self._chunked(audio, name, index, count, timings, language, decoding, retries)
                else:
                    segments = self._sequential(audio, name, index, count, timings, language, decoding, retries)
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

    def _language_for(self, windows_features, timings: dict, language: dict) -> str:
        if self.request.language != "auto":
            language["used"] = self.request.language
            return self.request.language
        clock = time.perf_counter()
        with self.ctx.stage("asr_language"):
            code, probability = self._detect_language(windows_features)
        timings["language"] += time.perf_counter() - clock
        language.update(detected=code, probability=round(probability, 4), used=code)
        return code

    def _chunked(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        from ..media.audio import SAMPLE_RATE, is_silent

        torch = self.torch
        windows = plan_windows(audio.size, SAMPLE_RATE)
        for window in windows:
            window.silent = is_silent(audio[window.start : window.end])
        active = [i for i, w in enumerate(windows) if not w.silent]
        decoding.update(windows=len(windows), silent_windows_skipped=len(windows) - len(active),
                        window_s=CHUNK_SECONDS, overlap_s=STRIDE_SECONDS)

        # Language: the first windows with sound.
        probe = [audio[windows[i].start : windows[i].end] for i in active[:LANGUAGE_DETECT_WINDOWS]]
        clock = time.perf_counter()
        with self.ctx.stage("asr_features"):
            probe_features, _ = self._attempt(name, retries, lambda: self._features(probe))
        timings["features"] += time.perf_counter() - clock
        code = self._attempt(name, retries, lambda: self._language_for(probe_features, timings, language))
        del probe_features

        outputs: list[dict | None] = [None] * len(windows)
        empty = torch.zeros((1, 0), dtype=torch.long)
        for i, window in enumerate(windows):
            if window.silent:
                outputs[i] = {"tokens": empty, "token_timestamps": torch.zeros((1, 0)), "stride": self._stride(window)}
        step_clock = self.ctx.start_steps(len(active), clip=index + 1, clips=count)
        position = 0
        while position < len(active):
            self.ctx.check_cancel()
            batch = active[position : position + self.batch_size]

            def run(batch=batch):
                clock = time.perf_counter()
                with self.ctx.stage("asr_features"):
                    features, mask = self._features([audio[windows[i].start : windows[i].end] for i in batch])
                timings["features"] += time.perf_counter() - clock
                clock = time.perf_counter()
                with self.ctx.stage("asr_generate"):
                    generated = self._generate(features, mask, code)
                timings["generate"] += time.perf_counter() - clock
                return generated

            generated = self._attempt(name, retries, run, again=False, size=len(batch))
            if generated is RETRY:  # smaller batch or on the CPU now: this part again
                continue
            for row, i in enumerate(batch):
                outputs[i] = self._window_output(generated, row, windows[i])
            position += len(batch)
            for _ in batch:
                self.ctx.step(step_clock)
        decoding.update(batch_size=self.batch_size)
        return self._segments_from_windows(outputs)

    def _stride(self, window: _Window) -> tuple[float, float, float]:
        from ..media.audio import SAMPLE_RATE

        return ((window.end - window.start) / SAMPLE_RATE, window.stride_left / SAMPLE_RATE,
                window.stride_right / SAMPLE_RATE)

    def _window_output(self, generated: dict, row: int, window: _Window) -> dict:
        """One window's tokens (and token times), as the ASR pipeline hands them to ``_decode_asr``."""
        torch = self.torch
        tokens = generated["sequences"][row].cpu()
        pad = self.generation_config.pad_token_id
        keep = len(tokens)
        while keep and int(tokens[keep - 1]) == pad:
            keep -= 1
        output = {"tokens": tokens[:keep][None], "stride": self._stride(window)}
        if self.request.word_timestamps:
            pieces = [s["token_timestamps"].cpu() for s in generated["segments"][row]]
            times = torch.cat(pieces) if pieces else torch.zeros(0)
            output["token_timestamps"] = times[None].float()
        return output

    def _segments_from_windows(self, outputs: list[dict]) -> list:
        from ..media.subtitles import Segment, Word

        decode = self.tokenizer._decode_asr  # the ASR pipeline's own merge of overlapping windows
        _, found = decode([dict(o) for o in outputs], return_timestamps=True, return_language=False,
                          time_precision=self.time_precision)
        segments = [Segment(c["timestamp"][0], c["timestamp"][1], c["text"]) for c in found.get("chunks", [])]
        if self.request.word_timestamps:
            _, found = decode([dict(o) for o in outputs], return_timestamps="word", return_language=False,
                              time_precision=self.time_precision)
            words = [Word(c["timestamp"][0], c["timestamp"][1] if c["timestamp"][1] is not None else c["timestamp"][0],
                          c["text"]) for c in found.get("chunks", []) if c["timestamp"][0] is not None]
            _attach_words(segments, words)
        return segments

    def _sequential(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        from ..media.audio import SAMPLE_RATE, is_silent
        from ..media.subtitles import Segment, Word

        torch = self.torch
        window = CHUNK_SECONDS * SAMPLE_RATE
        long_form = audio.size > window
        clock = time.perf_counter()
        with self.ctx.stage("asr_features"):
            features, mask = self._attempt(name, retries, lambda: self._features(audio, long_form=long_form))
        timings["features"] += time.perf_counter() - clock
        frames_per_window = self.feature_extractor.nb_max_frames
        sounding = [k for k in range(math.ceil(audio.size / window)) if not is_silent(audio[k * window : (k + 1) * window])]
        probe = [features[..., k * frames_per_window : (k + 1) * frames_per_window] for k in sounding[:LANGUAGE_DETECT_WINDOWS]]
        probe = torch.cat([torch.nn.functional.pad(p, (0, frames_per_window - p.shape[-1])) for p in probe])
        code = self._attempt(name, retries, lambda: self._language_for(probe, timings, language))
        del probe

        total_windows = max(1, math.ceil(audio.size / window))
        step_clock = self.ctx.start_steps(total_windows, clip=index + 1, clips=count)
        job = self.job

        def progress(seek_and_total):  # called by generate before each window
            if job.cancelled:
                raise JobCancelled()
            seek, frames = (int(v) for v in seek_and_total[0])
            while step_clock.done < min(total_windows, int(seek * total_windows / max(frames, 1))):
                self.ctx.step(step_clock)

        extra = dict(LONG_FORM) if long_form else {}
        decoding.update(long_form=long_form, **({"long_form_settings": {k: v for k, v in LONG_FORM.items()}} if long_form else {}))
        if getattr(self.ctx.settings, "asr_static_cache", False):
            # --asr-static-cache: a fixed-size KV cache, which transformers' generate compiles on a CUDA GPU
            # (the decoder's forward, once per shape); the same tokens as the dynamic cache
            extra["cache_implementation"] = "static"
        decoding["static_cache"] = extra.get("cache_implementation") == "static"

        def run():
            clock = time.perf_counter()
            # the CPU fallback needs the features there too
            feats, attention = features.to(self.device, self.model.dtype), mask.to(self.device)
            with self.ctx.stage("asr_generate"):
                generated = self._generate(feats, attention, code, monitor_progress=progress, **extra)
            timings["generate"] += time.perf_counter() - clock
            return generated

        generated = self._attempt(name, retries, run)
        while step_clock.done < total_windows:
            self.ctx.step(step_clock)
        decoding.update(batch_size=1)
        segments = []
        for piece in generated["segments"][0]:
            text = self.tokenizer.decode(piece["tokens"], skip_special_tokens=True)
            segments.append(Segment(float(piece["start"]), float(piece["end"]), text))
        if self.request.word_timestamps and generated["segments"][0]:
            times = torch.cat([s["token_timestamps"].cpu() for s in generated["segments"][0]])
            tokens = torch.cat([s["tokens"].cpu() for s in generated["segments"][0]])
            _, found = self.tokenizer._decode_asr([{"tokens": tokens[None], "token_timestamps": times[None].float()}],
                                                  return_timestamps="word", return_language=False,
                                                  time_precision=self.time_precision)
            words = [Word(c["timestamp"][0], c["timestamp"][1] if c["timestamp"][1] is not None else c["timestamp"][0],
                          c["text"]) for c in found.get("chunks", []) if c["timestamp"][0] is not None]
            _attach_words(segments, words)
        return segments

    # --- files ------------------------------------------------------------------------------------------

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
                "max_duration_s": request.max_duration_s,
            },
            "model": {
                "id": spec.id, "title": spec.title, "repo_id": spec.repo_id, "revision": self.loaded.revision,
                "class": spec.pipeline_class, "loaded_for_this_job": self.loaded_now,
                "demo_random_weights": self.demo,
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


def run_asr(job: Job, ctx) -> dict:
    """Run a validated ``ASRRequest`` over its files; returns one entry per file (done or failed) and the zip."""
    request: ASRRequest = validate_asr(job.request, demo=ctx.settings.demo)
    for text in request.notes:
        ctx.note(text)
    spec = get_spec(request.model)

    # 1. Model: resident after the first job.
    loaded, loaded_now = ctx.model(spec)
    lang_to_id = getattr(loaded.pipe.model.generation_config, "lang_to_id", {}) or {}
    if request.language != "auto" and f"<|{request.language}|>" not in lang_to_id:
        raise RequestError(
            f"{spec.title} does not know {WHISPER_LANGUAGES[request.language]} ({request.language}); "
            "use Whisper large-v3 or large-v3 turbo.",
            key="asr_language_model", model=spec.title, language=request.language,
        )
    transcriber = _Transcriber(job, ctx, request, loaded, loaded_now)
    ctx.note(f"{len(request.files)} file(s), {request.mode} decoding, batch size {transcriber.batch_size} "
             f"({transcriber.batch_how}).")

    # 2. Each file; a bad one is reported and the others go on. After a restart, files this job had
    # already transcribed are kept, not transcribed again.
    done_before = _transcribed_before(ctx, job)
    results: list[dict] = []
    for index, (path, name) in enumerate(zip(request.files, request.names)):
        ctx.check_cancel()
        if name in done_before:
            results.append(done_before.pop(name))
            continue
        try:
            results.append(transcriber.transcribe(path, name, index, len(request.files)))
        except (JobCancelled, KeyboardInterrupt):
            raise
        except RequestError as error:
            ctx.note(str(error))
            results.append({"name": name, "ok": False, "error": str(error), "error_key": error.key,
                            "error_params": dict(error.params)})
        except Exception as error:  # an unexpected failure on one file must not end the batch
            logger.exception("Job %s: %s failed", job.id, name)
            message = f"{name}: {type(error).__name__}: {error}"
            ctx.note(message)
            results.append({"name": name, "ok": False, "error": message, "error_key": "asr_file_failed",
                            "error_params": {"name": name, "detail": f"{type(error).__name__}: {error}"}})

    # 3. One zip for a batch.
    zip_path = None
    if sum(1 for r in results if r["ok"]) >= 2:
        zip_path = str(_write_zip(ctx.settings.outputs_dir, results))
    return {"files": results, "zip": zip_path, "model": spec.id, "notes": list(request.notes),
            "batch_size": transcriber.batch_size}
