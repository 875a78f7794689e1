"""What the video tasks (text-to-video, image-to-video) share: Wan's defaults, latent decoding, the sidecar,
cached prompt encoding and the out-of-memory ladder (``run_with_memory_ladder``)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from ..studio.jobs import RequestError

logger = logging.getLogger(__name__)

# Wan's own negative prompt (from its reference code), which the model was tuned with.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
MAX_PROMPT_CHARS = 4000
MAX_CLIPS = 16
PREVIEW_UPDATES = 10  # about this many previews per clip
PREVIEW_UPSCALE = 2  # a 480p clip previews as a 2x2 grid of 208x120 frames
WAN_TEXT_TOKENS = 512  # the prompt length WanPipeline.__call__ and Wan's reference code use
MAX_STEP_CACHE = 1.0  # the step cache's threshold: 0 (off) to this


def set_flow_shift(pipe, shift: float) -> None:
    config = pipe.scheduler.config
    if "flow_shift" in config and config.get("flow_shift") != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, flow_shift=shift)
    elif "shift" in config and "flow_shift" not in config and config.get("shift") != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, shift=shift)


def decode_wan_latents(pipe, latents):
    """Latents -> uint8 frames (F, H, W, 3), exactly as ``WanPipeline`` decodes them."""
    import numpy as np
    import torch

    vae = pipe.vae
    latents = latents.to(vae.device if not hasattr(pipe, "_execution_device") else pipe._execution_device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    with torch.no_grad():
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def check_step_cache(value, spec) -> float:
    """The request's step-cache threshold (0 = off), checked: a number in [0, 1], and only for Wan."""
    from ..studio.jobs import parse_number

    threshold = parse_number(value if value not in (None, "") else 0, "Step cache threshold", float, 0.0,
                             MAX_STEP_CACHE, "step_cache")
    if threshold and spec.extra.get("family", "wan") != "wan":
        raise RequestError(f"The step cache works with Wan models; {spec.title} has no transformer blocks to skip. "
                           "Set it to 0.", key="step_cache_unsupported", model=spec.title)
    return threshold


def encode_cached(ctx, model, prompt: str, negative: str | None, guidance: bool, max_length: int, encode):
    """``encode()`` (-> positive, negative embeddings) through the prompt cache of the resident models; at the
    memory levels that keep the text encoder in CPU memory, it comes to the GPU for a miss only.
    Returns ``(embeddings, hit)``."""
    from ..device.memory_levels import text_encoder_on

    cache = ctx.worker.models.prompt_cache
    cache.entries = ctx.settings.prompt_cache
    key = cache.key(model.spec.id, prompt, negative, max_length, model.dtype, ctx.device, guidance)

    def run():
        with text_encoder_on(model.pipe, ctx.device, model.level):
            return encode()

    return cache.get_or_encode(key, run)


def oom_advice(spec, request) -> str:
    return (f"Out of GPU memory even at the lowest memory level (sequential offload, VAE decoded in tiles) for "
            f"{spec.title}, {request.frames} frames at {request.width} x {request.height}. Use fewer frames or a "
            "lower resolution, a smaller model, or close other programs using the GPU (nvidia-smi lists them); "
            "Release VRAM drops models kept from earlier jobs.")


def clips_already_written(ctx, job) -> list[dict]:
    """Clips an earlier, interrupted run of this job wrote before the app stopped (it runs again after a
    restart): they are kept and counted, and only the rest are made. Empty on a first attempt."""
    if job.attempts < 2:
        return []
    from ..studio.history import History

    entries = sorted((e for e in History(ctx.settings.outputs_dir).entries() if e.job_id == job.id and e.video),
                     key=lambda e: e.created)
    if entries:
        ctx.note(f"{len(entries)} clip(s) were written before the app stopped; they are kept, not made again.")
    return [{"video": str(e.video), "sidecar": str(e.sidecar), "seed": e.settings.get("seed")} for e in entries]


