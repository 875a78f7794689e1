"""ModelScope downloads through the ``modelscope`` package's downloader, against the local server of
test_downloads.py answering what that client asks, as ModelScope does (MODELSCOPE_DOMAIN +
MODELSCOPE_URL_SCHEME): progress with speed and ETA, the commit the files are from in the sidecar (a branch
or a tag), resume after a dropped connection, after modelscope gave up and after a Stop, a partial download
of a branch that moved started over, a checksum mismatch refused with nothing published, a full disk
refused before anything is fetched, the script's output with modelscope's own bars and lines off."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipelines.studio import downloads
from tests.test_downloads import MS_HEAD, MS_OLDER, REPO, hub, tiny_repo  # noqa: F401

pytest.importorskip("modelscope")
FILES = "/api/v1/models/AI-ModelScope/whisper-small/repo/files"
BLOB = "/api/v1/models/AI-ModelScope/whisper-small/repo"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "download_models.py"


def weights_of(hub) -> str:  # noqa: F811
    return next(n for n in hub.files if n.endswith(".safetensors"))


def test_modelscope_client_fetches_with_progress_and_lands_where_the_loader_looks(hub, tmp_path):  # noqa: F811
    seen = []
    folder = downloads.download_model(REPO, tmp_path, source="modelscope", on_progress=lambda p: seen.append(
        (p.done, p.total, p.speed, p.eta, p.file)))
    assert folder == tmp_path / "openai--whisper-small"
    for name, data in hub.files.items():
        assert (folder / name).read_bytes() == data
    assert sorted(p.name for p in folder.rglob("*")) == sorted([downloads.SIDECAR, *hub.files])  # no temp files
    meta = json.loads((folder / downloads.SIDECAR).read_text())
    assert meta["source"] == "modelscope" and meta["source_repo"] == "AI-ModelScope/whisper-small"
    assert (meta["revision"], meta["ref"]) == (MS_HEAD, "master")  # the commit, as ModelScope's listing names it
    assert downloads.find_downloaded(REPO, tmp_path)[1] == f"modelscope@{MS_HEAD}"
    total = sum(len(d) for d in hub.files.values())
    assert seen[-1][0] == total and all(t == total for _, t, _, _, _ in seen)
    assert [d for d, *_ in seen] == sorted(d for d, *_ in seen)  # bytes only grow
    assert any(speed > 0 and eta is not None for _, _, speed, eta, _ in seen[:-1])  # speed and ETA move
    assert {f for *_, f in seen if f} <= set(hub.files)
    # our file list, given to modelscope's client (no list of its own), then each file at that branch
    assert [path for path, _, _ in hub.ms_asked if path == FILES] == [FILES]
    fetched = sorted(q["FilePath"] for path, q, _ in hub.ms_asked if path == BLOB and q["Revision"] == "master")
    assert fetched == sorted(hub.files)


def test_modelscope_at_a_tag_fetches_the_tag_and_records_its_commit(hub, tmp_path):  # noqa: F811
    folder = downloads.download_model(REPO, tmp_path, source="modelscope", revision="v1.0.0")
    meta = json.loads((folder / downloads.SIDECAR).read_text())
    assert (meta["revision"], meta["ref"]) == (MS_OLDER, "v1.0.0")
    assert {q["Revision"] for path, q, _ in hub.ms_asked if path in (FILES, BLOB)} == {"v1.0.0"}


def test_modelscope_resumes_after_the_server_drops_the_connection(hub, tmp_path):  # noqa: F811
    hub.drop_after = 1000
    folder = downloads.download_model(REPO, tmp_path, source="modelscope")
    weights = weights_of(hub)
    assert (weights, 0) in hub.ranges and (weights, 1000) in hub.ranges  # went on from byte 1000
    assert ("bytes=1000-") in [r for path, q, r in hub.ms_asked if q.get("FilePath") == weights]
    assert (folder / weights).read_bytes() == hub.files[weights]


def test_a_snapshot_that_gives_up_mid_file_is_started_again_and_resumes(hub, tmp_path, monkeypatch):  # noqa: F811
    """modelscope gives up on a file (here at once: no retries of its own) after getting some of it: the
    snapshot is started again and goes on from the bytes it kept."""
    monkeypatch.setattr("modelscope_hub._download.DOWNLOAD_RETRY_TIMES", 0)
    hub.drop_after = 1000
    folder = downloads.download_model(REPO, tmp_path, source="modelscope")
    weights = weights_of(hub)
    lists = [path for path, _, _ in hub.ms_asked if path == FILES]
    assert len(lists) == 1  # ours: modelscope fetches from it, the second time too
    assert [path for path, _, r in hub.ms_asked if path == BLOB and r == "bytes=1000-"] == [BLOB]  # started again
    assert hub.ranges.count((weights, 1000)) == 1 and (folder / weights).read_bytes() == hub.files[weights]


def test_modelscope_checksum_mismatch_is_refused_and_nothing_is_published(hub, tmp_path):  # noqa: F811
    weights = weights_of(hub)
    hub.bad.add(weights)
    with pytest.raises(downloads.DownloadError, match="does not match the checksum") as error:
        downloads.download_model(REPO, tmp_path, source="modelscope")
    assert weights in str(error.value) and "nothing was installed" in str(error.value)
    assert downloads.find_downloaded(REPO, tmp_path) is None
    assert not (tmp_path / "openai--whisper-small").exists()
    assert not list((tmp_path / ".partial").rglob(weights + "*"))  # neither the file nor its .incomplete


def test_modelscope_stop_keeps_the_bytes_and_a_new_start_resumes_them(hub, tmp_path):  # noqa: F811
    """Stop in the middle of the weights (as a restart would), then start again: it goes on from byte 1000."""
    weights = weights_of(hub)
    hub.drop_after = 1000
    stop = threading.Event()

    def on_progress(p: downloads.Progress) -> None:
        if p.file == weights and p.done:
            stop.set()

    with pytest.raises(downloads.DownloadError, match="stopped"):
        downloads.download_model(REPO, tmp_path, source="modelscope", on_progress=on_progress, stop=stop)
    assert downloads.model_state(REPO, tmp_path)["state"] == "partly downloaded"
    incomplete = tmp_path / ".partial" / "openai--whisper-small" / (weights + ".incomplete")
    assert incomplete.stat().st_size == 1000 and downloads.find_downloaded(REPO, tmp_path) is None
    hub.drop_after, seen = None, []
    folder = downloads.download_model(REPO, tmp_path, source="modelscope", on_progress=lambda p: seen.append(p.done))
    assert hub.ranges.count((weights, 1000)) == 1 and (folder / weights).read_bytes() == hub.files[weights]
    assert seen[-1] == sum(len(d) for d in hub.files.values())  # the resumed bytes are counted once


def test_a_partial_modelscope_download_is_not_mixed_into_a_hugging_face_one(hub, tmp_path):  # noqa: F811
    weights = weights_of(hub)
    hub.drop_after = 1000
    stop = threading.Event()
    with pytest.raises(downloads.DownloadError, match="stopped"):
        downloads.download_model(REPO, tmp_path, source="modelscope", stop=stop,
                                 on_progress=lambda p: stop.set() if p.file == weights and p.done else None)
    hub.drop_after = None
    folder = downloads.download_model(REPO, tmp_path, source="huggingface")
    assert sorted(p.name for p in folder.rglob("*")) == sorted([downloads.SIDECAR, *hub.files])
    assert json.loads((folder / downloads.SIDECAR).read_text())["source"] == "huggingface"


def test_modelscope_full_disk_is_refused_before_anything_is_fetched(hub, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(downloads, "free_space", lambda path: 10 << 20)
    with pytest.raises(downloads.DownloadError, match="Not enough disk space") as error:
        downloads.download_model(REPO, tmp_path, source="modelscope")
    assert "10.0 MiB free" in str(error.value)
    assert hub.ranges == [] and not (tmp_path / ".partial").exists()
    assert [path for path, _, _ in hub.ms_asked] == [FILES]  # our own listing only: modelscope never started


def test_modelscope_down_is_a_clear_error_and_auto_still_prefers_hugging_face(hub, tmp_path):  # noqa: F811
    hub.down.add("ms")
    with pytest.raises(downloads.DownloadError, match="503"):
        downloads.download_model(REPO, tmp_path, source="modelscope")
    folder = downloads.download_model(REPO, tmp_path, source="auto")
    assert json.loads((folder / downloads.SIDECAR).read_text())["source"] == "huggingface"
    assert not [q for path, q, _ in hub.ms_asked if path == BLOB]


def test_a_partial_download_of_a_branch_that_moved_is_started_over(hub, tmp_path):  # noqa: F811
    """Stopped mid-file on master, then master moves: the bytes kept were another commit's, so the new start
    fetches from byte 0 and the sidecar names the new commit."""
    weights = weights_of(hub)
    hub.drop_after = 1000
    stop = threading.Event()
    with pytest.raises(downloads.DownloadError, match="stopped"):
        downloads.download_model(REPO, tmp_path, source="modelscope", stop=stop,
                                 on_progress=lambda p: stop.set() if p.file == weights and p.done else None)
    hub.drop_after, newer = None, "e" * 40
    hub.ms_refs["master"] = newer
    folder = downloads.download_model(REPO, tmp_path, source="modelscope")
    assert (weights, 1000) not in hub.ranges and hub.ranges.count((weights, 0)) == 2
    assert json.loads((folder / downloads.SIDECAR).read_text())["revision"] == newer


def run_script(hub, data: Path, *flags: str) -> subprocess.CompletedProcess:  # noqa: F811
    env = {**os.environ, "MODELSCOPE_ENDPOINT": hub.url, "PYTHONWARNINGS": "default"}
    env.pop("MODELSCOPE_DOMAIN", None)  # modelscope warns that it is deprecated; MODELSCOPE_ENDPOINT replaces it
    return subprocess.run([sys.executable, *flags, str(SCRIPT), "whisper-small", "--source", "modelscope",
                           "--data-dir", str(data)], env=env, capture_output=True, text=True, timeout=300)


def test_the_script_shows_only_its_own_lines_and_never_imports_torch(hub, tmp_path):  # noqa: F811
    """scripts/download_models.py against the ModelScope server: stdout the result, stderr our progress line
    only (no tqdm bar, no modelscope log line), and neither torch nor the modelscope package imported."""
    run = run_script(hub, tmp_path, "-X", "importtime")
    assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / "models" / "openai--whisper-small"
    assert run.stdout == f"\nopenai/whisper-small: verified and installed in {folder} (modelscope@{MS_HEAD})\n"
    imported = {line.split("|")[-1].strip() for line in re.findall(r"import time:[^\n]*", run.stderr)}
    assert "modelscope_hub._download" in imported and not imported & {"torch", "modelscope"}
    shown = [part for part in re.split(r"[\r\n]", re.sub(r"import time:[^\n]*\n", "", run.stderr)) if part]
    line = re.compile(r"openai/whisper-small: +\d+\.\d%  \S+ MiB of \S+ MiB  (-|\S+ MiB/s)  ETA (\?|\d+ s)(  \S+)?")
    assert shown and [part for part in shown if not line.fullmatch(part.rstrip())] == []
    assert "100.0%" in shown[-1]


def test_the_script_still_shows_errors(hub, tmp_path):  # noqa: F811
    """With modelscope's bars and INFO lines off, a failure still says what failed: our error line, and
    modelscope's own error line for the file."""
    weights = weights_of(hub)
    hub.bad.add(weights)
    run = run_script(hub, tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert f"error: {weights} of openai/whisper-small does not match the checksum" in run.stderr
    assert f"ERROR   | modelscope_hub.download | Failed to download {weights}" in run.stderr
    assert "Downloading" not in run.stderr.replace(f"Failed to download {weights}", "")  # no bar, no INFO line
