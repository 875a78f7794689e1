"""The executor interface: what the page, ``app.py`` and the scripts may ask of whatever runs the jobs.

Two classes implement it: the local ``GPUWorker`` (``pipelines/device/worker.py``, one GPU in this
process) and ``RayExecutor`` (``pipelines/scale/cluster.py``, one worker per GPU of a Ray cluster). Both
keep the queue in this process (``JobQueue``, persisted by a ``JobStore``), so the History and restart
recovery work the same way. ``tests/test_structure.py`` checks both against this Protocol: member names
and call signatures. This module imports neither torch nor Ray.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..studio.jobqueue import JobQueue
    from ..studio.jobs import Job
    from ..studio.settings import Settings


@runtime_checkable
class Executor(Protocol):
    """Runs the app's jobs. Every member is safe to call from any thread (the page's handlers)."""

    settings: Settings
    queue: JobQueue  # the jobs, in this process (``queue.store`` is the History's store)
    device: str  # "cuda", "cpu"...; the Ray front process says "cpu" (its workers' devices are in status())
    dtype: str
    device_name: str
    environment: dict  # versions and runtime, for the System tab and the benchmark's table
    cuda_init_seconds: float | None

    def start(self) -> None:
        """Queue again the jobs left from the last run and start running (in the background)."""

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once jobs can run (the device is set up, or a cluster worker is ready)."""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a running job stops at its next step and runs again after a restart."""

    def submit(self, task: str, request: Any, owner: str = "") -> Job:
        """Queue a job (``RequestError`` for an unknown task) and return it."""

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or a running one at its next step. False if unknown or finished."""

    def job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    def position(self, job: Job) -> int:
        """0 while running or finished; 1 for the next job to run, 2 behind it, and so on."""

    def release_vram(self, timeout: float | None = None) -> dict:
        """Drop the resident models between jobs; the measured result once it has happened."""

    def run_exclusive(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn`` between jobs where it may use the device, and return its result."""

    def preload(self, tasks: tuple[str, ...]) -> concurrent.futures.Future:
        """Load these tasks' default models between jobs."""

    def status(self) -> dict:
        """Device, memory, resident models, queue and current job, without waiting on the device."""

    def current_job(self) -> Job | None:
        """The running job (the first started, where several run)."""
