"""Loading a video pipeline the way its family describes it: from the Hugging Face cache, a local folder,
a tiny demo build, or random weights; then its memory level and the fast path.

The family (``families/base.py``) is passed in: this module never imports the catalogue or a family
(``device.loaders.load_model`` is where a spec meets its family).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import memory_levels
from .attention import apply_backend
from ..studio.jobs import RequestError
from ..families.spec import ModelSpec
from ..studio.settings import Settings

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
    level: str = "resident"  # memory level (pipelines/memory_levels.py); Whisper: always resident
    level_why: str = ""
    optimisations: dict = field(default_factory=dict)  # what the fast path did at load (pipelines/fastpath.py)
    loras: dict = field(default_factory=dict)  # creators' LoRAs loaded as adapters (pipelines/loras/adapters.py)


def fetch_command(spec: ModelSpec) -> str:
    return f"python scripts/download_models.py {spec.id}"


def resolve_source(spec: ModelSpec, settings: Settings, family=None) -> tuple[Path, str]:
    """Folder holding the model's files and the revision it is (commit hash, ``local`` or ``demo``); in
    ``--demo`` mode the family's tiny build (``DEMO_BUILDERS``)."""
    if settings.demo:
        from ..families.demo import ensure_demo_model

        build = getattr(family, "DEMO_BUILDERS", {}).get(spec.demo_kind)
        return ensure_demo_model(spec.demo_kind, settings.demo_models_dir, build), "demo (random weights)"
    local = Path(spec.repo_id).expanduser()
    if local.is_dir():
        return local, "local"
    from ..studio.downloads import find_downloaded  # the Models page / download_models.py: <data>/models

    downloaded = find_downloaded(spec.repo_id, settings.data_dir / "models")
    if downloaded:
        return downloaded  # (folder, "source@revision")
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


def _choose_level(spec: ModelSpec, pipe, settings: Settings, device: str, family) -> tuple[str, str]:
    """The memory level to place ``pipe`` at: the flags' choice, or (``auto``) the fastest whose estimated
    need for the model's default preset fits the free VRAM measured now; never above the floor an
    out-of-memory retry left for this model."""
    requested = memory_levels.requested_level(settings)
    floor = memory_levels.loading_floor()
    if not device.startswith("cuda"):
        if requested not in ("auto", "resident"):
            logger.info("Memory level %s needs a CUDA GPU; keeping the model in CPU memory.", requested)
        level = memory_levels.lowest(floor, "resident" if requested == "auto" else requested)
        return level, "on the CPU nothing is offloaded" + (f" (out-of-memory floor {floor})" if floor else "")
    if requested != "auto":
        level = memory_levels.lowest(requested, floor)
        return level, f"asked for ({requested})" + (f", lowered to {level} after running out of memory" if level != requested else "")
    import torch

    sizes = memory_levels.component_bytes(pipe)
    on_device = sum(
        sum(t.numel() * t.element_size() for t in [*c.parameters(), *c.buffers()] if t.device.type == "cuda")
        for c in pipe.components.values() if isinstance(c, torch.nn.Module)
    )
    others = max(0, torch.cuda.memory_allocated(device) - on_device)
    cap = int(settings.gpu_memory_gb * 2**30) if settings.gpu_memory_gb else None
    available = memory_levels.available_bytes(device, cap, others) + on_device
    preset = next((p for p in spec.presets if p.name == spec.default_preset), spec.presets[0] if spec.presets else None)
    shape = _preset_shape(spec, preset, family)
    needs = memory_levels.needs_by_level(sizes, pipe, shape, settings.batch_guidance != "off", family)
    level, why = memory_levels.choose_level(needs, available, floor)
    return level, f"auto: {why} (for {shape.frames} frames at {shape.width}x{shape.height})"


