"""The status line a tab shows while it follows its own job."""

from __future__ import annotations

from pipelines.studio.jobs import JobState

from .i18n import t

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
