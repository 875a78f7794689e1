"""``StudioGuard``: the ASGI middleware that makes a shared studio safe, behind ``identity.LoginRequired``.

- ``POST /login``: throttled per (user name, address) and per address (``LoginThrottle``). A locked-out
  login gets HTTP 429 with ``Retry-After`` before any password is checked; each lockout is logged with
  the address and the user name (never the password). Logins from one address are checked one at a
  time, so parallel guesses are counted like serial ones.
- The client's address is the connection's; ``X-Forwarded-For`` counts only when the connection comes
  from a ``--trusted-proxy`` (then the nearest address in it that is not a trusted proxy).
- ``/file=`` and ``/gradio_api/file=``: a file is served only to those ``Access.may_read`` allows (403),
  whatever path is asked for.
- ``/gradio_api/upload``: the uploaded files are recorded as the uploader's; an API call or queued event
  whose data names another user's upload or output is refused (403) before any handler runs.
- (Downloading and deleting models is admins' work: the Models API's handlers refuse others,
  ``ui.auth_access.refuse_unless_admin``.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from urllib.parse import parse_qs

from pipelines.studio.logbuffer import ADMINS_ONLY

from .auth_access import Access
from .identity import logged_in_user

logger = logging.getLogger(__name__)
LOGIN_PATHS = ("/login", "/login/")
FILE_PREFIXES = ("/file=", "/gradio_api/file=", "/file/", "/gradio_api/file/")
UPLOAD_PATHS = ("/upload", "/gradio_api/upload")
CALL_PREFIXES = ("/gradio_api/call/", "/gradio_api/run/", "/gradio_api/queue/join", "/call/", "/run/", "/queue/join")
MAX_LOGIN_BODY = 64 * 2**10  # a login form is a few hundred bytes
MAX_CALL_BODY = 64 * 2**20  # an API call's data (files are uploaded apart): checked whole, never skipped


def client_address(scope, trusted_proxies: frozenset[str]) -> str:
    """The address of whoever sent the request: the connection's, or behind a trusted proxy its
    ``X-Forwarded-For`` entry nearest to us that is not a trusted proxy itself."""
    address = (scope.get("client") or ("?", 0))[0]
    if address not in trusted_proxies:
        return address
    forwarded = [value.decode("latin-1") for key, value in scope.get("headers", []) if key.lower() == b"x-forwarded-for"]
    hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop
    return address


class StudioGuard:
    """ASGI middleware: login throttling, per-user files and uploads, admin-only model changes (see above)."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access
        self._login_locks: dict[str, asyncio.Lock] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = _route(scope), scope.get("method", "GET")
        if method == "POST" and path in LOGIN_PATHS and self.access.throttle is not None:
            await self._login(scope, receive, send)
        elif method in ("GET", "HEAD") and path.startswith(FILE_PREFIXES):
            await self._file(scope, receive, send, path)
        elif method == "POST" and path in UPLOAD_PATHS:
            await self.app(scope, receive, self._recording_uploads(scope, send))
        elif method == "POST" and path.startswith(CALL_PREFIXES):
            await self._call(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- login ----------------------------------------------------------------------------------------

    async def _login(self, scope, receive, send):
        throttle, address = self.access.throttle, client_address(scope, self.access.trusted_proxies)
        body = await _read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            await _answer(send, 413, {"detail": "The login form is too large."})
            return
        user = await _form_user(scope, body)
        lock = self._login_locks.setdefault(address, asyncio.Lock())
        async with lock:
            wait = throttle.wait(user, address)
            if wait > 0:
                seconds = math.ceil(wait)
                await _answer(send, 429, {"detail": f"Too many failed logins: try again in {seconds} s."},
                              [(b"retry-after", str(seconds).encode())])
                return
            status = {}

            async def watched(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            await self.app(scope, _replay(body, receive), watched)
            if status.get("code") == 200:
                throttle.succeeded(user, address)
            elif status.get("code") in (400, 401):
                lockout = throttle.failed(user, address)
                if lockout is not None:
                    logger.warning("Login locked for %.0f s: user %r from %s after repeated wrong passwords%s",
                                   lockout.seconds, user, address, " (this address, any user)"
                                   if lockout.whole_address else "", extra={"owner": ADMINS_ONLY})
        if len(self._login_locks) > 10_000:
            self._login_locks = {key: value for key, value in self._login_locks.items() if value.locked()}

    # --- files ----------------------------------------------------------------------------------------

    async def _file(self, scope, receive, send, path):
        asked = next(path[len(prefix):] for prefix in FILE_PREFIXES if path.startswith(prefix))
        if "://" not in asked[:12] and self.access.book:
            user = logged_in_user(scope)
            absolute = _absolute(asked)
            allowed = await asyncio.to_thread(  # reading the sidecars: off the event loop
                lambda: all(self.access.may_read(user, candidate) for candidate in {absolute, absolute.resolve()}))
            if not allowed:
                logger.info("Refused file %s to %s: not theirs", Path(asked).name, user, extra={"owner": ADMINS_ONLY})
                await _answer(send, 403, {"detail": "File not allowed: it belongs to another user."})
                return
        await self.app(scope, receive, send)

    def _recording_uploads(self, scope, send):
        start: dict = {}
        chunks: list[bytes] = []
        user = logged_in_user(scope)

        async def wrapped(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if start.get("status") == 200 and user is not None:
                try:
                    paths = [p for p in json.loads(body) if isinstance(p, str)]
                except (ValueError, TypeError):
                    paths = []
                self.access.record_upload(user, paths)
            await send(start)
            await send({"type": "http.response.body", "body": body})

        return wrapped

    async def _call(self, scope, receive, send):
        if not self.access.book:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive, MAX_CALL_BODY)
        if body is None:
            await _answer(send, 413, {"detail": f"The request's data is over {MAX_CALL_BODY // 2**20} MB."})
            return
        user = logged_in_user(scope)
        try:
            named = list(_paths(json.loads(body or b"null")))
        except ValueError:  # not JSON: Gradio answers it itself
            named = []
        refused = await asyncio.to_thread(self._refused, user, named) if named else False
        if refused:
            logger.info("Refused a call by %s naming another user's file", user, extra={"owner": ADMINS_ONLY})
            await _answer(send, 403, {"detail": "That file belongs to another user."})
            return
        await self.app(scope, _replay(body, receive), send)

    def _refused(self, user: str | None, named: list[str]) -> bool:
        """Whether any existing file among ``named`` is one ``user`` may not read."""
        for text in named:
            candidate = _absolute(text).resolve()
            if candidate.exists() and not self.access.may_read(user, candidate):
                return True
        return False


def _absolute(text: str) -> Path:
    """``text`` as an absolute path with ``.`` and ``..`` folded away, symlinks left as they are."""
    path = Path(text).absolute()
    parts: list[str] = []
    for part in path.parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return Path(path.anchor, *parts)


def _route(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


def _paths(value, key: str = ""):
    """The strings of a request's data that may name a file: a file's ``path`` (``{"path": ...}``) and any
    absolute path (prompts and other text are left alone)."""
    if isinstance(value, str):
        if len(value) < 4096 and "://" not in value[:12] and (key == "path" or Path(value).is_absolute()):
            yield value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _paths(item, str(name))
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, key if key == "path" else "")


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive=None):
    """A ``receive`` that gives ``body`` again, then whatever the client sends next (its disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is None:
            return {"type": "http.disconnect"}
        return await receive()

    return replayed


async def _form_user(scope, body: bytes) -> str:
    """The ``username`` field of a login form (url-encoded or multipart), stripped as Gradio strips it."""
    from starlette.requests import Request

    content_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return (parse_qs(body.decode("utf-8", "replace")).get("username") or [""])[0].strip()
    try:
        form = await Request(scope, _replay(body)).form()
        return str(form.get("username") or "").strip()
    except Exception:  # a malformed form: Gradio answers it itself
        return ""


async def _answer(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
