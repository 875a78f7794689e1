"""Rewrite a CTranslate2 Whisper (faster-whisper's ``model.bin``) into transformers'
``WhisperForConditionalGeneration`` layout, so both engines run the same real weights.

``model.bin`` is written by CTranslate2's ``specs/model_spec.py`` ``_serialize``: a version, the spec name,
its revision, then each variable (name, rank, dims, dtype id, byte count, bytes), then aliases. Self-attention
q/k/v are fused in ``linear_0``, cross-attention k/v in ``attention/linear_1`` (``converters/transformers.py``
``WhisperLoader`` does the opposite of what is done here).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # None: bfloat16


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    offset = 0

    def take(fmt):
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values[0]

    def string():
        nonlocal offset
        length = take("H")
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    take("I"), string(), take("I")  # version, spec name, revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        type_id, size = take("B"), take("I")
        raw = data[offset : offset + size]
        offset += size
        if _DTYPES[type_id] is None:  # bfloat16: the high half of float32
            values = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            values = np.frombuffer(raw, _DTYPES[type_id])
        variables[name] = values.reshape(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def _float(variables, name):
    value = variables[name]
    scale = variables.get(name.replace("/weight", "/weight_scale"))
    if value.dtype == np.int8 and scale is not None:  # int8 rows with one scale each
        return value.astype(np.float32) / scale.reshape(-1, 1)
    return value.astype(np.float32)


def _linear(state, v, ct2, hf, rows=None):
    weight = _float(v, f"{ct2}/weight")
    bias = v.get(f"{ct2}/bias")
    if rows is not None:
        weight = weight[rows]
        bias = None if bias is None else bias[rows]
    state[f"{hf}.weight"] = weight
    if bias is not None:
        state[f"{hf}.bias"] = bias.astype(np.float32)


def _norm(state, v, ct2, hf):
    state[f"{hf}.weight"] = v[f"{ct2}/gamma"].astype(np.float32)
    state[f"{hf}.bias"] = v[f"{ct2}/beta"].astype(np.float32)


def _attention(state, v, ct2, hf, d, cross=False):
    if cross:
        _linear(state, v, f"{ct2}/linear_0", f"{hf}.q_proj")
        fused = f"{ct2}/linear_1"
        _linear(state, v, fused, f"{hf}.k_proj", slice(0, d))
        _linear(state, v, fused, f"{hf}.v_proj", slice(d, 2 * d))
        out = f"{ct2}/linear_2"
    else:
        fused = f"{ct2}/linear_0"
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            _linear(state, v, fused, f"{hf}.{name}", slice(i * d, (i + 1) * d))
        out = f"{ct2}/linear_1"
    state.pop(f"{hf}.k_proj.bias", None)  # Whisper's k projection has no bias
    _linear(state, v, out, f"{hf}.out_proj")


def convert(ct2_folder: Path, out: Path) -> Path:
    """Write ``out`` as a transformers Whisper (config, safetensors, tokenizer, feature extractor)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    v = read_ct2(Path(ct2_folder) / "model.bin")
    ct2_config = json.loads((Path(ct2_folder) / "config.json").read_text(encoding="utf-8"))
    d = v["encoder/conv1/weight"].shape[0]
    enc_layers = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("/self_attention/layer_norm/gamma"))
    dec_layers = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("/self_attention/layer_norm/gamma"))
    heads = d // 64
    vocab = v["decoder/embeddings/weight"].shape[0]
    state: dict[str, np.ndarray] = {}
    for name in ("conv1", "conv2"):
        state[f"model.encoder.{name}.weight"] = _float(v, f"encoder/{name}/weight")
        state[f"model.encoder.{name}.bias"] = v[f"encoder/{name}/bias"].astype(np.float32)
    state["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"].astype(np.float32)
    _norm(state, v, "encoder/layer_norm", "model.encoder.layer_norm")
    state["model.decoder.embed_tokens.weight"] = _float(v, "decoder/embeddings/weight")
    state["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"].astype(np.float32)
    _norm(state, v, "decoder/layer_norm", "model.decoder.layer_norm")
    for side, count in (("encoder", enc_layers), ("decoder", dec_layers)):
        for i in range(count):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _attention(state, v, f"{ct2}/self_attention", f"{hf}.self_attn", d)
            _norm(state, v, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                _attention(state, v, f"{ct2}/attention", f"{hf}.encoder_attn", d, cross=True)
                _norm(state, v, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            _linear(state, v, f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            _linear(state, v, f"{ct2}/ffn/linear_1", f"{hf}.fc2")
            _norm(state, v, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    multilingual = vocab >= 51865
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=state["model.encoder.conv1.weight"].shape[1], d_model=d,
        encoder_layers=enc_layers, decoder_layers=dec_layers, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=state["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=state["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=state["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=state["model.decoder.embed_positions.weight"].shape[0],
        decoder_start_token_id=50258, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        suppress_tokens=ct2_config.get("suppress_ids", []),
    )
    if not multilingual:
        config.update({"decoder_start_token_id": 50257, "pad_token_id": 50256, "bos_token_id": 50256,
                       "eos_token_id": 50256})
    model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embeddings
    assert not missing and not unexpected, (missing, unexpected)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(Path(ct2_folder) / "tokenizer.json"))
    tokenizer.save_pretrained(out)
    _generation_config(tokenizer, ct2_config, multilingual).save_pretrained(out)
    return out


def _generation_config(tokenizer, ct2_config: dict, multilingual: bool):
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    extra = {}
    if multilingual:
        extra = {"lang_to_id": {f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES if ids(f"<|{code}|>") != tokenizer.unk_token_id},
                 "task_to_id": {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}}
    return GenerationConfig(
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, decoder_start_token_id=ids("<|startoftranscript|>"),
        prev_sot_token_id=ids("<|startofprev|>"), no_timestamps_token_id=ids("<|notimestamps|>"),
        is_multilingual=multilingual, max_initial_timestamp_index=50, max_length=448, return_timestamps=False,
        suppress_tokens=ct2_config.get("suppress_ids", []), begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        alignment_heads=ct2_config.get("alignment_heads", []), **extra)
