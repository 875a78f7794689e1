"""``build_demo``: the Blocks page, its shared panels, and the settings to launch it offline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from .asr_tab import build_asr_tab
from .batch_tab import build_batch_tab
from .i18n import LANGUAGES, STRINGS, Translator, normalise_language, t
from .history_tab import build_history_tab
from .identity import visible_status
from .i2v_tab import build_i2v_tab
from .live_panel import build_live_panel, status_strip
from .missing_model import MissingModelOffers
from .models_tab import ModelsApi, build_models_tab
from .system_tab import build_system_tab
from .t2v_tab import build_t2v_tab

if TYPE_CHECKING:
    from pipelines.scale.executor import Executor

CSS = """
.cs-strip {font-size: 0.9em; padding: 4px 8px; border-radius: 6px; background: var(--block-background-fill);}
.cs-live {font-size: 0.9em;}
.cs-bar {height: 10px; background: var(--border-color-primary); border-radius: 5px; overflow: hidden; margin: 4px 0;}
.cs-bar > div {height: 100%; background: var(--color-accent); transition: width 0.4s;}
#cs-header {align-items: center;}
.cs-hidden {display: none !important;}
/* bad input at its field (ui/field_errors.py): a red line under it, the field outlined */
.cs-field-msg {color: var(--error-text-color); font-size: var(--text-md);}
.cs-field-msg [role="alert"] {padding: 4px 10px; border-left: 3px solid var(--error-border-color);
  background: var(--error-background-fill); border-radius: 0 4px 4px 0;}
