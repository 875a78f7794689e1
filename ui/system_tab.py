"""The System tab: device and settings, Release VRAM and Restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr

from pipelines.benchmark import run_benchmark, standard_workloads, write_report

from .i18n import Translator, request_language, t

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


def build_system_tab(worker, settings, controller, translator: Translator, lang_state: gr.State) -> None:
    info = gr.Code(language="json", interactive=False, label="System", elem_id="cs-system-info")
    translator.bind(info, label="system_info")
    with gr.Row():
        with gr.Column():
            release = translator.bind(gr.Button("Release VRAM", elem_id="cs-release"), value="release_vram")
            translator.bind(gr.Markdown(t("en", "release_info")), value="release_info")
        with gr.Column():
            restart = translator.bind(gr.Button("Restart app", variant="stop", elem_id="cs-restart"), value="restart")
            translator.bind(gr.Markdown(t("en", "restart_info")), value="restart_info")
    result = gr.Markdown(elem_id="cs-system-result")
    with gr.Row():
        with gr.Column():
            run_doctor = translator.bind(gr.Button("Run checks", elem_id="cs-doctor"), value="doctor_run")
        with gr.Column():
            run_bench = translator.bind(gr.Button("Run the standard benchmark", elem_id="cs-benchmark"),
                                        value="benchmark_run")
            translator.bind(gr.Markdown(t("en", "benchmark_info")), value="benchmark_info")
    doctor_report = gr.Markdown(elem_id="cs-doctor-report")  # full width: the fixes are sentences
    bench_report = gr.Markdown(last_benchmark(settings), elem_id="cs-benchmark-report")

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
        report = worker.release_vram(timeout=3600)
        return release_message(request_language(lang, request), report), describe()

    def on_restart(lang: str, request: gr.Request) -> str:
        controller.request_restart()
        return t(request_language(lang, request), "restarting")

    def on_doctor(lang: str, request: gr.Request) -> str:
        return doctor_markdown(settings, request_language(lang, request))

    bench_lock = threading.Lock()

    def on_benchmark(lang: str, request: gr.Request):
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
    restart.click(on_restart, [lang_state], [result], api_name="restart", js=None, queue=False).then(
        None, None, None, js=RECONNECT_JS
    )
    return describe, info
