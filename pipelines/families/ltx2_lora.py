"""LTX-2's LoRA rules (part of the LTX-2 family, ``ltx2.py``): which key layouts a file may have, what layers of
``LTX2VideoTransformer3DModel`` (video and audio streams, their cross-modal attention) and of the text
connectors (``LTX2TextConnectors``) they name, and whether their shapes fit. Pure data: no torch.

Layouts read (each renamed into what diffusers' ``LTX2LoraLoaderMixin.load_lora_weights`` reads):

- ``diffusers``: peft keys ``transformer.transformer_blocks.N.attn1.to_q.lora_A.weight`` / ``lora_B.weight``
  and ``connectors.video_connector...`` (a bare ``transformer_blocks.N...`` or ``base_model.model....`` key
  gets the ``transformer.`` prefix);
- ``ltx2-original``: Lightricks' own module names as the LTX-2 trainer and ComfyUI write them,
  ``diffusion_model.transformer_blocks.N.attn1.to_q.lora_A.weight`` (``patchify_proj``, ``adaln_single``, ...),
  plus ``text_embedding_projection.aggregate_embed`` for the connectors; ``lora_down`` / ``lora_up`` keys are
  renamed ``lora_A`` / ``lora_B`` and a key without ``diffusion_model.`` gets it (diffusers' converter then
  does the module names). An ``alpha`` beside them is folded into ``lora_A`` as alpha / rank when loaded
  (``loras.adapters``): diffusers' LTX-2 loader reads no alphas.

Layer shapes come from the model's config: the shipped ``assets/model_configs/<id>.json`` of the catalogue
entry, or the tiny demo build's (``ltx2.tiny_components``) in ``--demo``.
"""

from __future__ import annotations

import re

# diffusers' ``_convert_non_diffusers_ltx2_lora_to_diffusers``: original -> diffusers module names, in its order.
ORIGINAL_NAMES = {
    "patchify_proj": "proj_in", "audio_patchify_proj": "audio_proj_in",
    "av_ca_video_scale_shift_adaln_single": "av_cross_attn_video_scale_shift",
    "av_ca_a2v_gate_adaln_single": "av_cross_attn_video_a2v_gate",
    "av_ca_audio_scale_shift_adaln_single": "av_cross_attn_audio_scale_shift",
    "av_ca_v2a_gate_adaln_single": "av_cross_attn_audio_v2a_gate",
    "scale_shift_table_a2v_ca_video": "video_a2v_cross_attn_scale_shift_table",
    "scale_shift_table_a2v_ca_audio": "audio_a2v_cross_attn_scale_shift_table",
    "q_norm": "norm_q", "k_norm": "norm_k", "audio_prompt_adaln_single": "audio_prompt_adaln",
    "prompt_adaln_single": "prompt_adaln",
}
ORIGINAL_ONLY = ("patchify_proj", "audio_patchify_proj", "adaln_single", "audio_adaln_single", "av_ca_")
CONNECTOR_NAMES = {"aggregate_embed": "text_proj_in"}
# The demo build (``ltx2.tiny_components``): transformer and connectors configs (the rest: diffusers' defaults).
DEMO_TRANSFORMER = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
                        audio_cross_attention_dim=8, num_layers=2, caption_channels=32)
DEMO_CONNECTORS = dict(caption_channels=32, text_proj_in_factor=3, video_connector_num_attention_heads=4,
                       video_connector_attention_head_dim=8, video_connector_num_layers=1,
                       audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8,
                       audio_connector_num_layers=1)
TIMESTEP_CHANNELS = 256  # the sinusoidal timestep embedding every AdaLN-single starts from
_PARTS = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".alpha")
_ROLE = {".lora_down.weight": "A", ".lora_A.weight": "A", ".lora_up.weight": "B", ".lora_B.weight": "B",
         ".lora_B.bias": "bias", ".alpha": "alpha"}
