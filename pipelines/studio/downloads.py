"""Model downloads into ``<data>/models``: progress, resume, checksums, a disk-space check, delete.

A download lists the repo at its source (``model_sources.py``: Hugging Face, an ``HF_ENDPOINT``
mirror, or ModelScope), refuses with numbers when the disk lacks the space, and fetches the files into
``models/.partial/<org>--<name>/``. Hugging Face's with our own HTTP code: ``*.part`` files resume with
a Range request after a dropped connection or a restart, each is checked against the LFS sha256 (or the
git blob id of small files). ModelScope's through the ``modelscope`` package's downloader
(``modelscope_fetch.py``: our listing's files; its ``*.incomplete`` files resume the same way, it checks
them against the listing's sha256). A file that fails its check is deleted and nothing is published;
otherwise the folder moves to ``models/<org>--<name>/`` with ``cinescribe-source.json`` (source, repo,
``revision``: the listing's commit, ``ref``: the branch or tag asked for), where
``device/loading.py`` finds it (``find_downloaded``). ``DownloadManager`` runs downloads in background
threads of the front process (never the GPU worker); ``download_model`` and ``delete_model`` are the
plain functions an access check can wrap. ``SizeLookups`` tells a model's download size before it
starts, from the same listing (a background thread, remembered in ``models/.sizes.json``; offline or
unreachable: no size and the reason).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from . import model_sources, modelscope_fetch
from .model_sources import Listing, RemoteFile, SourceError, SourceUnreachable

SIDECAR = "cinescribe-source.json"
CHUNK = 1 << 20
RETRIES = 5
SPACE_MARGIN = 256 << 20  # left free after a download
SIZES_FILE = ".sizes.json"
SIZE_RETRY_S = 300.0  # a size lookup that failed is tried again after this


# Formats no loader reads (exact paths for *.bin beside safetensors; see skipped_files).
IGNORE_ALWAYS = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.mlmodel",
                 "*.mlpackage/*", "*.gguf", "*.ckpt", "*.pth", "*.pt", "coreml/*", "onnx/*"]


def skipped_files(files: list[str]) -> list[str]:
    """Patterns and paths not fetched: formats no loader reads, *.bin weights where the same folder has
    safetensors, and, in a diffusers repository (``model_index.json``), single-file checkpoints at its
    top (``from_pretrained`` reads the component folders; a LoRA the catalogue names comes on its own)."""
    with_safetensors = {PurePosixPath(f).parent for f in files if f.endswith(".safetensors")}
    skipped = [f for f in files if f.endswith(".bin") and PurePosixPath(f).parent in with_safetensors]
    if "model_index.json" in files:
        skipped += [f for f in files if "/" not in f and f.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".gguf"))]
    return IGNORE_ALWAYS + skipped


def wanted(listing: Listing) -> Listing:
    """``listing`` without the files ``skipped_files`` leaves out (and without .gitattributes / README)."""
    skip = skipped_files([f.path for f in listing.files])
    keep = [f for f in listing.files if not any(fnmatch.fnmatch(f.path, pattern) for pattern in skip)
            and PurePosixPath(f.path).name not in (".gitattributes", "configuration.json")]
    return Listing(listing.source, listing.repo_id, listing.revision, keep, ref=listing.ref)


class DownloadError(RuntimeError):
    """A download that cannot go on; the message says why, with numbers where there are any."""


def folder_name(repo_id: str) -> str:
    return repo_id.strip("/").replace("/", "--")


def find_downloaded(repo_id: str, root: Path) -> tuple[Path, str] | None:
    """(folder, 'source@revision') of a finished download of ``repo_id``, or None."""
    folder = Path(root) / folder_name(repo_id)
    try:
        meta = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return folder, f"{meta.get('source', '?')}@{meta.get('revision', '?')}"


def free_space(path: Path) -> int:
    """Free bytes on the disk holding ``path`` (tests patch this)."""
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else 0


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.1f} MiB"


@dataclass
class Progress:
    repo_id: str
    state: str = "starting"  # starting | downloading | verifying | done | failed | stopped
    source: str = ""
    done: int = 0
    total: int = 0
    speed: float = 0.0  # bytes per second
    eta: float | None = None  # seconds
    file: str = ""
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def model_state(repo_id: str, root: Path) -> dict:
    """State on disk: 'on disk' (a verified download), 'partly downloaded', or 'missing'; bytes used."""
    found = find_downloaded(repo_id, root)
    partial = Path(root) / ".partial" / folder_name(repo_id)
    if found:
        return {"state": "on disk", "size": folder_size(found[0]), "source": found[1], "folder": str(found[0])}
    if partial.is_dir():
        return {"state": "partly downloaded", "size": folder_size(partial), "source": "", "folder": str(partial)}
    return {"state": "missing", "size": 0, "source": "", "folder": ""}


def _check(path: Path, remote: RemoteFile) -> bool:
    if remote.sha256:
        digest = hashlib.sha256()
    elif remote.git_sha1:
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        return path.stat().st_size == remote.size
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest() == (remote.sha256 or remote.git_sha1)


def _fetch(remote: RemoteFile, part: Path, progress: Progress, tick: Callable[[int], None],
           stop: threading.Event, source: str) -> None:
    """Fetch ``remote`` into ``part``, resuming from its size; retries dropped connections."""
    attempts = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have >= remote.size:
            return
        headers = {"User-Agent": "cinescribe", **model_sources.auth_headers(source)}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            request = urllib.request.Request(remote.url, headers=headers)
            with urllib.request.urlopen(request, timeout=model_sources.TIMEOUT) as response:
                if have and response.status != 206:  # the server ignored the range: start over
                    part.unlink()
                    tick(-have)
                    have = 0
                with open(part, "ab") as handle:
                    while True:
                        if stop.is_set():
                            raise DownloadError("stopped")
                        block = response.read(CHUNK)
                        if not block:
                            break
                        handle.write(block)
                        tick(len(block))
            if part.stat().st_size >= remote.size:
                return
            raise ConnectionError("the connection closed before the end of the file")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code < 500 and error.code != 416:
                raise DownloadError(f"{remote.path}: the source answered {error.code}") from error
            attempts += 1
            if attempts > RETRIES:
                raise DownloadError(f"{remote.path}: download failed after {RETRIES} retries ({error}); "
                                    "start it again to resume") from error
            progress.message = f"connection dropped ({error}); resuming {remote.path}"
            time.sleep(min(2.0 ** attempts * 0.1, 5.0))


def download_model(repo_id: str, root: Path, *, revision: str | None = None, source: str = "auto",
                   on_progress: Callable[[Progress], None] | None = None,
                   stop: threading.Event | None = None, listing: Listing | None = None) -> Path:
    """Download ``repo_id`` into ``root``; returns the published folder. Raises ``DownloadError``."""
    root = Path(root)
    stop = stop or threading.Event()
    progress = Progress(repo_id)
    report = on_progress or (lambda p: None)
    try:
        full = listing or model_sources.listing(repo_id, revision, source)
    except (SourceUnreachable, SourceError) as error:
        raise DownloadError(f"{repo_id}: {error}") from error
    listing = wanted(full)
    partial = root / ".partial" / folder_name(repo_id)
    _start_over_if_other_source(partial, listing)
    progress.source, progress.total = f"{listing.source}@{listing.revision}", listing.total
    have = {f.path: (partial / (f.path + ".part")) for f in listing.files}
    complete = sum(f.size for f in listing.files if (partial / f.path).is_file())
    begun = modelscope_fetch.resumable_bytes(partial, listing)  # modelscope's .incomplete files
    begun += sum(min(p.stat().st_size, f.size) for f in listing.files if (p := have[f.path]).exists())
    need, free = listing.total - complete - begun, free_space(root)
    if free < need + SPACE_MARGIN:
        raise DownloadError(f"Not enough disk space for {repo_id}: needs {gib(need)} (+{gib(SPACE_MARGIN)} "
                            f"kept free), {gib(free)} free on {root}.")
    partial.mkdir(parents=True, exist_ok=True)
    (partial / (SIDECAR + ".pending")).write_text(json.dumps({"source": listing.source, "repo": listing.repo_id,
                                                           "revision": listing.revision}), encoding="utf-8")
    # modelscope reports the bytes of the files it resumes itself; our own fetch starts from them
    progress.done = complete if listing.source == "modelscope" else complete + begun
    started, start_done, lock = time.monotonic(), complete + begun, threading.Lock()
    progress.state = "downloading"
    report(progress)

    def tick(n: int, path: str | None = None) -> None:
        with lock:  # modelscope fetches several files at once
            progress.done += n
            progress.file = path or progress.file
            elapsed = time.monotonic() - started
            progress.speed = max(progress.done - start_done, 0) / elapsed if elapsed > 0 else 0.0
            progress.eta = (progress.total - progress.done) / progress.speed if progress.speed > 0 else None
            report(progress)

    if listing.source == "modelscope":
        try:
            modelscope_fetch.fetch(repo_id, listing, partial, endpoint=model_sources.modelscope_endpoint(),
                                   tick=lambda path, n: tick(n, path), stop=stop)
        except modelscope_fetch.Stopped:
            raise DownloadError("stopped") from None
        except modelscope_fetch.FetchFailed as error:
            raise DownloadError(str(error)) from error
        return _publish(repo_id, root, partial, listing)
    for remote in listing.files:
        target = partial / remote.path
        if target.is_file():
            continue
        part = have[remote.path]
        part.parent.mkdir(parents=True, exist_ok=True)
        progress.file = remote.path
        _fetch(remote, part, progress, tick, stop, listing.source)
        progress.state = "verifying"
        report(progress)
        if not _check(part, remote):
            part.unlink()
            progress.done -= remote.size
            raise DownloadError(f"{remote.path} of {repo_id} does not match the checksum {listing.source} "
                                "gives; the file was deleted and nothing was installed. Try again.")
        part.replace(target)
        progress.state = "downloading"
    return _publish(repo_id, root, partial, listing)


def _start_over_if_other_source(partial: Path, listing: Listing) -> None:
    """A partial download from another source or revision is not resumed (its files are another's)."""
    try:
        pending = json.loads((partial / (SIDECAR + ".pending")).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if (pending.get("source"), pending.get("revision")) != (listing.source, listing.revision):
        shutil.rmtree(partial, ignore_errors=True)


def _publish(repo_id: str, root: Path, partial: Path, listing: Listing) -> Path:
    (partial / (SIDECAR + ".pending")).unlink(missing_ok=True)
    (partial / SIDECAR).write_text(json.dumps({
        "repo_id": repo_id, "source": listing.source, "source_repo": listing.repo_id,
        "revision": listing.revision, "ref": listing.ref, "files": len(listing.files), "bytes": listing.total,
        "downloaded": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2), encoding="utf-8")
    final = root / folder_name(repo_id)
    if final.exists():  # an older download of the same repo: replaced only now that the new one is whole
        old = root / ".partial" / (folder_name(repo_id) + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.replace(old)
        shutil.rmtree(old, ignore_errors=True)
    partial.replace(final)
    return final


def delete_model(repo_id: str, root: Path, in_use: Callable[[str], str | None] = lambda repo: None) -> int:
    """Delete the download (and any partial one) of ``repo_id``; returns the bytes freed.
    ``in_use(repo_id)`` says why the model is busy (resident in the worker, a queued job), or None."""
    why = in_use(repo_id)
    if why:
        raise DownloadError(f"{repo_id} is in use ({why}); it was not deleted.")
    freed = 0
    for folder in (Path(root) / folder_name(repo_id), Path(root) / ".partial" / folder_name(repo_id)):
        if folder.is_dir():
            freed += folder_size(folder)
            shutil.rmtree(folder)
    return freed


def offline_reason(source: str) -> str:
    """Why a look at ``source`` must not be made now ('' when it may): ``HF_HUB_OFFLINE`` is set."""
    if source in ("huggingface", "auto") and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
            "1", "true", "yes", "on"):
        return "offline: HF_HUB_OFFLINE is set"
    return ""


class SizeLookups:
    """Download sizes from the sources' listings (the files a download would fetch), looked up one at a time
    in a background thread and remembered: sizes for good in ``<root>/.sizes.json``, failures for
    ``SIZE_RETRY_S``. ``size`` never waits on the network: it answers ``(bytes, "")`` or ``(None, why)``,
    ``why`` being ``"checking"`` while a lookup runs."""

    def __init__(self, root: Path):
        self.file = Path(root) / SIZES_FILE
        self._lock = threading.Lock()
        self._known: dict[str, int] = self._read()
        self._failed: dict[str, tuple[float, str]] = {}
        self._queue: list[tuple[str, str, str | None, str]] = []
        self._thread: threading.Thread | None = None

    @staticmethod
    def _key(repo_id: str, revision: str | None, source: str) -> str:
        return f"{source}|{repo_id}|{revision or 'main'}"

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def remember(self, repo_id: str, revision: str | None, source: str, size: int) -> None:
        with self._lock:
            self._known[self._key(repo_id, revision, source)] = int(size)
            known = dict(self._known)
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temp = self.file.with_suffix(".tmp")
            temp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
            temp.replace(self.file)
        except OSError:  # a read-only folder: remembered in memory only
            pass

    def size(self, repo_id: str, revision: str | None, source: str) -> tuple[int | None, str]:
        key = self._key(repo_id, revision, source)
        with self._lock:
            if key in self._known:
                return self._known[key], ""
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < SIZE_RETRY_S:
                return None, failed[1]
            offline = offline_reason(source)
            if offline:
                return None, offline
            if all(item[0] != key for item in self._queue):
                self._queue.append((key, repo_id, revision, source))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="download-sizes", daemon=True)
                self._thread.start()
            return None, "checking"

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                key, repo_id, revision, source = self._queue[0]
            try:
                total = wanted(model_sources.listing(repo_id, revision, source)).total
            except Exception as error:  # SourceUnreachable, SourceError, or a listing that makes no sense
                unreachable = isinstance(error, SourceUnreachable)
                why = f"{'unreachable' if unreachable else 'not available'}: {error}"
                with self._lock:
                    # one source down: the others queued for it would wait as long, so they fail with it
                    gone = [item for item in self._queue if item[0] == key or (unreachable and item[3] == source)]
                    for item in gone:
                        self._failed[item[0]] = (time.monotonic(), why)
                        self._queue.remove(item)
                continue
            self.remember(repo_id, revision, source, total)
            with self._lock:
                self._queue = [item for item in self._queue if item[0] != key]

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


class DownloadManager:
    """Downloads in background threads of the front process; ``status()`` for the page and the API;
    ``sizes`` for download sizes before a download starts."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.sizes = SizeLookups(self.root)
        self._lock = threading.Lock()
        self._progress: dict[str, Progress] = {}
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, repo_id: str, *, revision: str | None = None, source: str = "auto") -> Progress:
        with self._lock:
            thread = self._threads.get(repo_id)
            if thread is not None and thread.is_alive():
                return self._progress[repo_id]
            progress = self._progress[repo_id] = Progress(repo_id)
            stop = self._stops[repo_id] = threading.Event()

        def run() -> None:
            def update(p: Progress) -> None:
                with self._lock:
                    known = repo_id in self._progress and self._progress[repo_id].total
                    self._progress[repo_id] = Progress(**p.as_dict())
                if p.total and not known:  # the listing's size: the table keeps it after the download
                    self.sizes.remember(repo_id, revision, source, p.total)

            try:
                download_model(repo_id, self.root, revision=revision, source=source, on_progress=update, stop=stop)
                final = Progress(**self._progress[repo_id].as_dict())
                final.state, final.eta, final.message = "done", 0, "verified and installed"
            except DownloadError as error:
                final = Progress(**self._progress[repo_id].as_dict())
                final.state = "stopped" if stop.is_set() else "failed"
                final.message = str(error)
            with self._lock:
                self._progress[repo_id] = final

        self._threads[repo_id] = threading.Thread(target=run, name=f"download-{repo_id}", daemon=True)
        self._threads[repo_id].start()
        return progress

    def stop(self, repo_id: str) -> None:
        if repo_id in self._stops:
            self._stops[repo_id].set()

    def wait(self, repo_id: str, timeout: float | None = None) -> Progress:
        thread = self._threads.get(repo_id)
        if thread is not None:
            thread.join(timeout)
        return self.status(repo_id)

    def status(self, repo_id: str) -> Progress:
        with self._lock:
            return Progress(**(self._progress.get(repo_id) or Progress(repo_id, state="idle")).as_dict())

    def active(self) -> list[str]:
        return [repo for repo, thread in self._threads.items() if thread.is_alive()]
