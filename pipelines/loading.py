"""Loading a catalogue model: from the Hugging Face cache, a local folder, or a tiny demo build."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .attention import apply_backend
from .jobs import RequestError
from .registry import ModelSpec
from .settings import Settings

logger = logging.getLogger(__name__)


class ModelNotAvailable(RequestError):
    """The weights are not on this machine; the message names the model and the command that fetches them."""


@dataclass
class LoadedModel:
    spec: ModelSpec
    pipe: Any
    source: str
    revision: str
    n_bytes: int
    load_seconds: float
    attention: str
    device: str
    dtype: str


def fetch_command(spec: ModelSpec) -> str:
    return f"python scripts/download_models.py {spec.id}"


def resolve_source(spec: ModelSpec, settings: Settings) -> tuple[Path, str]:
    """Folder holding the model's files and the revision it is (commit hash, ``local`` or ``demo``)."""
    if settings.demo:
        from .demo_models import ensure_demo_model

        return ensure_demo_model(spec.demo_kind, settings.demo_models_dir), "demo (random weights)"
    local = Path(spec.repo_id).expanduser()
    if local.is_dir():
        return local, "local"
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        folder = Path(snapshot_download(spec.repo_id, revision=spec.revision, local_files_only=True))
    except Exception as error:  # LocalEntryNotFoundError, or an unreadable cache
        raise ModelNotAvailable(
            f"{spec.title} ({spec.repo_id}) is not in the Hugging Face cache ({HF_HUB_CACHE}). "
            f"Fetch it with: {fetch_command(spec)}",
            key="model_missing",
            model=spec.title,
            repo=spec.repo_id,
            command=fetch_command(spec),
        ) from error
    return folder, folder.name


def _torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def parameter_bytes(pipe) -> int:
    import torch

    total = 0
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in component.parameters())
            total += sum(b.numel() * b.element_size() for b in component.buffers())
    return total


def _place(pipe, settings: Settings, device: str) -> None:
    """Put the pipeline on the device, whole or with the chosen offload."""
    offload = settings.offload if device.startswith("cuda") else "none"
    if settings.offload != "none" and offload == "none":
        logger.info("Offload %r needs a CUDA GPU; keeping the model in CPU memory.", settings.offload)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        import torch

        for name, component in pipe.components.items():
            if not isinstance(component, torch.nn.Module):
                continue
            if hasattr(component, "enable_group_offload"):
                component.enable_group_offload(
                    onload_device=torch.device(device), offload_type="leaf_level", use_stream=True
                )
            else:
                component.to(device)
    else:
        pipe.to(device)


def load_video_pipeline(spec: ModelSpec, settings: Settings, device: str, dtype: str) -> LoadedModel:
    """Load a diffusers video pipeline the way users expect (``from_pretrained``), ready to run."""
    import diffusers
    import torch

    started = time.perf_counter()
    if settings.random_weights:
        from .random_weights import build_random_pipeline

        folder, revision = "random weights", "random weights (real architecture)"
        build_on = device if settings.offload == "none" else "cpu"
        fp32 = spec.extra.get("fp32_components", ("vae",))  # as from_pretrained below
        pipe = build_random_pipeline(spec.id, build_on, _torch_dtype(dtype), fp32_components=fp32)
    else:
        folder, revision = resolve_source(spec, settings)
        started = time.perf_counter()
        pipeline_class = getattr(diffusers, spec.pipeline_class)
        # The VAE stays in fp32 as Wan's authors recommend (an entry may name other components, or none);
        # everything else in the chosen dtype.
        fp32 = spec.extra.get("fp32_components", ("vae",))
        torch_dtype = {"default": _torch_dtype(dtype), **{name: torch.float32 for name in fp32}}
        pipe = pipeline_class.from_pretrained(folder, dtype=torch_dtype)
    if spec.lora_repo_id and not (settings.demo or settings.random_weights):
        logger.info("Fusing LoRA %s/%s into %s", spec.lora_repo_id, spec.lora_weight_name, spec.title)
        pipe.load_lora_weights(spec.lora_repo_id, weight_name=spec.lora_weight_name, local_files_only=True)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    _place(pipe, settings, device)
    if settings.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    attention = apply_backend(pipe, settings.attention, device)
    pipe.set_progress_bar_config(disable=True)
    seconds = time.perf_counter() - started
    logger.info("Loaded %s from %s in %.1f s (%s, %s, attention %s)", spec.title, folder, seconds, device, dtype, attention)
    return LoadedModel(
        spec=spec,
        pipe=pipe,
        source=str(folder),
        revision=revision,
        n_bytes=parameter_bytes(pipe),
        load_seconds=seconds,
        attention=attention,
        device=device,
        dtype=dtype,
    )


def load_model(spec: ModelSpec, settings: Settings, device: str, dtype: str) -> LoadedModel:
    """Load any catalogue model: diffusers video pipelines here, Whisper in ``pipelines.asr``."""
    if spec.task == "asr":
        from .asr import load_asr_model

        return load_asr_model(spec, settings, device, dtype)
    return load_video_pipeline(spec, settings, device, dtype)
