"""The catalogue's real architectures at their real size, with random weights, for benchmarks.

``assets/model_configs/<model id>.json`` holds each component's class and config as published with the
weights, so any GPU can be timed without downloading tens of GB. Components are created directly on
the target device in the target dtype (a 14B model never passes through CPU memory in fp32). Random
weights have the real cost per step; their output is noise.

Video models become their diffusers pipeline (``build_random_pipeline``); Whisper is built by
``bench.random_whisper`` from the same configs.
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


def parameter_count(model_id: str, component: str) -> int:
    """Parameters of one component, counted on the meta device (no memory used)."""
    import torch

    module = build_component(config_for(model_id)[component], "meta", torch.float32)
    return sum(p.numel() for p in module.parameters())
