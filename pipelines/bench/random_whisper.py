"""Whisper at its real size with random weights, for benchmarks (configs: ``assets/model_configs``).

``build_random_whisper`` makes the app's ``WhisperBundle``: the model, a 128-bin feature extractor, and a
tokenizer and generation config whose ids cover the whole vocabulary with Whisper's real layout (text
tokens, then ``<|endoftext|>``, ``<|startoftranscript|>``, the languages, the tasks, ``<|notimestamps|>``,
1501 timestamps), so ``generate`` runs its real code paths. Random weights never emit ``<|endoftext|>``
on purpose: ``pipelines.tasks.asr`` decodes exactly ``RANDOM_WEIGHTS_NEW_TOKENS`` per 30-second window.
"""

from __future__ import annotations

from . import random_weights


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

    from ..families.whisper_data import WhisperBundle
    from ..families.demo_asr import whisper_token_ids

    config = random_weights.config_for(model_id)  # looked up now: tests shrink it with monkeypatch
    torch.manual_seed(0)
    tokenizer = build_whisper_tokenizer(config["tokenizer"]["text_tokens"])
    vocab_size = config["model"]["config"]["vocab_size"]
    if len(tokenizer) != vocab_size:
        raise ValueError(f"{model_id}: the tokenizer has {len(tokenizer)} ids, the model {vocab_size}.")
    model = random_weights.build_component(config["model"], device, dtype, attn_implementation=attn_implementation)
    model.generation_config = GenerationConfig(
        **whisper_token_ids(tokenizer),
        return_timestamps=False,
        **config["generation_config"],
    )
    feature_extractor = random_weights.build_component(config["feature_extractor"], device, dtype)
    return WhisperBundle(model, feature_extractor, tokenizer)


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
