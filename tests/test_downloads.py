"""Model downloads against local servers on 127.0.0.1 that answer like the Hugging Face API (HF_ENDPOINT)
and ModelScope's (MODELSCOPE_DOMAIN; the file list at a Revision as ModelScope answers it: ``LatestCommitter``
with an empty ``Id`` and the head's ``ShortId``, each file's last commit in ``Revision``; each file with a
Range, the modelscope client's region probe): progress, resume after a dropped connection, checksum mismatch,
a full disk, a source that is down, delete. The repo is a tiny real Whisper saved with save_pretrained.
ModelScope's own cases (its client fetches those files) are in test_downloads_modelscope.py."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from pipelines.studio import downloads, model_sources

REPO = "openai/whisper-small"
MS_HEAD = "5d3a1f0e9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a49"  # ModelScope master's head: it changed config.json
MS_OLDER = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"  # the commit that added the other files; tag v1.0.0
MS_REFS = {"master": MS_HEAD, "v1.0.0": MS_OLDER}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> dict[str, bytes]:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("whisper")
    config = transformers.WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                                        decoder_ffn_dim=16, num_mel_bins=8, max_source_positions=8,
                                        max_target_positions=8, decoder_start_token_id=1, pad_token_id=0)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class Hub:
    """One server playing both APIs; ``drop_after`` cuts a file's first answer short; ``bad`` lies about a sha."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.drop_after, self.bad, self.down, self.ranges = files, None, set(), set(), []
        self.listings = 0  # Hugging Face file lists asked for
        self.ms_asked = []  # ModelScope: (path, query, Range) of each request
        self.ms_refs = dict(MS_REFS)  # ModelScope's branches and tags: the commit each points at
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                kind = "ms" if url.path.startswith("/api/v1/") else "hf"
                if kind in hub.down:
                    return self.send_error(503)
                query = dict(urllib.parse.parse_qsl(url.query))
                if kind == "ms":
                    hub.ms_asked.append((url.path, query, self.headers.get("Range")))
                if url.path == "/api/v1/repos/internalAccelerationInfo":  # the client's region probe: none here
                    return self.json({"Code": 200, "Data": {"InternalRegionQueryAddress": ""}})
                if url.path == f"/api/models/{REPO}/revision/main":
                    hub.listings += 1
                    return self.json({"sha": "c0ffee" * 6 + "abcd", "siblings": [
                        {"rfilename": n, "size": len(d), "lfs": {"sha256": hub.sha(n), "size": len(d)}}
                        for n, d in hub.files.items()]})
                if url.path.startswith("/api/v1/models/AI-ModelScope/whisper-small/repo/files"):
                    return self.json(hub.ms_files(query.get("Revision", "master")))
                if url.path == "/api/v1/models/AI-ModelScope/whisper-small/repo" and "Revision" in query:
                    return self.blob(query["FilePath"])
                prefix = f"/{REPO}/resolve/"
                if url.path.startswith(prefix):
                    return self.blob(urllib.parse.unquote(url.path[len(prefix):].split("/", 1)[1]))
                self.send_error(404)

            def json(self, data):
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def blob(self, name):
                data = hub.files[name]
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                hub.ranges.append((name, start))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:  # as real servers answer a range; modelscope's client checks where it starts
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if hub.drop_after and name.endswith(".safetensors") and start == 0:
                    self.wfile.write(data[:hub.drop_after])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the server drops the connection mid-file
                    return
                self.wfile.write(data[start:])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def sha(self, name: str) -> str:
        return "0" * 64 if name in self.bad else hashlib.sha256(self.files[name]).hexdigest()

    def ms_files(self, ref: str) -> dict:
        """ModelScope's repo/files answer: ``LatestCommitter.Id`` empty, ``ShortId`` the head's first 8."""
        head = self.ms_refs.get(ref, ref)
        files = [{"Name": Path(n).name, "Path": n, "Type": "blob", "Size": len(d), "Sha256": self.sha(n),
                  "IsLFS": n.endswith(".safetensors"), "Mode": "33188", "CommittedDate": 1735000000,
                  "Revision": head if n == "config.json" else MS_OLDER} for n, d in self.files.items()]
        return {"Code": 200, "Success": True, "Message": "success", "RequestId": "req-1", "Data": {
            "Files": files, "IsVisual": 0, "LatestCommitter": {
                "Id": "", "ShortId": head[:8], "Title": "update", "CommittedDate": 1735000000,
                "ParentIds": [MS_OLDER[:8]] if head != MS_OLDER else []}}}


