"""ModelScope's files, fetched by the ``modelscope`` package's downloader (``modelscope_hub``).

``downloads.download_model`` lists the repo itself (``model_sources``: sizes for the disk check and the
Models tab, the commit for the sidecar, ``auto``'s fallback) and hands that list to ``fetch``, which gives
it to ``modelscope_hub.HubApi.download_repo`` as its ``file_list``: modelscope fetches exactly those files
(no listing of its own) at the listing's branch or tag and checks each against the listing's sha256, so
the commit the sidecar records is the one the files are from. It writes each file straight into our
partial folder (``local_dir``) as ``<file>.incomplete`` while it comes, resumes it with an HTTP Range
request after a dropped connection or a restart, and renames it only after the check; a file that fails
the check is deleted. Its progress callbacks move our bytes, speed and ETA; Stop raises out of the
callback, which ends the snapshot. modelscope gives each file an hour (``MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT``)
and a few retries; a snapshot that ends early but got bytes is started again, and resumes where it stopped.
modelscope's own tqdm bars and INFO lines are turned off (``quiet``): progress is ours to show; its
warnings and errors still print (``MODELSCOPE_LOG_LEVEL``, when set, decides). Endpoint:
``model_sources.modelscope_endpoint()``. Its lock files go to ``<models>/.partial/.modelscope``, not the
home folder. ``modelscope_hub`` is imported only when a download starts, and not through the
``modelscope`` package, whose import loads torch (about 1.5 s).
"""

from __future__ import annotations

import logging
import os
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


def file_list(kept: Listing) -> list[dict]:
    """``kept``'s files as the ``repo/files`` entries modelscope's ``download_repo`` takes."""
    return [{"Path": f.path, "Type": "blob", "Size": f.size, "Sha256": f.sha256} for f in kept.files]


def resumable_bytes(folder: Path, listing: Listing) -> int:
    """Bytes of ``listing``'s files already in modelscope's ``.incomplete`` files under ``folder``."""
    total = 0
    for remote in listing.files:
        part = Path(folder) / (remote.path + INCOMPLETE)
        if part.is_file():
            total += min(part.stat().st_size, remote.size)
    return total


def quiet() -> None:
    """modelscope draws tqdm bars (files done, each file's bytes) whatever callbacks it is given, and has
    no switch for them: its download module gets a tqdm that counts but draws nothing. Its INFO lines
    ("Downloading 3 files from ...") go too, unless ``MODELSCOPE_LOG_LEVEL`` says otherwise."""
    import modelscope_hub._download as hub_download
    from tqdm.auto import tqdm

    bar = getattr(hub_download, "tqdm", None)
    if isinstance(bar, type) and issubclass(bar, tqdm) and not getattr(bar, "silent", False):
        class Silent(bar):
            silent = True

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "disable": True})

        hub_download.tqdm = Silent
    if not os.environ.get("MODELSCOPE_LOG_LEVEL", "").strip():
        logging.getLogger("modelscope_hub").setLevel(logging.WARNING)


def fetch(repo_id: str, kept: Listing, folder: Path, *, endpoint: str,
          tick: Callable[[str, int], None], stop: threading.Event) -> None:
    """Fetch ``kept``'s files of ``kept.repo_id`` at ``kept.ref`` into ``folder``; ``tick(path, bytes)`` for
    each block (negative when modelscope starts a file over). Raises ``Stopped`` or ``FetchFailed``."""
    try:
        from modelscope_hub import FileIntegrityError, HubApi, ProgressCallback
    except ImportError as error:
        raise FetchFailed(f"{repo_id}: ModelScope downloads need the modelscope package ({error}); "
                          "install the requirements again (pip install -r requirements.txt)") from error
    quiet()
    got = [0]  # bytes this attempt (net: a file started over counts back)

    class Report(ProgressCallback):  # one per file, called from modelscope's worker threads
        def update(self, size: int) -> None:  # after modelscope wrote the block
            got[0] += size
            tick(self.filename, size)
            if stop.is_set():
                raise Stopped()

    folder = Path(folder)
    api = HubApi(endpoint=endpoint, user_agent={"invoked_by": "cinescribe"})
    while True:  # again while an attempt gets bytes: modelscope gives a file one hour, retries included
        if stop.is_set():
            raise Stopped()
        got[0] = 0
        try:
            api.download_repo(kept.repo_id, "model", revision=kept.ref or None, local_dir=folder,
                              cache_dir=folder.parent / ".modelscope", max_workers=WORKERS,
                              progress_callbacks=[Report], file_list=file_list(kept))
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
            raise FetchFailed(f"{repo_id}: modelscope could not fetch {kept.repo_id} ({why}); "
                              "start it again to resume") from error
    missing = [f.path for f in kept.files if not (folder / f.path).is_file()]
    if missing:
        raise FetchFailed(f"{repo_id}: modelscope did not fetch {', '.join(missing[:5])} of {kept.repo_id}; "
                          "start it again")
