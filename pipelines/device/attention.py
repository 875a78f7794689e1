"""Choosing the attention kernel: the fastest one that works on this machine, else PyTorch SDPA, never a crash.

Transformer models go through diffusers' attention dispatcher (``set_attention_backend``); UNets with the
older attention processors (a family whose ``ATTENTION`` is ``"processors"``) have xformers as the one
alternative to SDPA (``enable_xformers_memory_efficient_attention``).

``--attention auto`` takes, on a CUDA GPU, the first of these that is installed *and* passes a probe (one
small attention call on the device, in the model's dtype, compared with SDPA):

1. ``flash``: flash-attn 3 (``flash_attn_interface``, Hopper) or flash-attn 2 (``flash_attn``);
2. ``cudnn``: PyTorch's cuDNN attention (Hopper and newer, where it is faster than the default SDPA kernel);
3. ``sdpa``: PyTorch's ``scaled_dot_product_attention`` (on the CPU: always).

SageAttention (``sage``) quantises Q and K to int8, which changes the output, so ``auto`` never takes it:
ask for it with ``--attention sage`` (the sidecar then lists it under ``changes_output``). A kernel that
is missing, fails its probe, or fails to attach falls back to SDPA with one log line.
"""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger(__name__)

# Our flag value -> (python module that must import, diffusers attention backend name)
_BACKENDS = {
    "flash": ("flash_attn", "flash"),
    "flash3": ("flash_attn_interface", "_flash_3"),
    "sage": ("sageattention", "sage"),
    "xformers": ("xformers", "xformers"),
    "cudnn": (None, "_native_cudnn"),
    "sdpa": (None, "native"),
}
# ``auto`` only picks kernels that give the same output as SDPA (within rounding).
_AUTO_ORDER = ("flash3", "flash", "cudnn", "sdpa")
CHANGES_OUTPUT = ("sage",)
PROBE_TOLERANCE = 2e-2  # bf16/fp16 kernels against SDPA on random inputs: rounding, not a different result


def installed_backends(device: str) -> list[str]:
    """Backends usable on ``device``: SDPA always; on CUDA, cuDNN (Hopper+, sm 9.0) and the kernels whose
    package is installed."""
    usable = ["sdpa"]
    if not device.startswith("cuda"):
        return usable
    for name, (module, _) in _BACKENDS.items():
        if module and importlib.util.find_spec(module) is not None:
            usable.append(name)
    if _compute_capability(device) >= (9, 0):
        usable.append("cudnn")
    return usable


def _compute_capability(device: str) -> tuple[int, int]:
    try:
        import torch

        return torch.cuda.get_device_capability(device)
    except Exception:
        return (0, 0)


def choose_backend(requested: str, device: str) -> str:
    """The backend to try for ``requested`` (auto/sdpa/cudnn/xformers/flash/sage) on ``device``."""
    usable = installed_backends(device)
    if requested == "auto":
        return next(name for name in _AUTO_ORDER if name in usable)
    if requested == "flash" and "flash3" in usable:
        return "flash3"
    if requested not in usable:
        if not device.startswith("cuda"):
            why = "it needs a CUDA GPU"
        elif requested == "cudnn":
            why = "cuDNN attention is used from Hopper (sm 9.0) on"
        else:
            why = f"`{_BACKENDS[requested][0]}` is not installed"
        logger.info("Attention: %s requested but %s; using PyTorch SDPA.", requested, why)
        return "sdpa"
    return requested


def probe(backend: str, device: str, dtype) -> str | None:
    """Run one small attention through diffusers' dispatcher with ``backend`` and with SDPA; None when they
    agree, else why not (the exception, or the difference)."""
    import torch
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        dispatch_attention_fn,
    )

    if backend == "sdpa":
        return None
    try:
        generator = torch.Generator("cpu").manual_seed(0)
        q, k, v = (torch.randn(1, 256, 2, 64, generator=generator).to(device, dtype) for _ in range(3))
        with torch.no_grad():
            out = dispatch_attention_fn(q, k, v, backend=AttentionBackendName(_BACKENDS[backend][1]))
            ref = dispatch_attention_fn(q, k, v, backend=AttentionBackendName.NATIVE)
        difference = (out.float() - ref.float()).abs().max().item()
    except Exception as error:  # a kernel built for another torch / GPU
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
    limit = 0.2 if backend in CHANGES_OUTPUT else PROBE_TOLERANCE
    if not difference <= limit:
        return f"its output differs from SDPA by {difference:.3g}"
    return None


def _denoisers(pipe) -> list:
    models = [getattr(pipe, name, None) for name in ("transformer", "transformer_2", "unet")]
    return [model for model in models if model is not None]


def apply_backend(pipe, requested: str, device: str, kind: str = "dispatcher") -> str:
    """Set the attention backend on the pipeline's transformers / UNet; returns the one in use. ``kind`` is
    the family's ``ATTENTION``: ``"dispatcher"`` or ``"processors"``."""
    models = _denoisers(pipe)
    if kind == "processors":
        return _apply_processors_backend(pipe, requested, device)
    backend = choose_backend(requested, device)
    if backend == "xformers" and requested == "auto":
        backend = "sdpa"
    dtype = next((m.dtype for m in models), None)
    if backend != "sdpa" and dtype is not None:
        reason = probe(backend, device, dtype)
        if reason:
            logger.warning("Attention: %s failed its probe (%s); using PyTorch SDPA.", backend, reason)
            backend = "sdpa"
    if backend == "sdpa":
        return backend  # diffusers' default dispatch is SDPA
    try:
        for model in models:
            if hasattr(model, "set_attention_backend"):
                model.set_attention_backend(_BACKENDS[backend][1])
    except Exception as error:  # a kernel built for another torch / GPU: fall back, keep running
        logger.warning("Attention: %s failed to load (%s); using PyTorch SDPA.", backend, error)
        reset_backend(pipe)
        return "sdpa"
    logger.info("Attention: %s", backend)
    return backend


def reset_backend(pipe) -> None:
    for model in _denoisers(pipe):
        if hasattr(model, "set_attention_backend"):
            try:
                model.set_attention_backend("native")
            except Exception:  # pragma: no cover - native always exists
                pass


def _apply_processors_backend(pipe, requested: str, device: str) -> str:
    """The older attention processors (a UNet's): xformers when asked for (or ``auto`` and installed), else SDPA."""
    if requested not in ("auto", "xformers", "sdpa"):
        logger.info("Attention: %s is not available for a UNet's attention processors; using PyTorch SDPA.", requested)
        return "sdpa"
    if requested == "sdpa" or "xformers" not in installed_backends(device):
        if requested == "xformers":
            logger.info("Attention: xformers requested but not usable here; using PyTorch SDPA.")
        return "sdpa"
    try:
        pipe.enable_xformers_memory_efficient_attention()
    except Exception as error:
        logger.warning("Attention: xformers failed to load (%s); using PyTorch SDPA.", error)
        try:
            pipe.disable_xformers_memory_efficient_attention()
        except Exception:
            pass
        return "sdpa"
    return "xformers"
