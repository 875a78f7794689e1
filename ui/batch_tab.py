"""The Batch tab: many rows (typed, or a TXT / CSV file), checked whole, queued as one job per row, followed live.

Parsing, checking and queueing are ``pipelines/batch.py``'s (the command line's ``scripts/generate.py``
uses the same code); this module only turns the page's settings into defaults and the rows and jobs
into tables in the reader's language.
"""

from __future__ import annotations

import collections
import threading
import urllib.parse
from pathlib import Path

import gradio as gr

from pipelines.tasks import batch as batches
from pipelines.tasks.i2v import presets_for as i2v_presets_for
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.paths import inputs_dir
from pipelines.families.catalogue import DEFAULT_MODEL, get_spec, models_for
from pipelines.tasks.t2v import presets_for as t2v_presets_for

from .i18n import Translator, error_text, request_language, t
from .identity import check_owner, owner_of
from .job_status import POLL_SECONDS, job_status, page_twin

KEPT_BATCHES = 50  # batches the tab remembers for its live tables and Stop all
# Both tables (the check's four columns, the jobs' five) in one component; the jobs' output column is a link.
TABLE_TYPES = ["number", "str", "str", "str", "markdown"]


def task_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, f"batch_task_{task}"), task) for task in ("t2v", "i2v", "asr")]


def policy_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "batch_seed_fixed"), "fixed"), (t(lang, "batch_seed_random"), "random")]


def preset_names(task: str, model_id: str, demo: bool) -> list[str]:
    try:
        spec = get_spec(model_id)
    except ValueError:
        return []
    if task == "t2v" and spec.task == "t2v":
        return [p.name for p in t2v_presets_for(spec, demo)]
    if task == "i2v" and spec.task == "i2v":
        return [p.name for p in i2v_presets_for(spec, demo)]
    return []


def preset_labels(lang: str, names: list[str]) -> list[tuple[str, str]]:
    """Preset choices: the name in ``lang`` shown, the catalogue's name as the value."""
    return [(t(lang, f"preset_{name}"), name) for name in names]


def default_preset(task: str, model_id: str, demo: bool) -> str:
    names = preset_names(task, model_id, demo)
    if not names:
        return ""
    wanted = get_spec(model_id).default_preset
    return wanted if wanted in names else names[0]


def _error(lang: str, error: RequestError) -> str:
    return error_text(lang, error.key, dict(error.params), str(error))


def _table(headers: list[str], rows: list[list]) -> dict:
    return {"headers": headers, "data": rows}


def check_table(lang: str, plan: batches.BatchPlan) -> dict:
    rows = []
    for row in plan.rows:
        if row.ok:
            what, settings = batches.describe_row(plan.task, row.request)
            rows.append([row.row, what, t(lang, "batch_row_ok"), settings])
        else:
            rows.append([row.row, batches.row_label(plan.task, row.cells), "⚠ " + _error(lang, row.error), ""])
    headers = [t(lang, f"batch_col_{name}") for name in ("row", "what", "check", "settings")]
    return _table(headers, rows)



def _link(path: str) -> str:
    name = Path(path).name.replace("[", "(").replace("]", ")")
    return f"[{name}](/gradio_api/file={urllib.parse.quote(str(Path(path).resolve()))})"


def jobs_table(lang: str, run: batches.BatchRun, labels: list[str], worker) -> dict:
    rows = []
    for (row, job), label in zip(zip(run.rows, run.jobs), labels):
        state = t(lang, f"batch_state_{job.state.value}")
        progress, output = "", ""
        if job.state == JobState.QUEUED:
            progress = t(lang, "batch_place", position=worker.position(job))
        elif job.state == JobState.RUNNING:
            progress = job_status(lang, job, 0)
        else:
            outcome = batches.row_outcome(row, job)
            if outcome.error:
                progress = error_text(lang, outcome.error_key, outcome.error_params, outcome.error)
            elif outcome.seconds is not None:
                progress = f"{outcome.seconds:.1f} s"
            output = _link(outcome.outputs[0]) if outcome.outputs else ""
        rows.append([row, label, state, progress, output])
    headers = [t(lang, f"batch_col_{name}") for name in ("row", "what", "state", "progress", "output")]
    return _table(headers, rows)


