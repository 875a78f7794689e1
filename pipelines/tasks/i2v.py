"""Image-to-video: validate a request and its image, run the model's image-to-video pipeline, write the clips.

``run_i2v`` reads as the stages of the pipelines: load (once, then resident), text encode, denoise (with
progress, previews and cancel at every step), VAE decode, mp4 encode, sidecar, and a copy of the input
image next to the first clip. Every model-specific stage is its family's (``families/base.py``): each
pipeline's own contract for progress and cancel, its prompt encoding, its decode, its frame-count rule.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass, field

from ..media.images import FITS, InputImage, aspect_value, fit_image, load_image, output_size
from ..studio.jobs import Job, RequestError, parse_number
from .video_parallel import run_parallel
from ..families.base import size_multiple
from ..families.catalogue import DEFAULT_MODEL, family_of, get_spec
from ..families.spec import DEMO_I2V_RESOLUTIONS, I2V_MAX_AREA, ModelSpec, VideoPreset, demo_i2v_sizes
from .video import (
    MAX_CLIPS,
    MAX_PROMPT_CHARS,
    check_loras_field,
    check_step_cache,
    clips_already_written,
    copy_inputs,
    i2v_settings,
    input_records,
    make_clips,
    run_with_memory_ladder,
)

logger = logging.getLogger(__name__)

ASPECTS = ("image", "16:9", "9:16", "1:1", "4:3", "3:4")


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
    shift: float | None = None  # flow shift (families with ``USES_FLOW_SHIFT``); else None
    seed: int = -1
    fps: int | None = None
    clips: int = 1
    last_image: str | None = None  # optional last frame (models with ``last_frame``)
    step_cache: float = 0.0  # first-block cache threshold (0 = off; families with ``STEP_CACHE``); changes the output
    loras: str = ""  # creators' LoRAs, "name[.safetensors][:strength], ..." (pipelines/loras); "" = none
    width: int = 0  # filled by validation
    height: int = 0
    notes: list[str] = field(default_factory=list)


def presets_for(spec: ModelSpec, demo: bool) -> tuple[VideoPreset, ...]:
    """The spec's presets; in --demo mode made small (few pixels, frames and steps; frames as the family makes them)."""
    if not demo:
        return spec.presets
    fit = family_of(spec).fit_frames
    return tuple(dataclasses.replace(small, frames=fit(spec, small.frames)[0]) for small in demo_i2v_sizes(spec))


def resolutions_for(spec: ModelSpec, demo: bool) -> tuple[str, ...]:
    return DEMO_I2V_RESOLUTIONS if demo else spec.resolutions


def preset_for(spec: ModelSpec, name: str, demo: bool) -> VideoPreset:
    presets = presets_for(spec, demo)
    return next((p for p in presets if p.name == name), None) or next(
        (p for p in presets if p.name == spec.default_preset), presets[0]
    )


def default_negative_prompt(spec: ModelSpec) -> str:
    return family_of(spec).NEGATIVE_PROMPT


def uses_flow_shift(spec: ModelSpec) -> bool:
    return family_of(spec).USES_FLOW_SHIFT


