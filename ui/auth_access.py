"""Who may do what and read which file, once the studio has users (``--auth`` / ``--auth-file``).

- Roles (``pipelines.studio.users.UserBook``): admins restart, release VRAM, run the benchmark and doctor,
  control cluster workers and manage models; with no roles given everyone is an admin. Users given the
  ``admin`` role also see everyone's History and files.
- Files: an output (clip, sidecar, transcript, zip, thumbnail, input copy) is its job owner's, found from
  the sidecars (``History``); an upload is its uploader's (recorded when it arrives, in memory and in
  ``<data>/uploads.owners``). Files of unknown owner (copied-in outputs) follow History: everyone may
  read them. Other files of the outputs folder (the trash, benchmark reports, stray files) are admins'.
- ``require_admin(request)`` is the check every admin-only handler makes (the Models tab's too).
"""

from __future__ import annotations

import filecmp
import glob
import logging
import re
import threading
import time
import zipfile
from pathlib import Path

from pipelines.studio.history import HIDDEN, THUMBNAILS, History
from pipelines.studio.jobs import RequestError
from pipelines.studio.logbuffer import ADMINS_ONLY

logger = logging.getLogger(__name__)
ADMIN_NEEDED = "An admin is needed for this: ask an admin of this studio (users with the admin role)."
INDEX_SECONDS = 2.0
OUTPUT_NAME = re.compile(r"\d{6}_[a-z0-9]+_")


