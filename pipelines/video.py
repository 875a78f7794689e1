"""What the video tasks (text-to-video, image-to-video) share: Wan's defaults, latent decoding, the sidecar."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

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


def video_sidecar(task: str, job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path: Path, shape) -> dict:
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
        "notes": list(request.notes),
    }
