"""The cluster's dispatchers: one thread per worker slot that keeps its Ray actor running and feeds it.

``SlotDispatch`` is the half of ``RayExecutor`` that talks to the workers: starting an actor and checking
what it sees (shared outputs, versions, code), choosing the next job for a slot (a job whose model it
holds first, without starving the head of the queue), streaming a job's changes back into the front's
``Job``, controls (release, preload, call), and a worker's death (its job queued again once). Ray is
imported inside the methods, never at import.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cluster_slots import (ACTOR_CONCURRENCY, GROW_EVERY_S, IDLE_POLL_S, MAX_SKIPS, NAMESPACE, PASSED_ENV,
                            START_WAIT_NOTE_S, ClusterError, WorkerSlot, _short, job_model)
from .cluster_worker import APP_ROOT, ClusterWorker
from ..studio.jobqueue import JobQueue
from ..studio.jobs import Job, JobState, RequestError
from ..studio.settings import Settings

logger = logging.getLogger("pipelines.scale.cluster")


class SlotDispatch:
    """The workers' side of ``RayExecutor`` (see ``cluster.py``); it holds no state of its own."""

    settings: Settings
    queue: JobQueue
    slots: list[WorkerSlot]
    environment: dict
    cuda_init_seconds: float | None
    address: str
    _lock: threading.Condition
    _stopping: bool
    _ready: threading.Event
    _skips: dict[str, int]
    _token: str
    _markers: dict[str, Path]
    _actor_class: Any
    _preload: tuple[str, ...]
    _front: dict
    _workers_wanted: int | None
    _cpus_per_worker: float
    _gpus_per_worker: int

    def _worker_settings(self) -> Settings:
        return dataclasses.replace(self.settings, outputs_dir=Path(self.settings.outputs_dir).resolve(),
                                   data_dir=Path(self.settings.data_dir).resolve(), cluster="", preload=())

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

