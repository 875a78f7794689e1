"""Command line, settings, i18n tables and previews."""

from __future__ import annotations

import numpy as np
import pytest

import app
from pipelines.media.preview import latents_to_rgb
from pipelines.studio.settings import Settings
from ui.i18n import STRINGS, error_text, normalise_language, t


def test_defaults_are_what_users_expect():
    args = app.parse_args([])
    assert (args.host, args.port, args.device, args.dtype, args.attention, args.offload) == (
        "127.0.0.1", 7860, "auto", "auto", "auto", "none")
    settings = app.settings_from_args(app.parse_args(["--demo", "--preload", "t2v", "--gpu-memory", "20"]))
    assert settings.demo and settings.preload == ("t2v",) and settings.gpu_memory_gb == 20


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="preload"):
        Settings(preload=("paint",))
    with pytest.raises(ValueError, match="gpu_memory"):
        Settings(gpu_memory_gb=-1)
    with pytest.raises(SystemExit):
        app.parse_args(["--device", "tpu"])


def test_auth_from_flag_and_file(tmp_path):
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("# team\nana:secret:with:colons\n\nbo:pw\n", encoding="utf-8")
    assert app.read_auth("me:pw", auth_file) == [("me", "pw"), ("ana", "secret:with:colons"), ("bo", "pw")]
    assert app.read_auth(None, None) is None
    with pytest.raises(SystemExit):
        app.read_auth("nopassword", None)


def test_every_text_exists_in_both_languages():
    assert set(STRINGS["en"]) == set(STRINGS["zh"])
    for key, text in STRINGS["en"].items():
        # the same placeholders in both languages, so formatting never fails in one of them
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        assert fields == {f for _, f, _, _ in string.Formatter().parse(STRINGS["zh"][key]) if f}, key


def test_every_model_note_has_a_chinese_version():
    from pipelines.families.catalogue import CATALOGUE
    from ui.i18n import model_note

    for spec in CATALOGUE.values():
        if spec.notes:
            assert model_note("en", spec) == spec.notes
            assert model_note("zh", spec) != spec.notes, f"{spec.id}: note not translated"


def test_language_choice_and_translated_errors():
    assert [normalise_language(x) for x in ("zh-CN", "zh-Hans", "ZH", "en-US", "", None, "fr")] == [
        "zh", "zh", "zh", "en", "en", "en", "en"]
    assert t("zh", "generate") == "生成"
    assert error_text("zh", "frames_range", {"low": 1, "high": 161, "value": 0}, "x") == "帧数必须在 1 到 161 之间，而不是 0。"
    assert error_text("zh", "unknown_key", {}, "original") == "original"


def test_latent_preview_is_a_small_rgb_strip():
    latents = np.random.default_rng(0).standard_normal((16, 9, 30, 52)).astype(np.float32)
    image = latents_to_rgb(latents, upscale=2)
    assert image.dtype == np.uint8 and image.shape == (2 * 60, 2 * 104, 3)  # 2x2 grid of upscaled frames
    assert image.std() > 0
    wide = latents_to_rgb(np.random.default_rng(0).standard_normal((48, 2, 8, 8)).astype(np.float32))
    assert wide.shape == (8, 16, 3)  # fewer than four frames: a strip


def test_live_preview_follows_the_running_job_and_clears_after():
    import gradio as gr

    from ui.live_panel import live_preview

    picture = np.zeros((4, 4, 3), np.uint8)
    update, shown = live_preview(picture, None)
    assert update is picture and shown == id(picture)
    update, shown = live_preview(picture, shown)  # same picture: nothing to send
    assert isinstance(update, type(gr.skip())) and shown == id(picture)
    update, shown = live_preview(None, shown)  # the job ended (or the next one has no preview): clear once
    assert update is None and shown is None
    update, shown = live_preview(None, shown)
    assert isinstance(update, type(gr.skip())) and shown is None


def test_every_handler_takes_the_inputs_it_is_given(tmp_path):
    """Gradio warns when a handler's signature does not match its inputs (for example a ``gr.Request``
    annotation it cannot resolve); such a handler fails when called, so building the page must not warn."""
    import warnings

    from pipelines.studio.settings import Settings
    from pipelines.device.worker import GPUWorker
    from ui.app import build_demo

    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", demo=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_demo(GPUWorker(settings), settings, None)
    mismatched = [str(w.message) for w in caught if "arguments for function" in str(w.message)]
    assert mismatched == []
