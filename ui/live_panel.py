"""The panel under every tab: status strip, the running job's progress and preview, and the live log."""

from __future__ import annotations

import html

import gradio as gr

from .i18n import Translator, t
from .identity import sees_job, visible_status

REFRESH_SECONDS = 1.0
LOG_LINES = 300


def status_strip(lang: str, status: dict) -> str:
    memory = status.get("memory", {})
    if "used_gib" in memory:
        key = "strip_memory_gpu" if str(status.get("device", "")).startswith("cuda") else "strip_memory_cpu"
        memory_text = t(lang, key, used=memory["used_gib"], total=memory["total_gib"])
    else:
        memory_text = "?"
    models = ", ".join(m["title"] for m in status.get("resident", [])) or t(lang, "strip_none")
    text = t(lang, "strip", device=status.get("device_name", "?"), memory=memory_text, models=models,
             queue=status.get("queue", 0))
    return f'<div class="cs-strip" id="cs-strip">{html.escape(text)}</div>'


def progress_html(lang: str, current: dict | None) -> str:
    if not current or current.get("state") != "running":
        return f'<div class="cs-live" id="cs-live">{html.escape(t(lang, "live_idle"))}</div>'
    total = max(1, current.get("total") or 1)
    percent = 100.0 * (current.get("step") or 0) / total
    stage = t(lang, f"stage_{current['stage']}") if current.get("stage") else ""
    key = "asr_status_running" if current.get("task") == "asr" else "status_running"  # files, not clips
    clip, clips = current.get("clip", 1), current.get("clips", 1)
    text = t(lang, key, clip=clip, clips=clips, file=clip, files=clips, stage=stage, step=current.get("step", 0),
             total=total)
    if current.get("it_per_s"):
        text += f" · {current['it_per_s']:.2f} it/s"
    if current.get("eta_s") is not None and current.get("stage") == "denoise":
        text += f" · ETA {current['eta_s']:.0f} s"
    return (
        f'<div class="cs-live" id="cs-live"><div class="cs-bar"><div style="width:{percent:.1f}%"></div></div>'
        f"<span>{html.escape(current.get('task', '').upper())} {html.escape(current.get('id', ''))} · "
        f"{html.escape(text)}</span></div>"
    )


def live_preview(picture, shown: int | None):
    """What the panel's preview should do: ``(update, id now shown)``.

    A new picture of the running job replaces the old one; once no job runs, or the running job has no
    preview yet (an ASR job after a video job), the last picture is cleared instead of lingering.
    """
    if picture is None:
        return (None, None) if shown is not None else (gr.skip(), None)
    if id(picture) == shown:
        return gr.skip(), shown
    return picture, id(picture)


def build_live_panel(worker, log_buffer, translator: Translator, lang_state: gr.State, strip: gr.HTML,
                     access=None) -> None:
    """The panel, and one timer that refreshes it and the status ``strip`` (placed at the top). With
    ``access`` (users), each user's log shows the general lines and their own jobs' (``Access.log_tail``)."""
    with translator.bind(gr.Accordion("Live", open=True, elem_id="cs-live-panel"), label="live_title"):
        with gr.Row():
            with gr.Column(scale=3):
                live = gr.HTML(progress_html("en", None))
                log = translator.bind(
                    gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True, interactive=False, elem_id="cs-log"),
                    label="log",
                )
            # the page's one preview: shown while a job of this user has a picture (not for speech jobs)
            with gr.Column(scale=1, min_width=200, visible=False) as preview_column:
                preview = translator.bind(gr.Image(label="Preview", type="numpy", height=160, interactive=False,
                                                   elem_id="cs-live-preview"), label="preview")
    seen = gr.State({"log": -1, "preview": None})
    timer = gr.Timer(REFRESH_SECONDS)

    def refresh(lang: str, state: dict, request: gr.Request):
        current_job = worker.current_job()
        status = visible_status(worker.status(), current_job, request)
        log_update = gr.skip()
        if log_buffer is not None and log_buffer.sequence != state.get("log"):
            state = {**state, "log": log_buffer.sequence}
            lines = access.log_tail(log_buffer, request, LOG_LINES) if access else log_buffer.tail(LOG_LINES)
            log_update = "\n".join(lines)
        picture = current_job.preview if current_job is not None and sees_job(current_job, request) else None
        preview_update, shown = live_preview(picture, state.get("preview"))
        before = state.get("preview")
        column = gr.update(visible=shown is not None) if (shown is None) != (before is None) else gr.skip()
        state = {**state, "preview": shown}
        return (status_strip(lang, status), progress_html(lang, status.get("current")), preview_update, column,
                log_update, state)

    timer.tick(refresh, [lang_state, seen], [strip, live, preview, preview_column, log, seen], api_visibility="private",
               show_progress="hidden", queue=False)
