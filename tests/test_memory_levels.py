"""Memory levels and the out-of-memory ladder: chosen from measured free memory, walked down on CUDA out of
memory (injected here through CINESCRIBE_TEST_INJECT_OOM, as a soak run does), recorded in the sidecar, and
memory back where it was after a job that failed at every level."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import psutil
import pytest
import torch

from pipelines.device import memory_levels
from pipelines.studio.jobs import JobState
from pipelines.device.memory import free_memory
from pipelines.device.memory_levels import INJECT_ENV, JobShape
from pipelines.families import wan
from pipelines.studio.settings import MEMORY_LEVELS, Settings
from pipelines.tasks.t2v import T2VRequest
from tests.conftest import start_app, stop_app, wait_finished

SMALL = dict(resolution="240p", aspect="16:9", frames=9, steps=3)
GIB = 2**30
# RSS after a job that failed at every level, against before it (no model resident either time). Measured on
# the 2-core CPU machine: the job raises RSS by about 80 MiB (tiny model loaded, prompt encoded, 17 frames at 480p
# denoised, five times; at 240p it was only 14-28 MiB, too close to the margin on a quiet machine) and afterwards
# RSS is 12-27 MiB *below* where it started; a model or activations left behind would show as more than this margin.
RSS_MARGIN_BYTES = 8 * 2**20


@pytest.fixture(autouse=True)
def _fresh_injection(monkeypatch):
    monkeypatch.delenv(INJECT_ENV, raising=False)
    memory_levels.reset_injection()
    yield
    memory_levels.reset_injection()


def test_the_ladder_goes_down_one_level_at_a_time():
    walked, level = [], "resident"
    while level:
        walked.append(level)
        level = memory_levels.next_level(level)
    assert walked == ["resident", "text_offload", "vae_tiling", "model_offload", "sequential_offload"]
    assert memory_levels.next_level("group_offload") == "sequential_offload"
    assert [memory_levels.tiles_vae(level) for level in walked] == [False, False, True, True, True]
    assert tuple(MEMORY_LEVELS) == memory_levels.MEMORY_LEVEL_CHOICES


def test_choice_takes_the_fastest_level_that_fits_and_respects_the_floor():
    needs = {"resident": 30 * GIB, "text_offload": 20 * GIB, "vae_tiling": 16 * GIB, "model_offload": 9 * GIB,
             "group_offload": 4 * GIB, "sequential_offload": 0}
    reserve = memory_levels.RESERVE_BYTES
    assert memory_levels.choose_level(needs, 80 * GIB)[0] == "resident"
    assert memory_levels.choose_level(needs, 24 * GIB)[0] == "text_offload"
    assert memory_levels.choose_level(needs, 16 * GIB + reserve)[0] == "vae_tiling"
    assert memory_levels.choose_level(needs, 12 * GIB)[0] == "model_offload"
    assert memory_levels.choose_level(needs, 6 * GIB)[0] == "sequential_offload"  # group only when asked
    level, why = memory_levels.choose_level(needs, 80 * GIB, floor="model_offload")
    assert level == "model_offload" and "GiB" in why
    assert memory_levels.choose_level(needs, 80 * GIB, floor="group_offload")[0] == "group_offload"


def test_estimates_for_wan_1_3b_at_real_size_shrink_down_the_ladder():
    """Component sizes and the transformer's shape of the real 1.3B model (from assets/model_configs, on the meta
    device: nothing allocated)."""
    from pipelines.bench.random_weights import build_random_pipeline

    pipe = build_random_pipeline("wan2.1-t2v-1.3b", "meta", torch.bfloat16)
    sizes = memory_levels.component_bytes(pipe)
    assert 10 * GIB < sizes["text_encoder"] < 12 * GIB and 2 * GIB < sizes["transformer"] < 3.5 * GIB
    shape = JobShape(81, 480, 832)
    assert wan.tokens(pipe.transformer.config, shape) == 32760  # 21 x 30 x 52
    needs = memory_levels.needs_by_level(sizes, pipe, shape, batched_guidance=True, family=wan)
    order = ["resident", "text_offload", "vae_tiling", "model_offload", "sequential_offload"]
    assert all(needs[a] >= needs[b] for a, b in zip(order, order[1:])), needs
    assert needs["resident"] < 24 * GIB  # the catalogue says ~17 GB resident; activations and decode on top
    assert needs["model_offload"] < needs["text_offload"]  # the text encoder and the transformer take turns
    assert needs["model_offload"] >= sizes["text_encoder"]  # but the 11 GB encoder must fit alone
    # a 24 GB card keeps it all resident (the catalogue's ~17 GB plus a job); a 12 GB card offloads
    assert memory_levels.choose_level(needs, 23 * GIB)[0] == "resident"
    assert memory_levels.choose_level(needs, 12 * GIB)[0] in ("model_offload", "sequential_offload")
    assert memory_levels.choose_level(needs, 16 * GIB)[0] in ("text_offload", "vae_tiling", "model_offload")


def test_injection_format():
    assert memory_levels.parse_injection("denoise:2, decode:*,text_encode") == {"denoise": 2, "decode": None,
                                                                                "text_encode": 1}
    with pytest.raises(ValueError, match="unknown stage"):
        memory_levels.parse_injection("vae:1")


def test_injection_raises_torch_oom_the_asked_number_of_times(monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "denoise:2")
    memory_levels.maybe_inject_oom("decode")  # another stage: nothing
    for _ in range(2):
        with pytest.raises(torch.OutOfMemoryError, match="injected"):
            memory_levels.maybe_inject_oom("denoise")
    memory_levels.maybe_inject_oom("denoise")  # the budget is spent


def _sidecar(job) -> dict:
    return json.loads(Path(job.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))


def test_oom_in_denoise_retries_one_level_down_and_the_level_stays(worker, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "denoise:1")
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a cat", seed=5, **SMALL)))
    assert job.state == JobState.DONE, job.error
    record = _sidecar(job)["fast_path"]
    assert record["memory_level"] == _sidecar(job)["memory_level"] == "text_offload"
    assert [(r["stage"], r["level"], r["next_level"]) for r in record["out_of_memory_retries"]] == \
        [("denoise", "resident", "text_offload")]
    assert "injected" in record["out_of_memory_retries"][0]["error"]
    assert any("retrying at text_offload" in note for note in job.notes)
    assert worker.models.load_counts == {"wan2.1-t2v-1.3b": 1}  # moved in place, not loaded again

    after = wait_finished(worker.submit("t2v", T2VRequest(prompt="a dog", **SMALL)))
    assert _sidecar(after)["memory_level"] == "text_offload"  # until Release VRAM
    worker.release_vram(timeout=60)
    assert worker.models.floors == {}
    fresh = wait_finished(worker.submit("t2v", T2VRequest(prompt="a dog", **SMALL)))
    assert _sidecar(fresh)["memory_level"] == "resident"


def test_oom_in_decode_of_the_second_clip_keeps_the_first(worker, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "decode:2")
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a horse", clips=2, seed=20, **SMALL)))
    assert job.state == JobState.DONE, job.error
    seeds = [clip["seed"] for clip in job.result["clips"]]
    assert seeds == [20, 21]
    levels = [json.loads(Path(c["sidecar"]).read_text(encoding="utf-8"))["memory_level"] for c in job.result["clips"]]
    assert levels == ["vae_tiling", "vae_tiling"]  # resident -> text_offload -> vae_tiling: decoded in tiles
    assert _sidecar(job)["fast_path"]["vae_tiled"] is True


def test_oom_at_every_level_fails_with_advice_and_memory_comes_back(worker, monkeypatch):
    """Before: no model resident (after one job, so that imports and the first load's one-off allocations are
    done). Then a job that runs out of memory in its VAE decode at every level, after loading the model and
    denoising each time. After: the model is gone and the process RSS is back within RSS_MARGIN_BYTES of
    before, while during the job it rose by more than twice that (so the margin can tell)."""
    import threading

    big = dict(SMALL, resolution="480p", frames=17)
    wait_finished(worker.submit("t2v", T2VRequest(prompt="warm up", **big)))
    worker.release_vram(timeout=60)
    worker.run_exclusive(lambda: free_memory("cpu"), timeout=60)
    process = psutil.Process()
    before = process.memory_info().rss

    peak, stop = [before], threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak.append(process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    monkeypatch.setenv(INJECT_ENV, "decode:*")
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="too big", **big)))
    stop.set()
    sampler.join()
    assert job.state == JobState.FAILED
    assert job.error_key == "oom_lowest_level"
    assert job.error.startswith("Out of GPU memory even at the lowest memory level")
    assert "fewer frames" in job.error and job.error_params["frames"] == big["frames"]
    assert [note.split("retrying at ")[1].rstrip(".") for note in job.notes if "retrying at" in note] == \
        ["text_offload", "vae_tiling", "model_offload", "sequential_offload"]
    assert worker.models.resident() == []

    worker.run_exclusive(lambda: free_memory("cpu"), timeout=60)
    gc.collect()
    after = process.memory_info().rss
    used = max(peak) - before
    assert used > 2 * RSS_MARGIN_BYTES, f"the job used only {used / 2**20:.0f} MiB: the check could not tell"
    assert after - before < RSS_MARGIN_BYTES, \
        f"RSS {before / 2**20:.0f} MiB before, +{used / 2**20:.0f} at the peak, {(after - before) / 2**20:+.0f} after"

    monkeypatch.delenv(INJECT_ENV)
    clean = wait_finished(worker.submit("t2v", T2VRequest(prompt="next", **SMALL)))
    assert clean.state == JobState.DONE and _sidecar(clean)["memory_level"] == "resident"


def test_oom_while_loading_loads_again_lower(worker, monkeypatch):
    """An out-of-memory from the load itself (a model too big to place) is retried with the floor lowered."""
    from pipelines.device import loading
    real = loading.load_video_pipeline
    calls = []

    def load_once_too_big(spec, settings, device, dtype, family):
        calls.append(memory_levels.loading_floor())
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.00 GiB")
        return real(spec, settings, device, dtype, family)

    monkeypatch.setattr(loading, "load_video_pipeline", load_once_too_big)
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a fish", **SMALL)))
    assert job.state == JobState.DONE, job.error
    assert calls == [None, "text_offload"]
    assert _sidecar(job)["memory_level"] == "text_offload"


def test_the_released_pipeline_is_not_kept_alive_by_the_ladder(worker, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "denoise:*")
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="gone", **SMALL)))
    assert job.error_key == "oom_lowest_level"
    monkeypatch.delenv(INJECT_ENV)
    wait_finished(worker.submit("t2v", T2VRequest(prompt="loaded again", **SMALL)))
    pipe = weakref.ref(worker.models._resident["wan2.1-t2v-1.3b"].pipe)
    monkeypatch.setenv(INJECT_ENV, "denoise:*")
    memory_levels.reset_injection()
    wait_finished(worker.submit("t2v", T2VRequest(prompt="gone again", **SMALL)))
    gc.collect()
    assert pipe() is None, "the pipeline that failed at every level is still referenced"


def test_level_flags():
    assert memory_levels.requested_level(Settings()) == "auto"
    assert memory_levels.requested_level(Settings(memory_level="vae_tiling")) == "vae_tiling"
    assert memory_levels.requested_level(Settings(offload="sequential", memory_level="resident")) == "sequential_offload"
    with pytest.raises(ValueError, match="memory_level"):
        Settings(memory_level="tiny")


def test_injected_oom_in_a_served_app(tmp_path, data_dir):
    """The hook works in the app started as a subprocess, as the soak script starts it (and the page's step cache
    threshold reaches the job)."""
    from gradio_client import Client

    app = start_app(tmp_path, data_dir, env={INJECT_ENV: "denoise:1"})
    try:
        client = Client(app.url, verbose=False)
        status, _preview, _video, _files, seed, recorded = client.predict(
            model_id="wan2.1-t2v-1.3b", preset_name="Preview", prompt_text="a cat walking", negative_text="",
            res="240p", asp="16:9", n_frames=9, seconds=0, n_steps=2, cfg=5.0, flow_shift=3.0, seed_value=42,
            frame_rate=16, n_clips=1, step_cache_threshold=0.2, api_name="/t2v")
    finally:
        stop_app(app)
    assert "Done" in status
    sidecar = json.loads(recorded)
    assert sidecar["settings"]["step_cache"] == 0.2  # the step cache slider of the page, through the API
    assert any("step cache" in change for change in sidecar["fast_path"]["changes_output"])
    assert sidecar["memory_level"] == "text_offload"
    assert sidecar["fast_path"]["out_of_memory_retries"][0]["stage"] == "denoise"
    assert "Injecting a CUDA out-of-memory error" in app.log.read_text(encoding="utf-8")
