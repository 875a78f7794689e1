"""The real diffusers I2VGenXLPipeline and WanImageToVideoPipeline, tiny and built locally, run through the worker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.tasks.i2v import I2VRequest
from pipelines.studio.jobs import JobState
from pipelines.media.ffmpeg import probe_video
from pipelines.device.worker import GPUWorker, TaskContext
from tests.conftest import wait_finished

# 128p: a pixel area of 224 x 128; a 16:9 photo keeps that size with every model's multiples.
SMALL = dict(resolution="128p", steps=3)


@pytest.fixture()
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def steps_seen(monkeypatch) -> list:
    seen = []
    original = TaskContext.step

    def recording_step(self, clock, preview=None):
        original(self, clock, preview)
        seen.append((self.job.progress.step, self.job.progress.total))

    monkeypatch.setattr(TaskContext, "step", recording_step)
    return seen


def test_i2vgen_xl_job_writes_the_clip_its_sidecar_and_the_input(worker, settings, photo, steps_seen):
    job = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), prompt="a cat walking", model="i2vgen-xl",
                                                        frames=8, seed=1234, **SMALL)))
    assert job.state == JobState.DONE, job.error
    clip = job.result["clips"][0]
    video = Path(clip["video"])
    assert video.parent.parent == settings.outputs_dir and video.name.endswith("_i2v_1234.mp4")
    info = probe_video(video)
    assert (info["frames"], info["width"], info["height"], info["codec"]) == (8, 224, 128, "h264")
    assert steps_seen == [(step, 3) for step in (1, 2, 3)]  # one report per denoising step, not per UNet batch

    sidecar = json.loads(Path(clip["sidecar"]).read_text(encoding="utf-8"))
    assert sidecar["task"] == "i2v"
    assert sidecar["settings"]["frames"] == 8 and sidecar["settings"]["guidance"] == 9.0
    assert sidecar["settings"]["shift"] is None  # DDIM: no flow shift
    assert sidecar["model"]["pipeline"] == "I2VGenXLPipeline"
    assert set(sidecar["timings_s"]) == {"load", "text_encode", "denoise", "decode", "encode"}
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert sidecar["input"]["sha256"] == sidecar["settings"]["image_sha256"] == digest
    assert (sidecar["input"]["width"], sidecar["input"]["height"]) == (320, 180)
    assert (sidecar["input"]["used_width"], sidecar["input"]["used_height"]) == (224, 128)
    copy = video.with_name(sidecar["input"]["copy"])
    assert copy.name == f"{video.stem}_input.png"
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest
    assert job.preview is not None and job.preview.ndim == 3

    pipe = worker.models._resident["i2vgen-xl"].pipe
    assert "step" not in vars(pipe.scheduler), "the step hook was left on the resident pipeline"


@pytest.mark.parametrize(
    "model, size, fps",
    [
        ("wan2.1-i2v-14b-480p", (224, 128), 16),  # CLIP image encoder, 36-channel input
        ("wan2.2-ti2v-5b-i2v", (224, 128), 24),  # 48-channel VAE at 16x: multiples of 32
    ],
)
def test_wan_i2v_job_makes_the_requested_clip(worker, photo, steps_seen, model, size, fps):
    job = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), prompt="a dog", model=model, frames=6,
                                                        seed=5, **SMALL)))
    assert job.state == JobState.DONE, job.error
    assert job.result["notes"] == ["Wan makes 4n+1 frames: 6 became 5."]
    info = probe_video(job.result["clips"][0]["video"])
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (5, *size, fps)
    assert steps_seen == [(step, 3) for step in (1, 2, 3)]


def test_wan22_a14b_ends_on_the_given_last_frame(worker, photo, tmp_path):
    last = tmp_path / "end.jpg"
    Image.new("RGB", (320, 180), (20, 200, 20)).save(last)
    job = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), last_image=str(last), prompt="a horse",
                                                        model="wan2.2-i2v-a14b", frames=5, **SMALL)))
    assert job.state == JobState.DONE, job.error
    clip = job.result["clips"][0]
    assert probe_video(clip["video"])["frames"] == 5
    sidecar = json.loads(Path(clip["sidecar"]).read_text(encoding="utf-8"))
    assert sidecar["last_frame"]["sha256"] == hashlib.sha256(last.read_bytes()).hexdigest()
    assert Path(clip["video"]).with_name(sidecar["last_frame"]["copy"]).is_file()
    assert worker.models._resident["wan2.2-i2v-a14b"].pipe.transformer_2 is not None


def test_cancel_stops_i2vgen_xl_mid_run_and_leaves_the_pipeline_clean(worker, settings, photo):
    job = worker.submit("i2v", I2VRequest(image=str(photo), prompt="a long clip", model="i2vgen-xl", frames=4,
                                          resolution="128p", steps=200))
    seen = -1
    while job.progress.step < 2 and not job.state.finished:
        seen = job.wait_for_change(seen, 5)
    assert job.progress.stage == "denoise" and 2 <= job.progress.step < 200
    assert worker.cancel(job.id)
    wait_finished(job, 60)
    assert job.state == JobState.CANCELLED
    assert job.progress.step < 200
    assert not list(settings.outputs_dir.rglob("*.mp4"))
    pipe = worker.models._resident["i2vgen-xl"].pipe
    assert "step" not in vars(pipe.scheduler)
    after = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), prompt="next", model="i2vgen-xl", frames=4,
                                                          resolution="128p", steps=2)))
    assert after.state == JobState.DONE, after.error


def test_corrupt_image_fails_the_job_and_the_worker_goes_on(worker, photo, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:300])
    failed = wait_finished(worker.submit("i2v", I2VRequest(image=str(broken), prompt="x", **SMALL)))
    assert failed.state == JobState.FAILED
    assert failed.error_key in ("i2v_image_truncated", "i2v_image_unreadable")
    assert "broken.jpg" in failed.error


@pytest.mark.parametrize("model", ["i2vgen-xl", "wan2.1-i2v-14b-480p"])
def test_half_precision_keeps_the_dtypes_each_pipeline_needs(settings, photo, model):
    """I2VGen-XL feeds VAE latents to its UNet: one dtype for both. Wan keeps its VAE and CLIP image encoder in
    fp32. On a CPU the demo runs in fp32, so mismatches only show when bf16 is asked for."""
    import torch

    settings.dtype = "bf16"
    worker = GPUWorker(settings)
    worker.start()
    try:
        assert worker.wait_ready(60)
        job = wait_finished(worker.submit("i2v", I2VRequest(image=str(photo), prompt="a cat", model=model, frames=5,
                                                            resolution="128p", steps=2)))
        assert job.state == JobState.DONE, job.error
        pipe = worker.models._resident[model].pipe
        if model == "i2vgen-xl":
            assert {pipe.unet.dtype, pipe.vae.dtype, pipe.image_encoder.dtype} == {torch.bfloat16}
        else:
            assert pipe.transformer.dtype == torch.bfloat16
            assert pipe.vae.dtype == pipe.image_encoder.dtype == torch.float32
    finally:
        worker.stop()
