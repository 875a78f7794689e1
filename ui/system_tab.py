"""The System tab: device and settings, Release VRAM and Restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr

from pipelines.bench.benchmark import run_benchmark, standard_workloads, write_report
from pipelines.studio.jobs import RequestError

from .i18n import Translator, error_text, normalise_language, request_language, t
from .auth_access import refuse_unless_admin
from .identity import sees_job
from .settings_view import system_table

# Restart asks first, in the page's language; yes clicks the hidden button that restarts.
CONFIRM_RESTART_JS = """
(lang) => {
  const ask = %s;
  if (window.confirm(ask[lang === "zh" ? "zh" : "en"])) { document.querySelector("#cs-restart-go")?.click(); }
}
""" % json.dumps({lang: t(lang, "restart_confirm") for lang in ("en", "zh")}, ensure_ascii=False)
# After Restart: wait for the server to go away and come back, then reload the page.
RECONNECT_JS = """
() => {
  const started = Date.now();
  let sawDown = false;
  const poll = () => {
    fetch(window.location.pathname, {cache: "no-store"}).then((r) => {
      if (r.ok && (sawDown || Date.now() - started > 15000)) { window.location.reload(); }
      else { setTimeout(poll, 1000); }
    }).catch(() => { sawDown = true; setTimeout(poll, 1000); });
  };
  setTimeout(poll, 1500);
}
"""


def release_message(lang: str, report: dict) -> str:
    freed = report["freed_bytes"] / 2**30
    if not report["released"]:
        return t(lang, "released_nothing", freed=freed)
    return t(lang, "released", models=", ".join(report["released"]), freed=freed,
             before=report["before_bytes"] / 2**30, after=report["after_bytes"] / 2**30)


def last_benchmark(settings) -> str:
    """The newest report in ``outputs/benchmarks``, as Markdown (empty when none was run yet)."""
    reports = sorted((Path(settings.outputs_dir) / "benchmarks").glob("*_benchmark.md"))
    return reports[-1].read_text(encoding="utf-8") if reports else ""


def doctor_markdown(settings, lang: str) -> str:
    """``scripts/doctor.py`` run in its own process (it may touch CUDA; the app's UI must not)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "doctor.py"
    try:
        result = subprocess.run(
            [sys.executable, str(script), "--json", "--no-port", "--outputs", str(settings.outputs_dir)],
            capture_output=True, text=True, encoding="utf-8", timeout=120, check=False,
        )
        checks = json.loads(result.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        return t(lang, "doctor_failed", error=str(error))
    rows = [
        f"| {'**' + c['status'] + '**' if c['status'] != 'OK' else c['status']} | {c['name']} | {c['detail']} | "
        f"{c['fix'] if c['status'] != 'OK' else ''} |"
        for c in checks
    ]
    header = f"| {t(lang, 'doctor_status')} | {t(lang, 'doctor_check')} | {t(lang, 'doctor_detail')} | {t(lang, 'doctor_fix')} |"
    return "\n".join([t(lang, "doctor_header"), "", header, "|---|---|---|---|", *rows])


def build_system_tab(worker, settings, controller, translator: Translator, lang_state: gr.State, access=None,
                     admin_only: list | None = None) -> None:
    """The tab. Its controls are admins' (``access``): the handlers refuse others, and the controls are put
    in ``admin_only`` for the page to hide from them."""
    admin_only = admin_only if admin_only is not None else []
    summary = gr.Markdown(elem_id="cs-system-table")  # readable; the JSON one click away
    with translator.bind(gr.Accordion("As JSON", open=False, elem_id="cs-system-json"), label="settings_json"):
        info = gr.Code(language="json", interactive=False, label="System", elem_id="cs-system-info")
    translator.bind(info, label="system_info")
    for event in (info.change, lang_state.change):
        event(system_table, [info, lang_state], summary, api_visibility="private", show_progress="hidden")
    with gr.Row() as release_row:
        with gr.Column():
            release = translator.bind(gr.Button("Release VRAM", elem_id="cs-release"), value="release_vram")
            translator.bind(gr.Markdown(t("en", "release_info")), value="release_info")
    result = gr.Markdown(elem_id="cs-system-result")
    if callable(getattr(worker, "restart_worker", None)):  # --cluster: the Ray cluster's workers
        with gr.Column() as workers_box:
            build_workers_section(worker, translator, lang_state, result, access)
        admin_only.append(workers_box)
    with gr.Row() as checks_row:
        with gr.Column():
            run_doctor = translator.bind(gr.Button("Run checks", elem_id="cs-doctor"), value="doctor_run")
        with gr.Column():
            run_bench = translator.bind(gr.Button("Run the standard benchmark", elem_id="cs-benchmark"),
                                        value="benchmark_run")
            translator.bind(gr.Markdown(t("en", "benchmark_info")), value="benchmark_info")
    doctor_report = gr.Markdown(elem_id="cs-doctor-report")  # full width: the fixes are sentences
    bench_report = gr.Markdown(last_benchmark(settings), elem_id="cs-benchmark-report")
    with gr.Row(elem_id="cs-restart-row") as restart_row:  # apart from Release VRAM, and asks first
        with gr.Column():
            restart = translator.bind(gr.Button("Restart app", variant="stop", elem_id="cs-restart"), value="restart")
            translator.bind(gr.Markdown(t("en", "restart_info")), value="restart_info")
    restart_go = gr.Button("Restart", elem_id="cs-restart-go", elem_classes=["cs-hidden"])  # the API's, and Confirm's
    admin_only += [release_row, checks_row, doctor_report, bench_report, restart_row]

    def describe() -> str:
        status = worker.status()
        return json.dumps(
            {
                "device": status.get("device_name"),
                "torch_device": status.get("device"),
                "dtype": status.get("dtype"),
                "memory": status.get("memory"),
                "resident_models": status.get("resident"),
                "queue": status.get("queue"),
                "outputs": str(settings.outputs_dir.resolve()),
                "offload": settings.offload,
                "attention": settings.attention,
                "vae_tiling": settings.vae_tiling,
                "gpu_memory_budget_gb": settings.gpu_memory_gb,
                "demo": settings.demo,
                "runtime": worker.environment,
            },
            indent=2,
            ensure_ascii=False,
        )

    def on_release(lang: str, request: gr.Request):
        refuse_unless_admin(access, request, lang)
        report = worker.release_vram(timeout=3600)
        return release_message(request_language(lang, request), report), describe()

    def on_restart(lang: str, request: gr.Request) -> str:
        refuse_unless_admin(access, request, lang)
        controller.request_restart()
        return t(request_language(lang, request), "restarting")

    def on_doctor(lang: str, request: gr.Request) -> str:
        refuse_unless_admin(access, request, lang)
        return doctor_markdown(settings, request_language(lang, request))

    bench_lock = threading.Lock()

    def on_benchmark(lang: str, request: gr.Request):
        refuse_unless_admin(access, request, lang)
        lang = request_language(lang, request)
        if not bench_lock.acquire(blocking=False):
            yield t(lang, "benchmark_busy")
            return
        try:
            workloads = standard_workloads(settings.demo, ("t2v", "i2v", "asr"),
                                           scratch=settings.data_dir / "benchmark_inputs")
            repeat = 2 if settings.demo else 5
            done = {"runs": 0}
            total = len(workloads) * (repeat + 1)

            class Progress:
                def update(self, n=1):
                    done["runs"] += n

            outcome: dict = {}
            thread = threading.Thread(
                target=lambda: outcome.update(report=run_benchmark(
                    worker, settings, workloads, repeat, cold_start=False, progress=Progress(),
                    command="System tab: standard benchmark")),
                daemon=True,
            )
            thread.start()
            while thread.is_alive():
                yield t(lang, "benchmark_running", done=done["runs"], total=total)
                thread.join(2.0)
            if "report" not in outcome:
                yield t(lang, "benchmark_failed")
                return
            md_path, _ = write_report(outcome["report"], settings.outputs_dir / "benchmarks")
            yield md_path.read_text(encoding="utf-8")
        finally:
            bench_lock.release()

    run_doctor.click(on_doctor, [lang_state], [doctor_report], api_name="doctor", concurrency_limit=2,
                     concurrency_id="control")
    run_bench.click(on_benchmark, [lang_state], [bench_report], api_name="benchmark", concurrency_limit=2,
                    concurrency_id="control")
    release.click(on_release, [lang_state], [result, info], api_name="release_vram", concurrency_limit=4,
                  concurrency_id="control")
    restart.click(None, [lang_state], None, js=CONFIRM_RESTART_JS)
    restart_go.click(on_restart, [lang_state], [result], api_name="restart", js=None, queue=False).then(
        None, None, None, js=RECONNECT_JS
    )
    return describe, info


# --- the cluster's workers (app.py --cluster; pipelines/cluster.py) -------------------------------------

CLUSTER_STRINGS = {
    "en": {
        "cluster_title": "### Cluster workers\nOne worker per GPU of the Ray cluster `{address}`. Each keeps its "
        "models resident and takes jobs from the one queue, preferring jobs for a model it already holds.",
        "cluster_worker": "Worker",
        "cluster_all": "All workers",
        "cluster_release": "Release VRAM",
        "cluster_restart": "Restart worker",
        "cluster_info": "Release VRAM waits for the worker's running job to end. Restart stops the worker at once; "
        "the job it was running is queued again (once).",
        "cluster_restarted": "Restarting {workers}; a job that was running there is queued again (once).",
        "cluster_none": "No worker to restart.",
        "cluster_col_worker": "Worker",
        "cluster_col_host": "Host",
        "cluster_col_gpu": "GPU",
        "cluster_col_vram": "VRAM",
        "cluster_col_models": "Resident models",
        "cluster_col_job": "Current job",
        "cluster_col_state": "State",
        "cluster_col_done": "Jobs done",
        "cluster_col_restarts": "Restarts",
    },
    "zh": {
        "cluster_title": "### 集群工作进程\nRay 集群 `{address}` 的每块 GPU 一个工作进程。每个进程让模型常驻显存，"
        "从同一个队列取任务，优先取它已加载模型的任务。",
        "cluster_worker": "工作进程",
        "cluster_all": "全部工作进程",
        "cluster_release": "释放显存",
        "cluster_restart": "重启工作进程",
        "cluster_info": "释放显存会等该进程当前的任务结束。重启会立即停止该进程；"
        "它正在运行的任务会重新排队（仅一次）。",
        "cluster_restarted": "正在重启 {workers}；其上正在运行的任务会重新排队（仅一次）。",
        "cluster_none": "没有可重启的工作进程。",
        "cluster_col_worker": "工作进程",
        "cluster_col_host": "主机",
        "cluster_col_gpu": "GPU",
        "cluster_col_vram": "显存",
        "cluster_col_models": "常驻模型",
        "cluster_col_job": "当前任务",
        "cluster_col_state": "状态",
        "cluster_col_done": "已完成任务",
        "cluster_col_restarts": "重启次数",
    },
}
WORKER_COLUMNS = ("worker", "host", "gpu", "vram", "models", "job", "state", "done", "restarts")
WORKERS_REFRESH_SECONDS = 2.0


def _add_cluster_strings() -> None:
    from .i18n import STRINGS

    for lang, texts in CLUSTER_STRINGS.items():
        for key, text in texts.items():
            STRINGS[lang].setdefault(key, text)


def workers_table(lang: str, rows: list[dict]) -> dict:
    """The workers' table for ``gr.Dataframe``: translated headers, one row per worker."""
    data = [[r["worker"], r["host"], r["gpu"], r["vram"], r["resident"], r["job"],
             r["state"] + (f": {r['problem']}" if r["problem"] else ""), r["jobs_done"], r["restarts"]] for r in rows]
    return {"headers": [t(lang, f"cluster_col_{column}") for column in WORKER_COLUMNS], "data": data}


def build_workers_section(worker, translator: Translator, lang_state: gr.State, result: gr.Markdown,
                          access=None) -> None:
    """The workers' table (host, GPU, VRAM, resident models, current job, state), and Release VRAM / Restart
    for all of them or one."""
    _add_cluster_strings()
    translator.bind(gr.Markdown(t("en", "cluster_title", address=worker.address)),
                    value=("cluster_title", {"address": worker.address}))
    table = gr.Dataframe(workers_table("en", worker.workers()), interactive=False, wrap=True, elem_id="cs-workers")
    with gr.Row():
        names = [row["worker"] for row in worker.workers()]
        choice = translator.bind(
            gr.Dropdown([(t("en", "cluster_all"), "")] + [(name, name) for name in names], value="",
                        label="Worker", elem_id="cs-worker-choice"),
            label="cluster_worker")
        release_one = translator.bind(gr.Button("Release VRAM", elem_id="cs-worker-release"), value="cluster_release")
        restart_one = translator.bind(gr.Button("Restart worker", variant="stop", elem_id="cs-worker-restart"),
                                      value="cluster_restart")
    translator.bind(gr.Markdown(t("en", "cluster_info")), value="cluster_info")

    shown = gr.State(("en", tuple(names)))  # the choices' language and workers, to update them only on a change

    def rows(request) -> list[dict]:
        return worker.workers(lambda job: sees_job(job, request))  # another user's job: no id

    def refresh(lang: str, seen: tuple, request: gr.Request):
        lang, rows_now = normalise_language(lang), rows(request)
        now = (lang, tuple(row["worker"] for row in rows_now))  # workers are added when GPUs join the cluster
        choices = gr.skip() if tuple(seen) == now else gr.update(
            choices=[(t(lang, "cluster_all"), "")] + [(name, name) for name in now[1]])
        return workers_table(lang, rows_now), choices, now

    def on_release(name: str, lang: str, request: gr.Request):
        refuse_unless_admin(access, request, lang)
        lang = request_language(lang, request)
        try:
            report = worker.release_vram(timeout=3600, worker=name or None)
        except RequestError as error:
            raise gr.Error(error_text(lang, error.key, error.params, str(error)), print_exception=False)
        return release_message(lang, report), workers_table(lang, rows(request))

    def on_restart(name: str, lang: str, request: gr.Request):
        refuse_unless_admin(access, request, lang)
        lang = request_language(lang, request)
        restarted = worker.restart_worker(name or None)
        message = t(lang, "cluster_restarted", workers=", ".join(restarted)) if restarted else t(lang, "cluster_none")
        return message, workers_table(lang, rows(request))

    gr.Timer(WORKERS_REFRESH_SECONDS).tick(refresh, [lang_state, shown], [table, choice, shown],
                                           api_visibility="private", show_progress="hidden", queue=False)
    release_one.click(on_release, [choice, lang_state], [result, table], api_name="release_worker",
                      concurrency_limit=4, concurrency_id="control")
    restart_one.click(on_restart, [choice, lang_state], [result, table], api_name="restart_worker", queue=False)
