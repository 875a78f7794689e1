"""Queueing a checked batch and following it: one job per row, and what each row produced.

``submit_batch`` queues every row of a valid ``BatchPlan`` (``batch.py`` reads and checks it) as its own
job, with ``batch <id> row <n>`` in the request's notes, all rows or none; ``BatchRun`` follows those
jobs, cancels them and turns each into a ``RowOutcome`` (its outputs, or why it has none). It only
needs an executor's ``submit`` and ``cancel``. No torch, no gradio.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..studio.jobs import Job, JobState

if TYPE_CHECKING:
    from .batch import BatchPlan


def batch_note(batch: str, row: int) -> str:
    return f"batch {batch} row {row}"


def submit(worker, task: str, request: Any, owner: str = "", batch: str = "", row: int = 0) -> Job:
    """``worker.submit`` with the batch and row recorded in the request's notes (and so in its sidecar)."""
    if batch:
        request = dataclasses.replace(request, notes=[*request.notes, batch_note(batch, row)])
    return worker.submit(task, request, owner=owner)


@dataclass
class RowOutcome:
    """What one row produced, or why it did not."""

    row: int
    job: str
    state: str
    ok: bool
    outputs: list[str]
    error: str = ""
    error_key: str = ""
    error_params: dict = field(default_factory=dict)
    seconds: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def job_outputs(job: Job) -> tuple[list[str], list[dict]]:
    """The files a finished job wrote (main outputs first), and the per-file failures of an ASR job."""
    result = job.result or {}
    if job.task == "asr":
        files = result.get("files", [])
        outputs = [path for entry in files if entry.get("ok") for path in entry.get("files", {}).values()]
        return outputs, [entry for entry in files if not entry.get("ok")]
    clips = result.get("clips", [])
    outputs = [clip["video"] for clip in clips] + [clip["sidecar"] for clip in clips]
    if result.get("input"):
        outputs.append(result["input"])
    return outputs, []


def row_outcome(row: int, job: Job) -> RowOutcome:
    seconds = job.finished - job.started if job.finished and job.started else None
    outcome = RowOutcome(row=row, job=job.id, state=job.state.value, ok=False, outputs=[], seconds=seconds)
    if job.state == JobState.DONE:
        outcome.outputs, failures = job_outputs(job)
        outcome.ok = not failures
        if failures:
            first = failures[0]
            outcome.error = "; ".join(entry.get("error", "") for entry in failures)
            outcome.error_key, outcome.error_params = first.get("error_key", ""), dict(first.get("error_params", {}))
    elif job.state == JobState.FAILED:
        outcome.error, outcome.error_key, outcome.error_params = job.error, job.error_key, dict(job.error_params)
    elif job.state == JobState.CANCELLED:
        outcome.error, outcome.error_key = job.error or "Stopped before it finished.", "batch_cancelled"
    return outcome


@dataclass
class BatchRun:
    """The jobs of a submitted batch, in row order."""

    id: str
    task: str
    rows: list[int]
    jobs: list[Job]

    @property
    def finished(self) -> bool:
        return all(job.state.finished for job in self.jobs)

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        for job in self.jobs:
            counts[job.state.value] += 1
        return counts

    def wait(self, timeout: float) -> bool:
        """Block until one of the jobs changes (or ``timeout``); True when all are finished.

        The worker runs jobs in order, so the first unfinished job is the running one, or the next
        to run: waiting on it sees every change that matters.
        """
        waiting = next((job for job in self.jobs if not job.state.finished), None)
        if waiting is not None:
            waiting.wait_for_change(waiting.version, timeout)
        return self.finished

    def cancel(self, worker) -> int:
        """Cancel the queued jobs first (so none starts meanwhile), then the running one; returns how many."""
        queued = [job for job in self.jobs if job.state == JobState.QUEUED]
        running = [job for job in self.jobs if job.state == JobState.RUNNING]
        return sum(1 for job in [*reversed(queued), *running] if worker.cancel(job.id))

    def outcomes(self) -> list[RowOutcome]:
        return [row_outcome(row, job) for row, job in zip(self.rows, self.jobs)]


def submit_batch(worker, plan: BatchPlan, owner: str = "") -> BatchRun:
    """Queue every row of a valid plan as its own job; if queueing stops halfway, the queued ones are
    cancelled again (all rows or none)."""
    plan.require_valid()
    jobs: list[Job] = []
    try:
        for row in plan.rows:
            jobs.append(submit(worker, plan.task, row.request, owner=owner, batch=plan.id, row=row.row))
    except BaseException:
        for job in reversed(jobs):
            worker.cancel(job.id)
        raise
    return BatchRun(id=plan.id, task=plan.task, rows=[row.row for row in plan.rows], jobs=jobs)


def describe_row(task: str, request: Any) -> tuple[str, str]:
    """What a row is (its prompt or files) and its key settings, in a line each, for tables and logs."""
    if request is None:
        return "", ""
    if task == "asr":
        what = ", ".join(Path(f).name for f in request.files)
        return what, f"{request.model} · {request.language} · {request.task} · {request.mode}"
    what = request.prompt if len(request.prompt) <= 80 else request.prompt[:77] + "..."
    parts = [request.model, request.preset or "-", request.resolution, f"{request.width}x{request.height}",
             f"{request.frames} frames", f"{request.steps} steps", f"seed {request.seed}"]
    if task == "i2v":
        parts.append(Path(str(request.image)).name)
    if request.clips > 1:
        parts.append(f"{request.clips} clips")
    return what, " · ".join(parts)
