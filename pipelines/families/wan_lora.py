"""Wan's LoRA rules (part of the Wan family, ``wan.py``): which key layouts a file may have, what layers of
``WanTransformer3DModel`` they name, and whether their shapes fit a catalogue entry. Pure data: no torch.

Layouts read (each renamed into what diffusers' ``WanLoraLoaderMixin.load_lora_weights`` converts itself):

- ``diffusers``: peft keys ``transformer.blocks.N.attn1.to_q.lora_A.weight`` / ``lora_B.weight`` (a bare
  ``blocks.N...`` or ``base_model.model.blocks.N...`` gets the ``transformer.`` prefix);
- ``wan-original``: Wan's own module names as ComfyUI writes them,
  ``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` / ``lora_up.weight`` / ``alpha``;
- ``kohya``: kohya / musubi-tuner's ``lora_unet_blocks_N_self_attn_q.lora_down.weight`` (+ ``.alpha``),
  renamed to the original layout so diffusers' lenient converter reads it (its musubi converter wants
  every layer of every block);
- ``lightx2v``: the original layout with ``diff_b`` (bias) and ``diff`` (whole-weight) keys, as lightx2v's
  distill LoRAs have them (norm ``diff`` keys are dropped, as diffusers does).

Layer shapes come from the transformer's config: the shipped ``assets/model_configs`` sizes of the
catalogue's models (``SIZES``), or the tiny demo build's in ``--demo``.
"""

from __future__ import annotations

import re

# The transformer of each catalogue entry: (heads, FFN width, blocks, in channels, out channels, image dim,
# added k/v dim), from the models' hub configs; every Wan has 128-wide heads, 4096-wide text and a 1x2x2 patch.
_T2V_14B = (40, 13824, 40, 16, 16, None, None)
_I2V_14B = (40, 13824, 40, 36, 16, 1280, 5120)
SIZES: dict[str, tuple] = {
    "wan2.1-t2v-1.3b": (12, 8960, 30, 16, 16, None, None),
    "wan2.1-t2v-14b": _T2V_14B,
    "wan2.1-t2v-14b-turbo": _T2V_14B,
    "wan2.2-ti2v-5b": (24, 14336, 30, 48, 48, None, None),
    "wan2.2-t2v-a14b": _T2V_14B,
    "wan2.1-i2v-14b-480p": _I2V_14B,
    "wan2.1-i2v-14b-720p": _I2V_14B,
    "wan2.1-i2v-14b-480p-turbo": _I2V_14B,
    "wan2.2-ti2v-5b-i2v": (24, 14336, 30, 48, 48, None, None),
    "wan2.2-i2v-a14b": (40, 13824, 40, 36, 16, None, None),
}
HEAD_DIM, TEXT_DIM, FREQ_DIM, PATCH = 128, 4096, 256, 4
# The demo builds (families/demo.py, demo_i2v.py): 2 heads of 12, FFN 32, 2 blocks, 32-wide text.
_DEMO = {"wan-t2v": (16, 16, None), "wan-t2v-moe": (16, 16, None), "wan-i2v": (36, 16, 32),
         "wan-i2v-moe": (36, 16, None), "wan-ti2v": (48, 48, None)}

# Wan's module names -> diffusers' (inside a block, and outside the blocks).
BLOCK_NAMES = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v", "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
TOP_NAMES = {
    "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
}
_KOHYA = {name.replace(".", "_"): name for name in (*BLOCK_NAMES, *TOP_NAMES)}
_PARTS = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".alpha",
          ".diff_b", ".diff")
_ROLE = {".lora_down.weight": "A", ".lora_A.weight": "A", ".lora_up.weight": "B", ".lora_B.weight": "B",
         ".lora_B.bias": "bias", ".diff_b": "bias", ".alpha": "alpha", ".diff": "diff"}
TEXT_ENCODER_PREFIXES = ("lora_te", "text_encoder", "lora_te1_", "lora_te2_")


