"""Text-to-video: validate a request, run the model's diffusers pipeline on a resident model, write the clips.

``run_t2v`` reads as the pipeline's stages: load (once, then resident), text encode, denoise (with a
per-step callback for progress, previews and cancel), VAE decode, mp4 encode, sidecar. Around diffusers'
own call sits the fast path (``pipelines.device.fastpath``: cached prompt embeddings, batched guidance, the
opt-in step cache) and the out-of-memory ladder (``video.run_with_memory_ladder``): out of GPU memory,
the clips not yet written are made again one memory level lower.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass, field

from ..studio.jobs import Job, RequestError, parse_number
from .video_parallel import run_parallel
from ..families.base import size_multiple
from ..families.catalogue import DEFAULT_MODEL, family_of, get_spec
from ..families.spec import DEMO_PRESETS, DEMO_RESOLUTIONS, ModelSpec, frame_size
from .video import (MAX_CLIPS, MAX_PROMPT_CHARS, check_loras_field, check_step_cache, clips_already_written, make_clips,
                    run_with_memory_ladder)

logger = logging.getLogger(__name__)

# The default model's own negative prompt (its family's, which it was tuned with).
DEFAULT_NEGATIVE_PROMPT = family_of(DEFAULT_MODEL["t2v"]).NEGATIVE_PROMPT


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
    loras: str = ""  # creators' LoRAs, "name[.safetensors][:strength], ..." (pipelines/loras); "" = none
    width: int = 0  # filled by validation
    height: int = 0
    notes: list[str] = field(default_factory=list)


def presets_for(spec: ModelSpec, demo: bool):
    return DEMO_PRESETS if demo else spec.presets


def resolutions_for(spec: ModelSpec, demo: bool) -> tuple[str, ...]:
    return DEMO_RESOLUTIONS if demo else spec.resolutions


def validate_t2v(request: T2VRequest, demo: bool = False, settings=None) -> T2VRequest:
    """Check and normalise a request before any GPU work; returns a new request with width/height set.

    Hard errors raise ``RequestError`` naming the value; values that can be fixed softly (frame counts
    that must be 4n+1) are rounded with a note. The ``loras`` text is checked and written one way, without
    reading the LoRA folder (with ``settings``, --fp8 and --parallel refuse LoRAs too); the files are checked
    at submit by the executor (``loras.check.check_request``).
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
    family = family_of(spec)
    multiple = size_multiple(family, spec)
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
    frames, note = family.fit_frames(spec, wanted)
    if note:
        notes.append(note)
    steps = parse_number(request.steps, "Steps", int, 1, 200, "steps")
    guidance = parse_number(request.guidance, "Guidance", float, 0.0, 30.0, "guidance")
    shift = parse_number(request.shift, "Flow shift", float, 0.1, 50.0, "shift")
    seed = parse_number(request.seed, "Seed", int, -1, 2**32 - 1, "seed")
    clips = parse_number(request.clips, "Number of clips", int, 1, MAX_CLIPS, "clips")
    step_cache = check_step_cache(request.step_cache, spec)
    loras = check_loras_field(request.loras, spec, settings)
    if seed == -1:
        seed = secrets.randbelow(2**31)
    return dataclasses.replace(
        request,
        loras=loras,
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
    request: T2VRequest = validate_t2v(job.request, demo=ctx.settings.demo, settings=ctx.settings)
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
    def record(seed: int) -> dict:
        return {
            "prompt": request.prompt, "negative_prompt": request.negative_prompt, "model": spec.id,
            "preset": request.preset, "resolution": request.resolution, "aspect": request.aspect,
            "width": request.width, "height": request.height, "frames": request.frames, "steps": request.steps,
            "guidance": request.guidance, "shift": request.shift, "seed": seed, "fps": request.fps,
            "step_cache": request.step_cache,
        }

    make_clips("t2v", job, ctx, request, spec, model, loaded_now, retries, clips, {}, record)
