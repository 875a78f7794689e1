"""The queue in the front process: jobs waiting, jobs known, and their record on disk.

Executors (the local GPU worker, or a cluster dispatcher) take jobs from here in order and report each
change of state back through ``mark_running`` / ``mark_finished`` / ``mark_interrupted``, which also
write them to the ``JobStore`` when there is one. Progress within a job stays in memory (``Job.update``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .jobs import Job, JobState, Progress, RequestError
from .store import MAX_ATTEMPTS, JobStore, StoredJob

logger = logging.getLogger(__name__)

_FINISHED_KEPT = 200  # finished jobs kept in memory for followers; the store keeps all of them


class JobQueue:
    def __init__(self, store: JobStore | None = None):
        self.store = store
        self.lock = threading.Condition()  # executors wait on it for new jobs (and their own messages)
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._closed = False

    # --- from any thread ------------------------------------------------------------------------

    def restore(self, already_done: Callable[[StoredJob], bool] | None = None) -> int:
        """Queue again what the store holds from the last run (see ``JobStore.recover``); returns how many.

        ``already_done`` tells whether an interrupted job had in fact written all its outputs before the
        app died (between its last file and its record): such a job is marked done, not run twice.
        """
        if self.store is None:
            return 0
        requeued, given_up = self.store.recover()
        if already_done is not None:
            finished = [stored for stored in requeued if stored.attempts and already_done(stored)]
            for stored in finished:
                stored.state = "done"
                stored.notes = [*stored.notes, "All its outputs were written before the app stopped; not run again."]
                self.store.mark_done(stored)
                logger.info("Job %s had finished its outputs before the app stopped; not run again", stored.id)
            requeued = [stored for stored in requeued if stored not in finished]
        for stored in given_up:
            logger.warning("Job %s (%s) was interrupted %d times; not started again.", stored.id, stored.task,
                           stored.attempts)
        with self.lock:
            for stored in requeued:
                job = Job(task=stored.task, request=stored.request, owner=stored.owner, id=stored.id,
                          created=stored.created, attempts=stored.attempts, notes=list(stored.notes), stored=True)
                self._pending.append(job)
                self._jobs[job.id] = job
            self.lock.notify_all()
        if requeued:
            logger.info("%d job(s) from before the restart are queued again", len(requeued))
        return len(requeued)

    def submit(self, task: str, request: Any, owner: str = "") -> Job:
        job = Job(task=task, request=request, owner=owner)
        with self.lock:
            if self._closed:
                raise RequestError("The app is restarting; try again in a moment.", key="restarting")
            if self.store is not None:
                job.stored = self.store.add(job)  # on disk before anyone is told it is queued
            self._pending.append(job)
            self._jobs[job.id] = job
            self._trim_finished()
            self.lock.notify_all()
        logger.info("Job %s queued (%s), %d in queue", job.id, task, len(self._pending))
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or flag a running one (its executor stops it at the next step)."""
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None or job.state.finished:
                return False
            job.cancel_event.set()
            if job in self._pending:
                self._pending.remove(job)
                self._finish_locked(job, state=JobState.CANCELLED, finished=time.time())
            self.lock.notify_all()
        logger.info("Job %s: cancel requested", job_id)
        return True

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 while running or finished; 1 for the next job to run, 2 behind it, and so on."""
        with self.lock:
            try:
                return self._pending.index(job) + 1
            except ValueError:
                return 0

    def pending(self) -> list[Job]:
        with self.lock:
            return list(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Stop taking jobs. Waiting jobs stay queued on disk (they run after a restart); their followers
        in this process are told the app is shutting down."""
        with self.lock:
            self._closed = True
            for job in self._pending:
                job.cancel_event.set()
                note = " It is kept in the queue and runs when the app is back." if self._stored(job) else ""
                job.update(state=JobState.CANCELLED, finished=time.time(), error="The app is shutting down." + note,
                           error_key="shutting_down")
            self._pending.clear()
            self.lock.notify_all()

    # --- for executors --------------------------------------------------------------------------

    def take(self, accept: Callable[[Job], bool] | None = None) -> Job | None:
        """The first waiting job (``accept`` may skip some); call with ``lock`` held or not."""
        with self.lock:
            for job in self._pending:
                if accept is None or accept(job):
                    self._pending.remove(job)
                    return job
            return None

    def mark_running(self, job: Job) -> None:
        job.update(state=JobState.RUNNING, started=time.time(), attempts=job.attempts + 1)
        self._save(job)

    def mark_finished(self, job: Job, **changes: Any) -> None:
        """``changes`` must include the final ``state``; ``finished`` defaults to now."""
        changes.setdefault("finished", time.time())
        with self.lock:
            self._finish_locked(job, **changes)

    def mark_interrupted(self, job: Job, why: str) -> None:
        """The job was running when the app stopped: queued again on disk once, failed after that."""
        again = job.attempts < MAX_ATTEMPTS and self._stored(job)
        note = "Interrupted when the app stopped; queued again." if again else None
        job.update(state=JobState.CANCELLED, finished=time.time(),
                   error=why + (" It runs again when the app is back." if again else ""), error_key="interrupted",
                   notes=[*job.notes, note] if note else job.notes)
        if again:  # in memory its followers hear it stopped; on disk it waits for the next start
            self.store.requeue(job)
        else:
            self._save(job)

    def requeue(self, job: Job, why: str, counts: bool = True) -> bool:
        """An executor lost ``job`` while it ran (a cluster worker died, ``pipelines/cluster.py``): queued
        again at the head, in memory and on disk, while it has started fewer than ``MAX_ATTEMPTS`` times;
        failed after that. ``counts=False``: the job never reached the worker, so this start is not counted.
        True when it is queued again."""
        if not counts:
            job.attempts = max(0, job.attempts - 1)
        if job.attempts >= MAX_ATTEMPTS:
            self.mark_finished(job, state=JobState.FAILED, error_key="worker_lost",
                               error=f"{why} It had been started {job.attempts} times; not started again. "
                               "Check the log, then submit it again.")
            return False
        with self.lock:
            if self._closed:  # the app is stopping: it runs after the restart, as any interrupted job
                self.mark_interrupted(job, why)
                return False
            job.update(state=JobState.QUEUED, started=None, progress=Progress(), preview=None,
                       notes=[*job.notes, f"{why} Queued again."])
            if self._stored(job):
                self.store.requeue(job)
            self._pending.appendleft(job)
            self.lock.notify_all()
        return True

    # --- inside ---------------------------------------------------------------------------------

    def _finish_locked(self, job: Job, **changes: Any) -> None:
        job.update(**changes)
        self._save(job)

    def _stored(self, job: Job) -> bool:
        return self.store is not None and job.stored

    def _save(self, job: Job) -> None:
        if self.store is not None and job.stored:
            try:
                self.store.save(job)
            except Exception as error:  # a full disk must not stop the queue; the job still runs
                logger.error("Could not record job %s on disk: %s", job.id, error)

    def _trim_finished(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.state.finished]
        for job_id in finished[: max(0, len(finished) - _FINISHED_KEPT)]:
            del self._jobs[job_id]
