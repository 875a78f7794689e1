"""Jobs: what was asked, where it stands, and how a waiting UI hears about changes."""

from __future__ import annotations

import enum
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobCancelled(Exception):
    """Raised inside a task when its job's cancel flag is seen."""


class RequestError(ValueError):
    """Bad input: the message is shown to the user as is. ``key`` and ``params`` let the UI translate it."""

    def __init__(self, message: str, key: str = "", **params: Any):
        super().__init__(message)
        self.key = key
        self.params = params


def parse_number(value: Any, name: str, kind: type, low: float, high: float, key: str) -> Any:
    """``value`` as ``kind`` (int or float) within [low, high], or a ``RequestError`` naming field and range.

    Keys are ``<key>_type`` (not a number) and ``<key>_range`` (out of range), for the UI's translations.
    """
    if isinstance(value, str):
        value = value.strip()
    try:
        number = float(value)
        if not math.isfinite(number) or (kind is int and number != int(number)):
            raise ValueError
        number = int(number) if kind is int else number
    except (TypeError, ValueError, OverflowError):
        whole = "a whole number" if kind is int else "a number"
        raise RequestError(f"{name} must be {whole}, not {value!r}.", key=f"{key}_type", value=str(value)) from None
    if not low <= number <= high:
        raise RequestError(
            f"{name} must be between {low:g} and {high:g}, not {number:g}.", key=f"{key}_range", low=low, high=high,
            value=number,
        )
    return number


@dataclass
class Progress:
    stage: str = ""  # "load", "text_encode", "denoise", "decode", "encode"
    step: int = 0
    total: int = 0
    clip: int = 1
    clips: int = 1
    it_per_s: float | None = None
    eta_s: float | None = None


@dataclass
class Job:
    """One unit of work for the GPU worker. Updated by the worker thread, read by UI threads."""

    task: str
    request: Any
    owner: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: Progress = field(default_factory=Progress)
    preview: Any = None  # small uint8 RGB image, or None
    result: Any = None
    error: str = ""
    error_key: str = ""
    error_params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    attempts: int = 0  # times it started running (a job interrupted by a restart runs again once)
    stored: bool = False  # recorded in the job store on disk
    version: int = 0
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def update(self, **changes: Any) -> None:
        """Change fields and wake everyone waiting for this job."""
        with self._changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self.version += 1
            self._changed.notify_all()

    def wait_for_change(self, seen_version: int, timeout: float) -> int:
        """Block until ``version`` moves past ``seen_version`` (or ``timeout`` seconds); return it."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen_version or self.state.finished, timeout=timeout)
            return self.version

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def snapshot(self) -> dict:
        """Plain data for the UI and the API."""
        p = self.progress
        return {
            "id": self.id,
            "task": self.task,
            "state": self.state.value,
            "stage": p.stage,
            "step": p.step,
            "total": p.total,
            "clip": p.clip,
            "clips": p.clips,
            "it_per_s": p.it_per_s,
            "eta_s": p.eta_s,
            "error": self.error,
            "notes": list(self.notes),
            "attempts": self.attempts,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


class StepClock:
    """Speed and time left of a loop of steps, from the steps seen so far."""

    def __init__(self, total: int):
        self.total = total
        self.start = time.perf_counter()
        self.done = 0

    def tick(self) -> tuple[float | None, float | None]:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        if elapsed <= 0:
            return None, None
        rate = self.done / elapsed
        return rate, max(0.0, (self.total - self.done) / rate)
