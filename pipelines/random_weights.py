"""The catalogue's real architectures at their real size, with random weights, for benchmarks.

``assets/model_configs/<model id>.json`` holds each component's class and config as published with the
weights, so any GPU can be timed without downloading tens of GB. Components are created directly on
the target device in the target dtype (a 14B model never passes through CPU memory in fp32). Random
weights have the real cost per step; their output is noise.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "assets" / "model_configs"


def config_for(model_id: str) -> dict:
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


def build_component(entry: dict, device: str, dtype):
    """One component from its class name and config, created on ``device`` in ``dtype``."""
    import diffusers
    import torch
    import transformers

    name, config = entry["class"], dict(entry["config"])
    if hasattr(diffusers, name) and name.endswith("Scheduler"):
        return getattr(diffusers, name).from_config(config)
    with torch.device(device), _default_dtype(dtype):
        if hasattr(diffusers, name):
            return getattr(diffusers, name).from_config(config).eval()
        model_class = getattr(transformers, name)
        config_class = transformers.AutoConfig.for_model(config.pop("model_type")).__class__
        return model_class(config_class(**config)).eval()


def build_random_pipeline(model_id: str, device: str, dtype, vae_dtype=None):
    """The model's diffusers pipeline with random weights, its real size, on ``device``."""
    import diffusers
    import torch

    from .demo_models import build_word_tokenizer

    config = config_for(model_id)
    torch.manual_seed(0)
    components = {}
    for name, entry in config.items():
        if isinstance(entry, dict) and "class" in entry:
            component_dtype = vae_dtype if (name == "vae" and vae_dtype is not None) else dtype
            components[name] = build_component(entry, device, component_dtype)
    components["tokenizer"] = build_word_tokenizer(max_length=512)
    return getattr(diffusers, config["pipeline"])(**components)


def parameter_count(model_id: str, component: str) -> int:
    """Parameters of one component, counted on the meta device (no memory used)."""
    import torch

    module = build_component(config_for(model_id)[component], "meta", torch.float32)
    return sum(p.numel() for p in module.parameters())
