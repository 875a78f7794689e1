"""One queue over a Ray cluster (``--cluster``): a real local Ray cluster with two logical GPUs, the real tiny
--demo models, the real page driven through gradio_client.

The cluster and its two workers are shared by the module (starting a worker starts a Python process that
imports torch and diffusers); the jobs are tiny. Ray is optional for the app; CI installs it
(requirements-cluster.txt) and sets CINESCRIBE_REQUIRE_RAY=1, so there these tests run instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from pipelines.studio.jobs import JobState
from pipelines.studio.settings import Settings
from pipelines.tasks.t2v import T2VRequest
from tests.conftest import app_data_dir, free_port, start_app, stop_app
from tests.conftest import wait_finished as wait_for_job

try:
    import ray
except ImportError:
    if os.environ.get("CINESCRIBE_REQUIRE_RAY"):  # CI: the cluster tests must run
        raise
    ray = None


def needs_ray(test):
    """A test on the local Ray cluster (the others here, on the flag, texts and choice of jobs, need no Ray)."""
    skip = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install -r requirements-cluster.txt)")
    return pytest.mark.timeout(900)(skip(test))


WORKER_START_S = 300  # a worker process imports torch and diffusers: slow on a busy CPU-only machine
PAGE_T2V = dict(
    model_id="wan2.1-t2v-1.3b", preset_name="Preview", prompt_text="a cat walking", negative_text="", res="240p",
    asp="16:9", n_frames=9, seconds=0, n_steps=8, cfg=5.0, flow_shift=3.0, seed_value=7, frame_rate=16, n_clips=1,
)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"still not {what} after {timeout} s"
        time.sleep(0.2)


def wait_finished(job, timeout: float = 300.0):
    """conftest's, with room for a Ray worker's first model build."""
    return wait_for_job(job, timeout)


def request(steps: int = 4, seed: int = 1, model: str = "wan2.1-t2v-1.3b") -> T2VRequest:
    return T2VRequest(prompt="a cat walking", model=model, resolution="240p", frames=9, steps=steps, seed=seed)


def ran_on(job) -> dict:
    """The worker that wrote the job's clip or transcript, from the sidecar it wrote: its name, host, GPU ids, and
    whether it loaded the model for this job."""
    if job.task == "asr":
        sidecar = json.loads(Path(job.result["files"][0]["files"]["json"]).read_text(encoding="utf-8"))
    else:
        sidecar = json.loads(Path(job.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))
    return {**sidecar["runtime"]["cluster_worker"], "loaded": sidecar["model"]["loaded_for_this_job"]}


def wait_running(job, step: int = 2) -> None:
    """Until ``job`` is past ``step`` of its denoising loop (its progress came back from the worker)."""
    wait_until(lambda: job.progress.stage == "denoise" and job.progress.step >= step or job.state.finished, 300,
               f"job {job.id} at step {step}")
    assert not job.state.finished, f"job {job.id} ended before it could be stopped: {job.state} {job.error}"


def slot_running(executor, job):
    return next(slot for slot in executor.slots if slot.current is job)


def all_ready(executor) -> bool:
    return all(slot.state == "ready" for slot in executor.slots)


@pytest.fixture(scope="module")
def cluster(data_dir):
    """A local Ray cluster: 2 CPUs and 2 logical GPUs (Ray hands each worker one; torch sees none)."""
    from pipelines.families.demo import ensure_demo_model

    for kind in ("wan-t2v", "whisper"):  # built once here, not by two workers at once
        ensure_demo_model(kind, data_dir / "demo_models")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, namespace="cinescribe-tests")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(cluster, tmp_path_factory, data_dir):
    from pipelines.scale.cluster import RayExecutor
    from pipelines.studio.store import JobStore

    folder = tmp_path_factory.mktemp("cluster")  # laid out as start_app lays out an app's folders
    settings = Settings(outputs_dir=folder / "outputs", data_dir=app_data_dir(folder, data_dir), demo=True,
                        cluster="auto")
    store = JobStore(settings.jobs_db)
    executor = RayExecutor(settings, store=store)
    executor.start()
    assert executor.wait_ready(WORKER_START_S)
    wait_until(lambda: all_ready(executor), WORKER_START_S, "both workers ready")
    yield executor
    executor.stop()
    store.close()


@pytest.fixture(scope="module")
def page(executor):
    """The app's page over the cluster executor, served on a free port, and a gradio_client for it."""
    from gradio_client import Client

    from app import AppController
    from ui.app import build_demo, launch_options

    demo = build_demo(executor, executor.settings, AppController())
    demo.queue(default_concurrency_limit=8)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(executor.settings))
    url = f"http://127.0.0.1:{port}/"
    yield url, Client(url, verbose=False)
    demo.close()


