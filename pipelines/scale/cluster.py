"""One queue over many GPUs and hosts: the executor that runs the app's jobs on a Ray cluster.

``RayExecutor`` stands where the local ``GPUWorker`` stands (``app.py --cluster auto`` or an address) and
has the same members the page and the scripts use: ``submit``, ``cancel``, ``job``, ``position``,
``release_vram``, ``run_exclusive``, ``preload``, ``status``, ``current_job``, ``queue``, ``start``,
``wait_ready``, ``stop``, ``settings``, ``device``... The queue stays here, in the front process, with the
same ``JobStore`` (persistence, restart recovery and the History work as they do locally); only the
execution moves.

Each GPU of the cluster gets a worker: a Ray actor (``pipelines/cluster_worker.py``) holding one GPU and
running the jobs with the local worker's own code, its models kept resident. Here, one dispatcher thread
per worker takes jobs from the queue, preferring a job whose model that worker already holds, sends it,
and applies the job's changes as they stream back (``Job.update``), so the tabs follow a job exactly as
they follow a local one. Cancel reaches the running step through the actor; a worker that dies is
noticed (its running job is queued again once, at the head of the queue, in memory and on disk) and
started again. Nothing here imports Ray until ``start``: without ``--cluster`` the app never needs it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cluster_worker import APP_ROOT, ClusterWorker, code_fingerprint, package_versions
from ..studio.jobqueue import JobQueue
from ..studio.jobs import Job, JobState, RequestError
from ..families.catalogue import DEFAULT_MODEL
from ..studio.settings import TASKS, Settings
from ..studio.store import JobStore

logger = logging.getLogger(__name__)

NAMESPACE = "cinescribe"
IDLE_POLL_S = 5.0  # an idle worker's status (and whether it is alive) is read this often
GROW_EVERY_S = 30.0  # how often the cluster is checked for GPUs added since the start
MAX_SKIPS = 3  # a job passed over this many times (for jobs whose model a worker holds) goes next
ACTOR_CONCURRENCY = 4  # run + cancel + status at once
START_WAIT_NOTE_S = 20.0  # a worker still starting after this long says it may be waiting for a free GPU
# Environment variables the workers get from the front process (the model cache itself is per host).
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE")


class ClusterError(RuntimeError):
    """The cluster cannot be used (Ray missing, no cluster at the address); the message says what to do."""


def job_model(job: Job) -> str | None:
    """The model id a job will load: its request's ``model``, else its task's default."""
    return getattr(job.request, "model", None) or DEFAULT_MODEL.get(job.task)


@dataclasses.dataclass(eq=False)
class WorkerSlot:
    """One worker of the cluster, as the front process sees it (the actor itself may be restarted)."""

    index: int
    name: str
    actor: Any = None
    state: str = "starting"  # starting, ready, busy, restarting, refused, stopped
    problem: str = ""  # what the System tab says about it (why it restarted, was refused, a mismatch)
    info: dict = dataclasses.field(default_factory=dict)  # ClusterWorker.describe()
    status: dict = dataclasses.field(default_factory=dict)  # ClusterWorker.status()
    current: Job | None = None
    controls: collections.deque = dataclasses.field(default_factory=collections.deque)
    jobs_done: int = 0
    restarts: int = 0
    generation: int = 0
    failures: int = 0  # starts that failed in a row
    restart_requested: bool = False
    thread: threading.Thread | None = None

    def resident_ids(self) -> set[str]:
        return {model["id"] for model in self.status.get("resident", [])}

    @property
    def idle(self) -> bool:
        return self.state == "ready" and self.current is None

    def row(self, can_see: Callable[[Job], bool] | None = None) -> dict:
        """One line of the System tab's workers table; the current job's id only where ``can_see`` it."""
        info, status = self.info, self.status
        memory = status.get("memory") or {}
        vram = f"{memory['used_gib']:.1f} / {memory['total_gib']:.1f} GiB" if "used_gib" in memory else ""
        job = ""
        current = self.current
        if current is not None:
            p = current.progress
            job = f"{current.task} {current.id}" if can_see is not None and can_see(current) else current.task
            if p.stage:
                job += f" · {p.stage} {p.step}/{p.total}" if p.total else f" · {p.stage}"
        gpu = info.get("device_name", "")
        if info.get("gpu_ids"):
            gpu += f" (GPU {','.join(info['gpu_ids'])})"
        return {
            "worker": self.name,
            "host": f"{info['host']} ({info['node_ip']})" if info.get("host") else "",
            "gpu": gpu,
            "vram": vram,
            "resident": ", ".join(model["id"] for model in status.get("resident", [])),
            "job": job,
            "state": self.state,
            "jobs_done": self.jobs_done,
            "restarts": self.restarts,
            "problem": self.problem,
        }


class RayExecutor:
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

    def _worker_settings(self) -> Settings:
        return dataclasses.replace(self.settings, outputs_dir=Path(self.settings.outputs_dir).resolve(),
                                   data_dir=Path(self.settings.data_dir).resolve(), cluster="", preload=())

    def _outputs_complete(self, stored) -> bool:
        """Whether the outputs folder holds every sidecar an interrupted job was to write (as GPUWorker)."""
        from ..studio.history import outputs_complete

        return outputs_complete(self.settings.outputs_dir, stored)

    # --- workers -------------------------------------------------------------------------------------

    def _add_slot(self) -> WorkerSlot:
        index = len(self.slots)
        slot = WorkerSlot(index=index, name=f"w{index}")
        self.slots.append(slot)
        slot.thread = threading.Thread(target=self._dispatch, args=(slot,), name=f"cluster-{slot.name}", daemon=True)
        slot.thread.start()
        return slot

    def _supervise(self) -> None:
        """Add a worker for each GPU that joins the cluster after the start."""
        import ray

        while not self._stopping:
            with self._lock:
                self._lock.wait_for(lambda: self._stopping, timeout=GROW_EVERY_S)
            if self._stopping or self._workers_wanted or not self._gpus_per_worker:
                continue
            try:
                gpus = int(ray.cluster_resources().get("GPU", 0))
            except Exception as error:  # the cluster is unreachable for a moment: the workers say so
                logger.debug("Could not read the cluster's resources: %s", error)
                continue
            while len(self.slots) < gpus // self._gpus_per_worker and not self._stopping:
                slot = self._add_slot()
                logger.info("A GPU joined the cluster: worker %s added", slot.name)

    def _start_actor(self, slot: WorkerSlot) -> bool:
        """Start the slot's actor and check what it sees; False (after a pause) when it could not start."""
        import ray

        if self._actor_class is None:
            self._actor_class = ray.remote(ClusterWorker)
        slot.state, slot.generation = "starting", slot.generation + 1
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(APP_ROOT), os.environ.get("PYTHONPATH")]))}
        env.update({name: os.environ[name] for name in PASSED_ENV if name in os.environ})
        marker = {"token": self._token, **{kind: str(path) for kind, path in self._markers.items()}}
        try:
            slot.actor = self._actor_class.options(
                num_gpus=self._gpus_per_worker, num_cpus=self._cpus_per_worker, max_concurrency=ACTOR_CONCURRENCY,
                max_restarts=0, name=f"cinescribe-{self._token}-{slot.name}.{slot.generation}", namespace=NAMESPACE,
                runtime_env={"env_vars": env},
            ).remote(self._worker_settings(), slot.name, marker, logging.getLogger().getEffectiveLevel())
            ref = slot.actor.describe.remote()
            started = time.monotonic()
            while not ray.wait([ref], timeout=1.0)[0]:
                if self._stopping or slot.restart_requested:
                    self._kill(slot.actor)
                    slot.actor = None
                    return False
                if time.monotonic() - started > START_WAIT_NOTE_S and not slot.problem:
                    slot.problem = "Still starting: waiting for a free GPU in the cluster, or for its GPU to set up."
            info = ray.get(ref)
            status = ray.get(slot.actor.status.remote())
        except Exception as error:
            slot.failures += 1
            pause = min(60.0, 2.0 ** slot.failures)
            slot.problem = f"Could not start: {_short(error)} (trying again in {pause:.0f} s)"
            logger.error("Cluster worker %s could not start: %s", slot.name, _short(error),
                         exc_info=slot.failures == 1)  # the whole story once, not at every try
            if slot.actor is not None:
                self._kill(slot.actor)
            slot.actor, slot.state = None, "restarting"
            with self._lock:
                self._lock.wait_for(lambda: self._stopping or slot.restart_requested, timeout=pause)
            return False
        slot.failures = 0
        slot.info = info
        if not slot.problem.startswith(("Died", "Restarted")):  # why it was started again stays in the table
            slot.problem = ""
        self._relay_log(slot, status.pop("log", []))
        slot.status = status
        if not info["outputs_shared"]:
            slot.problem = (f"Refused: it cannot see this app's outputs folder {info['outputs']} (on {info['host']}). "
                            "On several hosts, --outputs and --data-dir must be one shared folder at the same path "
                            "on every host (docs/cluster.md). Fix it, then restart the worker.")
            logger.error("Cluster worker %s: %s", slot.name, slot.problem)
            self._kill(slot.actor)
            slot.actor, slot.state = None, "refused"
            return False
        warnings = self._mismatches(info)
        if warnings:
            slot.problem = "; ".join([*warnings, slot.problem] if slot.problem else warnings)
            logger.warning("Cluster worker %s on %s: %s", slot.name, info["host"], slot.problem)
        if self.environment.get("cluster_workers") is None:
            self.environment = {**info["environment"], "cluster": self.address, "cluster_workers": True}
            self.cuda_init_seconds = info.get("cuda_init_seconds")
        with self._lock:
            slot.state = "ready"
            if self._preload:
                slot.controls.append(("preload", self._preload, concurrent.futures.Future()))
            self._lock.notify_all()
        self._ready.set()
        logger.info("Cluster worker %s ready: %s, %s on %s (%s)", slot.name, info["device_name"], info["device"],
                    info["host"], info["node_ip"])
        return True

    def _mismatches(self, info: dict) -> list[str]:
        """What differs between the worker's host and the front process (docs/cluster.md: what must match)."""
        found = []
        if not info["data_shared"]:
            found.append(f"it cannot see the data folder ({self.settings.data_dir}): uploads for image to video "
                         "and speech to text will not be found there")
        theirs, ours = info["versions"], self._front["versions"]
        differ = [f"{name} {theirs.get(name)} (here {version})" for name, version in ours.items()
                  if theirs.get(name) != version]
        if differ:
            found.append("other versions: " + ", ".join(differ))
        if info["code"] != self._front["code"]:
            found.append("its copy of the app's code differs from this one")
        return found

    def _dispatch(self, slot: WorkerSlot) -> None:
        """The slot's thread: keep its actor running, and feed it controls and jobs, one at a time."""
        from ray.exceptions import RayActorError

        while not self._stopping:
            if slot.restart_requested:
                if slot.actor is not None:
                    self._kill(slot.actor)
                slot.actor, slot.restart_requested, slot.state = None, False, "restarting"
                slot.restarts += 1
                slot.problem = "Restarted from the System tab."
            if slot.state == "refused" and not slot.restart_requested:
                with self._lock:
                    self._lock.wait_for(lambda: self._stopping or slot.restart_requested, timeout=IDLE_POLL_S)
                continue
            if slot.actor is None and not self._start_actor(slot):
                continue
            control = job = None
            with self._lock:
                deadline = time.monotonic() + IDLE_POLL_S
                while not self._stopping and not slot.restart_requested:
                    if slot.controls:
                        control = slot.controls.popleft()
                        break
                    job = self._choose(slot)
                    if job is not None:
                        slot.current = job
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
            if job is None and control is None and (self._stopping or slot.restart_requested):
                continue  # a job or control taken just now goes on: a restart or stop reaches it there
            try:
                if control is not None:
                    self._run_control(slot, *control)
                elif job is not None:
                    self._run_job(slot, job)
                else:
                    self._poll(slot)
            except RayActorError as error:
                self._lost(slot, error)
            except Exception:  # a bug here must not end the slot's thread
                logger.exception("Cluster worker %s: dispatcher error", slot.name)
        with self._lock:
            for _, _, future in slot.controls:
                future.cancel()

    def _choose(self, slot: WorkerSlot) -> Job | None:
        """The job this slot runs next (lock held): the head of the queue when it has waited long enough,
        else the first whose model the slot holds, else the first that no other idle worker holds."""
        pending = self.queue.pending()
        if not pending or slot.state != "ready":
            return None
        head = pending[0]
        if self._skips.get(head.id, 0) >= MAX_SKIPS:
            chosen = head
        else:
            mine = slot.resident_ids()
            chosen = next((job for job in pending if job_model(job) in mine), None)
            if chosen is None:
                held = set().union(*(other.resident_ids() for other in self.slots if other is not slot and other.idle))
                chosen = next((job for job in pending if job_model(job) not in held), None)
        if chosen is None:
            return None
        for job in pending:
            if job is chosen:
                break
            self._skips[job.id] = self._skips.get(job.id, 0) + 1
        self._skips.pop(chosen.id, None)
        if len(self._skips) > 1000:
            waiting = {job.id for job in pending}
            self._skips = {job_id: n for job_id, n in self._skips.items() if job_id in waiting}
        return self.queue.take(lambda job: job is chosen)

    def _run_job(self, slot: WorkerSlot, job: Job) -> None:
        """Send ``job`` to the slot's actor and apply what streams back until its outcome."""
        import ray
        from ray.exceptions import RayActorError

        if job.cancelled:
            self._settle(slot, job, lambda: self.queue.mark_finished(job, state=JobState.CANCELLED))
            return
        self.queue.mark_running(job)
        slot.state = "busy"  # the worker logs the start and the end itself, as [w0] ... lines
        spec = {"id": job.id, "task": job.task, "request": job.request, "owner": job.owner, "created": job.created,
                "attempts": job.attempts, "notes": list(job.notes)}
        reached, final, cancel_sent = False, None, False
        try:
            for ref in slot.actor.run.remote(spec):
                event = ray.get(ref)
                reached = True
                final = self._apply(slot, job, event) or final
                if job.cancelled and not cancel_sent:
                    self._send_cancel(slot, job.id)
                    cancel_sent = True
        except RayActorError as error:
            self._lost(slot, error, job, reached)
            return
        except Exception as error:  # the worker's own code failed around the job: the job fails, it goes on
            logger.exception("Job %s: worker %s failed", job.id, slot.name)
            message = f"The cluster worker failed: {_short(error)}"
            self._settle(slot, job, lambda: self.queue.mark_finished(
                job, state=JobState.FAILED, error=message, error_key="job_failed"))
            return
        finally:
            if slot.state == "busy":
                slot.state = "ready"
        if final is None:
            self._settle(slot, job, lambda: self.queue.mark_finished(
                job, state=JobState.FAILED, error="The cluster worker ended the job without an outcome.",
                error_key="job_failed"))
            return
        state = JobState(final["state"])
        job.update(progress=final["progress"], notes=final["notes"])
        if state == JobState.CANCELLED and self._stopping:
            self._settle(slot, job, lambda: self.queue.mark_interrupted(job, "The app stopped while this job ran."))
        elif state == JobState.DONE:
            self._settle(slot, job, lambda: self.queue.mark_finished(job, state=state, result=final["result"]))
        else:
            self._settle(slot, job, lambda: self.queue.mark_finished(
                job, state=state, error=final["error"], error_key=final["error_key"],
                error_params=final["error_params"]))
        slot.jobs_done += 1

    def _apply(self, slot: WorkerSlot, job: Job, event: dict) -> dict | None:
        """Apply one streamed event to the front's job; returns the outcome when it is the last one."""
        changes = dict(event.get("changes", {}))
        for name in ("state", "started", "finished", "attempts", "version", "result", "error", "error_key",
                     "error_params"):
            changes.pop(name, None)  # the job's state moves here, through the queue (and so the store)
        preview = changes.get("preview")
        if preview is not None and hasattr(preview, "copy"):
            changes["preview"] = preview.copy()  # out of Ray's shared memory
        if changes:
            job.update(**changes)
        self._relay_log(slot, event.get("log", []))
        if "status" in event:
            status = dict(event["status"])
            self._relay_log(slot, status.pop("log", []))
            slot.status = status
        return event.get("final")

    def _settle(self, slot: WorkerSlot, job: Job, outcome: Callable[[], None]) -> None:
        """Record the job's outcome once, and free the slot (stop() may be doing the same)."""
        with self._lock:
            if slot.current is not job:
                return
            slot.current = None
        outcome()
        with self._lock:
            self._lock.notify_all()

    def _lost(self, slot: WorkerSlot, error: Exception, job: Job | None = None, reached: bool = False) -> None:
        """The slot's actor died (or was restarted): queue its job again once, and start a new actor."""
        where = f"{slot.info.get('host', '?')}, GPU {','.join(slot.info.get('gpu_ids', [])) or '-'}"
        if slot.restart_requested:
            why = f"Worker {slot.name} ({where}) was restarted while it ran."
        else:
            why = f"Worker {slot.name} ({where}) died while it ran."
            slot.problem = f"Died ({_short(error)}); started again."
            logger.error("Cluster worker %s died: %s", slot.name, _short(error))
        if slot.actor is not None:
            self._kill(slot.actor)
        slot.actor, slot.state, slot.status = None, "restarting", {}
        if not slot.restart_requested:
            slot.restarts += 1
        if job is not None:
            if self._stopping:
                self._settle(slot, job, lambda: self.queue.mark_interrupted(job, "The app stopped while this job ran."))
            else:
                def requeue():
                    again = self.queue.requeue(job, why, counts=reached)
                    logger.warning("Job %s: %s %s", job.id, why, "Queued again." if again else "Not started again.")

                self._settle(slot, job, requeue)

    def _run_control(self, slot: WorkerSlot, kind: str, payload: Any, future: concurrent.futures.Future) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        if not future.set_running_or_notify_cancel():
            return
        try:
            result = ray.get(slot.actor.control.remote(kind, payload))
            self._poll(slot)  # the table shows the new state as soon as the answer arrives
        except RayActorError as error:
            future.set_exception(ClusterError(f"Worker {slot.name} died: {_short(error)}"))
            raise
        except RayTaskError as error:
            future.set_exception(error.as_instanceof_cause())
        except Exception as error:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _control(self, slot: WorkerSlot, kind: str, payload: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            slot.controls.append((kind, payload, future))
            self._lock.notify_all()
        return future

    def _targets(self, worker: str | None) -> list[WorkerSlot]:
        """Workers a control goes to: all running ones, or the one named."""
        found = [slot for slot in self.slots if slot.state in ("ready", "busy") and worker in (None, "", slot.name)]
        if worker and not found:
            raise RequestError(f"No cluster worker {worker!r} is running.", key="no_worker", worker=worker)
        return found

    def _poll(self, slot: WorkerSlot) -> None:
        import ray
        from ray.exceptions import GetTimeoutError

        try:
            status = ray.get(slot.actor.status.remote(), timeout=60)
        except GetTimeoutError:
            slot.problem = "Not answering (no status for 60 s)."
            return
        if slot.problem.startswith("Not answering"):
            slot.problem = ""
        self._relay_log(slot, status.pop("log", []))
        slot.status = status

    def _send_cancel(self, slot: WorkerSlot, job_id: str) -> None:
        actor = slot.actor
        if actor is not None:
            try:
                actor.cancel.remote(job_id)
            except Exception as error:  # a dead worker: its dispatcher finds out
                logger.debug("Cancel of %s not sent to %s: %s", job_id, slot.name, error)

    @staticmethod
    def _relay_log(slot: WorkerSlot, lines: list) -> None:
        for level, name, message in lines:
            logging.getLogger(name).log(level, "[%s] %s", slot.name, message)

    @staticmethod
    def _kill(actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception as error:  # already gone
            logger.debug("ray.kill: %s", error)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
