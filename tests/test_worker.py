"""The GPU worker's contract: one job at a time in order, failures contained, memory freed after OOM."""

from __future__ import annotations

import threading

import pytest
import torch

from pipelines.studio.jobs import JobState, RequestError
from pipelines.device.manager import ModelManager
from pipelines.families.catalogue import CATALOGUE
from pipelines.device.worker import GPUWorker
from tests.conftest import wait_finished


@pytest.fixture()
def gate():
    return threading.Event()


@pytest.fixture()
def plain_worker(settings, gate):
    """A worker with stand-in tasks, to test the queue itself (the real T2V task is tested elsewhere)."""

    def blocking(job, ctx):
        gate.wait(30)
        return "ran"

    def out_of_memory(job, ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def crash(job, ctx):
        raise KeyError("boom")

    def refuse(job, ctx):
        raise RequestError("bad input", key="prompt_empty")

    worker = GPUWorker(settings, handlers={"block": blocking, "oom": out_of_memory, "crash": crash, "refuse": refuse})
    worker.start()
    assert worker.wait_ready(30)
    yield worker
    gate.set()
    worker.stop()


def test_jobs_run_in_order_and_report_their_place(plain_worker, gate):
    jobs = [plain_worker.submit("block", None) for _ in range(3)]
    while jobs[0].state != JobState.RUNNING:
        jobs[0].wait_for_change(jobs[0].version, 1)
    assert [plain_worker.position(job) for job in jobs] == [0, 1, 2]
    assert plain_worker.status()["queue"] == 2
    assert plain_worker.cancel(jobs[2].id)
    assert jobs[2].state == JobState.CANCELLED
    gate.set()
    for job in jobs[:2]:
        assert wait_finished(job).state == JobState.DONE
    assert jobs[0].finished <= jobs[1].started


def test_failures_are_contained_and_the_worker_goes_on(plain_worker, gate):
    gate.set()
    crashed = wait_finished(plain_worker.submit("crash", None))
    refused = wait_finished(plain_worker.submit("refuse", None))
    after = wait_finished(plain_worker.submit("block", None))
    assert crashed.state == JobState.FAILED and "KeyError" in crashed.error
    assert refused.state == JobState.FAILED and refused.error == "bad input" and refused.error_key == "prompt_empty"
    assert after.state == JobState.DONE and after.result == "ran"


def test_out_of_memory_fails_the_job_with_advice_and_frees_models(plain_worker, gate, monkeypatch):
    released = []
    monkeypatch.setattr(ModelManager, "release_all", lambda self: released.append(True) or {})
    gate.set()
    job = wait_finished(plain_worker.submit("oom", None))
    assert job.state == JobState.FAILED
    assert job.error_key == "oom"
    assert "--memory-level model_offload" in job.error
    assert released == [True]
    assert wait_finished(plain_worker.submit("block", None)).state == JobState.DONE


def test_unknown_task_is_refused(plain_worker):
    with pytest.raises(RequestError, match="No task"):
        plain_worker.submit("paint", None)


def test_stop_cancels_waiting_jobs(plain_worker):
    jobs = [plain_worker.submit("block", None) for _ in range(2)]
    plain_worker.stop(timeout=5)
    assert jobs[1].state == JobState.CANCELLED


def test_manager_evicts_least_recently_used_under_the_budget():
    loaded = []

    class Model:
        def __init__(self, spec):
            self.spec, self.pipe, self.n_bytes, self.attention = spec, object(), 6 * 2**30, "sdpa"
            self.level = "resident"

    def load(spec):
        loaded.append(spec.id)
        return Model(spec)

    manager = ModelManager(load, "cpu", budget_bytes=13 * 2**30, estimate_bytes=lambda spec: 6 * 2**30)
    a, b, c = (CATALOGUE[name] for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"))
    manager.get(a)
    manager.get(b)
    assert manager.get(a)[1] is False  # resident: not reloaded, and now the most recently used
    manager.get(c)  # needs room: b is the least recently used
    assert [m["id"] for m in manager.resident()] == [a.id, c.id]
    assert loaded == [a.id, b.id, c.id]
