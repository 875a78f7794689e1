"""Tiny randomly initialised models of the real classes, built locally for ``--demo`` and the tests.

Each builder makes the real diffusers / transformers components with tiny configs, a tokenizer built
from a small vocabulary (no hub access), and ``save_pretrained``s the whole pipeline to a folder. The app
then loads that folder through its normal loading code, so ``--demo`` exercises the same path as real
weights. Their output is noise: the UI says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

# Words the tiny tokenizer knows; anything else becomes <unk>. Enough for prompts typed in a demo.
_VOCAB_WORDS = tuple(
    (
    "a an the of in on at with and to is are cat dog person man woman child bird fish horse car city street "
    "forest beach sea ocean river mountain sky sun moon night day rain snow walking running flying swimming "
    "dancing slowly fast camera pan zoom close-up wide shot cinematic light dark red blue green yellow white "
    "black golden warm cold portrait landscape video clip scene"
    ).split()
)
_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
BUILD_VERSION = 1  # bump when a builder changes, so cached demo folders are rebuilt


def build_word_tokenizer(max_length: int = 64):
    """A fast tokenizer over a small word vocabulary, with T5's special tokens and trailing ``</s>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(_SPECIAL_TOKENS + _VOCAB_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def tiny_umt5(vocab_size: int, d_model: int = 32):
    """A tiny ``UMT5EncoderModel``, Wan's text encoder class (the real one is UMT5-XXL, 5.7B)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(config).eval()


def build_wan_t2v(two_experts: bool = False):
    """A tiny ``WanPipeline`` (Wan 2.1 layout; Wan 2.2 A14B layout with ``two_experts``)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    torch.manual_seed(0)
    tokenizer = build_word_tokenizer()
    text_encoder = tiny_umt5(len(tokenizer))
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        ).eval()

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer(),
        transformer_2=transformer() if two_experts else None,
        boundary_ratio=0.875 if two_experts else None,
    )


BUILDERS = {
    "wan-t2v": lambda: build_wan_t2v(two_experts=False),
    "wan-t2v-moe": lambda: build_wan_t2v(two_experts=True),
}
# Modules with more builders (``BUILDERS`` dicts of their own), one per task, imported on demand.
_BUILDER_MODULES = ("pipelines.families.demo_i2v", "pipelines.families.demo_asr")


def _builder(kind: str):
    """The function that builds the tiny model ``kind``; returns an object with ``save_pretrained``."""
    if kind in BUILDERS:
        return BUILDERS[kind]
    import importlib

    for name in _BUILDER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        if kind in module.BUILDERS:
            return module.BUILDERS[kind]
    raise ValueError(f"No demo model {kind!r}.")


def ensure_demo_model(kind: str, root: Path, build=None) -> Path:
    """Folder holding the saved tiny pipeline ``kind``, built once under ``root`` by ``build()`` (its family's
    ``DEMO_BUILDERS`` entry; by default looked up in the demo modules here) and reused after.

    The folder is written under a temporary name and renamed into place, so a crash never leaves a
    half-saved model that later loads would trip over.
    """
    build = build or _builder(kind)
    folder = Path(root) / kind
    stamp = folder / "cinescribe_demo.json"
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")).get("version") == BUILD_VERSION:
                return folder
        except (OSError, ValueError):
            pass
    Path(root).mkdir(parents=True, exist_ok=True)
    logger.info("Building the tiny demo model %r in %s", kind, folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        build().save_pretrained(staging)
        (staging / "cinescribe_demo.json").write_text(
            json.dumps({"kind": kind, "version": BUILD_VERSION, "random_weights": True}), encoding="utf-8"
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
