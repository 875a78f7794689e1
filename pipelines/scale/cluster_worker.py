"""One GPU of a Ray cluster: the body of the actor that ``pipelines/cluster.py`` starts on each GPU.

``ClusterWorker`` is a plain class (Ray wraps it with ``ray.remote`` at run time, so nothing here imports
Ray and importing this module has no side effect). Inside the actor it builds a ``GPUWorker`` on the GPU
Ray gave it, without its queue thread: the same device set-up, resident models (``ModelManager``), task
handlers, stages, cancel and out-of-memory handling as the local worker. The front process sends it one
job at a time through ``run``, a generator that Ray streams back (``num_returns="streaming"``): each
change of the job (progress, preview, notes), the log lines written while it runs, the worker's status,
and last the outcome. ``cancel`` and ``status`` are answered from other threads of the actor while a job
runs (the actor has ``max_concurrency`` > 1); the front process never sends two jobs or controls at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..studio.jobs import Job

logger = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parents[2]
# Packages whose versions must match on every host (docs/cluster.md).
MATCHING_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "gradio", "ray")
STATUS_EVERY_S = 2.0  # while a job runs, the worker's status (memory) goes with its events this often
_END = object()


def code_fingerprint(root: Path = APP_ROOT) -> str:
    """A short hash of the app's pipeline code, to tell hosts running another copy of the app."""
    digest = hashlib.sha256()
    pipelines = root / "pipelines"
    for path in sorted(pipelines.rglob("*.py")):
        digest.update(path.relative_to(pipelines).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def package_versions() -> dict[str, str | None]:
    import importlib.metadata
    import sys

    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in MATCHING_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def read_marker(path: str) -> str | None:
    """The token in the front process's marker file, as this host sees it (None: not there)."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


class _Outbox:
    """What the running job and the log send to the front process, drained by ``ClusterWorker.run``."""

    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()

    def put(self, kind: str, value: Any) -> None:
        self.items.put((kind, value))


class _RelayJob(Job):
    """The actor's copy of a front-process job: every change is also sent to the front process."""

    def update(self, **changes: Any) -> None:
        super().update(**changes)
        outbox = getattr(self, "outbox", None)
        if outbox is not None:
            outbox.put("changes", changes)


class _LogRelay(logging.Handler):
    """The actor's log lines, for the front process's log (and so the page's log panel)."""

    def __init__(self, owner: ClusterWorker):
        super().__init__()
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not record.name.startswith("pipelines"):
            return  # the libraries' chatter at INFO stays in the actor's own log
        try:
            message = record.getMessage()
            if record.exc_info and record.levelno >= logging.ERROR:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a bad log call must not break the job
            return
        self.owner.relay_log((record.levelno, record.name, message))


class ClusterWorker:
    """Runs in a Ray actor holding one GPU (or none: the CPU). See the module's docstring."""

    def __init__(self, settings, name: str, marker: dict[str, str], log_level: int = logging.INFO):
        self.name = name
        self.settings = settings
        self._lock = threading.Lock()
        self._outbox: _Outbox | None = None  # the running job's
        self._idle_log: list[tuple[int, str, str]] = []  # lines written between jobs, sent with the next status
        self._current: _RelayJob | None = None
        self._cancelled: set[str] = set()  # cancels that arrived before their job
        self._setup_logging(log_level)
        import ray

        self.node_ip = ray.util.get_node_ip_address()
        self.gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.marker = marker
        from ..device.worker import GPUWorker

        self.worker = GPUWorker(settings)
        self.worker.setup()  # this actor's thread pool now owns the device; calls are one at a time
        self.worker.environment["cluster_worker"] = {"name": name, "host": self.host, "node_ip": self.node_ip,
                                                     "gpu_ids": self.gpu_ids}
        logger.info("Cluster worker %s ready on %s (%s), %s %s, GPU ids %s", name, self.host, self.node_ip,
                    self.worker.device_name, self.worker.device, self.gpu_ids or "none")

    def _setup_logging(self, level: int) -> None:
        root = logging.getLogger()
        if not any(isinstance(handler, _LogRelay) for handler in root.handlers):
            root.addHandler(_LogRelay(self))
        stream = logging.StreamHandler()  # the actor's own log file, under Ray's session logs
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(stream)
        root.setLevel(level)

    def relay_log(self, line: tuple[int, str, str]) -> None:
        with self._lock:
            if self._outbox is not None:
                self._outbox.put("log", line)
            else:
                self._idle_log.append(line)
                del self._idle_log[:-200]

    # --- asked by the front process -----------------------------------------------------------------

    def describe(self) -> dict:
        """Where this worker runs and what it sees: for the System tab and the start checks."""
        settings = self.settings
        return {
            "name": self.name,
            "host": self.host,
            "node_ip": self.node_ip,
            "pid": self.pid,
            "gpu_ids": self.gpu_ids,
            "device": self.worker.device,
            "device_name": self.worker.device_name,
            "dtype": self.worker.dtype,
            "environment": self.worker.environment,
            "cuda_init_seconds": self.worker.cuda_init_seconds,
            "outputs": str(settings.outputs_dir),
            "outputs_shared": read_marker(self.marker["outputs"]) == self.marker["token"],
            "data_shared": read_marker(self.marker["data"]) == self.marker["token"],
            "code": code_fingerprint(),
            "versions": package_versions(),
        }

    def status(self) -> dict:
        """Memory, resident models, load counts and the running job, without touching the device."""
        status = self.worker.status()
        status["load_counts"] = dict(self.worker.models.load_counts) if self.worker.models else {}
        with self._lock:
            status["log"], self._idle_log = self._idle_log, []
        return status

    def cancel(self, job_id: str) -> bool:
        """Stop job ``job_id`` at its next step (or before it starts, if it has not arrived yet)."""
        with self._lock:
            job = self._current
            if job is not None and job.id == job_id:
                job.cancel_event.set()
                return True
            self._cancelled.add(job_id)
            return False

    def control(self, kind: str, payload: Any = None) -> Any:
        """Release VRAM, preload or run a function, between jobs (the front process sees to that)."""
        return self.worker.control(kind, payload)

    def run(self, spec: dict):
        """Run one job; yields dicts of changes as they happen, and last ``{"final": ...}`` with its outcome.

        ``spec`` holds the job's id, task, request, owner, created, attempts (already counted by the front
        process) and notes.
        """
        outbox = _Outbox()
        # The local worker counts the start itself (mark_running): start one below, to agree with the front.
        job = _RelayJob(task=spec["task"], request=spec["request"], owner=spec.get("owner", ""), id=spec["id"],
                        created=spec.get("created", time.time()), attempts=max(0, spec.get("attempts", 1) - 1),
                        notes=list(spec.get("notes", [])))
        with self._lock:
            if job.id in self._cancelled:
                self._cancelled.discard(job.id)
                job.cancel_event.set()
            self._current = job
            self._outbox = outbox
            job.outbox = outbox
            idle_log, self._idle_log = self._idle_log, []
        for line in idle_log:
            outbox.put("log", line)

        def execute() -> None:
            try:
                self.worker.run_job(job)
            finally:
                outbox.put("end", _END)

        thread = threading.Thread(target=execute, name=f"job-{job.id}", daemon=True)
        thread.start()
        try:
            sent_status = 0.0
            ended = False
            while not ended:
                event, ended = self._drain(outbox)
                if time.monotonic() - sent_status >= STATUS_EVERY_S and not ended:
                    event["status"] = self.worker.status()
                    sent_status = time.monotonic()
                if event:
                    yield event
            thread.join()
        finally:
            with self._lock:
                self._current = None
                self._outbox = None
        yield {
            "final": {"state": job.state.value, "result": job.result, "error": job.error, "error_key": job.error_key,
                      "error_params": dict(job.error_params), "notes": list(job.notes),
                      "progress": job.progress},
            "status": self.status(),
        }

    @staticmethod
    def _drain(outbox: _Outbox) -> tuple[dict, bool]:
        """Everything waiting (at least one item, or nothing after ``STATUS_EVERY_S``), merged into one event:
        later values of a field win, log lines add up. Returns the event and whether the job has ended."""
        event: dict = {}
        try:
            items = [outbox.items.get(timeout=STATUS_EVERY_S)]
        except queue.Empty:
            return event, False
        while True:
            try:
                items.append(outbox.items.get_nowait())
            except queue.Empty:
                break
        ended = False
        for kind, value in items:
            if kind == "changes":
                event.setdefault("changes", {}).update(value)
            elif kind == "log":
                event.setdefault("log", []).append(value)
            else:
                ended = True
        return event, ended
