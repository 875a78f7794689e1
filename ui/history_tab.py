"""The History tab: every past and waiting job from the sidecars and the job store; play, download,
reuse settings, delete (to the trash), stop.

With a login (``--auth``), each user sees only their own jobs (and outputs of unknown owner, such as a
copied-in folder), and users with the admin role everyone's; without one, the page is one person's studio
and shows everything.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines.studio.history import History, HistoryEntry, matches
from pipelines.families.catalogue import get_spec

from .i18n import Translator, error_text, request_language, t
from .identity import check_owner
from .job_status import page_twin
from .lora_picker import loras_text

TASK_TABS = {"t2v": "tab_t2v", "i2v": "i2v_tab", "asr": "asr_tab"}
STATES = ("done", "failed", "cancelled", "queued", "running")


def viewer(request: gr.Request | None, access=None) -> str | None:
    """Whose history to show: the logged-in user's, or everyone's without a login or for a user with the
    admin role (``access``: ``ui.auth_access.Access``)."""
    username = getattr(request, "username", None)
    if not username or (access is not None and access.book and access.sees_everyone(str(username))):
        return None
    return str(username)


def _preview_cell(history: History, entry: HistoryEntry) -> str:
    if entry.task == "asr":
        return (entry.text[:80] + "…") if len(entry.text) > 80 else entry.text
    thumb = history.thumbnail(entry)
    return f"![]({_file_url(thumb)})" if thumb else ""


def _file_url(path: Path) -> str:
    return f"/gradio_api/file={path.resolve().as_posix()}"


COLUMNS = ("preview", "time", "task", "state", "title", "model", "seconds")


def table_value(rows: list[list], lang: str) -> dict:
    """The table's value with its headers in ``lang``."""
    return {"headers": [t(lang, f"history_col_{c}") for c in COLUMNS], "data": rows}


def filter_choices(lang: str) -> tuple[list, list]:
    tasks = [(t(lang, "history_all"), ""), ("T2V", "t2v"), ("I2V", "i2v"), ("ASR", "asr")]
    states = [(t(lang, "history_all"), "")] + [(t(lang, f"state_{s}"), s) for s in STATES]
    return tasks, states


def table_rows(history: History, entries: list[HistoryEntry], lang: str) -> list[list]:
    return [
        [
            _preview_cell(history, entry),
            entry.when,
            entry.task.upper(),
            t(lang, f"state_{entry.state}"),
            entry.title[:120],
            entry.model,
            entry.total_seconds if entry.total_seconds is not None else "",
        ]
        for entry in entries
    ]


def reuse_values(entry: HistoryEntry, fields: dict[str, gr.components.Component], demo: bool) -> dict:
    """Form values for ``entry``'s task tab from its recorded settings (and the input copy for I2V)."""
    values = {}
    settings = dict(entry.settings)
    if entry.task == "i2v":
        inputs = [p for p in entry.files if p.stem.endswith("_input")]
        if inputs:
            settings["image"] = str(inputs[0])
    for name in fields:
        if name in settings and settings[name] is not None:
            values[name] = settings[name]
    if "loras" in fields:  # a clip made without LoRAs empties the picker; a recorded list becomes its text
        values["loras"] = loras_text(settings.get("loras"))
    if entry.task in ("t2v", "i2v") and "model" in values and "preset" in fields:
        from pipelines.tasks import i2v
        from pipelines.tasks import t2v
        module = t2v if entry.task == "t2v" else i2v
        try:
            spec = get_spec(values["model"])
            names = [p.name for p in module.presets_for(spec, demo)]
            preset = values.get("preset") if values.get("preset") in names else names[0]
            values["preset"] = gr.update(choices=names, value=preset)
        except ValueError:  # a model no longer in the catalogue: keep the tab's own choice
            values.pop("model")
            values.pop("preset", None)
    return values


