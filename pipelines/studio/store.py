"""The job queue on disk: every job's request, owner, state and result in SQLite, so nothing is lost.

One row per job, written at each change of state (queued, running, done, failed, cancelled), never per
step. SQLite in WAL mode with ``synchronous=FULL`` survives ``kill -9`` and power loss: a job is on
disk before ``submit`` returns. When the app starts again, ``recover`` turns jobs left ``running`` into
interrupted ones, queued again once (a job that was running twice when the app died is marked failed,
so a job that crashes the process cannot crash it forever).

Requests are stored as their dataclass fields plus the class's import path, and rebuilt with the same
class; a request that cannot be stored (not a dataclass, not JSON) runs, but only in memory.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    task TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    error_key TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '[]',
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created);
"""
# A job that was running when the app died this many times is not queued again.
MAX_ATTEMPTS = 2


class NotStorable(TypeError):
    """The request cannot be written to disk; the job runs in memory only."""


def encode_request(request: Any) -> str:
    if dataclasses.is_dataclass(request) and not isinstance(request, type):
        kind = f"{type(request).__module__}:{type(request).__qualname__}"
        value = dataclasses.asdict(request)
    else:
        kind, value = "json", request
    try:
        return json.dumps({"type": kind, "value": value}, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise NotStorable(str(error)) from None


# Jobs stored before the pipelines were grouped into subpackages name their request's old module.
_MOVED_MODULES = {"pipelines.t2v": "pipelines.tasks.t2v", "pipelines.i2v": "pipelines.tasks.i2v",
                  "pipelines.asr": "pipelines.tasks.asr"}


def decode_request(text: str) -> Any:
    """The request as it was submitted: the same dataclass, or plain JSON data."""
    data = json.loads(text)
    if data["type"] == "json":
        return data["value"]
    module_name, _, class_name = data["type"].partition(":")
    module_name = _MOVED_MODULES.get(module_name, module_name)
    if not module_name.startswith("pipelines."):
        raise ValueError(f"request type {data['type']!r} is not one of the app's")
    cls = getattr(importlib.import_module(module_name), class_name)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data["value"].items() if k in names})  # fields added later keep defaults


@dataclasses.dataclass
class StoredJob:
    """A row of the jobs table, with the request rebuilt."""

    id: str
    task: str
    owner: str
    state: str
    request: Any
    created: float
    started: float | None
    finished: float | None
    attempts: int
    error: str
    error_key: str
    notes: list[str]
    result: Any


class JobStore:
    """Thread-safe access to the jobs table (one connection, one lock: writes are rare and small)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, job) -> bool:
        """Write a newly queued job; False (and a log line) when its request cannot be stored."""
        try:
            request = encode_request(job.request)
        except NotStorable as error:
            logger.warning("Job %s kept in memory only (its request cannot be stored: %s)", job.id, error)
            return False
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute(
                "INSERT INTO jobs (id, seq, task, owner, state, request, created, attempts, notes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, seq, job.task, job.owner, job.state.value, request, job.created, job.attempts,
                 json.dumps(job.notes, ensure_ascii=False)),
            )
        return True

    def save(self, job) -> None:
        """Write the job's state, times, attempts, error, notes and result (if the job is stored)."""
        result = None
        if job.result is not None:
            result = json.dumps(job.result, ensure_ascii=False, default=str)
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state=?, started=?, finished=?, attempts=?, error=?, error_key=?, notes=?, result=? "
                "WHERE id=?",
                (job.state.value, job.started, job.finished, job.attempts, job.error, job.error_key,
                 json.dumps(job.notes, ensure_ascii=False), result, job.id),
            )

    def requeue(self, job) -> None:
        """Put a job that was interrupted back in the queue on disk (it runs at the next start)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state='queued', started=NULL, finished=NULL, attempts=?, error='', error_key='', "
                "notes=? WHERE id=?",
                (job.attempts, json.dumps(job.notes, ensure_ascii=False), job.id),
            )

    def mark_done(self, job: StoredJob) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state='done', finished=?, notes=? WHERE id=?",
                             (time.time(), json.dumps(job.notes, ensure_ascii=False), job.id))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    def recover(self) -> tuple[list[StoredJob], list[StoredJob]]:
        """At start: jobs to queue again (in their order) and jobs given up, after marking both on disk.

        ``running`` rows are jobs the app was running when it stopped: each is queued again with a note,
        unless it has already been started ``MAX_ATTEMPTS`` times.
        """
        now = time.time()
        requeued, given_up = [], []
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq"
            ).fetchall()
        for row in rows:
            job = self._stored(row)
            if job is None:
                continue
            if job.state == "running":
                if job.attempts >= MAX_ATTEMPTS:
                    job.state, job.finished = "failed", now
                    job.error = (f"Interrupted {job.attempts} times while running (the app stopped or crashed); "
                                 "not started again. Check the log, then submit it again.")
                    job.error_key = "interrupted_twice"
                    given_up.append(job)
                else:
                    job.state = "queued"
                    job.notes = [*job.notes, "Interrupted when the app stopped; queued again."]
                    requeued.append(job)
                self._write_stored(job)
            else:
                requeued.append(job)
        return requeued, given_up

    def rows(self, owner: str | None = None, task: str | None = None, states: tuple[str, ...] = (),
             limit: int = 500) -> list[StoredJob]:
        """Stored jobs, newest first, filtered by owner, task and state."""
        query, args = "SELECT * FROM jobs WHERE 1=1", []
        if owner is not None:
            query += " AND owner=?"
            args.append(owner)
        if task:
            query += " AND task=?"
            args.append(task)
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            found = self._db.execute(query, args).fetchall()
        return [job for job in map(self._stored, found) if job is not None]

    def owners(self) -> dict[str, str]:
        """Job id -> owner, for every stored job (without reading the requests back)."""
        with self._lock:
            return dict(self._db.execute("SELECT id, owner FROM jobs").fetchall())

    def get(self, job_id: str) -> StoredJob | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._stored(row) if row else None

    # --- rows <-> StoredJob -------------------------------------------------------------------------

    def _stored(self, row) -> StoredJob | None:
        (job_id, _seq, task, owner, state, request, created, started, finished, attempts, error, error_key,
         notes, result) = row
        try:
            decoded = decode_request(request)
        except Exception as error:  # a request class renamed or removed since: keep the row, skip the job
            logger.warning("Stored job %s cannot be read back (%s); skipped.", job_id, error)
            return None
        return StoredJob(job_id, task, owner, state, decoded, created, started, finished, attempts, error, error_key,
                         json.loads(notes or "[]"), json.loads(result) if result else None)

    def _write_stored(self, job: StoredJob) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state=?, finished=?, error=?, error_key=?, notes=? WHERE id=?",
                (job.state, job.finished, job.error, job.error_key, json.dumps(job.notes, ensure_ascii=False), job.id),
            )
