"""The plain library call for each benchmark workload: the same clip or transcript the way the libraries'
own docs make it, in the same process, timed the same way, so every speed-up has its ratio."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..families.catalogue import family_of, get_spec
from .workloads import Workload

logger = logging.getLogger(__name__)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(statistics.fmean(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _plain_video_pipeline(spec, settings, device: str, dtype: str):
    """The pipeline as diffusers' docs load it (``from_pretrained(..., dtype).to(device)``; random weights
    when asked), with the seconds it took."""
    import diffusers

    from ..device.loading import _torch_dtype, resolve_source

    started = time.perf_counter()
    if settings.random_weights and not settings.demo:
        from .random_weights import build_random_pipeline

        pipe = build_random_pipeline(spec.id, device, _torch_dtype(dtype))
    else:
        folder, _ = resolve_source(spec, settings, family_of(spec))  # --demo: the family's tiny build
        pipe = getattr(diffusers, spec.pipeline_class).from_pretrained(folder, dtype=_torch_dtype(dtype)).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, time.perf_counter() - started


def _timed_runs(repeat: int, device: str, run: Callable[[int], None]) -> list[float]:
    """``run(index)`` once to warm up, then ``repeat`` times; the timed runs' wall seconds."""
    import torch

    times = []
    for index in range(repeat + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        run(index)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - started)
    return times


def _baseline_dir(settings) -> Path:
    folder = Path(settings.outputs_dir) / "benchmarks" / "baseline"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_frames(frames, path: Path, fps: int) -> None:
    import numpy as np

    from ..media.ffmpeg import write_mp4

    frames = np.asarray(frames, dtype=np.float32)
    write_mp4((np.clip(frames, 0, 1) * 255).round().astype(np.uint8), path, fps)


def baseline_t2v(settings, device: str, dtype: str, workload: Workload, repeat: int, measured: dict | None = None) -> dict:
    """The same clip with diffusers' defaults: ``from_pretrained(...).to(device)`` and one ``pipe(...)`` call."""
    import torch

    from ..tasks.t2v import validate_t2v

    request = validate_t2v(workload.request, demo=settings.demo)
    pipe, load_s = _plain_video_pipeline(get_spec(workload.model), settings, device, dtype)
    extra = family_of(get_spec(workload.model)).call_kwargs(request)
    out_dir = _baseline_dir(settings)

    def run(index: int) -> None:
        frames = pipe(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            height=request.height,
            width=request.width,
            num_frames=request.frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            output_type="np",  # float frames for the mp4 write (some pipelines default to PIL)
            **extra,
        ).frames[0]
        _write_frames(frames, out_dir / f"baseline_{index}.mp4", request.fps)

    times = _timed_runs(repeat, device, run)  # the pipeline goes with this frame; run_baseline frees memory
    return {"load_s": round(load_s, 3), "wall_s": _stats(times)}


def baseline_i2v(settings, device: str, dtype: str, workload: Workload, repeat: int, measured: dict | None = None) -> dict:
    """The same clip with diffusers' defaults: ``from_pretrained(...).to(device)``, one ``pipe(image=..., ...)``
    call with the photo as a PIL image and the family's call arguments (``call_kwargs``), the same mp4
    write. Where a pipeline's own prompt encoding fails (a family may encode prompts itself for that
    reason), this raises and the report says "failed"."""
    import torch
    from PIL import Image

    from ..tasks.i2v import validate_i2v

    spec = get_spec(workload.model)
    request = validate_i2v(workload.request, demo=settings.demo)
    pipe, load_s = _plain_video_pipeline(spec, settings, device, dtype)
    extra = family_of(spec).call_kwargs(request)
    out_dir = _baseline_dir(settings)

    def run(index: int) -> None:
        image = Image.open(request.image).convert("RGB")
        frames = pipe(
            prompt=request.prompt, image=image, negative_prompt=request.negative_prompt, height=request.height,
            width=request.width, num_frames=request.frames, num_inference_steps=request.steps,
            guidance_scale=request.guidance, generator=torch.Generator("cpu").manual_seed(request.seed),
            output_type="np", **extra,
        ).frames[0]
        _write_frames(frames, out_dir / f"baseline_i2v_{index}.mp4", request.fps)

    times = _timed_runs(repeat, device, run)  # the pipeline goes with this frame; run_baseline frees memory
    return {"load_s": round(load_s, 3), "wall_s": _stats(times)}