TEXT_ENCODER_PREFIXES = ("lora_te", "text_encoder", "text_model.", "gemma", "language_model.")
_BARE = re.compile(r"(transformer_blocks|(audio_)?(proj_in|proj_out|caption_projection|time_embed|prompt_adaln|patchify_proj|"
                   r"adaln_single)|av_cross_attn_\w+|av_ca_\w+)\.")  # a transformer's top-level names, without prefix
_WAN = re.compile(r"(^|\.)blocks\.\d+\.(self_attn|cross_attn|ffn|attn1|attn2)\.|^lora_unet_blocks_\d+_")


def _config(spec, demo: bool) -> tuple[dict, dict]:
    if demo:
        return DEMO_TRANSFORMER, DEMO_CONNECTORS
    from ..bench.random_weights import config_for  # json only

    found = config_for(spec.id)
    return found["transformer"]["config"], found["connectors"]["config"]


def _attention(found: dict, name: str, query: int, kv: int, heads: int, head_dim: int, gated: bool) -> None:
    inner = heads * head_dim
    found.update({f"{name}.to_q": (inner, query), f"{name}.to_k": (inner, kv), f"{name}.to_v": (inner, kv),
                  f"{name}.to_out.0": (query, inner)})
    if gated:
        found[f"{name}.to_gate_logits"] = (heads, query)


def _ff(found: dict, name: str, dim: int) -> None:
    found.update({f"{name}.net.0.proj": (4 * dim, dim), f"{name}.net.2": (dim, 4 * dim)})


def transformer_layers(c: dict) -> dict[str, tuple[int, int]]:
    """``{layer: (out, in)}`` of the linear layers of an ``LTX2VideoTransformer3DModel`` with config ``c``."""
    get = c.get
    heads, head_dim, a_heads, a_head_dim = (get("num_attention_heads", 32), get("attention_head_dim", 128),
                                            get("audio_num_attention_heads", 32), get("audio_attention_head_dim", 64))
    d, a = heads * head_dim, a_heads * a_head_dim
    gated, a_gated = bool(get("gated_attn", False)), bool(get("audio_gated_attn", False))
    in_ch, a_in = get("in_channels", 128), get("audio_in_channels", 128)
    out_ch, a_out = get("out_channels") or in_ch, get("audio_out_channels") or a_in
    found = {"proj_in": (d, in_ch), "audio_proj_in": (a, a_in), "proj_out": (out_ch, d), "audio_proj_out": (a_out, a)}
    if get("use_prompt_embeddings", True):
        caption = get("caption_channels", 3840)
        for name, width in (("caption_projection", d), ("audio_caption_projection", a)):
            found.update({f"{name}.linear_1": (width, caption), f"{name}.linear_2": (width, width)})
    norms = [("time_embed", d, 9 if get("cross_attn_mod") else 6), ("audio_time_embed", a, 9 if get("audio_cross_attn_mod") else 6),
             ("av_cross_attn_video_scale_shift", d, 4), ("av_cross_attn_audio_scale_shift", a, 4),
             ("av_cross_attn_video_a2v_gate", d, 1), ("av_cross_attn_audio_v2a_gate", a, 1)]
    if (get("cross_attn_mod") or get("audio_cross_attn_mod")) and get("use_prompt_adaln_single", True):
        norms += [("prompt_adaln", d, 2), ("audio_prompt_adaln", a, 2)]
    for name, width, params in norms:
        found.update({f"{name}.emb.timestep_embedder.linear_1": (width, TIMESTEP_CHANNELS),
                      f"{name}.emb.timestep_embedder.linear_2": (width, width), f"{name}.linear": (params * width, width)})
    for n in range(get("num_layers", 48)):
        block = f"transformer_blocks.{n}"
        _attention(found, f"{block}.attn1", d, d, heads, head_dim, gated)
        _attention(found, f"{block}.audio_attn1", a, a, a_heads, a_head_dim, a_gated)
        _attention(found, f"{block}.attn2", d, get("cross_attention_dim", 4096), heads, head_dim, gated)
        _attention(found, f"{block}.audio_attn2", a, get("audio_cross_attention_dim", 2048), a_heads, a_head_dim, a_gated)
        _attention(found, f"{block}.audio_to_video_attn", d, a, a_heads, a_head_dim, gated)
        _attention(found, f"{block}.video_to_audio_attn", a, d, a_heads, a_head_dim, a_gated)
        _ff(found, f"{block}.ff", d)
        _ff(found, f"{block}.audio_ff", a)
    return found