class Access:
    """The studio's users, roles and file owners. ``book`` None: no login, one person's studio (all allowed)."""

    def __init__(self, book=None, throttle=None, trusted_proxies=(), outputs_dir: Path | None = None,
                 upload_dir: Path | None = None, store=None, owners_file: Path | None = None, jobs=None):
        self.book, self.throttle = book, throttle
        self.trusted_proxies = frozenset(trusted_proxies)
        self.outputs_dir = Path(outputs_dir).resolve() if outputs_dir else None
        self.upload_dir = Path(upload_dir).resolve() if upload_dir else None
        # The History tab's own folder path, unresolved: thumbnails are named from it.
        self.history = History(Path(outputs_dir), store) if outputs_dir else None
        self.store, self.jobs = store, jobs
        self._job_owners: dict[str, str] = {}
        self.owners_file = owners_file
        self._uploads: dict[Path, str] = self._read_owners()
        self._index: dict[Path, set[str]] = {}
        self._index_time = 0.0
        self._guard = threading.Lock()

    # --- roles ----------------------------------------------------------------------------------------

    def is_admin(self, user: str | None) -> bool:
        return not self.book or self.book.is_admin(user)

    def sees_everyone(self, user: str | None) -> bool:
        return not self.book or self.book.sees_everyone(user)

    def request_is_admin(self, request) -> bool:
        return self.is_admin(getattr(request, "username", None))

    def require_admin(self, request) -> None:
        """Refuse (``RequestError``, key ``admin_needed``) when the user behind ``request`` is not an admin."""
        if not self.request_is_admin(request):
            logger.info("Refused an admin action to %s", getattr(request, "username", None))
            raise RequestError(ADMIN_NEEDED, key="admin_needed")

    # --- the live log ---------------------------------------------------------------------------------

    def log_tail(self, log_buffer, request, count: int) -> list[str]:
        """The log lines the user behind ``request`` may read: everything without a login or for users
        with the admin role; else the general lines, their own jobs' lines and (admins) the admins' lines."""
        user = getattr(request, "username", None)
        if not self.book or not user or self.sees_everyone(user):
            return log_buffer.tail(count)
        return log_buffer.tail(count, viewer=str(user), admin=self.is_admin(user), owner_of_job=self.owner_of_job)

    def owner_of_job(self, job_id: str) -> str | None:
        job = self.jobs(job_id) if self.jobs is not None else None
        if job is not None:
            return job.owner
        if job_id not in self._job_owners and self.store is not None:
            self._job_owners = self.store.owners()
            self._job_owners.setdefault(job_id, ADMINS_ONLY)  # no such job: admins only, and asked once
        return self._job_owners.get(job_id)

    # --- uploads --------------------------------------------------------------------------------------

    def record_upload(self, user: str, paths: list[str]) -> None:
        """Note ``user`` as the owner of the uploaded ``paths`` (kept across restarts in ``owners_file``)."""
        resolved = [Path(p).resolve() for p in paths]
        with self._guard:
            for path in resolved:
                self._uploads[path] = user
            if self.owners_file is not None:
                try:
                    with open(self.owners_file, "a", encoding="utf-8") as out:
                        out.writelines(f"{user}\t{path}\n" for path in resolved)
                except OSError as error:
                    logger.warning("Could not record upload owners in %s: %s", self.owners_file, error)

    def upload_owner(self, path: Path) -> str | None:
        with self._guard:
            return self._uploads.get(Path(path).resolve())

    def _read_owners(self) -> dict[Path, str]:
        owners: dict[Path, str] = {}
        if self.owners_file is not None and Path(self.owners_file).is_file():
            for line in Path(self.owners_file).read_text(encoding="utf-8").splitlines():
                user, sep, path = line.partition("\t")
                if sep:
                    owners[Path(path)] = user
        return owners

    # --- files ----------------------------------------------------------------------------------------

    def may_read(self, user: str | None, path: Path) -> bool:
        """Whether ``user`` may download ``path`` (already resolved, no symlinks left)."""
        if not self.book:
            return True
        if self.outputs_dir is not None and _inside(path, self.outputs_dir):
            return self._may_read_output(user, path)
        if self.upload_dir is not None and _inside(path, self.upload_dir):
            uploader = self.upload_owner(path)
            if uploader is not None:
                return uploader == user
            copies = self._originals(path)  # Gradio's copy of an output it served: the output's rule
            return not copies or any(self._may_read_output(user, original) for original in copies)
        return True  # Gradio's own allowed paths (static files); it refuses anything else itself

    def _may_read_output(self, user: str | None, path: Path) -> bool:
        owners = self._owners(path)
        if owners is None:
            return self.is_admin(user)
        return self.sees_everyone(user) or "" in owners or (user or "") in owners

    def _owners(self, path: Path) -> set[str] | None:
        relative = path.relative_to(self.outputs_dir)
        if relative.parts and relative.parts[0] in HIDDEN and relative.parts[0] != THUMBNAILS:
            return None
        owners = self._index_lookup(path)
        if owners is None and path.suffix.lower() == ".zip":  # a batch's zip: the owners of what it holds
            try:
                with zipfile.ZipFile(path) as archive:
                    names = archive.namelist()
            except (OSError, zipfile.BadZipFile):
                return None
            found = [self._index_lookup(path.parent / Path(name).name) for name in names]
            if found and all(found):
                return set().union(*found)
        return owners

    def _index_lookup(self, path: Path) -> set[str] | None:
        with self._guard:
            if time.monotonic() - self._index_time > INDEX_SECONDS or path not in self._index:
                self._index, self._index_time = self._build_index(), time.monotonic()
            return self._index.get(path)

    def _build_index(self) -> dict[Path, set[str]]:
        index: dict[Path, set[str]] = {}
        for entry in self.history.entries(None, limit=10**9):
            paths = [Path(p).resolve() for p in entry.files]
            if entry.video is not None:
                thumbnail = self.history.thumbnail_path(entry)
                if thumbnail is not None:
                    paths.append(thumbnail.resolve())
            for path in paths:
                index.setdefault(path, set()).add(entry.owner)
        return index

    def _originals(self, copy: Path) -> list[Path]:
        """The outputs ``copy`` may have been copied from: same name and the same bytes."""
        if not OUTPUT_NAME.match(copy.name):  # outputs are <date>/<HHMMSS>_<task>_<tag>.<ext>: others are not
            return []
        found = []
        for original in self.outputs_dir.glob(f"*/{glob.escape(copy.name)}"):
            try:
                if original.is_file() and filecmp.cmp(original, copy, shallow=False):
                    found.append(original.resolve())
            except OSError:
                continue
        return found


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


ADMIN_NEEDED_ZH = "此操作需要管理员：请联系本工作室的管理员（具有 admin 角色的用户）。"


def refuse_unless_admin(access: Access | None, request, lang: str = "") -> None:
    """For admin-only handlers (System tab, cluster workers, the Models page): a ``gr.Error`` in the
    caller's language that says an admin is needed, unless the caller is one (always, without ``access``)."""
    if access is None:
        return
    try:
        access.require_admin(request)
    except RequestError as error:
        import gradio as gr

        from .i18n import STRINGS, error_text, request_language

        STRINGS["en"].setdefault("err_admin_needed", ADMIN_NEEDED)
        STRINGS["zh"].setdefault("err_admin_needed", ADMIN_NEEDED_ZH)
        raise gr.Error(error_text(request_language(lang, request), error.key, error.params, str(error)),
                       print_exception=False) from None