@pytest.fixture
def hub(tiny_repo, monkeypatch, tmp_path_factory):
    server = Hub(tiny_repo)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url.split("://")[1])
    monkeypatch.setenv("MODELSCOPE_URL_SCHEME", "http://")
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    modelscope_home = tmp_path_factory.mktemp("modelscope")  # the client's session id and cache, not ~
    monkeypatch.setenv("MODELSCOPE_HOME", str(modelscope_home))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(modelscope_home / "cache"))
    monkeypatch.setattr(downloads, "RETRIES", 3)
    yield server
    server.server.shutdown()


def test_download_reports_progress_verifies_and_lands_where_the_loader_looks(hub, tmp_path):
    seen = []
    folder = downloads.download_model(REPO, tmp_path, source="huggingface",
                                      on_progress=lambda p: seen.append((p.done, p.total, p.state)))
    assert folder == tmp_path / "openai--whisper-small"
    for name, data in hub.files.items():
        assert (folder / name).read_bytes() == data
    total = sum(len(d) for d in hub.files.values())
    assert seen[-1][0] == total and all(t == total for _, t, _ in seen)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)  # bytes only grow
    meta = json.loads((folder / downloads.SIDECAR).read_text())
    assert meta["source"] == "huggingface" and meta["revision"].startswith("c0ffee")
    found = downloads.find_downloaded(REPO, tmp_path)
    assert found[0] == folder and found[1].startswith("huggingface@c0ffee")
    assert downloads.model_state(REPO, tmp_path)["state"] == "on disk"
    transformers = pytest.importorskip("transformers")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder)
    assert model.config.d_model == 16


def test_resume_after_the_server_drops_the_connection_mid_file(hub, tmp_path):
    hub.drop_after = 1000
    folder = downloads.download_model(REPO, tmp_path, source="huggingface")
    weights = next(n for n in hub.files if n.endswith(".safetensors"))
    assert (weights, 0) in hub.ranges and (weights, 1000) in hub.ranges  # went on from byte 1000
    assert (folder / weights).read_bytes() == hub.files[weights]


def test_checksum_mismatch_is_refused_and_nothing_is_published(hub, tmp_path):
    weights = next(n for n in hub.files if n.endswith(".safetensors"))
    hub.bad.add(weights)
    with pytest.raises(downloads.DownloadError, match="does not match the checksum"):
        downloads.download_model(REPO, tmp_path, source="huggingface")
    assert downloads.find_downloaded(REPO, tmp_path) is None
    assert not (tmp_path / "openai--whisper-small").exists()
    assert not list((tmp_path / ".partial").rglob(weights + "*"))


def test_full_disk_is_refused_before_anything_is_fetched_with_the_numbers(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "free_space", lambda path: 10 << 20)
    with pytest.raises(downloads.DownloadError) as error:
        downloads.download_model(REPO, tmp_path, source="huggingface")
    assert "Not enough disk space" in str(error.value) and "10.0 MiB free" in str(error.value)
    assert hub.ranges == [] and not (tmp_path / ".partial").exists()


def test_auto_uses_modelscope_when_hugging_face_is_down(hub, tmp_path):
    hub.down.add("hf")
    folder = downloads.download_model(REPO, tmp_path, source="auto")
    meta = json.loads((folder / downloads.SIDECAR).read_text())
    assert meta["source"] == "modelscope" and meta["source_repo"] == "AI-ModelScope/whisper-small"
    assert sorted(p.name for p in folder.iterdir() if p.name != downloads.SIDECAR) == sorted(
        Path(n).name for n in hub.files)


