"""Choosing the attention kernel: the fastest one installed, else PyTorch SDPA, never a crash."""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger(__name__)

# Our flag value -> (python module that must import, diffusers attention backend name)
_BACKENDS = {
    "flash": ("flash_attn", "flash"),
    "sage": ("sageattention", "sage"),
    "xformers": ("xformers", "xformers"),
    "sdpa": (None, "native"),
}
# ``auto`` only picks kernels that give the same output as SDPA (SageAttention quantises: opt-in).
_AUTO_ORDER = ("flash", "sdpa")


def installed_backends(device: str) -> list[str]:
    """Backends usable on ``device``: SDPA always; the GPU kernels when their package is installed."""
    usable = ["sdpa"]
    if device.startswith("cuda"):
        for name, (module, _) in _BACKENDS.items():
            if module and importlib.util.find_spec(module) is not None:
                usable.append(name)
    return usable


def choose_backend(requested: str, device: str) -> str:
    """The backend to use for ``requested`` (auto/sdpa/xformers/flash/sage) on ``device``."""
    usable = installed_backends(device)
    if requested == "auto":
        return next(name for name in _AUTO_ORDER if name in usable)
    if requested not in usable:
        why = "it needs a CUDA GPU" if not device.startswith("cuda") else f"`{_BACKENDS[requested][0]}` is not installed"
        logger.info("Attention: %s requested but %s; using PyTorch SDPA.", requested, why)
        return "sdpa"
    return requested


def apply_backend(pipe, requested: str, device: str) -> str:
    """Set the attention backend on the pipeline's transformers / UNet; returns the one in use."""
    backend = choose_backend(requested, device)
    models = [getattr(pipe, name, None) for name in ("transformer", "transformer_2", "unet")]
    models = [model for model in models if model is not None and hasattr(model, "set_attention_backend")]
    if backend == "sdpa":
        return backend  # diffusers' default dispatch is SDPA
    try:
        for model in models:
            model.set_attention_backend(_BACKENDS[backend][1])
    except Exception as error:  # a kernel built for another torch / GPU: fall back, keep running
        logger.warning("Attention: %s failed to load (%s); using PyTorch SDPA.", backend, error)
        for model in models:
            model.set_attention_backend("native")
        return "sdpa"
    return backend
