"""Batches: many rows, one job each, checked whole before anything is queued.

A batch is plain text (one prompt per line for the video tasks, one audio file per line for speech to
text; blank lines and ``#`` comments skipped) or a CSV whose header names request fields of the task
(``prompt, seed, steps`` ...). Each row starts from the caller's defaults (the page's settings or the
command line's), a preset named by the row or the defaults fills the video settings the row and the
defaults leave open, and the row's own cells win. Paths in rows go through ``resolve_user_path``.

``read_batch`` checks every row with the task's own validation (``validate_t2v`` / ``check_i2v`` /
``validate_asr``) and keeps each row's error with its row number; ``BatchPlan.require_valid`` raises one
``BatchError`` that lists them, so a typo in row 37 queues nothing. ``submit_batch`` (in ``batch_jobs.py``,
named here too) then queues each row as its own job (own output, own sidecar) with ``batch <id> row <n>``
in the request's notes, and ``BatchRun`` follows the jobs, cancels them and says what each row produced.
Used by the Batch tab and ``scripts/generate.py`` alike. No torch, no gradio.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..loras.check import check_request
from .asr import ASRRequest, validate_asr
from .batch_jobs import (BatchRun, RowOutcome, batch_note, describe_row, job_outputs, row_outcome,
                         submit, submit_batch)
from .i2v import I2VRequest, check_i2v
from .i2v import presets_for as i2v_presets_for
from ..studio.jobs import RequestError
from ..studio.paths import inputs_dir, resolve_user_path
from ..families.catalogue import DEFAULT_MODEL, get_spec
from ..studio.settings import TASKS, Settings
from .t2v import T2VRequest, validate_t2v
from .t2v import presets_for as t2v_presets_for

MAX_ROWS = 500
MAX_BATCH_BYTES = 2_000_000  # 500 rows of 4,000-character prompts
MAX_ERRORS_LISTED = 20  # in a BatchError's message; ``errors`` keeps them all
SEED_POLICIES = ("fixed", "random")  # one seed for every row, or a random seed per row
FORMATS = ("auto", "text", "csv")

REQUEST_CLASSES = {"t2v": T2VRequest, "i2v": I2VRequest, "asr": ASRRequest}
# Filled by validation or by the batch itself, never by a column.
_NOT_COLUMNS = {"width", "height", "notes", "names"}
# What a plain-text line is, per task.
LINE_FIELD = {"t2v": "prompt", "i2v": "prompt", "asr": "files"}
PATH_FIELDS = {"image": "image", "last_image": "last frame", "files": "audio file"}
BOOL_FIELDS = {"word_timestamps"}
# Preset-controlled video settings (T2V fills them here; I2V's validation fills what is left ``None``).
PRESET_FIELDS = ("resolution", "frames", "steps", "guidance", "shift")
ALIASES = {
    "audio": "files", "file": "files", "path": "files", "negative": "negative_prompt", "duration": "duration_s",
    "seconds": "duration_s", "last_frame": "last_image", "cfg": "guidance", "flow_shift": "shift",
    "num_frames": "frames", "resolution_p": "resolution", "lora": "loras",
}
_TRUE = {"1", "true", "yes", "y", "on", "x"}
_FALSE = {"0", "false", "no", "n", "off", ""}


def columns_for(task: str) -> tuple[str, ...]:
    """The request fields a CSV header may name for ``task``, in the request's order."""
    return tuple(f.name for f in dataclasses.fields(REQUEST_CLASSES[task]) if f.name not in _NOT_COLUMNS)


def column_name(header: str) -> str:
    """``"Negative prompt"`` -> ``negative_prompt``; known aliases (``audio``, ``duration``) -> their field."""
    name = "_".join(str(header).strip().lower().replace("-", " ").split())
    return ALIASES.get(name, name)


def new_batch_id() -> str:
    return uuid.uuid4().hex[:8]


# --- plans ---------------------------------------------------------------------------------------------


