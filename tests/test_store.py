"""Jobs survive restarts and crashes: the queue on disk, interrupted jobs queued again once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipelines.studio.jobs import JobState
from pipelines.studio.store import JobStore, decode_request, encode_request
from pipelines.tasks.t2v import T2VRequest
from pipelines.device.worker import GPUWorker
from tests.conftest import ROOT, wait_finished


def runs_recorder(log: list):
    """A task that records what it ran; ``block`` jobs wait (first attempt only) until cancelled, as real
    tasks stop at their next step."""

    def run(job, ctx):
        log.append((job.id, job.attempts, job.request))
        while job.request.get("block") and job.attempts == 1 and not job.cancelled:
            time.sleep(0.02)
        ctx.check_cancel()
        return {"echo": job.request}

    return run


def make_worker(settings, store_path, log=None):
    """A worker on the store at ``store_path``: with the recording task when given ``log``, else the real tasks."""
    handlers = {"echo": runs_recorder(log)} if log is not None else None
    worker = GPUWorker(settings, handlers=handlers, store=JobStore(store_path))
    worker.start()
    assert worker.wait_ready(60)
    return worker


def run_after_restart(settings, store_path, job_id: str):
    """Start the app's worker again on the store and return job ``job_id`` once it has run again."""
    worker = make_worker(settings, store_path)
    try:
        return wait_finished(worker.job(job_id), 120)
    finally:
        worker.stop()


def test_requests_round_trip_as_their_own_class():
    request = T2VRequest(prompt="一只猫 on a boat", frames=33, seed=7, notes=["a note"])
    back = decode_request(encode_request(request))
    assert isinstance(back, T2VRequest) and back == request


def test_stored_request_of_an_unknown_module_is_skipped(tmp_path):
    with pytest.raises(ValueError):
        decode_request('{"type": "os:system", "value": {}}')


def test_queued_and_running_jobs_run_after_a_restart(settings, tmp_path):
    store_path = tmp_path / "jobs.sqlite3"
    log: list = []
    worker = make_worker(settings, store_path, log)
    running = worker.submit("echo", {"block": True, "n": 0}, owner="ana")
    waiting = [worker.submit("echo", {"n": i}, owner="ana") for i in (1, 2)]
    while running.state != JobState.RUNNING:
        running.wait_for_change(running.version, 1)
    worker.stop()
    assert running.state == JobState.CANCELLED and "runs again" in running.error
    assert all(job.state == JobState.CANCELLED for job in waiting)

    log.clear()
    worker = make_worker(settings, store_path, log)
    try:
        jobs = [worker.job(job.id) for job in (running, *waiting)]
        assert all(job is not None for job in jobs), "every job from before the restart is known again"
        for job in jobs:
            wait_finished(job, 30)
        assert [job.state for job in jobs] == [JobState.DONE] * 3
        assert [entry[0] for entry in log] == [running.id, waiting[0].id, waiting[1].id], "same order as before"
        assert jobs[0].attempts == 2 and any("Interrupted" in note for note in jobs[0].notes)
        assert jobs[1].attempts == 1
        assert jobs[0].owner == "ana"
    finally:
        worker.stop()
    rows = {row.id: row for row in JobStore(store_path).rows()}
    assert {rows[job.id].state for job in jobs} == {"done"}
    assert rows[running.id].result == {"echo": {"block": True, "n": 0}}


def test_a_cancelled_job_stays_cancelled_after_a_restart(settings, tmp_path):
    store_path = tmp_path / "jobs.sqlite3"
    log: list = []
    worker = make_worker(settings, store_path, log)
    blocker = worker.submit("echo", {"block": True})
    victim = worker.submit("echo", {"n": 1})
    assert worker.cancel(victim.id)
    assert worker.cancel(blocker.id)
    wait_finished(blocker, 10)
    worker.stop()
    log.clear()
    worker = make_worker(settings, store_path, log)
    time.sleep(0.3)
    worker.stop()
    assert log == [], "cancelled jobs are not run again"
    assert {row.state for row in JobStore(store_path).rows()} == {"cancelled"}


CRASHING_APP = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from pipelines.studio.settings import Settings
    from pipelines.studio.store import JobStore
    from pipelines.device.worker import GPUWorker

    def hang(job, ctx):
        if {write_sidecar!r}:  # the whole output is written; the app dies before recording the job done
            folder = Path({outputs!r}) / "2026-01-01"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "x.json").write_text(json.dumps({{"app": "cinescribe", "task": "t2v", "job_id": job.id}}))
        Path({marker!r}).write_text(job.id)
        time.sleep(600)

    settings = Settings(outputs_dir={outputs!r}, data_dir={data!r}, demo=True)
    worker = GPUWorker(settings, handlers={{"echo": hang}}, store=JobStore(Path({store!r})))
    worker.start()
    {submit}
    time.sleep(600)
