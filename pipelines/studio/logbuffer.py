"""A bounded ring buffer of formatted log lines, fed by ``logging``, read by the live log panel.

Each line keeps whose it is, so a shared studio shows each user only their own job lines and the app's
general ones: a record's ``owner`` (``logger.info(..., extra={"owner": name})``; ``ADMINS_ONLY`` for
lines only admins may read), else the job its message names (``Job <id>``), whose owner ``tail`` asks.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Callable

ADMINS_ONLY = "\x00admins"
_JOB = re.compile(r"\bJob ([0-9a-f]{6,32})\b")


class RingBufferHandler(logging.Handler):
    def __init__(self, capacity: int = 2000):
        super().__init__()
        self._lines: collections.deque[tuple[int, str, str | None, str]] = collections.deque(maxlen=capacity)
        self._sequence = 0
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad log call must not break the caller
            self.handleError(record)
            return
        owner = getattr(record, "owner", None)
        job = _JOB.search(record.getMessage()) if owner is None else None
        with self._guard:
            for line in text.splitlines() or [""]:
                self._sequence += 1
                self._lines.append((self._sequence, line, None if owner is None else str(owner),
                                    job.group(1) if job else ""))

    def tail(self, count: int = 200, viewer: str | None = None, admin: bool = True,
             owner_of_job: Callable[[str], str | None] | None = None) -> list[str]:
        """The newest ``count`` lines ``viewer`` may read (``viewer`` None: all of them).

        A viewer reads general lines, their own, and with ``admin`` the admins' lines; a job line is its
        job owner's (``owner_of_job(id)``; an unknown owner keeps the line from everyone but admins).
        """
        with self._guard:
            lines = list(self._lines)
        if viewer is None:
            return [line for _, line, _, _ in lines[-count:]]
        shown = []
        for _, line, owner, job in reversed(lines):
            if owner is None and job:
                owner = (owner_of_job(job) if owner_of_job else None) or ADMINS_ONLY
            if owner in (None, "", viewer) or (admin and owner == ADMINS_ONLY):
                shown.append(line)
                if len(shown) >= count:
                    break
        return shown[::-1]

    @property
    def sequence(self) -> int:
        return self._sequence


def install(level: int = logging.INFO, capacity: int = 2000, log_file=None) -> RingBufferHandler:
    """Attach a ring buffer (and optionally a UTF-8 log file) to the root logger; returns the buffer."""
    root = logging.getLogger()
    root.setLevel(level)
    buffer = RingBufferHandler(capacity)
    root.addHandler(buffer)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(buffer.formatter)
        root.addHandler(console)
    if log_file is not None:
        from logging.handlers import RotatingFileHandler

        file_handler = RotatingFileHandler(log_file, maxBytes=5 * 2**20, backupCount=3, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    for noisy in ("httpx", "httpcore", "urllib3", "diffusers", "transformers", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return buffer