@dataclass
class BatchRow:
    """One row: its number in the file (a spreadsheet's row number), its own cells, and the checked
    request, or the error that stops it."""

    row: int
    cells: dict[str, str] = field(default_factory=dict)
    request: Any = None
    error: RequestError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchError(RequestError):
    """Rows of a batch are bad; nothing was queued. ``errors`` holds every bad row (number and error)."""

    def __init__(self, errors: list[BatchRow]):
        lines = [f"Row {row.row}: {row.error}" for row in errors[:MAX_ERRORS_LISTED]]
        if len(errors) > MAX_ERRORS_LISTED:
            lines.append(f"... and {len(errors) - MAX_ERRORS_LISTED} more.")
        rows = ", ".join(str(row.row) for row in errors[:MAX_ERRORS_LISTED])
        super().__init__(f"{len(errors)} row(s) of the batch have errors; nothing was queued.\n" + "\n".join(lines),
                         key="batch_invalid", count=len(errors), rows=rows)
        self.errors = errors


@dataclass
class BatchPlan:
    """A parsed and checked batch, ready for ``submit_batch`` once ``require_valid`` passes."""

    task: str
    rows: list[BatchRow]
    id: str = field(default_factory=new_batch_id)
    fmt: str = "text"  # "text" or "csv", as read

    @property
    def errors(self) -> list[BatchRow]:
        return [row for row in self.rows if not row.ok]

    def require_valid(self) -> BatchPlan:
        if self.errors:
            raise BatchError(self.errors)
        return self


# --- reading -------------------------------------------------------------------------------------------


def read_batch_file(path: str | Path) -> str:
    """A batch file's text (UTF-8, with or without BOM), within ``MAX_BATCH_BYTES``."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise RequestError(f"The batch file is {size / 1e6:.1f} MB; the limit is {MAX_BATCH_BYTES / 1e6:g} MB.",
                               key="batch_too_large", limit=MAX_BATCH_BYTES / 1e6)
        data = file.read_bytes()
    except OSError as error:
        raise RequestError(f"The batch file {file.name!r} cannot be read: {error.strerror or error}.",
                           key="batch_unreadable", name=file.name) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RequestError(f"The batch file {file.name!r} is not UTF-8 text; save it as UTF-8 (CSV UTF-8 in Excel).",
                           key="batch_encoding", name=file.name) from None


def _is_comment(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith("#")


def _text_rows(text: str, task: str) -> list[tuple[int, dict[str, str]]]:
    line_field = LINE_FIELD[task]
    return [(number, {line_field: line.strip()}) for number, line in enumerate(text.splitlines(), start=1)
            if not _is_comment(line)]


def _dialect(header_line: str):
    try:
        return csv.Sniffer().sniff(header_line, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _first_line(text: str) -> tuple[int, str]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not _is_comment(line):
            return number, line
    return 0, ""


def looks_like_csv(text: str, task: str) -> bool:
    """True when the first line that is not a comment is a header of this task's columns only."""
    _, line = _first_line(text)
    if not line:
        return False
    cells = next(csv.reader([line], _dialect(line)), [])
    known = set(columns_for(task))
    names = [column_name(cell) for cell in cells]
    return (len(names) >= 2 and all(name in known for name in names)) or names == [LINE_FIELD[task]]


def _csv_rows(text: str, task: str) -> list[tuple[int, dict[str, str]]]:
    known = columns_for(task)
    header_number, header_line = _first_line(text)
    if not header_line:
        return []
    lines = text.splitlines(keepends=True)[header_number - 1:]
    reader = csv.reader(io.StringIO("".join(lines)), _dialect(header_line))
    try:
        header = [column_name(cell) for cell in next(reader)]
    except csv.Error as error:
        raise RequestError(f"Row {header_number}: the CSV header cannot be read ({error}).", key="batch_csv",
                           row=header_number, detail=str(error)) from None
    for name in header:
        if name and name not in known:
            raise RequestError(
                f"Row {header_number}: unknown column {name!r}; a {task} batch takes {', '.join(known)}.",
                key="batch_column_unknown", row=header_number, column=name, task=task, allowed=", ".join(known),
            )
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:
        raise RequestError(f"Row {header_number}: the column {twice[0]!r} appears twice.", key="batch_column_twice",
                           row=header_number, column=twice[0])
    if LINE_FIELD[task] not in header and not (task == "i2v" and "image" in header):
        raise RequestError(f"Row {header_number}: the CSV needs a {LINE_FIELD[task]!r} column.",
                           key="batch_column_missing", row=header_number, column=LINE_FIELD[task])
    rows = []
    offset = header_number - 1
    previous_end = reader.line_num
    try:
        for cells in reader:
            start = offset + previous_end + 1
            previous_end = reader.line_num
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if len(cells) > len(header):
                rows.append((start, {"__cells__": str(len(cells)), "__columns__": str(len(header))}))
                continue
            rows.append((start, {name: value.strip() for name, value in zip(header, cells) if name}))
    except csv.Error as error:
        line = offset + reader.line_num
        raise RequestError(f"Row {line}: the CSV cannot be read there ({error}).", key="batch_csv", row=line,
                           detail=str(error)) from None
    return rows


