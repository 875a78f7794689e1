"""The System tab: device and settings, Release VRAM and Restart."""

from __future__ import annotations

import json

import gradio as gr

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

    release.click(on_release, [lang_state], [result, info], api_name="release_vram", concurrency_limit=4,
                  concurrency_id="control")
    restart.click(on_restart, [lang_state], [result], api_name="restart", js=None, queue=False).then(
        None, None, None, js=RECONNECT_JS
    )
    return describe, info