@needs_ray
def test_jobs_from_the_page_are_spread_over_both_workers_with_their_progress(page, executor):
    url, client = page
    from gradio_client import Client

    second = Client(url, verbose=False)
    calls = [client.submit(**PAGE_T2V, api_name="/t2v"),
             second.submit(**{**PAGE_T2V, "seed_value": 8}, api_name="/t2v")]
    results = [call.result(timeout=300) for call in calls]
    for (status, _preview, _video, files, _seed, _recorded), call in zip(results, calls, strict=True):
        assert status.startswith("Done"), status
        assert {Path(f).suffix for f in files} == {".mp4", ".json"}
        steps_seen = [text for text, *_ in call.outputs() if re.search(r"step [1-8]/8", str(text))]
        assert steps_seen, f"no step progress reached the page: {[o[0] for o in call.outputs()]}"
    workers = {json.loads(recorded)["runtime"]["cluster_worker"]["name"] for *_, recorded in results}
    assert workers == {"w0", "w1"}
    for stored in executor.queue.store.rows(task="t2v", limit=2):
        job = executor.job(stored.id)
        assert stored.state == "done" and stored.attempts == 1
        assert (job.progress.step, job.progress.total) == (8, 8)  # every step came back from the worker
        assert job.preview is not None and job.preview.shape[-1] == 3  # and the last step's preview

    status = client.predict(api_name="/status")
    assert [row["worker"] for row in status["workers"]] == ["w0", "w1"]
    assert all(row["state"] == "ready" and row["host"] and "GPU" in row["gpu"] for row in status["workers"])
    assert {"w0", "w1"} <= set(next(m for m in status["resident"] if m["id"] == "wan2.1-t2v-1.3b")["workers"])


@needs_ray
def test_a_model_resident_on_a_worker_is_reused_there(executor, tmp_path):
    from pipelines.tasks.asr import ASRRequest
    from tests.test_asr_pipeline import speechlike, write_wav

    audio = str(write_wav(tmp_path / "speech.wav", speechlike(3.0)))
    executor.release_vram(timeout=120)
    assert all(not slot.resident_ids() for slot in executor.slots)
    video = wait_finished(executor.submit("t2v", request(seed=11)))
    speech = wait_finished(executor.submit("asr", ASRRequest(files=[audio])))
    assert video.state == speech.state == JobState.DONE, (video.error, speech.error)
    painter, listener = ran_on(video), ran_on(speech)
    assert painter["loaded"] is listener["loaded"] is True
    slots = {slot.name: slot for slot in executor.slots}
    loads = {name: dict(slot.status["load_counts"]) for name, slot in slots.items()}
    for seed in (12, 13):  # both workers idle each time: without the preference, each would be a coin toss
        video = wait_finished(executor.submit("t2v", request(seed=seed)))
        speech = wait_finished(executor.submit("asr", ASRRequest(files=[audio])))
        assert video.state == speech.state == JobState.DONE, (video.error, speech.error)
        assert ran_on(video) == {**painter, "loaded": False}
        assert ran_on(speech) == {**listener, "loaded": False}
    assert {name: slot.status["load_counts"] for name, slot in slots.items()} == loads  # nothing loaded again
    assert {model for slot in slots.values() for model in slot.resident_ids()} == {"wan2.1-t2v-1.3b",
                                                                                   "whisper-large-v3"}


