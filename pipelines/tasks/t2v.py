"""Text-to-video: validate a request, run diffusers' ``WanPipeline`` on a resident model, write the clips.

``run_t2v`` reads as the pipeline's stages: load (once, then resident), text encode, denoise (with a
per-step callback for progress, previews and cancel), VAE decode, mp4 encode, sidecar. Around diffusers'
own call sits the fast path (``pipelines.device.fastpath``: cached prompt embeddings, batched guidance, the
opt-in step cache) and the out-of-memory ladder (``video.run_with_memory_ladder``): out of GPU memory,
the clips not yet written are made again one memory level lower.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field

from ..studio.jobs import Job, RequestError, parse_number
from ..scale.parallel import run_parallel
from ..families.catalogue import DEFAULT_MODEL, get_spec
from ..families.spec import DEMO_PRESETS, DEMO_RESOLUTIONS, ModelSpec, frame_size, snap_frames
from .video import (
    DEFAULT_NEGATIVE_PROMPT,
    MAX_CLIPS,
    MAX_PROMPT_CHARS,
    PREVIEW_UPDATES,
    PREVIEW_UPSCALE,
    WAN_TEXT_TOKENS,
    check_step_cache,
    clips_already_written,
    decode_wan_latents,
    encode_cached,
    fast_path_record,
    run_with_memory_ladder,
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
    step_cache: float = 0.0  # first-block cache threshold (0 = off); changes the output
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
        spec = get_spec(request.model if isinstance(request.model, str) else str(request.model))  # a list: no KeyError
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
    except (ValueError, TypeError) as error:
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
    step_cache = check_step_cache(request.step_cache, spec)
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
        step_cache=step_cache,
        width=width,
        height=height,
        notes=list(dict.fromkeys([*request.notes, *notes])),  # validating twice keeps them once
    )


# --- running ----------------------------------------------------------------------------------------


def run_t2v(job: Job, ctx) -> dict:
    """Run a validated ``T2VRequest``; returns the written clips and their sidecars."""
    request: T2VRequest = validate_t2v(job.request, demo=ctx.settings.demo)
    for text in request.notes:
        ctx.note(text)
    spec = get_spec(request.model)
    if (parallel := run_parallel("t2v", job, ctx, request, spec)) is not None:  # --parallel N (pipelines/parallel.py)
        return parallel
    # Kept across out-of-memory retries (and a restart): a retry makes only the clips not yet written.
    clips: list[dict] = clips_already_written(ctx, job)

    def attempt(model, loaded_now, retries):
        _make_clips(job, ctx, request, spec, model, loaded_now, retries, clips)

    run_with_memory_ladder(ctx, job, spec, request, attempt)
    return {"clips": clips, "notes": list(request.notes), "seed": request.seed}


def _make_clips(job: Job, ctx, request: T2VRequest, spec: ModelSpec, model, loaded_now: bool, retries: list,
                clips: list) -> None:
    import torch

    from ..device import fastpath
    from ..media.ffmpeg import encode_comment, write_mp4
    from ..device.memory_levels import JobShape, maybe_inject_oom
    from ..studio.outputs import output_stem, sidecar_path, write_atomic, write_json_atomic
    from ..media.preview import latents_to_rgb

    # 1. Model: resident after the first job.
    pipe = model.pipe
    if not loaded_now:
        logger.info("Job %s: %s already resident, not reloaded", job.id, spec.title)
    set_flow_shift(pipe, request.shift)
    use_guidance = request.guidance > 1.0

    # 2. Text encoding, once for all clips; a prompt seen before comes from the cache.
    def encode():
        with torch.no_grad():
            positive, negative = pipe.encode_prompt(
                prompt=request.prompt, negative_prompt=request.negative_prompt, do_classifier_free_guidance=use_guidance,
                num_videos_per_prompt=1, max_sequence_length=WAN_TEXT_TOKENS, device=pipe._execution_device)
        # in the transformer's dtype already, so the pipeline passes these very tensors on (batched guidance
        # recognises the negative one by identity)
        dtype = fastpath.denoisers(pipe)[0].dtype
        return positive.to(dtype), negative.to(dtype) if negative is not None else None

    with ctx.stage("text_encode"):
        maybe_inject_oom("text_encode")
        (prompt_embeds, negative_embeds), cache_hit = encode_cached(
            ctx, model, request.prompt, request.negative_prompt, use_guidance, WAN_TEXT_TOKENS, encode)
    ctx.check_cancel()
    preset = next((p for p in spec.presets if p.name == request.preset), None)
    changes = fastpath.changes_output(request.step_cache, bool(spec.lora_repo_id or (preset and preset.changes_output)),
                                      model.attention, bool(model.optimisations.get("fp8")))

    preview_every = max(1, request.steps // PREVIEW_UPDATES)
    for index in range(len(clips), request.clips):
        seed = (request.seed + index) % 2**32
        clip_timings: dict[str, float] = {}
        clock = ctx.start_steps(request.steps, clip=index + 1, clips=request.clips)

        # 3. Denoising, with the step callback, inside the fast path.
        started = time.perf_counter()
        with ctx.stage("denoise"), fastpath.denoise_context(
                model, ctx.settings, use_guidance, negative_embeds if use_guidance else None, request.step_cache) as info:
            maybe_inject_oom("denoise")
            timer = info["timer"]

            def on_step(pipeline, step, timestep, tensors):
                timer.tick()
                preview = None
                if (step + 1) % preview_every == 0 or step + 1 == request.steps:
                    preview = latents_to_rgb(tensors["latents"][0].float().cpu().numpy(), upscale=PREVIEW_UPSCALE)
                ctx.step(clock, preview=preview)
                if job.cancelled:
                    pipeline._interrupt = True  # diffusers' contract: the loop stops at the next step
                return {}

            def denoise():
                return pipe(
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

            latents = fastpath.with_compile_fallback(model, denoise)
        clip_timings["denoise"] = time.perf_counter() - started
        ctx.check_cancel()

        # 4. VAE decode: whole, or in tiles when it would not fit.
        shape = JobShape(request.frames, request.height, request.width, use_guidance)
        tiled, tiled_why = fastpath.decode_should_tile(pipe, model.level, shape, ctx.settings, ctx.device)
        started = time.perf_counter()
        with ctx.stage("decode"), fastpath.vae_tiles(pipe, tiled):
            maybe_inject_oom("decode")
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
            "step_cache": request.step_cache,
        }
        started = time.perf_counter()
        with ctx.stage("encode"):
            stem = output_stem(ctx.settings.outputs_dir, "t2v", str(seed), dt.datetime.now())
            video_path = write_atomic(
                stem.with_suffix(".mp4"), lambda temp: write_mp4(frames, temp, request.fps, comment=encode_comment(settings))
            )
        clip_timings["encode"] = time.perf_counter() - started
        fast = fast_path_record(model, retries, {**info, "prompt_cache_hit": cache_hit, "vae_tiled": tiled,
                                                 "vae_tiled_why": tiled_why}, changes)
        sidecar = video_sidecar("t2v", job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path,
                                frames.shape, fast=fast)
        sidecar_file = write_json_atomic(sidecar_path(video_path), sidecar)
        logger.info("Job %s: wrote %s", job.id, video_path)
        clips.append({"video": str(video_path), "sidecar": str(sidecar_file), "seed": seed})