""")


def crash_while_running(tmp_path, settings, submit: str, write_sidecar: bool = False) -> str:
    """Run a worker in a child process, ``kill -9`` it while its job runs; returns the job's id."""
    marker = tmp_path / "running.txt"
    marker.unlink(missing_ok=True)
    script = CRASHING_APP.format(root=str(ROOT), marker=str(marker), outputs=str(settings.outputs_dir),
                                 data=str(settings.data_dir), store=str(tmp_path / "jobs.sqlite3"), submit=submit,
                                 write_sidecar=write_sidecar)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert child.poll() is None, "the child worker died by itself"
            assert time.time() < deadline, "the job never started"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL) if os.name != "nt" else child.kill()
        child.wait(10)
    return marker.read_text()


def test_kill_9_during_a_job_requeues_it_once_then_gives_up(settings, tmp_path):
    store_path = tmp_path / "jobs.sqlite3"
    first = crash_while_running(tmp_path, settings, 'worker.submit("echo", {"n": 1}); '
                                                    'worker.submit("echo", {"n": 2})')
    # Second life: the interrupted job starts again (attempt 2) and the child is killed again.
    second = crash_while_running(tmp_path, settings, "")
    assert second == first

    log: list = []
    worker = make_worker(settings, store_path, log)
    try:
        waiting = [row for row in JobStore(store_path).rows() if row.id != first]
        assert len(waiting) == 1
        job = worker.job(waiting[0].id)
        wait_finished(job, 30)
        assert job.state == JobState.DONE and job.request == {"n": 2}
        assert worker.job(first) is None, "a job interrupted twice is not started a third time"
    finally:
        worker.stop()
    row = JobStore(store_path).get(first)
    assert row.state == "failed" and row.error_key == "interrupted_twice" and row.attempts == 2
    assert [entry[1] for entry in log] == [1]


def test_a_job_that_wrote_all_its_outputs_before_the_crash_is_not_run_twice(settings, tmp_path):
    store_path = tmp_path / "jobs.sqlite3"
    job_id = crash_while_running(tmp_path, settings, 'from pipelines.tasks.t2v import T2VRequest; '
                                                     'worker.submit("echo", T2VRequest(prompt="x", clips=1))',
                                 write_sidecar=True)
    log: list = []
    worker = make_worker(settings, store_path, log)
    time.sleep(0.5)
    worker.stop()
    assert log == [], "not run again"
    row = JobStore(store_path).get(job_id)
    assert row.state == "done" and "not run again" in row.notes[-1]


def test_a_restarted_job_keeps_the_clips_it_had_written(settings, tmp_path):
    """Stopped between its two clips, a job makes only the second one when the app is back."""
    store_path = tmp_path / "jobs.sqlite3"
    worker = make_worker(settings, store_path)
    job = worker.submit("t2v", T2VRequest(prompt="two clips", resolution="240p", frames=9, steps=40, seed=300, clips=2))
    try:
        deadline = time.time() + 120
        while not list(settings.outputs_dir.rglob("*_t2v_300.mp4")):
            assert time.time() < deadline and not job.state.finished, "the first clip never came"
            time.sleep(0.05)
    finally:
        worker.stop()
    assert job.state == JobState.CANCELLED, "stopped during the second clip"
    again = run_after_restart(settings, store_path, job.id)
    assert again.state == JobState.DONE and again.attempts == 2
    assert [c["seed"] for c in again.result["clips"]] == [300, 301]
    assert sorted(p.name.split("_")[-1] for p in settings.outputs_dir.rglob("*.mp4")) == ["300.mp4", "301.mp4"]
    assert any("kept, not made again" in note for note in again.notes)


def test_a_restarted_transcription_keeps_the_files_it_had_done(settings, tmp_path):
    """Two files transcribed, the app dies before the second is recorded: only that one is done again."""
    from pipelines.tasks.asr import ASRRequest
    from tests.test_asr_pipeline import speechlike, write_wav

    files = [str(write_wav(tmp_path / f"{name}.wav", speechlike(3.0, seed=i))) for i, name in enumerate(("one", "two"))]
    store_path = tmp_path / "jobs.sqlite3"
    worker = make_worker(settings, store_path)
    try:
        job = wait_finished(worker.submit("asr", ASRRequest(files=files)), 120)
    finally:
        worker.stop()
    assert job.state == JobState.DONE
    second = next(p for p in settings.outputs_dir.rglob("*_asr_two.json"))
    for written in second.parent.glob(second.stem + ".*"):  # as if the app died before writing "two"
        written.unlink()
    store = JobStore(store_path)
    job.state, job.attempts = JobState.RUNNING, 1
    store.save(job)

    again = run_after_restart(settings, store_path, job.id)
    assert again.state == JobState.DONE and again.attempts == 2
    assert [f["name"] for f in again.result["files"]] == ["one.wav", "two.wav"]
    assert all(f["ok"] and f["transcript"].startswith("[00:") for f in again.result["files"])
    assert sorted(p.name.split("_", 2)[-1] for p in settings.outputs_dir.rglob("*.srt")) == ["one.srt", "two.srt"]
    assert any("kept, not done again" in note for note in again.notes)
