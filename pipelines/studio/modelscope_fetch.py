"""ModelScope's files, fetched by the ``modelscope`` package's own ``snapshot_download``.

``downloads.download_model`` lists the repo itself (``model_sources``: sizes for the disk check and the
Models tab, the commit for the sidecar, ``auto``'s fallback) and hands the fetch to ``fetch``. modelscope
writes each file straight into our partial folder (``local_dir``) as ``<file>.incomplete`` while it comes,
resumes it with an HTTP Range request after a dropped connection or a restart, checks it against
ModelScope's sha256 and only then renames it; a file that fails the check is deleted. Its progress
callbacks move our bytes, speed and ETA; Stop raises out of the callback, which ends the snapshot.
modelscope gives each file an hour (``MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT``) and a few retries; a snapshot
that ends early but got bytes is started again, and resumes where it stopped.
Endpoint: ``model_sources.modelscope_endpoint()`` (``MODELSCOPE_ENDPOINT``, or ``MODELSCOPE_DOMAIN`` with
``MODELSCOPE_URL_SCHEME``). modelscope's lock files go to ``<models>/.partial/.modelscope``, not the
home folder. modelscope is imported only when a download starts (it imports torch when torch is installed).
"""

from __future__ import annotations

import glob
import threading
from pathlib import Path
from typing import Callable

from .model_sources import Listing

INCOMPLETE = ".incomplete"  # modelscope's name for a file still coming
WORKERS = 4  # files fetched at once (modelscope's default)


class Stopped(BaseException):
    """Raised from the progress callback to end the snapshot: modelscope retries an ``Exception``
    (it takes it for a network error) but cancels the other files and re-raises a ``BaseException``."""


class FetchFailed(RuntimeError):
    """The snapshot ended with files missing; the message says which and why, for the user."""


def ignore_patterns(full: Listing, kept: Listing) -> list[str]:
    """The files of ``full`` that ``kept`` leaves out, as patterns that match each path only."""
    keep = {f.path for f in kept.files}
    return [glob.escape(f.path) for f in full.files if f.path not in keep]


def resumable_bytes(folder: Path, listing: Listing) -> int:
    """Bytes of ``listing``'s files already in modelscope's ``.incomplete`` files under ``folder``."""
    total = 0
    for remote in listing.files:
        part = Path(folder) / (remote.path + INCOMPLETE)
        if part.is_file():
            total += min(part.stat().st_size, remote.size)
    return total


def fetch(repo_id: str, full: Listing, kept: Listing, folder: Path, *, endpoint: str,
          tick: Callable[[str, int], None], stop: threading.Event) -> None:
    """Fetch ``kept``'s files of ``full.repo_id`` at ``kept.ref`` into ``folder``; ``tick(path, bytes)`` for
    each block (negative when modelscope starts a file over). Raises ``Stopped`` or ``FetchFailed``."""
    from modelscope.hub.callback import ProgressCallback
    from modelscope.hub.errors import FileIntegrityError
    from modelscope.hub.snapshot_download import snapshot_download

    got = [0]  # bytes this attempt (net: a file started over counts back)

    class Report(ProgressCallback):  # one per file, called from modelscope's worker threads
        def update(self, size: int) -> None:  # after modelscope wrote the block
            got[0] += size
            tick(self.filename, size)
            if stop.is_set():
                raise Stopped()

    folder = Path(folder)
    while True:  # again while an attempt gets bytes: modelscope gives a file one hour, retries included
        if stop.is_set():
            raise Stopped()
        got[0] = 0
        try:
            snapshot_download(full.repo_id, revision=kept.ref or None, local_dir=str(folder),
                              cache_dir=str(folder.parent / ".modelscope"), endpoint=endpoint,
                              ignore_patterns=ignore_patterns(full, kept) or None, max_workers=WORKERS,
                              progress_callbacks=[Report])
            break
        except Stopped:
            raise
        except Exception as error:  # modelscope's own (FileDownloadError, NetworkError, ...) and requests'
            failed = getattr(error, "failed_files", None) or {}
            mismatched = sorted(path for path, why in failed.items() if isinstance(why, FileIntegrityError))
            if mismatched:
                raise FetchFailed(f"{', '.join(mismatched)} of {repo_id} does not match the checksum modelscope "
                                  "gives; the file was deleted and nothing was installed. Try again.") from error
            if got[0] > 0:
                continue
            why = "; ".join(f"{path}: {reason}" for path, reason in failed.items()) or str(error)
            raise FetchFailed(f"{repo_id}: modelscope could not fetch {full.repo_id} ({why}); "
                              "start it again to resume") from error
    missing = [f.path for f in kept.files if not (folder / f.path).is_file()]
    if missing:  # modelscope's own listing lacked them: the repo changed since ours
        raise FetchFailed(f"{repo_id}: modelscope did not fetch {', '.join(missing[:5])} of {full.repo_id}; "
                          "start it again")
