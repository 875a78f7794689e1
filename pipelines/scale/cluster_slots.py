"""The cluster's worker slots as the front process sees them, and the names the executor shares.

A ``WorkerSlot`` is one GPU worker of the Ray cluster (its actor, state, last status, current job and
pending controls); ``job_model`` says which model a job will load, so a job goes to a worker that holds
it. No Ray import here.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from ..families.catalogue import DEFAULT_MODEL
from ..studio.jobs import Job

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


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
