"""One queue over many GPUs and hosts: the executor that runs the app's jobs on a Ray cluster.

``RayExecutor`` stands where the local ``GPUWorker`` stands (``app.py --cluster auto`` or an address) and
has the same members the page and the scripts use: ``submit``, ``cancel``, ``job``, ``position``,
``release_vram``, ``run_exclusive``, ``preload``, ``status``, ``current_job``, ``queue``, ``start``,
``wait_ready``, ``stop``, ``settings``, ``device``... The queue stays here, in the front process, with the
same ``JobStore`` (persistence, restart recovery and the History work as they do locally); only the
execution moves.

Each GPU of the cluster gets a worker: a Ray actor (``pipelines/scale/cluster_worker.py``) holding one GPU and
running the jobs with the local worker's own code, its models kept resident. Here, one dispatcher thread
per worker takes jobs from the queue, preferring a job whose model that worker already holds, sends it,
and applies the job's changes as they stream back (``Job.update``), so the tabs follow a job exactly as
they follow a local one. Cancel reaches the running step through the actor; a worker that dies is
noticed (its running job is queued again once, at the head of the queue, in memory and on disk) and
started again. Nothing here imports Ray until ``start``: without ``--cluster`` the app never needs it.

The members are those of ``pipelines/scale/executor.py``'s ``Executor``; the slots are in ``cluster_slots.py``
and the dispatchers that talk to the workers in ``cluster_dispatch.py``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cluster_dispatch import SlotDispatch
from .cluster_slots import MAX_SKIPS, NAMESPACE, ClusterError, WorkerSlot, job_model  # noqa: F401 (public names)
from .cluster_worker import code_fingerprint, package_versions
from ..studio.jobqueue import JobQueue
from ..studio.jobs import Job, RequestError
from ..studio.settings import TASKS, Settings
from ..studio.store import JobStore

logger = logging.getLogger(__name__)

__all__ = ["ClusterError", "RayExecutor", "WorkerSlot", "job_model", "MAX_SKIPS"]


class RayExecutor(SlotDispatch):
    """The app's executor on a Ray cluster; see the module's docstring."""

    def __init__(self, settings: Settings, store: JobStore | None = None, address: str | None = None,
                 workers: int | None = None, cpus_per_worker: float = 1.0):
        self.settings = settings
        self.address = (settings.cluster if address is None else address) or "auto"
        self.queue = JobQueue(store)
        self.tasks = TASKS
        # The front process never touches a GPU: these describe it; each worker's device is in status().
        self.device, self.dtype, self.device_name = "cpu", settings.dtype, "Ray cluster"
        self.environment: dict = {"cluster": self.address}
        self.cuda_init_seconds: float | None = None
        self.slots: list[WorkerSlot] = []
        self._workers_wanted = workers
        self._cpus_per_worker = cpus_per_worker
        self._gpus_per_worker = max(1, settings.parallel)
        self._lock = self.queue.lock
        self._stopping = False
        self._ready = threading.Event()
        self._skips: dict[str, int] = {}
        self._token = uuid.uuid4().hex[:12]
        self._markers: dict[str, Path] = {}
        self._owns_ray = False
        self._actor_class = None
        self._preload: tuple[str, ...] = ()
        self._front = {"code": code_fingerprint(), "versions": package_versions()}
        self._supervisor: threading.Thread | None = None

    # --- start and stop ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the cluster (``ClusterError`` when that fails), queue again the jobs left from the last
        run, and start one worker per GPU in the background (``wait_ready`` waits for the first)."""
        if self.slots:
            return
        ray = self._connect()
        # Ray builds its serializers at the first use, importing pydantic.v1 as it goes; done first in the
        # workers' threads, while the page is built on this one, the two imports collide (KeyError).
        ray.put(None)
        self._write_markers()
        self.queue.restore(self._outputs_complete)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = self._workers_wanted or gpus // self._gpus_per_worker
        if count < 1 and gpus:  # --parallel N with fewer GPUs: one worker with them all (parallel.py copes)
            logger.warning("The Ray cluster has %d GPU(s), fewer than --parallel %d; one worker gets them all.",
                           gpus, self._gpus_per_worker)
            self._gpus_per_worker, count = gpus, 1
        elif count < 1:
            logger.warning("The Ray cluster has no GPU; one worker runs on a CPU.")
            self._gpus_per_worker, count = 0, 1
        logger.info("Ray cluster %s: %d GPU(s), %d worker(s)", self.address, gpus, count)
        for _ in range(count):
            self._add_slot()
        self._supervisor = threading.Thread(target=self._supervise, name="cluster-supervisor", daemon=True)
        self._supervisor.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once a worker is ready to run jobs."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running jobs stop at their next step and run again after a restart (as locally);
        the workers end with the app."""
        import ray

        with self._lock:
            self._stopping = True
            self.queue.close()
            running = [(slot, slot.current) for slot in self.slots if slot.current is not None]
            for _, job in running:
                job.cancel_event.set()
            self._lock.notify_all()
        for slot, job in running:
            self._send_cancel(slot, job.id)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(max(0.1, deadline - time.monotonic()))
        for slot in self.slots:
            with self._lock:
                job, slot.current = slot.current, None
            if job is not None:  # the worker did not answer in time
                self.queue.mark_interrupted(job, "The app stopped while this job ran.")
            if slot.actor is not None:
                self._kill(slot.actor)
            slot.state = "stopped"
            for _, _, future in slot.controls:
                future.cancel()
        for marker in self._markers.values():
            marker.unlink(missing_ok=True)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    # --- the same members as GPUWorker ---------------------------------------------------------------

    def submit(self, task: str, request: Any, owner: str = "") -> Job:
        if task not in self.tasks:
            raise RequestError(f"No task {task!r} in this app; it has {', '.join(self.tasks)}.", key="unknown_task")
        from ..loras.check import check_request

        check_request(request, self.settings)  # the LoRA files, here as in GPUWorker.submit: before the queue
        return self.queue.submit(task, request, owner)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or a running one at its next step. False if unknown or finished."""
        if not self.queue.cancel(job_id):
            return False
        for slot in list(self.slots):
            current = slot.current
            if current is not None and current.id == job_id:
                self._send_cancel(slot, job_id)
        return True

    def job(self, job_id: str) -> Job | None:
        return self.queue.job(job_id)

    def position(self, job: Job) -> int:
        return self.queue.position(job)

    def release_vram(self, timeout: float | None = None, worker: str | None = None) -> dict:
        """Drop the resident models of every worker (or of ``worker``), each between its jobs; the measured
        result, added up, with each worker's own report under ``workers``."""
        futures = {slot.name: self._control(slot, "release", None) for slot in self._targets(worker)}
        reports = {name: future.result(timeout) for name, future in futures.items()}
        return {
            "released": [f"{model} ({name})" for name, report in reports.items() for model in report["released"]],
            "freed_bytes": sum(report["freed_bytes"] for report in reports.values()),
            "before_bytes": sum(report["before_bytes"] for report in reports.values()),
            "after_bytes": sum(report["after_bytes"] for report in reports.values()),
            "workers": reports,
        }

    def run_exclusive(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn`` (it must pickle) on one worker between its jobs, where it may use that worker's GPU."""
        targets = self._targets(None)
        if not targets:
            raise ClusterError("No cluster worker is ready.")
        return self._control(targets[0], "call", fn).result(timeout)

    def preload(self, tasks: tuple[str, ...]) -> concurrent.futures.Future:
        """Load these tasks' default models on every worker (and on workers started later)."""
        self._preload = tuple(tasks)
        futures = [self._control(slot, "preload", self._preload) for slot in self._targets(None)]
        done: concurrent.futures.Future = concurrent.futures.Future()

        def finish(_):
            if all(future.done() for future in futures) and not done.done():
                done.set_result(all(not future.cancelled() and future.exception() is None for future in futures))

        for future in futures:
            future.add_done_callback(finish)
        if not futures:
            done.set_result(False)
        return done

    def restart_worker(self, worker: str | None = None) -> list[str]:
        """Restart every worker (or ``worker``) now: a job it was running is queued again (once, as when a
        worker dies). A worker refused at start (outputs not shared) tries again. Returns the names."""
        names = []
        with self._lock:
            for slot in self.slots:
                if worker not in (None, "", slot.name) or slot.state == "stopped":
                    continue
                slot.restart_requested = True
                names.append(slot.name)
                if slot.actor is not None:
                    self._kill(slot.actor)
            self._lock.notify_all()
        if names:
            logger.info("Restarting cluster worker(s) %s", ", ".join(names))
        return names

    def status(self) -> dict:
        """Device, memory, resident models, queue, current job and each worker's line, without waiting on
        any worker (it is what they last reported)."""
        with self._lock:
            slots = list(self.slots)
            current = self.current_job()
            workers = [slot.row() for slot in slots]
        ready = [slot for slot in slots if slot.state in ("ready", "busy")]
        memory = {"used_gib": 0.0, "total_gib": 0.0, "process_gib": 0.0}
        counted = set()  # each GPU once; a host's RAM once when workers run on its CPU
        for slot in ready:
            reading = slot.status.get("memory") or {}
            device = (slot.info.get("node_ip"), tuple(slot.info.get("gpu_ids", []))
                      if slot.info.get("device", "").startswith("cuda") else ())
            memory["process_gib"] = round(memory["process_gib"] + reading.get("process_gib", 0.0), 2)
            if device not in counted:
                counted.add(device)
                for key in ("used_gib", "total_gib"):
                    memory[key] = round(memory[key] + reading.get(key, 0.0), 2)
        resident: dict[str, dict] = {}
        for slot in ready:
            for model in slot.status.get("resident", []):
                entry = resident.setdefault(model["id"], {**model, "workers": []})
                entry["workers"].append(slot.name)
        devices = {slot.info.get("device", "") for slot in ready}
        hosts = {slot.info.get("node_ip") for slot in ready}
        first = ready[0].info if ready else {}
        return {
            "device": "cuda" if any(device.startswith("cuda") for device in devices) else "cpu",
            "device_name": f"Ray cluster: {len(ready)} of {len(slots)} workers ready on {len(hosts)} host(s)",
            "dtype": first.get("dtype", self.dtype),
            "demo": self.settings.demo,
            "memory": memory if ready else {"error": "no worker ready"},
            "resident": list(resident.values()),
            "queue": len(self.queue),
            "current": current.snapshot() if current is not None else None,
            "cluster": {"address": self.address, "workers": len(slots), "ready": len(ready)},
            "workers": workers,
        }

    def current_job(self) -> Job | None:
        """The running job that started first (the live panel shows one; each tab follows its own)."""
        running = [slot.current for slot in list(self.slots) if slot.current is not None]
        return min(running, key=lambda job: job.started or 0.0) if running else None

    def workers(self, can_see: Callable[[Job], bool] | None = None) -> list[dict]:
        """The System tab's table: each worker's host, GPU, VRAM, resident models, current job (its id only
        where ``can_see`` it: ``status()`` shows none, the page shows a user their own) and state."""
        with self._lock:
            return [slot.row(can_see) for slot in self.slots]

    # --- connecting ----------------------------------------------------------------------------------

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ClusterError("--cluster needs Ray, which is not installed here: "
                               "pip install -r requirements-cluster.txt (see docs/cluster.md).") from None
        if ray.is_initialized():  # connected already (an embedding program, the tests): use that cluster
            self.address = ray.get_runtime_context().gcs_address
            return ray
        address = None if self.address == "auto" else self.address
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as error:
            raise ClusterError(
                f"Could not connect to the Ray cluster at {self.address!r}: {error}. Start one with "
                "`ray start --head` (docs/cluster.md), or use --cluster auto."
            ) from None
        self._owns_ray = True
        self.address = ray.get_runtime_context().gcs_address
        return ray

    def _write_markers(self) -> None:
        """A file with this run's token in the outputs and data folders: each worker checks it sees them."""
        for kind, folder in (("outputs", self.settings.outputs_dir), ("data", self.settings.data_dir)):
            folder = Path(folder).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / f".cinescribe-cluster-{self._token}"
            marker.write_text(self._token, encoding="utf-8")
            self._markers[kind] = marker

    def _outputs_complete(self, stored) -> bool:
        """Whether the outputs folder holds every sidecar an interrupted job was to write (as GPUWorker)."""
        from ..studio.history import outputs_complete

        return outputs_complete(self.settings.outputs_dir, stored)
