"""One Wan clip across several ranks (``--parallel N``): diffusers' context parallelism on CPU processes (gloo).

No GPU here: the ranks are CPU processes, which is what ``--parallel N`` does on a machine without one.
Real models throughout: the tiny ``WanTransformer3DModel`` / ``WanPipeline`` / ``WanImageToVideoPipeline``
of ``--demo``; the ranks are real processes exchanging real collectives.

Tolerance: in fp32 the split must give the one-process output within atol 1e-5 (it has been bitwise equal
on CPU: Ulysses computes every head exactly as one process does, only elsewhere).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.studio.jobs import JobState, RequestError
from pipelines.scale.parallel import (
    CPMode,
    ParallelPipeline,
    choose_mode,
    cp_backend,
    load_parallel_model,
    plan,
    ring_available,
    sequence_tokens,
)
from pipelines.families.catalogue import family_of, get_spec
from pipelines.studio.settings import Settings
from tests.conftest import ROOT, free_port, wait_finished

ATOL = 1e-5
WAN = "wan2.1-t2v-1.3b"


# --- the choice of split (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heads", "world", "ring_ok", "expected"),
    [
        (12, 2, True, CPMode("ulysses", 2)),  # Wan 2.1 1.3B: 12 heads
        (12, 4, False, CPMode("ulysses", 4)),
        (12, 8, True, CPMode("ring", 8)),  # 12 % 8: ring on a GPU in bf16/fp16
        (40, 8, True, CPMode("ulysses", 8)),  # Wan 14B: 40 heads
        (40, 3, True, CPMode("ring", 3)),
        (40, 3, False, CPMode("ulysses", 3, padded_heads=True)),  # no ring kernel: pad 2 heads, 14 per rank
        (24, 8, False, CPMode("ulysses", 8)),  # Wan 2.2 TI2V 5B: 24 heads
    ],
)
def test_ulysses_when_the_heads_divide_ring_otherwise(heads, world, ring_ok, expected):
    assert choose_mode(heads, world, ring_ok) == expected


def test_no_mode_fits_gives_a_message_with_the_counts_that_work():
    # 12 heads on 8 CPU ranks: no ring kernel, and padding 4 heads onto 2 per rank is more than diffusers allows
    with pytest.raises(RequestError) as caught:
        choose_mode(12, 8, ring_ok=False)
    assert caught.value.key == "parallel_heads"
    assert "12 attention heads" in str(caught.value) and "2, 3, 4, 6, 12" in str(caught.value)


def test_the_modes_are_valid_diffusers_configs_and_backends():
    from diffusers import ContextParallelConfig
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    for mode in (CPMode("ulysses", 2), CPMode("ulysses", 3, padded_heads=True), CPMode("ring", 2)):
        for uneven in (False, True):
            config = ContextParallelConfig(**mode.config_kwargs(uneven))  # diffusers validates its arguments
            assert (config.ulysses_degree, config.ring_degree) == (mode.ulysses_degree, mode.ring_degree)
            assert (config.ulysses_anything or config.ring_anything) == (uneven or mode.padded_heads)
        for attention in ("sdpa", "flash", "sage", "cudnn", "xformers", "flash3"):
            assert cp_backend(mode.kind, attention) in _AttentionBackendRegistry._supports_context_parallel
    assert cp_backend("ring", "sdpa") == "_native_flash"  # SDPA returns no log-sum-exp; PyTorch's flash does
    assert cp_backend("ulysses", "xformers") == "native"
    assert ring_available("cuda", "bf16") and not ring_available("cuda", "fp32") and not ring_available("cpu", "fp32")


def test_sequence_tokens_match_what_the_pipeline_makes():
    from pipelines.families.demo import build_wan_t2v

    pipe = build_wan_t2v()
    for frames, height, width in ((9, 240, 416), (5, 128, 224), (13, 96, 160)):
        latents = pipe.prepare_latents(1, 16, height, width, frames)  # (1, C, latent frames, h, w)
        expected = latents.shape[2] * (latents.shape[3] // 2) * (latents.shape[4] // 2)  # patch (1, 2, 2)
        assert sequence_tokens(frames, height, width, 4, 8, (1, 2, 2)) == expected
    assert sequence_tokens(81, 480, 832, 4, 8, (1, 2, 2)) == 21 * 30 * 52  # Wan 2.1 480p, 81 frames
    assert sequence_tokens(7, 128, 224, 4, 8, (1, 2, 2)) == sequence_tokens(5, 128, 224, 4, 8, (1, 2, 2))  # 7 -> 5


def test_plan_runs_other_models_and_too_few_gpus_on_one():
    many = Settings(parallel=4)
    assert plan(Settings(), get_spec(WAN), "cuda:0") == (1, "")
    assert plan(many, get_spec(WAN), "cpu") == (4, "")  # CPU processes
    assert plan(many, get_spec("wan2.1-i2v-14b-480p"), "cpu") == (4, "")
    world, why = plan(many, get_spec("i2vgen-xl"), "cpu")
    assert world == 1 and "is for Wan models" in why
    world, why = plan(Settings(parallel=4, random_weights=True), get_spec(WAN), "cpu")
    assert world == 1 and "random weights" in why
    import torch

    world, why = plan(many, get_spec(WAN), "cuda:0")
    if not torch.distributed.is_nccl_available():  # CPU and Windows builds
        assert world == 1 and "needs NCCL" in why
    elif torch.cuda.device_count() < 4:
        assert world == 1 and f"this machine has {torch.cuda.device_count()}" in why


@pytest.mark.parametrize("value", [0, -1, 65, "2", 2.0, True])
def test_parallel_setting_is_a_whole_number_of_gpus(value):
    with pytest.raises(ValueError, match="parallel"):
        Settings(parallel=value)


def test_the_flag_reaches_the_settings():
    import app

    assert app.settings_from_args(app.parse_args(["--parallel", "4"])).parallel == 4
    assert app.settings_from_args(app.parse_args([])).parallel == 1


# --- numerics: torchrun, 2 CPU processes, gloo ------------------------------------------------------


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp_check")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               str(ROOT / "scripts" / "parallel_check.py"), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    import torch

    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)], done.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case", "heads", "padded"), [("divisible", 2, False), ("not_divisible", 3, True)])
def test_two_processes_give_the_one_process_output(torchrun_results, case, heads, padded):
    from pipelines.scale.parallel_check import reference

    ranks, _ = torchrun_results
    alone = reference(heads)  # computed here, in a process with no torch.distributed at all
    for result in (r["cases"][case] for r in ranks):
        assert "error" not in result, result.get("error")
        assert result["mode"] == {"kind": "ulysses", "degree": 2, "padded_heads": padded}
        assert result["local_tokens"] == result["tokens"] // 2  # each rank's attention saw half the sequence
        assert result["parallel"].shape == alone.shape
        assert (result["parallel"] - alone).abs().max().item() <= ATOL
        assert (result["reference"] - alone).abs().max().item() <= ATOL


@pytest.mark.timeout(300)
def test_ring_attention_needs_a_gpu_kernel(torchrun_results):
    """No attention kernel on a CPU returns the log-sum-exp ring attention merges with, so the app never
    chooses ring there. When diffusers gains one, this fails: then test ring here and update docs/cluster.md."""
    ranks, stdout = torchrun_results
    error = ranks[0]["cases"]["ring"].get("error", "")
    assert "flash_attention" in error and "CPU" in error
    assert "cannot run here" in stdout


# --- the ranks as the app runs them ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data_dir):
    settings = Settings(outputs_dir=tmp_path_factory.mktemp("out"), data_dir=data_dir, demo=True, device="cpu",
                        parallel=2)
    model = load_parallel_model(get_spec(WAN), settings, "cpu", "fp32")
    yield model
    model.pipe.close()


def _local_pipe(data_dir):
    from pipelines.device.loading import load_video_pipeline

    spec = get_spec(WAN)
    return load_video_pipeline(spec, Settings(data_dir=data_dir, demo=True, device="cpu"), "cpu", "fp32",
                               family_of(spec)).pipe


@pytest.mark.timeout(300)
def test_ranks_denoise_like_one_process_and_report_every_step(ranks, data_dir):
    import torch

    from pipelines.families.wan import set_flow_shift

    runner: ParallelPipeline = ranks.pipe
    assert runner.world == 2 and runner.mode == CPMode("ulysses", 2) and runner.backend == "gloo"
    assert ranks.n_bytes > 0 and len(set(runner.group.pids())) == 2
    positive, negative = runner.encode(prompt="a cat walking", negative_prompt="", do_classifier_free_guidance=True,
                                       num_videos_per_prompt=1, max_sequence_length=512)
    tokens, uneven = runner.split(9, 240, 416)
    assert (tokens, uneven) == (3 * 15 * 26, False)
    steps = []
    kwargs = dict(prompt_embeds=positive, negative_prompt_embeds=negative, height=240, width=416, num_frames=9,
                  num_inference_steps=3, guidance_scale=5.0)
    info = runner.denoise(kwargs, seed=7, shift=3.0, uneven=uneven, preview_every=2,
                          on_step=lambda step, preview: steps.append((step, preview is not None)) or False)
    assert info["interrupted"] is False
    assert steps == [(0, False), (1, True), (2, True)]  # every step; a preview every 2nd and at the last
    latents = runner.latents()

    local = _local_pipe(data_dir)
    set_flow_shift(local, 3.0)
    with torch.no_grad():
        mine, theirs = local.encode_prompt(prompt="a cat walking", negative_prompt="", do_classifier_free_guidance=True,
                                           num_videos_per_prompt=1, max_sequence_length=512)
        assert (mine - positive).abs().max().item() <= ATOL
        expected = local(**kwargs, generator=torch.Generator("cpu").manual_seed(7), output_type="latent").frames
    assert latents.shape == expected.shape
    assert (latents - expected).abs().max().item() <= ATOL

    frames = runner.decode()
    assert frames.shape == (9, 240, 416, 3) and frames.dtype.name == "uint8"
    assert runner.latents() is None  # decoding consumed them


@pytest.mark.timeout(300)
def test_stop_halts_every_rank_at_the_same_step_and_the_group_goes_on(ranks):
    runner: ParallelPipeline = ranks.pipe
    positive, _ = runner.encode(prompt="a dog", negative_prompt="", do_classifier_free_guidance=False,
                                num_videos_per_prompt=1, max_sequence_length=512)
    kwargs = dict(prompt_embeds=positive, height=240, width=416, num_frames=9, num_inference_steps=5, guidance_scale=1.0)
    steps = []
    info = runner.denoise(kwargs, seed=1, shift=3.0, uneven=False, preview_every=0,
                          on_step=lambda step, preview: steps.append(step) or step == 1)
    assert info["interrupted"] is True and steps == [0, 1]
    # the ranks stopped together: the next run goes through on the same processes
    pids = runner.group.pids()
    info = runner.denoise(kwargs, seed=1, shift=3.0, uneven=False, preview_every=0, on_step=lambda step, preview: False)
    assert info["interrupted"] is False and runner.group.pids() == pids


def test_gloo_refuses_an_uneven_split_with_sizes_that_work(ranks):
    with pytest.raises(RequestError) as caught:
        ranks.pipe.split(9, 624, 624)  # 1:1 at 480p: 3 x 39 x 39 tokens, odd
    assert caught.value.key == "parallel_uneven"
    assert "make 4563" in str(caught.value) and "5 or 13 frames work" in str(caught.value)  # 2 or 4 latent frames


# --- through the GPU worker: one job on the page, the clip and its sidecar, Release VRAM --------------


@pytest.mark.timeout(600)
def test_worker_runs_wan_jobs_across_ranks_and_release_ends_them(tmp_path, data_dir):
    import numpy as np
    from PIL import Image

    from pipelines.tasks.i2v import I2VRequest
    from pipelines.media.ffmpeg import probe_video
    from pipelines.tasks.t2v import T2VRequest
    from pipelines.device.worker import GPUWorker

    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, demo=True, device="cpu", parallel=2)
    worker = GPUWorker(settings)
    worker.start()
    try:
        assert worker.wait_ready(60)
        job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a cat walking", seed=5, resolution="240p",
                                                            frames=9, steps=3)), timeout=300)
        assert job.state == JobState.DONE, job.error
        clip = job.result["clips"][0]
        assert probe_video(Path(clip["video"]))["frames"] == 9
        sidecar = json.loads(Path(clip["sidecar"]).read_text(encoding="utf-8"))
        assert sidecar["parallel"] == {"ranks": 2, "mode": "ulysses", "degree": 2, "heads": 2, "heads_padded": False,
                                       "tokens": 1170, "uneven_split": False, "backend": "gloo", "attention": "native",
                                       "devices": ["cpu", "cpu"]}
        assert set(sidecar["timings_s"]) >= {"load", "text_encode", "denoise", "decode", "encode"}
        assert job.progress.step == 3 and job.preview is not None
        group = next(m for m in worker.models._resident.values() if m.spec.id == WAN).pipe.group
        processes = list(group._processes)
        assert all(p.is_alive() for p in processes)

        # Wan image to video across the ranks; I2VGen-XL (not Wan) on one process, with a note
        photo = tmp_path / "photo.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (180, 320, 3), dtype=np.uint8)).save(photo)
        wan_i2v = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), prompt="a cat", seed=3, steps=2,
                                                                model="wan2.1-i2v-14b-480p", resolution="128p",
                                                                frames=5)), timeout=300)
        assert wan_i2v.state == JobState.DONE, wan_i2v.error
        i2v_sidecar = json.loads(Path(wan_i2v.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))
        assert i2v_sidecar["parallel"]["ranks"] == 2 and i2v_sidecar["input"]["copy"].endswith("_input.png")
        assert Path(wan_i2v.result["input"]).is_file()
        other = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), prompt="a cat", model="i2vgen-xl",
                                                              frames=8, steps=2, resolution="128p")), timeout=300)
        assert other.state == JobState.DONE, other.error
        assert any("is for Wan models" in note for note in other.notes)
        assert "parallel" not in json.loads(Path(other.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))

        report = worker.release_vram(timeout=120)
        assert WAN in report["released"]
        assert not any(p.is_alive() for p in processes)  # Release VRAM ended the ranks
    finally:
        worker.stop()
