"""The benchmark's named workloads: each a task request (the same as the page sends), per task and preset,
with the inputs they need made locally (a test portrait, speech-like audio) and the opt-in variants
(Turbo settings, the step cache)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..families.catalogue import DEFAULT_MODEL, family_of, get_spec
from ..tasks.t2v import T2VRequest, presets_for


@dataclasses.dataclass
class Workload:
    name: str
    task: str
    model: str
    request: Any
    steps: int | None = None
    audio_s: float | None = None  # ASR: seconds of audio, for the real-time factor
    changes_output: str = ""  # why this workload's output differs from the plain call's (step cache, Turbo)


def t2v_workloads(model_id: str | None, demo: bool, scratch: Path) -> list[Workload]:
    spec = get_spec(model_id or DEFAULT_MODEL["t2v"])
    workloads = []
    for preset in presets_for(spec, demo):
        request = T2VRequest(
            prompt="A person walking forward naturally, cinematic",
            model=spec.id,
            preset=preset.name,
            resolution=preset.resolution,
            frames=preset.frames,
            steps=preset.steps,
            guidance=preset.guidance,
            shift=preset.shift,
            seed=1234,
        )
        workloads.append(Workload(f"t2v {spec.id} {preset.name}", "t2v", spec.id, request, preset.steps))
    return workloads


def portrait_image(scratch: Path) -> Path:
    """A 512x512 test portrait (a lit figure on a gradient), like published image-to-video runs use."""
    import numpy as np
    from PIL import Image, ImageDraw

    path = scratch / "portrait_512.png"
    if not path.exists():
        scratch.mkdir(parents=True, exist_ok=True)
        y, x = np.mgrid[0:512, 0:512]
        background = np.stack([80 + x * 0.2, 90 + y * 0.15, 140 + (x + y) * 0.1], axis=-1).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        draw.ellipse((196, 90, 316, 220), fill=(224, 182, 150))  # head
        draw.rounded_rectangle((170, 230, 342, 512), radius=60, fill=(60, 70, 110))  # body
        image.save(path)
    return path


def speech_like_audio(scratch: Path, seconds: int) -> Path:
    """``seconds`` of 16 kHz audio with voiced bursts and pauses (harmonics under a syllable-rate envelope)."""
    import wave

    import numpy as np

    path = scratch / f"speechlike_{seconds}s.wav"
    if not path.exists():
        scratch.mkdir(parents=True, exist_ok=True)
        rate = 16000
        t = np.arange(seconds * rate) / rate
        pitch = 140 + 30 * np.sin(2 * np.pi * 0.3 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 8))
        syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.2 * t) > -0.3)
        signal = (0.25 * voice * syllables / 2).astype(np.float32)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def i2v_workloads(model_id: str | None, demo: bool, scratch: Path) -> list[Workload]:
    from ..tasks.i2v import I2VRequest
    from ..tasks.i2v import presets_for as i2v_presets

    spec = get_spec(model_id or DEFAULT_MODEL["i2v"])
    image = portrait_image(scratch)
    return [
        Workload(f"i2v {spec.id} {preset.name}", "i2v", spec.id,
                 I2VRequest(image=str(image), prompt="A person walking forward naturally", model=spec.id,
                            preset=preset.name, seed=1234),
                 preset.steps)
        for preset in i2v_presets(spec, demo)
    ]


def asr_workloads(model_id: str | None, demo: bool, scratch: Path) -> list[Workload]:
    """Long audio (10 minutes; 1 minute in demo mode) through large-v3 and turbo, chunked and batched."""
    from ..tasks.asr import ASRRequest

    seconds = 60 if demo else 600
    audio = speech_like_audio(scratch, seconds)
    models = [model_id] if model_id else ["whisper-large-v3", "whisper-large-v3-turbo"]
    return [
        Workload(f"asr {model} {seconds // 60} min", "asr", model,
                 ASRRequest(files=[str(audio)], model=model, language="en"), audio_s=float(seconds))
        for model in models
    ]


# Which workloads each task contributes.
WORKLOADS: dict[str, Callable[[str | None, bool, Path], list[Workload]]] = {
    "t2v": t2v_workloads,
    "i2v": i2v_workloads,
    "asr": asr_workloads,
}


def standard_workloads(demo: bool, tasks: tuple[str, ...] = ("t2v",), model: str | None = None,
                       scratch: Path = Path("data") / "benchmark_inputs", step_cache: float = 0.0,
                       turbo: bool = False) -> list[Workload]:
    """Each task's presets (``model`` replaces the default model of its task); inputs made in ``scratch``.
    ``turbo``: a 4-step, guidance-1 text-to-video workload at 480p/81 frames (the Turbo settings; random or
    base weights time the same as distilled ones). ``step_cache``: each workload of a family with the step cache again
    at that threshold."""
    workloads = []
    for task in tasks:
        if task not in WORKLOADS:
            raise ValueError(f"No benchmark workloads for {task!r}; available: {', '.join(WORKLOADS)}.")
        workloads += WORKLOADS[task](model if model and get_spec(model).task == task else None, demo, Path(scratch))
    if turbo and "t2v" in tasks:
        workloads.append(turbo_workload(model if model and get_spec(model).task == "t2v" else None, demo))
    if step_cache:
        workloads += [step_cache_variant(w, step_cache) for w in list(workloads)
                      if w.task in ("t2v", "i2v") and getattr(family_of(w.model), "STEP_CACHE", False)
                      and (w.request.guidance or 0) > 1.0 and not w.changes_output]
    return workloads


def turbo_workload(model_id: str | None, demo: bool) -> Workload:
    spec = get_spec(model_id or DEFAULT_MODEL["t2v"])
    resolution, frames = ("240p", 9) if demo else ("480p", 81)
    request = T2VRequest(prompt="A person walking forward naturally, cinematic", model=spec.id, preset="Turbo",
                         resolution=resolution, frames=frames, steps=4, guidance=1.0, shift=5.0, seed=1234)
    return Workload(f"t2v {spec.id} Turbo 4 steps", "t2v", spec.id, request, 4,
                    changes_output="4 steps at guidance 1 (step-distilled weights or LoRA; here timed on "
                                   f"{'the base' if not spec.lora_repo_id else 'its'} weights, which cost the same)")


def step_cache_variant(workload: Workload, threshold: float) -> Workload:
    request = dataclasses.replace(workload.request, step_cache=threshold)
    return dataclasses.replace(workload, name=f"{workload.name} + step cache {threshold:g}", request=request,
                               changes_output=f"step cache (first-block cache) at {threshold:g}")