# --- one row -------------------------------------------------------------------------------------------


def _path(value: str, settings: Settings, what: str) -> str:
    try:
        path = resolve_user_path(value, settings, what)
    except RequestError as error:  # re-keyed: the batch's own translations say it for a row
        raise RequestError(str(error), key=f"batch_{error.key}", what=what, **error.params) from None
    if not path.is_file():
        raise RequestError(f"The {what} {value!r} does not exist (looked for {path}).", key="batch_file_missing",
                           what=what, value=str(value), path=str(path))
    return str(path)


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RequestError(f"{name} must be yes or no, not {value!r}.", key="batch_bool", column=name, value=str(value))


def _preset_values(task: str, model: str, preset: str, demo: bool) -> tuple[str, dict]:
    """The preset's name and video settings for ``model``; an unknown name is an error, an empty one the
    model's default preset."""
    try:
        spec = get_spec(model)
    except ValueError:
        return preset, {}  # the task's validation names the model
    if spec.task != task:
        return preset, {}
    presets = t2v_presets_for(spec, demo) if task == "t2v" else i2v_presets_for(spec, demo)
    if not presets:
        return preset, {}
    if preset:
        chosen = next((p for p in presets if p.name.lower() == preset.lower()), None)
        if chosen is None:
            names = ", ".join(p.name for p in presets)
            raise RequestError(f"{spec.title} has no preset {preset!r}; it has {names}.", key="batch_preset",
                               preset=preset, model=spec.title, allowed=names)
    else:
        chosen = next((p for p in presets if p.name == spec.default_preset), presets[0])
    return chosen.name, {name: getattr(chosen, name) for name in PRESET_FIELDS}


def build_request(task: str, values: dict[str, Any], settings: Settings):
    """A checked request of ``task`` from merged values (defaults, preset and the row's cells)."""
    values = dict(values)
    for name, what in PATH_FIELDS.items():
        if name not in values or values[name] in (None, ""):
            continue
        if name == "files":
            raw = values[name]
            items = raw if isinstance(raw, (list, tuple)) else [p for p in str(raw).split(";") if p.strip()]
            values[name] = [_path(str(item).strip(), settings, what) for item in items]
        else:
            values[name] = _path(str(values[name]), settings, what)
    for name in BOOL_FIELDS & set(values):
        values[name] = _bool(values[name], name)
    if task == "asr":
        values.setdefault("files", [])
        return validate_asr(ASRRequest(**values), demo=settings.demo)
    values.setdefault("prompt", "")
    if task == "t2v":
        if "duration_s" in values and values["duration_s"] in ("", 0, "0"):
            values["duration_s"] = None
        request = validate_t2v(T2VRequest(**values), demo=settings.demo, settings=settings)
    else:
        values.setdefault("image", None)
        request = check_i2v(I2VRequest(**values), demo=settings.demo, settings=settings)[0]
    # The LoRA files too, so a bad one is named with its row and nothing is queued (validation checks only the
    # text); the executor's submit checks them again, from the library's scan cache (no header read again).
    check_request(request, settings)
    return request


def _row_values(task: str, defaults: dict, cells: dict, demo: bool) -> dict:
    """Defaults, then the preset's values where neither sets them, then the row's own cells."""
    values = {name: value for name, value in defaults.items() if value is not None}
    values.update({name: value for name, value in cells.items() if value != ""})
    if task == "t2v":
        model = values.get("model") or DEFAULT_MODEL[task]
        name, preset = _preset_values(task, model, str(values.get("preset") or ""), demo)
        values = {**preset, **values, "model": model, "preset": name}
    elif task == "i2v" and values.get("preset"):
        _preset_values(task, values.get("model") or DEFAULT_MODEL[task], str(values["preset"]), demo)
    return values


