"""The text-to-video tab: controls, presets, and a generator that follows one job from queue to clip."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import gradio as gr

from pipelines.studio.jobs import JobState, RequestError
from pipelines.families.catalogue import DEFAULT_MODEL, get_spec, models_for
from pipelines.families.spec import ASPECT_RATIOS
from pipelines.tasks.t2v import DEFAULT_NEGATIVE_PROMPT, T2VRequest, presets_for, resolutions_for, validate_t2v

from .field_errors import FieldError, FieldErrors, field_error
from .i18n import Translator, error_text, request_language, t
from .i18n import model_note as catalogue_note
from .identity import cancel_handler, owner_of
from .job_status import done_message, follow_job, job_status, redraw, said, tr
from .lora_picker import LoraPicker
from .settings_view import settings_table

def _preset_values(spec, preset_name: str, demo: bool) -> dict:
    presets = presets_for(spec, demo)
    preset = next((p for p in presets if p.name == preset_name), None) or presets[0]
    return dataclasses.asdict(preset)


def preset_choices(lang: str, presets) -> list[tuple[str, str]]:
    """A preset dropdown's choices: the name in ``lang`` shown, the catalogue's name as the value."""
    return [(t(lang, f"preset_{p.name}"), p.name) for p in presets]


def note_applies(note: str, resolution: str) -> bool:
    """A "Trained at 480p; 720p works but ..." note only when the chosen resolution is above the trained one."""
    trained = re.search(r"Trained at (\d+)p", note or "")
    chosen = re.match(r"(\d+)p", str(resolution or ""))
    return not (trained and chosen) or int(chosen.group(1)) > int(trained.group(1))


def size_note(lang: str, model_id: str, resolution: str, aspect: str, frames, fps, demo: bool, duration=None) -> str:
    """The clip the settings will make (size, the real frame count after the model's rounding, seconds)."""
    try:
        spec = get_spec(model_id)
        checked = validate_t2v(
            T2VRequest(prompt="x", model=model_id, resolution=resolution, aspect=aspect, frames=frames, fps=fps,
                       duration_s=duration or None), demo=demo
        )
    except RequestError as error:  # in the reader's language, as the line under the field says it
        return f"⚠ {error_text(lang, error.key, error.params, str(error))}"
    except ValueError as error:
        return f"⚠ {error}"
    text = t(lang, "size_note", width=checked.width, height=checked.height, frames=checked.frames,
             seconds=checked.frames / checked.fps, fps=checked.fps)
    if spec.notes and note_applies(spec.notes, resolution):  # what to know about this model (Turbo: changes the output)
        text += "\n\n" + catalogue_note(lang, spec)
    return text


def build_t2v_tab(worker, settings, translator: Translator, lang_state: gr.State, forms: dict | None = None,
                  missing=None) -> list:
    """Build the tab; returns ``(fn, inputs, outputs)`` hooks to run after a language change. ``missing``
    (``ui.missing_model.MissingModelOffers``) offers the download when the job's model is not on disk."""
    demo = settings.demo
    specs = models_for("t2v")
    default_spec = get_spec(DEFAULT_MODEL["t2v"])
    start = _preset_values(default_spec, default_spec.default_preset, demo)
    # Every resolution any model offers: the API takes any of them; validation names what a model lacks.
    all_resolutions = sorted({r for s in specs for r in resolutions_for(s, demo)}, key=lambda r: int(r[:-1]))
    errors = FieldErrors("t2v")  # bad input said under its field too

    with gr.Row():
        with gr.Column(scale=5):
            with gr.Row():
                model = translator.bind(
                    gr.Dropdown([(s.title, s.id) for s in specs], value=default_spec.id, label="Model", min_width=300,
                                elem_id="t2v-model"), label="model"
                )
                preset = translator.bind(
                    gr.Dropdown(preset_choices("en", presets_for(default_spec, demo)), value=start["name"], label="Preset",
                                info=t("en", "preset_info"), allow_custom_value=True),
                    label="preset", info="preset_info",
                )
            prompt = translator.bind(
                gr.Textbox(label="Prompt", lines=3, placeholder=t("en", "prompt_placeholder"), elem_id="t2v-prompt"),
                label="prompt", placeholder="prompt_placeholder",
            )
            errors.place(prompt=prompt)
            with gr.Row():
                generate = translator.bind(gr.Button("Generate", variant="primary", elem_id="t2v-generate"), value="generate")
                stop = translator.bind(gr.Button("Stop", variant="stop", elem_id="t2v-stop", interactive=False), value="stop")
            status = gr.Markdown("", elem_id="t2v-status")  # progress, the result, or what is wrong, by Generate
            offer = missing.place("t2v") if missing else None
            with gr.Row():
                resolution = translator.bind(
                    gr.Radio(all_resolutions, value=start["resolution"], label="Resolution"),
                    label="resolution",
                )
                aspect = translator.bind(gr.Radio(list(ASPECT_RATIOS), value="16:9", label="Aspect ratio"), label="aspect")
            errors.place(resolution=resolution, aspect=aspect)
            with gr.Row():
                frames = translator.bind(
                    gr.Number(value=start["frames"], precision=0, label="Number of frames", info=t("en", "frames_info"),
                              elem_id="t2v-frames"),
                    label="frames", info="frames_info",
                )
                duration = translator.bind(gr.Number(value=0, label="Duration", minimum=0, elem_id="t2v-duration"),
                                           label="duration", info="duration_info")
            errors.place(frames=frames, duration=duration)
            note = gr.Markdown(elem_id="t2v-size-note", value=size_note("en", default_spec.id, start["resolution"], "16:9", start["frames"], default_spec.fps, demo))
            picker = LoraPicker(settings, translator, "t2v", default_spec.id)
            errors.place(loras=(picker.text, picker.accordion))
            with translator.bind(gr.Accordion("Advanced settings", open=False), label="advanced"):
                negative = translator.bind(gr.Textbox(value=DEFAULT_NEGATIVE_PROMPT, label="Negative prompt", lines=2),
                                           label="negative_prompt", info="negative_info")
                with gr.Row():
                    steps = translator.bind(gr.Slider(1, 100, value=start["steps"], step=1, label="Steps"), label="steps")
                    guidance = translator.bind(gr.Slider(0, 15, value=start["guidance"], step=0.5, label="Guidance"),
                                               label="guidance")
                    shift = translator.bind(gr.Slider(0.5, 20, value=start["shift"], step=0.5, label="Flow shift"),
                                            label="shift")
                with gr.Row():
                    seed = translator.bind(gr.Number(value=-1, precision=0, label="Seed"), label="seed")
                    fps = translator.bind(gr.Slider(4, 30, value=default_spec.fps, step=1, label="FPS"), label="fps")
                    clips = translator.bind(gr.Slider(1, 8, value=1, step=1, label="Clips"), label="clips")
                step_cache = translator.bind(
                    gr.Slider(0, 0.5, value=0, step=0.01, label="Step cache", info=t("en", "step_cache_info"),
                              elem_id="t2v-step-cache"),
                    label="step_cache", info="step_cache_info",
                )
        with gr.Column(scale=4):
            # the API still returns a preview; the page shows the running job's in the live panel only
            preview = gr.Image(label="Preview", type="numpy", interactive=False, visible=False)
            video = translator.bind(gr.Video(label="Clip", interactive=False, elem_id="t2v-video", autoplay=True, loop=True),
                                    label="video")
            used_seed = translator.bind(gr.Textbox(label="Seed used", interactive=False), label="used_seed")
            files = translator.bind(gr.File(label="Files", file_count="multiple", interactive=False), label="files")
            with translator.bind(gr.Accordion("Settings", open=False), label="job_settings"):
                table = gr.Markdown(elem_id="t2v-settings")
                with translator.bind(gr.Accordion("As JSON", open=False), label="settings_json"):
                    recorded = gr.Code(language="json", interactive=False, max_lines=24, show_label=False)
    job_id = gr.State("")

    # --- presets and size -----------------------------------------------------------------------------

    def on_model(model_id: str, lang: str):
        spec = get_spec(model_id)
        values = _preset_values(spec, spec.default_preset, demo)
        return (
            gr.update(choices=preset_choices(lang, presets_for(spec, demo)), value=values["name"]),
            values["resolution"],
            values["frames"],
            values["steps"], values["guidance"], values["shift"], spec.fps,
        )

    def on_preset(model_id: str, preset_name: str):
        values = _preset_values(get_spec(model_id), preset_name, demo)
        return values["resolution"], values["frames"], values["steps"], values["guidance"], values["shift"]

    model.input(on_model, [model, lang_state], [preset, resolution, frames, steps, guidance, shift, fps],
                api_visibility="private")
    preset.input(on_preset, [model, preset], [resolution, frames, steps, guidance, shift], api_visibility="private")
    def note_for(m, r, a, f, s, lang, seconds=None):
        return size_note(lang, m, r, a, f, s, demo, seconds)

    note_inputs = [model, resolution, aspect, frames, fps, lang_state, duration]
    for component in (model, resolution, aspect, frames, fps, duration):
        component.change(note_for, note_inputs, note, api_visibility="private", show_progress="hidden")

    def frames_for(model_id, seconds, frame_rate, n_frames):
        """Duration typed: the frame count it gives under the model's rule (Wan: 4n+1), shown at once."""
        try:
            return validate_t2v(T2VRequest(prompt="x", model=model_id, frames=n_frames, fps=frame_rate,
                                           duration_s=seconds or None), demo=demo).frames
        except (RequestError, ValueError):
            return gr.skip()  # the note says what is wrong with the value

    duration.input(frames_for, [model, duration, fps, frames], frames, api_visibility="private", show_progress="hidden")
    frames.input(lambda: 0, None, duration, api_visibility="private", show_progress="hidden")  # frames typed: they rule
    fps.input(frames_for, [model, duration, fps, frames], frames, api_visibility="private", show_progress="hidden")
    recorded.change(settings_table, [recorded, lang_state], table, api_visibility="private", show_progress="hidden")
    lora_hooks = picker.wire(model, prompt, steps, guidance, lang_state)

    # --- the job --------------------------------------------------------------------------------------

    def run(model_id, preset_name, prompt_text, negative_text, res, asp, n_frames, seconds, n_steps, cfg, flow_shift,
            seed_value, frame_rate, n_clips, lang, step_cache_threshold=0.0, loras="", request: gr.Request = None):
        lang = request_language(lang, request)
        t2v_request = T2VRequest(
            prompt=prompt_text, negative_prompt=negative_text or "", model=model_id, preset=preset_name or "",
            resolution=res, aspect=asp, frames=n_frames, duration_s=seconds or None, steps=n_steps, guidance=cfg,
            shift=flow_shift, seed=-1 if seed_value in (None, "") else seed_value, fps=frame_rate, clips=n_clips,
            step_cache=step_cache_threshold or 0.0, loras=loras or "",
        )
        try:
            t2v_request = validate_t2v(t2v_request, demo=demo, settings=settings)  # fail fast (LoRAs too)
            job = worker.submit("t2v", t2v_request, owner=owner_of(request))
        except RequestError as error:
            raise field_error(error_text(lang, error.key, error.params, str(error)), error)
        skip = gr.skip()
        yield job_status(lang, job, worker.position(job)), job.id, None, skip, skip, str(t2v_request.seed), skip
        for fresh in follow_job(job):
            yield job_status(lang, job, worker.position(job)), skip, skip if fresh is None else fresh, skip, skip, skip, skip
        if job.state == JobState.CANCELLED:
            yield said(lang, tr("status_cancelled")), "", skip, skip, skip, skip, skip
            return
        if job.state == JobState.FAILED:
            raise FieldError(error_text(lang, job.error_key, job.error_params, job.error), job.error_key,
                             job.error_params, job.error)
        result = job.result
        outputs = [c["video"] for c in result["clips"]] + [c["sidecar"] for c in result["clips"]]
        last = result["clips"][-1]
        sidecar = Path(last["sidecar"]).read_text(encoding="utf-8")
        message = done_message(lang, job, len(result["clips"]), str(Path(last["video"]).parent), result.get("notes"))
        yield message, "", skip, last["video"], outputs, str(last["seed"]), sidecar

    inputs = [model, preset, prompt, negative, resolution, aspect, frames, duration, steps, guidance, shift, seed, fps,
              clips, lang_state, step_cache, picker.text]
    outputs = [status, job_id, preview, video, files, used_seed, recorded]
    # The API raises its errors; the page writes them by Generate, and arms Stop only while its job runs.
    api_trigger = gr.Button(visible=False)
    api_trigger.click(run, inputs, outputs, api_name="t2v", concurrency_limit=32, concurrency_id="t2v-wait",
                      show_progress="minimal")  # handlers only wait on the GPU worker's queue (one job at a time)
    field_hooks = errors.wire(lang_state)
    shown_status = gr.State(None)  # the status line's parts: said again on a language switch
    generated = generate.click(errors.twin(run, len(outputs), keep=True), inputs, [*outputs, stop, shown_status, errors.state],
                               api_visibility="private",
                               concurrency_limit=32, concurrency_id="t2v-wait", show_progress="hidden")
    if offer is not None:
        missing.follow(offer, generated, job_id, lang_state)

    cancel = cancel_handler(worker)

    stop.click(cancel, [job_id], None, api_name="cancel", queue=False)
    if forms is not None:  # for the History tab's "Reuse settings": request field -> component
        forms["t2v"] = {"model": model, "preset": preset, "prompt": prompt, "negative_prompt": negative,
                        "resolution": resolution, "aspect": aspect, "frames": frames, "steps": steps,
                        "guidance": guidance, "shift": shift, "seed": seed, "fps": fps, "loras": picker.text}
    def relabel_presets(model_id, lang):
        return gr.update(choices=preset_choices(lang, presets_for(get_spec(model_id), demo)))

    return [(note_for, note_inputs, [note]), (relabel_presets, [model, lang_state], [preset]),
            (settings_table, [recorded, lang_state], [table]), *lora_hooks, *field_hooks,
            (redraw, [shown_status, lang_state], [status])]
