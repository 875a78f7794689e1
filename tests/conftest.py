"""Shared fixtures: tiny real models built locally, a running GPU worker, a served --demo app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per test process (and the apps it starts): no oversubscription
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")


def pytest_collection_modifyitems(config, items):
    """With ``-n``: a file's tests stay in one process (module fixtures: one served app, one browser), and the
    Wine files share one process (one Wine prefix)."""
    for item in items:
        group = "wine" if item.path.name.startswith("test_launchers_wine") else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Shared data folder, so the tiny demo models are built once per test run."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture()
def settings(tmp_path, data_dir):
    from pipelines.studio.settings import Settings

    return Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, demo=True)


@pytest.fixture()
def worker(settings):
    from pipelines.device.worker import GPUWorker

    worker = GPUWorker(settings)
    worker.start()
    assert worker.wait_ready(60)
    yield worker
    worker.stop()


def wait_finished(job, timeout: float = 120.0):
    deadline = time.time() + timeout
    seen = -1
    while not job.state.finished:
        assert time.time() < deadline, f"job {job.id} still {job.state} after {timeout} s"
        seen = job.wait_for_change(seen, 1.0)
    return job


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedApp:
    def __init__(self, process: subprocess.Popen, port: int, outputs: Path, log: Path):
        self.process, self.port, self.outputs, self.log = process, port, outputs, log
        self.data = log.parent / "data"
        self.url = f"http://127.0.0.1:{port}/"


def app_data_dir(tmp_path: Path, data_dir: Path) -> Path:
    """The data folder of an app started in ``tmp_path``: its own job queue and logs, the shared demo models.

    Starting again in the same ``tmp_path`` finds the same queue (restart tests rely on that).
    """
    folder = tmp_path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    shared = data_dir / "demo_models"
    shared.mkdir(parents=True, exist_ok=True)
    link = folder / "demo_models"
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)
    return folder


def start_app(tmp_path: Path, data_dir: Path, *extra: str, env: dict | None = None) -> ServedApp:
    """``python app.py --demo`` on a free port, with data in ``tmp_path/data``; returns once the page is served."""
    import urllib.error
    import urllib.request

    port = free_port()
    outputs = tmp_path / "outputs"
    log = tmp_path / "app.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--demo", "--port", str(port), "--outputs", str(outputs),
         "--data-dir", str(app_data_dir(tmp_path, data_dir)), *extra],
        cwd=ROOT,
        stdout=log.open("a", encoding="utf-8"),  # a restarted app appends to the same log
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with {process.returncode}:\n{log.read_text(encoding='utf-8')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2):
                return ServedApp(process, port, outputs, log)
        except urllib.error.HTTPError:  # it answers (with --auth: 401): the server is up
            return ServedApp(process, port, outputs, log)
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app did not start:\n{log.read_text(encoding='utf-8')}")


def stop_app(app: ServedApp) -> None:
    if app.process.poll() is None:
        app.process.terminate()
        try:
            app.process.wait(20)
        except subprocess.TimeoutExpired:
            app.process.kill()


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, data_dir):
    app = start_app(tmp_path_factory.mktemp("served"), data_dir)
    yield app
    stop_app(app)