def baseline_asr(settings, device: str, dtype: str, workload: Workload, repeat: int, measured: dict | None = None) -> dict:
    """The same files through transformers' own ``pipeline("automatic-speech-recognition")``: 30-second chunks
    (5 s overlap, as the app), the batch size the app chose, timestamps, the same language and task; the
    transcript written as .txt. Random (or demo) weights get the app's token count per window, else their
    decoding would never end."""
    import shutil

    from transformers import pipeline

    from ..tasks.asr import CHUNK_SECONDS, CPU_BATCH_SIZE, DEMO_MAX_NEW_TOKENS, RANDOM_WEIGHTS_NEW_TOKENS
    from ..device.loading import _torch_dtype, resolve_source

    spec = get_spec(workload.model)
    request = workload.request
    dtype = dtype if device.startswith("cuda") else "fp32"  # as the app: fp32 on the CPU
    generate_kwargs: dict[str, Any] = {"task": request.task}
    if request.language not in ("", "auto"):
        generate_kwargs["language"] = request.language
    started = time.perf_counter()
    if settings.random_weights and not settings.demo:
        from .random_whisper import build_random_whisper, fixed_token_count

        bundle = build_random_whisper(spec.id, device, _torch_dtype(dtype))
        generate_kwargs.update(fixed_token_count(bundle.model.generation_config, RANDOM_WEIGHTS_NEW_TOKENS))
        parts = {"model": bundle.model, "feature_extractor": bundle.feature_extractor, "tokenizer": bundle.tokenizer}
        del bundle
    else:
        folder, _ = resolve_source(spec, settings)
        parts = {"model": str(folder)}
        if settings.demo:
            generate_kwargs["max_new_tokens"] = DEMO_MAX_NEW_TOKENS
    asr = pipeline("automatic-speech-recognition", **parts, device=device, dtype=_torch_dtype(dtype))
    del parts
    load_s = time.perf_counter() - started
    batch_size = (measured or {}).get("batch_size") or request.batch_size or CPU_BATCH_SIZE
    audio_in = "file path (ffmpeg)"
    out_dir = _baseline_dir(settings)
    on_path = shutil.which("ffmpeg") is not None  # the pipeline reads files with an ffmpeg on PATH
    audio_in = "file path (ffmpeg)" if on_path else "decoded by the app's ffmpeg (no ffmpeg on PATH)"

    def run(index: int) -> None:
        texts = []
        for path in request.files:
            if on_path:
                audio = path
            else:
                from ..media.audio import SAMPLE_RATE, decode_audio

                audio = {"raw": decode_audio(Path(path), Path(path).name)[0], "sampling_rate": SAMPLE_RATE}
            output = asr(audio, chunk_length_s=CHUNK_SECONDS, batch_size=batch_size, return_timestamps=True,
                         generate_kwargs=dict(generate_kwargs))
            texts.append(output["text"])
        (out_dir / f"baseline_asr_{index}.txt").write_text("\n".join(texts), encoding="utf-8")

    times = _timed_runs(repeat, device, run)
    return {"load_s": round(load_s, 3), "wall_s": _stats(times), "batch_size": batch_size, "audio_input": audio_in,
            "generate_kwargs": {k: v for k, v in generate_kwargs.items() if k != "logits_processor"}}


BASELINES = {"t2v": baseline_t2v, "i2v": baseline_i2v, "asr": baseline_asr}


def run_baseline(settings, device: str, dtype: str, workload: Workload, repeat: int, measured: dict) -> dict:
    """One workload's plain library call; a failure is recorded (``{"error": ...}``), not raised."""
    from ..device.memory import free_memory

    try:
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        result = BASELINES[workload.task](settings, device, dtype, workload, repeat, measured)
        if device.startswith("cuda"):
            result["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        return result
    except Exception as error:  # the plain call may fail where the app works around it: say so, go on
        logger.warning("Baseline for %s failed: %s: %s", workload.name, type(error).__name__, error)
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]}
    finally:
        free_memory(device)
