"""The GPU worker: the one thread that touches CUDA. It runs jobs in order and keeps models resident.

UI threads talk to it only through ``submit``, ``cancel``, ``release_vram``, ``status`` and the ``Job``
objects it hands back; control messages (release, preload) run between jobs, before queued jobs. The
queue itself (``JobQueue``) lives in this process and, given a ``JobStore``, on disk: jobs queued or
running when the app stops run when it is back.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import importlib
import logging
import platform
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..studio.jobqueue import JobQueue
from ..studio.jobs import Job, JobCancelled, JobState, RequestError, StepClock
from .loaders import load_model
from .loading import LoadedModel
from .manager import ModelManager
from .memory import PeakTracker, free_memory, gib, is_out_of_memory, read_memory
from ..families.catalogue import DEFAULT_MODEL, get_spec
from ..families.spec import ModelSpec
from ..studio.settings import TASKS, Settings
from ..studio.store import JobStore

logger = logging.getLogger(__name__)

TaskHandler = Callable[[Job, "TaskContext"], Any]


def _task_runner(task: str) -> TaskHandler:
    """``pipelines.tasks.<task>.run_<task>``, imported when the first job of that task runs."""

    def run(job: Job, ctx: TaskContext) -> Any:
        module = importlib.import_module(f"pipelines.tasks.{task}")
        return getattr(module, f"run_{task}")(job, ctx)

    return run


def default_handlers() -> dict[str, TaskHandler]:
    return {task: _task_runner(task) for task in TASKS}


class TaskContext:
    """What a task sees of the worker while it runs one job: models, device, stages, steps, cancel."""

    def __init__(self, worker: GPUWorker, job: Job):
        self.worker = worker
        self.job = job
        self.settings = worker.settings
        self.device = worker.device
        self.dtype = worker.dtype
        self.timings: dict[str, float] = {}
        self.peak = PeakTracker(self.device)

    def model(self, spec: ModelSpec) -> tuple[LoadedModel, bool]:
        with self.stage("load"):
            loaded = self.worker.models.get(spec)
        if loaded[1]:  # a model came in (and maybe others went): the status strip says so now, not after the job
            self.worker._refresh_status()
        return loaded

    @contextlib.contextmanager
    def stage(self, name: str):
        self.job.update(progress=dataclasses.replace(self.job.progress, stage=name))
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
            self.peak.sample()

    def start_steps(self, total: int, clip: int = 1, clips: int = 1) -> StepClock:
        self.job.update(progress=dataclasses.replace(self.job.progress, step=0, total=total, clip=clip, clips=clips))
        return StepClock(total)

    def step(self, clock: StepClock, preview: Any = None) -> None:
        rate, eta = clock.tick()
        changes: dict[str, Any] = {
            "progress": dataclasses.replace(self.job.progress, step=clock.done, it_per_s=rate, eta_s=eta)
        }
        if preview is not None:
            changes["preview"] = preview
        self.job.update(**changes)
        self.peak.sample()

    def check_cancel(self, clock: StepClock | None = None) -> None:
        """Leave the job when Stop was pressed; not when ``clock``'s steps all ran (the clip is nearly done:
        decoding and writing it keep what Stop would throw away)."""
        if self.job.cancelled and not (clock is not None and clock.done >= clock.total):
            raise JobCancelled()

    def note(self, text: str) -> None:
        logger.info("Job %s: %s", self.job.id, text)
        self.job.update(notes=[*self.job.notes, text])

    def environment(self) -> dict:
        """Device, dtype and library versions, for the sidecar."""
        return {**self.worker.environment, "offload": self.settings.offload, "vae_tiling": self.settings.vae_tiling,
                "job_id": self.job.id, "owner": self.job.owner, "attempt": self.job.attempts}


class GPUWorker:
    def __init__(self, settings: Settings, handlers: dict[str, TaskHandler] | None = None,
                 store: JobStore | None = None):
        self.settings = settings
        self.queue = JobQueue(store)
        self.handlers = handlers if handlers is not None else default_handlers()
        self.device = "cpu"
        self.dtype = "fp32"
        self.device_name = "CPU"
        self.environment: dict = {}
        self.models: ModelManager | None = None
        self._lock = self.queue.lock
        self._controls: collections.deque[tuple[str, Any, concurrent.futures.Future]] = collections.deque()
        self._current: Job | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict = {"device": "starting", "resident": []}
        self.cuda_init_seconds: float | None = None

    # --- called from any thread -------------------------------------------------------------------

    def start(self) -> None:
        """Queue again the jobs left from the last run (with a store), then start the worker thread."""
        if self._thread is None:
            self.queue.restore(self._outputs_complete)
            self._thread = threading.Thread(target=self._run, name="gpu-worker", daemon=True)
            self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _outputs_complete(self, stored) -> bool:
        """Whether the outputs folder holds every sidecar an interrupted job was to write."""
        from ..studio.history import outputs_complete

        return outputs_complete(self.settings.outputs_dir, stored)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, stop the running one at its next step (it runs again after a restart), end."""
        with self._lock:
            self._stopping = True
            self.queue.close()
            if self._current is not None:
                self._current.cancel_event.set()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, task: str, request: Any, owner: str = "") -> Job:
        if task not in self.handlers:
            raise RequestError(f"No task {task!r} in this app; it has {', '.join(self.handlers)}.", key="unknown_task")
        from ..loras.check import check_request

        check_request(request, self.settings)  # a missing, damaged or unfit LoRA is refused before the queue
        return self.queue.submit(task, request, owner)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or a running one at its next step. False if unknown or finished."""
        return self.queue.cancel(job_id)

    def job(self, job_id: str) -> Job | None:
        return self.queue.job(job_id)

    def position(self, job: Job) -> int:
        """0 while running or finished; 1 for the next job to run, 2 behind it, and so on."""
        return self.queue.position(job)

    def release_vram(self, timeout: float | None = None) -> dict:
        """Drop every resident model between jobs; returns the measured result once it has happened."""
        return self._control("release", None).result(timeout)

    def run_exclusive(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn`` on the worker thread between jobs (it may use the device) and return its result."""
        return self._control("call", fn).result(timeout)

    def preload(self, tasks: tuple[str, ...]) -> concurrent.futures.Future:
        return self._control("preload", tasks)

    def status(self) -> dict:
        """Device, memory, resident models, queue and current job, without touching the device."""
        with self._lock:
            current = self._current.snapshot() if self._current else None
            return {**self._status, "queue": len(self.queue), "current": current}

    def current_job(self) -> Job | None:
        return self._current

    # --- the worker thread ------------------------------------------------------------------------

    def _control(self, kind: str, payload: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._controls.append((kind, payload, future))
            self._lock.notify_all()
        return future

    def setup(self) -> None:
        """Set up the device and the resident models' manager; the calling thread then owns the device.

        The worker thread does this first; a cluster worker (``pipelines/cluster_worker.py``) calls it, then
        ``run_job`` and ``control`` itself, one at a time, instead of starting the thread.
        """
        try:
            self._init_device()
        except Exception:  # never leave the app without a worker: fall back to the CPU
            logger.exception("Could not set up the device; using the CPU")
            self.device, self.dtype, self.device_name = "cpu", "fp32", "CPU"
        self.models = ModelManager(self._load_model, self.device, self._budget_bytes(), self._estimate_bytes)
        self._refresh_status()
        self._ready.set()

    def run_job(self, job: Job) -> None:
        """Run ``job`` now on the calling thread (after ``setup``), as the worker thread runs queued jobs."""
        with self._lock:
            self._current = job
        try:
            self._run_job(job)
        finally:
            with self._lock:
                self._current = None
            self._refresh_status()

    def control(self, kind: str, payload: Any = None) -> Any:
        """Handle one control message ("release", "call", "preload") now on the calling thread; its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._handle_control(kind, payload, future)
        return future.result()

    def _run(self) -> None:
        self.setup()
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stopping or self._controls or len(self.queue), timeout=2.0)
                if self._stopping:
                    break
                control = self._controls.popleft() if self._controls else None
                job = self.queue.take() if control is None else None
                self._current = job
            if control is not None:
                self._handle_control(*control)
            elif job is not None:
                self._run_job(job)
                with self._lock:
                    self._current = None
            self._refresh_status()
        for _, _, future in self._controls:
            future.cancel()

    def _init_device(self) -> None:
        import torch

        started = time.perf_counter()
        wanted = self.settings.device
        if wanted in ("auto", "cuda") and torch.cuda.is_available():
            self.device = "cuda:0"
            torch.cuda.init()
            torch.zeros(1, device=self.device)
            self.device_name = torch.cuda.get_device_name(0)
            self.cuda_init_seconds = time.perf_counter() - started
        else:
            if wanted == "cuda":
                logger.error(
                    "--device cuda was asked for but torch sees no CUDA GPU (torch %s, CUDA build: %s); using the CPU.",
                    torch.__version__,
                    torch.version.cuda or "no",
                )
            self.device, self.device_name = "cpu", platform.processor() or "CPU"
        dtype = self.settings.dtype
        if dtype == "auto":
            if self.device.startswith("cuda"):
                dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                dtype = "fp32"
        self.dtype = dtype
        self.environment = _environment(self.device, self.device_name, dtype)
        logger.info("GPU worker on %s (%s), dtype %s", self.device_name, self.device, dtype)

    def _budget_bytes(self) -> int:
        if self.settings.gpu_memory_gb:
            return int(self.settings.gpu_memory_gb * 2**30)
        reading = read_memory(self.device)
        return int(reading.total * (0.92 if self.device.startswith("cuda") else 0.7))

    def _estimate_bytes(self, spec: ModelSpec) -> int:
        return 64 * 2**20 if self.settings.demo else int(spec.vram_gb * 2**30)

    def _load_model(self, spec: ModelSpec) -> LoadedModel:
        return load_model(spec, self.settings, self.device, self.dtype)

    def _handle_control(self, kind: str, payload: Any, future: concurrent.futures.Future) -> None:
        try:
            if kind == "release":
                report = self.models.release_all()
                self._refresh_status()  # the page shows the new state as soon as the answer arrives
                future.set_result(report)
            elif kind == "call":
                future.set_result(payload())
            elif kind == "preload":
                for task in payload:
                    if task in DEFAULT_MODEL:
                        self.models.get(get_spec(DEFAULT_MODEL[task]))
                    else:
                        logger.warning("Preload: no model for %r in this version; skipped.", task)
                future.set_result(True)
            else:
                raise ValueError(f"unknown control {kind!r}")
        except Exception as error:
            logger.error("%s failed: %s", kind, error)
            future.set_exception(error)

    def _run_job(self, job: Job) -> None:
        if job.cancelled:
            self.queue.mark_finished(job, state=JobState.CANCELLED)
            return
        self.queue.mark_running(job)
        logger.info("Job %s started (%s)%s", job.id, job.task, f", attempt {job.attempts}" if job.attempts > 1 else "")
        out_of_memory = False
        try:
            result = self.handlers[job.task](job, TaskContext(self, job))
        except JobCancelled:
            if self._stopping:
                self.queue.mark_interrupted(job, "The app stopped while this job ran.")
                logger.info("Job %s interrupted by the app stopping", job.id)
            else:
                self.queue.mark_finished(job, state=JobState.CANCELLED)
                logger.info("Job %s cancelled", job.id)
        except RequestError as error:
            self.queue.mark_finished(job, state=JobState.FAILED, error=str(error), error_key=error.key,
                                     error_params=dict(error.params))
            logger.warning("Job %s refused: %s", job.id, error)
        except Exception as error:  # the worker must go on with the next job, whatever happened
            out_of_memory = is_out_of_memory(error)
            if out_of_memory:
                message = (
                    "Out of GPU memory. Release VRAM frees models kept from earlier jobs; for video, try fewer "
                    "frames or a lower resolution, or start the app with --memory-level model_offload."
                )
                key = "oom"
            else:
                message, key = f"{type(error).__name__}: {error}", "job_failed"
            logger.error("Job %s failed: %s\n%s", job.id, message, traceback.format_exc())
            self.queue.mark_finished(job, state=JobState.FAILED, error=message, error_key=key)
        else:
            self.queue.mark_finished(job, state=JobState.DONE, result=result)
            logger.info("Job %s done in %.1f s", job.id, job.finished - job.started)
        finally:
            if out_of_memory:  # a model half-moved or activations left behind would poison the next job
                self.models.release_all()
            free_memory(self.device)

    def _refresh_status(self) -> None:
        try:
            reading = read_memory(self.device)
            memory = {"used_gib": gib(reading.used), "total_gib": gib(reading.total), "process_gib": gib(reading.process)}
        except Exception as error:  # a status strip must never take the worker down
            memory = {"error": str(error)}
        status = {
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "demo": self.settings.demo,
            "memory": memory,
            "resident": self.models.resident() if self.models else [],
        }
        with self._lock:
            self._status = status


def _environment(device: str, device_name: str, dtype: str) -> dict:
    import importlib.metadata
    import sys

    import torch

    versions = {}
    for package in ("torch", "diffusers", "transformers", "accelerate", "gradio"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": device,
        "device_name": device_name,
        "dtype": dtype,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }
