"""A bounded ring buffer of formatted log lines, fed by ``logging``, read by the live log panel."""

from __future__ import annotations

import collections
import logging
import threading


class RingBufferHandler(logging.Handler):
    def __init__(self, capacity: int = 2000):
        super().__init__()
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=capacity)
        self._sequence = 0
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad log call must not break the caller
            self.handleError(record)
            return
        with self._guard:
            for line in text.splitlines() or [""]:
                self._sequence += 1
                self._lines.append((self._sequence, line))

    def tail(self, count: int = 200) -> list[str]:
        with self._guard:
            return [line for _, line in list(self._lines)[-count:]]

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
