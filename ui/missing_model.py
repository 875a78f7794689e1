"""A job that failed because its model is not on this machine offers the download where its error is shown.

Under a tab's status line sits a hidden row. When the tab's job ends failed with ``model_missing`` (raised
by ``pipelines.device.loading.resolve_source``; the error names the model), the row shows a
"Download <model>" button that starts the download through the Models tab's own ``ModelsApi`` (same
manager: its progress is on the Models tab). When the studio has users, only admins get the button; the
others read a note to ask an admin.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.families.catalogue import CATALOGUE
from pipelines.studio.jobs import JobState

from .auth_access import refuse_unless_admin
from .i18n import request_language, t
from .identity import sees_job


def missing_model_id(job) -> str | None:
    """The catalogue id to download for a job that failed with ``model_missing``, else None."""
    if job is None or job.state != JobState.FAILED or job.error_key != "model_missing":
        return None
    repo = (job.error_params or {}).get("repo")
    found = next((spec_id for spec_id, spec in CATALOGUE.items() if spec.repo_id == repo), None)
    asked = str(getattr(job.request, "model", ""))
    return found or (asked if asked in CATALOGUE else None)


@dataclass
class Offer:
    """One tab's row: the note, the button, and which model the button downloads."""

    row: gr.Row
    note: gr.Markdown
    button: gr.Button
    model: gr.State


class MissingModelOffers:
    """Places the offer under a tab's status line (``place``) and follows the tab's job (``follow``)."""

    def __init__(self, api, worker, access=None):
        self.api, self.worker, self.access = api, worker, access

    def _is_admin(self, request) -> bool:
        return self.access is None or self.access.request_is_admin(request)

    def place(self, tab: str) -> Offer:
        """The hidden row; call it inside the tab's layout, right under its status line."""
        with gr.Row(visible=False, elem_id=f"{tab}-missing-model") as row:
            note = gr.Markdown("", elem_id=f"{tab}-missing-model-note")
            button = gr.Button("Download", variant="primary", scale=0, elem_id=f"{tab}-missing-model-download")
        return Offer(row, note, button, gr.State(""))

    def answer(self, job_id: str, lang: str, request=None) -> tuple:
        """The offer's row, note, button and model for the tab's job ``job_id``: hidden unless it failed for a
        missing model; for a non-admin (studio with users) a note to ask an admin, without the button."""
        lang = request_language(lang, request)
        job = self.worker.job(job_id) if job_id else None
        model_id = missing_model_id(job) if job is not None and sees_job(job, request) else None
        if model_id is None:
            return gr.update(visible=False), "", gr.update(), ""
        title = CATALOGUE[model_id].title
        if not self._is_admin(request):
            return (gr.update(visible=True), t(lang, "models_missing_ask_admin", model=title), gr.update(visible=False),
                    model_id)
        return (gr.update(visible=True), t(lang, "models_missing_job", model=title),
                gr.update(visible=True, interactive=True, value=t(lang, "models_missing_download", model=title)),
                model_id)

    def download(self, model_id: str, lang: str, request=None) -> tuple:
        """Start the download (admins), as the Models tab does; the note says so, the button is spent."""
        lang = request_language(lang, request)
        try:
            refuse_unless_admin(self.access, request, lang)
            self.api.start_download(model_id)
        except (ValueError, gr.Error) as error:
            return f"**{getattr(error, 'message', error)}**", gr.update()
        title = CATALOGUE[model_id].title if model_id in CATALOGUE else model_id
        return t(lang, "models_missing_started", model=title), gr.update(interactive=False)

    def follow(self, offer: Offer, event, job_id, lang_state) -> None:
        """After ``event`` (the tab's run), show or hide the offer for the tab's job; wire its button."""

        def answer(job_id_now: str, lang: str, request: gr.Request):
            return self.answer(job_id_now, lang, request)

        def download(model_id: str, lang: str, request: gr.Request):
            return self.download(model_id, lang, request)

        private = dict(api_visibility="private", queue=False, show_progress="hidden")
        event.then(answer, [job_id, lang_state], [offer.row, offer.note, offer.button, offer.model], **private)
        offer.button.click(download, [offer.model, lang_state], [offer.note, offer.button], **private)
