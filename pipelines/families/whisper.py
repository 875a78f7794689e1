"""Whisper (transformers' ``WhisperForConditionalGeneration``): speech to text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import ModelSpec

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

# Whisper's languages, in its token order (as transformers' ``tokenization_whisper.LANGUAGES``, kept here so
# that the UI can list them without importing transformers; a test checks that the two agree).
WHISPER_LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}


def load(spec, settings, device: str, dtype: str):
    """Load a Whisper on the engine ``--asr-engine`` picks (``whisper_load``)."""
    from .whisper_load import load as load_whisper

    return load_whisper(spec, settings, device, dtype)


@dataclass
class WhisperBundle:
    """What a loaded Whisper is: the model, its feature extractor and its tokenizer."""

    model: Any
    feature_extractor: Any
    tokenizer: Any

    def save_pretrained(self, folder) -> None:
        self.model.save_pretrained(folder)  # config, weights, generation_config.json
        self.feature_extractor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
