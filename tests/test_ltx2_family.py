"""The LTX-2 family module on its own: the tiny real pipelines make video and sound through the family's hooks,
the mp4 carries both (ffprobe), the frame and size rules, and the real-size configs (meta device)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.families import ltx2


def _request(**values):
    base = dict(prompt="a cat walking in the forest", negative_prompt="", model="ltx2-t2v", width=416, height=224,
                frames=17, steps=3, guidance=3.0, fps=24)
    return SimpleNamespace(**{**base, **values})


def _streams(path) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,sample_rate,duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"]


def _run(pipe, request, inputs=None):
    job = SimpleNamespace(cancelled=False)
    previews = []
    embeds = ltx2.encode_prompt(pipe, request, request.guidance > 1.0)
    latents = ltx2.denoise(pipe, request, embeds, 7, previews.append, job, inputs or {})
    return latents, previews


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
def test_tiny_t2v_makes_video_and_sound_into_one_mp4(tmp_path):
    from pipelines.families.ltx2 import build_ltx2_t2v
    from pipelines.media.ffmpeg import write_mp4

    pipe = build_ltx2_t2v()
    request = _request()
    latents, previews = _run(pipe, request)
    assert len(previews) == request.steps and previews[0].shape == (4, 3, 7, 13)  # (C, F, h, w) each step
    frames = ltx2.decode(pipe, latents, tiled=False)
    samples, rate = ltx2.decode_audio(pipe, latents)
    assert frames.shape == (17, 224, 416, 3) and frames.dtype == np.uint8
    assert samples.shape[0] == 2 and rate == 16000
    assert abs(samples.shape[1] / rate - 17 / 24) < 0.05  # the sound lasts as long as the frames
    assert np.abs(samples).max() > 0  # not silence
    path = tmp_path / "clip.mp4"
    write_mp4(frames, path, 24, audio=(samples, rate))
    kinds = {s["codec_type"]: s for s in _streams(path)}
    assert kinds["video"]["codec_name"] == "h264" and kinds["audio"]["codec_name"] == "aac"
    assert abs(float(kinds["audio"]["duration"]) - float(kinds["video"]["duration"])) < 0.05


def test_tiny_i2v_starts_from_the_image_and_has_sound():
    from PIL import Image

    from pipelines.families.ltx2 import build_ltx2_i2v

    pipe = build_ltx2_i2v()
    image = Image.fromarray(np.full((224, 416, 3), (200, 40, 40), np.uint8))
    request = _request(model="ltx2-i2v", frames=9, steps=2)
    latents, _ = _run(pipe, request, {"image": image})
    assert latents[0].shape == (1, 4, 2, 7, 13)
    assert ltx2.decode(pipe, latents, tiled=False).shape == (9, 224, 416, 3)
    assert ltx2.decode_audio(pipe, latents)[0].shape[0] == 2
    recompressed = ltx2.recompress(image, 33)  # H.264 at the training CRF, through the app's ffmpeg
    assert recompressed.size == (416, 224) and abs(np.asarray(recompressed).astype(int) - (200, 40, 40)).max() < 12


def test_cancel_stops_the_loop():
    from pipelines.families.ltx2 import build_ltx2_t2v

    pipe = build_ltx2_t2v()
    job = SimpleNamespace(cancelled=False)
    seen = []

    def on_latents(latents):
        seen.append(latents)
        job.cancelled = True

    request = _request(frames=9, steps=6)
    ltx2.denoise(pipe, request, ltx2.encode_prompt(pipe, request, True), 1, on_latents, job, {})
    assert len(seen) == 1


def test_frames_are_8n_plus_1_and_sizes_multiples_of_32():
    spec = ltx2.SPECS[0]
    assert ltx2.fit_frames(spec, 121) == (121, None)
    assert ltx2.fit_frames(spec, 50) == (49, "LTX-2 makes 8n+1 frames: 50 became 49.")
    assert ltx2.fit_frames(spec, 2)[0] == 9 and "2 became 9" in ltx2.fit_frames(spec, 2)[1]
    assert ltx2.fit_frames(spec, spec.max_frames - 1)[0] == spec.max_frames and (spec.max_frames - 1) % 8 == 0
    ltx2.check_size(832, 480)
    with pytest.raises(ValueError, match="not 840 x 480"):
        ltx2.check_size(840, 480)


def test_presets_and_the_distilled_schedule():
    for spec in ltx2.SPECS:
        assert all((p.frames - 1) % 8 == 0 for p in spec.presets)
    distilled = next(s for s in ltx2.SPECS if s.id == "ltx2-t2v-distilled")
    assert distilled.distilled and distilled.preset("Distilled").steps == 8 and distilled.preset("Distilled").guidance == 1.0
    assert not next(s for s in ltx2.SPECS if s.id == "ltx2-t2v").distilled
    kwargs = ltx2.call_kwargs(_request(model="ltx2-t2v-distilled", steps=8))
    assert kwargs["sigmas"] == list(ltx2.DISTILLED_SIGMAS) and kwargs["frame_rate"] == 24.0
    assert "sigmas" not in ltx2.call_kwargs(_request(model="ltx2-t2v-distilled", steps=12))
    assert "sigmas" not in ltx2.call_kwargs(_request(model="ltx2-t2v", steps=8))
    assert ltx2.call_kwargs(_request(model="ltx2-i2v", image="photo.png"))["image_crf"] == 0  # ffmpeg does it
    assert "image_crf" not in kwargs and kwargs["stg_scale"] == 0.0 and kwargs["use_cross_timestep"] is False


def test_real_size_config_builds_on_the_meta_device():
    from pipelines.bench.random_weights import parameter_count

    assert 18.8e9 < parameter_count("ltx2-t2v", "transformer") < 19.0e9  # "19B": measured 18,876,...
    assert 12.1e9 < parameter_count("ltx2-t2v", "text_encoder") < 12.3e9  # Gemma 3 12B (with its vision tower)
    assert 1.1e9 < parameter_count("ltx2-t2v", "vae") < 1.3e9
    assert parameter_count("ltx2-i2v-distilled", "vocoder") > 0 and parameter_count("ltx2-i2v", "audio_vae") > 0


def test_flops_counted_on_meta_match_the_closed_form():
    from pipelines.families import base

    transformer = base.meta_component("ltx2-t2v", "transformer")
    video, audio = ltx2.tokens(transformer.config, 121, 512, 768)
    assert (video, audio) == (16 * 24 * 16, 126)
    counted = ltx2.forward_flops(transformer, 121, 512, 768)
    closed = ltx2.forward_flops_closed_form(transformer.config, video, audio, ltx2.TEXT_TOKENS)
    assert abs(counted - closed) / counted < 0.01
    flops = ltx2.denoise_flops("ltx2-t2v", 121, 512, 768, 40, True)
    assert flops["total"] == flops["per_forward"] * 2 * 40


def test_memory_estimates_grow_with_the_clip():
    pipe = SimpleNamespace(transformer=base_transformer())
    small = SimpleNamespace(frames=49, height=480, width=832, guidance=True)
    large = SimpleNamespace(frames=121, height=704, width=1280, guidance=True)
    assert 0 < ltx2.activation_bytes(pipe, small, True) < ltx2.activation_bytes(pipe, large, True)
    assert ltx2.decode_bytes(pipe, large, tiled=True) < ltx2.decode_bytes(pipe, large, tiled=False)


def base_transformer():
    from pipelines.families import base

    return base.meta_component("ltx2-t2v", "transformer")


def _shrunk(config_for):
    """``config_for`` with LTX-2's JSON shrunk to a few narrow layers (the latent and mel layouts kept)."""

    def tiny(model_id: str) -> dict:
        config = config_for(model_id)
        config["transformer"]["config"].update(num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                               audio_num_attention_heads=2, audio_attention_head_dim=4,
                                               audio_cross_attention_dim=8, num_layers=2, caption_channels=32)
        config["connectors"]["config"].update(caption_channels=32, text_proj_in_factor=3,
                                              video_connector_num_attention_heads=4, video_connector_attention_head_dim=8,
                                              video_connector_num_layers=1, audio_connector_num_attention_heads=4,
                                              audio_connector_attention_head_dim=8, audio_connector_num_layers=1)
        config["text_encoder"]["config"]["text_config"].update(hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                                                               num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                                               query_pre_attn_scalar=8)
        config["text_encoder"]["config"]["vision_config"].update(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=2, image_size=28)
        config["text_encoder"]["config"]["mm_tokens_per_image"] = 4
        config["vae"]["config"].update(block_out_channels=[8, 16, 32, 64], decoder_block_out_channels=[8, 16, 32],
                                       layers_per_block=[1, 1, 1, 1, 1], decoder_layers_per_block=[1, 1, 1, 1])
        config["audio_vae"]["config"].update(num_res_blocks=1)  # base_channels = latent channels x mel bins / 4
        config["vocoder"]["config"].update(hidden_channels=64, resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]])
        return config

    return tiny


