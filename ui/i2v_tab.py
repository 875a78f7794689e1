"""The image-to-video tab: an image, a prompt, a preset; the frame size shown before running; one job followed
from queue to clip. Laid out like the text-to-video tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines.tasks.i2v import ASPECTS, I2VRequest, check_i2v, default_negative_prompt, presets_for, preset_for
from pipelines.tasks.i2v import resolutions_for, uses_flow_shift, validate_i2v
from pipelines.media.images import aspect_value, fit_image, last_frame, output_size, thumbnail
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.paths import user_file
from pipelines.families.catalogue import DEFAULT_MODEL, family_of, get_spec, models_for
from pipelines.families.spec import I2V_MAX_AREA

from .field_errors import FieldError, FieldErrors, field_error
from .i18n import Translator, error_text, request_language, t
from .i18n import model_note as catalogue_note
from .identity import cancel_handler, owner_of
from .job_status import done_message, follow_job, job_status, page_twin, redraw, said, tr
from .lora_picker import LoraPicker
from .settings_view import settings_table
from .t2v_tab import preset_choices

RECENT_CLIPS = 30


def _error(lang: str, error: RequestError) -> str:
    """A RequestError in the reader's language; names which image (image / last frame) in that language too."""
    return _error_from(lang, error.key, dict(error.params), str(error))


def _error_from(lang: str, key: str, params: dict, fallback: str) -> str:
    if "what" in params:
        params = {**params, "what": t(lang, f"i2v_what_{params['what']}")}
    return error_text(lang, key, params, fallback)


def _aspect_choices(lang: str) -> list:
    return [(t(lang, "i2v_aspect_image"), "image")] + [(a, a) for a in ASPECTS if a != "image"]


def _fit_choices(lang: str) -> list:
    return [(t(lang, "i2v_fit_crop"), "crop"), (t(lang, "i2v_fit_pad"), "pad")]


def size_note(lang: str, image_path, model_id: str, resolution: str, aspect: str, fit: str, frames, fps, demo: bool):
    """The size note under the controls and the first frame as the clip will start (or None)."""
    try:
        spec = get_spec(model_id)
        if not image_path:  # no image yet: the size a 16:9 photo (or the chosen ratio) would get
            preset = preset_for(spec, "", demo)
            allowed = resolutions_for(spec, demo)
            if resolution not in allowed:
                raise RequestError(f"{spec.title} offers {', '.join(allowed)}, not {resolution!r}.",
                                   key="i2v_resolution", model=spec.title, value=str(resolution),
                                   allowed=", ".join(allowed))
            ratio = aspect_value("16:9" if aspect in ("", "image", None) else aspect, 16, 9)
            width, height = output_size(ratio, I2V_MAX_AREA[resolution], spec.extra.get("size_multiple", 16))
            count = int(frames) if frames not in (None, "") else preset.frames
            rate = int(fps) if fps not in (None, "", 0) else spec.fps
            text = t(lang, "i2v_size_no_image", resolution=resolution, width=width, height=height, frames=count,
                     seconds=count / rate, fps=rate)
            picture = None
        else:
            checked, source, _ = check_i2v(
                I2VRequest(image=image_path, prompt="x", model=model_id, resolution=resolution, aspect=aspect, fit=fit,
                           frames=frames, fps=fps), demo=demo)
            same_shape = abs((source.height / source.width) / (checked.height / checked.width) - 1) < 0.01
            how = "resized" if same_shape else ("cropped" if checked.fit == "crop" else "padded")
            text = t(lang, "i2v_size_note", width=checked.width, height=checked.height, how=t(lang, f"i2v_how_{how}"),
                     source_width=source.width, source_height=source.height, frames=checked.frames,
                     seconds=checked.frames / checked.fps, fps=checked.fps)
            picture = thumbnail(fit_image(source.image, (checked.width, checked.height), checked.fit))
    except RequestError as error:
        return f"⚠ {_error(lang, error)}", None
    except (ValueError, TypeError) as error:
        return f"⚠ {error}", None
    if spec.notes:  # what to know about this model (Turbo: it changes the output)
        text += "\n\n" + catalogue_note(lang, spec)
    return text, picture


