"""The Models tab and the API ``/models``, ``/models_download``, ``/models_delete``, ``/models_progress``:
every catalogue model with its state, size on disk, download size, VRAM need and source; downloads run in
background threads of this (front) process through ``pipelines.studio.downloads``, never in the GPU worker.

``list_models``, ``start_download`` and ``delete_model`` are plain functions; the tab and the API call them
through ``ModelsApi``. When the studio has users (``--auth-file``), only admins may download, delete or
follow a download (its messages name folders): the handlers refuse the others (``refuse_unless_admin``),
the page hides those controls from them, and their model list leaves the folders out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from pipelines.families.catalogue import CATALOGUE
from pipelines.studio import downloads
from pipelines.studio.model_sources import SOURCES

from .auth_access import refuse_unless_admin
from .i18n import request_language, t

STATE_KEYS = {"on disk": "models_state_on_disk", "partly downloaded": "models_state_partly",
              "missing": "models_state_missing", "hf cache": "models_state_hf_cache"}
COLUMN_KEYS = ("models_col_id", "models_col_repo", "models_col_state", "models_col_disk", "models_col_download",
               "models_col_vram", "models_col_source")
PROGRESS_STATES = ("starting", "downloading", "verifying", "done", "failed", "stopped")


def models_root(settings) -> Path:
    return Path(settings.data_dir) / "models"


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_files_only=True)
        return True
    except Exception:  # not cached (LocalEntryNotFoundError), or no hub client
        return False


def in_use(worker, repo_id: str) -> str | None:
    """Why ``repo_id`` must not be deleted now: resident in the worker, or needed by a running / queued job."""
    repo_of = {spec_id: spec.repo_id for spec_id, spec in CATALOGUE.items()}
    for model in (worker.status() or {}).get("resident", []):
        if repo_of.get(model.get("id")) == repo_id:
            return f"{model.get('title', model.get('id'))} is loaded in the GPU worker"
    current = worker.current_job()
    queue = getattr(worker, "queue", None)
    jobs = ([current] if current else []) + (list(queue.pending()) if queue is not None else [])
    for job in jobs:
        if repo_of.get(str(getattr(job.request, "model", ""))) == repo_id:
            return f"job {job.id} needs it"
    return None


@dataclass
class ModelsApi:
    """The Models page's actions on one folder; ``worker`` answers what is in use."""

    settings: object
    worker: object
    manager: downloads.DownloadManager = field(default=None)
    source: str = "auto"

    def __post_init__(self):
        self.source = (getattr(self.settings, "extra", None) or {}).get("model_source", self.source)
        self.manager = self.manager or downloads.DownloadManager(models_root(self.settings))

    def list_models(self) -> list[dict]:
        """One row per catalogue model: state, bytes on disk, download size (from the source's file list before
        a download; ``download_size_why`` says why it is not known), VRAM need, source."""
        rows, seen = [], {}
        for spec in CATALOGUE.values():
            if spec.repo_id not in seen:
                state = downloads.model_state(spec.repo_id, models_root(self.settings))
                if state["state"] == "missing" and _in_hf_cache(spec.repo_id):
                    state = {**state, "state": "hf cache", "source": "huggingface (cache)"}
                progress = self.manager.status(spec.repo_id)
                size, why = self.manager.sizes.size(spec.repo_id, spec.revision, self.source)
                seen[spec.repo_id] = {**state, "download_size": size or progress.total or None,
                                      "download_size_why": "" if size or progress.total else why,
                                      "downloading": progress.state in ("starting", "downloading", "verifying")}
            rows.append({"id": spec.id, "repo_id": spec.repo_id, "task": spec.task, "vram_gb": spec.vram_gb,
                         **seen[spec.repo_id]})
        return rows

    def start_download(self, model_id: str, source: str = "") -> dict:
        spec = CATALOGUE.get(model_id)
        if spec is None:
            raise ValueError(f"Unknown model {model_id!r}.")
        if (source or self.source) not in SOURCES:
            raise ValueError(f"Unknown source {source!r}: {', '.join(SOURCES)}.")
        return self.manager.start(spec.repo_id, revision=spec.revision, source=source or self.source).as_dict()

    def progress(self, model_id: str) -> dict:
        spec = CATALOGUE.get(model_id)
        return self.manager.status(spec.repo_id).as_dict() if spec else {}

    def delete_model(self, model_id: str, confirm: bool) -> int:
        spec = CATALOGUE.get(model_id)
        if spec is None:
            raise ValueError(f"Unknown model {model_id!r}.")
        if not confirm:
            raise ValueError("Confirm the delete first.")
        if self.manager.status(spec.repo_id).state in ("starting", "downloading", "verifying"):
            raise downloads.DownloadError(f"{spec.repo_id} is being downloaded; stop the download first.")
        return downloads.delete_model(spec.repo_id, models_root(self.settings), lambda repo: in_use(self.worker, repo))


