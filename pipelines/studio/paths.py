"""Which files a request may name: only those inside the app's own folders.

Paths that arrive from users (API parameters, batch CSV rows) go through ``resolve_user_path`` before
anything opens them: relative paths are taken from ``<data>/inputs``, symlinks and ``..`` are resolved
first, and a path that ends up outside the outputs folder, the data folder or Gradio's upload folder is
refused with a ``RequestError``. File names chosen by users become ``safe_tag`` names (``outputs.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .jobs import RequestError
from .settings import Settings


def inputs_dir(settings: Settings) -> Path:
    """Where batch files and their images / audio go; relative paths in requests start here."""
    return settings.data_dir / "inputs"


def allowed_roots(settings: Settings) -> list[Path]:
    """Folders a request may read from: outputs, the data folder (inputs, uploads) and Gradio's uploads."""
    roots = [settings.outputs_dir, settings.data_dir]
    upload_dir = os.environ.get("GRADIO_TEMP_DIR")
    if upload_dir:
        roots.append(Path(upload_dir))
    return [root.resolve() for root in roots]


def is_inside(path: Path, roots: list[Path]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def resolve_user_path(value: object, settings: Settings, what: str = "file") -> Path:
    """``value`` as a path inside the app's folders, or a ``RequestError`` that names it.

    Refuses empty values, NUL bytes and anything that escapes the allowed folders after resolving
    ``..`` and symlinks. It does not check that the file exists: the reader does, with its own message.
    """
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else ""
    if not text.strip() or "\x00" in text:
        raise RequestError(f"The {what} path {text!r} is not a valid path.", key="path_invalid", value=repr(text)[:80])
    try:
        path = Path(text).expanduser()
    except (RuntimeError, KeyError):  # "~nobody/x": no such user, no home directory
        raise RequestError(f"The {what} path {text!r} is not a valid path.", key="path_invalid",
                           value=repr(text)[:80]) from None
    if not path.is_absolute():
        path = inputs_dir(settings) / path
    roots = allowed_roots(settings)
    if not is_inside(path, roots):
        raise RequestError(
            f"The {what} {text!r} is outside the app's folders; put it in {inputs_dir(settings)} or upload it.",
            key="path_outside", value=text[:200], folder=str(inputs_dir(settings)),
        )
    return path.resolve()


def user_file(value: object, settings: Settings, what: str = "file") -> str | None:
    """An optional file parameter checked by ``resolve_user_path``: None or blank stays None, else the path as text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(resolve_user_path(value, settings, what))