def connector_layers(c: dict) -> dict[str, tuple[int, int]]:
    """``{layer: (out, in)}`` of the linear layers of ``LTX2TextConnectors`` with config ``c``."""
    get = c.get
    caption = get("caption_channels", 3840)
    text = caption * get("text_proj_in_factor", 49)
    if get("per_modality_projections", False):
        found = {"video_text_proj_in": (get("video_hidden_dim", 4096), text),
                 "audio_text_proj_in": (get("audio_hidden_dim", 2048), text)}
    else:
        found = {"text_proj_in": (caption, text)}
    for stream in ("video", "audio"):
        heads, head_dim = get(f"{stream}_connector_num_attention_heads", 30), get(f"{stream}_connector_attention_head_dim", 128)
        inner = heads * head_dim
        for n in range(get(f"{stream}_connector_num_layers", 2)):
            block = f"{stream}_connector.transformer_blocks.{n}"
            _attention(found, f"{block}.attn1", inner, inner, heads, head_dim, bool(get(f"{stream}_gated_attn", False)))
            _ff(found, f"{block}.ff", inner)
    return found


def layers(spec, demo: bool) -> dict[str, tuple[int, int]]:
    """``{diffusers layer: (out features, in features)}`` of ``spec``'s transformer (``transformer.``...) and text
    connectors (``connectors.``...): the names of a diffusers-layout LoRA's keys."""
    transformer, connectors = _config(spec, demo)
    found = {f"transformer.{name}": shape for name, shape in transformer_layers(transformer).items()}
    found.update({f"connectors.{name}": shape for name, shape in connector_layers(connectors).items()})
    return found


def _split(key: str) -> tuple[str, str] | None:
    for part in _PARTS:
        if key.endswith(part):
            return key[: -len(part)], part
    return None


def layout_of(keys) -> str:
    """The file's key layout (see the module docstring), or ``""`` when it is none of them."""
    keys = list(keys)
    if not keys or not all(_split(k) for k in keys):
        return ""
    if all(k.startswith(("diffusion_model.", "text_embedding_projection.")) for k in keys):
        return "ltx2-original"
    if any(k.startswith(("transformer.", "connectors.")) for k in keys) and all(
            k.startswith(("transformer.", "connectors.", "base_model.model.")) for k in keys):
        return "diffusers"
    bare = [k.removeprefix("base_model.model.") for k in keys]
    if all(_BARE.match(k) for k in bare):
        if any(".lora_down." in k or k.startswith(ORIGINAL_ONLY) for k in bare):
            return "ltx2-original"  # no ``diffusion_model.`` prefix: given one
        return "diffusers"
    return ""


def renamed(key: str, layout: str) -> str:
    """``key`` as diffusers' LTX-2 loader reads it; the layout as ``layout_of`` named it."""
    if layout == "diffusers":
        if key.startswith(("transformer.", "connectors.")):
            return key
        return "transformer." + key.removeprefix("base_model.model.")
    if layout == "ltx2-original":
        key = key.removeprefix("base_model.model.")
        if not key.startswith(("diffusion_model.", "text_embedding_projection.")):
            key = "diffusion_model." + key
        return key.replace(".lora_down.weight", ".lora_A.weight").replace(".lora_up.weight", ".lora_B.weight")
    return key


