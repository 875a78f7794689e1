"""start.sh with the real pip, PyTorch's index (here a mirror in CINESCRIBE_TORCH_INDEX) out of
reach, and pip configured with a local package index on 127.0.0.1 that carries a small torch
wheel (the stand-in torch of test_launchers_fakes.py, packed as a real wheel): the launcher
says so in one line, pip installs torch from the local index, the check imports it, the app runs."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import socket
import subprocess
import threading
import venv
import zipfile
from pathlib import Path

import pytest

from tests.test_launchers_fakes import FAKE_APP, FAKE_TORCH, LAUNCHER_SCRIPTS, ROOT


def _wheel(name: str, version: str, files: dict[str, str]) -> bytes:
    dist = f"{name}-{version}.dist-info"
    files = {**files, f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
            archive.writestr(path, data)
        archive.writestr(f"{dist}/RECORD", "\n".join(record + [f"{dist}/RECORD,,"]) + "\n")
    return buffer.getvalue()


@pytest.fixture
def local_index(tmp_path):
    root = tmp_path / "index"
    (root / "simple" / "torch").mkdir(parents=True)
    wheel = _wheel("torch", "2.11.0", {"torch/__init__.py": FAKE_TORCH.format(version="2.11.0", cuda=None)})
    name = "torch-2.11.0-py3-none-any.whl"
    (root / name).write_bytes(wheel)
    sha = hashlib.sha256(wheel).hexdigest()
    (root / "simple" / "torch" / "index.html").write_text(
        f'<html><body><a href="../../{name}#sha256={sha}">{name}</a></body></html>')
    (root / "simple" / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>')

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_start_sh_falls_back_to_pips_own_index_and_torch_works(tmp_path, local_index):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in LAUNCHER_SCRIPTS:
        (repo / "scripts" / name).write_bytes((ROOT / "scripts" / name).read_bytes())
    (repo / "start.sh").write_bytes((ROOT / "start.sh").read_bytes())
    (repo / "requirements.txt").write_text("torch>=2.4\n")
    (repo / "app.py").write_text(FAKE_APP)
    venv.EnvBuilder(with_pip=True).create(repo / ".venv")
    mirror = f"http://127.0.0.1:{_closed_port()}/whl/cpu"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": "/dev/null",
           "PIP_INDEX_URL": local_index, "PIP_RETRIES": "0", "PIP_NO_CACHE_DIR": "1",
           "CINESCRIBE_TORCH_INDEX": mirror, "CINESCRIBE_NVIDIA_SMI": "none",
           "FAKE_APP_STATE": str(tmp_path / "app.json")}
    proc = subprocess.run(["bash", str(repo / "start.sh"), "--demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    said = [line for line in out.splitlines() if "cannot be reached" in line]
    assert len(said) == 1, out
    assert mirror in said[0] and f"({local_index})" in said[0] and "torch 2.11.0" in said[0]
    assert "torch 2.11.0 imports" in proc.stdout
    check = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "2.11.0"
    assert (tmp_path / "app.json").exists()  # the app was started after the set-up