@needs_ray
def test_cancel_stops_a_running_job_at_its_next_step(executor):
    job = executor.submit("t2v", request(steps=40, seed=21))
    wait_running(job)
    slot = slot_running(executor, job)
    assert executor.cancel(job.id)
    wait_finished(job)
    assert job.state == JobState.CANCELLED
    assert job.progress.step < 40
    assert executor.queue.store.get(job.id).state == "cancelled"
    wait_until(lambda: slot.idle, 60, "the worker free again")
    after = wait_finished(executor.submit("t2v", request(seed=22)))
    assert after.state == JobState.DONE and ran_on(after)["name"] == slot.name  # the same worker goes on


@needs_ray
def test_a_killed_worker_has_its_job_queued_again_once_and_is_started_again(executor):
    job = executor.submit("t2v", request(steps=40, seed=31))
    wait_running(job)
    killed = slot_running(executor, job)
    ray.kill(killed.actor)
    wait_finished(job)
    assert job.state == JobState.DONE, job.error
    assert job.attempts == 2
    assert any("died while it ran" in note and "Queued again" in note for note in job.notes)
    assert ran_on(job)["name"] != killed.name
    stored = executor.queue.store.get(job.id)
    assert (stored.state, stored.attempts) == ("done", 2)
    wait_until(lambda: killed.state == "ready", WORKER_START_S, f"worker {killed.name} started again")
    assert killed.restarts == 1

    # Queued again once only: a job whose second worker dies too fails, with the reason.
    job = executor.submit("t2v", request(steps=40, seed=32))
    wait_running(job)
    ray.kill(slot_running(executor, job).actor)
    wait_until(lambda: job.attempts == 2 and job.state == JobState.RUNNING and job.progress.step >= 1
               or job.state.finished, 300, "the job running again")
    ray.kill(slot_running(executor, job).actor)
    wait_finished(job)
    assert job.state == JobState.FAILED and job.error_key == "worker_lost"
    assert "died while it ran" in job.error and "not started again" in job.error
    assert executor.queue.store.get(job.id).state == "failed"
    wait_until(lambda: all_ready(executor), WORKER_START_S, "both workers started again")


@needs_ray
def test_release_and_restart_one_worker_from_the_system_tab(page, executor):
    _, client = page
    wait_finished(executor.submit("t2v", request(seed=41)))
    holders = [slot.name for slot in executor.slots if slot.resident_ids()]
    message, table = client.predict(holders[0], api_name="/release_worker")
    assert f"wan2.1-t2v-1.3b ({holders[0]})" in message
    rows = {row[0]: row for row in table["data"]}
    assert rows[holders[0]][4] == ""  # its resident models: none
    assert table["headers"][:4] == ["Worker", "Host", "GPU", "VRAM"]

    target = executor.slots[1]
    restarts = target.restarts
    message, _ = client.predict("w1", api_name="/restart_worker")
    assert "Restarting w1" in message
    wait_until(lambda: target.restarts == restarts + 1 and target.state == "ready", WORKER_START_S, "w1 back")
    assert wait_finished(executor.submit("t2v", request(seed=42))).state == JobState.DONE


@needs_ray
def test_the_app_on_the_cluster_runs_again_the_job_its_last_run_was_running(cluster, executor, data_dir):
    """The executor stops as the app does with a job running on a worker; ``app.py --cluster ADDRESS`` in the
    same folders queues it again from the store and runs it on the cluster's workers (and the page's jobs)."""
    job = executor.submit("t2v", request(steps=40, seed=51))
    wait_running(job)
    executor.stop()  # also frees the two logical GPUs for the app's own workers
    assert job.state == JobState.CANCELLED and job.error_key == "interrupted"
    assert executor.queue.store.get(job.id).state == "queued"

    folder = executor.settings.outputs_dir.parent
    app = start_app(folder, data_dir, "--cluster", cluster)
    try:
        from gradio_client import Client

        client = Client(app.url, verbose=False)
        status, *_, recorded = client.predict(**{**PAGE_T2V, "n_steps": 2}, api_name="/t2v")
        assert status.startswith("Done"), status
        assert json.loads(recorded)["runtime"]["cluster_worker"]["name"] in ("w0", "w1")
        status = client.predict(api_name="/status")
        assert status["cluster"]["workers"] == 2
        assert status["device_name"].startswith("Ray cluster")
        wait_until(lambda: executor.queue.store.get(job.id).state == "done", 300, "the interrupted job done")
    finally:
        stop_app(app)
    assert executor.queue.store.get(job.id).attempts == 2
    sidecars = [json.loads(path.read_text(encoding="utf-8")) for path in app.outputs.rglob("*_t2v_51.json")]
    assert [(s["job_id"], s["runtime"]["attempt"]) for s in sidecars] == [(job.id, 2)]
    assert sidecars[0]["runtime"]["cluster_worker"]["name"] in ("w0", "w1")
    log = (app.data / "logs" / "cinescribe.log").read_text(encoding="utf-8")
    assert "Cluster worker w0 ready" in log and "[w" in log  # the workers' own lines reach the app's log