def _preset_shape(spec: ModelSpec, preset, family) -> memory_levels.JobShape:
    from ..families.base import size_multiple
    from ..families.spec import I2V_MAX_AREA, frame_size

    if preset is None:
        return memory_levels.JobShape(81, 480, 832)
    try:
        width, height = frame_size(preset.resolution, "16:9", size_multiple(family, spec))
    except (ValueError, KeyError):
        area = I2V_MAX_AREA.get(preset.resolution, 832 * 480)
        width = height = int(area ** 0.5)
    return memory_levels.JobShape(preset.frames, height, width, guidance=preset.guidance > 1.0)


def load_video_pipeline(spec: ModelSpec, settings: Settings, device: str, dtype: str, family,
                        without: tuple[str, ...] = ()) -> LoadedModel:
    """Load a diffusers video pipeline of ``family`` the way users expect (``from_pretrained``), then place
    it at its memory level and apply the fast path (``pipelines.device.fastpath``): attention kernel, fused
    projections, compilation, fp8 storage when asked. Components named in ``without`` are not loaded
    (context-parallel ranks other than 0 never encode a prompt: ``pipelines/scale/parallel_rank.py``)."""
    import diffusers
    import torch

    from ..families.base import fp32_components
    from . import fastpath

    fp32 = fp32_components(family, spec)  # the rest in the chosen dtype

    started = time.perf_counter()
    memory_levels.apply_memory_cap(settings, device)
    if settings.random_weights:
        from ..bench.random_weights import build_random_pipeline

        folder, revision = "random weights", "random weights (real architecture)"
        build_on = device if _builds_on_device(spec, settings, device) else "cpu"
        pipe = build_random_pipeline(spec.id, build_on, _torch_dtype(dtype), fp32_components=fp32)
    else:
        folder, revision = resolve_source(spec, settings, family)
        started = time.perf_counter()
        pipeline_class = getattr(diffusers, spec.pipeline_class)
        torch_dtype = {"default": _torch_dtype(dtype), **{name: torch.float32 for name in fp32}}
        pipe = pipeline_class.from_pretrained(folder, dtype=torch_dtype, **{name: None for name in without})
    if spec.lora_repo_id and not (settings.demo or settings.random_weights):
        logger.info("Fusing LoRA %s/%s into %s", spec.lora_repo_id, spec.lora_weight_name, spec.title)
        pipe.load_lora_weights(spec.lora_repo_id, weight_name=spec.lora_weight_name, local_files_only=True)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    fp8 = bool(getattr(settings, "fp8", False)) and fastpath.enable_fp8(pipe, device)
    level, why = _choose_level(spec, pipe, settings, device, family)
    memory_levels.place_at(pipe, level, device)
    if settings.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    attention = apply_backend(pipe, settings.attention, device, family.ATTENTION)
    pipe.set_progress_bar_config(disable=True)
    model = LoadedModel(
        spec=spec,
        pipe=pipe,
        source=str(folder),
        revision=revision,
        n_bytes=parameter_bytes(pipe),
        load_seconds=0.0,
        attention=attention,
        device=device,
        dtype=dtype,
        level=level,
        level_why=why,
        optimisations={"fp8": fp8},
    )
    fastpath.setup(model, settings, device)
    model.load_seconds = time.perf_counter() - started
    logger.info("Loaded %s from %s in %.1f s (%s, %s, attention %s, memory level %s: %s; fused QKV %s, compile %s%s)",
                spec.title, folder, model.load_seconds, device, dtype, attention, level, why,
                "on" if model.optimisations.get("fused_qkv") else "off",
                "on" if model.optimisations.get("compile") else "off", ", fp8 weights" if fp8 else "")
    return model


def _builds_on_device(spec: ModelSpec, settings: Settings, device: str) -> bool:
    """Random weights are created where they will run when the whole model will be resident."""
    requested = memory_levels.requested_level(settings)
    floor = memory_levels.loading_floor()
    if floor not in (None, "resident") or requested not in ("auto", "resident", "text_offload", "vae_tiling"):
        return False
    if requested == "auto" and device.startswith("cuda"):
        cap = int(settings.gpu_memory_gb * 2**30) if settings.gpu_memory_gb else None
        return spec.vram_gb * 2**30 + memory_levels.RESERVE_BYTES < memory_levels.available_bytes(device, cap)
    return True
