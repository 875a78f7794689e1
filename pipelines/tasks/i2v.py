"""Image-to-video: validate a request and its image, run I2VGen-XL or Wan image-to-video, write the clips.

``run_i2v`` reads as the stages of the pipelines: load (once, then resident), text encode, denoise (with
progress, previews and cancel at every step), VAE decode, mp4 encode, sidecar, and a copy of the input
image next to the first clip.

Two pipelines, one contract:

- ``WanImageToVideoPipeline`` has ``callback_on_step_end`` and the ``_interrupt`` flag, used as in T2V.
- ``I2VGenXLPipeline`` has neither. For each job its scheduler is replaced by a fresh copy whose ``step``
  reports the step (and a preview) and raises ``JobCancelled`` when the job is cancelled; the resident
  pipeline gets its own scheduler back afterwards, whatever happened. The scheduler steps once per
  denoising step (the UNet runs on a doubled batch with guidance, still once per step), so the bar
  counts steps. Its prompt is encoded here (CLIP's penultimate layer, as the pipeline's default
  ``clip_skip=1`` does): the pipeline's own code for that reaches for ``text_encoder.text_model``,
  which transformers 5 no longer has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..media.images import FITS, InputImage, aspect_value, fit_image, load_image, output_size
from ..studio.jobs import Job, JobCancelled, RequestError, parse_number
from ..scale.parallel import run_parallel
from ..families.catalogue import DEFAULT_MODEL, get_spec
from ..families.spec import DEMO_I2V_RESOLUTIONS, I2V_MAX_AREA, ModelSpec, VideoPreset, demo_i2v_presets, snap_frames
from .video import DEFAULT_NEGATIVE_PROMPT as WAN_NEGATIVE_PROMPT
from .video import (
    MAX_CLIPS,
    MAX_PROMPT_CHARS,
    PREVIEW_UPDATES,
    PREVIEW_UPSCALE,
    check_step_cache,
    clips_already_written,
    encode_cached,
    fast_path_record,
    run_with_memory_ladder,
    video_sidecar,
)

logger = logging.getLogger(__name__)

# I2VGen-XL's negative prompt from its model card.
I2VGEN_NEGATIVE_PROMPT = (
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, disconnected limbs, "
    "Ugly faces, incomplete arms"
)
ASPECTS = ("image", "16:9", "9:16", "1:1", "4:3", "3:4")
_INPUT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "DIB": ".bmp",
                 "GIF": ".gif", "TIFF": ".tif"}


@dataclass
class I2VRequest:
    """Everything that defines an image-to-video job. Values left ``None`` come from the preset (or the
    model's default preset); validation fills them, and ``width``/``height``."""

    image: str | None  # path of the input image
    prompt: str
    negative_prompt: str | None = None  # None: the model's own
    model: str = DEFAULT_MODEL["i2v"]
    preset: str = ""
    resolution: str = ""
    aspect: str = "image"  # "image" keeps the image's aspect ratio; or "16:9", "1:1", ...
    fit: str = "crop"  # how the image meets the frame when the ratios differ: "crop" or "pad"
    frames: int | None = None
    duration_s: float | None = None  # when given, sets ``frames`` from ``fps``
    steps: int | None = None
    guidance: float | None = None
    shift: float | None = None  # flow shift (Wan); I2VGen-XL's DDIM has none
    seed: int = -1
    fps: int | None = None
    clips: int = 1
    last_image: str | None = None  # optional last frame (models with ``last_frame``)
    step_cache: float = 0.0  # first-block cache threshold (0 = off; Wan only); changes the output
    width: int = 0  # filled by validation
    height: int = 0
    notes: list[str] = field(default_factory=list)


def family(spec: ModelSpec) -> str:
    return spec.extra.get("family", "wan")


def presets_for(spec: ModelSpec, demo: bool) -> tuple[VideoPreset, ...]:
    return demo_i2v_presets(spec) if demo else spec.presets


def resolutions_for(spec: ModelSpec, demo: bool) -> tuple[str, ...]:
    return DEMO_I2V_RESOLUTIONS if demo else spec.resolutions


def preset_for(spec: ModelSpec, name: str, demo: bool) -> VideoPreset:
    presets = presets_for(spec, demo)
    return next((p for p in presets if p.name == name), None) or next(
        (p for p in presets if p.name == spec.default_preset), presets[0]
    )


def default_negative_prompt(spec: ModelSpec) -> str:
    return I2VGEN_NEGATIVE_PROMPT if family(spec) == "i2vgen" else WAN_NEGATIVE_PROMPT


def uses_flow_shift(spec: ModelSpec) -> bool:
    return family(spec) == "wan"


def check_i2v(request: I2VRequest, demo: bool = False) -> tuple[I2VRequest, InputImage, InputImage | None]:
    """Check and normalise a request before any GPU work; returns it complete, with the decoded image(s).

    Hard errors raise ``RequestError`` naming the value; frame counts Wan cannot make are rounded with
    a note.
    """
    notes: list[str] = []
    prompt = request.prompt.strip() if isinstance(request.prompt, str) else ""
    if not prompt:
        raise RequestError("Write a prompt: it is empty.", key="prompt_empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"The prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.", key="prompt_long", limit=MAX_PROMPT_CHARS
        )
    try:
        spec = get_spec(request.model if isinstance(request.model, str) else str(request.model))  # a list: no KeyError
    except ValueError as error:
        raise RequestError(str(error), key="i2v_model_unknown", model=str(request.model)) from None
    if spec.task != "i2v":
        raise RequestError(f"{spec.title} is not an image-to-video model.", key="i2v_model_wrong_task", model=spec.title)
    preset = preset_for(spec, request.preset, demo)
    negative = request.negative_prompt if isinstance(request.negative_prompt, str) else default_negative_prompt(spec)

    resolution = request.resolution or preset.resolution
    resolutions = resolutions_for(spec, demo)
    if resolution not in resolutions:
        raise RequestError(f"{spec.title} offers {', '.join(resolutions)}, not {resolution!r}.", key="i2v_resolution",
                           model=spec.title, value=str(resolution), allowed=", ".join(resolutions))
    fit = request.fit or "crop"
    if fit not in FITS:
        raise RequestError(f"Fit must be crop or pad, not {fit!r}.", key="i2v_fit", value=str(fit))
    aspect = request.aspect or "image"
    if aspect not in ASPECTS:
        raise RequestError(f"Aspect ratio must be one of {', '.join(ASPECTS)}, not {aspect!r}.", key="i2v_aspect",
                           value=str(aspect))

    image = load_image(request.image, "image")
    last = None
    if request.last_image not in (None, ""):
        if not spec.extra.get("last_frame"):
            raise RequestError(f"{spec.title} cannot end on a given last frame; remove it or pick a model that can.",
                               key="i2v_last_frame_unsupported", model=spec.title)
        last = load_image(request.last_image, "last_frame")

    ratio = aspect_value(aspect, image.width, image.height)
    width, height = output_size(ratio, I2V_MAX_AREA[resolution], spec.extra.get("size_multiple", 16))
    if aspect == "image" and abs(ratio - image.height / image.width) > 1e-6:
        notes.append(f"The image is {image.width} x {image.height}: too far from square for a clip, so it is "
                     f"{'cropped' if fit == 'crop' else 'padded'} to {width} x {height}.")

    fps = parse_number(request.fps if request.fps not in (None, "", 0) else spec.fps, "Frames per second", int, 1, 60, "fps")
    wan = family(spec) == "wan"
    lowest = 5 if wan else 2
    if request.duration_s not in (None, "", 0):
        seconds = parse_number(request.duration_s, "Duration", float, lowest / fps, spec.max_frames / fps, "duration")
        wanted = max(lowest, round(seconds * fps))
    else:
        frames_in = request.frames if request.frames not in (None, "") else preset.frames
        wanted = parse_number(frames_in, "Number of frames", int, lowest, spec.max_frames, "frames")
    frames = wanted
    if wan:
        frames = snap_frames(wanted)
        if frames > spec.max_frames:
            frames -= 4
        if frames != wanted:
            notes.append(f"Wan makes 4n+1 frames: {wanted} became {frames}.")
    steps = parse_number(request.steps if request.steps not in (None, "") else preset.steps, "Steps", int, 1, 200, "steps")
    guidance = parse_number(request.guidance if request.guidance not in (None, "") else preset.guidance, "Guidance", float,
                       0.0, 30.0, "guidance")
    if uses_flow_shift(spec):
        shift = parse_number(request.shift if request.shift not in (None, "") else preset.shift, "Flow shift", float, 0.1,
                        50.0, "shift")
    else:
        shift = None
    seed = parse_number(request.seed if request.seed not in (None, "") else -1, "Seed", int, -1, 2**32 - 1, "seed")
    clips = parse_number(request.clips, "Number of clips", int, 1, MAX_CLIPS, "clips")
    step_cache = check_step_cache(request.step_cache, spec)
    if seed == -1:
        seed = secrets.randbelow(2**31)
    checked = dataclasses.replace(
        request, prompt=prompt, negative_prompt=negative, preset=request.preset or "", resolution=resolution,
        aspect=aspect, fit=fit, frames=frames, duration_s=None, steps=steps, guidance=guidance, shift=shift, seed=seed,
        fps=fps, clips=clips, step_cache=step_cache, width=width, height=height,
        notes=list(dict.fromkeys([*request.notes, *notes])),
    )
    return checked, image, last


def validate_i2v(request: I2VRequest, demo: bool = False) -> I2VRequest:
    """``check_i2v`` without the decoded images: the request as the job will run it."""
    return check_i2v(request, demo)[0]


# --- running ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def scheduler_step_hook(pipe, after_step):
    """While inside, ``pipe`` denoises with a fresh copy of its scheduler that calls ``after_step(output)``
    after every ``step``; the pipeline's own scheduler is put back on the way out, even on an exception.

    ``functools.wraps`` keeps ``step``'s signature visible, so the pipeline still passes ``eta`` and
    ``generator`` to it.
    """
    original = pipe.scheduler
    scheduler = type(original).from_config(original.config)
    inner = scheduler.step

    @functools.wraps(inner)
    def step(*args, **kwargs):
        output = inner(*args, **kwargs)
        after_step(output)
        return output

    scheduler.step = step
    pipe.scheduler = scheduler
    try:
        yield scheduler
    finally:
        pipe.scheduler = original


def _clip_prompt_embeds(pipe, texts: list[str], device):
    """I2VGen-XL's text conditioning: CLIP's penultimate hidden layer through its final layer norm."""
    tokens = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                            return_tensors="pt")
    encoder = pipe.text_encoder
    hidden = encoder(tokens.input_ids.to(device), output_hidden_states=True).hidden_states[-2]
    norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 4 nests it, 5 does not
    return norm(hidden).to(dtype=encoder.dtype, device=device)