def test_random_weights_build_runs_through_the_worker(tmp_path, data_dir, monkeypatch):
    """``--random-weights`` builds LTX-2 from its shipped JSON (here shrunk) and a job writes video and sound."""
    import pipelines.bench.random_weights as random_weights
    from pipelines.device.worker import GPUWorker
    from pipelines.studio.settings import Settings
    from pipelines.tasks.t2v import T2VRequest
    from tests.conftest import wait_finished

    monkeypatch.setattr(random_weights, "config_for", _shrunk(random_weights.config_for))
    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, random_weights=True, device="cpu")
    worker = GPUWorker(settings)
    worker.start()
    try:
        assert worker.wait_ready(60)
        request = T2VRequest(prompt="a dog", model="ltx2-t2v", preset="Preview", resolution="480p", frames=9, steps=2,
                             guidance=4.0, fps=24, seed=3)
        job = wait_finished(worker.submit("t2v", request), 300)
    finally:
        worker.stop()
    assert job.state.value == "done", job.error
    sidecar = json.loads(open(job.result["clips"][0]["sidecar"], encoding="utf-8").read())
    assert sidecar["model"]["random_weights"] and sidecar["output"]["has_audio"] is True
    assert (sidecar["output"]["width"], sidecar["output"]["height"]) == (832, 480)


