"""Reproducible numbers: named workloads run through the app's own GPU worker, timed and measured.

Each workload is a task request (the same as the page sends). For every workload: a warm-up run
(reported on its own) and ``repeat`` timed runs; wall time end to end, time per stage from the
sidecars, seconds per step, peak VRAM (torch allocator and NVML), GPU utilisation sampled during the
run (NVML, as ``nvidia-smi dmon`` shows it), and the host's peak RSS. ``baseline`` runs the same
workload as the plain library call in the same process, so every speed-up claimed has its ratio, with its
peak VRAM next to ours. For video, the denoising FLOPs are counted from the model's shapes
(``pipelines.bench.flops``) and divided by the measured denoise time and the GPU's bf16 peak (the vendor's
figure, and a large matmul measured on the machine): the fraction of peak reached. ``step_cache`` adds a
variant of each workload with the opt-in step cache (families that have it), ``turbo`` a 4-step, guidance-1 workload (the
Turbo settings); both change the output and the report says so.
Results go to ``outputs/benchmarks/<time>_benchmark.{md,json}``. The workloads are in ``bench.workloads``,
the plain calls in ``bench.baselines``, the report in ``bench.report``; this module runs them.
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

from ..families.catalogue import models_for
from ..studio.jobs import JobState
from .baselines import BASELINES, _stats, run_baseline
from .report import render_markdown, write_report
from .workloads import (
    WORKLOADS,
    Workload,
    asr_workloads,
    i2v_workloads,
    portrait_image,
    speech_like_audio,
    standard_workloads,
    step_cache_variant,
    t2v_workloads,
    turbo_workload,
)

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.1


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


__all__ = ["Workload", "run_benchmark", "standard_workloads", "write_report", "render_markdown", "models_for", "WORKLOADS",
           "asr_workloads", "i2v_workloads", "portrait_image", "speech_like_audio", "step_cache_variant",
           "t2v_workloads", "turbo_workload"]
