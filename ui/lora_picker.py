"""The LoRA picker of the text- and image-to-video tabs: the creator's LoRAs that fit the chosen model, each with a
strength, its trigger words, training tags, thumbnail and (speed-up LoRAs) a button that sets steps and guidance.

The picker's one value is a text, ``"name:strength, ..."`` (the ``loras`` field of the request and of the
``/t2v`` / ``/i2v`` API), shown in the picker and editable. The dropdown, the sliders and the Remove buttons
only rewrite that text; the cards below it are drawn from it. So the job gets exactly what the creator sees,
and History's "Reuse settings" brings LoRAs back by setting the text alone. Each drawing also writes what it was
drawn from (model, language, text) into a hidden box; when that box, changed, no longer matches the page (a redraw
from older text answered last), the picker draws again from the text as it is now: the cards follow the text.

The folder is read by ``pipelines.loras.library`` (file headers only); nothing here imports torch.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines.families.catalogue import family_of, get_spec
from pipelines.loras.library import loras_dir, loras_for_model, parse_loras
from pipelines.studio.jobs import RequestError

from .i18n import Translator, error_text, normalise_language, t
from .strings_lora_reasons import reason_text

logger = logging.getLogger(__name__)

MAX_PICKS = 8  # as many as one clip takes (pipelines/loras/check.py): each gets a card (hidden while unused)
MAX_TRIGGERS = 3  # trigger-word buttons per card
MAX_TAGS = 8
STRENGTH_RANGE = (-2.0, 2.0)
THUMBNAIL_PIXELS = 192
SUFFIX = ".safetensors"


# --- the text <-> the picks (no gradio) ---------------------------------------------------------------------

def lora_key(name: str) -> str:
    """A LoRA's name as the library lists it: relative path with ``/``, without ``.safetensors``."""
    name = str(name or "").strip().replace("\\", "/")
    return name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else name


def format_strength(value) -> str:
    """``1.0`` -> ``1``, ``0.75`` -> ``0.75`` (two decimals at most)."""
    return f"{round(float(value), 2):g}"


def picks_from_text(text: str) -> list[tuple[str, float]]:
    """``"a:0.5, b"`` -> ``[("a", 0.5), ("b", 1.0)]`` through the library's parser (``RequestError`` for bad text)."""
    if not str(text or "").strip():
        return []
    return [(lora_key(name), float(strength)) for name, strength in parse_loras(str(text))]


def text_from_picks(picks) -> str:
    """``[("a", 0.5), ("b", 1.0)]`` -> ``"a:0.5, b:1"``: every strength written out."""
    return ", ".join(f"{lora_key(name)}:{format_strength(strength)}" for name, strength in picks)


def picked_names(text: str, names: list[str] | None) -> str:
    """The dropdown changed to ``names``: LoRAs kept keep their strength, new ones get 1, in the dropdown's order."""
    try:
        before = dict(picks_from_text(text))
    except RequestError:
        before = {}
    return text_from_picks([(lora_key(n), before.get(lora_key(n), 1.0)) for n in (names or [])])


def with_strengths(text: str, *values) -> str:
    """The sliders moved: card ``i`` shows the ``i``-th LoRA of ``text``; LoRAs beyond the cards keep theirs."""
    picks = picks_from_text(text)
    low, high = STRENGTH_RANGE
    return text_from_picks([
        (name, min(high, max(low, float(values[i]))) if i < len(values) and values[i] is not None else strength)
        for i, (name, strength) in enumerate(picks)
    ])


def without(text: str, index: int) -> str:
    """Card ``index``'s Remove button: the text without that LoRA."""
    picks = picks_from_text(text)
    return text_from_picks(picks[:index] + picks[index + 1:])