def test_load_avoids_attention_kernels_without_masks(monkeypatch, settings):
    """Flash / sage attention take no mask and LTX-2 masks its prompt: load falls back to cuDNN or SDPA,
    and never fuses q/k/v (its audio-video attention cannot)."""
    import pipelines.device.loading as loading

    seen = {}

    def loaded_with_flash(spec, settings, device, dtype, family):
        seen["fuse_qkv"] = settings.fuse_qkv
        return SimpleNamespace(pipe=ltx2.build_ltx2_t2v(), attention="flash")

    monkeypatch.setattr(loading, "load_video_pipeline", loaded_with_flash)
    model = ltx2.load(ltx2.SPECS[0], settings, "cpu", "fp32")
    assert model.attention == "sdpa" and seen["fuse_qkv"] is False  # on a CPU cuDNN attention is not usable


def test_download_skips_the_single_file_checkpoints_beside_the_diffusers_folders(monkeypatch):
    """Lightricks/LTX-2 holds its diffusers folders and, at its top, single-file checkpoints of tens of GB:
    only the folders are fetched (the distilled entry fetches its LoRA file on its own)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "download_models.py"
    module_spec = importlib.util.spec_from_file_location("download_models", path)
    download_models = importlib.util.module_from_spec(module_spec)
    monkeypatch.setitem(sys.modules, "download_models", download_models)  # its dataclasses look themselves up
    module_spec.loader.exec_module(download_models)
    files = ["model_index.json", "ltx-2-19b-dev.safetensors", "ltx-2-19b-distilled-lora-384.safetensors",
             "transformer/diffusion_pytorch_model-00001-of-00008.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    skipped = download_models.skipped_files(files)
    assert "ltx-2-19b-dev.safetensors" in skipped and not any("/" in f and f.endswith(".safetensors") for f in skipped)
    assert "model.safetensors" not in download_models.skipped_files(["config.json", "model.safetensors"])  # transformers
    distilled = next(s for s in ltx2.SPECS if s.id == "ltx2-t2v-distilled")
    assert distilled.lora_weight_name in skipped  # so it comes from the LoRA fetch, by name