def diffusers_layer(key: str) -> tuple[str, str] | None:
    """``(component.layer, role)`` that a renamed key feeds (role: ``A``, ``B``, ``bias``, ``alpha``), as
    diffusers' converter names the original modules; None for a key in no layout."""
    split = _split(key)
    if split is None:
        return None
    module, part = split
    if module.startswith(("transformer.", "connectors.")):
        return module, _ROLE[part]
    for prefix, names, component in (("diffusion_model.", ORIGINAL_NAMES, "transformer"),
                                     ("text_embedding_projection.", CONNECTOR_NAMES, "connectors")):
        if module.startswith(prefix):
            module = module.removeprefix(prefix)
            for old, new in names.items():
                module = module.replace(old, new)
            for old, new in (("adaln_single.", "time_embed."), ("audio_adaln_single.", "audio_time_embed.")):
                if module.startswith(old):
                    module = new + module.removeprefix(old)
            return f"{component}.{module}", _ROLE[part]
    return None


def check(spec, shapes: dict[str, tuple[int, ...]], demo: bool) -> tuple[str, str]:
    """``(layout, reason)`` for a file with tensors ``{key: shape}`` on ``spec`` (``reason`` empty: it fits)."""
    title = spec.title + (" (demo size)" if demo else "")
    keys = list(shapes)
    text = [k for k in keys if k.removeprefix("base_model.model.").startswith(TEXT_ENCODER_PREFIXES)]
    if text:
        return layout_of([k for k in keys if k not in text]), (
            f"it has text-encoder layers ({text[0]}); LTX-2 LoRAs here change the transformer and text connectors only.")
    wan = next((k for k in keys if _WAN.search(k.removeprefix("diffusion_model.").removeprefix("transformer."))), None)
    if wan:
        return "", f"it is a Wan LoRA (its key {wan} names a layer of Wan's blocks), not one for LTX-2."
    layout = layout_of(keys)
    targets = [diffusers_layer(renamed(key, layout)) for key in keys] if layout else []
    if not layout or None in targets:  # a key layout_of takes always names a layer: the second is a safeguard
        return "", f"its keys are in no LoRA layout LTX-2 reads (first key: {keys[0] if keys else 'none'})."
    model = layers(spec, demo)
    found: dict[str, dict[str, tuple]] = {}
    for key, (layer, role) in zip(keys, targets):
        found.setdefault(layer, {})[role] = tuple(shapes[key])
    blocks = sorted({int(m.group(1)) for layer in found if (m := re.match(r"transformer\.transformer_blocks\.(\d+)\.", layer))})
    model_blocks = sum(1 for name in model if re.fullmatch(r"transformer\.transformer_blocks\.\d+\.attn1\.to_q", name))
    if blocks and blocks[-1] >= model_blocks:
        return layout, f"it has {blocks[-1] + 1} transformer blocks; {title} has {model_blocks}."
    for layer, roles in found.items():
        if layer not in model:
            return layout, f"its layer {layer} is not in {title}."
        out_f, in_f = model[layer]
        a, b, bias = roles.get("A"), roles.get("B"), roles.get("bias")
        if "alpha" in roles and a is None:
            return layout, f"its layer {layer} has an alpha but no LoRA weights."
        if (a is None) != (b is None):
            return layout, f"its layer {layer} has only half a LoRA (down without up, or up without down)."
        if a is None:
            return layout, f"its layer {layer} has a bias but no LoRA weights."
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            return layout, f"its layer {layer} has down {list(a)} and up {list(b)}: the ranks differ."
        if a[1] != in_f or b[0] != out_f:
            return layout, (f"its layer {layer} is {b[0]} x {a[1]}, but {title}'s is {out_f} x {in_f} "
                            "(made for another LTX model or size?).")
        if bias is not None and tuple(bias) != (out_f,):
            return layout, f"its bias for {layer} has {list(bias)} values; {title}'s layer has {out_f}."
    return layout, ""


def experts(spec, name: str) -> tuple[dict, ...]:
    """One denoiser: every LoRA goes on the one transformer (and the connectors, when it has their layers)."""
    return ({},)
