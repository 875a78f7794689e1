"""Nobody gets in who should not: a login on every route, an upload limit, no path out of the app's folders,
users' file names made safe, each user's own jobs, and a loud warning when the page is open to others.

Most tests talk plain HTTP (httpx) to ``python app.py --demo`` started with ``--listen``, ``--auth``,
``--auth-file`` (two users) and ``--max-upload-mb 1``, as a browser or a script would; API calls go
through ``/gradio_api/call/<api_name>`` and its event stream, or through ``gradio_client``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import wave
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

import app as app_module
from pipelines.studio.jobs import JobState, RequestError
from pipelines.tasks.t2v import T2VRequest
from tests.conftest import ROOT, app_data_dir, free_port, start_app, stop_app
from ui.i18n import error_text
from ui.identity import cancel_own_job, check_owner, owner_of

PASSWORDS = {"ana": "pw-ana-1", "bo": "pw-bo-2", "carla": "pw-carla-3"}  # ana, bo: --auth-file; carla: --auth
UPLOAD_LIMIT = 2**20  # --max-upload-mb 1
WARNING_MARK = "NO PASSWORD"


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("locked")
    users = folder / "users.txt"
    users.write_text("# the team\nana:pw-ana-1\n\nbo:pw-bo-2\n", encoding="utf-8")
    served = start_app(folder, data_dir, "--listen", "--auth", "carla:pw-carla-3", "--auth-file", str(users),
                       "--max-upload-mb", "1")
    yield served
    stop_app(served)


def session(served, user: str | None = None) -> httpx.Client:
    """An HTTP client for ``served``: logged in through the login form as ``user``, or not at all."""
    client = httpx.Client(base_url=served.url, timeout=120)
    if user:
        answer = client.post("/login", data={"username": user, "password": PASSWORDS[user]})
        assert answer.status_code == 200, answer.text
    return client


def call(client: httpx.Client, api_name: str, values: dict | None = None) -> tuple[str, object]:
    """Run an API endpoint as ``gradio_client`` does, over plain HTTP: ("complete", outputs) or ("error", message).

    ``values`` name the parameters to set; the others keep the defaults ``/gradio_api/info`` gives.
    """
    parameters = client.get("/gradio_api/info").json()["named_endpoints"][f"/{api_name}"]["parameters"]
    values = dict(values or {})
    data = [values.pop(p["parameter_name"]) if p["parameter_name"] in values else p.get("parameter_default")
            for p in parameters]
    assert not values, f"/{api_name} has no parameter {sorted(values)}"
    answer = client.post(f"/gradio_api/call/{api_name}", json={"data": data})
    assert answer.status_code == 200, answer.text
    stream = client.get(f"/gradio_api/call/{api_name}/{answer.json()['event_id']}").text
    event, payload = "", None
    for block in stream.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") in ("complete", "error"):
            event, payload = fields["event"], json.loads(fields["data"])
    if event == "error":
        payload = (payload or {}).get("error") if isinstance(payload, dict) else payload
    return event, payload


def upload(client: httpx.Client, name: str, content: bytes) -> dict:
    """Upload one file as the page does; returns it as an API file parameter."""
    answer = client.post("/gradio_api/upload", files={"files": (name, content)})
    assert answer.status_code == 200, answer.text
    return {"path": answer.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def silent_wav(seconds: float = 1.0) -> bytes:
    """A quiet 16 kHz WAV: the silence gate answers it without running the model, so the job is quick."""
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * int(16000 * seconds))
    return buffer.getvalue()


def asr_data(files=None, microphone=None) -> dict:
    return {"files": files, "microphone": microphone}


def i2v_data(image, last=None) -> dict:
    return {"image_path": image, "last_path": last, "prompt_text": "a cat"}


# --- the login ----------------------------------------------------------------------------------------


def test_every_route_refuses_without_a_login(locked_app):
    ana, anyone = session(locked_app, "ana"), session(locked_app)
    info = ana.get("/gradio_api/info").json()
    names = [name.lstrip("/") for name in info["named_endpoints"]]
    assert {"t2v", "i2v", "asr", "cancel", "status", "release_vram", "restart"} <= set(names)  # status is a gr.api
    config = ana.get("/config").json()
    assert config["username"] == "ana"
    secret = locked_app.outputs / "2026-01-01" / "120000_t2v_1.json"  # an output, as any job leaves one
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text('{"prompt": "prompt-secret-7731"}', encoding="utf-8")
    file_url = f"/gradio_api/file={secret.resolve()}"
    assert "prompt-secret-7731" in ana.get(file_url).text

    login_page = anyone.get("/")
    assert login_page.status_code == 200 and '"auth_required":true' in login_page.text.replace(" ", "")
    for name in names:  # the login page does not describe the API (Gradio's own page embeds all of it)
        assert f'"/{name}"' not in login_page.text, name
    assert "prompt-secret-7731" not in login_page.text

    refused = []
    for path in ["/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/runs", file_url,
                 "/gradio_api/heartbeat/abc", "/gradio_api/queue/data?session_hash=abc", "/gradio_api/user",
                 "/gradio_api/token", "/gradio_api/app_id", "/gradio_api/upload_progress?upload_id=abc", "/monitoring",
                 "/gradio_api/call/status/abc"]:
        refused.append(("GET", path, anyone.get(path)))
    posts = [("/gradio_api/upload", {"files": {"files": ("a.wav", silent_wav())}}),
             ("/gradio_api/cancel", {"json": {"session_hash": "abc", "fn_index": 0, "event_id": "abc"}}),
             ("/gradio_api/reset", {"json": {"event_id": "abc"}}),
             ("/gradio_api/stream/abc", {"json": {"data": [], "fn_index": 0, "session_hash": "abc"}})]
    for name in names:
        posts += [(f"/gradio_api/call/{name}", {"json": {"data": []}}),
                  (f"/gradio_api/call/v2/{name}", {"json": {}}),
                  (f"/gradio_api/run/{name}", {"json": {"data": []}})]
    for fn_index, _ in enumerate(config["dependencies"]):  # every event of the page, named or not
        posts.append(("/gradio_api/queue/join", {"json": {"data": [], "fn_index": fn_index, "session_hash": "abc"}}))
    for path, body in posts:
        refused.append(("POST", path, anyone.post(path, **body)))
    opened = [(method, path, answer.status_code) for method, path, answer in refused if answer.status_code != 401]
    assert opened == [], f"answered without a login: {opened}"
    assert all("prompt-secret-7731" not in answer.text for _, _, answer in refused)

    wrong = anyone.post("/login", data={"username": "ana", "password": "pw-bo-2"})
    assert wrong.status_code in (400, 401) and anyone.get("/config").status_code == 401
    with pytest.raises(Exception):
        Client(locked_app.url, verbose=False).predict(api_name="/status")
    # Logged in, through gradio_client as any script: the users of --auth and of --auth-file alike.
    for user in ("carla", "bo"):
        status = Client(locked_app.url, auth=(user, PASSWORDS[user]), verbose=False).predict(api_name="/status")
        assert status["device"] == "cpu"
    assert ana.get(file_url).status_code == 200 and ana.get("/gradio_api/runs").status_code != 401


@pytest.mark.browser
def test_the_login_page_still_logs_in_a_browser(locked_app):
    """The guard leaves the login page what it needs: a real browser logs in and gets the studio."""
    pytest.importorskip("playwright")
    from tests.test_browser import _MISSING, CHROMIUM, CHROMIUM_ARGS

    if _MISSING:
        pytest.skip(_MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(locked_app.url)
            page.locator("input[type=password]").wait_for(timeout=60_000)
            assert page.locator("#t2v-prompt").count() == 0
            page.locator("input").first.fill("bo")
            page.locator("input[type=password]").fill(PASSWORDS["bo"])
            page.get_by_role("button", name="Login").click()
            page.locator("#t2v-prompt").wait_for(timeout=60_000)
        finally:
            browser.close()


# --- uploads --------------------------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_and_the_app_goes_on(locked_app):
    ana = session(locked_app, "ana")
    answer = ana.post("/gradio_api/upload", files={"files": ("long.wav", b"\0" * (UPLOAD_LIMIT + 1))})
    assert answer.status_code == 413
    assert "maximum allowed size" in answer.text and str(UPLOAD_LIMIT) in answer.text
    kept = [p for p in (locked_app.data / "tmp").rglob("*") if p.is_file() and p.stat().st_size > UPLOAD_LIMIT]
    assert kept == []  # nothing of it stayed on disk
    assert ana.get("/config").json()["max_file_size"] == UPLOAD_LIMIT  # the page refuses it before sending, too
    small = upload(ana, "short.wav", silent_wav(0.5))
    assert Path(small["path"]).read_bytes() == silent_wav(0.5)
    assert ana.get("/gradio_api/info").status_code == 200


def test_a_file_that_is_not_what_it_claims_gets_a_clear_message(locked_app):
    ana = session(locked_app, "ana")
    event, message = call(ana, "i2v", i2v_data(upload(ana, "photo.png", b"this is text, not a picture")))
    assert event == "error" and "photo.png" in message and "not an image this app can read" in message
    event, message = call(ana, "asr", asr_data([upload(ana, "song.mp3", b"not a sound at all " * 20)]))
    assert event == "error" and "song.mp3" in message and "could not be read as audio or video" in message
    assert call(ana, "status")[0] == "complete"  # the app goes on


# --- paths and file names -----------------------------------------------------------------------------


def test_no_parameter_reaches_a_file_outside_the_app(locked_app):
    ana = session(locked_app, "ana")
    as_file = [{"path": path, "meta": {"_type": "gradio.FileData"}}
               for path in ("../../etc/passwd", "/etc/passwd", str(ROOT / "app.py"))]
    attempts = [("i2v", i2v_data(f)) for f in as_file] + [("i2v", i2v_data(None, f)) for f in as_file]
    attempts += [("i2v", i2v_data("/etc/passwd")), ("i2v", i2v_data({"path": "/etc/passwd"}))]
    attempts += [("asr", asr_data([f])) for f in as_file] + [("asr", asr_data(None, as_file[0]))]
    attempts += [("asr", asr_data(["../../etc/passwd"]))]
    for api_name, data in attempts:
        event, message = call(ana, api_name, data)
        assert event == "error" and isinstance(message, str), (api_name, data, message)
        # Gradio refuses them before our handler runs: not an uploaded file, or not a file parameter at all.
        assert "not uploaded by a user" in message or "'meta' field must be" in message, message
        assert "root:" not in message
    for path in ("/etc/passwd", f"{locked_app.outputs.resolve()}/../../../../../etc/passwd", str(ROOT / "app.py"),
                 "..%2F..%2F..%2Fetc%2Fpasswd"):
        answer = ana.get(f"/gradio_api/file={path}")
        assert answer.status_code in (403, 404) and "root:" not in answer.text, (path, answer.status_code)
    assert call(ana, "status")[0] == "complete"


def test_each_user_sees_only_their_own_jobs_and_their_file_names_are_made_safe(locked_app):
    """ana's uploads are called ``../../我的 录音;rm -rf ~.wav`` and ``..\\..\\a:b*c?.wav``: her outputs and the
    names inside her zip are plain names in the outputs folder, her sidecars say the job is hers, and her
    history holds it while bo's does not (and the other way round)."""
    names = {"ana": ["../../我的 录音;rm -rf ~.wav", "..\\..\\a:b*c?.wav"], "bo": ["..\\bo's take.wav"]}
    plain = re.compile(r"\d{6}_asr_[\w.-]+\.(txt|srt|vtt|json)")
    results = {}
    for user, uploads in names.items():
        client = session(locked_app, user)
        event, outputs = call(client, "asr", asr_data([upload(client, name, silent_wav()) for name in uploads]))
        assert event == "complete", outputs
        sidecar = json.loads(outputs[-1])
        assert sidecar["runtime"]["owner"] == user
        folder = locked_app.outputs / sidecar["created"][:10]
        downloads = [Path(f["path"]) for f in outputs[-2]]
        written = {p.name for p in downloads if p.suffix != ".zip"}
        assert len(written) == 4 * len(uploads)
        for name in written:
            assert plain.fullmatch(name) and (folder / name).is_file(), name
        zips = [p for p in downloads if p.suffix == ".zip"]
        if len(uploads) > 1:
            with zipfile.ZipFile(zips[0]) as archive:
                assert set(archive.namelist()) == written
        results[user] = written
    found = list(locked_app.outputs.parent.rglob("*录音*"))  # anywhere in the app's folder
    uploaded = locked_app.data / "tmp"  # her upload, and the copies Gradio serves for download
    assert found and all(p.parent.parent in (locked_app.outputs, uploaded) for p in found), found
    for user, other in (("ana", "bo"), ("bo", "ana")):
        history = Client(locked_app.url, auth=(user, PASSWORDS[user]), verbose=False).predict(
            task="asr", state="", api_name="/history_list")
        seen = {Path(f).name for entry in history for f in entry["files"]}
        assert results[user] <= seen and not results[other] & seen, (user, seen)