def build_batch_tab(worker, settings, translator: Translator, lang_state: gr.State) -> list:
    """Build the tab; returns ``(fn, inputs, outputs)`` hooks to run after a language change."""
    demo = settings.demo
    runs: collections.OrderedDict[str, tuple[batches.BatchRun, list[str]]] = collections.OrderedDict()
    runs_lock = threading.Lock()
    start_model = DEFAULT_MODEL["t2v"]

    folder = str(inputs_dir(settings))
    intro = gr.Markdown(t("en", "batch_intro", folder=folder))  # relabelled by the language hook (it has a value)
    with gr.Row():
        with gr.Column(scale=5):
            task = translator.bind(gr.Radio(task_choices("en"), value="t2v", label=t("en", "batch_task")), label="batch_task")
            text = translator.bind(
                gr.Textbox(label=t("en", "batch_text"), lines=8, max_lines=20, placeholder=t("en", "batch_text_placeholder"),
                           elem_id="batch-text"),
                label="batch_text", placeholder="batch_text_placeholder",
            )
            upload = translator.bind(gr.File(label=t("en", "batch_file"), file_types=[".txt", ".csv"], type="filepath"),
                                     label="batch_file")
            with gr.Row():
                model = translator.bind(
                    gr.Dropdown([(s.title, s.id) for s in models_for("t2v")], value=start_model, label=t("en", "batch_model")),
                    label="batch_model",
                )
                preset = translator.bind(
                    gr.Dropdown(preset_labels("en", preset_names("t2v", start_model, demo)), value=default_preset("t2v", start_model, demo),
                                label=t("en", "batch_preset"), allow_custom_value=True),
                    label="batch_preset",
                )
            with gr.Row():
                seed = translator.bind(gr.Number(value=-1, precision=0, label=t("en", "batch_seed")), label="batch_seed")
                policy = translator.bind(gr.Radio(policy_choices("en"), value="fixed", label=t("en", "batch_seed_policy")),
                                         label="batch_seed_policy")
            image = translator.bind(gr.Image(label=t("en", "batch_image"), type="filepath", visible=False, height=160),
                                    label="batch_image")
            with gr.Row():
                check = translator.bind(gr.Button(t("en", "batch_check"), elem_id="batch-check"), value="batch_check")
                queue = translator.bind(gr.Button(t("en", "batch_queue"), variant="primary", elem_id="batch-queue"),
                                        value="batch_queue")
                stop = translator.bind(gr.Button(t("en", "batch_stop"), variant="stop", elem_id="batch-stop",
                                                 interactive=False), value="batch_stop")  # armed while a batch runs
        with gr.Column(scale=6):
            status = gr.Markdown("", elem_id="batch-status")
            table = gr.Dataframe(value=check_table("en", batches.BatchPlan(task="t2v", rows=[])), interactive=False,
                                 wrap=True, elem_id="batch-table", datatype=TABLE_TYPES)
            files = translator.bind(gr.File(label=t("en", "batch_outputs"), file_count="multiple", interactive=False),
                                    label="batch_outputs")
    # The batch being followed: hidden on the page, a value of its own in the API (``/batch_cancel`` takes it).
    batch_id = gr.Textbox("", visible=False, elem_id="batch-id")

    # --- settings follow the task and model ------------------------------------------------------------

    def on_task(task_name: str, lang: str):
        model_id = DEFAULT_MODEL.get(task_name, start_model)
        names = preset_names(task_name, model_id, demo)
        return (
            gr.update(choices=[(s.title, s.id) for s in models_for(task_name)], value=model_id),
            gr.update(choices=preset_labels(lang, names), value=default_preset(task_name, model_id, demo),
                      visible=bool(names)),
            gr.update(visible=task_name != "asr"),
            gr.update(visible=task_name != "asr"),
            gr.update(visible=task_name == "i2v"),
        )

    def on_model(task_name: str, model_id: str, lang: str):
        names = preset_names(task_name, model_id, demo)
        return gr.update(choices=preset_labels(lang, names), value=default_preset(task_name, model_id, demo),
                         visible=bool(names))

    private = dict(api_visibility="private", show_progress="hidden")
    task.input(on_task, [task, lang_state], [model, preset, seed, policy, image], **private)
    model.input(on_model, [task, model, lang_state], [preset], **private)

    # --- check and queue -------------------------------------------------------------------------------

    def plan_for(task_name, rows_text, upload_path, model_id, preset_name, seed_value, seed_policy, image_path):
        defaults: dict = {"model": model_id or DEFAULT_MODEL.get(task_name, "")}
        if task_name != "asr":
            defaults["preset"] = preset_name or ""
            defaults["seed"] = -1 if seed_value in (None, "") else seed_value
        if task_name == "i2v" and image_path:
            defaults["image"] = image_path
        name = ""
        if upload_path:
            rows_text, name = batches.read_batch_file(upload_path), Path(upload_path).name
        return batches.read_batch(rows_text or "", task_name, settings, defaults=defaults,
                                  seed_policy=seed_policy or "fixed", name=name)

    def check_rows(task_name, rows_text, upload_path, model_id, preset_name, seed_value, seed_policy, image_path, lang,
                   request: gr.Request):
        """Parse and check every row; the table shows each row's settings, or its error."""
        lang = request_language(lang, request)
        try:
            plan = plan_for(task_name, rows_text, upload_path, model_id, preset_name, seed_value, seed_policy,
                            image_path)
        except RequestError as error:
            raise gr.Error(_error(lang, error), print_exception=False)
        bad = len(plan.errors)
        message = (t(lang, "batch_checked_bad", bad=bad, count=len(plan.rows)) if bad
                   else t(lang, "batch_checked_ok", count=len(plan.rows)))
        return message, check_table(lang, plan)

    inputs = [task, text, upload, model, preset, seed, policy, image, lang_state]
    # The API's events raise their errors (hidden triggers); the page's write them in the status line, in words.
    api_check, api_queue = gr.Button(visible=False), gr.Button(visible=False)
    api_check.click(check_rows, inputs, [status, table], api_name="batch_check", show_progress="minimal")
    check.click(page_twin(check_rows, 2, stop=False), inputs, [status, table], api_visibility="private",
                show_progress="hidden")

    def remember(run: batches.BatchRun, labels: list[str], session: str) -> None:
        with runs_lock:
            runs[run.id] = (run, labels, session)
            while len(runs) > KEPT_BATCHES:
                runs.popitem(last=False)

    def progress_line(lang: str, run: batches.BatchRun) -> str:
        counts = run.counts()
        finished = counts["done"] + counts["failed"] + counts["cancelled"]
        if run.finished:
            ok = sum(1 for outcome in run.outcomes() if outcome.ok)
            return t(lang, "batch_done", batch=run.id, ok=ok, count=len(run.jobs))
        return t(lang, "batch_progress", batch=run.id, finished=finished, count=len(run.jobs),
                 failed=counts["failed"] + counts["cancelled"])

    def queue_rows(task_name, rows_text, upload_path, model_id, preset_name, seed_value, seed_policy, image_path, lang,
                   request: gr.Request):
        """Check every row, queue one job per row (all or none), then follow the jobs until all are finished."""
        lang = request_language(lang, request)
        try:
            plan = plan_for(task_name, rows_text, upload_path, model_id, preset_name, seed_value, seed_policy,
                            image_path)
            if plan.errors:
                yield t(lang, "batch_checked_bad", bad=len(plan.errors), count=len(plan.rows)), \
                    check_table(lang, plan), "", None
                raise batches.BatchError(plan.errors)
            run = batches.submit_batch(worker, plan, owner=owner_of(request))
        except RequestError as error:
            raise gr.Error(_error(lang, error), print_exception=False)
        labels = [batches.describe_row(plan.task, row.request)[0] for row in plan.rows]
        remember(run, labels, getattr(request, "session_hash", None) or "")
        yield progress_line(lang, run), jobs_table(lang, run, labels, worker), run.id, None
        while not run.wait(POLL_SECONDS * 4):
            yield progress_line(lang, run), jobs_table(lang, run, labels, worker), gr.skip(), gr.skip()
        outputs = [path for outcome in run.outcomes() for path in outcome.outputs]
        yield progress_line(lang, run), jobs_table(lang, run, labels, worker), run.id, outputs or None

    api_queue.click(
        queue_rows, inputs, [status, table, batch_id, files],
        api_name="batch_queue",
        concurrency_limit=32,  # handlers only wait on the GPU worker's own queue, which runs one job at a time
        concurrency_id="batch-wait",
        show_progress="minimal",
    )

    def busy(request, but: str = "") -> bool:
        """Whether this page (its session) has another batch with jobs queued or running."""
        session = getattr(request, "session_hash", None) or ""
        with runs_lock:
            return any(key != but and entry[2] == session and not entry[0].finished for key, entry in runs.items())

    def queue_page(*args, request: gr.Request = None):
        """The page's Queue: the status line says what is wrong; Stop all is armed while the batch runs."""
        armed = False
        for values in page_twin(queue_rows, 4, stop=False)(*args, request=request):
            started = not armed and isinstance(values[2], str) and bool(values[2])  # the batch's id: it is queued
            armed = armed or started
            yield (*values, gr.update(interactive=True) if started else gr.skip())
        yield (*[gr.skip()] * 4, gr.skip() if busy(request) else gr.update(interactive=False))

    queue.click(queue_page, inputs, [status, table, batch_id, files, stop],
                api_visibility="private", concurrency_limit=32, concurrency_id="batch-wait", show_progress="hidden")

    def stop_all(current_batch: str, lang: str, request: gr.Request) -> str:
        """Stop every job of the page's batch: queued ones at once, the running one at its next step."""
        lang = request_language(lang, request)
        with runs_lock:
            entry = runs.get(current_batch or "")
        if entry is None:
            return t(lang, "batch_none")
        run = entry[0]
        try:
            check_owner(run.jobs[0], request)  # with a login, only its own user stops a batch
        except RequestError as error:
            raise gr.Error(_error(lang, error), print_exception=False)
        return t(lang, "batch_stopped", batch=run.id, count=run.cancel(worker))

    def stop_page(current_batch: str, lang: str, request: gr.Request = None):
        """The page's Stop all: Stop all is disabled again unless another batch of this page still runs."""
        said = next(page_twin(stop_all, 1, stop=False)(current_batch, lang, request=request))
        return (*said, gr.skip() if busy(request, but=current_batch or "") else gr.update(interactive=False))

    api_stop = gr.Button(visible=False)
    api_stop.click(stop_all, [batch_id, lang_state], [status], api_name="batch_cancel", queue=False)
    stop.click(stop_page, [batch_id, lang_state], [status, stop], api_visibility="private", queue=False)

    def relabel(lang: str, task_name: str, policy_value: str, current_batch: str, shown=None, model_id=None):
        with runs_lock:
            entry = runs.get(current_batch or "")
        return (
            gr.update(choices=preset_labels(lang, preset_names(task_name, model_id or start_model, demo))),
            gr.update(choices=task_choices(lang), value=task_name),
            gr.update(choices=policy_choices(lang), value=policy_value),
            jobs_table(lang, entry[0], entry[1], worker) if entry else relabel_check(lang, shown),
            t(lang, "batch_intro", folder=folder),
        )

    return [(relabel, [lang_state, task, policy, batch_id, table, model], [preset, task, policy, table, intro])]


def relabel_check(lang: str, shown) -> dict:
    """The check table as shown (its rows kept), with its headers in ``lang``."""
    rows = shown.values.tolist() if hasattr(shown, "values") else []
    headers = [t(lang, f"batch_col_{name}") for name in ("row", "what", "check", "settings")]
    return _table(headers, [row for row in rows if any(str(cell).strip() for cell in row)])