def recent_clips(outputs_dir: Path, limit: int = RECENT_CLIPS) -> list[tuple[str, str]]:
    """The newest clips under ``outputs_dir`` as (label, path), newest first."""
    root = Path(outputs_dir)
    if not root.is_dir():
        return []
    dated = []
    for path in root.glob("*/*.mp4"):
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError:  # removed while we looked
            continue
    dated.sort(reverse=True)
    return [(f"{p.parent.name} / {p.name}", str(p)) for _, p in dated[:limit]]


def build_i2v_tab(worker, settings, translator: Translator, lang_state: gr.State, forms: dict | None = None,
                  missing=None) -> list:
    """Build the tab; returns ``(fn, inputs, outputs)`` hooks to run after a language change. ``missing``
    (``ui.missing_model.MissingModelOffers``) offers the download when the job's model is not on disk."""
    demo = settings.demo
    specs = models_for("i2v")
    default_spec = get_spec(DEFAULT_MODEL["i2v"])
    start = preset_for(default_spec, default_spec.default_preset, demo)
    # Every resolution any model offers: the API takes any of them; validation names what a model lacks.
    all_resolutions = sorted({r for s in specs for r in resolutions_for(s, demo)}, key=lambda r: int(r[:-1]))
    errors = FieldErrors("i2v", translate=_error_from)  # bad input said under its field too

    with gr.Row():
        with gr.Column(scale=5):
            with gr.Row():
                model = translator.bind(
                    gr.Dropdown([(s.title, s.id) for s in specs], value=default_spec.id, label="Model",
                                elem_id="i2v-model", min_width=300), label="model"
                )
                preset = translator.bind(
                    gr.Dropdown(preset_choices("en", presets_for(default_spec, demo)), value=start.name, label="Preset",
                                info=t("en", "preset_info"), allow_custom_value=True, elem_id="i2v-preset"),
                    label="preset", info="preset_info",
                )
            with gr.Row(equal_height=True):
                image = translator.bind(
                    gr.File(label=t("en", "i2v_image"), file_count="single", type="filepath", elem_id="i2v-image",
                            height=180),
                    label="i2v_image",
                )
                frame = translator.bind(
                    gr.Image(label=t("en", "i2v_frame"), type="pil", height=180, interactive=False,
                             elem_id="i2v-frame"),
                    label="i2v_frame",
                )
            errors.place(image=image)
            prompt = translator.bind(
                gr.Textbox(label=t("en", "i2v_prompt"), lines=3, placeholder=t("en", "i2v_prompt_placeholder"),
                           elem_id="i2v-prompt"),
                label="i2v_prompt", placeholder="i2v_prompt_placeholder",
            )
            errors.place(prompt=prompt)
            with gr.Row():
                generate = translator.bind(gr.Button("Generate", variant="primary", elem_id="i2v-generate"),
                                           value="generate")
                stop = translator.bind(gr.Button("Stop", variant="stop", elem_id="i2v-stop", interactive=False),
                                       value="stop")
            status = gr.Markdown("", elem_id="i2v-status")  # progress, the result, or what is wrong, by Generate
            offer = missing.place("i2v") if missing else None
            with gr.Row():
                resolution = translator.bind(
                    gr.Radio(all_resolutions, value=start.resolution, label="Resolution",
                             info=t("en", "i2v_resolution_info"), elem_id="i2v-resolution"),
                    label="resolution", info="i2v_resolution_info",
                )
                aspect = translator.bind(
                    gr.Radio(_aspect_choices("en"), value="image", label="Aspect ratio", elem_id="i2v-aspect"),
                    label="aspect",
                )
                fit = translator.bind(
                    gr.Radio(_fit_choices("en"), value="crop", label=t("en", "i2v_fit"), info=t("en", "i2v_fit_info"),
                             elem_id="i2v-fit"),
                    label="i2v_fit", info="i2v_fit_info",
                )
            errors.place(resolution=resolution, aspect=aspect, fit=fit)
            with gr.Row():
                frames = translator.bind(
                    gr.Number(value=start.frames, precision=0, label="Number of frames", info=t("en", "i2v_frames_info")),
                    label="frames", info="i2v_frames_info",
                )
                duration = translator.bind(gr.Number(value=0, label="Duration", minimum=0, elem_id="i2v-duration"),
                                           label="duration", info="duration_info")
            errors.place(frames=frames, duration=duration)
            start_note, _ = size_note("en", None, default_spec.id, start.resolution, "image", "crop", start.frames,
                                      default_spec.fps, demo)
            note = gr.Markdown(start_note, elem_id="i2v-size")
            with translator.bind(gr.Accordion("Continue from a clip", open=False), label="i2v_continue"):
                with gr.Row():
                    recent = translator.bind(
                        gr.Dropdown(recent_clips(settings.outputs_dir), value=None, label=t("en", "i2v_recent"),
                                    info=t("en", "i2v_recent_info"), elem_id="i2v-recent", scale=3),
                        label="i2v_recent", info="i2v_recent_info",
                    )
                    use_last = translator.bind(gr.Button("Use its last frame", elem_id="i2v-use-last", scale=1),
                                               value="i2v_use_last")
            with translator.bind(
                gr.Accordion("End on a given frame", open=False, visible=bool(default_spec.extra.get("last_frame"))),
                label="i2v_last_accordion",
            ) as last_group:
                last_image = translator.bind(
                    gr.File(label=t("en", "i2v_last_image"), file_count="single", type="filepath",
                            elem_id="i2v-last-image", height=120),
                    label="i2v_last_image",
                )
                errors.place(last_frame=last_image)
            picker = LoraPicker(settings, translator, "i2v", default_spec.id)
            errors.place(loras=(picker.text, picker.accordion))
            with translator.bind(gr.Accordion("Advanced settings", open=False), label="advanced"):
                negative = translator.bind(
                    gr.Textbox(value=default_negative_prompt(default_spec), label="Negative prompt", lines=2),
                    label="negative_prompt", info="negative_info",
                )
                with gr.Row():
                    steps = translator.bind(gr.Slider(1, 100, value=start.steps, step=1, label="Steps"), label="steps")
                    guidance = translator.bind(gr.Slider(0, 15, value=start.guidance, step=0.5, label="Guidance"),
                                               label="guidance")
                    shift = translator.bind(
                        gr.Slider(0, 20, value=start.shift, step=0.5, label="Flow shift",
                                  interactive=uses_flow_shift(default_spec)),
                        label="shift",
                    )
                with gr.Row():
                    seed = translator.bind(gr.Number(value=-1, precision=0, label="Seed"), label="seed")
                    fps = translator.bind(gr.Slider(4, 30, value=default_spec.fps, step=1, label="FPS"), label="fps")
                    clips = translator.bind(gr.Slider(1, 8, value=1, step=1, label="Clips"), label="clips")
                step_cache = translator.bind(
                    gr.Slider(0, 0.5, value=0, step=0.01, label="Step cache", info=t("en", "step_cache_info"),
                              elem_id="i2v-step-cache"),
                    label="step_cache", info="step_cache_info",
                )
        with gr.Column(scale=4):
            # the API still returns a preview; the page shows the running job's in the live panel only
            preview = gr.Image(label="Preview", type="numpy", interactive=False, visible=False)
            video = translator.bind(gr.Video(label="Clip", interactive=False, elem_id="i2v-video", autoplay=True,
                                             loop=True), label="video")
            used_seed = translator.bind(gr.Textbox(label="Seed used", interactive=False), label="used_seed")
            files = translator.bind(gr.File(label="Files", file_count="multiple", interactive=False), label="files")
            with translator.bind(gr.Accordion("Settings", open=False), label="job_settings"):
                table = gr.Markdown(elem_id="i2v-settings")
                with translator.bind(gr.Accordion("As JSON", open=False), label="settings_json"):
                    recorded = gr.Code(language="json", interactive=False, max_lines=24, show_label=False)
    job_id = gr.State("")
    private = dict(api_visibility="private", show_progress="hidden")

    # --- presets, size and the first frame ----------------------------------------------------------

    defaults = {default_negative_prompt(s) for s in specs} | {""}

    def on_model(model_id: str, current_negative: str, lang: str):
        spec = get_spec(model_id)
        values = preset_for(spec, spec.default_preset, demo)
        can_end = bool(spec.extra.get("last_frame"))
        return (
            gr.update(choices=preset_choices(lang, presets_for(spec, demo)), value=values.name),
            values.resolution, values.frames, values.steps, values.guidance,
            gr.update(value=values.shift, interactive=uses_flow_shift(spec)),
            spec.fps,
            default_negative_prompt(spec) if (current_negative or "") in defaults else gr.skip(),
            gr.update(visible=can_end),
            gr.skip() if can_end else None,
        )

    def on_preset(model_id: str, preset_name: str):
        values = preset_for(get_spec(model_id), preset_name, demo)
        return values.resolution, values.frames, values.steps, values.guidance, values.shift

    model.input(on_model, [model, negative, lang_state],
                [preset, resolution, frames, steps, guidance, shift, fps, negative, last_group, last_image], **private)
    preset.input(on_preset, [model, preset], [resolution, frames, steps, guidance, shift], **private)

    def note_for(image_path, m, r, a, f, n, s, lang):
        return size_note(lang, image_path, m, r, a, f, n, s, demo)

    note_inputs = [image, model, resolution, aspect, fit, frames, fps, lang_state]
    for component in (image, model, resolution, aspect, fit, frames, fps):
        component.change(note_for, note_inputs, [note, frame], **private)

    def frames_for(model_id, seconds, frame_rate):
        """Duration typed: the frame count it gives under the model's rule (Wan: 4n+1), shown at once."""
        try:
            spec, family = get_spec(model_id), family_of(model_id)
            wanted = round(float(seconds) * int(frame_rate or spec.fps))
            if wanted <= 0:
                return gr.skip()
            return family.fit_frames(spec, min(spec.max_frames, max(family.MIN_FRAMES, wanted)))[0]
        except (ValueError, TypeError, AttributeError):
            return gr.skip()

    duration.input(frames_for, [model, duration, fps], frames, **private)
    fps.input(frames_for, [model, duration, fps], frames, **private)
    frames.input(lambda: 0, None, duration, **private)  # frames typed: they rule

    # --- continue from an earlier clip ----------------------------------------------------------------

    def refresh_recent(current):
        choices = recent_clips(settings.outputs_dir)
        paths = [path for _, path in choices]
        return gr.update(choices=choices, value=current if current in paths else None)

    def take_last_frame(clip: str, lang: str, request: gr.Request):
        lang = request_language(lang, request)
        if not clip:
            raise gr.Error(_error_from(lang, "i2v_image_missing", {"what": "image", "name": ""},
                                       "Pick a clip first."), print_exception=False)
        clip_path = Path(clip).resolve()
        root = settings.outputs_dir.resolve()
        if root not in clip_path.parents or clip_path.suffix != ".mp4" or not clip_path.is_file():
            raise gr.Error(_error_from(lang, "i2v_image_gone", {"what": "image", "name": Path(clip).name},
                                       f"{Path(clip).name} is not a clip in the outputs folder."),
                           print_exception=False)
        target = clip_path.with_name(f"{clip_path.stem}_lastframe.png")
        try:
            if not target.is_file():
                last_frame(clip_path, target)
        except RequestError as error:
            raise gr.Error(_error(lang, error), print_exception=False)
        return str(target), gr.skip()

    recent.focus(refresh_recent, [recent], [recent], **private)
    # a clip that cannot give its frame is said in the size note, not as a badge on the image box
    use_last.click(page_twin(take_last_frame, 2, stop=False, at=1), [recent, lang_state], [image, note], **private)

    # --- the job --------------------------------------------------------------------------------------

    def run(image_path, last_path, model_id, preset_name, prompt_text, negative_text, res, asp, fit_mode, n_frames,
            seconds, n_steps, cfg, flow_shift, seed_value, frame_rate, n_clips, lang, step_cache_threshold=0.0,
            loras="", request: gr.Request = None):
        lang = request_language(lang, request)
        try:  # no path from the API may leave the app's folders (Gradio already keeps them in its uploads)
            image_path, last_path = user_file(image_path, settings, "image"), user_file(last_path, settings, "last frame")
        except RequestError as error:
            raise field_error(_error(lang, error), error)
        spec_id = model_id or DEFAULT_MODEL["i2v"]
        i2v_request = I2VRequest(
            image=image_path, last_image=last_path or None, prompt=prompt_text,
            negative_prompt=negative_text, model=spec_id,  # None (API): the model's own
            preset=preset_name or "", resolution=res or "", aspect=asp or "image", fit=fit_mode or "crop",
            frames=n_frames, duration_s=seconds or None, steps=n_steps, guidance=cfg, shift=flow_shift,
            seed=-1 if seed_value in (None, "") else seed_value, fps=frame_rate, clips=n_clips or 1,
            step_cache=step_cache_threshold or 0.0, loras=loras or "",
        )
        try:
            i2v_request = validate_i2v(i2v_request, demo=demo, settings=settings)  # fail fast (LoRAs too)
            job = worker.submit("i2v", i2v_request, owner=owner_of(request))
        except RequestError as error:
            raise field_error(_error(lang, error), error)
        skip = gr.skip()
        yield job_status(lang, job, worker.position(job)), job.id, None, skip, skip, str(i2v_request.seed), skip
        for fresh in follow_job(job):
            yield job_status(lang, job, worker.position(job)), skip, skip if fresh is None else fresh, skip, skip, skip, skip
        if job.state == JobState.CANCELLED:
            yield said(lang, tr("status_cancelled")), "", skip, skip, skip, skip, skip
            return
        if job.state == JobState.FAILED:
            raise FieldError(_error_from(lang, job.error_key, dict(job.error_params), job.error), job.error_key,
                             job.error_params, job.error)
        result = job.result
        outputs = [c["video"] for c in result["clips"]] + [c["sidecar"] for c in result["clips"]] + [result["input"]]
        last = result["clips"][-1]
        sidecar = Path(last["sidecar"]).read_text(encoding="utf-8")
        message = done_message(lang, job, len(result["clips"]), str(Path(last["video"]).parent), result.get("notes"))
        yield message, "", skip, last["video"], outputs, str(last["seed"]), sidecar

    inputs = [image, last_image, model, preset, prompt, negative, resolution, aspect, fit, frames, duration, steps,
              guidance, shift, seed, fps, clips, lang_state, step_cache, picker.text]
    outputs = [status, job_id, preview, video, files, used_seed, recorded]
    # The API raises its errors; the page writes them by Generate, and arms Stop only while its job runs.
    api_trigger = gr.Button(visible=False)
    api_trigger.click(run, inputs, outputs, api_name="i2v", concurrency_limit=32, concurrency_id="i2v-wait",
                      show_progress="minimal")  # handlers only wait on the GPU worker's queue (one job at a time)
    field_hooks = errors.wire(lang_state)
    shown_status = gr.State(None)  # the status line's parts: said again on a language switch
    generated = generate.click(errors.twin(run, len(outputs), keep=True), inputs, [*outputs, stop, shown_status, errors.state],
                               api_visibility="private",
                               concurrency_limit=32, concurrency_id="i2v-wait", show_progress="hidden")
    generated.then(refresh_recent, [recent], [recent], **private)
    if offer is not None:
        missing.follow(offer, generated, job_id, lang_state)
    recorded.change(settings_table, [recorded, lang_state], table, **private)
    lora_hooks = picker.wire(model, prompt, steps, guidance, lang_state)

    cancel = cancel_handler(worker)

    stop.click(cancel, [job_id], None, api_visibility="private", queue=False)

    def relabel_choices(lang: str, current_aspect: str, current_fit: str):
        return (gr.update(choices=_aspect_choices(lang), value=current_aspect),
                gr.update(choices=_fit_choices(lang), value=current_fit))

    if forms is not None:  # for the History tab's "Reuse settings": request field -> component
        forms["i2v"] = {"model": model, "preset": preset, "image": image, "prompt": prompt, "negative_prompt": negative,
                        "resolution": resolution, "aspect": aspect, "fit": fit, "frames": frames, "steps": steps,
                        "guidance": guidance, "shift": shift, "seed": seed, "fps": fps,
                        "loras": picker.text}
    def relabel_presets(model_id, lang):
        return gr.update(choices=preset_choices(lang, presets_for(get_spec(model_id), demo)))

    return [
        (note_for, note_inputs, [note, frame]),
        (relabel_choices, [lang_state, aspect, fit], [aspect, fit]),
        (relabel_presets, [model, lang_state], [preset]),
        (settings_table, [recorded, lang_state], [table]),
        *lora_hooks,
        *field_hooks,
        (redraw, [shown_status, lang_state], [status]),
    ]