def _encode_prompt(pipe, spec: ModelSpec, request: I2VRequest, use_guidance: bool):
    import torch

    with torch.no_grad():
        if family(spec) == "i2vgen":
            device = pipe._execution_device
            positive = _clip_prompt_embeds(pipe, [request.prompt], device)
            negative = _clip_prompt_embeds(pipe, [request.negative_prompt or ""], device) if use_guidance else None
            return positive, negative
        positive, negative = pipe.encode_prompt(prompt=request.prompt, negative_prompt=request.negative_prompt,
                                                do_classifier_free_guidance=use_guidance, num_videos_per_prompt=1,
                                                max_sequence_length=512, device=pipe._execution_device)
    # in the transformer's dtype already, so the pipeline passes these very tensors on (batched guidance
    # recognises the negative one by identity)
    dtype = (pipe.transformer or pipe.transformer_2).dtype
    return positive.to(dtype), negative.to(dtype) if negative is not None else None


def _decode_i2vgen(pipe, latents, chunk: int):
    """Latents -> uint8 frames (F, H, W, 3), as ``I2VGenXLPipeline`` decodes them."""
    import numpy as np
    import torch

    latents = latents.to(pipe._execution_device, pipe.vae.dtype)
    with torch.no_grad():
        video = pipe.decode_latents(latents, decode_chunk_size=chunk)
    frames = pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def _denoise(pipe, spec: ModelSpec, request: I2VRequest, embeds, frame, last_frame, seed: int, on_latents, job: Job):
    """Run the pipeline's denoising loop to latents; ``on_latents(latents (C, F, h, w))`` once per step."""
    import torch

    positive, negative = embeds
    use_guidance = request.guidance > 1.0
    generator = torch.Generator("cpu").manual_seed(seed)
    if family(spec) == "i2vgen":

        def after_step(output):
            latents = output.prev_sample if hasattr(output, "prev_sample") else output[0]
            # the loop steps (frames, C, h, w); one video: back to (C, frames, h, w)
            on_latents(latents.reshape(request.frames, *latents.shape[1:]).transpose(0, 1))
            if job.cancelled:
                raise JobCancelled()  # no interrupt flag in this pipeline: leave its loop from the step

        torch.manual_seed(seed)  # its VAE samples the image latents from the global generator
        with scheduler_step_hook(pipe, after_step):
            return pipe(
                image=frame, prompt_embeds=positive, negative_prompt_embeds=negative if use_guidance else None,
                height=request.height, width=request.width, target_fps=request.fps, num_frames=request.frames,
                num_inference_steps=request.steps, guidance_scale=request.guidance, generator=generator,
                output_type="latent",
            ).frames

    def on_step(pipeline, step, timestep, tensors):
        on_latents(tensors["latents"][0])
        if job.cancelled:
            pipeline._interrupt = True  # diffusers' contract: the loop stops at the next step
        return {}

    extra = {"last_image": last_frame} if last_frame is not None else {}
    return pipe(
        image=frame, prompt_embeds=positive, negative_prompt_embeds=negative if use_guidance else None,
        height=request.height, width=request.width, num_frames=request.frames, num_inference_steps=request.steps,
        guidance_scale=request.guidance, generator=generator, output_type="latent", callback_on_step_end=on_step,
        callback_on_step_end_tensor_inputs=["latents"], **extra,
    ).frames


