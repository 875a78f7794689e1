"""Reproducible numbers: named workloads run through the app's own GPU worker, timed and measured.

Each workload is a task request (the same as the page sends). For every workload: a warm-up run
(reported on its own) and ``repeat`` timed runs; wall time end to end, time per stage from the
sidecars, seconds per step, peak VRAM (torch allocator and NVML), GPU utilisation sampled during the
run (NVML, as ``nvidia-smi dmon`` shows it), and the host's peak RSS. ``baseline`` runs the same
workload as the plain library call in the same process, so every speed-up claimed has its ratio, with its
peak VRAM next to ours. For video, the denoising FLOPs are counted from the model's shapes
(``pipelines.bench.flops``) and divided by the measured denoise time and the GPU's bf16 peak (the vendor's
figure, and a large matmul measured on the machine): the fraction of peak reached. ``step_cache`` adds a
variant of each Wan workload with the opt-in step cache, ``turbo`` a 4-step, guidance-1 workload (the
Turbo settings); both change the output and the report says so.
Results go to ``outputs/benchmarks/<time>_benchmark.{md,json}``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..studio.jobs import JobState
from ..families.catalogue import DEFAULT_MODEL, get_spec, models_for
from ..tasks.t2v import T2VRequest, presets_for

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.1


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
    """A 512x512 test portrait (a lit figure on a gradient), like the published I2VGen-XL runs used."""
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


# --- measuring --------------------------------------------------------------------------------------


class Sampler:
    """Samples GPU utilisation and memory (NVML) and host RSS in a thread while a run goes on."""

    def __init__(self, gpu_index: int = 0):
        import psutil

        self._process = psutil.Process()
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
        except Exception:  # no NVIDIA driver: CPU-only figures
            self._nvml = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.utilisation: list[float] = []
        self.nvml_used: list[int] = []
        self.rss: list[int] = []

    def _sample(self) -> None:
        self.rss.append(self._process.memory_info().rss)
        if self._nvml is not None:
            self.utilisation.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            self.nvml_used.append(int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used))

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> dict:
        gib = 2**30
        return {
            "gpu_util_mean": round(statistics.fmean(self.utilisation), 1) if self.utilisation else None,
            "gpu_util_min": min(self.utilisation) if self.utilisation else None,
            "nvml_peak_gib": round(max(self.nvml_used) / gib, 2) if self.nvml_used else None,
            "rss_peak_gib": round(max(self.rss) / gib, 2) if self.rss else None,
        }


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(statistics.fmean(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _run_once(worker, workload: Workload) -> dict:
    with Sampler() as sampler:
        started = time.perf_counter()
        job = worker.submit(workload.task, dataclasses.replace(workload.request) if dataclasses.is_dataclass(workload.request) else workload.request)
        seen = -1
        while not job.state.finished:
            seen = job.wait_for_change(seen, 1.0)
        wall = time.perf_counter() - started
    run = {"wall_s": round(wall, 3), "state": job.state.value, **sampler.summary()}
    if job.state != JobState.DONE:
        run["error"] = job.error
        return run
    if job.result.get("clips"):  # video: each clip has a sidecar
        sidecar_file = job.result["clips"][0]["sidecar"]
    else:  # asr: the transcript's .json is the sidecar
        sidecar_file = next((f["files"]["json"] for f in job.result.get("files", []) if f.get("ok")), None)
    if sidecar_file:
        sidecar = json.loads(Path(sidecar_file).read_text(encoding="utf-8"))
        run["stages_s"] = sidecar.get("timings_s", {})
        run["peak_alloc_gib"] = sidecar.get("peak_memory_gib")
        run["peak_kind"] = sidecar.get("peak_memory_kind")
        fast = sidecar.get("fast_path") or {}
        if fast:
            run["compile_extra_s"] = fast.get("compile_extra_s")
            run["fast_path"] = {key: fast.get(key) for key in (
                "memory_level", "attention", "fused_qkv", "compile", "guidance_batched", "prompt_cache_hit",
                "vae_tiled", "step_cache", "changes_output", "out_of_memory_retries")}
        if workload.task == "asr":  # the baseline decodes with the batch size the app chose
            run["batch_size"] = sidecar.get("decoding", {}).get("batch_size", {}).get("used")
    return run


def run_workload(worker, workload: Workload, repeat: int, tick: Callable[[], None] = lambda: None) -> dict:
    """Warm-up plus ``repeat`` timed runs of one workload through the worker."""
    warmup = _run_once(worker, workload)
    tick()
    result: dict[str, Any] = {"name": workload.name, "task": workload.task, "model": workload.model,
                              "request": _plain(workload.request), "steps": workload.steps, "warmup": warmup, "runs": []}
    if warmup["state"] != "done":
        result["error"] = warmup.get("error")
        return result
    for _ in range(repeat):
        run = _run_once(worker, workload)
        result["runs"].append(run)
        tick()
        if run["state"] != "done":
            result["error"] = run.get("error")
            break
    done = [r for r in result["runs"] if r["state"] == "done"]
    result["wall_s"] = _stats([r["wall_s"] for r in done])
    stage_names = sorted({name for r in done for name in r.get("stages_s", {})})
    result["stages_s"] = {name: _stats([r["stages_s"].get(name, 0.0) for r in done]) for name in stage_names}
    denoise = result["stages_s"].get("denoise", {}).get("mean")
    result["s_per_step"] = round(denoise / workload.steps, 4) if denoise and workload.steps else None
    result["peak_alloc_gib"] = max((r.get("peak_alloc_gib") or 0 for r in done), default=None)
    result["peak_kind"] = done[0].get("peak_kind") if done else None
    result["nvml_peak_gib"] = max((r["nvml_peak_gib"] for r in done if r.get("nvml_peak_gib")), default=None)
    utils = [r["gpu_util_mean"] for r in done if r.get("gpu_util_mean") is not None]
    result["gpu_util_mean"] = round(statistics.fmean(utils), 1) if utils else None
    mins = [r["gpu_util_min"] for r in done if r.get("gpu_util_min") is not None]
    result["gpu_util_min"] = min(mins) if mins else None
    result["rss_peak_gib"] = max((r["rss_peak_gib"] for r in done if r.get("rss_peak_gib")), default=None)
    result["load_s"] = warmup.get("stages_s", {}).get("load")
    result["compile_extra_s"] = warmup.get("compile_extra_s")
    if done and done[-1].get("fast_path"):
        result["fast_path"] = done[-1]["fast_path"]
    if workload.changes_output:
        result["changes_output"] = workload.changes_output
    if done and done[-1].get("batch_size"):
        result["batch_size"] = done[-1]["batch_size"]
    if workload.audio_s and result["wall_s"]["mean"]:
        result["audio_s"] = workload.audio_s
        result["real_time_factor"] = round(workload.audio_s / result["wall_s"]["mean"], 1)
    return result


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


# --- the plain library call -------------------------------------------------------------------------


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
        folder, _ = resolve_source(spec, settings)
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
        ).frames[0]
        _write_frames(frames, out_dir / f"baseline_{index}.mp4", request.fps)

    times = _timed_runs(repeat, device, run)  # the pipeline goes with this frame; run_baseline frees memory
    return {"load_s": round(load_s, 3), "wall_s": _stats(times)}


def baseline_i2v(settings, device: str, dtype: str, workload: Workload, repeat: int, measured: dict | None = None) -> dict:
    """The same clip with diffusers' defaults: ``from_pretrained(...).to(device)``, one ``pipe(image=..., ...)``
    call with the photo as a PIL image, the same mp4 write. ``I2VGenXLPipeline``'s own prompt encoding reads
    ``text_encoder.text_model``, which transformers 5 does not have: then this raises and the report says
    "failed" (the app encodes the prompt itself, see ``pipelines/i2v.py``)."""
    import torch
    from PIL import Image

    from ..tasks.i2v import family, validate_i2v

    spec = get_spec(workload.model)
    request = validate_i2v(workload.request, demo=settings.demo)
    pipe, load_s = _plain_video_pipeline(spec, settings, device, dtype)
    extra = {"target_fps": request.fps} if family(spec) == "i2vgen" else {}
    out_dir = _baseline_dir(settings)

    def run(index: int) -> None:
        image = Image.open(request.image).convert("RGB")
        frames = pipe(
            prompt=request.prompt, image=image, negative_prompt=request.negative_prompt, height=request.height,
            width=request.width, num_frames=request.frames, num_inference_steps=request.steps,
            guidance_scale=request.guidance, generator=torch.Generator("cpu").manual_seed(request.seed), **extra,
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
        from .random_weights import build_random_whisper, fixed_token_count

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


# --- the whole run ----------------------------------------------------------------------------------


def platform_info(worker) -> dict:
    import importlib.metadata

    info = {
        "os": platform.platform(),
        "wsl": "microsoft" in platform.release().lower(),
        "python": sys.version.split()[0],
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        **{name: _version(importlib.metadata, name) for name in ("torch", "diffusers", "transformers", "gradio")},
        "device": worker.device,
        "gpu": worker.device_name if worker.device.startswith("cuda") else None,
        "cuda": worker.environment.get("cuda"),
        "dtype": worker.dtype,
        "cuda_init_s": round(worker.cuda_init_seconds, 3) if worker.cuda_init_seconds else None,
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:
        info["driver"] = None
    return info


def _version(metadata, name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cold_start_seconds(demo: bool, timeout: float = 300.0) -> float | None:
    """Seconds from ``python app.py`` to the first page served (a fresh process on a free port)."""
    import socket
    import subprocess
    import tempfile
    import urllib.request

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, str(root / "app.py"), "--port", str(port), "--outputs", str(Path(scratch) / "out"),
                   "--data-dir", str(Path(scratch) / "data")] + (["--demo"] if demo else [])
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - started < timeout and process.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                        if response.status == 200:
                            return round(time.perf_counter() - started, 3)
                except OSError:
                    time.sleep(0.1)
            return None
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def soak(worker, workloads: list[Workload], count: int, tick: Callable[[], None] = lambda: None) -> dict:
    """``count`` jobs back to back, cycling through the workloads; counts outcomes and memory drift."""
    from ..device.memory import read_memory

    start = read_memory(worker.device)
    counts = {"succeeded": 0, "failed": 0, "out_of_memory": 0, "recovered": 0}
    previous_failed = False
    for index in range(count):
        run = _run_once(worker, workloads[index % len(workloads)])
        tick()
        if run["state"] == "done":
            counts["succeeded"] += 1
            counts["recovered"] += previous_failed
            previous_failed = False
        else:
            counts["failed"] += 1
            counts["out_of_memory"] += "out of gpu memory" in run.get("error", "").lower()
            previous_failed = True
    end = read_memory(worker.device)
    gib = 2**30
    return {**counts, "jobs": count, "memory_start_gib": round(start.process / gib, 3),
            "memory_end_gib": round(end.process / gib, 3), "memory_kind": "VRAM (allocator)" if worker.device.startswith("cuda") else "RSS"}


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    from ..studio.outputs import write_atomic, write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}_benchmark"
    json_path = write_json_atomic(stem.with_suffix(".json"), report)
    markdown = render_markdown(report)
    md_path = write_atomic(json_path.with_suffix(".md"), lambda temp: temp.write_text(markdown, encoding="utf-8"))
    return md_path, json_path


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    p = report["platform"]
    lines = [
        f"# Cinescribe benchmark, {report['created']}",
        "",
        f"- Mode: **{report['mode']}**" + (" (real architectures, random weights: timings are real, output is noise)"
                                          if report["mode"] == "random-weights" else
                                          " (tiny random models: app overhead only)" if report["mode"] == "demo" else ""),
        f"- Machine: {p.get('gpu') or p.get('cpu')} · {p['os']}{' (WSL)' if p.get('wsl') else ''} · "
        f"driver {p.get('driver') or '–'} · CUDA {p.get('cuda') or '–'}",
        f"- Software: Python {p['python']} · torch {p['torch']} · diffusers {p['diffusers']} · "
        f"transformers {p['transformers']} · dtype {p['dtype']}",
        f"- Runs: {report['repeat']} timed after one warm-up · app cold start to first page "
        f"{_cell(report.get('cold_start_s'))} s · CUDA init {_cell(p.get('cuda_init_s'))} s",
        f"- Command: `{report['command']}`",
        *(["- Fast path: " + ", ".join(f"{k} {v}" for k, v in report["fast_path_settings"].items())]
          if report.get("fast_path_settings") else []),
        *([f"- GPU bf16 peak: {report['gpu_peak']['bf16_tflops'] or '–'} TFLOP/s published ({report['gpu_peak']['gpu'] or 'unknown GPU'}), "
           f"{report['gpu_peak']['measured_matmul_tflops'] or '–'} TFLOP/s measured here (8192² bf16 matmul)"]
          if report.get("gpu_peak") and str(p.get("device", "")).startswith("cuda") else []),
        *([f"- Speech: {report['asr_tokens']}"] if report.get("asr_tokens") else []),
        "",
        "| workload | mean s | min s | max s | s/step | load s | text enc s | denoise s | decode s | mp4 s "
        "| peak VRAM alloc / NVML GiB | GPU util mean / min % | host RSS GiB | baseline mean s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if not str(p.get("device", "")).startswith("cuda"):  # on the CPU the "allocator" figure is the process RSS
        lines = [line.replace("peak VRAM alloc / NVML GiB", "peak RSS / NVML GiB") for line in lines]
    video = [w for w in report["workloads"] if w["task"] != "asr"]
    speech = [w for w in report["workloads"] if w["task"] == "asr"]
    for w in video:
        if w.get("error") and not w.get("wall_s"):
            lines.append(f"| {w['name']} | failed: {w['error'][:80]} |" + " |" * 14)
            continue
        stages = w.get("stages_s", {})
        base, ratio = _baseline_cells(w)
        lines.append(
            "| " + " | ".join([
                w["name"], _cell(w["wall_s"]["mean"]), _cell(w["wall_s"]["min"]), _cell(w["wall_s"]["max"]),
                _cell(w.get("s_per_step"), 3), _cell(w.get("load_s")),
                *(_cell(stages.get(name, {}).get("mean")) for name in ("text_encode", "denoise", "decode", "encode")),
                f"{_cell(w.get('peak_alloc_gib'))} / {_cell(w.get('nvml_peak_gib'))}",
                f"{_cell(w.get('gpu_util_mean'), 0)} / {_cell(w.get('gpu_util_min'), 0)}",
                _cell(w.get("rss_peak_gib")), base, ratio,
            ]) + " |"
        )
    lines += _efficiency_table(report, video)
    if speech:
        lines += ["", "| workload | audio s | mean s | min s | max s | real-time factor | audio decode s | features s "
                  "| generate s | peak VRAM alloc / NVML GiB | GPU util mean / min % | host RSS GiB | baseline mean s | speed-up |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        if not str(p.get("device", "")).startswith("cuda"):
            lines[-2] = lines[-2].replace("peak VRAM alloc / NVML GiB", "peak RSS / NVML GiB")
        for w in speech:
            if w.get("error") and not w.get("wall_s"):
                lines.append(f"| {w['name']} | failed: {w['error'][:80]} |" + " |" * 12)
                continue
            stages = w.get("stages_s", {})
            lines.append("| " + " | ".join([
                w["name"], _cell(w.get("audio_s"), 0), _cell(w["wall_s"]["mean"]), _cell(w["wall_s"]["min"]),
                _cell(w["wall_s"]["max"]), f"{_cell(w.get('real_time_factor'), 1)}x",
                *(_cell(stages.get(name, {}).get("mean")) for name in ("decode", "features", "generate")),
                f"{_cell(w.get('peak_alloc_gib'))} / {_cell(w.get('nvml_peak_gib'))}",
                f"{_cell(w.get('gpu_util_mean'), 0)} / {_cell(w.get('gpu_util_min'), 0)}", _cell(w.get("rss_peak_gib")),
                *_baseline_cells(w),
            ]) + " |")
    if report.get("soak"):
        s = report["soak"]
        lines += ["", f"Soak: {s['jobs']} jobs: {s['succeeded']} succeeded, {s['failed']} failed "
                      f"({s['out_of_memory']} out of memory), {s['recovered']} recovered; {s['memory_kind']} "
                      f"{s['memory_start_gib']} → {s['memory_end_gib']} GiB."]
    lines += ["", "Speed-up = baseline mean / our mean (the plain library call: `from_pretrained(...).to(device)`, "
              "one `pipe(...)` call and the mp4 write, in the same process; for speech, transformers' "
              "`pipeline(\"automatic-speech-recognition\")` with 30-second chunks, the app's batch size and the same "
              "tokens per window)." if report.get("baseline") else ""]
    return "\n".join(lines).rstrip() + "\n"


def _percent(value) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _efficiency_table(report: dict, video: list[dict]) -> list[str]:
    """Per video workload: the denoising FLOPs counted from the model's shapes, the TFLOP/s reached and the fraction
    of the GPU's bf16 peak; peak VRAM against the plain call's; the first compiled job's extra seconds; the memory
    level; and what makes the output differ from the plain call's, if anything."""
    rows = [w for w in video if w.get("wall_s")]
    if not rows:
        return []
    peak = report.get("gpu_peak") or {}
    vendor = f"{peak['gpu']} {peak['bf16_tflops']:g}" if peak.get("bf16_tflops") else "vendor"
    measured = f"{peak['measured_matmul_tflops']:g}" if peak.get("measured_matmul_tflops") else "measured"
    memory = "VRAM" if str(report["platform"].get("device", "")).startswith("cuda") else "RSS"
    lines = ["", f"| workload | denoise TFLOP | denoise s | TFLOP/s | % of bf16 peak ({vendor}) | % of bf16 matmul "
                 f"measured here ({measured}) | peak {memory} ours / plain GiB | first-job compile extra s "
                 "| memory level | output vs plain call |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in rows:
        flops = (w.get("flops") or {}).get("total")
        fast = w.get("fast_path") or {}
        plain_peak = (w.get("baseline") or {}).get("peak_alloc_gib")
        output = w.get("changes_output") or "; ".join(fast.get("changes_output") or []) or "same (within rounding)"
        lines.append("| " + " | ".join([
            w["name"], _cell(flops / 1e12 if flops else None, 0),
            _cell((w.get("stages_s") or {}).get("denoise", {}).get("mean")), _cell(w.get("denoise_tflops"), 1),
            _percent(w.get("mfu_vendor")), _percent(w.get("mfu_measured")),
            f"{_cell(w.get('peak_alloc_gib'))} / {_cell(plain_peak)}", _cell(w.get("compile_extra_s")),
            str(fast.get("memory_level") or "–"), output.replace("|", "/"),
        ]) + " |")
    if report["mode"] == "demo":
        lines.append("")
        lines.append("FLOPs are counted for the real model sizes only; the demo's tiny models have none here.")
    return lines


def _baseline_cells(workload: dict) -> tuple[str, str]:
    """The baseline's mean (or why it failed) and the speed-up, as table cells."""
    baseline = workload.get("baseline")
    if not baseline:
        return "–", "–"
    if baseline.get("error"):
        return f"failed: {baseline['error'][:60].replace('|', '/')}", "–"
    base = baseline.get("wall_s", {}).get("mean")
    ours = (workload.get("wall_s") or {}).get("mean")
    ratio = round(base / ours, 2) if base and ours else None
    return _cell(base), f"{_cell(ratio)}x" if ratio else "–"


def run_benchmark(worker, settings, workloads: list[Workload], repeat: int, baseline: bool = False,
                  soak_jobs: int = 0, cold_start: bool = True, command: str = "", progress=None) -> dict:
    """Run everything and return the report (the caller writes it)."""
    total = len(workloads) * (repeat + 1) + soak_jobs
    tick = progress.update if progress is not None else (lambda *_: None)
    report: dict[str, Any] = {
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "demo" if settings.demo else "random-weights" if settings.random_weights else "real weights",
        "repeat": repeat,
        "baseline": baseline,
        "command": command,
        "platform": platform_info(worker),
        "cold_start_s": cold_start_seconds(settings.demo) if cold_start else None,
        "fast_path_settings": {name: getattr(settings, name, None) for name in (
            "attention", "memory_level", "offload", "compile", "fuse_qkv", "batch_guidance", "prompt_cache", "fp8",
            "vae_tiling", "gpu_memory_gb", "asr_static_cache")},
        "workloads": [],
    }
    if any(w.task == "asr" for w in workloads) and (settings.demo or settings.random_weights):
        from ..tasks.asr import DEMO_MAX_NEW_TOKENS, RANDOM_WEIGHTS_NEW_TOKENS

        report["asr_tokens"] = (
            f"tiny random Whisper: at most {DEMO_MAX_NEW_TOKENS} tokens per 30-second window" if settings.demo else
            f"random-weight Whisper decodes exactly {RANDOM_WEIGHTS_NEW_TOKENS} tokens per 30-second window (about "
            "what speech holds; random weights never end by themselves), in the app and the baseline alike"
        )
    if any(w.task in ("t2v", "i2v") for w in workloads):
        from .flops import gpu_peak_tflops, measured_matmul_tflops

        peak, key = gpu_peak_tflops(report["platform"].get("gpu"))
        report["gpu_peak"] = {"bf16_tflops": peak, "gpu": key,
                              "measured_matmul_tflops": _round(worker.run_exclusive(
                                  lambda: measured_matmul_tflops(worker.device), timeout=600), 1)}
    plain_runs: dict[str, dict] = {}  # a step-cache variant is compared with the same plain call as its base
    for workload in workloads:
        logger.info("Benchmark: %s", workload.name)
        result = run_workload(worker, workload, repeat, lambda: tick(1))
        if workload.task in ("t2v", "i2v") and not settings.demo and not result.get("error"):
            result["flops"] = workload_flops(settings, workload)
            _add_efficiency(result, report.get("gpu_peak") or {})
        if baseline and workload.task in BASELINES and not result.get("error"):
            key = _plain_key(workload)
            if key not in plain_runs:
                worker.release_vram(timeout=3600)  # the plain call gets the whole device, as it would alone
                plain_runs[key] = worker.run_exclusive(
                    lambda: run_baseline(settings, worker.device, worker.dtype, workload, repeat, result)
                )
            result["baseline"] = plain_runs[key]
        report["workloads"].append(result)
    if soak_jobs:
        report["soak"] = soak(worker, workloads, soak_jobs, lambda: tick(1))
    report["total_runs"] = total
    return report


def _round(value, digits: int):
    return None if value is None else round(value, digits)


def _plain_key(workload: Workload) -> str:
    request = workload.request
    if dataclasses.is_dataclass(request) and hasattr(request, "step_cache"):
        request = dataclasses.replace(request, step_cache=0.0)
    return json.dumps(_plain(request), sort_keys=True, default=str) + workload.model


def workload_flops(settings, workload: Workload) -> dict | None:
    """The denoising FLOPs of one run of a video workload at its model's real size (``pipelines.bench.flops``)."""
    from .flops import denoise_flops

    try:
        if workload.task == "t2v":
            from ..tasks.t2v import validate_t2v

            request = validate_t2v(workload.request, demo=settings.demo)
        else:
            from ..tasks.i2v import validate_i2v

            request = validate_i2v(workload.request, demo=settings.demo)
        counted = denoise_flops(workload.model, request.frames, request.height, request.width, request.steps,
                                request.guidance > 1.0)
    except Exception as error:  # a model without a shipped architecture config: no count, say why
        logger.warning("FLOPs of %s not counted: %s", workload.name, error)
        return {"error": str(error)[:200]}
    return {key: float(value) for key, value in counted.items()}


def _add_efficiency(result: dict, gpu_peak: dict) -> None:
    """Achieved TFLOP/s in the denoising steps, and the fraction of the vendor's and the measured peak."""
    from .flops import mfu

    total = (result.get("flops") or {}).get("total")
    denoise = (result.get("stages_s") or {}).get("denoise", {}).get("mean")
    if not total or not denoise:
        return
    result["denoise_tflops"] = round(total / denoise / 1e12, 1)
    vendor = mfu(total, denoise, gpu_peak.get("bf16_tflops"))
    measured = mfu(total, denoise, gpu_peak.get("measured_matmul_tflops"))
    result["mfu_vendor"] = _round(vendor, 3)
    result["mfu_measured"] = _round(measured, 3)


def standard_workloads(demo: bool, tasks: tuple[str, ...] = ("t2v",), model: str | None = None,
                       scratch: Path = Path("data") / "benchmark_inputs", step_cache: float = 0.0,
                       turbo: bool = False) -> list[Workload]:
    """Each task's presets (``model`` replaces the default model of its task); inputs made in ``scratch``.
    ``turbo``: a 4-step, guidance-1 text-to-video workload at 480p/81 frames (the Turbo settings; random or
    base weights time the same as distilled ones). ``step_cache``: each Wan workload again with the step cache
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
                      if w.task in ("t2v", "i2v") and get_spec(w.model).extra.get("family", "wan") == "wan"
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


__all__ = ["Workload", "run_benchmark", "standard_workloads", "write_report", "render_markdown", "models_for"]
