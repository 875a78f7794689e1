"""Speech to text requests: ``ASRRequest``, its limits, and ``validate_asr`` (no torch, no GPU).

``pipelines.tasks.asr`` runs a validated request through an engine (``asr_decode``: transformers,
``asr_ct2``: CTranslate2 / faster-whisper).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..studio.jobs import RequestError, parse_number
from ..families.catalogue import DEFAULT_MODEL, get_spec
from ..families.whisper import WHISPER_LANGUAGES


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
    vad: bool = True  # Silero voice detection (both engines; asr_vad, asr_ct2): only speech is decoded
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


def asr_spec(model: Any, models_dir=None):
    """The catalogue entry, or a creator's model (``models/whisper/<name>/``, ``--models-dir``, or a repo id
    in the Hugging Face cache) called ``model``; a clear ``RequestError`` otherwise."""
    from ..families.whisper_custom import NotAWhisper, custom_spec

    name = model if isinstance(model, str) else str(model)  # a list: no KeyError
    try:
        return get_spec(name)
    except ValueError as error:
        unknown = str(error)
    try:
        spec = custom_spec(name.strip(), models_dir)
    except NotAWhisper as error:
        raise RequestError(str(error), key="asr_not_whisper", model=name) from None
    if spec is None:
        raise RequestError(unknown + " Your own Whisper: a folder in models/whisper/ (or --models-dir), or a "
                           "Hugging Face repo id already in the cache.", key="model_unknown", model=name)
    return spec


def _as_bool(value: Any) -> bool:
    """A switch from the page, the API or a batch line: ``"off"``/``"false"``/``"0"``/``"no"`` are off."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "off", "no")
    return bool(value)


def validate_asr(request: ASRRequest, demo: bool = False, models_dir=None) -> ASRRequest:
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
    spec = asr_spec(request.model, models_dir)
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
    language = language_code(request.language)
    if spec.extra.get("english_only") and language not in ("auto", "en"):
        raise RequestError(f"{spec.title} is an English-only model: it transcribes English only.",
                           key="asr_english_only", model=spec.title)
    if spec.extra.get("english_only"):
        if language == "auto":
            notes.append(f"{spec.title} is an English-only model: the language is English.")
        language, task = "en", "transcribe"
    mode = str(request.mode or "chunked").strip().lower()
    if mode not in MODES:
        raise RequestError(f"Long-audio mode must be chunked or sequential, not {request.mode!r}.", key="asr_mode",
                           value=str(request.mode))
    return dataclasses.replace(
        request,
        files=files,
        names=names,
        model=model_id,
        language=language,
        task=task,
        mode=mode,
        batch_size=parse_number(request.batch_size or 0, "Batch size", int, 0, MAX_BATCH_SIZE, "asr_batch"),
        word_timestamps=bool(request.word_timestamps),
        vad=_as_bool(request.vad),
        max_line_chars=parse_number(request.max_line_chars, "Characters per line", int, 10, 120, "asr_line_chars"),
        max_lines=parse_number(request.max_lines, "Lines per subtitle", int, 1, 4, "asr_lines"),
        max_cue_seconds=parse_number(request.max_cue_seconds, "Subtitle duration", float, 1.0, 30.0, "asr_cue_seconds"),
        max_new_tokens=parse_number(request.max_new_tokens or 0, "Tokens per window", int, 0, 440, "asr_tokens"),
        max_duration_s=parse_number(request.max_duration_s or MAX_DURATION_S, "Longest file", float, 1.0, MAX_DURATION_S,
                               "asr_max_duration"),
        notes=[*request.notes, *notes],
    )
