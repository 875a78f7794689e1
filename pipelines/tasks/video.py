"""What the video tasks (text-to-video, image-to-video) share: the clip loop (``make_clips``: text encode,
denoise, decode, mp4, sidecar, each stage asked of the model's family), cached prompt encoding, the
out-of-memory ladder (``run_with_memory_ladder``), the sidecar, and the i2v input copies."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from pathlib import Path

from ..studio.jobs import RequestError

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 4000
MAX_CLIPS = 16
PREVIEW_UPDATES = 10  # about this many previews per clip
PREVIEW_UPSCALE = 2  # a 480p clip previews as a 2x2 grid of 208x120 frames
MAX_STEP_CACHE = 1.0  # the step cache's threshold: 0 (off) to this


def check_step_cache(value, spec) -> float:
    """The request's step-cache threshold (0 = off), checked: a number in [0, 1], and only for a family
    with the step cache (``STEP_CACHE``)."""
    from ..families.catalogue import family_of
    from ..studio.jobs import parse_number

    threshold = parse_number(value if value not in (None, "") else 0, "Step cache threshold", float, 0.0,
                             MAX_STEP_CACHE, "step_cache")
    if threshold and not family_of(spec).STEP_CACHE:
        raise RequestError(f"The step cache works with Wan models; {spec.title} has no transformer blocks to skip. "
                           "Set it to 0.", key="step_cache_unsupported", model=spec.title)
    return threshold


def check_loras_field(value, spec, settings) -> str:
    """The request's ``loras`` text, checked without reading the folder (``loras.check.check_rules``: the
    text, how many, whether the model and the app take LoRAs) and written the one way (``"name:0.8, other:1"``).
    The files are checked once at submit, by the executor (``check_request``), and again when the job runs."""
    from ..loras.check import canonical_text, check_rules

    check_rules(value, spec, settings)
    return canonical_text(value)


def encode_cached(ctx, model, prompt: str, negative: str | None, guidance: bool, max_length: int, encode,
                  variant: str = ""):
    """``encode()`` (-> positive, negative embeddings) through the prompt cache of the resident models; at the
    memory levels that keep the text encoder in CPU memory, it comes to the GPU for a miss only. ``variant``
    tells apart text encoders changed by LoRAs. Returns ``(embeddings, hit)``."""
    from ..device.memory_levels import text_encoder_on

    cache = ctx.worker.models.prompt_cache
    cache.entries = ctx.settings.prompt_cache
    key = cache.key(model.spec.id + variant, prompt, negative, max_length, model.dtype, ctx.device, guidance)

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


# --- the clips of a job -----------------------------------------------------------------------------------


def make_clips(task: str, job, ctx, request, spec, model, loaded_now: bool, retries: list, clips: list,
               inputs: dict, record, on_written=lambda video_path: {}) -> None:
    """The clips of the job not made yet, on ``model`` at its memory level (see ``run_with_memory_ladder``):
    text encode (once, cached), then per clip denoise (progress, previews, cancel), decode, mp4 and sidecar;
    each stage as the model's family does it (``families/base.py``). ``inputs`` are the pipeline's image
    arguments; ``record(seed)`` the clip's settings; ``on_written(video_path)`` extra sidecar sections."""
    from ..device import fastpath
    from ..device.memory_levels import JobShape, maybe_inject_oom
    from ..families.catalogue import family_of
    from ..loras.check import hashes_text
    from ..media.ffmpeg import encode_comment, write_mp4
    from ..media.preview import latents_to_rgb
    from ..studio.outputs import output_stem, sidecar_path, write_atomic, write_json_atomic

    family = family_of(spec)
    # 1. Model: resident after the first job; the creator's LoRAs as its adapters (loaded once, then switched).
    pipe = model.pipe
    if not loaded_now:
        logger.info("Job %s: %s already resident, not reloaded", job.id, spec.title)
    use_guidance = request.guidance > 1.0
    loras, lora_records, lora_use = use_request_loras(ctx, model, family, spec, request)

    # 2. Text encoding, once for all clips; a prompt seen before comes from the cache.
    variant = "|" + request.loras if loras and any(c.startswith("text_encoder") for c in family.LORA_COMPONENTS) else ""
    with ctx.stage("text_encode"):
        maybe_inject_oom("text_encode")
        embeds, cache_hit = encode_cached(ctx, model, request.prompt, request.negative_prompt, use_guidance,
                                          family.TEXT_TOKENS, lambda: family.encode_prompt(pipe, request, use_guidance),
                                          variant)
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
        with ctx.stage("denoise"), fastpath.denoise_context(model, ctx.settings, use_guidance,
                                                            embeds[1] if use_guidance else None, request.step_cache,
                                                            family) as info:
            maybe_inject_oom("denoise")
            timer = info["timer"]

            def on_latents(latents):
                timer.tick()
                preview = None
                if (clock.done + 1) % preview_every == 0 or clock.done + 1 == request.steps:
                    preview = latents_to_rgb(latents.float().cpu().numpy(), upscale=PREVIEW_UPSCALE,
                                             factors=family.PREVIEW_RGB)
                ctx.step(clock, preview=preview)

            latents = fastpath.with_compile_fallback(
                model, lambda: family.denoise(pipe, request, embeds, seed, on_latents, job, inputs))
        clip_timings["denoise"] = time.perf_counter() - started
        ctx.check_cancel(clock)  # all steps ran: Stop keeps the clip

        # 4. VAE decode: whole, or in tiles when it would not fit.
        shape = JobShape(request.frames, request.height, request.width, use_guidance)
        tiled, tiled_why = fastpath.decode_should_tile(pipe, model.level, shape, ctx.settings, ctx.device, family)
        started = time.perf_counter()
        with ctx.stage("decode"):
            maybe_inject_oom("decode")
            frames = family.decode(pipe, latents, tiled)
            # a family that makes sound too: (samples (channels, n), sample rate) for the mp4's AAC track
            audio = family.decode_audio(pipe, latents) if hasattr(family, "decode_audio") else None
        del latents
        clip_timings["decode"] = time.perf_counter() - started
        ctx.check_cancel(clock)

        # 5. mp4 (and what goes with it) and sidecar.
        settings = {**record(seed), "loras": lora_records}
        if lora_records:
            settings["lora_hashes"] = hashes_text(lora_records)
        started = time.perf_counter()
        with ctx.stage("encode"):
            stem = output_stem(ctx.settings.outputs_dir, task, str(seed), dt.datetime.now())
            video_path = write_atomic(
                stem.with_suffix(".mp4"), lambda temp: write_mp4(frames, temp, request.fps, comment=encode_comment(settings),
                                                        audio=audio)
            )
            extra = on_written(video_path)
        clip_timings["encode"] = time.perf_counter() - started
        fast = fast_path_record(model, retries, {**info, "prompt_cache_hit": cache_hit, "vae_tiled": tiled,
                                                 "vae_tiled_why": tiled_why}, changes)
        sidecar = video_sidecar(task, job, ctx, request, spec, model, loaded_now, settings, clip_timings, video_path,
                                frames.shape, fast=fast)
        sidecar["output"]["has_audio"] = audio is not None
        if lora_use is not None:
            sidecar["loras"] = lora_use
            sidecar["timings_s"]["loras"] = lora_use["seconds"] if index == 0 else 0.0
        sidecar.update(extra)
        sidecar_file = write_json_atomic(sidecar_path(video_path), sidecar)
        logger.info("Job %s: wrote %s", job.id, video_path)
        clips.append({"video": str(video_path), "sidecar": str(sidecar_file), "seed": seed})
        if job.cancelled:  # Stop came while this clip was finishing: it is kept, no further clip starts
            break


