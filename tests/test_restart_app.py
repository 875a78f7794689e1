"""The served app killed with ``kill -9`` in the middle of a queue: every job still finishes, once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from gradio_client import Client

from pipelines.studio.store import JobStore
from tests.conftest import start_app, stop_app
from tests.test_api import GOOD

pytestmark = pytest.mark.skipif(os.name == "nt", reason="kill -9 is POSIX")


def wait_until(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_with_jobs_queued_loses_nothing(tmp_path, data_dir):
    app = start_app(tmp_path, data_dir)
    try:
        client = Client(app.url, verbose=False)
        for seed in (11, 12, 13):
            client.submit(**{**GOOD, "n_steps": 12, "seed_value": seed}, api_name="/t2v")
        store = JobStore(app.data / "jobs.sqlite3")
        wait_until(lambda: len(store.rows()) == 3 and any(r.state == "running" for r in store.rows()), 60,
                   "three jobs queued, one running")
        (app.outputs / "2000-01-01").mkdir(parents=True)
        (app.outputs / "2000-01-01" / ".000000_t2v_1.mp4.partial").write_bytes(b"half a clip")
    finally:
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(10)

    app = start_app(tmp_path, data_dir)
    try:
        wait_until(lambda: all(r.state == "done" for r in store.rows()), 180, "all three jobs done after the restart")
        rows = store.rows()
        assert len(rows) == 3
        assert sorted(r.attempts for r in rows)[-1] <= 2
        clips = sorted(p.name for p in app.outputs.rglob("*.mp4"))
        assert sorted(name.split("_")[-1] for name in clips) == ["11.mp4", "12.mp4", "13.mp4"], "one clip each"
        assert not list(app.outputs.rglob("*.partial")), "leftovers of the crash are swept at start"
        log = app.log.read_text(encoding="utf-8")
        assert "queued again" in log
    finally:
        stop_app(app)