def test_owners_and_stopping_someone_elses_job(worker):
    assert owner_of(gr.Request(username="ana", session_hash="s1")) == "ana"
    assert owner_of(gr.Request(session_hash="s1")) == "s1"  # no login: the browser session
    assert owner_of(None) == ""
    started, gate = threading.Event(), threading.Event()

    def hold():  # keeps the worker busy between jobs, so the job below waits in the queue
        started.set()
        gate.wait(60)

    holder = threading.Thread(target=worker.run_exclusive, args=(hold, 90), daemon=True)
    holder.start()
    assert started.wait(30)
    try:
        job = worker.submit("t2v", T2VRequest(prompt="a cat", resolution="240p", frames=5, steps=1), owner="ana")
        with pytest.raises(RequestError) as refused:
            cancel_own_job(worker, job.id, gr.Request(username="bo", session_hash="s2"))
        assert refused.value.key == "not_your_job" and str(refused.value)
        assert "其他用户" in error_text("zh", refused.value.key, refused.value.params, str(refused.value))
        assert job.state == JobState.QUEUED and not job.cancelled
        check_owner(job, gr.Request(username="ana"))  # no error: it is hers
        assert cancel_own_job(worker, job.id, gr.Request(username="ana", session_hash="s3"))
        assert job.state == JobState.CANCELLED
        assert cancel_own_job(worker, "no-such-job", gr.Request(username="ana")) is False
    finally:
        gate.set()
        holder.join(30)


