"""Whisper (transformers' ``WhisperForConditionalGeneration``): speech to text."""

from __future__ import annotations

from .spec import ModelSpec
from .whisper_data import WHISPER_LANGUAGES, WhisperBundle  # noqa: F401  (the family's names)

NAME = "whisper"
DEFAULTS = {"asr": "whisper-large-v3"}

# fp16/bf16 on GPU; the small ones suit CPU-only machines. ``extra["ct2_repo"]``: the faster-whisper
# (CTranslate2) conversion the CTranslate2 engine loads (``whisper_load``).

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="whisper-large-v3",
        task="asr",
        title="Whisper large-v3",
        repo_id="openai/whisper-large-v3",
        pipeline_class="WhisperForConditionalGeneration",
        vram_gb=4.5,
        demo_kind="whisper",
        notes="Most accurate; transcribes and translates to English.",
        extra={"ct2_repo": "Systran/faster-whisper-large-v3"},
    ),
    ModelSpec(
        id="whisper-large-v3-turbo",
        task="asr",
        title="Whisper large-v3 turbo",
        repo_id="openai/whisper-large-v3-turbo",
        pipeline_class="WhisperForConditionalGeneration",
        vram_gb=2.5,
        demo_kind="whisper",
        notes="About as accurate and much faster; not trained for translation (translation uses large-v3).",
        extra={"ct2_repo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo"},
    ),
    ModelSpec(
        id="distil-whisper-large-v3",
        task="asr",
        title="Distil-Whisper large-v3",
        repo_id="distil-whisper/distil-large-v3",
        pipeline_class="WhisperForConditionalGeneration",
        vram_gb=1.6,
        demo_kind="whisper",
        notes="English only in practice; about 6x faster than large-v3 at close accuracy.",
        extra={"ct2_repo": "Systran/faster-distil-whisper-large-v3"},
    ),
    ModelSpec(
        id="whisper-medium",
        task="asr",
        title="Whisper medium",
        repo_id="openai/whisper-medium",
        pipeline_class="WhisperForConditionalGeneration",
        vram_gb=2.5,
        demo_kind="whisper",
        extra={"ct2_repo": "Systran/faster-whisper-medium"},
    ),
    ModelSpec(
        id="whisper-small",
        task="asr",
        title="Whisper small",
        repo_id="openai/whisper-small",
        pipeline_class="WhisperForConditionalGeneration",
        vram_gb=1.0,
        demo_kind="whisper",
        notes="Fast enough on a CPU.",
        extra={"ct2_repo": "Systran/faster-whisper-small"},
    ),
)

def load(spec, settings, device: str, dtype: str):
    """Load a Whisper on the engine ``--asr-engine`` picks (``whisper_load``)."""
    from .whisper_load import load as load_whisper

    return load_whisper(spec, settings, device, dtype)