def build_history_tab(worker, settings, translator: Translator, lang_state: gr.State, forms: dict, tabs: gr.Tabs,
                      tab: gr.Tab, access=None) -> list:
    """Builds the tab; returns its language hooks (the table and the filters, whose texts come from values)."""
    history = History(settings.outputs_dir, worker.queue.store)
    demo = settings.demo
    translator.bind(gr.Markdown(t("en", "history_intro", folder=settings.outputs_dir.resolve())),
                    value=("history_intro", {"folder": str(settings.outputs_dir.resolve())}))
    with gr.Row():
        task_choices, state_choices = filter_choices("en")
        task = translator.bind(gr.Radio(task_choices, value="", label="Task", elem_id="history-task"),
                               label="history_task")
        state = translator.bind(gr.Dropdown(state_choices, value="", label="Status", elem_id="history-state"),
                                label="history_state")
        search = translator.bind(gr.Textbox(label="Search", elem_id="history-search"), label="history_search")
        refresh = translator.bind(gr.Button("Refresh", elem_id="history-refresh"), value="history_refresh")
    count = gr.Markdown()
    table = gr.Dataframe(
        headers=table_value([], "en")["headers"],
        datatype=["markdown", "str", "str", "str", "str", "str", "str"],
        interactive=False, wrap=True, elem_id="history-table", max_height=520,
    )
    keys = gr.State([])
    selected = gr.Textbox(visible=False, elem_id="history-selected")
    with gr.Row():
        with gr.Column(scale=3):
            note = gr.Markdown(elem_id="history-note")
            video = translator.bind(gr.Video(label="Clip", interactive=False, elem_id="history-video"),
                                    label="history_video")
            text = translator.bind(gr.Textbox(label="Transcript", lines=6, interactive=False, elem_id="history-text",
                                              visible=False), label="history_text")
            files = translator.bind(gr.File(label="Files", file_count="multiple", interactive=False,
                                            elem_id="history-files"), label="history_files")
        with gr.Column(scale=2):
            with gr.Row():
                reuse = translator.bind(gr.Button("Reuse settings", variant="primary", elem_id="history-reuse"),
                                        value="history_reuse")
                stop = translator.bind(gr.Button("Stop job", elem_id="history-stop"), value="history_stop")
                delete = translator.bind(gr.Button("Delete", variant="stop", elem_id="history-delete"),
                                         value="history_delete")
            recorded = translator.bind(gr.JSON(label="Settings", elem_id="history-settings"), label="history_settings")
            timings = translator.bind(gr.JSON(label="Timings", elem_id="history-timings"), label="history_timings")

    def listing(task_value, state_value, search_value, lang, request: gr.Request):
        """The history table for this viewer, filtered; returns rows, their keys and a count line."""
        lang = request_language(lang, request)
        owner = viewer(request, access)
        everything = history.entries(owner)
        entries = [e for e in everything if matches(e, task_value, state_value, search_value or "")]
        line = t(lang, "history_count", shown=len(entries), total=len(everything)) if everything else t(
            lang, "history_none")
        return table_value(table_rows(history, entries, lang), lang), [e.key for e in entries], line

    list_inputs = [task, state, search, lang_state]
    list_outputs = [table, keys, count]
    refresh.click(listing, list_inputs, list_outputs, api_name="history", show_progress="hidden")
    for trigger in (task.change, state.change, search.submit, tab.select):
        trigger(listing, list_inputs, list_outputs, api_visibility="private", show_progress="hidden")

    def history_list(task: str = "", state: str = "", request: gr.Request = None) -> list[dict]:
        """This viewer's history, newest first, as plain data (``key`` opens an entry with /history_entry)."""
        return [
            {"key": e.key, "task": e.task, "state": e.state, "created": e.when, "title": e.title, "model": e.model,
             "seconds": e.total_seconds, "files": [str(p) for p in e.files], "error": e.error}
            for e in history.entries(viewer(request, access), task=task, state=state)
        ]

    gr.api(history_list, api_name="history_list")

    def entry_for(key: str, request) -> HistoryEntry:
        entry = history.find(key, viewer(request, access)) if key else None
        if entry is None:
            raise gr.Error(error_text(request_language("", request), "history_unknown", {}, "That entry is gone."),
                           print_exception=False)
        return entry

    def details(key: str, lang, request: gr.Request):
        """One entry: its clip or transcript, files, settings and timings."""
        lang = request_language(lang, request)
        entry = entry_for(key, request)
        note_text = ""
        if entry.state != "done":
            note_text = t(lang, "history_failed_note", state=t(lang, f"state_{entry.state}"), error=entry.error or "")
        transcript = ""
        if entry.task == "asr":
            txt = next((p for p in entry.files if p.suffix == ".txt"), None)
            transcript = txt.read_text(encoding="utf-8") if txt else entry.text
        return (
            note_text,
            str(entry.video) if entry.video else None,
            gr.update(value=transcript, visible=entry.task == "asr"),
            [str(p) for p in entry.files] or None,
            entry.settings,
            entry.timings,
        )

    def pick(key_list: list, evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return key_list[row] if 0 <= row < len(key_list) else ""

    detail_outputs = [note, video, text, files, recorded, timings]
    table.select(pick, [keys], [selected], api_visibility="private", show_progress="hidden").then(
        details, [selected, lang_state], detail_outputs, api_visibility="private", show_progress="hidden")
    def history_entry(key: str, request: gr.Request) -> dict:
        """One history entry (a key from /history's list) as plain data: note, video, text, files, settings."""
        return _plain_details(details(key, "", request))

    gr.api(history_entry, api_name="history_entry")

    form_components = [(task_id, name, component) for task_id, fields in forms.items()
                       for name, component in fields.items()]

    def reuse_settings(key: str, lang, request: gr.Request):
        lang = request_language(lang, request)
        entry = entry_for(key, request) if key else None
        if entry is None:
            raise gr.Error(t(lang, "history_pick"), print_exception=False)
        values = reuse_values(entry, forms.get(entry.task, {}), demo)
        if not values:
            return gr.skip(), t(lang, "history_reuse_none"), *[gr.skip()] * len(form_components)
        updates = [values[name] if task_id == entry.task and name in values else gr.skip()
                   for task_id, name, _ in form_components]
        message = t(lang, "history_reused", tab=t(lang, TASK_TABS[entry.task]))
        return gr.Tabs(selected=entry.task), message, *updates

    # The API's events raise their errors (hidden triggers); the page's say them in the note, with no badges.
    api_reuse, api_delete = gr.Button(visible=False), gr.Button(visible=False)
    reuse_outputs = [tabs, note, *[c for _, _, c in form_components]]
    api_reuse.click(reuse_settings, [selected, lang_state], reuse_outputs, api_name="history_reuse",
                    show_progress="hidden")
    reuse.click(page_twin(reuse_settings, len(reuse_outputs), stop=False, at=1), [selected, lang_state], reuse_outputs,
                api_visibility="private", show_progress="hidden")

    def delete_entry(key: str, task_value, state_value, search_value, lang, request: gr.Request):
        lang = request_language(lang, request)
        if not key:
            raise gr.Error(t(lang, "history_pick"), print_exception=False)
        try:
            moved = history.delete(key, viewer(request, access))
        except KeyError:
            raise gr.Error(t(lang, "err_history_unknown"), print_exception=False) from None
        except ValueError:
            raise gr.Error(t(lang, "err_history_busy"), print_exception=False) from None
        message = (t(lang, "history_deleted", count=len(moved), folder=str(moved[0].parent)) if moved
                   else t(lang, "history_forgotten"))
        rows, key_list, line = listing(task_value, state_value, search_value, lang, request)
        return message, rows, key_list, line, "", None, gr.update(value="", visible=False), None, None, None

    delete_outputs = [note, table, keys, count, selected, video, text, files, recorded, timings]
    api_delete.click(delete_entry, [selected, task, state, search, lang_state], delete_outputs,
                     api_name="history_delete", show_progress="hidden")
    delete.click(page_twin(delete_entry, len(delete_outputs), stop=False), [selected, task, state, search, lang_state],
                 delete_outputs, api_visibility="private", show_progress="hidden")

    def stop_job(key: str, lang, request: gr.Request):
        lang = request_language(lang, request)
        job = worker.job(key.removeprefix("job:")) if key.startswith("job:") else None
        if job is None or job.state.finished:
            return t(lang, "history_not_running")
        try:
            check_owner(job, request)
        except Exception as error:
            raise gr.Error(error_text(lang, getattr(error, "key", ""), {}, str(error)), print_exception=False) from None
        worker.cancel(job.id)
        return t(lang, "history_stopped")

    stop.click(stop_job, [selected, lang_state], [note], api_name="history_stop", show_progress="hidden")

    def relabel_filters(lang: str, task_value: str, state_value: str):
        tasks, states = filter_choices(lang)
        return gr.update(choices=tasks, value=task_value), gr.update(choices=states, value=state_value)

    return [(relabel_filters, [lang_state, task, state], [task, state]), (listing, list_inputs, list_outputs)]


def _plain_details(values: tuple) -> dict:
    """``details`` as plain data for API callers."""
    note, video, text, files, recorded, timings = values
    transcript = text.get("value") if isinstance(text, dict) else ""
    return {"note": note, "video": video, "text": transcript, "files": files or [], "settings": recorded,
            "timings": timings}


__all__ = ["build_history_tab", "reuse_values"]