def check_i2v(request: I2VRequest, demo: bool = False, settings=None) -> tuple[I2VRequest, InputImage, InputImage | None]:
    """Check and normalise a request before any GPU work; returns it complete, with the decoded image(s).

    Hard errors raise ``RequestError`` naming the value; frame counts the model cannot make are rounded
    with a note. The ``loras`` text is checked without reading the LoRA folder (as ``validate_t2v``); the
    files are checked at submit by the executor (``loras.check.check_request``).
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
    family = family_of(spec)
    width, height = output_size(ratio, I2V_MAX_AREA[resolution], size_multiple(family, spec))
    if aspect == "image" and abs(ratio - image.height / image.width) > 1e-6:
        notes.append(f"The image is {image.width} x {image.height}: too far from square for a clip, so it is "
                     f"{'cropped' if fit == 'crop' else 'padded'} to {width} x {height}.")

    fps = parse_number(request.fps if request.fps not in (None, "", 0) else spec.fps, "Frames per second", int, 1, 60, "fps")
    lowest = family.MIN_FRAMES
    if request.duration_s not in (None, "", 0):
        seconds = parse_number(request.duration_s, "Duration", float, lowest / fps, spec.max_frames / fps, "duration")
        wanted = max(lowest, round(seconds * fps))
    else:
        frames_in = request.frames if request.frames not in (None, "") else preset.frames
        wanted = parse_number(frames_in, "Number of frames", int, lowest, spec.max_frames, "frames")
    frames, note = family.fit_frames(spec, wanted)
    if note:
        notes.append(note)
    steps = parse_number(request.steps if request.steps not in (None, "") else preset.steps, "Steps", int, 1, 200, "steps")
    guidance = parse_number(request.guidance if request.guidance not in (None, "") else preset.guidance, "Guidance", float,
                       0.0, 30.0, "guidance")
    if family.USES_FLOW_SHIFT:
        shift = parse_number(request.shift if request.shift not in (None, "") else preset.shift, "Flow shift", float, 0.1,
                        50.0, "shift")
    else:
        shift = None
    seed = parse_number(request.seed if request.seed not in (None, "") else -1, "Seed", int, -1, 2**32 - 1, "seed")
    clips = parse_number(request.clips, "Number of clips", int, 1, MAX_CLIPS, "clips")
    step_cache = check_step_cache(request.step_cache, spec)
    loras = check_loras_field(request.loras, spec, settings)
    if seed == -1:
        seed = secrets.randbelow(2**31)
    checked = dataclasses.replace(
        request, prompt=prompt, negative_prompt=negative, preset=request.preset or "", resolution=resolution,
        aspect=aspect, fit=fit, frames=frames, duration_s=None, steps=steps, guidance=guidance, shift=shift, seed=seed,
        fps=fps, clips=clips, step_cache=step_cache, loras=loras, width=width, height=height,
        notes=list(dict.fromkeys([*request.notes, *notes])),
    )
    return checked, image, last


def validate_i2v(request: I2VRequest, demo: bool = False, settings=None) -> I2VRequest:
    """``check_i2v`` without the decoded images: the request as the job will run it."""
    return check_i2v(request, demo, settings)[0]


# --- running ----------------------------------------------------------------------------------------


def run_i2v(job: Job, ctx) -> dict:
    """Run an ``I2VRequest``; returns the written clips, their sidecars and the input copy."""
    request, image, last = check_i2v(job.request, demo=ctx.settings.demo, settings=ctx.settings)
    for text in request.notes:
        ctx.note(text)
    spec = get_spec(request.model)
    if (parallel := run_parallel("i2v", job, ctx, request, spec, image, last)) is not None:  # --parallel N
        return parallel
    inputs = {"image": fit_image(image.image, (request.width, request.height), request.fit)}
    if last is not None:
        inputs["last_image"] = fit_image(last.image, (request.width, request.height), request.fit)
    # Kept across out-of-memory retries (and a restart): a retry makes only the clips not yet written.
    clips: list[dict] = clips_already_written(ctx, job)
    copies: dict[str, dict] = {}

    def written(video_path) -> dict:
        from ..studio.outputs import write_atomic

        if not copies:
            copies.update(copy_inputs(video_path, image, last, write_atomic))
        return input_records(request, image, last, copies)

    def attempt(model, loaded_now, retries):
        make_clips("i2v", job, ctx, request, spec, model, loaded_now, retries, clips, inputs,
                   lambda seed: i2v_settings(request, spec, seed, image, last), written)

    run_with_memory_ladder(ctx, job, spec, request, attempt)
    return {
        "clips": clips,
        "notes": list(request.notes),
        "seed": request.seed,
        "input": copies["image"]["path"],
        "size": [request.width, request.height],
    }
