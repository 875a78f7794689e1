"""Who is asking: the logged-in user or the browser session, and the guard that turns everyone else away.

- ``owner_of(request)`` is the name a job is filed under: the login name when the app runs with
  ``--auth`` / ``--auth-file``, else the browser session (Gradio's session hash), so each tab and the
  History see their own jobs.
- ``check_owner(job, request)`` refuses, with a ``RequestError``, to let one logged-in user act on
  another user's job.
- ``LoginRequired`` is an ASGI middleware for the server when a login is required. Gradio checks the
  login on its main routes, but answers a few without it (``/gradio_api/cancel``, ``/reset``,
  ``/heartbeat``, ``/stream``, ``/startup-events``...) and its login page embeds the whole API
  description. The guard refuses every request without a valid login except what the login page
  needs, and serves that page without the API description.
"""

from __future__ import annotations

import json
import logging
import re

import gradio as gr

from pipelines.studio.jobs import RequestError
from pipelines.studio.logbuffer import ADMINS_ONLY

logger = logging.getLogger(__name__)


def owner_of(request) -> str:
    """The logged-in user's name when a login is required, else this browser session's id ("" if none)."""
    username = getattr(request, "username", None)
    if username:
        return str(username)
    return str(getattr(request, "session_hash", "") or "")


def check_owner(job, request) -> None:
    """Refuse (``RequestError``) when a login is required and ``job`` belongs to another user.

    Without a login there are no users to tell apart: a browser only ever holds its own job ids.
    """
    username = getattr(request, "username", None)
    if username and job.owner != str(username):
        raise RequestError("This job belongs to another user; you can only stop or look at your own jobs.",
                           key="not_your_job")


def sees_job(job, request) -> bool:
    """Whether the viewer behind ``request`` may see ``job``'s id, notes and preview (always without a login)."""
    username = getattr(request, "username", None)
    return job is None or not username or job.owner == str(username)


def visible_status(status: dict, job, request) -> dict:
    """``worker.status()`` for this viewer: another user's running job shows as busy, without its details."""
    current = status.get("current")
    if current and not sees_job(job, request):
        current = {key: current.get(key) for key in ("task", "state", "stage", "step", "total", "clip", "clips",
                                                     "it_per_s", "eta_s")} | {"id": "", "other_user": True}
        return {**status, "current": current}
    return status


def cancel_own_job(worker, job_id: str, request) -> bool:
    """Stop job ``job_id`` for the user behind ``request``: False when there is no such unfinished job,
    ``RequestError`` when it is another user's."""
    job = worker.job(job_id) if job_id else None
    if job is None:
        return False
    check_owner(job, request)
    return worker.cancel(job.id)


def cancel_handler(worker):
    """The tabs' Stop: cancels the caller's own job (another user's is refused with a translated message)."""
    from .i18n import error_text, request_language

    def cancel(current_job_id: str, request: gr.Request) -> bool:
        try:
            return cancel_own_job(worker, current_job_id, request)
        except RequestError as error:
            raise gr.Error(error_text(request_language("", request), error.key, error.params, str(error)),
                           print_exception=False) from None

    return cancel


# --- the guard ------------------------------------------------------------------------------------------

# What the login page itself needs before anyone has logged in: the page, its scripts, styles and icons,
# and the login form's target; and ``startup-events``, which ``launch`` calls itself, once (later calls do
# nothing). Everything else answers 401.
OPEN_PATHS = frozenset({
    "/", "/login", "/login/", "/logout", "/favicon.ico", "/manifest.json", "/theme.css", "/robots.txt",
    "/gradio_api/theme.css", "/gradio_api/login_check", "/gradio_api/login_check/", "/gradio_api/startup-events",
})
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)
NOT_LOGGED_IN = {"detail": {"error": "Not authenticated", "auth_message": None}}  # as Gradio answers itself


def logged_in_user(scope) -> str | None:
    """The user of the request in ``scope`` according to Gradio's own login cookie, or None."""
    from starlette.requests import HTTPConnection

    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    cookie_id = getattr(app, "cookie_id", None)
    if not isinstance(tokens, dict) or cookie_id is None:  # not Gradio's app as we know it: refuse
        return None
    cookies = HTTPConnection(scope).cookies
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        user = tokens.get(cookies.get(name))
        if user:
            return user
    return None


class LoginRequired:
    """ASGI middleware: only logged-in users get past it, apart from the login page (see ``OPEN_PATHS``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or logged_in_user(scope):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif path == "/" and scope.get("method") == "GET":
            await self.app(scope, receive, _without_api_info(send))
        elif path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
        else:
            logger.info("Refused %s %s: not logged in", scope.get("method"), path, extra={"owner": ADMINS_ONLY})
            body = json.dumps(NOT_LOGGED_IN).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def _without_api_info(send):
    """Wrap ``send`` so that the login page goes out without ``window.gradio_api_info`` (the API's description)."""
    start: dict = {}
    chunks: list[bytes] = []

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
        body = _API_INFO.sub(b"window.gradio_api_info = null;</script>", b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped
