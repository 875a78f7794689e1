"""The fast path keeps the output: the same seed gives the same latents and frames, within a stated tolerance,
with and without each output-preserving optimisation (tiny real WanPipeline on the CPU, fp32). The ones that
change the output (step cache, fp8) say so in the sidecar.

Tolerance: latents max |difference| <= 1e-4 (their magnitude is ~1), decoded uint8 frames max |difference|
<= 1 level. On the CPU in fp32 the differences come only from a different order of the same additions.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import pytest
import torch

from pipelines.device import attention

from pipelines.device import fastpath
from pipelines.families.demo import build_wan_t2v
from pipelines.studio.jobs import JobState, RequestError
from pipelines.device.loading import LoadedModel
from pipelines.families.catalogue import get_spec
from pipelines.tasks.t2v import T2VRequest, validate_t2v
from pipelines.families.wan import decode_latents as decode_wan_latents
from tests.conftest import wait_finished

LATENT_TOLERANCE = 1e-4
FRAME_TOLERANCE = 1  # uint8 levels
SMALL = dict(resolution="240p", aspect="16:9", frames=9, steps=3)


@pytest.fixture(scope="module")
def pipe():
    pipe = build_wan_t2v()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _embeds(pipe):
    with torch.no_grad():
        return pipe.encode_prompt("a cat walking on the beach", negative_prompt="blurry", do_classifier_free_guidance=True,
                                  max_sequence_length=32, device="cpu")


def _latents(pipe, embeds=None, steps: int = 3, wrap=contextlib.nullcontext):
    positive, negative = embeds or _embeds(pipe)
    with torch.no_grad(), wrap():
        return pipe(prompt_embeds=positive, negative_prompt_embeds=negative, height=32, width=48, num_frames=9,
                    num_inference_steps=steps, guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(7),
                    output_type="latent").frames


@pytest.fixture(scope="module")
def reference(pipe):
    return _latents(pipe)


def _close(a, b, tolerance=LATENT_TOLERANCE) -> float:
    difference = (a - b).abs().max().item()
    assert difference <= tolerance, f"outputs differ by {difference:.3g} (tolerance {tolerance})"
    return difference


def test_batched_guidance_gives_the_same_latents_and_frames(pipe, reference):
    positive, negative = _embeds(pipe)
    with fastpath.batched_guidance(pipe, negative) as stats:
        latents = _latents(pipe, (positive, negative))
    assert stats == {"batched": 3, "unbatched": 0}  # one batched transformer call per step, none separate
    _close(latents, reference)
    frames_fast, frames_plain = decode_wan_latents(pipe, latents), decode_wan_latents(pipe, reference)
    assert frames_fast.shape == (9, 32, 48, 3)
    assert int(abs(frames_fast.astype(int) - frames_plain.astype(int)).max()) <= FRAME_TOLERANCE
    assert "forward" not in pipe.transformer.__dict__  # the transformer is back as it was


def test_batched_guidance_passes_other_calls_through(pipe, reference):
    """A copy of the negative (not the tensor the wrapper was given) is never mistaken for the cached half."""
    positive, negative = _embeds(pipe)
    with fastpath.batched_guidance(pipe, negative.clone()) as stats:
        latents = _latents(pipe, (positive, negative))
    _close(latents, reference)
    assert stats["batched"] == 6  # both calls of each step ran batched: wasteful, but never wrong


def test_fused_qkv_same_output_and_no_extra_memory(reference):
    pipe = build_wan_t2v()
    pipe.set_progress_bar_config(disable=True)

    def storage_bytes(model):
        seen = {}
        for tensor in model.parameters():
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return sum(seen.values())

    before = storage_bytes(pipe.transformer)
    assert fastpath.fuse_qkv(pipe)
    attn = pipe.transformer.blocks[0].attn1
    assert attn.fused_projections and hasattr(attn, "to_qkv")
    assert storage_bytes(pipe.transformer) == before  # q, k, v are views into the fused weight
    _close(_latents(pipe), reference)
    fastpath.unfuse_qkv(pipe)
    assert not attn.fused_projections
    _close(_latents(pipe), reference)


def test_attention_backend_switch_keeps_the_output(reference):
    """The dispatcher path (``set_attention_backend``) with PyTorch's math kernel against the default SDPA."""
    pipe = build_wan_t2v()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.set_attention_backend("_native_math")
    try:
        _close(_latents(pipe), reference)
    finally:
        pipe.transformer.set_attention_backend("native")


def test_a_failing_kernel_falls_back_to_sdpa_with_a_log_line(pipe, monkeypatch, caplog):
    monkeypatch.setattr(attention, "choose_backend", lambda requested, device: "flash")
    with caplog.at_level(logging.WARNING, logger="pipelines.device.attention"):
        assert attention.apply_backend(pipe, "flash", "cpu") == "sdpa"
    assert "flash failed its probe" in caplog.text and "using PyTorch SDPA" in caplog.text


def test_auto_attention_on_the_cpu_is_sdpa_and_sage_is_never_automatic():
    assert attention.choose_backend("auto", "cpu") == "sdpa"
    assert attention.choose_backend("flash", "cpu") == "sdpa"
    assert "sage" not in attention._AUTO_ORDER and "sage" in attention.CHANGES_OUTPUT


def test_step_cache_off_is_exact_and_on_skips_calls_and_changes_output(pipe, reference):
    with fastpath.step_cache(pipe, 0.0) as stats:
        _close(_latents(pipe), reference, tolerance=0.0)
    assert stats["full"] == stats["cached"] == 0
    with fastpath.step_cache(pipe, 1.0) as stats:
        cached = _latents(pipe, steps=6)
    assert stats["full"] >= 2 and stats["cached"] >= 1, stats  # some transformer calls skipped all but block 0
    assert not pipe.transformer.is_cache_enabled  # the hooks are gone after the run
    plain = _latents(pipe, steps=6)
    assert (cached - plain).abs().max().item() > LATENT_TOLERANCE


def test_fp8_weights_change_the_output_a_little(reference):
    pipe = build_wan_t2v()
    pipe.set_progress_bar_config(disable=True)
    assert fastpath.enable_fp8(pipe, "cpu")
    assert pipe.transformer.blocks[0].ffn.net[0].proj.weight.dtype == torch.float8_e4m3fn
    latents = _latents(pipe)
    difference = (latents - reference).abs().max().item()
    assert LATENT_TOLERANCE < difference < 0.5  # not the same, not another picture
    assert "fp8 weight storage" in fastpath.changes_output(0.0, False, "sdpa", True)


def test_regional_compile_keeps_the_output(tmp_path, reference):
    """torch.compile on the CPU (inductor + the C++ compiler): the two tiny blocks compiled as one region."""
    pipe = build_wan_t2v()
    pipe.set_progress_bar_config(disable=True)
    from pipelines.studio.settings import Settings

    described = fastpath.compile_denoisers(pipe, Settings(data_dir=tmp_path))
    assert "WanTransformerBlock" in described
    assert all(block._compiled_call_impl is not None for block in pipe.transformer.blocks)
    _close(_latents(pipe), reference)
    fastpath.uncompile(pipe)
    assert all(block._compiled_call_impl is None for block in pipe.transformer.blocks)


def test_compile_is_set_up_only_where_the_denoiser_stays_on_the_gpu(tmp_path, monkeypatch):
    from pipelines.studio.settings import Settings

    calls = []
    monkeypatch.setattr(fastpath, "compile_denoisers", lambda pipe, settings: calls.append(1) or "compiled")
    settings = Settings(data_dir=tmp_path, compile=True)
    for level, compiled in (("resident", True), ("vae_tiling", True), ("model_offload", False), ("sequential_offload", False)):
        model = LoadedModel(spec=get_spec("wan2.1-t2v-1.3b"), pipe=build_wan_t2v(), source="", revision="", n_bytes=0,
                            load_seconds=0, attention="sdpa", device="cpu", dtype="fp32", level=level)
        fastpath.setup(model, settings, "cpu")
        assert bool(model.optimisations["compile"]) is compiled, level
        assert model.optimisations["fused_qkv"] is compiled, level
    assert len(calls) == 2


def test_compile_failure_falls_back_to_eager(pipe, caplog):
    model = LoadedModel(spec=get_spec("wan2.1-t2v-1.3b"), pipe=pipe, source="", revision="", n_bytes=0, load_seconds=0,
                        attention="sdpa", device="cpu", dtype="fp32", optimisations={"compile": "blocks"})
    import torch._dynamo.exc

    runs = []

    def run():
        runs.append(1)
        if len(runs) == 1:
            raise torch._dynamo.exc.InternalTorchDynamoError("no C++ compiler")
        return "eager result"

    with caplog.at_level(logging.WARNING, logger="pipelines.device.fastpath"):
        assert fastpath.with_compile_fallback(model, run) == "eager result"
    assert model.optimisations["compile"] is None and "InternalTorchDynamoError" in model.optimisations["compile_failed"]
    assert "running eager" in caplog.text


def test_step_timer_reports_the_first_steps_extra_time():
    timer = fastpath.StepTimer()
    timer.steps = [5.0, 1.0, 1.2, 0.8]
    assert timer.first_step_extra() == pytest.approx(4.0)
    timer.steps = [1.0]
    assert timer.first_step_extra() is None


# --- through the GPU worker -------------------------------------------------------------------------------


def _read_frames(path: Path, width: int, height: int):
    import subprocess

    import numpy as np

    from pipelines.media.ffmpeg import ffmpeg_exe

    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def _sidecar(job) -> dict:
    return json.loads(Path(job.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))


def test_sidecar_records_the_fast_path_and_a_repeated_prompt_hits_the_cache(worker):
    first = wait_finished(worker.submit("t2v", T2VRequest(prompt="a dog on the beach", seed=3, **SMALL)))
    second = wait_finished(worker.submit("t2v", T2VRequest(prompt="a dog on the beach", seed=3, **SMALL)))
    assert first.state == second.state == JobState.DONE, (first.error, second.error)
    a, b = _sidecar(first)["fast_path"], _sidecar(second)["fast_path"]
    assert a["prompt_cache_hit"] is False and b["prompt_cache_hit"] is True
    assert a["fused_qkv"] is True and a["guidance_batched"] is True and a["guidance_batched_steps"] == 3
    assert a["memory_level"] == "resident" and a["out_of_memory_retries"] == []
    assert a["changes_output"] == [] and a["step_cache"] is None
    assert a["compile"] is None and a["vae_tiled"] is False
    assert worker.models.prompt_cache.hits == 1


def test_fast_path_off_gives_the_same_frames(worker, monkeypatch):
    """The whole job through the worker: the frames handed to the mp4 writer by the fast path and by the plain
    path (no fused QKV, no batching, no prompt cache) are the same (compared before H.264, which would turn a
    one-level difference into a different bitstream)."""
    from pipelines.media import ffmpeg as media
    written = []
    original = media.write_mp4
    monkeypatch.setattr(media, "write_mp4", lambda frames, *args, **kwargs: (written.append(frames.copy()),
                                                                             original(frames, *args, **kwargs))[1])
    fast = wait_finished(worker.submit("t2v", T2VRequest(prompt="a red car in the city", seed=11, **SMALL)))
    worker.release_vram(timeout=60)
    for name, value in (("fuse_qkv", False), ("batch_guidance", "off"), ("prompt_cache", 0)):
        monkeypatch.setattr(worker.settings, name, value)
    plain = wait_finished(worker.submit("t2v", T2VRequest(prompt="a red car in the city", seed=11, **SMALL)))
    assert fast.state == plain.state == JobState.DONE
    record = _sidecar(plain)["fast_path"]
    assert record["fused_qkv"] is False and record["guidance_batched"] is False and record["prompt_cache_hit"] is False
    assert _sidecar(fast)["fast_path"]["guidance_batched"] is True
    a, b = written
    assert a.shape == b.shape == (9, 240, 416, 3)
    assert int(abs(a.astype(int) - b.astype(int)).max()) <= FRAME_TOLERANCE
    assert _read_frames(Path(plain.result["clips"][0]["video"]), 416, 240).shape == (9, 240, 416, 3)


def test_step_cache_is_recorded_as_changing_the_output(worker):
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a bird flying", step_cache=0.5, **{**SMALL, "steps": 6})))
    assert job.state == JobState.DONE, job.error
    sidecar = _sidecar(job)
    assert sidecar["settings"]["step_cache"] == 0.5
    record = sidecar["fast_path"]
    assert record["step_cache"]["threshold"] == 0.5
    assert record["step_cache"]["full_transformer_calls"] + record["step_cache"]["cached_transformer_calls"] == 6
    assert any("step cache" in change for change in record["changes_output"])


@pytest.mark.parametrize("value, key", [(-0.1, "step_cache_range"), (2, "step_cache_range"), ("x", "step_cache_type")])
def test_step_cache_values_are_checked(value, key):
    with pytest.raises(RequestError) as caught:
        validate_t2v(T2VRequest(prompt="a cat", step_cache=value, **SMALL), demo=True)
    assert caught.value.key == key


def test_step_cache_is_refused_for_the_unet_model(tmp_path):
    from pipelines.tasks.i2v import I2VRequest, validate_i2v
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(image)
    with pytest.raises(RequestError) as caught:
        validate_i2v(I2VRequest(image=str(image), prompt="a cat", model="i2vgen-xl", step_cache=0.1), demo=True)
    assert caught.value.key == "step_cache_unsupported"
    assert validate_i2v(I2VRequest(image=str(image), prompt="a cat", model="i2vgen-xl"), demo=True).step_cache == 0.0


def test_step_cache_on_compiled_blocks_runs_them_eager_for_that_job(reference):
    """The step cache's per-step decision is a graph break: compiled blocks step aside for that job (nothing is
    compiled here: torch.compile is lazy and the blocks never run compiled) and are back afterwards."""
    pipe = build_wan_t2v()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.compile_repeated_blocks(fullgraph=True)
    compiled = [block._compiled_call_impl for block in pipe.transformer.blocks]
    assert all(compiled)
    model = LoadedModel(spec=get_spec("wan2.1-t2v-1.3b"), pipe=pipe, source="", revision="", n_bytes=0, load_seconds=0,
                        attention="sdpa", device="cpu", dtype="fp32", optimisations={"compile": "blocks"})
    from pipelines.studio.settings import Settings

    with fastpath.denoise_context(model, Settings(batch_guidance="off"), True, None, 1e-9) as info:
        assert all(block._compiled_call_impl is None for block in pipe.transformer.blocks)
        latents = _latents(pipe)
    _close(latents, reference)  # a threshold this small never skips a step
    assert info["step_cache"]["cached_transformer_calls"] == 0 and info["step_cache"]["full_transformer_calls"] == 6
    assert [block._compiled_call_impl for block in pipe.transformer.blocks] == compiled