def loras_text(value) -> str:
    """A recorded ``loras`` setting (the request's text, or a list of names / ``{"name", "strength"}``) as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    picks = []
    for item in value:
        if isinstance(item, dict):
            name = item.get("name") or item.get("file") or ""
            picks.append((name, item.get("strength", 1.0)))
        elif isinstance(item, (list, tuple)) and item:
            picks.append((item[0], item[1] if len(item) > 1 else 1.0))
        else:
            picks.append((str(item), 1.0))
    return text_from_picks([(n, s) for n, s in picks if n])


def with_trigger(prompt: str, word: str) -> str:
    """The prompt with a trigger word added at its end (once)."""
    prompt, word = str(prompt or "").rstrip(), str(word or "").strip()
    if not word or word in prompt:
        return prompt
    return f"{prompt}, {word}" if prompt else word


# --- what the cards show ------------------------------------------------------------------------------------

def _title(model_id: str) -> str:
    try:
        return get_spec(model_id).title
    except ValueError:
        return str(model_id)


def _label(info) -> str:
    title = str(getattr(info, "title", "") or "")
    return f"{info.name} — {title}" if title and title != info.name else info.name


def unusable_reason(lang: str, info) -> str:
    """Why a LoRA does not fit this model (the library's words, in Chinese on a Chinese page), and which models
    it does fit (three named)."""
    reason = reason_text(lang, str(getattr(info, "reason", "") or ""))
    fits = [_title(m) for m in tuple(getattr(info, "fits", ()) or ())]
    if not fits:
        return reason or t(lang, "lora_fits_nothing")
    named = ", ".join(fits[:3]) + (f" (+{len(fits) - 3})" if len(fits) > 3 else "")
    made_for = t(lang, "lora_made_for", models=named)
    return t(lang, "lora_reason_and_fits", reason=reason, made_for=made_for) if reason else made_for


def _thumbnail(path):
    """The LoRA's picture, small, in memory: Gradio serves its own copy (readable by every logged-in user)."""
    if not path:
        return None
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        logger.info("LoRA thumbnail %s not shown: %s", Path(path).name, error)
        return None


@dataclass
class Library:
    """One look at the folder for one model: the LoRAs that fit, those that do not, or why it could not be read."""

    folder: Path
    fitting: list
    unusable: list
    error: str = ""
    support: str = ""  # why the model takes no LoRAs at all ("" when it does)

    @classmethod
    def read(cls, settings, model_id: str) -> Library:
        folder = Path(loras_dir(settings))
        try:
            support = str(getattr(family_of(model_id), "LORA_SUPPORT", "") or "")
            fitting, unusable = loras_for_model(settings, model_id)
        except (OSError, ValueError) as error:  # RequestError is a ValueError
            return cls(folder, [], [], str(error))
        return cls(folder, sorted(fitting, key=lambda i: i.name.lower()), sorted(unusable, key=lambda i: i.name.lower()),
                   support=support)

    def find(self, name: str):
        """The file ``name`` names: its path in the folder, or a file name only one subfolder has."""
        key, every = lora_key(name), [*self.fitting, *self.unusable]
        exact = [info for info in every if info.name == key]
        by_file = [info for info in every if info.name.rsplit("/", 1)[-1] == key]
        return exact[0] if exact else by_file[0] if len(by_file) == 1 else None

    def choices(self) -> list[tuple[str, str]]:
        return [(_label(info), info.name) for info in self.fitting]

    def summary(self, lang: str, model_id: str) -> str:
        folder = str(self.folder.resolve())
        if self.error:
            return t(lang, "lora_scan_failed", folder=folder, error=self.error)
        if self.support:
            return t(lang, "lora_model_takes_none", model=_title(model_id), why=reason_text(lang, self.support))
        if not self.fitting and not self.unusable:
            return t(lang, "lora_empty", folder=folder)
        if not self.fitting:
            return t(lang, "lora_none_fit", count=len(self.unusable), folder=folder, model=_title(model_id))
        return t(lang, "lora_count", count=len(self.fitting), folder=folder, model=_title(model_id))

    @property
    def listed_apart(self) -> bool:
        """Whether "Not usable with this model" has something to say (not for a model that takes no LoRAs)."""
        return bool(self.unusable) and not self.support

    def unusable_list(self, lang: str) -> str:
        return "\n".join(f"- **{i.name}**: {unusable_reason(lang, i)}" for i in self.unusable)


def drawn_key(model_id: str, lang: str, text: str) -> str:
    """What a drawing of the picker was drawn from, as the hidden box holds it."""
    return f"{model_id}|{normalise_language(lang)}|{text or ''}"


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{max(1, round(size / 2**10))} KB"


def card_text(lang: str, library: Library, model_id: str, name: str, done: str = "") -> str:
    """A card's Markdown: name and title, size, a warning when it does not fit, the training tags, what a speed-up
    LoRA is made for (and ``done``, what its button set), then the trigger words' heading."""
    info = library.find(name)
    if info is None:
        return f"**{name}**\n\n" + t(lang, "lora_missing", folder=str(library.folder.resolve()))
    lines = [f"**{_label(info)}** · {_size(info.size)}"]
    if info in library.unusable:
        lines.append(t(lang, "lora_not_fit", model=_title(model_id), reason=unusable_reason(lang, info)))
    tags = list(getattr(info, "tags", None) or [])[:MAX_TAGS]
    if tags:
        lines.append(t(lang, "lora_tags", tags=", ".join(tags)))
    lines += [text for text in (speed_text(lang, info), done) if text]
    lines.append(t(lang, "lora_triggers") if getattr(info, "triggers", None) else t(lang, "lora_no_triggers"))
    return "\n\n".join(lines)


def speed_text(lang: str, info) -> str:
    speed = getattr(info, "speed", None) or {}
    if not speed.get("steps"):
        return ""
    return t(lang, "lora_speed", steps=int(speed["steps"]), guidance=format_strength(speed.get("guidance", 1.0)))


# --- the component --------------------------------------------------------------------------------------------

@dataclass
class Card:
    box: gr.Column
    image: gr.Image
    about: gr.Markdown
    triggers: list
    strength: gr.Slider
    remove: gr.Button
    speed: gr.Button

    def outputs(self) -> list:
        return [self.box, self.image, self.about, *self.triggers, self.strength, self.speed]


class LoraPicker:
    """Builds the picker where it is created (an accordion); ``wire`` connects it to the tab's controls.

    ``text`` is the component whose value the job gets (``"name:strength, ..."``).
    """

    def __init__(self, settings, translator: Translator, task: str, model_id: str):
        self.settings, self.task = settings, task
        library = Library.read(settings, model_id)
        with translator.bind(gr.Accordion("LoRAs", open=False, elem_id=f"{task}-loras"), label="lora_accordion") \
                as self.accordion:
            self.note = gr.Markdown(library.summary("en", model_id), elem_id=f"{task}-lora-note")
            with gr.Row():  # a small button under the note, on a phone too
                self.refresh = translator.bind(
                    gr.Button("Rescan", size="sm", scale=0, min_width=150, elem_id=f"{task}-lora-refresh"),
                    value="lora_refresh",
                )
            self.pick = translator.bind(
                gr.Dropdown(library.choices(), value=[], multiselect=True, allow_custom_value=True,
                            max_choices=MAX_PICKS, label="LoRAs", elem_id=f"{task}-lora-pick"),
                label="lora_pick", info="lora_pick_info",
            )
            self.cards = [self._card(translator, i) for i in range(MAX_PICKS)]
            self.text = translator.bind(
                gr.Textbox("", label="LoRAs", max_lines=3, elem_id=f"{task}-lora-text"),
                label="lora_text", info="lora_text_info",
            )
            with translator.bind(gr.Accordion("Not usable", open=False, visible=library.listed_apart,
                                              elem_id=f"{task}-lora-unusable"), label="lora_unusable") as self.apart:
                self.unusable = gr.Markdown(library.unusable_list("en"))
            # in the page (hidden), so its change follows the values the browser shows, in the order it got them
            self.drawn = gr.Textbox(drawn_key(model_id, "en", ""), visible="hidden", elem_id=f"{task}-lora-drawn")

    def _card(self, translator: Translator, index: int) -> Card:
        prefix = f"{self.task}-lora-{index}"
        with gr.Column(variant="panel", visible=False, elem_id=prefix) as box:
            with gr.Row(equal_height=False):
                image = gr.Image(None, type="pil", height=96, width=96, show_label=False, interactive=False,
                                 container=False, buttons=[], scale=0, min_width=96, visible=False)
                with gr.Column(scale=4, min_width=220):
                    about = gr.Markdown(elem_id=f"{prefix}-about")
                    with gr.Row():
                        triggers = [gr.Button("", size="sm", scale=1, min_width=100, visible=False)
                                    for _ in range(MAX_TRIGGERS)]
                with gr.Column(scale=2, min_width=180):
                    strength = translator.bind(
                        gr.Slider(*STRENGTH_RANGE, value=1.0, step=0.05, label="Strength", elem_id=f"{prefix}-strength"),
                        label="lora_strength")
                    remove = translator.bind(gr.Button("Remove", size="sm", elem_id=f"{prefix}-remove"),
                                             value="lora_remove")
                    speed = translator.bind(gr.Button("Set", size="sm", visible=False, elem_id=f"{prefix}-speed"),
                                            value="lora_speed_apply")
        return Card(box, image, about, triggers, strength, remove, speed)

    # --- drawing from the text ----------------------------------------------------------------------------

    def _view_outputs(self) -> list:
        return [self.note, self.pick, self.apart, self.unusable, *[c for card in self.cards for c in card.outputs()],
                self.drawn]

    def view(self, model_id: str, text: str, lang: str, refresh_choices: bool = True) -> list:
        """Every output of the picker drawn from ``text`` for ``model_id`` (one look at the folder)."""
        library = Library.read(self.settings, model_id)
        note = library.summary(lang, model_id)
        try:
            picks = picks_from_text(text)
        except RequestError as error:
            picks = None
            note += "\n\n" + t(lang, "lora_bad_text",
                               error=error_text(lang, error.key, dict(error.params), str(error)))
        names = [name for name, _ in picks or []]
        choices = library.choices()
        known = {value for _, value in choices}
        choices += [(name, name) for name in names if name not in known]  # shown as picked, with its warning
        if picks is None:
            pick = gr.skip()
        elif refresh_choices:
            pick = gr.update(choices=choices, value=names[:MAX_PICKS])
        else:
            pick = gr.update(value=names[:MAX_PICKS])
        if len(names) > MAX_PICKS:  # cards for the first ones; the job refuses the text as it is
            note += "\n\n" + t(lang, "lora_bad_text", error=t(lang, "err_lora_too_many", count=len(names),
                                                              limit=MAX_PICKS))
        values = [note, pick, gr.update(visible=library.listed_apart), library.unusable_list(lang)]
        for index, card in enumerate(self.cards):
            if picks is None:
                values += [gr.skip()] * len(card.outputs())
            elif index < len(picks):
                values += self._card_values(lang, library, model_id, *picks[index])
            else:
                values += [gr.update(visible=False)] + [gr.skip()] * (len(card.outputs()) - 1)
        return [*values, drawn_key(model_id, lang, text)]

    def _card_values(self, lang, library: Library, model_id: str, name: str, strength: float) -> list:
        info = library.find(name)
        triggers = list(getattr(info, "triggers", None) or [])[:MAX_TRIGGERS]
        picture = _thumbnail(getattr(info, "thumbnail", None)) if info is not None else None
        return [
            gr.update(visible=True),
            gr.update(value=picture, visible=picture is not None),
            card_text(lang, library, model_id, name),
            *[gr.update(value=triggers[i], visible=True) if i < len(triggers) else gr.update(visible=False)
              for i in range(MAX_TRIGGERS)],
            gr.update(value=strength),
            gr.update(visible=bool(info is not None and speed_text(lang, info))),
        ]

    # --- events ------------------------------------------------------------------------------------------

    def wire(self, model, prompt, steps, guidance, lang_state) -> list:
        """Connects the picker to the tab's model, prompt, steps and guidance; returns its language hook."""
        quiet = dict(api_visibility="private", show_progress="hidden")
        outputs = self._view_outputs()

        def full(model_id, text, lang):
            return self.view(model_id, text, lang)

        def after_text(model_id, text, lang):
            values = self.view(model_id, text, lang, refresh_choices=False)
            opened = gr.update(open=True) if str(text or "").strip() else gr.skip()
            return [*values, opened]

        def follow(model_id, text, drawn, lang):
            """The hidden box changed: draw again only when the cards were drawn from other text, language or model."""
            if drawn == drawn_key(model_id, lang, text):
                return [gr.skip()] * len(outputs)
            return self.view(model_id, text, lang)

        self.drawn.change(follow, [model, self.text, self.drawn, lang_state], outputs, **quiet)
        model.change(full, [model, self.text, lang_state], outputs, **quiet)
        self.refresh.click(full, [model, self.text, lang_state], outputs, **quiet)
        self.text.change(after_text, [model, self.text, lang_state], [*outputs, self.accordion], **quiet)
        self.pick.input(picked_names, [self.text, self.pick], self.text, **quiet)
        sliders = [card.strength for card in self.cards]
        for index, card in enumerate(self.cards):
            card.strength.release(self._safe(with_strengths), [self.text, *sliders], self.text, **quiet)
            card.remove.click(self._safe(functools.partial(without, index=index)), [self.text], self.text, **quiet)
            for button in card.triggers:
                button.click(with_trigger, [prompt, button], prompt, **quiet)
            card.speed.click(functools.partial(self._speed, index), [model, self.text, lang_state],
                             [steps, guidance, card.about], **quiet)
        return [(full, [model, self.text, lang_state], outputs)]

    @staticmethod
    def _safe(change):
        """A slider or Remove on text that does not parse (typed): leave the text as it is; the note says why."""

        def guarded(text, *args):
            try:
                return change(text, *args)
            except RequestError:
                return gr.skip()

        return guarded

    def _speed(self, index: int, model_id: str, text: str, lang: str):
        """A speed-up LoRA's button: steps and guidance as it was made for, said on its card."""
        try:
            name = picks_from_text(text)[index][0]
        except (RequestError, IndexError):
            return gr.skip(), gr.skip(), gr.skip()
        library = Library.read(self.settings, model_id)
        speed = getattr(library.find(name), "speed", None) or {}
        if not speed.get("steps"):
            return gr.skip(), gr.skip(), gr.skip()
        steps, guidance = int(speed["steps"]), float(speed.get("guidance", 1.0))
        done = t(lang, "lora_speed_done", steps=steps, guidance=format_strength(guidance))
        return steps, guidance, card_text(lang, library, model_id, name, done)


__all__ = ["LoraPicker", "loras_text", "picked_names", "picks_from_text", "text_from_picks", "with_strengths",
           "with_trigger", "without"]