def _download_size(lang: str, row: dict) -> str:
    """The size, else "?" and why in a word (the API's ``download_size_why`` has the whole reason)."""
    if row["download_size"]:
        return downloads.gib(row["download_size"])
    why = row.get("download_size_why", "")
    for key in ("checking", "offline", "unreachable", "not available"):
        if why.startswith(key):
            return f"? ({t(lang, 'models_size_' + key.replace(' ', '_'))})"
    return "?"


def _source(lang: str, row: dict) -> str:
    if row["state"] == "hf cache":
        return t(lang, "models_source_hf_cache")
    return row["source"] or "-"


def _table(api: ModelsApi, lang: str) -> dict:
    """The table's headers and rows in ``lang``."""
    rows = [[row["id"], row["repo_id"], t(lang, STATE_KEYS[row["state"]]),
             downloads.gib(row["size"]) if row["size"] else "-",
             _download_size(lang, row), row["vram_gb"], _source(lang, row)] for row in api.list_models()]
    return {"headers": [t(lang, key) for key in COLUMN_KEYS], "data": rows}


def source_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, f"models_source_{name}"), name) for name in SOURCES]


def progress_html(lang: str, p: dict) -> str:
    if not p or p.get("state") in (None, "idle"):
        return f"<div class='cs-live'>{t(lang, 'models_idle')}</div>"
    share = p["done"] / p["total"] * 100 if p["total"] else 0.0
    eta = f"{p['eta']:.0f} s" if p.get("eta") is not None else "?"
    state = t(lang, f"models_pstate_{p['state']}") if p["state"] in PROGRESS_STATES else p["state"]
    text = t(lang, "models_progress", model=p["repo_id"], state=state, done=downloads.gib(p["done"]),
             total=downloads.gib(p["total"]), share=f"{share:.0f}", speed=f"{p['speed'] / (1 << 20):.1f} MiB/s",
             eta=eta)
    message = f"<br>{p['message']}" if p.get("message") else ""
    return (f"<div class='cs-live' id='cs-model-progress' data-state='{p['state']}'>{text}{message}"
            f"<div class='cs-bar'><div style='width:{share:.0f}%'></div></div></div>")


def _is_admin(access, request) -> bool:
    return access is None or access.request_is_admin(request)