.cs-field-error:is(.block, .accordion) {outline: 2px solid var(--error-border-color); outline-offset: -2px;}
.cs-field-error :is(textarea, input[type="number"]) {border-color: var(--error-border-color) !important;}
/* settings tables: the names in one line, the values take the rest */
:is(#t2v-settings, #i2v-settings, #cs-system-table) :is(td, th):first-child {white-space: nowrap; width: 1%;}
/* History: a clicked row is picked as a whole, not a cell opened for editing */
#history-table .body-cell.cell-selected {box-shadow: none !important; animation: none !important;}
#history-table .cell-menu-button {display: none !important;}
#history-table tr:has(.cell-selected) td {background: var(--color-accent-soft);}
@media (max-width: 640px) {  /* a phone: the header in one line, the log short, Generate within the first screen */
  #cs-header h2 {margin: 0;}
  #cs-tagline {display: none;}
  #cs-demo-banner p, .cs-strip {font-size: 12px; line-height: 1.35;}
  #cs-log textarea {max-height: 8em;}
}
"""

# Gradio's own texts (upload boxes, "Record", the footer, toast titles) come from its frontend's i18n, which
# starts from the browser's language; this makes them follow the app's choice. Gradio 6 exports the switch
# (``changeLocale``) from its frontend's core module, whose hashed file name the page's entry script names.
GRADIO_LOCALE_JS = """
async function csGradioLocale(lang) {
  const wanted = lang === "zh" ? "zh-CN" : "en";
  try {
    let url = performance.getEntriesByType("resource").map((e) => e.name).find((n) => /\\/assets\\/core-[\\w-]+\\.js$/.test(n));
    if (!url) {
      const entry = document.querySelector('script[type="module"][src*="assets/index-"]');
      const text = entry ? await (await fetch(entry.src)).text() : "";
      const found = text.match(/core-[\\w-]+\\.js/);
      url = found ? new URL(found[0], entry.src).href : null;
    }
    if (url) { (await import(url)).changeLocale(wanted); }
  } catch (e) { console.warn("Cinescribe: Gradio's language was not changed", e); }
}
"""
# Picks the language on load: the user's last choice, else the browser's.
LANGUAGE_JS = """
(current) => {
  %s
  let lang = null;
  try { lang = localStorage.getItem("cinescribe-lang"); } catch (e) {}
  if (!lang) {
    const browser = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
    lang = browser.toLowerCase().startsWith("zh") ? "zh" : "en";
  }
  csGradioLocale(lang);
  return lang;
}
""" % GRADIO_LOCALE_JS
# Keeps the log panel scrolled to its newest line, unless the reader scrolled up to read older ones.
FOLLOW_LOG_JS = """
() => {
  setInterval(() => {
    const box = document.querySelector("#cs-log textarea");
    if (!box) { return; }
    if (!box.dataset.followHooked) {
      box.dataset.followHooked = "1";
      box.dataset.follow = "1";
      box.addEventListener("scroll", () => {
        box.dataset.follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 24 ? "1" : "0";
      });
    }
    if (box.dataset.follow === "1") { box.scrollTop = box.scrollHeight; }
  }, 500);
}
"""
REMEMBER_LANGUAGE_JS = """
(lang) => {
  %s
  try { localStorage.setItem("cinescribe-lang", lang); } catch (e) {}
  csGradioLocale(lang);
  return lang;
}
""" % GRADIO_LOCALE_JS


def offline_theme() -> gr.themes.Base:
    """Gradio's default look with system fonts only: nothing is fetched from the internet."""
    return gr.themes.Default(
        font=["system-ui", "Segoe UI", "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "Noto Sans Mono CJK SC", "monospace"],
    )


def build_demo(worker: Executor, settings, controller, log_buffer=None, access=None) -> gr.Blocks:
    """The page. ``access`` (``ui.auth_access.Access``): users, roles and file owners; None: one person's studio."""
    translator = Translator()
    with gr.Blocks(title="Cinescribe") as demo:
        lang_state = gr.State("")  # set from the browser on load
        with gr.Row(elem_id="cs-header"):
            with gr.Column(scale=4):
                gr.Markdown("## Cinescribe")
                translator.bind(gr.Markdown(t("en", "tagline"), elem_id="cs-tagline"), value="tagline")
            with gr.Column(scale=1, min_width=180):
                language = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value="en", show_label=False,
                                    elem_id="cs-language", container=False)
        if settings.demo:
            translator.bind(gr.Markdown(t("en", "demo_banner"), elem_id="cs-demo-banner"), value="demo_banner")
        strip = gr.HTML(status_strip("en", worker.status()))
        forms: dict = {}  # task -> {request field: component}, for the History tab's "Reuse settings"
        admin_only: list = []  # controls only admins may use: hidden from the others on load
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # every tab reachable on a phone, none behind a menu
            models_api = ModelsApi(settings, worker)  # the Models tab and the tabs' "Download <model>" share it
            missing = MissingModelOffers(models_api, worker, access)
            with translator.bind(gr.Tab("Text to video", id="t2v"), label="tab_t2v"):
                language_hooks = build_t2v_tab(worker, settings, translator, lang_state, forms, missing=missing)
            with translator.bind(gr.Tab("Image to video", id="i2v"), label="i2v_tab"):
                language_hooks += build_i2v_tab(worker, settings, translator, lang_state, forms, missing=missing)
            with translator.bind(gr.Tab("Speech to text", id="asr"), label="asr_tab"):
                language_hooks += build_asr_tab(worker, settings, translator, lang_state, forms, missing=missing)
            with translator.bind(gr.Tab("Batch", id="batch"), label="batch_tab"):
                language_hooks += build_batch_tab(worker, settings, translator, lang_state)
            with translator.bind(gr.Tab("History", id="history"), label="history_tab") as history_tab:
                language_hooks += build_history_tab(worker, settings, translator, lang_state, forms, tabs, history_tab,
                                                    access=access)
            with translator.bind(gr.Tab("System", id="system"), label="tab_system") as system_tab:
                describe, info = build_system_tab(worker, settings, controller, translator, lang_state,
                                                  access=access, admin_only=admin_only)
            with translator.bind(gr.Tab("Models", id="models"), label="models_tab"):
                language_hooks += build_models_tab(models_api, translator, lang_state, access=access,
                                                   admin_only=admin_only)
        build_live_panel(worker, log_buffer, translator, lang_state, strip, access=access)

        components = translator.components

        def relabel(lang: str):
            lang = normalise_language(lang)
            return [lang, lang, *translator.updates(lang)]

        changed = language.change(relabel, [language], [lang_state, language, *components], api_visibility="private",
                                  show_progress="hidden", queue=False)
        changed.then(None, [language], None, js=REMEMBER_LANGUAGE_JS)
        for fn, inputs, outputs in language_hooks:  # texts computed from values, not fixed labels
            changed.then(fn, inputs, outputs, api_visibility="private", show_progress="hidden", queue=False)
        demo.load(lambda lang: normalise_language(lang), [language], [language], js=LANGUAGE_JS,
                  api_visibility="private", queue=False)
        demo.load(describe, None, info, api_visibility="private", queue=False)
        system_tab.select(describe, None, info, api_visibility="private", queue=False)  # as it is now, not at load
        if access is not None and access.book and admin_only:
            def admin_controls(request: gr.Request) -> list:
                """Shows the admin-only controls to admins, hides them from the others."""
                return [gr.update(visible=access.request_is_admin(request))] * len(admin_only)

            demo.load(admin_controls, None, admin_only, api_visibility="private", queue=False)
        def status(request: gr.Request) -> dict:
            """Device, memory, resident models, queue length and the running job (another user's: no details)."""
            return visible_status(worker.status(), worker.current_job(), request)

        gr.api(status, api_name="status")

        def log(request: gr.Request) -> list[str]:
            """The live log's newest lines this user may read (another user's job lines left out)."""
            if log_buffer is None:
                return []
            return access.log_tail(log_buffer, request, 300) if access else log_buffer.tail(300)

        gr.api(log, api_name="log")
    return demo


class QuickHead:
    """Answers ``HEAD /`` at once (200, no body). Gradio's launch checks the server with one such request and a
    3-second limit, and its route builds the whole page config for it: on a busy machine that check failed
    and the app did not start. A GET of the page is unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("method") == "HEAD" and scope.get("path") in ("/", ""):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def launch_options(settings, auth: list[tuple[str, str]] | None = None, max_upload_mb: float | None = None,
                   access=None) -> dict:
    """Keyword arguments for ``demo.launch`` that keep the page offline and the file access narrow.

    ``auth`` (``user, password`` pairs) requires a login for the page and every route of the server
    (``ui.identity.LoginRequired`` closes the few Gradio leaves open); ``max_upload_mb`` caps each
    uploaded file (Gradio refuses a larger one with HTTP 413 while it streams in; None or 0: no cap).
    Errors of any kind reach the caller with their message (``show_error``): a refused file path says
    why instead of an empty error. ``access`` with users (``ui.auth_access.Access``) checks passwords
    against their hashes and adds ``ui.auth_guard.StudioGuard``: login throttling, per-user files and uploads.
    """
    from starlette.middleware import Middleware

    options = {
        "theme": offline_theme(),
        "css": CSS,
        "allowed_paths": [str(settings.outputs_dir.resolve())],
        "footer_links": ["api", "settings"],
        "js": FOLLOW_LOG_JS,
        "show_error": True,
        "max_file_size": int(max_upload_mb * 2**20) if max_upload_mb else None,
        "app_kwargs": {"middleware": [Middleware(QuickHead)]},
    }
    if auth or (access is not None and access.book):
        from .identity import LoginRequired

        options["auth"] = auth
        options["app_kwargs"]["middleware"].append(Middleware(LoginRequired))
    if access is not None and access.book:
        import asyncio

        from .auth_guard import StudioGuard

        async def check_password(username: str, password: str) -> bool:  # scrypt off the event loop
            return await asyncio.to_thread(access.book.check, username, password)

        options["auth"] = check_password
        options["app_kwargs"]["middleware"].append(Middleware(StudioGuard, access=access))
    return options


__all__ = ["build_demo", "launch_options", "STRINGS"]
