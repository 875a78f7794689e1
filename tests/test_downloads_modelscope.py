"""ModelScope downloads through the ``modelscope`` package's own ``snapshot_download``, against the local
server of test_downloads.py answering what that client asks (MODELSCOPE_DOMAIN + MODELSCOPE_URL_SCHEME):
progress with speed and ETA, resume after a dropped connection, after modelscope gave up and after a Stop,
a checksum mismatch refused with nothing published, a full disk refused before anything is fetched."""

from __future__ import annotations

import json
import threading

import pytest

from pipelines.studio import downloads
from tests.test_downloads import REPO, hub, tiny_repo  # noqa: F401

pytest.importorskip("modelscope")
FILES = "/api/v1/models/AI-ModelScope/whisper-small/repo/files"
BLOB = "/api/v1/models/AI-ModelScope/whisper-small/repo"


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
    assert meta["revision"] and downloads.find_downloaded(REPO, tmp_path)[1].startswith("modelscope@")
    total = sum(len(d) for d in hub.files.values())
    assert seen[-1][0] == total and all(t == total for _, t, _, _, _ in seen)
    assert [d for d, *_ in seen] == sorted(d for d, *_ in seen)  # bytes only grow
    assert any(speed > 0 and eta is not None for _, _, speed, eta, _ in seen[:-1])  # speed and ETA move
    assert {f for *_, f in seen if f} <= set(hub.files)
    # what modelscope's client asked: the file list at a revision, then each file at that revision
    assert (FILES, {"Revision": "master", "Recursive": "True"}, None) in hub.ms_asked
    fetched = sorted(q["FilePath"] for path, q, _ in hub.ms_asked if path == BLOB and q["Revision"] == "master")
    assert fetched == sorted(hub.files)


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
    assert len(lists) == 3  # ours, modelscope's first snapshot, the one started again
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
