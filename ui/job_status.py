"""The status line a tab shows while it follows its own job."""

from __future__ import annotations

import inspect
import time

import gradio as gr

from pipelines.studio.jobs import JobState

from .i18n import t

WAIT_SHOWN_S = 1.0  # a wait in the queue shorter than this is not mentioned
POLL_SECONDS = 0.5  # how long a tab's handler waits for news from its job before yielding again


class Said(str):
    """A line as shown, that remembers its ``parts`` so it can be said again in another language (``said``)."""

    parts: tuple = ()


def say(lang: str, parts) -> str:
    """``parts`` in ``lang``: each plain text, or ``(fn, args, kwargs)`` said as ``fn(lang, *args, **kwargs)``."""
    return "".join(part if isinstance(part, str) else part[0](lang, *part[1], **part[2]) for part in parts or ())


def said(lang: str, *parts) -> Said:
    """The line ``parts`` make in ``lang``, keeping them."""
    line = Said(say(lang, parts))
    line.parts = tuple(parts)
    return line


def tr(key: str, **params) -> tuple:
    """A part for ``said``: ``t(lang, key, **params)``."""
    return (t, (key,), params)


def _running(lang: str, stage: str, **params) -> str:
    return t(lang, "status_running", stage=t(lang, f"stage_{stage}") if stage else "", **params)


def job_status(lang: str, job, position: int) -> Said:
    """One line for the job's tab: its place in the queue, or clip, stage, step, speed and time left."""
    if job.state == JobState.QUEUED:
        return said(lang, tr("status_queued", position=position))
    p = job.progress
    if p.stage == "load":
        return said(lang, tr("status_loading"))
    parts = [(_running, (p.stage,), dict(clip=p.clip, clips=p.clips, step=p.step, total=p.total))]
    if p.it_per_s:
        parts.append(f" · {p.it_per_s:.2f} it/s")
    if p.eta_s is not None and p.stage == "denoise":
        parts.append(f" · ETA {p.eta_s:.0f} s")
    return said(lang, *parts)


def follow_job(job, timeout: float = POLL_SECONDS * 4):
    """Yield each time ``job`` changes, until it finishes: the new preview image, or None when unchanged.

    The tabs' handlers turn each step into an update of their own outputs; nothing here touches the
    device, it only waits on the job's condition variable.
    """
    seen, shown = -1, None
    while not job.state.finished:
        seen = job.wait_for_change(seen, timeout)
        fresh = job.preview if job.preview is not None and job.preview is not shown else None
        if fresh is not None:
            shown = fresh
        yield fresh


def done_message(lang: str, job, count: int, folder: str, notes=()) -> Said:
    """The line a finished job leaves: its clips, the time it ran (from its start), the wait apart, a Stop kept,
    then ``notes`` (as they are) as a list."""
    started = job.started or job.created
    parts = [tr("status_done", count=count, seconds=(job.finished or time.time()) - started, folder=folder)]
    waited = started - job.created
    if waited >= WAIT_SHOWN_S:
        parts += [" ", tr("status_waited", seconds=waited)]
    if job.cancelled:  # Stop came while the last clip was decoding or being written: that clip was finished
        parts += ["\n\n", tr("status_stopped_kept", count=count)]
    if notes:
        parts.append("\n\n" + "\n".join(f"- {n}" for n in notes))
    return said(lang, *parts)


def kept(line):
    """What a status-line output leaves in the tab's ``gr.State`` for ``redraw``: a ``Said``'s parts, skip, or None."""
    if isinstance(line, Said):
        return line.parts or None
    return None if isinstance(line, str) or line is None else gr.skip()


def redraw(parts, lang: str):
    """The language hook of a tab's status line: the kept line said again in ``lang`` (none kept: unchanged)."""
    return say(lang, parts) if parts else gr.skip()


def page_twin(run, count: int, stop: bool = True, at: int = 0, keep: bool = False):
    """The page's own version of a tab's handler ``run`` (a function or generator whose API version raises
    ``gr.Error``).

    ``run`` returns or yields ``count`` outputs, the one at ``at`` the tab's status line. An error (bad input or a failed
    job) is written into that status line, in words, instead of a toast that marks every output with an "Error"
    badge. With ``stop`` the twin yields one more output, the tab's Stop button, enabled only while the job runs.
    With ``keep``, one more: the status line's parts (``kept``) for a ``gr.State`` that ``redraw`` says again on a
    language switch; an error's parts are its ``parts`` attribute when it has one.
    """

    def twin(*args, request: gr.Request = None):
        skip = gr.skip()

        def armed(update, line):
            return (*((update,) if stop else ()), *((kept(line),) if keep else ()))

        try:
            result = run(*args, request=request)
            for index, values in enumerate(result if inspect.isgenerator(result) else [result]):
                values = values if isinstance(values, tuple) else (values,)
                yield (*values, *armed(gr.update(interactive=True) if index == 0 else skip, values[at]))
        except gr.Error as error:
            line = Said(f"⚠ {error.message}")  # as raised, in the reader's language
            line.parts = ("⚠ ", *(getattr(error, "parts", None) or (error.message,)))
            outputs = [skip] * count
            outputs[at] = line
            yield (*outputs, *armed(gr.update(interactive=False), line))
            return
        if stop:
            yield (*[skip] * count, gr.update(interactive=False), *((skip,) if keep else ()))

    return twin