# --- the start-up warning -----------------------------------------------------------------------------


def test_the_open_access_warning_is_loud_and_only_when_needed():
    assert app_module.open_access_warning("127.0.0.1", share=False, auth=False) == []
    assert app_module.open_access_warning("0.0.0.0", share=True, auth=True) == []
    listen = "\n".join(app_module.open_access_warning("0.0.0.0", share=False, auth=False))
    assert WARNING_MARK in listen and "--auth" in listen and "--listen" in listen
    share = "\n".join(app_module.open_access_warning("127.0.0.1", share=True, auth=False))
    assert WARNING_MARK in share and "INTERNET" in share


def test_listening_without_a_password_warns_in_the_log(tmp_path, data_dir, locked_app):
    assert WARNING_MARK not in locked_app.log.read_text(encoding="utf-8")  # --listen with --auth: no warning
    log = tmp_path / "open.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--demo", "--listen", "--port", str(free_port()),
         "--outputs", str(tmp_path / "outputs"), "--data-dir", str(app_data_dir(tmp_path, data_dir))],
        cwd=ROOT, stdout=log.open("w", encoding="utf-8"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while WARNING_MARK not in log.read_text(encoding="utf-8") and process.poll() is None:
            assert time.time() < deadline, log.read_text(encoding="utf-8")
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(30)
    text = log.read_text(encoding="utf-8")
    assert WARNING_MARK in text and "--auth user:password" in text
    assert sum("WARNING" in line and "!!" in line for line in text.splitlines()) >= 5  # a banner, not one line


def test_a_bad_upload_limit_is_refused_at_start(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "--max-upload-mb", "-5", "--outputs",
                             str(tmp_path / "o"), "--data-dir", str(tmp_path / "d")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--max-upload-mb" in result.stderr
    assert app_module.parse_args([]).max_upload_mb == app_module.DEFAULT_MAX_UPLOAD_MB == 2048


def test_status_hides_the_details_of_another_users_running_job():
    from pipelines.studio.jobs import Job
    from ui.identity import sees_job, visible_status

    job = Job(task="t2v", request=None, owner="ana", notes=["a private prompt note"])
    job.update(state=JobState.RUNNING)
    status = {"queue": 1, "current": job.snapshot()}
    for_bo = visible_status(status, job, gr.Request(username="bo"))
    assert for_bo["current"]["id"] == "" and "notes" not in for_bo["current"] and for_bo["current"]["state"] == "running"
    assert visible_status(status, job, gr.Request(username="ana"))["current"]["id"] == job.id
    assert visible_status(status, job, gr.Request(session_hash="s1"))["current"]["id"] == job.id  # no login: one studio
    assert not sees_job(job, gr.Request(username="bo")) and sees_job(None, gr.Request(username="bo"))
