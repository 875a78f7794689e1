"""Where model weights come from: Hugging Face (or the mirror in ``HF_ENDPOINT``) and ModelScope.

Each source answers one question, ``listing(repo_id, revision)``: the commit it resolves to and
its files with size, checksum and download URL. ``downloads.py`` does the rest (progress, resume,
checks): Hugging Face's files with our own HTTP code, ModelScope's through the ``modelscope``
package's downloader (``modelscope_fetch.py``). Standard library only: no torch, no gradio,
no hub client, so the Models tab's size look-ups and ``auto``'s fallback cost one request.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

SOURCES = ("auto", "huggingface", "modelscope")
TIMEOUT = 30

# ModelScope names for the catalogue's repos it carries (Wan-AI's Diffusers repos have the same name).
MODELSCOPE_NAMES = {
    "openai/whisper-large-v3": "AI-ModelScope/whisper-large-v3",
    "openai/whisper-large-v3-turbo": "AI-ModelScope/whisper-large-v3-turbo",
    "openai/whisper-small": "AI-ModelScope/whisper-small",
}
MODELSCOPE_ORGS = ("Wan-AI/",)


class SourceUnreachable(RuntimeError):
    """The source did not answer (network, DNS, 5xx): ``auto`` tries the other one."""


class SourceError(ValueError):
    """The source answered, but cannot give this model (unknown repo, revision, not carried)."""


@dataclass
class RemoteFile:
    path: str  # inside the repo, '/'-separated
    size: int
    url: str
    sha256: str | None = None  # LFS / ModelScope checksum
    git_sha1: str | None = None  # Hugging Face's blob id for small (non-LFS) files


@dataclass
class Listing:
    source: str  # "huggingface" | "modelscope"
    repo_id: str  # the name at that source
    revision: str  # the commit the files are from
    files: list[RemoteFile] = field(default_factory=list)
    ref: str = ""  # the branch, tag or commit asked for, as the source names it ("main", "master", ...)

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def modelscope_endpoint() -> str:
    """MODELSCOPE_ENDPOINT, else MODELSCOPE_URL_SCHEME + MODELSCOPE_DOMAIN as the modelscope client reads them."""
    explicit = os.environ.get("MODELSCOPE_ENDPOINT", "").strip().rstrip("/")
    if explicit:
        return explicit
    scheme = os.environ.get("MODELSCOPE_URL_SCHEME", "https://").strip() or "https://"
    domain = os.environ.get("MODELSCOPE_DOMAIN", "").strip() or "www.modelscope.cn"
    if domain.lower().startswith(("http://", "https://")):  # a domain given with its scheme
        return domain.rstrip("/")
    return f"{scheme}{domain}".rstrip("/")


def modelscope_name(repo_id: str) -> str | None:
    """The repo's name on ModelScope, or None when ModelScope does not carry it."""
    if repo_id in MODELSCOPE_NAMES:
        return MODELSCOPE_NAMES[repo_id]
    return repo_id if repo_id.startswith(MODELSCOPE_ORGS) else None


def get_json(url: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(url, headers={"User-Agent": "cinescribe", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise SourceUnreachable(f"{url} answered {error.code}") from error
        raise SourceError(f"{url} answered {error.code} ({error.reason})") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise SourceUnreachable(f"{url} cannot be reached ({getattr(error, 'reason', error)})") from error


def auth_headers(source: str) -> dict[str, str]:
    token = os.environ.get("HF_TOKEN" if source == "huggingface" else "MODELSCOPE_API_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def hf_listing(repo_id: str, revision: str | None) -> Listing:
    """GET /api/models/{repo}/revision/{rev}?blobs=true: the commit, and each file's size and LFS sha256."""
    base = hf_endpoint()
    rev = revision or "main"
    quoted = urllib.parse.quote(rev, safe="")
    data = get_json(f"{base}/api/models/{repo_id}/revision/{quoted}?blobs=true", auth_headers("huggingface"))
    commit = data.get("sha") or rev
    files = []
    for sibling in data.get("siblings", []):
        path = sibling["rfilename"]
        lfs = sibling.get("lfs") or {}
        files.append(RemoteFile(path, int(lfs.get("size", sibling.get("size", 0)) or 0),
                                f"{base}/{repo_id}/resolve/{commit}/{urllib.parse.quote(path)}",
                                sha256=lfs.get("sha256"), git_sha1=None if lfs else sibling.get("blobId")))
    return Listing("huggingface", repo_id, commit, files, ref=rev)


def modelscope_listing(repo_id: str, revision: str | None) -> Listing:
    """GET /api/v1/models/{repo}/repo/files?Recursive=true: each file's Path, Size and Sha256."""
    name = modelscope_name(repo_id)
    if name is None:
        raise SourceError(f"ModelScope does not carry {repo_id}")
    base = modelscope_endpoint()
    rev = revision or "master"
    query = urllib.parse.urlencode({"Revision": rev, "Recursive": "true"})
    data = get_json(f"{base}/api/v1/models/{name}/repo/files?{query}", auth_headers("modelscope"))
    if not isinstance(data, dict) or data.get("Code", 200) != 200 or "Data" not in data:
        raise SourceError(f"ModelScope has no {name} at {rev}: {str(data)[:200]}")
    files = []
    for entry in data["Data"].get("Files", []):
        if entry.get("Type", "blob") != "blob":
            continue
        path = entry["Path"]
        url = f"{base}/api/v1/models/{name}/repo?" + urllib.parse.urlencode({"Revision": rev, "FilePath": path})
        files.append(RemoteFile(path, int(entry.get("Size", 0)), url, sha256=entry.get("Sha256") or None))
    return Listing("modelscope", name, modelscope_commit(data["Data"], rev), files, ref=rev)


def modelscope_commit(data: dict, ref: str) -> str:
    """The commit a ``repo/files`` answer is from. Its ``LatestCommitter`` has ``Id`` (often empty) and
    ``ShortId``; each file's ``Revision`` is the full id of the last commit that touched the file (what
    modelscope's cache keeps as a file's commit): ``Id``, else the file ``Revision`` that ``ShortId``
    begins, else ``ShortId``, else ``ref`` (the branch or tag asked for)."""
    latest = data.get("LatestCommitter") or {}
    short = str(latest.get("ShortId") or "")
    revisions = [str(entry.get("Revision") or "") for entry in data.get("Files") or []]
    return str(latest.get("Id") or next((r for r in revisions if short and r.startswith(short)), short) or ref)


def listing(repo_id: str, revision: str | None, source: str = "auto") -> Listing:
    """The files to fetch; ``auto``: Hugging Face, then ModelScope when Hugging Face cannot be reached."""
    if source not in SOURCES:
        raise SourceError(f"unknown model source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "huggingface":
        return hf_listing(repo_id, revision)
    if source == "modelscope":
        return modelscope_listing(repo_id, None if revision == "main" else revision)
    try:
        return hf_listing(repo_id, revision)
    except SourceUnreachable as hf_error:
        if modelscope_name(repo_id) is None:
            raise
        try:
            return modelscope_listing(repo_id, None if revision in (None, "main") else revision)
        except SourceUnreachable as ms_error:
            raise SourceUnreachable(f"{hf_error}; {ms_error}") from ms_error
