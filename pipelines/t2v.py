"""Text-to-video: validate a request, run diffusers' ``WanPipeline`` on a resident model, write the clips.

``run_t2v`` reads as the pipeline's stages: load (once, then resident), text encode, denoise (with a
per-step callback for progress, previews and cancel), VAE decode, mp4 encode, sidecar.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field

from .jobs import Job, RequestError, parse_number
from .registry import (
    DEFAULT_MODEL,
    DEMO_PRESETS,
    DEMO_RESOLUTIONS,
    ModelSpec,
    frame_size,
    get_spec,
    snap_frames,
)
from .video import (
    DEFAULT_NEGATIVE_PROMPT,
    MAX_CLIPS,
    MAX_PROMPT_CHARS,
    PREVIEW_UPDATES,
    PREVIEW_UPSCALE,
    WAN_TEXT_TOKENS,
    decode_wan_latents,
    set_flow_shift,
    video_sidecar,
)

logger = logging.getLogger(__name__)


@dataclass
class T2VRequest:
    """Everything that defines a text-to-video job; the sidecar records it whole."""

    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    model: str = DEFAULT_MODEL["t2v"]
    preset: str = ""
    resolution: str = "480p"
    aspect: str = "16:9"
    frames: int = 81
    duration_s: float | None = None  # when given, sets ``frames`` from ``fps``
    steps: int = 30
    guidance: float = 5.0
    shift: float = 3.0
    seed: int = -1
    fps: int = 16
    clips: int = 1
    width: int = 0  # filled by validation
    height: int = 0
    notes: list[str] = field(default_factory=list)


def presets_for(spec: ModelSpec, demo: bool):
    return DEMO_PRESETS if demo else spec.presets


def resolutions_for(spec: ModelSpec, demo: bool) -> tuple[str, ...]:
    return DEMO_RESOLUTIONS if demo else spec.resolutions


def validate_t2v(request: T2VRequest, demo: bool = False) -> T2VRequest:
    """Check and normalise a request before any GPU work; returns a new request with width/height set.

    Hard errors raise ``RequestError`` naming the value; values that can be fixed softly (frame counts
    that must be 4n+1) are rounded with a note.
    """
    notes: list[str] = []
    prompt = (request.prompt or "").strip() if isinstance(request.prompt, str) else ""
    if not prompt:
        raise RequestError("Write a prompt: it is empty.", key="prompt_empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"The prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.", key="prompt_long", limit=MAX_PROMPT_CHARS
        )
    negative = request.negative_prompt if isinstance(request.negative_prompt, str) else ""
    try:
        spec = get_spec(request.model)
    except ValueError as error:
        raise RequestError(str(error), key="model_unknown", model=str(request.model)) from None
    if spec.task != "t2v":
        raise RequestError(f"{spec.title} is not a text-to-video model.", key="model_wrong_task", model=spec.title)
    resolutions = resolutions_for(spec, demo)
    if request.resolution not in resolutions:
        raise RequestError(
            f"{spec.title} offers {', '.join(resolutions)}, not {request.resolution!r}.", key="resolution", value=str(request.resolution)
        )
    multiple = spec.extra.get("size_multiple", 16)
    try:
        width, height = frame_size(request.resolution, request.aspect, multiple)
    except ValueError as error:
        raise RequestError(str(error), key="aspect", value=str(request.aspect)) from None

    fps = parse_number(request.fps, "Frames per second", int, 1, 60, "fps")
    if request.duration_s not in (None, "", 0):
        seconds = parse_number(request.duration_s, "Duration", float, 0.1, spec.max_frames / fps, "duration")
        wanted = max(1, round(seconds * fps))
    else:
        wanted = parse_number(request.frames, "Number of frames", int, 1, spec.max_frames, "frames")
    frames = snap_frames(wanted)
    if frames > spec.max_frames:
        frames -= 4
    if frames != wanted:
        notes.append(f"Wan makes 4n+1 frames: {wanted} became {frames}.")
    steps = parse_number(request.steps, "Steps", int, 1, 200, "steps")
    guidance = parse_number(request.guidance, "Guidance", float, 0.0, 30.0, "guidance")
    shift = parse_number(request.shift, "Flow shift", float, 0.1, 50.0, "shift")
    seed = parse_number(request.seed, "Seed", int, -1, 2**32 - 1, "seed")
    clips = parse_number(request.clips, "Number of clips", int, 1, MAX_CLIPS, "clips")
    if seed == -1:
        seed = secrets.randbelow(2**31)
    return dataclasses.replace(
        request,
        prompt=prompt,
        negative_prompt=negative,
        frames=frames,
        steps=steps,
        guidance=guidance,
        shift=shift,
        seed=seed,
        fps=fps,
        clips=clips,
        width=width,
        height=height,
        notes=list(dict.fromkeys([*request.notes, *notes])),  # validating twice keeps them once
    )


# --- running ----------------------------------------------------------------------------------------


def run_t2v(job: Job, ctx) -> dict:
    """Run a validated ``T2VRequest``; returns the written clips and their sidecars."""
    import torch

    from .media import encode_comment, write_mp4
    from .outputs import output_stem, sidecar_path, write_atomic, write_json_atomic
    from .preview import latents_to_rgb

    request: T2VRequest = validate_t2v(job.request, demo=ctx.settings.demo)
    for text in request.notes:
        ctx.note(text)
    spec = get_spec(request.model)

    # 1. Model: resident after the first job.
    model, loaded_now = ctx.model(spec)
    pipe = model.pipe
    if not loaded_now:
        logger.info("Job %s: %s already resident, not reloaded", job.id, spec.title)
    set_flow_shift(pipe, request.shift)
    use_guidance = request.guidance > 1.0

    # 2. Text encoding, once for all clips.
    with ctx.stage("text_encode"), torch.no_grad():
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            do_classifier_free_guidance=use_guidance,
            num_videos_per_prompt=1,
            max_sequence_length=WAN_TEXT_TOKENS,
        )
    ctx.check_cancel()

    clips = []
    preview_every = max(1, request.steps // PREVIEW_UPDATES)
    for index in range(request.clips):
        seed = (request.seed + index) % 2**32
        clip_timings: dict[str, float] = {}
        clock = ctx.start_steps(request.steps, clip=index + 1, clips=request.clips)

        def on_step(pipeline, step, timestep, tensors):
            preview = None
            if (step + 1) % preview_every == 0 or step + 1 == request.steps:
                preview = latents_to_rgb(tensors["latents"][0].float().cpu().numpy(), upscale=PREVIEW_UPSCALE)
            ctx.step(clock, preview=preview)
            if job.cancelled:
                pipeline._interrupt = True  # diffusers' contract: the loop stops at the next step
            return {}

        # 3. Denoising, with the step callback.
        started = time.perf_counter()
        with ctx.stage("denoise"):
            latents = pipe(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds if use_guidance else None,
                height=request.height,
                width=request.width,
                num_frames=request.frames,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="latent",
                callback_on_step_end=on_step,
                callback_on_step_end_tensor_inputs=["latents"],
            ).frames
        clip_timings["denoise"] = time.perf_counter() - started
        ctx.check_cancel()

        # 4. VAE decode.
        started = time.perf_counter()
        with ctx.stage("decode"):
            frames = decode_wan_latents(pipe, latents)
        del latents
        clip_timings["decode"] = time.perf_counter() - started
        ctx.check_cancel()

        # 5. mp4 and sidecar.
        settings = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "model": spec.id,
            "preset": request.preset,
            "resolution": request.resolution,
            "aspect": request.aspect,
            "width": request.width,
            "height": request.height,
            "frames": request.frames,
            "steps": request.steps,
            "guidance": request.guidance,
            "shift": request.shift,
            "seed": seed,
            "fps": request.fps,
        }
        started = time.perf_counter()
        with ctx.stage("encode"):
            stem = output_stem(ctx.settings.outputs_dir, "t2v", str(seed), dt.datetime.now())
            video_path = write_atomic(
                stem.with_suffix(".mp4"), lambda temp: write_mp4(frames, temp, request.fps, comment=encode_comment(settings))
            )
        clip_timings["encode"] = time.perf_counter() - started
        sidecar = video_sidecar("t2v", job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path, frames.shape)
        sidecar_file = write_json_atomic(sidecar_path(video_path), sidecar)
        logger.info("Job %s: wrote %s", job.id, video_path)
        clips.append({"video": str(video_path), "sidecar": str(sidecar_file), "seed": seed})
    return {"clips": clips, "notes": list(request.notes), "seed": request.seed}