def layers(spec, demo: bool) -> dict[str, tuple[int, int]]:
    """``{diffusers layer name: (out features, in features)}`` of ``spec``'s transformer (each expert's)."""
    if demo:
        heads, head_dim, ffn, blocks, text_dim = 2, 12, 32, 2, 32
        in_ch, out_ch, image_dim = _DEMO[spec.demo_kind]
        added = heads * head_dim if image_dim else None
    else:
        heads, ffn, blocks, in_ch, out_ch, image_dim, added = SIZES[spec.id]
        head_dim, text_dim = HEAD_DIM, TEXT_DIM
    d = heads * head_dim
    found = {
        "condition_embedder.time_embedder.linear_1": (d, FREQ_DIM), "condition_embedder.time_embedder.linear_2": (d, d),
        "condition_embedder.time_proj": (6 * d, d), "condition_embedder.text_embedder.linear_1": (d, text_dim),
        "condition_embedder.text_embedder.linear_2": (d, d), "proj_out": (out_ch * PATCH, d),
    }
    if image_dim:
        found["condition_embedder.image_embedder.ff.net.0.proj"] = (image_dim, image_dim)
        found["condition_embedder.image_embedder.ff.net.2"] = (d, image_dim)
    for n in range(blocks):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                found[f"blocks.{n}.{attn}.{proj}"] = (d, d)
        if added:
            found[f"blocks.{n}.attn2.add_k_proj"] = (d, added)
            found[f"blocks.{n}.attn2.add_v_proj"] = (d, added)
        found[f"blocks.{n}.ffn.net.0.proj"] = (ffn, d)
        found[f"blocks.{n}.ffn.net.2"] = (d, ffn)
    return found


def _split(key: str) -> tuple[str, str] | None:
    """``(module, part)`` of a key (``part`` one of ``_PARTS``), or None."""
    for part in _PARTS:
        if key.endswith(part):
            return key[: -len(part)], part
    return None


