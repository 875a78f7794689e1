"""The speech-to-text tab: files or a recording in, a generator that follows the job file by file, downloads out."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import gradio as gr

from pipelines.tasks.asr import (
    DEMO_MAX_NEW_TOKENS,
    MAX_BATCH_SIZE,
    NOT_TRAINED_TO_TRANSLATE,
    TRANSLATION_MODEL,
    WHISPER_LANGUAGES,
    ASRRequest,
    validate_asr,
)
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.paths import user_file
from pipelines.families.catalogue import DEFAULT_MODEL, get_spec, models_for
from pipelines.families.whisper_custom import NotAWhisper, custom_spec, list_custom

from .field_errors import FieldError, FieldErrors, field_error
from .i18n import Translator, error_text, request_language, t
from .i18n import model_note as catalogue_note
from .identity import cancel_handler, owner_of
from .job_status import follow_job, redraw, said, tr


logger = logging.getLogger(__name__)


def language_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "asr_language_auto"), "auto")] + [
        (f"{name.title()} ({code})", code) for code, name in sorted(WHISPER_LANGUAGES.items(), key=lambda i: i[1])
    ]


def task_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "asr_task_transcribe"), "transcribe"), (t(lang, "asr_task_translate"), "translate")]


def mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "asr_mode_chunked"), "chunked"), (t(lang, "asr_mode_sequential"), "sequential")]


def model_note(lang: str, model_id: str, task: str, demo: bool, models_dir: str = "") -> str:
    parts = []
    try:
        spec = get_spec(model_id)
    except ValueError as error:
        try:
            spec = custom_spec(str(model_id or "").strip(), models_dir)
        except NotAWhisper as problem:
            return f"⚠ {problem}"
        if spec is None:
            return f"⚠ {error}"
        parts.append(t(lang, "asr_note_custom", folder=spec.repo_id))
        if spec.extra.get("english_only"):
            parts.append(t(lang, "asr_note_english_only", model=spec.title))
        return "\n\n".join(parts)
    if task == "translate" and spec.id in NOT_TRAINED_TO_TRANSLATE:
        parts.append(t(lang, "asr_note_translate_switch", model=spec.title, target=get_spec(TRANSLATION_MODEL).title))
    elif spec.notes:
        parts.append(catalogue_note(lang, spec))
    if demo:
        parts.append(t(lang, "asr_note_demo", tokens=DEMO_MAX_NEW_TOKENS))
    return "\n\n".join(parts)


def _running(lang: str, stage: str, **params) -> str:
    return t(lang, "asr_status_running", stage=t(lang, f"stage_{stage}") if stage else "", **params)


def _lines(parts: list, bullet: str = "") -> list:
    """``parts`` one a line, each after ``bullet``."""
    return [piece for i, part in enumerate(parts) for piece in ("\n" if i else "", bullet, part) if piece]


def _status(lang: str, job, position: int) -> str:
    if job.state == JobState.QUEUED:
        return said(lang, tr("asr_status_queued", position=position))
    p = job.progress
    if p.stage == "load":
        return said(lang, tr("asr_status_loading"))
    return said(lang, (_running, (p.stage,), dict(file=p.clip, files=p.clips, step=p.step, total=p.total)))


def _language_lines(lang: str, files: list[dict], requested: str) -> str:
    lines = []
    for entry in files:
        if not entry.get("ok"):
            continue
        code = entry.get("language")
        if not code:
            lines.append(t(lang, "asr_language_none", name=entry["name"]))
        elif requested == "auto" and entry.get("language_probability") is not None:
            lines.append(t(lang, "asr_language_line", name=entry["name"], language=WHISPER_LANGUAGES.get(code, code).title(),
                           code=code, probability=entry["language_probability"]))
        else:
            lines.append(t(lang, "asr_language_given", name=entry["name"], language=WHISPER_LANGUAGES.get(code, code).title(),
                           code=code))
    return "\n".join(lines)


def _transcript(files: list[dict]) -> str:
    done = [entry for entry in files if entry.get("ok")]
    if len(done) == 1:
        return done[0]["transcript"]
    return "\n\n".join(f"=== {entry['name']} ===\n{entry['transcript']}" for entry in done)


def build_asr_tab(worker, settings, translator: Translator, lang_state: gr.State, forms: dict | None = None,
                  missing=None) -> list:
    """Build the tab; returns ``(fn, inputs, outputs)`` hooks to run after a language change. ``missing``
    (``ui.missing_model.MissingModelOffers``) offers the download when the job's model is not on disk."""
    demo = settings.demo
    specs = models_for("asr")
    own, problems = list_custom(settings.asr_models_dir)  # folders that are not a Whisper: logged, not listed
    for problem in problems:
        logger.warning("Whisper models folder: %s", problem)
    default_model = DEFAULT_MODEL["asr"]
    errors = FieldErrors("asr")  # bad input said under its field too

    with gr.Row():
        with gr.Column(scale=5):
            files = translator.bind(
                gr.File(label=t("en", "asr_files"), file_count="multiple", type="filepath", elem_id="asr-files"),
                label="asr_files",
            )
            microphone = translator.bind(
                gr.Audio(label=t("en", "asr_microphone"), sources=["microphone"], type="filepath", elem_id="asr-mic"),
                label="asr_microphone",
            )
            errors.place(files=(files, microphone))
            with gr.Row():
                model = translator.bind(
                    gr.Dropdown([(s.title, s.id) for s in specs] + [(s.id, s.id) for s in own], value=default_model,
                                label=t("en", "asr_model"), elem_id="asr-model",
                                allow_custom_value=True),  # a Hugging Face repo id in the cache (a fine-tune)
                    label="asr_model",
                )
                language = translator.bind(
                    gr.Dropdown(language_choices("en"), value="auto", label=t("en", "asr_language"), elem_id="asr-language",
                                allow_custom_value=True),  # the API also takes names: "cantonese", "English"
                    label="asr_language",
                )
            errors.place(model=model, language=language)
            with gr.Row():
                task = translator.bind(
                    gr.Radio(task_choices("en"), value="transcribe", label=t("en", "asr_task"), elem_id="asr-task"),
                    label="asr_task",
                )
                mode = translator.bind(
                    gr.Radio(mode_choices("en"), value="chunked", label=t("en", "asr_mode"), elem_id="asr-mode"),
                    label="asr_mode",
                )
            note = gr.Markdown(model_note("en", default_model, "transcribe", demo), elem_id="asr-note")
            with translator.bind(gr.Accordion(t("en", "asr_advanced"), open=False), label="asr_advanced"):
                with gr.Row():
                    batch = translator.bind(
                        gr.Slider(0, MAX_BATCH_SIZE, value=0, step=1, label=t("en", "asr_batch"), elem_id="asr-batch"),
                        label="asr_batch",
                    )
                    words = translator.bind(
                        gr.Checkbox(value=False, label=t("en", "asr_words"), elem_id="asr-words"), label="asr_words"
                    )
                    vad = translator.bind(
                        gr.Checkbox(value=True, label=t("en", "asr_vad"), elem_id="asr-vad"), label="asr_vad"
                    )
                with gr.Row():
                    line_chars = translator.bind(
                        gr.Slider(16, 80, value=42, step=1, label=t("en", "asr_line_chars"), elem_id="asr-line-chars"),
                        label="asr_line_chars",
                    )
                    lines = translator.bind(
                        gr.Slider(1, 3, value=2, step=1, label=t("en", "asr_lines"), elem_id="asr-lines"),
                        label="asr_lines",
                    )
                    cue_seconds = translator.bind(
                        gr.Slider(2, 15, value=7, step=0.5, label=t("en", "asr_cue_seconds"), elem_id="asr-cue-seconds"),
                        label="asr_cue_seconds",
                    )
                tokens = translator.bind(
                    gr.Number(value=0, precision=0, minimum=0, maximum=440, label=t("en", "asr_tokens"), elem_id="asr-tokens"),
                    label="asr_tokens",
                )
            with gr.Row():
                run_button = translator.bind(gr.Button(t("en", "asr_run"), variant="primary", elem_id="asr-run"),
                                             value="asr_run")
                stop = translator.bind(gr.Button(t("en", "asr_stop"), variant="stop", elem_id="asr-stop", interactive=False),
                                       value="asr_stop")
        with gr.Column(scale=4):
            status = gr.Markdown("", elem_id="asr-status")
            offer = missing.place("asr") if missing else None
            detected = translator.bind(
                gr.Textbox(label=t("en", "asr_detected"), interactive=False, lines=1, elem_id="asr-detected"),
                label="asr_detected",
            )
            transcript = translator.bind(
                gr.Textbox(label=t("en", "asr_transcript"), interactive=False, lines=12, max_lines=24,
                           elem_id="asr-transcript", buttons=["copy"]),
                label="asr_transcript",
            )
            downloads = translator.bind(
                gr.File(label=t("en", "asr_downloads"), file_count="multiple", interactive=False, elem_id="asr-downloads"),
                label="asr_downloads",
            )
            with translator.bind(gr.Accordion(t("en", "asr_recorded"), open=False), label="asr_recorded"):
                recorded = gr.Code(language="json", interactive=False, max_lines=24, show_label=False,
                                   elem_id="asr-recorded")
    job_id = gr.State("")

    def note_for(model_id, task_name, lang):
        return model_note(lang, model_id, task_name, demo, settings.asr_models_dir)

    note_inputs = [model, task, lang_state]
    for component in (model, task):
        component.change(note_for, note_inputs, note, api_visibility="private", show_progress="hidden")

    # --- the job --------------------------------------------------------------------------------------

    def run(files, microphone, model, language, task, mode, batch_size, word_timestamps, max_line_chars, max_lines,
            max_cue_seconds, max_new_tokens, vad, lang, request: gr.Request):
        """Transcribe audio or video files (and/or a microphone recording) to text and subtitles."""
        lang = request_language(lang, request)
        try:  # no path from the API may leave the app's folders (Gradio already keeps them in its uploads)
            files = [user_file(f, settings, "audio file") for f in (files if isinstance(files, list) else [files])]
            microphone = user_file(microphone, settings, "recording")
        except RequestError as error:
            raise field_error(error_text(lang, error.key, error.params, str(error)), error)
        paths = [str(f) for f in (files or []) if f]
        names = [Path(p).name for p in paths]
        if microphone:
            paths.append(str(microphone))
            names.append(f"microphone-{time.strftime('%H%M%S')}{Path(str(microphone)).suffix or '.wav'}")
        asr_request = ASRRequest(
            files=paths, names=names, model=model, language=language or "auto", task=task or "transcribe",
            mode=mode or "chunked", batch_size=batch_size or 0, word_timestamps=bool(word_timestamps),
            max_line_chars=max_line_chars, max_lines=max_lines, max_cue_seconds=max_cue_seconds,
            max_new_tokens=max_new_tokens or 0, vad=True if vad is None else bool(vad),
        )
        try:
            asr_request = validate_asr(asr_request, demo=demo, models_dir=settings.asr_models_dir)  # fail fast, before the queue
            job = worker.submit("asr", asr_request, owner=owner_of(request))
        except RequestError as error:
            raise field_error(error_text(lang, error.key, error.params, str(error)), error)
        skip = gr.skip()
        yield _status(lang, job, worker.position(job)), job.id, "", "", None, skip
        for _ in follow_job(job, timeout=2.0):
            yield _status(lang, job, worker.position(job)), skip, skip, skip, skip, skip
        if job.state == JobState.CANCELLED:
            yield said(lang, tr("asr_status_cancelled")), "", skip, skip, skip, skip
            return
        if job.state == JobState.FAILED:
            raise FieldError(error_text(lang, job.error_key, job.error_params, job.error), job.error_key,
                             job.error_params, job.error)
        result = job.result
        done = [entry for entry in result["files"] if entry["ok"]]
        failed = [entry for entry in result["files"] if not entry["ok"]]
        failures = [(error_text, (e["error_key"], e["error_params"], e["error"]), {}) for e in failed]  # said again
        if not done:
            error = gr.Error(said(lang, *_lines(failures)), print_exception=False)
            error.parts = _lines(failures)
            raise error
        outputs = [path for entry in done for path in entry["files"].values()]
        if result.get("zip"):
            outputs.append(result["zip"])
        folder = str(Path(done[-1]["files"]["json"]).parent)
        parts = [tr("asr_status_done", ok=len(done), count=len(result["files"]),
                    seconds=(job.finished or time.time()) - (job.started or job.created), folder=folder)]
        if failures:
            parts += ["\n\n", tr("asr_status_failed_files"), "\n", *_lines(failures, "- ")]
        notes = [n for n in result.get("notes", [])] + [n for e in done for n in e.get("notes", [])]
        if notes:
            parts.append("\n\n" + "\n".join(f"- {n}" for n in notes))
        message = said(lang, *parts)
        sidecar = json.loads(Path(done[-1]["files"]["json"]).read_text(encoding="utf-8"))
        sidecar.pop("segments", None)  # the transcript is shown above; keep the settings readable
        yield (message, "", _language_lines(lang, result["files"], asr_request.language), _transcript(result["files"]),
               outputs, json.dumps(sidecar, indent=2, ensure_ascii=False))

    inputs = [files, microphone, model, language, task, mode, batch, words, line_chars, lines, cue_seconds, tokens, vad,
              lang_state]
    outputs = [status, job_id, detected, transcript, downloads, recorded]
    # The API raises its errors (a hidden trigger); the page writes them in the status line and arms Stop.
    api_trigger = gr.Button(visible=False)
    api_trigger.click(run, inputs, outputs, api_name="asr", concurrency_limit=32, concurrency_id="asr-wait",
                      show_progress="minimal")  # handlers only wait on the GPU worker's queue (one job at a time)
    field_hooks = errors.wire(lang_state)
    shown_status = gr.State(None)  # the status line's parts: said again on a language switch
    ran = run_button.click(errors.twin(run, len(outputs), keep=True), inputs, [*outputs, stop, shown_status, errors.state],
                           api_visibility="private",
                           concurrency_limit=32, concurrency_id="asr-wait", show_progress="hidden")
    if offer is not None:
        missing.follow(offer, ran, job_id, lang_state)

    cancel = cancel_handler(worker)

    stop.click(cancel, [job_id], None, api_name="asr_cancel", queue=False)

    def relabel_choices(lang, language_value, task_value, mode_value):
        return (gr.update(choices=language_choices(lang), value=language_value),
                gr.update(choices=task_choices(lang), value=task_value),
                gr.update(choices=mode_choices(lang), value=mode_value))

    if forms is not None:  # for the History tab's "Reuse settings": request field -> component
        forms["asr"] = {"model": model, "language": language, "task": task, "mode": mode, "batch_size": batch,
                        "word_timestamps": words, "max_line_chars": line_chars, "max_lines": lines,
                        "max_cue_seconds": cue_seconds, "max_new_tokens": tokens, "vad": vad}
    return [
        (note_for, note_inputs, [note]),
        (relabel_choices, [lang_state, language, task, mode], [language, task, mode]),
        *field_hooks,
        (redraw, [shown_status, lang_state], [status]),
    ]