def run_i2v(job: Job, ctx) -> dict:
    """Run an ``I2VRequest``; returns the written clips, their sidecars and the input copy."""
    request, image, last = check_i2v(job.request, demo=ctx.settings.demo)
    for text in request.notes:
        ctx.note(text)
    spec = get_spec(request.model)
    if (parallel := run_parallel("i2v", job, ctx, request, spec, image, last)) is not None:  # --parallel N
        return parallel
    frame = fit_image(image.image, (request.width, request.height), request.fit)
    last_frame = fit_image(last.image, (request.width, request.height), request.fit) if last else None

    # Kept across out-of-memory retries (and a restart): a retry makes only the clips not yet written.
    clips: list[dict] = clips_already_written(ctx, job)
    inputs: dict[str, dict] = {}

    def attempt(model, loaded_now, retries):
        _make_clips(job, ctx, request, spec, image, last, frame, last_frame, model, loaded_now, retries, clips, inputs)

    run_with_memory_ladder(ctx, job, spec, request, attempt)
    return {
        "clips": clips,
        "notes": list(request.notes),
        "seed": request.seed,
        "input": inputs["image"]["path"],
        "size": [request.width, request.height],
    }


def _make_clips(job: Job, ctx, request: I2VRequest, spec: ModelSpec, image: InputImage, last: InputImage | None, frame,
                last_frame, model, loaded_now: bool, retries: list, clips: list, inputs: dict) -> None:
    """The clips of the job not made yet, on ``model``, at its memory level (see ``run_with_memory_ladder``)."""
    from ..device import fastpath
    from ..media.ffmpeg import encode_comment, write_mp4
    from ..device.memory_levels import JobShape, maybe_inject_oom
    from ..studio.outputs import output_stem, sidecar_path, write_atomic, write_json_atomic
    from ..media.preview import latents_to_rgb
    from .video import decode_wan_latents, set_flow_shift

    # 1. Model: resident after the first job.
    pipe = model.pipe
    if not loaded_now:
        logger.info("Job %s: %s already resident, not reloaded", job.id, spec.title)
    if request.shift is not None:
        set_flow_shift(pipe, request.shift)
    use_guidance = request.guidance > 1.0

    # 2. Text encoding, once for all clips; a prompt seen before comes from the cache.
    with ctx.stage("text_encode"):
        maybe_inject_oom("text_encode")
        tokens = 77 if family(spec) == "i2vgen" else 512
        embeds, cache_hit = encode_cached(ctx, model, request.prompt, request.negative_prompt, use_guidance, tokens,
                                          lambda: _encode_prompt(pipe, spec, request, use_guidance))
    ctx.check_cancel()
    preset = next((p for p in spec.presets if p.name == request.preset), None)
    changes = fastpath.changes_output(request.step_cache, bool(spec.lora_repo_id or (preset and preset.changes_output)),
                                      model.attention, bool(model.optimisations.get("fp8")))

    preview_every = max(1, request.steps // PREVIEW_UPDATES)
    for index in range(len(clips), request.clips):
        seed = (request.seed + index) % 2**32
        clip_timings: dict[str, float] = {}
        clock = ctx.start_steps(request.steps, clip=index + 1, clips=request.clips)

        # 3. Denoising, with progress, previews and cancel at every step, inside the fast path.
        started = time.perf_counter()
        negative = embeds[1] if use_guidance and family(spec) == "wan" else None
        with ctx.stage("denoise"), fastpath.denoise_context(model, ctx.settings, use_guidance, negative,
                                                            request.step_cache) as info:
            maybe_inject_oom("denoise")
            timer = info["timer"]

            def on_latents(latents):
                timer.tick()
                preview = None
                if (clock.done + 1) % preview_every == 0 or clock.done + 1 == request.steps:
                    preview = latents_to_rgb(latents.float().cpu().numpy(), upscale=PREVIEW_UPSCALE)
                ctx.step(clock, preview=preview)

            latents = fastpath.with_compile_fallback(
                model, lambda: _denoise(pipe, spec, request, embeds, frame, last_frame, seed, on_latents, job))
        clip_timings["denoise"] = time.perf_counter() - started
        ctx.check_cancel()

        # 4. VAE decode: whole, or in tiles (I2VGen-XL: a frame at a time) when it would not fit.
        shape = JobShape(request.frames, request.height, request.width, use_guidance)
        tiled, tiled_why = fastpath.decode_should_tile(pipe, model.level, shape, ctx.settings, ctx.device)
        started = time.perf_counter()
        with ctx.stage("decode"):
            maybe_inject_oom("decode")
            if family(spec) == "i2vgen":
                frames = _decode_i2vgen(pipe, latents, chunk=1 if tiled else request.frames)
            else:
                with fastpath.vae_tiles(pipe, tiled):
                    frames = decode_wan_latents(pipe, latents)
        del latents
        clip_timings["decode"] = time.perf_counter() - started
        ctx.check_cancel()

        # 5. mp4, the input copy (once), sidecar.
        settings = _settings(request, spec, seed, image, last)
        started = time.perf_counter()
        with ctx.stage("encode"):
            stem = output_stem(ctx.settings.outputs_dir, "i2v", str(seed), dt.datetime.now())
            video_path = write_atomic(
                stem.with_suffix(".mp4"), lambda temp: write_mp4(frames, temp, request.fps, comment=encode_comment(settings))
            )
            if not inputs:
                inputs.update(_copy_inputs(video_path, image, last, write_atomic))
        clip_timings["encode"] = time.perf_counter() - started
        fast = fast_path_record(model, retries, {**info, "prompt_cache_hit": cache_hit, "vae_tiled": tiled,
                                                 "vae_tiled_why": tiled_why}, changes)
        sidecar = video_sidecar("i2v", job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path,
                                frames.shape, fast=fast)
        sidecar["input"] = {**image.record(), "copy": inputs["image"]["copy"], "fit": request.fit,
                            "used_width": request.width, "used_height": request.height}
        if last is not None:
            sidecar["last_frame"] = {**last.record(), "copy": inputs["last_frame"]["copy"]}
        sidecar_file = write_json_atomic(sidecar_path(video_path), sidecar)
        logger.info("Job %s: wrote %s", job.id, video_path)
        clips.append({"video": str(video_path), "sidecar": str(sidecar_file), "seed": seed})


def _settings(request: I2VRequest, spec: ModelSpec, seed: int, image: InputImage, last: InputImage | None) -> dict:
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "model": spec.id,
        "preset": request.preset,
        "resolution": request.resolution,
        "aspect": request.aspect,
        "fit": request.fit,
        "width": request.width,
        "height": request.height,
        "frames": request.frames,
        "steps": request.steps,
        "guidance": request.guidance,
        "shift": request.shift,
        "seed": seed,
        "fps": request.fps,
        "step_cache": request.step_cache,
        "image_sha256": image.sha256,
        "last_image_sha256": last.sha256 if last else None,
    }


def _copy_inputs(video_path: Path, image: InputImage, last: InputImage | None, write_atomic) -> dict:
    """The input file(s), byte for byte, next to the clip: ``<clip stem>_input.<ext>`` (and ``_last``)."""
    copies = {}
    for kind, source in (("image", image), ("last_frame", last)):
        if source is None:
            continue
        suffix = _INPUT_SUFFIX.get(source.format, Path(source.name).suffix or ".img")
        tag = "input" if kind == "image" else "last"
        path = write_atomic(video_path.with_name(f"{video_path.stem}_{tag}{suffix}"),
                            lambda temp, src=source.path: shutil.copyfile(src, temp))
        copies[kind] = {"path": str(path), "copy": path.name}
    return copies
