"""Tiny LoRAs for the tests, made with peft on the demo Wan transformer and written in each layout the app
reads: diffusers/peft keys, Wan's original keys (ComfyUI), kohya's ``lora_unet_`` keys, and lightx2v's
(original keys with ``diff_b`` biases and norm ``diff`` keys). The same weights in every layout."""

from __future__ import annotations

import json
import struct
from pathlib import Path

RANK, ALPHA = 4, 8.0
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"]
_TO_ORIGINAL = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
                "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
                "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img",
                "attn2.add_v_proj": "cross_attn.v_img", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


def peft_weights(demo_folder: Path, seed: int, scale: float = 0.3, i2v: bool = False) -> dict:
    """``{"blocks.N.attn1.to_q.lora_A.weight": tensor, ...}``: a rank-4 LoRA (alpha 8) made by peft on the
    demo transformer, with seeded random A and B (peft's own init makes B zero: no effect)."""
    import torch
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    transformer = WanTransformer3DModel.from_pretrained(demo_folder / "transformer")
    targets = TARGETS + (["add_k_proj", "add_v_proj"] if i2v else [])
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, init_lora_weights=False)
    transformer = inject_adapter_in_model(config, transformer)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def _module(key: str) -> tuple[str, str]:
    for part in (".lora_A.weight", ".lora_B.weight"):
        if key.endswith(part):
            return key[: -len(part)], part
    raise ValueError(key)


def _original_name(module: str) -> str:
    block, index, rest = module.split(".", 2)
    return f"{block}.{index}.{_TO_ORIGINAL[rest]}"


def write_diffusers(weights: dict, path: Path) -> Path:
    """diffusers' own file (``WanPipeline.save_lora_weights``), with peft's alpha in its metadata."""
    from diffusers import WanPipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    WanPipeline.save_lora_weights(path.parent, transformer_lora_layers=weights, weight_name=path.name,
                                  transformer_lora_adapter_metadata={"r": RANK, "lora_alpha": ALPHA,
                                                                     "target_modules": TARGETS})
    return path


def write_original(weights: dict, path: Path, kohya: bool = False, lightx2v: bool = False, metadata=None) -> Path:
    """Wan's original keys (``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` + ``alpha``), or kohya's
    (``lora_unet_blocks_N_self_attn_q.lora_down.weight``); ``lightx2v`` adds zero ``diff_b`` biases and norm
    ``diff`` keys (which change nothing)."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for key, value in weights.items():
        module, part = _module(key)
        name = _original_name(module)
        name = "lora_unet_" + name.replace(".", "_") if kohya else "diffusion_model." + name
        tensors[f"{name}.{'lora_down' if part == '.lora_A.weight' else 'lora_up'}.weight"] = value
        tensors[f"{name}.alpha"] = torch.tensor(ALPHA)
        if lightx2v and part == ".lora_B.weight":
            tensors[f"{name}.diff_b"] = torch.zeros(value.shape[0])
    if lightx2v:
        tensors["diffusion_model.blocks.0.norm3.diff"] = torch.zeros(24)
        tensors["diffusion_model.blocks.0.norm3.diff_b"] = torch.zeros(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_header(path: Path, shapes: dict, metadata: dict | None = None, data: bool = True) -> Path:
    """A safetensors file with these F32 tensors (zeros), written by hand: no torch needed."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 4
        for n in shape:
            size *= n
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + (b"\0" * offset if data else b""))
    return path
