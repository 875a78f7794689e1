"""A tiny randomly initialised Whisper, built locally for ``--demo`` and the tests (no hub, no network).

``build_whisper()`` makes the real transformers classes with a tiny config:
``WhisperForConditionalGeneration`` (128 mel bins like large-v3, 2 encoder and 2 decoder layers of width
32), ``WhisperFeatureExtractor`` and a ``WhisperTokenizer`` whose byte-level BPE is trained here on a few
sentences, with Whisper's special tokens in Whisper's order:

    <|endoftext|>  <|startoftranscript|>  <|en|> ... <|yue|> (100 languages, as large-v3)
    <|translate|>  <|transcribe|>  <|startoflm|>  <|startofprev|>  <|nospeech|>  <|notimestamps|>
    <|0.00|> <|0.02|> ... <|30.00|>  (1501 timestamp tokens, not "special", as in large-v3)

and a ``GenerationConfig`` carrying what ``WhisperForConditionalGeneration.generate`` reads: ``lang_to_id``,
``task_to_id``, ``no_timestamps_token_id``, ``decoder_start_token_id``, ``prev_sot_token_id``,
``is_multilingual``, ``alignment_heads`` (word timestamps), ``max_initial_timestamp_index``,
``suppress_tokens`` and ``begin_suppress_tokens``. Language detection, timestamp prediction, long-form
decoding and word alignment therefore run the real code paths. Its output is random text: the app caps
the tokens decoded per 30-second window in demo mode (``pipelines.tasks.asr.DEMO_MAX_NEW_TOKENS``).
"""

from __future__ import annotations

from .whisper_data import WHISPER_LANGUAGES, WhisperBundle

# A few sentences to train the tiny byte-level BPE on: enough merges for whole English words.
_CORPUS = (
    "the quick brown fox jumps over the lazy dog",
    "hello and welcome to the studio, today we talk about video and speech",
    "a cat walking on the beach at sunset, the camera pans slowly to the sea",
    "we are recording a short clip; please speak clearly into the microphone",
    "one two three four five six seven eight nine ten",
    "thank you for watching, see you next time!",
    "subtitles should be short, easy to read, and in time with the voice.",
    "你好，欢迎来到工作室。今天我们聊聊视频和语音。",
    "大家好，我哋今日講吓廣東話。",
)
VOCAB_SIZE = 600  # byte alphabet (256) + merges
LANGUAGE_CODES = tuple(WHISPER_LANGUAGES)  # Whisper's token order: large-v3 has 100, Cantonese last
TEXT_EMBEDDING_SCALE = 3.0
TASK_TOKENS = ("<|translate|>", "<|transcribe|>")
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    *(f"<|{code}|>" for code in LANGUAGE_CODES),
    *TASK_TOKENS,
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
TIMESTAMP_TOKENS = tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))
# Punctuation Whisper suppresses (a subset of its NON_SPEECH_TOKENS), looked up in the tiny vocabulary.
_SUPPRESSED_SYMBOLS = ('"', "#", "(", ")", "*", "+", "/", ":", ";", "<", "=", ">", "@", "[", "\\", "]", "^", "_",
                       "`", "{", "|", "}", "~")


def build_whisper_tokenizer():
    """A ``WhisperTokenizer`` from a small trained vocabulary, with Whisper's special and timestamp tokens."""
    import json

    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = model["vocab"]
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in model["merges"]]

    def special(text: str, is_special: bool = True) -> AddedToken:
        return AddedToken(text, lstrip=False, rstrip=False, normalized=False, special=is_special)

    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=special("<|endoftext|>"),
        bos_token=special("<|endoftext|>"),
        eos_token=special("<|endoftext|>"),
        pad_token=special("<|endoftext|>"),
        extra_special_tokens=[special(token) for token in SPECIAL_TOKENS],
        model_max_length=1024,
    )
    tokenizer.add_tokens([special(token, is_special=False) for token in TIMESTAMP_TOKENS])
    _check_token_order(tokenizer, len(vocab))
    return tokenizer


def _check_token_order(tokenizer, base: int) -> None:
    """Whisper's code finds tokens by arithmetic (``<|startoftranscript|> + 1 + language index``, timestamps
    right after ``<|notimestamps|>``): the ids must be consecutive, in this order."""
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS) + [TIMESTAMP_TOKENS[0], TIMESTAMP_TOKENS[-1]])
    expected = list(range(base, base + len(SPECIAL_TOKENS))) + [base + len(SPECIAL_TOKENS),
                                                                base + len(SPECIAL_TOKENS) + 1500]
    if ids != expected:
        raise RuntimeError(f"Tiny Whisper tokenizer: special token ids out of order ({ids[:3]}...{ids[-3:]})")
    if tokenizer.all_special_ids[-1] != tokenizer.convert_tokens_to_ids("<|notimestamps|>"):
        raise RuntimeError("Tiny Whisper tokenizer: <|notimestamps|> must be the last special token")


def _unreadable(text: str) -> bool:
    import unicodedata

    return any(c == "\ufffd" or unicodedata.category(c) == "Cc" for c in text)


def whisper_token_ids(tokenizer) -> dict:
    """The special-token part of a Whisper generation config (start, end, languages, tasks), with this
    tokenizer's ids: shared by the demo model and the random-weight real architectures."""
    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    return {
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "decoder_start_token_id": ids("<|startoftranscript|>"),
        "prev_sot_token_id": ids("<|startofprev|>"),
        "no_timestamps_token_id": ids("<|notimestamps|>"),
        "is_multilingual": True,
        "lang_to_id": {f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGE_CODES},
        "task_to_id": {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
    }


def whisper_generation_config(tokenizer, decoder_layers: int, decoder_heads: int):
    """The generation config Whisper checkpoints ship, with this tokenizer's ids."""
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    vocab = tokenizer.get_vocab()
    space = vocab.get("Ġ")
    suppress = {vocab[symbol] for symbol in _SUPPRESSED_SYMBOLS if symbol in vocab}
    # Random weights pick any token: keep them to tokens that are whole characters on their own (no stray
    # UTF-8 continuation bytes, no control characters), so the demo's transcripts are readable nonsense rather than "\ufffd".
    suppress |= {i for i in range(eos) if _unreadable(tokenizer.decode([i]))}
    return GenerationConfig(
        **whisper_token_ids(tokenizer),
        max_initial_timestamp_index=50,
        max_length=448,
        return_timestamps=False,
        suppress_tokens=sorted(suppress),
        begin_suppress_tokens=[token for token in (space, eos) if token is not None],
        # cross-attention heads used for word timestamps (dynamic time warping): one per decoder layer here
        alignment_heads=[[layer, layer % decoder_heads] for layer in range(decoder_layers)],
    )


def build_whisper():
    """The tiny Whisper bundle (about 0.2 M parameters)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = build_whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    decoder_layers, decoder_heads = 2, 2
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=128,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=decoder_layers,
        decoder_attention_heads=decoder_heads,
        decoder_ffn_dim=64,
        max_source_positions=1500,  # 30 s of audio: the real models' window
        max_target_positions=448,
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # text tokens 3x the initial scale: random output has words between its timestamps
        model.model.decoder.embed_tokens.weight[:eos] *= TEXT_EMBEDDING_SCALE
    model.generation_config = whisper_generation_config(tokenizer, decoder_layers, decoder_heads)
    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                                n_fft=400, return_attention_mask=False)
    return WhisperBundle(model, feature_extractor, tokenizer)


BUILDERS = {"whisper": build_whisper}
