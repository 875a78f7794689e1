"""Where results go: ``outputs/<date>/<time>_<task>_<tag>.<ext>``, never overwritten, written atomically.

Every file is first written under a hidden temporary name in the same folder, then linked (or renamed)
to its final name only if that name is still free, so a crash never leaves a half-written clip that
looks finished and two jobs finishing in the same second never overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

_UNSAFE = re.compile(r"[^\w.-]+")  # \w is Unicode: 你好.wav keeps its name


def safe_tag(text: str, limit: int = 40) -> str:
    """A file-name-safe version of ``text`` (letters of any script, digits, ``._-``); never empty.

    Path separators, ``..``, spaces and characters Windows forbids all become ``-``.
    """
    tag = _UNSAFE.sub("-", str(text)).strip("-._")[:limit]
    return tag or "output"


def output_stem(outputs_dir: Path, task: str, tag: str, when: dt.datetime | None = None) -> Path:
    """``outputs/<date>/<time>_<task>_<tag>`` (no extension; the folder is created)."""
    when = when or dt.datetime.now()
    folder = Path(outputs_dir) / when.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{when.strftime('%H%M%S')}_{task}_{safe_tag(tag)}"


def _publish(temp: Path, wanted: Path) -> Path:
    """Give ``temp`` the name ``wanted``, or ``wanted`` with ``_2``, ``_3``... if that is taken."""
    for attempt in range(1, 10_000):
        final = wanted if attempt == 1 else wanted.with_name(f"{wanted.stem}_{attempt}{wanted.suffix}")
        try:
            os.link(temp, final)  # fails if ``final`` exists: never overwrites
        except FileExistsError:
            continue
        except OSError as error:  # file systems without hard links
            if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                raise
            if final.exists():
                continue
            os.replace(temp, final)
            return final
        temp.unlink()
        return final
    raise FileExistsError(f"No free name for {wanted}")


def write_atomic(wanted: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)`` then publish the file under ``wanted`` (or a free variant of it).

    Returns the final path. On any error the temporary file is removed and nothing is published; a full
    disk becomes an ``OSError`` whose message says so.
    """
    wanted = Path(wanted)
    wanted.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{wanted.stem}.", suffix=f"{wanted.suffix}.partial", dir=wanted.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        if temp.stat().st_size == 0:
            raise OSError(f"Writing {wanted.name} produced an empty file.")
        return _publish(temp, wanted)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"The disk holding {wanted.parent} is full; free some space and run again.") from error
        raise
    finally:
        if temp.exists():
            temp.unlink()


def write_json_atomic(wanted: Path, data: dict) -> Path:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return write_atomic(wanted, lambda temp: temp.write_text(text + "\n", encoding="utf-8"))


def sidecar_path(output: Path) -> Path:
    return Path(output).with_suffix(".json")


def sweep_partials(outputs_dir: Path) -> int:
    """Delete temporary files a crash left behind (``.<name>.partial`` never looks like a finished file,
    but it takes space); returns how many. Run at start, before any job writes."""
    removed = 0
    for temp in Path(outputs_dir).rglob(".*.partial*"):
        try:
            temp.unlink()
            removed += 1
        except OSError:
            pass
    return removed
