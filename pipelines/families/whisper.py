"""Whisper (transformers' ``WhisperForConditionalGeneration``): speech to text."""

from __future__ import annotations

from .spec import ModelSpec

NAME = "whisper"
DEFAULTS = {"asr": "whisper-large-v3"}

# fp16/bf16 on GPU; the small ones suit CPU-only machines.

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
    ),
    ModelSpec(
        id="whisper-medium",
        task="asr",
        title="Whisper medium",
        repo_id="openai/whisper-medium",
        pipeline_class="WhisperForConditionalGeneration",
        vram_gb=2.5,
        demo_kind="whisper",
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
    ),
)
