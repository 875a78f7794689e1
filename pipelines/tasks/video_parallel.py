"""A t2v or i2v job across the ranks of a context-parallel model (``--parallel N``, ``scale.parallel``):
text encode on rank 0, denoise on every rank, decode on rank 0, then the mp4 and sidecar as for a local job."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from ..scale.parallel import plan

logger = logging.getLogger(__name__)


def run_parallel(task: str, job, ctx, request, spec, image=None, last=None) -> dict | None:
    """Run a validated t2v or Wan i2v request across the ranks; None when it runs on one GPU instead
    (the caller then goes on as usual). Stages, timings, progress, previews, cancel, the clip and its
    sidecar are those of a local job; the sidecar adds ``parallel``."""
    world, why = plan(ctx.settings, spec, ctx.device)
    if world == 1:
        if why:
            logger.warning("Job %s: %s", job.id, why)
            ctx.note(why)
        return None

    from ..families.catalogue import family_of
    from ..media.ffmpeg import encode_comment, write_mp4
    from ..studio.outputs import output_stem, sidecar_path, write_atomic, write_json_atomic
    from .video import PREVIEW_UPDATES, PREVIEW_UPSCALE, copy_inputs, input_records, video_sidecar

    model, loaded_now = ctx.model(spec)
    runner = model.pipe  # a scale.parallel.ParallelPipeline
    if not loaded_now:
        logger.info("Job %s: %s already resident on %d ranks, not reloaded", job.id, spec.title, runner.world)
    tokens, uneven = runner.split(request.frames, request.height, request.width)
    if getattr(request, "step_cache", 0):
        ctx.note("The step cache does not run across ranks yet: this clip is made without it.")
    use_guidance = request.guidance > 1.0
    inputs: dict[str, Any] = {}
    if task == "i2v":
        from ..media.images import fit_image

        size = (request.width, request.height)
        inputs["image"] = fit_image(image.image, size, request.fit)
        if last is not None:
            inputs["last_image"] = fit_image(last.image, size, request.fit)

    # 1. Text encoding on rank 0, once for all clips.
    with ctx.stage("text_encode"):
        positive, negative = runner.encode(prompt=request.prompt, negative_prompt=request.negative_prompt,
                                           do_classifier_free_guidance=use_guidance, num_videos_per_prompt=1,
                                           max_sequence_length=family_of(spec).TEXT_TOKENS)
    ctx.check_cancel()

    clips: list[dict] = []
    copies: dict = {}
    preview_every = max(1, request.steps // PREVIEW_UPDATES)
    for index in range(request.clips):
        seed = (request.seed + index) % 2**32
        clip_timings: dict[str, float] = {}
        clock = ctx.start_steps(request.steps, clip=index + 1, clips=request.clips)

        def on_step(step, preview):
            ctx.step(clock, preview=preview)
            return job.cancelled  # True: every rank stops at this step

        # 2. Denoising on every rank, the same inputs.
        kwargs = {
            **inputs,
            "prompt_embeds": positive,
            "negative_prompt_embeds": negative if use_guidance else None,
            "height": request.height,
            "width": request.width,
            "num_frames": request.frames,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
        }
        started = time.perf_counter()
        with ctx.stage("denoise"):
            runner.denoise(kwargs, seed, request.shift, uneven, preview_every, on_step, PREVIEW_UPSCALE)
        clip_timings["denoise"] = time.perf_counter() - started
        ctx.check_cancel()

        # 3. VAE decode on rank 0.
        started = time.perf_counter()
        with ctx.stage("decode"):
            frames = runner.decode()
        clip_timings["decode"] = time.perf_counter() - started
        ctx.check_cancel()

        # 4. mp4 and sidecar.
        settings = _clip_settings(task, request, spec, seed, image, last)
        started = time.perf_counter()
        with ctx.stage("encode"):
            stem = output_stem(ctx.settings.outputs_dir, task, str(seed), dt.datetime.now())
            video_path = write_atomic(stem.with_suffix(".mp4"),
                                      lambda temp: write_mp4(frames, temp, request.fps, comment=encode_comment(settings)))
            if task == "i2v" and not copies:
                copies = copy_inputs(video_path, image, last, write_atomic)
        clip_timings["encode"] = time.perf_counter() - started
        sidecar = video_sidecar(task, job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path,
                                frames.shape)
        sidecar["parallel"] = runner.record(tokens, uneven)
        if task == "i2v":
            sidecar.update(input_records(request, image, last, copies))
        sidecar_file = write_json_atomic(sidecar_path(video_path), sidecar)
        logger.info("Job %s: wrote %s (%d ranks, %s)", job.id, video_path, runner.world, runner.mode.label)
        clips.append({"video": str(video_path), "sidecar": str(sidecar_file), "seed": seed})
    result = {"clips": clips, "notes": list(request.notes), "seed": request.seed}
    if task == "i2v":
        result.update(input=copies["image"]["path"], size=[request.width, request.height])
    return result


def _clip_settings(task: str, request, spec, seed: int, image, last) -> dict:
    """What made the clip, as the local task records it: i2v's own record; for t2v every request field
    but the bookkeeping ones (so a field added to ``T2VRequest`` is recorded here too)."""
    if task == "i2v":
        from .video import i2v_settings

        return i2v_settings(request, spec, seed, image, last)
    record = {name: value for name, value in dataclasses.asdict(request).items()
              if name not in ("notes", "clips", "duration_s")}
    record.update(model=spec.id, seed=seed)
    return record
