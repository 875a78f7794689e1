"""The history of what was made, read from the outputs folder's sidecars (and the job store for jobs that
left no file: failed, cancelled, waiting).

Because it is built from the sidecars, an outputs folder copied from another machine shows up as well.
Entries belong to the user recorded in the sidecar (``runtime.owner``) or in the job store; an entry
whose owner is unknown (copied in, or made before owners were recorded) is shown to everyone.
Deleting moves the files into ``outputs/.trash/`` (same disk, nothing copied, nothing lost by mistake);
thumbnails are cached in ``outputs/.thumbnails/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .outputs import write_atomic

logger = logging.getLogger(__name__)

TASKS = ("t2v", "i2v", "asr")
HIDDEN = (".trash", ".thumbnails", "benchmarks")
TRASH = ".trash"
THUMBNAILS = ".thumbnails"
PREVIEW_CHARS = 160


@dataclass
class HistoryEntry:
    """One output (a clip or a transcript) or one job that left no output."""

    key: str  # the sidecar's path relative to the outputs folder, or "job:<id>"
    task: str
    state: str  # done, failed, cancelled, queued, running
    created: float  # seconds since the epoch
    title: str  # the prompt, or the transcribed file's name
    model: str = ""
    owner: str = ""
    job_id: str = ""
    sidecar: Path | None = None
    video: Path | None = None
    files: list[Path] = field(default_factory=list)  # everything that belongs to the entry, sidecar included
    text: str = ""  # transcript preview
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    error: str = ""

    @property
    def when(self) -> str:
        return dt.datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M:%S")

    @property
    def total_seconds(self) -> float | None:
        total = self.timings.get("total")
        if total is None and self.timings:
            total = sum(v for k, v in self.timings.items() if isinstance(v, (int, float)))
        return round(total, 1) if total is not None else None


class History:
    """Reads and manages the history of one outputs folder (and, optionally, one job store)."""

    def __init__(self, outputs_dir: Path, store=None):
        self.outputs_dir = Path(outputs_dir)
        self.store = store
        self._cache: dict[Path, tuple[float, HistoryEntry | None]] = {}

    # --- reading ----------------------------------------------------------------------------------------

    def entries(self, owner: str | None = None, task: str = "", state: str = "", search: str = "",
                limit: int = 500) -> list[HistoryEntry]:
        """Newest first. ``owner=None`` shows everyone's; otherwise that owner's and those of unknown owner."""
        found = [entry for entry in self._from_sidecars() if entry is not None]
        owners = self._owners_by_job()
        for entry in found:
            if not entry.owner:
                entry.owner = owners.get(entry.job_id, "")
        found += self._from_store()
        shown = [entry for entry in found if (owner is None or entry.owner in ("", owner))
                 and matches(entry, task, state, search)]
        shown.sort(key=lambda entry: entry.created, reverse=True)
        return shown[:limit]

    def find(self, key: str, owner: str | None = None) -> HistoryEntry | None:
        return next((entry for entry in self.entries(owner, limit=10**6) if entry.key == key), None)

    def _from_sidecars(self) -> list[HistoryEntry | None]:
        entries, seen = [], set()
        if not self.outputs_dir.is_dir():
            return entries
        for path in self.outputs_dir.rglob("*.json"):
            relative = path.relative_to(self.outputs_dir)
            if relative.parts[0] in HIDDEN or path.name.startswith("."):
                continue
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            seen.add(path)
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, self._read_sidecar(path))
                self._cache[path] = cached
            entries.append(cached[1])
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        return entries

    def _read_sidecar(self, path: Path) -> HistoryEntry | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("app") != "cinescribe" or data.get("task") not in TASKS:
            return None
        task = data["task"]
        folder = path.parent
        runtime = data.get("runtime") or {}
        settings = data.get("settings") or {}
        model = (data.get("model") or {}).get("id", "") if isinstance(data.get("model"), dict) else ""
        created = _timestamp(data.get("created")) or path.stat().st_mtime
        entry = HistoryEntry(
            key=path.relative_to(self.outputs_dir).as_posix(), task=task, state="done", created=created,
            title="", model=model, owner=str(runtime.get("owner") or ""), job_id=str(data.get("job_id") or ""),
            sidecar=path, settings=settings, timings=data.get("timings_s") or {},
        )
        if task == "asr":
            entry.title = str((data.get("source") or {}).get("name") or path.stem)
            entry.text = str(data.get("text") or "")[:PREVIEW_CHARS]
            names = (data.get("outputs") or {}).values()
            entry.files = [folder / name for name in names if (folder / name).is_file()]
        else:
            entry.title = str(settings.get("prompt") or "")
            video = folder / str(data.get("file") or "")
            entry.video = video if video.is_file() else None
            entry.files = [p for p in (entry.video, path) if p is not None]
            for extra in ("input", "last_frame"):
                copy = (data.get(extra) or {}).get("copy") if isinstance(data.get(extra), dict) else None
                if copy and (folder / copy).is_file():
                    entry.files.append(folder / copy)
        if path not in entry.files:
            entry.files.append(path)
        return entry

    def _owners_by_job(self) -> dict[str, str]:
        return self.store.owners() if self.store is not None else {}

    def _from_store(self) -> list[HistoryEntry]:
        """Jobs without outputs: failed, cancelled, waiting or running."""
        if self.store is None:
            return []
        entries = []
        for row in self.store.rows(states=("failed", "cancelled", "queued", "running"), limit=100_000):
            request = row.request if not isinstance(row.request, dict) else None
            title = ""
            if request is not None:
                title = getattr(request, "prompt", "") or ", ".join(
                    getattr(request, "names", None) or [Path(f).name for f in getattr(request, "files", []) or []])
            entries.append(HistoryEntry(
                key=f"job:{row.id}", task=row.task, state=row.state, created=row.created, title=str(title),
                model=str(getattr(request, "model", "") or ""), owner=row.owner, job_id=row.id,
                settings=_request_settings(request), error=row.error,
            ))
        return entries

    # --- changing ---------------------------------------------------------------------------------------

    def delete(self, key: str, owner: str | None = None) -> list[Path]:
        """Move an entry's files to ``outputs/.trash/<date>/`` (or forget a file-less job); returns where
        they went. Raises ``KeyError`` for an entry the owner cannot see."""
        entry = self.find(key, owner)
        if entry is None:
            raise KeyError(key)
        if entry.sidecar is None:
            if entry.state in ("queued", "running"):
                raise ValueError("A waiting or running job is stopped, not deleted: cancel it first.")
            if self.store is not None:
                self.store.delete(entry.job_id)
            return []
        trash = self.outputs_dir / TRASH / dt.date.today().isoformat()
        trash.mkdir(parents=True, exist_ok=True)
        shared = self._shared_files(entry)
        moved = []
        for path in entry.files:
            if path in shared or not path.exists():
                continue
            moved.append(_move_free(path, trash / path.name))
        self._cache.pop(entry.sidecar, None)
        logger.info("History: moved %d file(s) of %s to %s", len(moved), key, trash,
                    extra={"owner": entry.owner})  # the live log shows a file name to its owner only
        return moved

    def _shared_files(self, entry: HistoryEntry) -> set[Path]:
        """Files of ``entry`` that another sidecar also lists (an input image shared by a job's clips)."""
        others = [e for e in self._from_sidecars() if e is not None and e.sidecar != entry.sidecar]
        mine = set(entry.files)
        return {path for other in others for path in other.files if path in mine}

    def thumbnail_path(self, entry: HistoryEntry) -> Path | None:
        """Where the clip's thumbnail is (or will be) cached; None without a clip."""
        if entry.video is None:
            return None
        try:
            stat = entry.video.stat()
        except OSError:
            return None
        digest = hashlib.sha1(f"{entry.video}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:20]
        return self.outputs_dir / THUMBNAILS / f"{digest}.jpg"

    def thumbnail(self, entry: HistoryEntry) -> Path | None:
        """A small JPEG of the clip's middle frame, made once with ffmpeg and cached; None without a clip."""
        target = self.thumbnail_path(entry)
        if target is None:
            return None
        if target.is_file():
            return target
        from ..media.ffmpeg import ffmpeg_exe

        def extract(temp: Path) -> None:
            subprocess.run(
                [ffmpeg_exe(), "-v", "error", "-y", "-i", str(entry.video), "-vf", "thumbnail,scale=160:-2",
                 "-frames:v", "1", "-f", "image2", str(temp)],
                check=True, capture_output=True, timeout=60,
            )

        try:
            return write_atomic(target, extract)
        except (OSError, subprocess.SubprocessError) as error:
            logger.warning("No thumbnail for %s: %s", entry.video, error, extra={"owner": entry.owner})
            return None


def matches(entry: HistoryEntry, task: str = "", state: str = "", search: str = "") -> bool:
    """Whether ``entry`` passes the History's filters (empty ones pass everything)."""
    wanted = search.strip().lower()
    return ((not task or entry.task == task) and (not state or entry.state == state)
            and (not wanted or wanted in entry.title.lower() or wanted in entry.text.lower()))


def outputs_complete(outputs_dir: Path, stored) -> bool:
    """Whether ``outputs_dir`` holds every sidecar the stored job was to write (a clip per ``clips``, a
    transcript per file): an interrupted job that had written them all is done, not to be run again."""
    expected = getattr(stored.request, "clips", None) or len(getattr(stored.request, "files", None) or [])
    if not isinstance(expected, int) or expected < 1:
        return False
    written = [e for e in History(outputs_dir).entries() if e.job_id == stored.id]
    return len(written) >= expected


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _request_settings(request) -> dict:
    if request is None:
        return {}
    from dataclasses import asdict, is_dataclass

    return {k: v for k, v in asdict(request).items() if k not in ("notes",)} if is_dataclass(request) else {}


def _move_free(source: Path, wanted: Path) -> Path:
    """Rename ``source`` to ``wanted``, or ``wanted`` with ``_2``, ``_3``... if taken: never overwrites."""
    for attempt in range(1, 10_000):
        target = wanted if attempt == 1 else wanted.with_name(f"{wanted.stem}_{attempt}{wanted.suffix}")
        if target.exists():
            continue
        try:
            os.link(source, target)
            source.unlink()
        except OSError:
            if target.exists():
                continue
            os.replace(source, target)
        return target
    raise FileExistsError(f"No free name for {wanted}")