def read_batch(text: str, task: str, settings: Settings, defaults: dict | None = None, seed_policy: str = "fixed",
               fmt: str = "auto", name: str = "") -> BatchPlan:
    """Parse and check every row of a batch; bad rows keep their error (see ``BatchPlan.require_valid``).

    ``defaults`` are request fields (the page's or the command line's settings); ``seed_policy`` is
    ``fixed`` (every row the default seed, one random seed for the batch when it is -1) or ``random``
    (a fresh seed per row). A seed in a row wins either way. ``fmt`` is ``text``, ``csv`` or ``auto``
    (CSV when ``name`` ends in ``.csv`` or the first line is a header of the task's columns). Problems
    with the whole batch (too big, empty, an unknown column) raise ``RequestError`` at once.
    """
    if task not in TASKS:
        raise RequestError(f"A batch is for {', '.join(TASKS)}, not {task!r}.", key="batch_task", value=str(task))
    if seed_policy not in SEED_POLICIES:
        raise RequestError(f"The seed policy is fixed or random, not {seed_policy!r}.", key="batch_seed_policy",
                           value=str(seed_policy))
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}")
    text = text or ""
    if len(text.encode("utf-8", "replace")) > MAX_BATCH_BYTES:
        raise RequestError(f"The batch is larger than {MAX_BATCH_BYTES / 1e6:g} MB.", key="batch_too_large",
                           limit=MAX_BATCH_BYTES / 1e6)
    known = set(columns_for(task))
    defaults = {column_name(k): v for k, v in (defaults or {}).items()}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise RequestError(f"Unknown setting {unknown[0]!r}; a {task} batch takes {', '.join(sorted(known))}.",
                           key="batch_setting_unknown", setting=unknown[0], task=task, allowed=", ".join(sorted(known)))
    if fmt == "auto":
        fmt = "csv" if name.lower().endswith(".csv") or looks_like_csv(text, task) else "text"
    raw_rows = _csv_rows(text, task) if fmt == "csv" else _text_rows(text, task)
    if not raw_rows:
        raise RequestError("The batch has no rows: write one prompt per line, or a CSV with a header row.",
                           key="batch_empty")
    if len(raw_rows) > MAX_ROWS:
        raise RequestError(f"The batch has {len(raw_rows)} rows; the limit is {MAX_ROWS}.", key="batch_too_many_rows",
                           count=len(raw_rows), limit=MAX_ROWS)

    if task != "asr":
        seed = defaults.get("seed")
        seed = -1 if seed in (None, "") else seed
        if seed_policy == "random":
            defaults["seed"] = -1
        elif str(seed).strip() in ("-1", "-1.0"):
            defaults["seed"] = secrets.randbelow(2**31)  # one seed for the whole batch
        else:
            defaults["seed"] = seed

    rows = []
    for number, cells in raw_rows:
        row = BatchRow(row=number, cells=cells)
        try:
            if "__cells__" in cells:
                raise RequestError(f"The row has {cells['__cells__']} cells for {cells['__columns__']} columns.",
                                   key="batch_row_cells", cells=cells["__cells__"], columns=cells["__columns__"])
            row.request = build_request(task, _row_values(task, defaults, cells, settings.demo), settings)
        except RequestError as error:
            row.error = error
        rows.append(row)
    return BatchPlan(task=task, rows=rows, fmt=fmt)


def parse_batch(text: str, task: str, settings: Settings, **options: Any) -> BatchPlan:
    """``read_batch`` that raises ``BatchError`` when any row is bad: all rows are good, or nothing."""
    return read_batch(text, task, settings, **options).require_valid()


# --- tables --------------------------------------------------------------------------------------------


def row_label(task: str, cells: dict) -> str:
    """A bad row's own text, for tables: its prompt or file as written."""
    text = cells.get(LINE_FIELD[task]) or cells.get("image") or ""
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = [
    "MAX_ROWS", "BatchError", "BatchPlan", "BatchRow", "BatchRun", "RowOutcome", "batch_note", "columns_for",
    "describe_row", "job_outputs",
    "inputs_dir", "parse_batch", "read_batch", "read_batch_file", "row_label", "row_outcome", "submit",
    "submit_batch",
]