def layout_of(keys) -> str:
    """The file's key layout (see the module docstring), or ``""`` when it is none of them."""
    keys = list(keys)
    if not keys:
        return ""
    if all(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if all(k.startswith("diffusion_model.") for k in keys):
        return "lightx2v" if any(k.endswith((".diff", ".diff_b")) for k in keys) else "wan-original"
    if all(k.startswith(("transformer.", "blocks.", "base_model.model.")) for k in keys) and any(
            ".lora_A." in k or ".lora_B." in k for k in keys):
        return "diffusers"
    if any(k.startswith("blocks.") and ".lora_down." in k for k in keys):
        return "wan-original"  # no ``diffusion_model.`` prefix: given one
    return ""


def renamed(key: str, layout: str) -> str:
    """``key`` as diffusers' Wan loader reads it (original layout with ``diffusion_model.``, or peft keys with
    ``transformer.``); the layout as ``layout_of`` named it."""
    if layout == "kohya":
        module, part = _split(key) or (key, "")
        name = module.removeprefix("lora_unet_")
        match = re.fullmatch(r"blocks_(\d+)_(.+)", name)
        if match and match.group(2) in _KOHYA:
            return f"diffusion_model.blocks.{match.group(1)}.{_KOHYA[match.group(2)]}{part}"
        return f"diffusion_model.{_KOHYA.get(name, name)}{part}"
    if layout == "diffusers":
        for prefix in ("base_model.model.", "blocks."):
            if key.startswith(prefix):
                return "transformer." + key.removeprefix("base_model.model.")
        return key
    if layout in ("wan-original", "lightx2v") and not key.startswith("diffusion_model."):
        return "diffusion_model." + key
    return key


def diffusers_layer(key: str) -> tuple[str, str] | None:
    """``(diffusers layer, role)`` that a renamed key feeds (role: ``A``, ``B``, ``bias``, ``alpha``, ``diff``),
    or None for a key no layer takes."""
    split = _split(key)
    if split is None:
        return None
    module, part = split
    role = _ROLE[part]
    if module.startswith("transformer."):
        return (module.removeprefix("transformer."), role) if part.startswith(".lora_") else None
    module = module.removeprefix("diffusion_model.")
    # whole-weight and bias differences of layers diffusers has no LoRA for (norms, modulation): it drops them
    dropped = (module, "ignored") if part in (".diff", ".diff_b") else None
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", module)
    if match:
        inner = BLOCK_NAMES.get(match.group(2))
        return (f"blocks.{match.group(1)}.{inner}", role) if inner and "norm" not in module else dropped
    if module in TOP_NAMES:
        return TOP_NAMES[module], role
    return dropped


def check(spec, shapes: dict[str, tuple[int, ...]], demo: bool) -> tuple[str, str]:
    """``(layout, reason)`` for a file with tensors ``{key: shape}`` on ``spec`` (``reason`` empty: it fits)."""
    title = spec.title + (" (demo size)" if demo else "")
    keys = list(shapes)
    if any(k.startswith(TEXT_ENCODER_PREFIXES) for k in keys):
        first = next(k for k in keys if k.startswith(TEXT_ENCODER_PREFIXES))
        return layout_of([k for k in keys if not k.startswith(TEXT_ENCODER_PREFIXES)]), (
            f"it has text-encoder layers ({first}); Wan LoRAs here change the transformer only.")
    layout = layout_of(keys)
    if any(".transformer_blocks." in f".{k}" for k in keys):  # LTX-2's block names (and other DiTs'), never Wan's
        return layout, "its layers are transformer_blocks.N (a LoRA for LTX-2 or another DiT), not Wan's blocks."
    if not layout:
        return "", f"its keys are in no LoRA layout Wan reads (first key: {keys[0] if keys else 'none'})."
    model = layers(spec, demo)
    found: dict[str, dict[str, tuple]] = {}
    for key in keys:
        target = diffusers_layer(renamed(key, layout))
        if target is None:
            return layout, f"its key {key} names no layer of Wan's transformer."
        layer, role = target
        if role == "ignored":
            continue
        found.setdefault(layer, {})[role] = tuple(shapes[key])
    blocks = sorted({int(m.group(1)) for layer in found if (m := re.match(r"blocks\.(\d+)\.", layer))})
    model_blocks = sum(1 for name in model if name.endswith(".attn1.to_q"))
    if blocks and blocks[-1] >= model_blocks:
        return layout, f"it has {blocks[-1] + 1} transformer blocks; {title} has {model_blocks}."
    for layer, roles in found.items():
        if layer not in model:
            if "add_k_proj" in layer or "add_v_proj" in layer or "image_embedder" in layer:
                return layout, f"it is for a Wan 2.1 image-to-video model (image layers); {title} has none."
            return layout, f"its layer {layer} is not in {title}."
        out_f, in_f = model[layer]
        a, b, bias = roles.get("A"), roles.get("B"), roles.get("bias")
        if "alpha" in roles and a is None:
            return layout, f"its layer {layer} has an alpha but no LoRA weights."
        if (a is None) != (b is None):
            return layout, f"its layer {layer} has only half a LoRA (down without up, or up without down)."
        if a is not None:
            if roles.get("diff") is None and (len(a) != 2 or len(b) != 2 or a[0] != b[1]):
                return layout, f"its layer {layer} has down {list(a)} and up {list(b)}: the ranks differ."
            if a[-1] != in_f or b[0] != out_f:
                return layout, (f"its layer {layer} is {b[0]} x {a[-1]}, but {title}'s is {out_f} x {in_f} "
                                "(made for another size of Wan?).")
        if bias is not None and tuple(bias) != (out_f,):
            return layout, f"its bias for {layer} has {list(bias)} values; {title}'s layer has {out_f}."
    if not any("A" in roles for roles in found.values()):
        return layout, "it has no LoRA weights Wan takes (only biases or norm differences)."
    return layout, ""


def experts(spec, name: str) -> tuple[dict, ...]:
    """The ``load_lora_weights`` keyword sets that put a LoRA named ``name`` on ``spec``'s experts: Wan 2.2
    A14B has two (``transformer`` for high noise, ``transformer_2`` for low noise); a file named for one
    (``high_noise`` / ``low_noise``, as Wan 2.2 LoRAs are shipped) goes to that one, else to both."""
    if not spec.demo_kind.endswith("-moe"):
        return ({},)
    lowered = name.lower().replace("-", "_").replace(" ", "_")
    if re.search(r"high_?noise|(^|[_/])high([_.]|$)", lowered):
        return ({},)
    if re.search(r"low_?noise|(^|[_/])low([_.]|$)", lowered):
        return ({"load_into_transformer_2": True},)
    return ({}, {"load_into_transformer_2": True})