def use_request_loras(ctx, model, family, spec, request) -> tuple[list, list[dict], dict | None]:
    """The request's LoRAs made the active adapters of ``model`` (a job without them turns loaded ones off):
    ``(chosen, records for the clip's settings, the sidecar's "loras" section or None)``."""
    from ..device import lora_compile
    from ..loras.adapters import adapter_name, use_loras
    from ..loras.check import check_loras, record

    chosen = check_loras(request.loras, spec, ctx.settings)  # again: a file may have changed since submit
    if not chosen and not model.loras:
        lora_compile.decide(model, [])
        return [], [], None
    used = use_loras(model, family, chosen, ctx.settings)
    compiled = lora_compile.decide(model, [adapter_name(c) for c in chosen])  # --compile: compiled, or eager
    records = record(chosen, ctx.settings)
    status = {name: "loaded" for name in used["loaded"]} | {name: "reused" for name in used["reused"]}
    section = {"adapters": [{**entry, "layout": c.info.layout, "adapter": status.get(c.name, "")}
                            for entry, c in zip(records, chosen)],
               **{key: used[key] for key in ("loaded", "reused", "unloaded", "idle", "seconds")}, "compile": compiled}
    return chosen, records, section


# --- image to video's record and input copies (the local and the context-parallel path share them) ------

_INPUT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "DIB": ".bmp",
                 "GIF": ".gif", "TIFF": ".tif"}


def i2v_settings(request, spec, seed: int, image, last) -> dict:
    """What made an image-to-video clip (the sidecar's ``settings``, the mp4's comment)."""
    return {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "model": spec.id,
        "preset": request.preset, "resolution": request.resolution, "aspect": request.aspect, "fit": request.fit,
        "width": request.width, "height": request.height, "frames": request.frames, "steps": request.steps,
        "guidance": request.guidance, "shift": request.shift, "seed": seed, "fps": request.fps,
        "step_cache": request.step_cache, "image_sha256": image.sha256,
        "last_image_sha256": last.sha256 if last else None,
    }


def copy_inputs(video_path: Path, image, last, write_atomic) -> dict:
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


def input_records(request, image, last, copies: dict) -> dict:
    """The sidecar's ``input`` (and ``last_frame``) sections of an image-to-video clip."""
    records = {"input": {**image.record(), "copy": copies["image"]["copy"], "fit": request.fit,
                         "used_width": request.width, "used_height": request.height}}
    if last is not None:
        records["last_frame"] = {**last.record(), "copy": copies["last_frame"]["copy"]}
    return records
