"""The status line a tab shows while it follows its own job."""

from __future__ import annotations

import inspect
import time

import gradio as gr

from pipelines.studio.jobs import JobState

from .i18n import t

WAIT_SHOWN_S = 1.0  # a wait in the queue shorter than this is not mentioned
POLL_SECONDS = 0.5  # how long a tab's handler waits for news from its job before yielding again


def job_status(lang: str, job, position: int) -> str:
    """One line for the job's tab: its place in the queue, or clip, stage, step, speed and time left."""
    if job.state == JobState.QUEUED:
        return t(lang, "status_queued", position=position)
    p = job.progress
    if p.stage == "load":
        return t(lang, "status_loading")
    text = t(lang, "status_running", clip=p.clip, clips=p.clips, stage=t(lang, f"stage_{p.stage}") if p.stage else "",
             step=p.step, total=p.total)
    if p.it_per_s:
        text += f" · {p.it_per_s:.2f} it/s"
    if p.eta_s is not None and p.stage == "denoise":
        text += f" · ETA {p.eta_s:.0f} s"
    return text


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


def done_message(lang: str, job, count: int, folder: str) -> str:
    """The line a finished job leaves: its clips, the time it ran (from its start), the wait apart, a Stop kept."""
    started = job.started or job.created
    text = t(lang, "status_done", count=count, seconds=(job.finished or time.time()) - started, folder=folder)
    waited = started - job.created
    if waited >= WAIT_SHOWN_S:
        text += " " + t(lang, "status_waited", seconds=waited)
    if job.cancelled:  # Stop came while the last clip was decoding or being written: that clip was finished
        text += "\n\n" + t(lang, "status_stopped_kept", count=count)
    return text


def page_twin(run, count: int, stop: bool = True, at: int = 0):
    """The page's own version of a tab's handler ``run`` (a function or generator whose API version raises
    ``gr.Error``).

    ``run`` returns or yields ``count`` outputs, the one at ``at`` the tab's status line. An error (bad input or a failed
    job) is written into that status line, in words, instead of a toast that marks every output with an "Error"
    badge. With ``stop`` the twin yields one more output, the tab's Stop button, enabled only while the job runs.
    """

    def twin(*args, request: gr.Request = None):
        skip = gr.skip()

        def armed(update):
            return (update,) if stop else ()

        try:
            result = run(*args, request=request)
            for index, values in enumerate(result if inspect.isgenerator(result) else [result]):
                values = values if isinstance(values, tuple) else (values,)
                yield (*values, *armed(gr.update(interactive=True) if index == 0 else skip))
        except gr.Error as error:
            said = [skip] * count
            said[at] = f"⚠ {error.message}"
            yield (*said, *armed(gr.update(interactive=False)))
            return
        if stop:
            yield (*[skip] * count, gr.update(interactive=False))

    return twin