def test_modelscope_only_for_the_repos_it_carries(hub, tmp_path):
    with pytest.raises(downloads.DownloadError, match="does not carry"):
        downloads.download_model("ali-vilab/i2vgen-xl", tmp_path, source="modelscope")
    assert model_sources.modelscope_name("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def test_the_modelscope_commit_is_read_as_modelscope_gives_it():
    """ModelScope's repo/files: LatestCommitter.Id is often empty; ShortId starts the head's full id, which is
    the Revision of each file the head commit touched."""
    files = [{"Path": "a", "Revision": MS_OLDER}, {"Path": "b", "Revision": MS_HEAD}]
    short = {"Id": "", "ShortId": MS_HEAD[:8]}
    assert model_sources.modelscope_commit({"Files": files, "LatestCommitter": short}, "master") == MS_HEAD
    assert model_sources.modelscope_commit({"Files": files[:1], "LatestCommitter": short}, "master") == MS_HEAD[:8]
    full = {"Id": MS_OLDER, "ShortId": MS_OLDER[:8]}
    assert model_sources.modelscope_commit({"Files": files, "LatestCommitter": full}, "master") == MS_OLDER
    assert model_sources.modelscope_commit({"Files": files, "LatestCommitter": None}, "v1.0.0") == "v1.0.0"


def test_delete_refuses_a_model_in_use_and_frees_the_space(hub, tmp_path):
    downloads.download_model(REPO, tmp_path, source="huggingface")
    with pytest.raises(downloads.DownloadError, match="in use"):
        downloads.delete_model(REPO, tmp_path, in_use=lambda repo: "resident in the GPU worker")
    assert downloads.find_downloaded(REPO, tmp_path)
    freed = downloads.delete_model(REPO, tmp_path)
    assert freed >= sum(len(d) for d in hub.files.values())
    assert downloads.model_state(REPO, tmp_path)["state"] == "missing"


def test_manager_downloads_in_the_background(hub, tmp_path):
    manager = downloads.DownloadManager(tmp_path)
    manager.start(REPO, source="huggingface")
    final = manager.wait(REPO, timeout=60)
    assert final.state == "done", final.message
    assert final.done == final.total > 0


def test_the_loader_finds_a_download_and_names_its_source(hub, tmp_path):
    from pipelines.device.loading import resolve_source
    from pipelines.families.catalogue import CATALOGUE
    from pipelines.studio.settings import Settings

    downloads.download_model(REPO, tmp_path / "data" / "models", source="modelscope")
    folder, revision = resolve_source(CATALOGUE["whisper-small"], Settings(data_dir=tmp_path / "data"))
    assert folder == tmp_path / "data" / "models" / "openai--whisper-small" and revision == f"modelscope@{MS_HEAD}"


def test_download_models_cli_resumes_shows_progress_and_lists(hub, tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import download_models

    hub.drop_after = 1000
    assert download_models.main(["whisper-small", "--source", "huggingface", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "verified and installed" in out.out and "huggingface@c0ffee" in out.out
    assert download_models.main(["--list", "--data-dir", str(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "on disk" in rows["whisper-small"] and "missing" in rows["whisper-large-v3"]
    assert download_models.main(["nonsense", "--data-dir", str(tmp_path)]) == 2


def test_a_failed_download_resumes_when_started_again(hub, tmp_path, monkeypatch):
    """As after a restart: the first run gives up mid-file, the second goes on from the bytes on disk."""
    hub.drop_after = 1000
    monkeypatch.setattr(downloads, "RETRIES", 0)
    with pytest.raises(downloads.DownloadError, match="resume"):
        downloads.download_model(REPO, tmp_path, source="huggingface")
    assert downloads.model_state(REPO, tmp_path)["state"] == "partly downloaded"
    weights = next(n for n in hub.files if n.endswith(".safetensors"))
    folder = downloads.download_model(REPO, tmp_path, source="huggingface")
    assert hub.ranges.count((weights, 1000)) == 1 and (folder / weights).read_bytes() == hub.files[weights]


def answered(sizes: downloads.SizeLookups, source: str = "huggingface") -> tuple[int | None, str]:
    """``sizes.size`` once its background lookup is over."""
    deadline = time.monotonic() + 30
    while (answer := sizes.size(REPO, None, source))[1] == "checking":
        assert time.monotonic() < deadline, "the size lookup never ended"
        time.sleep(0.05)
    return answer


def test_download_size_is_known_before_a_download_and_remembered(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    sizes = downloads.SizeLookups(tmp_path)
    assert sizes.size(REPO, None, "huggingface") == (None, "checking")  # never waits on the network
    assert answered(sizes) == (sum(len(d) for d in hub.files.values()), "")
    assert hub.listings == 1 and not hub.ranges  # the file list only, nothing fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after a restart, offline: still known, not asked again
    assert downloads.SizeLookups(tmp_path).size(REPO, None, "huggingface")[0] == sum(len(d) for d in hub.files.values())
    assert hub.listings == 1


def test_download_size_offline_or_unreachable_is_unknown_with_the_reason(hub, tmp_path, monkeypatch):
    sizes = downloads.SizeLookups(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sizes.size(REPO, None, "huggingface") == (None, "offline: HF_HUB_OFFLINE is set")
    assert sizes.size(REPO, None, "modelscope") == (None, "checking")  # HF_HUB_OFFLINE is Hugging Face's
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub.down.add("hf")
    size, why = answered(sizes)
    assert size is None and why.startswith("unreachable:") and "503" in why
    hub.down.clear()
    assert sizes.size(REPO, None, "huggingface") == (None, why)  # a failure is kept a while, not asked every second
    assert hub.listings == 0
    monkeypatch.setattr(downloads, "SIZE_RETRY_S", 0.0)
    assert answered(sizes)[0] == sum(len(d) for d in hub.files.values())  # then asked again