def run_with_memory_ladder(ctx, job, spec, request, attempt):
    """``attempt(model, loaded_now, retries)`` runs what is left of the job on the resident model. On CUDA
    out-of-memory, memory is freed, the model goes one level down the ladder (``pipelines.device.memory_levels``;
    the level stays until Release VRAM) and ``attempt`` runs again; each retry is logged, noted in the job
    and kept in ``retries`` for the sidecar. At the lowest level the model is released and the job fails
    with ``RequestError(key="oom_lowest_level")`` and advice that can help."""
    from ..device import fastpath
    from ..device.memory import free_memory, is_out_of_memory
    from ..device.memory_levels import ReloadNeeded, next_level

    manager = ctx.worker.models
    retries: list[dict] = []
    while True:
        model = None
        try:
            model, loaded_now = ctx.model(spec)
            return attempt(model, loaded_now, retries)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
            stage = job.progress.stage
        # outside the except block: the failed attempt's frames and tensors are no longer referenced
        level = model.level if model is not None else manager.floors.get(spec.id, "resident")
        lower = next_level(level)
        retries.append({"stage": stage, "level": level, "error": message, "next_level": lower})
        free_memory(ctx.device)
        if lower is None:
            logger.error("Job %s: out of memory at %s even at the lowest memory level (%s); giving up.", job.id, stage, level)
            model = None
            manager.evict(spec.id)
            manager.floors.pop(spec.id, None)  # this job was too big; the next one starts from the free memory again
            raise RequestError(oom_advice(spec, request), key="oom_lowest_level", model=spec.title,
                               frames=request.frames, width=request.width, height=request.height)
        ctx.note(f"Out of GPU memory at {stage} (memory level {level}); retrying at {lower}.")
        logger.warning("Job %s: %s at %s, level %s -> retrying at level %s", job.id, message, stage, level, lower)
        manager.lower_floor(spec.id, lower)
        if model is None:  # it ran out while loading: load again, lower
            manager.evict(spec.id)
            continue
        try:
            fastpath.set_level(model, lower, ctx.settings, ctx.device)
            model.level_why = f"lowered after running out of memory at {stage}"
        except ReloadNeeded:
            model = None
            manager.evict(spec.id)  # loaded again at the floor by the next ``ctx.model``
        except Exception as error:  # moving it failed half-way: start clean from the floor
            logger.warning("Job %s: moving %s to %s failed (%s); reloading it.", job.id, spec.title, lower,
                           type(error).__name__)
            model = None
            manager.evict(spec.id)
        free_memory(ctx.device)


def fast_path_record(model, retries: list[dict], denoise_info: dict, changes: list[str]) -> dict:
    """The sidecar's ``fast_path`` section: what ran, what it did, and what changes the output."""
    record = {
        "memory_level": model.level,
        "memory_level_why": model.level_why,
        "out_of_memory_retries": list(retries),
        "attention": model.attention,
        "fused_qkv": bool(model.optimisations.get("fused_qkv")),
        "compile": model.optimisations.get("compile"),
        "fp8_weights": bool(model.optimisations.get("fp8")),
        **denoise_info,
        "changes_output": changes,
    }
    return record


def video_sidecar(task: str, job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path: Path, shape,
                  fast: dict | None = None) -> dict:
    timings = {
        "load": round(ctx.timings.get("load", 0.0), 3) if loaded_now else 0.0,
        "text_encode": round(ctx.timings.get("text_encode", 0.0), 3),
        **{name: round(seconds, 3) for name, seconds in clip_timings.items()},
    }
    return {
        "app": "cinescribe",
        "task": task,
        "job_id": job.id,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "file": Path(video_path).name,
        "settings": settings,
        "model": {
            "id": spec.id,
            "title": spec.title,
            "repo_id": spec.repo_id,
            "revision": model.revision,
            "pipeline": spec.pipeline_class,
            "lora": f"{spec.lora_repo_id}/{spec.lora_weight_name}" if spec.lora_repo_id and not ctx.settings.demo else None,
            "loaded_for_this_job": loaded_now,
            "demo_random_weights": ctx.settings.demo,
            "random_weights": ctx.settings.demo or ctx.settings.random_weights,
        },
        "output": {"frames": int(shape[0]), "height": int(shape[1]), "width": int(shape[2]), "fps": request.fps,
                   "duration_s": round(shape[0] / request.fps, 3)},
        "runtime": {**ctx.environment(), "attention": model.attention},
        "timings_s": timings,
        "peak_memory_gib": round(ctx.peak.peak / 2**30, 3),
        "peak_memory_kind": "torch allocator (VRAM)" if ctx.device.startswith("cuda") else "process RSS (CPU)",
        "fast_path": fast or {},
        "memory_level": model.level,
        "notes": list(request.notes),
    }
