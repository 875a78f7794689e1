"""The catalogue's real architectures at their real size, with random weights, for benchmarks.

``assets/model_configs/<model id>.json`` holds each component's class and config as published with the
weights, so any GPU can be timed without downloading tens of GB. Components are created directly on
the target device in the target dtype (a 14B model never passes through CPU memory in fp32). Random
weights have the real cost per step; their output is noise.

Video models become their diffusers pipeline (``build_random_pipeline``); Whisper becomes the app's
``WhisperBundle`` (``build_random_whisper``): the model, a 128-bin feature extractor, and a tokenizer and
generation config whose ids cover the whole vocabulary with Whisper's real layout (text tokens, then
``<|endoftext|>``, ``<|startoftranscript|>``, the languages, the tasks, ``<|notimestamps|>``, 1501
timestamps), so ``generate`` runs its real code paths. Random weights never emit ``<|endoftext|>``
on purpose: ``pipelines.tasks.asr`` decodes exactly ``RANDOM_WEIGHTS_NEW_TOKENS`` per 30-second window.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "assets" / "model_configs"


def config_for(model_id: str) -> dict:
    """The shipped config of ``model_id``; a ``-turbo`` variant with no file of its own (a LoRA fused into
    the same architecture) uses its base model's."""
    path = CONFIG_DIR / f"{model_id}.json"
    if not path.is_file():
        path = CONFIG_DIR / f"{model_id.removesuffix('-turbo')}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise ValueError(f"No architecture config shipped for {model_id!r} (random weights exist for: {known}).")
    return json.loads(path.read_text(encoding="utf-8"))


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_component(entry: dict, device: str, dtype, **extra):
    """One component from its class name and config, created on ``device`` in ``dtype``; ``extra`` goes to
    a transformers config (``attn_implementation``). A class not exported at the top of diffusers names its
    module (``"module": "diffusers.pipelines.<family>"``)."""
    import importlib

    import diffusers
    import torch
    import transformers

    name, config = entry["class"], dict(entry["config"])
    if "module" in entry:
        with torch.device(device), _default_dtype(dtype):
            return getattr(importlib.import_module(entry["module"]), name).from_config(config).eval()
    if hasattr(diffusers, name) and name.endswith("Scheduler"):
        return getattr(diffusers, name).from_config(config)
    if name.endswith(("Processor", "FeatureExtractor")):  # no weights: image processor, mel features
        return getattr(transformers, name)(**config)
    with torch.device(device), _default_dtype(dtype):
        if hasattr(diffusers, name):
            return getattr(diffusers, name).from_config(config).eval()
        model_class = getattr(transformers, name)
        config_class = transformers.AutoConfig.for_model(config.pop("model_type")).__class__
        return model_class(config_class(**config, **extra)).eval()


def _tokenizer(entry: dict | None):
    """The tokenizer a config asks for (``{"builder": "clip", "max_length": 77}``); Wan's UMT5 by default."""
    entry = entry or {"builder": "word", "max_length": 512}
    if entry["builder"] == "clip":
        from ..families.demo_i2v import build_clip_tokenizer

        return build_clip_tokenizer(max_length=entry.get("max_length", 77))
    from ..families.demo import build_word_tokenizer

    return build_word_tokenizer(max_length=entry.get("max_length", 512))


def build_random_pipeline(model_id: str, device: str, dtype, vae_dtype=None, fp32_components=()):
    """The model's diffusers pipeline with random weights, its real size, on ``device``.

    Components named in ``fp32_components`` (as the catalogue's ``fp32_components``) and the VAE when
    ``vae_dtype`` is given are created in that precision instead of ``dtype``.
    """
    import diffusers
    import torch

    config = config_for(model_id)
    torch.manual_seed(0)
    components = {}
    for name, entry in config.items():
        if isinstance(entry, dict) and "class" in entry:
            component_dtype = vae_dtype if (name == "vae" and vae_dtype is not None) else dtype
            if name in fp32_components:
                component_dtype = torch.float32
            components[name] = build_component(entry, device, component_dtype)
    components["tokenizer"] = _tokenizer(config.get("tokenizer"))
    return getattr(diffusers, config["pipeline"])(**components)


# --- Whisper ------------------------------------------------------------------------------------------


