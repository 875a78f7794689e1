"""The real diffusers WanPipeline, tiny and built locally, run through the GPU worker."""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref
from pathlib import Path

import pytest

from pipelines.families import catalogue as registry
from pipelines.studio.jobs import JobState
from pipelines.media.ffmpeg import probe_video
from pipelines.tasks.t2v import T2VRequest
from pipelines.device.worker import TaskContext
from tests.conftest import wait_finished

SMALL = dict(resolution="240p", aspect="16:9", frames=9, steps=3)


def test_job_writes_playable_mp4_and_complete_sidecar(worker, settings):
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a cat walking on the beach", seed=1234, **SMALL)))
    assert job.state == JobState.DONE, job.error
    clip = job.result["clips"][0]
    video = Path(clip["video"])
    assert video.parent.parent == settings.outputs_dir
    assert video.name.endswith("_t2v_1234.mp4")
    info = probe_video(video)
    assert (info["frames"], info["width"], info["height"], info["codec"]) == (9, 416, 240, "h264")
    sidecar = json.loads(Path(clip["sidecar"]).read_text(encoding="utf-8"))
    assert sidecar["settings"]["seed"] == 1234
    assert sidecar["settings"]["prompt"] == "a cat walking on the beach"
    for key in ("width", "height", "frames", "steps", "guidance", "shift", "fps", "negative_prompt", "model"):
        assert key in sidecar["settings"]
    assert sidecar["model"]["repo_id"] == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    assert sidecar["model"]["demo_random_weights"] is True
    assert set(sidecar["timings_s"]) == {"load", "text_encode", "denoise", "decode", "encode"}
    assert sidecar["timings_s"]["denoise"] > 0
    assert sidecar["runtime"]["versions"]["diffusers"]
    assert sidecar["runtime"]["attention"] == "sdpa"
    assert sidecar["peak_memory_gib"] > 0
    assert job.preview is not None and job.preview.ndim == 3


def test_same_seed_same_clip_and_never_overwritten(worker):
    first = wait_finished(worker.submit("t2v", T2VRequest(prompt="a dog", seed=7, **SMALL)))
    second = wait_finished(worker.submit("t2v", T2VRequest(prompt="a dog", seed=7, **SMALL)))
    a, b = Path(first.result["clips"][0]["video"]), Path(second.result["clips"][0]["video"])
    assert a != b and a.exists() and b.exists()


def test_progress_arrives_once_per_step(worker, monkeypatch):
    steps_seen = []
    original = TaskContext.step

    def recording_step(self, clock, preview=None):
        original(self, clock, preview)
        steps_seen.append((self.job.progress.clip, self.job.progress.step, self.job.progress.total))

    monkeypatch.setattr(TaskContext, "step", recording_step)
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a bird", clips=2, **{**SMALL, "steps": 5})))
    assert job.state == JobState.DONE, job.error
    assert steps_seen == [(clip, step, 5) for clip in (1, 2) for step in range(1, 6)]
    assert len(job.result["clips"]) == 2
    assert [c["seed"] for c in job.result["clips"]] == [job.result["seed"], job.result["seed"] + 1]


def test_cancel_stops_a_long_job_early(worker, settings):
    job = worker.submit("t2v", T2VRequest(prompt="a long clip", **{**SMALL, "steps": 200}))
    seen = -1
    while job.progress.step < 3 and not job.state.finished:
        seen = job.wait_for_change(seen, 5)
    assert worker.cancel(job.id)
    wait_finished(job, 60)
    assert job.state == JobState.CANCELLED
    assert job.progress.step < 200
    assert not list(settings.outputs_dir.rglob("*.mp4"))
    # the worker goes on
    after = wait_finished(worker.submit("t2v", T2VRequest(prompt="next", **SMALL)))
    assert after.state == JobState.DONE


def test_model_stays_resident_and_release_drops_it(worker):
    first = wait_finished(worker.submit("t2v", T2VRequest(prompt="one", **SMALL)))
    second = wait_finished(worker.submit("t2v", T2VRequest(prompt="two", **SMALL)))
    assert first.state == second.state == JobState.DONE
    assert worker.models.load_counts == {"wan2.1-t2v-1.3b": 1}
    second_sidecar = json.loads(Path(second.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))
    assert second_sidecar["model"]["loaded_for_this_job"] is False
    assert second_sidecar["timings_s"]["load"] == 0.0

    transformer = weakref.ref(worker.models._resident["wan2.1-t2v-1.3b"].pipe.transformer)
    assert transformer() is not None
    report = worker.release_vram(timeout=60)
    gc.collect()
    assert report["released"] == ["wan2.1-t2v-1.3b"]
    assert transformer() is None, "the released model is still referenced somewhere"
    assert worker.status()["resident"] == []
    third = wait_finished(worker.submit("t2v", T2VRequest(prompt="three", **SMALL)))
    assert third.state == JobState.DONE
    assert worker.models.load_counts == {"wan2.1-t2v-1.3b": 2}


def test_two_expert_wan22_layout_runs(worker):
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a horse", model="wan2.2-t2v-a14b", **SMALL)))
    assert job.state == JobState.DONE, job.error
    pipe = worker.models._resident["wan2.2-t2v-a14b"].pipe
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio


def test_local_folder_loads_through_the_real_loader(worker, settings, monkeypatch):
    """A catalogue entry pointing at a saved folder (no --demo) loads with from_pretrained."""
    from pipelines.families.demo import ensure_demo_model

    folder = ensure_demo_model("wan-t2v", settings.demo_models_dir)
    spec = dataclasses.replace(
        registry.CATALOGUE["wan2.1-t2v-1.3b"], id="local-wan", repo_id=str(folder), resolutions=("240p",)
    )
    monkeypatch.setitem(registry.CATALOGUE, "local-wan", spec)
    monkeypatch.setattr(worker.settings, "demo", False)
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="local", model="local-wan", **SMALL)))
    assert job.state == JobState.DONE, job.error
    sidecar = json.loads(Path(job.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))
    assert sidecar["model"]["revision"] == "local"


def test_missing_weights_get_a_message_naming_the_fetch_command(worker, monkeypatch):
    """No weights in the HF cache here (tests run offline): the job fails with the fetch command."""
    monkeypatch.setattr(worker.settings, "demo", False)
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="real weights please", **{**SMALL, "resolution": "480p"})))
    assert job.state == JobState.FAILED
    assert job.error_key == "model_missing"
    assert "python scripts/download_models.py wan2.1-t2v-1.3b" in job.error
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in job.error


@pytest.mark.parametrize("offload", ["model", "sequential", "group"])
def test_offload_flags_fall_back_on_cpu(worker, monkeypatch, offload):
    monkeypatch.setattr(worker.settings, "offload", offload)
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="offload", **SMALL)))
    assert job.state == JobState.DONE, job.error
