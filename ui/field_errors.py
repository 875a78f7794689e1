"""Bad input said at the field it concerns: a red line under the field, the field outlined.

A tab's handler raises ``FieldError`` (a ``gr.Error`` that keeps the ``RequestError``'s key and params); the
API sees the plain error. On the page, ``FieldErrors.twin`` writes the message by Generate as before
(``job_status.page_twin``) and puts the error into a per-session ``gr.State``; that state's ``change``
shows the line under the field (``role="alert"``) and gives the field the ``cs-field-error`` class. The
next submit, or a change of that field, clears it. The line is translated again on a language switch.

A change of the field clears its line in the browser alone (an event with ``fn=None`` and ``js=``): no request, and
nothing at all when that field's line is not shown. The state keeps the error until the next submit, so the
language hook says a line again only while the browser still shows it (the line's value is an input).

Not Gradio 6.31's ``validator=`` / ``gr.validate``: that is a second check run before the event, blind to what
only submit finds (the LoRA files, in ``loras.check``), and it leaves the line by Generate unwritten.
"""

from __future__ import annotations

import html
import inspect
import json
import uuid

import gradio as gr

from .i18n import error_text, normalise_language
from .job_status import page_twin

ERROR_CLASS = "cs-field-error"  # ui/app.py's CSS outlines a field with it
LINE_CLASS = "cs-field-msg"  # and draws the line

# A RequestError's key -> the field it is about (keys from pipelines/tasks/*, media/images.py, loras/check.py).
FIELD_OF_KEY = {
    "prompt_empty": "prompt", "prompt_long": "prompt",
    "frames_type": "frames", "frames_range": "frames",
    "duration_type": "duration", "duration_range": "duration",
    "resolution": "resolution", "i2v_resolution": "resolution",
    "aspect": "aspect", "i2v_aspect": "aspect", "i2v_fit": "fit",
    "i2v_last_frame_unsupported": "last_frame", "i2v_last_frame_read": "last_frame",
    "asr_no_files": "files", "asr_too_many_files": "files",
    "asr_language": "language", "asr_english_only": "language", "asr_language_model": "language",
    "model_unknown": "model", "asr_not_whisper": "model",
}


def field_of(key: str, params: dict | None = None) -> str | None:
    """The field a refusal is about, or None (said by Generate only)."""
    key = key or ""
    if key.startswith("lora_"):
        return "loras"
    if key.startswith("i2v_image_"):  # the image or the last frame: load_image names which
        return "last_frame" if (params or {}).get("what") == "last_frame" else "image"
    return FIELD_OF_KEY.get(key)


class FieldError(gr.Error):
    """A ``gr.Error`` for bad input that remembers which ``RequestError`` said it."""

    def __init__(self, message: str, key: str = "", params: dict | None = None, fallback: str = ""):
        super().__init__(message, print_exception=False)
        self.key, self.params, self.fallback = key or "", dict(params or {}), fallback or message


def field_error(message: str, error) -> FieldError:
    """``message`` (the error in the reader's language) raised with ``error``'s key and params."""
    return FieldError(message, getattr(error, "key", ""), getattr(error, "params", {}), str(error))


def line_html(message: str, field: str = "") -> str:
    return f'<div role="alert" data-field="{html.escape(field)}">⚠ {html.escape(message)}</div>'


# The field changed: when its line is shown, hide it and take the outline off, in the browser only.
CLEAR_JS = """() => {
  const line = document.getElementById(%(line)s);
  if (!line || !line.querySelector('[data-field=' + JSON.stringify(%(field)s) + ']')) return [];
  return [{__type__: "update", visible: false, value: ""},
          ...%(classes)s.map((c) => ({__type__: "update", elem_classes: c}))];
}"""