# --- without Ray: the flag, the texts, which job a worker takes ------------------------------------------


def test_the_cluster_flag_reaches_the_settings():
    import app

    assert app.settings_from_args(app.parse_args([])).cluster == ""
    assert app.settings_from_args(app.parse_args(["--cluster", "auto"])).cluster == "auto"
    assert app.settings_from_args(app.parse_args(["--cluster", " 10.0.0.5:6379 "])).cluster == "10.0.0.5:6379"


def test_the_workers_texts_exist_in_both_languages():
    import string

    from ui.system_tab import CLUSTER_STRINGS, WORKER_COLUMNS

    english, chinese = CLUSTER_STRINGS["en"], CLUSTER_STRINGS["zh"]
    assert set(english) == set(chinese)
    assert {f"cluster_col_{column}" for column in WORKER_COLUMNS} <= set(english)
    for key, text in english.items():
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        assert fields == {f for _, f, _, _ in string.Formatter().parse(chinese[key]) if f}, key


def choosing(tmp_path):
    """An executor that is not started (no Ray needed), with two ready workers and nothing resident."""
    from pipelines.scale.cluster import RayExecutor, WorkerSlot

    executor = RayExecutor(Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", demo=True,
                                    cluster="auto"))
    executor.slots = [WorkerSlot(index=0, name="w0", state="ready"), WorkerSlot(index=1, name="w1", state="ready")]
    return executor, executor.slots


def hold(slot, *models: str) -> None:
    slot.status = {"resident": [{"id": model} for model in models]}


def test_a_worker_takes_jobs_for_its_resident_model_first_but_no_job_waits_forever(tmp_path):
    from pipelines.scale.cluster import MAX_SKIPS

    executor, (w0, _) = choosing(tmp_path)
    hold(w0, "wan2.1-t2v-1.3b")
    other = executor.submit("t2v", request(model="wan2.1-t2v-14b"))
    mine = [executor.submit("t2v", request(seed=n)) for n in range(MAX_SKIPS + 1)]
    taken = [executor._choose(w0) for _ in range(MAX_SKIPS)]
    assert taken == mine[:MAX_SKIPS]  # the head (another model) passed over each time
    assert executor._choose(w0) is other  # ... but no more than MAX_SKIPS times
    assert executor._choose(w0) is mine[-1]
    assert executor._choose(w0) is None


def test_a_free_worker_leaves_a_job_to_the_free_worker_that_holds_its_model(tmp_path):
    executor, (w0, w1) = choosing(tmp_path)
    hold(w1, "whisper-large-v3")
    asr = executor.submit("asr", {"files": []})  # a task's default model when the request names none
    t2v = executor.submit("t2v", request())
    assert executor._choose(w0) is t2v  # w1 is free and holds Whisper: the ASR job is its
    assert executor._choose(w1) is asr
    late = executor.submit("asr", {"files": []})
    w1.current = asr  # w1 busy now: w0 takes the job rather than leave its GPU idle
    assert executor._choose(w0) is late


def test_the_workers_table_shows_a_running_jobs_id_only_to_whom_may_see_it(tmp_path):
    executor, (w0, _) = choosing(tmp_path)
    job = executor.submit("t2v", request(), owner="ana")
    w0.current = executor._choose(w0)
    assert executor.status()["workers"][0]["job"] == "t2v"  # /status: no job ids of anyone
    assert executor.workers(lambda seen: seen.owner == "ana")[0]["job"] == f"t2v {job.id}"
    assert executor.workers(lambda seen: seen.owner == "bo")[0]["job"] == "t2v"