def build_models_tab(api: ModelsApi, translator, lang_state, access=None, admin_only: list | None = None) -> list:
    """The tab's controls and API; returns the language hooks (texts computed from values). With ``access``
    (users), the actions are admins' and their controls go into ``admin_only`` for the page to hide."""
    folder = models_root(api.settings)
    translator.bind(gr.Markdown(t("en", "models_intro", folder=folder)), value=("models_intro", {"folder": folder}))
    table = gr.Dataframe(_table(api, "en"), interactive=False, elem_id="cs-models-table")
    with gr.Row():
        pick = translator.bind(gr.Dropdown(list(CATALOGUE), value=next(iter(CATALOGUE)), label="Model",
                                           elem_id="cs-models-pick"), label="models_pick")
        source = translator.bind(gr.Radio(source_choices("en"), value=api.source, label="Source"), label="models_source")
    with gr.Row() as actions:
        download = translator.bind(gr.Button("Download", variant="primary", elem_id="cs-models-download"),
                                   value="models_download")
        refresh = translator.bind(gr.Button("Refresh", elem_id="cs-models-refresh"), value="models_refresh")
        confirm = translator.bind(gr.Checkbox(False, label="Yes, delete this model's files",
                                              elem_id="cs-models-confirm"), label="models_confirm")
        delete = translator.bind(gr.Button("Delete", variant="stop", elem_id="cs-models-delete"), value="models_delete")
    status = gr.Markdown("", elem_id="cs-models-status")
    bar = gr.HTML(progress_html("en", {}))
    timer = gr.Timer(1.0)
    if admin_only is not None and access is not None:
        admin_only += [actions, pick, source, bar]

    def on_download(model_id, chosen, lang, request: gr.Request):
        try:
            refuse_unless_admin(access, request, lang)
            api.start_download(model_id, chosen)
            return t(lang, "models_started", model=model_id), progress_html(lang, api.progress(model_id))
        except (ValueError, gr.Error) as error:
            return f"**{getattr(error, 'message', error)}**", gr.update()

    def on_delete(model_id, ok, lang, request: gr.Request):
        try:
            refuse_unless_admin(access, request, lang)
        except gr.Error as error:
            return f"**{error.message}**", gr.update(), False
        if not ok:
            return t(lang, "models_confirm_first"), gr.update(), False
        try:
            freed = api.delete_model(model_id, ok)
        except (ValueError, downloads.DownloadError) as error:
            return f"**{error}**", gr.update(), False
        return t(lang, "models_deleted", model=model_id, freed=downloads.gib(freed)), _table(api, lang), False

    def on_tick(model_id, lang, request: gr.Request):
        bar_now = progress_html(lang, api.progress(model_id)) if _is_admin(access, request) else gr.skip()
        return bar_now, _table(api, lang)

    download.click(on_download, [pick, source, lang_state], [status, bar], api_visibility="private", queue=False)
    delete.click(on_delete, [pick, confirm, lang_state], [status, table, confirm], api_visibility="private",
                 queue=False)
    refresh.click(lambda lang: _table(api, lang), [lang_state], [table], api_visibility="private", queue=False)
    timer.tick(on_tick, [pick, lang_state], [bar, table], api_visibility="private", queue=False,
               show_progress="hidden")

    def models(request: gr.Request) -> list[dict]:
        """Every catalogue model: state, size on disk, download size, VRAM need, source (folders: admins)."""
        rows = api.list_models()
        return rows if _is_admin(access, request) else [{k: v for k, v in row.items() if k != "folder"} for row in rows]

    def models_download(model_id: str, source: str = "auto", request: gr.Request = None) -> dict:
        """Start downloading a catalogue model in the background (admins); returns its progress."""
        refuse_unless_admin(access, request, request_language("", request))
        return api.start_download(model_id, source)

    def models_progress(model_id: str, request: gr.Request = None) -> dict:
        """A download's bytes, speed and ETA (admins)."""
        refuse_unless_admin(access, request, request_language("", request))
        return api.progress(model_id)

    def models_delete(model_id: str, confirm: bool = False, request: gr.Request = None) -> int:
        """Delete a model's downloaded files (admins, confirm=True); refused for a model in use. Returns bytes freed."""
        refuse_unless_admin(access, request, request_language("", request))
        return api.delete_model(model_id, confirm)

    for fn in (models, models_download, models_progress, models_delete):
        gr.api(fn, api_name=fn.__name__)
    def relabel_bar(lang: str, model_id: str, request: gr.Request):
        return progress_html(lang, api.progress(model_id)) if _is_admin(access, request) else gr.skip()

    return [(lambda lang: _table(api, lang), [lang_state], [table]),
            (lambda lang, chosen: gr.update(choices=source_choices(lang), value=chosen), [lang_state, source], [source]),
            (relabel_bar, [lang_state, pick], [bar])]