def build_whisper_tokenizer(text_tokens: int):
    """A ``WhisperTokenizer`` with ``text_tokens`` text ids, then Whisper's special and timestamp tokens.

    The text part is the demo's small trained byte-level BPE (so real words still tokenize) padded with
    made-up letter tokens up to ``text_tokens`` (50257 for the real models): every id the model can
    emit decodes, and ``<|endoftext|>``, the languages, tasks, ``<|notimestamps|>`` and the timestamps
    land on the real checkpoints' ids.
    """
    import itertools
    import json
    import string

    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    from ..families.demo_asr import _CORPUS, SPECIAL_TOKENS, TIMESTAMP_TOKENS, VOCAB_SIZE, _check_token_order

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=min(VOCAB_SIZE, text_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in model["merges"]]
    letters = string.ascii_lowercase
    filler = ("\u0120" + "".join(chars) for size in itertools.count(2) for chars in itertools.product(letters, repeat=size))
    while len(vocab) < text_tokens:  # never produced by encoding; decodes to " ab", " ac", ...
        vocab.setdefault(next(filler), len(vocab))

    def special(text: str, is_special: bool = True) -> AddedToken:
        return AddedToken(text, lstrip=False, rstrip=False, normalized=False, special=is_special)

    tokenizer = WhisperTokenizer(
        vocab=vocab, merges=merges,
        unk_token=special("<|endoftext|>"), bos_token=special("<|endoftext|>"), eos_token=special("<|endoftext|>"),
        pad_token=special("<|endoftext|>"), extra_special_tokens=[special(token) for token in SPECIAL_TOKENS],
        model_max_length=1024,
    )
    tokenizer.add_tokens([special(token, is_special=False) for token in TIMESTAMP_TOKENS])
    _check_token_order(tokenizer, text_tokens)
    return tokenizer


def build_random_whisper(model_id: str, device: str, dtype, attn_implementation: str = "sdpa"):
    """A ``WhisperBundle`` of the real architecture with random weights, created on ``device`` in ``dtype``."""
    import torch
    from transformers import GenerationConfig

    from ..tasks.asr import WhisperBundle
    from ..families.demo_asr import whisper_token_ids

    config = config_for(model_id)
    torch.manual_seed(0)
    tokenizer = build_whisper_tokenizer(config["tokenizer"]["text_tokens"])
    vocab_size = config["model"]["config"]["vocab_size"]
    if len(tokenizer) != vocab_size:
        raise ValueError(f"{model_id}: the tokenizer has {len(tokenizer)} ids, the model {vocab_size}.")
    model = build_component(config["model"], device, dtype, attn_implementation=attn_implementation)
    model.generation_config = GenerationConfig(
        **whisper_token_ids(tokenizer),
        return_timestamps=False,
        **config["generation_config"],
    )
    feature_extractor = build_component(config["feature_extractor"], device, dtype)
    return WhisperBundle(model, feature_extractor, tokenizer)


def parameter_count(model_id: str, component: str) -> int:
    """Parameters of one component, counted on the meta device (no memory used)."""
    import torch

    module = build_component(config_for(model_id)[component], "meta", torch.float32)
    return sum(p.numel() for p in module.parameters())


class _TimestampOnlyFirst:
    """Random weights: after the window's first timestamp, no more (a ``LogitsProcessor``).

    Whisper's generate cuts a window at its last pair of timestamps and decodes the rest of the window again;
    a random model writes timestamp pairs all the time, so a window would take several passes and an unknown
    number of tokens. With one timestamp at the start and text after it, each window is one pass of exactly
    ``RANDOM_WEIGHTS_NEW_TOKENS`` (Whisper's timestamp rules still run at every step, as with real weights).
    """

    def __init__(self, timestamp_begin: int):
        self.timestamp_begin = timestamp_begin

    def __call__(self, input_ids, scores):
        seen = (input_ids >= self.timestamp_begin).any(-1)  # no sync with the GPU
        scores[:, self.timestamp_begin:] = scores[:, self.timestamp_begin:].masked_fill(seen[:, None], float("-inf"))
        return scores


def fixed_token_count(generation_config, count: int) -> dict:
    """``generate`` arguments that make a random-weight Whisper decode exactly ``count`` tokens per window:
    ``<|endoftext|>`` suppressed until then (``min_new_tokens``), no timestamps after the first."""
    from transformers import LogitsProcessor, LogitsProcessorList

    processor = type("TimestampOnlyFirst", (_TimestampOnlyFirst, LogitsProcessor), {})
    # Whisper's rule "timestamps more likely than any text: force a timestamp" would leave no token allowed
    generation_config._detect_timestamp_from_logprob = False
    return {"min_new_tokens": count, "max_new_tokens": count,
            "logits_processor": LogitsProcessorList([processor(generation_config.no_timestamps_token_id + 1)])}