class FieldErrors:
    """One tab's error lines. ``place`` a line under a field (or a row of fields) while building the layout,
    then ``wire`` once; ``twin`` replaces ``page_twin`` for Generate, with ``state`` as its last output."""

    def __init__(self, tab: str, translate=error_text):
        self.tab, self.translate = tab, translate
        self.lines: list = []  # gr.HTML, one per place
        self.fields: dict[str, tuple[int, list]] = {}  # field -> (line index, its components)
        self.state = None

    def place(self, **fields) -> None:
        """A hidden line here, for ``field=component`` (or a tuple of components) shown under them."""
        index = len(self.lines)
        first = next(iter(fields))
        self.lines.append(gr.HTML("", visible=False, elem_classes=[LINE_CLASS], js_on_load=None,
                                  elem_id=f"{self.tab}-{first.replace('_', '-')}-error"))
        for name, components in fields.items():
            self.fields[name] = (index, list(components) if isinstance(components, (tuple, list)) else [components])

    @property
    def components(self) -> list:
        return [c for _, (_, comps) in self.fields.items() for c in comps]

    def outputs(self) -> list:
        return [*self.lines, *self.components]

    @staticmethod
    def _classes(component, wrong: bool) -> list[str]:
        classes = [c for c in (component.elem_classes or []) if c != ERROR_CLASS]
        return classes + [ERROR_CLASS] if wrong else classes

    def render(self, shown, lang: str) -> list:
        """Updates for every line and field: ``shown`` (the state: field, key, params, fallback) or none."""
        field = (shown or {}).get("field")
        at = self.fields[field][0] if field in self.fields else None
        message = ""
        if at is not None:
            message = self.translate(normalise_language(lang), shown["key"], dict(shown["params"]), shown["fallback"])
        lines = [gr.update(value=line_html(message, field), visible=True) if i == at else gr.update(visible=False, value="")
                 for i in range(len(self.lines))]
        marks = []
        for name, (_, comps) in self.fields.items():
            for component in comps:
                marks.append(gr.update(elem_classes=self._classes(component, name == field)))
        return [*lines, *marks]

    def relabel(self, shown, lang: str, *shown_lines) -> list:
        """The language hook: ``render`` again, unless the browser has already cleared that line (value "")."""
        at = self.fields.get((shown or {}).get("field"), (None,))[0]
        return self.render(shown if at is not None and shown_lines[at] else None, lang)

    def wire(self, lang_state) -> list:
        """The state and its listeners; returns the language hook ``(fn, inputs, outputs)`` for the tab's list."""
        self.state = gr.State(None)
        quiet = dict(api_visibility="private", show_progress="hidden", queue=False)
        self.state.change(self.render, [self.state, lang_state], self.outputs(), **quiet)
        for name, (at, comps) in self.fields.items():
            js = CLEAR_JS % {"line": json.dumps(self.lines[at].elem_id), "field": json.dumps(name),
                             "classes": json.dumps([self._classes(c, False) for c in comps])}
            for component in comps:
                if hasattr(component, "change") and not isinstance(component, gr.Accordion):
                    component.change(None, None, [self.lines[at], *comps], js=js, **quiet)
        return [(self.relabel, [self.state, lang_state, *self.lines], self.outputs())]

    def twin(self, run, count: int, stop: bool = True, keep: bool = False):
        """``page_twin(run, count, stop, keep=keep)`` plus the state as one more output: the error's field, or None.
        A refusal's status line keeps its key, so it is said again in the new language on a switch."""

        def twin(*args, request: gr.Request = None):
            caught: list[FieldError] = []  # this call's own: calls of several sessions run at once

            def watched(*inner, request: gr.Request = None):
                try:
                    result = run(*inner, request=request)
                    if inspect.isgenerator(result):
                        yield from result
                    else:
                        yield result
                except FieldError as error:
                    caught.append(error)
                    if error.key and not getattr(error, "parts", None):
                        error.parts = ((self.translate, (error.key, error.params, error.fallback), {}),)
                    raise

            for index, values in enumerate(page_twin(watched, count, stop, keep=keep)(*args, request=request)):
                if caught:
                    error = caught.pop()
                    field = field_of(error.key, error.params)
                    # "seen" makes each refusal a change of the state, even one equal to an error cleared in the browser
                    yield (*values, {"field": field, "key": error.key, "params": error.params, "fallback": error.fallback,
                                     "seen": uuid.uuid4().hex} if field in self.fields else None)
                else:
                    yield (*values, None if index == 0 else gr.skip())

        return twin
