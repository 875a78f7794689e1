"""A studio shared on a network: hashed users from ``scripts/users.py``, login throttling, admins and
creators, each user's files and log lines their own.

One ``python app.py --demo`` serves four users of a users file written by ``scripts/users.py``: ana
(admin), bo and cy (creators), dan (creator, whose logins the throttle tests lock). Short lockouts
(``--login-lockout 2 --login-max-lockout 4``) keep the throttle test quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, start_app, stop_app
from tests.test_security import call, silent_wav, upload
from ui.auth_guard import client_address

PASSWORDS = {"ana": "ana-pass-1234", "bo": "bo-pass-5678", "cy": "cy-pass-9012", "dan": "dan-pass-3456"}
ROLES = {"ana": "admin", "bo": "creator", "cy": "creator", "dan": "creator"}
T2V = dict(model_id="wan2.1-t2v-1.3b", preset_name="Preview", res="240p", asp="16:9", n_frames=5, seconds=0,
           n_steps=1, seed_value=7, n_clips=1)


def add_user(users: Path, name: str) -> subprocess.CompletedProcess:
    """``scripts/users.py add`` with the password on standard input, as a script would."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "users.py"), "add", name, "--role", ROLES[name],
                           "--file", str(users)], input=PASSWORDS[name] + "\n", capture_output=True, text=True,
                          timeout=60, check=True)


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("shared")
    users = folder / "users.txt"
    for name in PASSWORDS:
        add_user(users, name)
    served = start_app(folder, data_dir, "--auth-file", str(users), "--login-failures", "3",
                       "--login-lockout", "2", "--login-max-lockout", "4")
    served.users = users
    yield served
    stop_app(served)


def login(served, user: str, password: str | None = None, headers: dict | None = None) -> httpx.Response:
    client = httpx.Client(base_url=served.url, timeout=120)
    return client.post("/login", data={"username": user, "password": password or PASSWORDS[user]},
                       headers=headers or {})


def session(served, user: str) -> httpx.Client:
    client = httpx.Client(base_url=served.url, timeout=120)
    answer = client.post("/login", data={"username": user, "password": PASSWORDS[user]})
    assert answer.status_code == 200, answer.text
    return client


def log_of(client: httpx.Client) -> list[str]:
    """The live log's lines as the ``/log`` API gives them to this user."""
    event, outputs = call(client, "log")
    assert event == "complete", outputs
    return outputs[0]


def test_the_users_file_holds_no_plain_password_and_its_users_log_in(shared_app):
    text = shared_app.users.read_text(encoding="utf-8")
    assert all(password not in text for password in PASSWORDS.values())
    assert text.count(":$scrypt$n=") == len(PASSWORDS) and ":admin" in text and ":creator" in text
    assert login(shared_app, "bo").status_code == 200
    assert login(shared_app, "bo", "bo-pass-wrong").status_code == 400
    assert login(shared_app, "nobody", "whatever-123").status_code == 400
    assert login(shared_app, "bo", "x" * 100_000).status_code == 413  # a huge form is not read whole


def test_wrong_passwords_lock_one_user_from_one_address_for_growing_waits(shared_app):
    statuses, waits = [], []
    for attempt in range(40):
        answer = login(shared_app, "dan", f"wrong-{attempt}-guess")
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            waits.append(int(answer.headers["retry-after"]))
        else:
            assert answer.status_code == 400, answer.text
    assert statuses[:3] == [400, 400, 400] and statuses[3] == 429  # the 4th is refused unchecked
    assert statuses.count(429) >= 30 and waits[0] == 2  # the first lockout: 2 s
    while (answer := login(shared_app, "dan", "wrong-again-guess")).status_code == 429:  # wait the lock out
        time.sleep(int(answer.headers["retry-after"]))
    assert answer.status_code == 400  # checked and wrong: locked again at once, for longer
    # While locked the right password is refused too; so is the right password with a forged address.
    refused = login(shared_app, "dan")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > waits[0]
    assert "try again" in refused.json()["detail"]
    assert login(shared_app, "dan", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 429
    # Another user from the same address is not locked out.
    assert login(shared_app, "cy").status_code == 200
    # After the wait the right password is accepted.
    deadline = time.time() + 60
    while (answer := login(shared_app, "dan")).status_code == 429:
        assert time.time() < deadline
        time.sleep(int(answer.headers["retry-after"]))
    assert answer.status_code == 200
    # Each lockout was logged with the user and the address, never the password tried.
    text = shared_app.log.read_text(encoding="utf-8")
    locked = [line for line in text.splitlines() if "Login locked" in line]
    assert len(locked) >= 2 and all("'dan'" in line and "127.0.0.1" in line for line in locked)
    assert "Login locked for 2 s" in locked[0] and "Login locked for 4 s" in locked[-1]
    assert "wrong-" not in text


def test_forwarded_addresses_count_only_from_a_trusted_proxy():
    headers = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.2")]
    scope = {"client": ("10.0.0.2", 5555), "headers": headers}
    assert client_address(scope, frozenset()) == "10.0.0.2"  # forged or not: ignored without --trusted-proxy
    assert client_address(scope, frozenset({"10.0.0.2"})) == "203.0.113.9"
    assert client_address({"client": ("10.0.0.7", 1), "headers": headers}, frozenset({"10.0.0.2"})) == "10.0.0.7"


def test_a_creator_cannot_use_the_admin_controls(shared_app):
    bo, ana = session(shared_app, "bo"), session(shared_app, "ana")
    for api_name in ("restart", "release_vram", "benchmark", "doctor"):
        event, message = call(bo, api_name)
        assert event == "error" and "admin is needed" in str(message), (api_name, message)
    event, outputs = call(ana, "release_vram")
    assert event == "complete" and outputs
    event, message = call(bo, "models_delete", {"model_id": "wan2.1-t2v-1.3b", "confirm": True})  # the Models API
    assert event == "error" and "admin is needed" in str(message), message
    event, message = call(ana, "models_delete", {"model_id": "wan2.1-t2v-1.3b", "confirm": True})
    assert "admin is needed" not in str(message)  # an admin gets the handler's own answer (nothing to delete here)
    assert call(bo, "status")[0] == "complete"  # the app goes on


def test_each_users_files_uploads_and_log_lines_are_their_own(shared_app):
    bo, cy, ana = session(shared_app, "bo"), session(shared_app, "cy"), session(shared_app, "ana")
    prompt = "bo-private-prompt-5151"
    event, outputs = call(bo, "t2v", {**T2V, "prompt_text": prompt})
    assert event == "complete", outputs
    sidecar = json.loads(outputs[-1])
    folder = shared_app.outputs / sidecar["created"][:10]
    clip = next(folder.glob(f"*_t2v_{T2V['seed_value']}.mp4"))
    spoken = upload(bo, "bo-private-talk.wav", silent_wav())
    event, outputs = call(bo, "asr", {"files": [spoken], "microphone": None})
    assert event == "complete", outputs
    transcripts = [Path(f["path"]) for f in outputs[-2]]
    transcript = next(folder / p.name for p in transcripts if p.suffix == ".txt")
    files = [clip, clip.with_suffix(".json"), transcript, Path(spoken["path"])]
    served_copies = [Path(f["path"]) for f in outputs[-2]]  # Gradio's copies of bo's outputs, in its cache
    for path in [*files, *served_copies]:
        url = f"/gradio_api/file={path.resolve()}"
        assert bo.get(url).status_code == 200, path
        assert cy.get(url).status_code in (403, 404), path
        assert cy.get(f"/file={path.resolve()}").status_code in (403, 404), path
    for path in files[:3]:
        assert ana.get(f"/gradio_api/file={path.resolve()}").status_code == 200  # an admin reads everyone's
    # cy cannot transcribe bo's upload either: a call naming it is refused before it runs.
    answer = cy.post("/gradio_api/call/asr", json={"data": [[spoken], None]})
    assert answer.status_code == 403
    # The live log: bo reads his job's lines, cy none of them, nor bo's prompt or file names.
    job_lines = [line for line in log_of(bo) if sidecar["job_id"] in line]
    assert job_lines and "bo-private-talk" in "\n".join(log_of(bo)), "bo's log shows his own jobs"
    seen_by_cy = "\n".join(log_of(cy))
    assert sidecar["job_id"] not in seen_by_cy and prompt not in seen_by_cy
    assert "bo-private-talk" not in seen_by_cy and clip.name not in seen_by_cy
    assert sidecar["job_id"] in "\n".join(log_of(ana))
    # History: bo's own jobs for bo, none of them for cy, everyone's for the admin.
    listed = {user: {Path(f).name for entry in call(client, "history_list", {"task": "", "state": ""})[1][0]
                     for f in entry["files"]} for user, client in (("bo", bo), ("cy", cy), ("ana", ana))}
    assert clip.name in listed["bo"] and transcript.name in listed["bo"] and clip.name in listed["ana"]
    assert clip.name not in listed["cy"] and transcript.name not in listed["cy"]


@pytest.mark.browser
def test_the_page_hides_the_admin_controls_from_a_creator(shared_app):
    pytest.importorskip("playwright")
    from tests.test_browser import _MISSING, CHROMIUM, CHROMIUM_ARGS

    if _MISSING:
        pytest.skip(_MISSING)
    from playwright.sync_api import sync_playwright

    shown = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for user in ("ana", "cy"):
                page = browser.new_context().new_page()
                page.goto(shared_app.url)
                page.locator("input[type=password]").wait_for(timeout=60_000)
                page.locator("input").first.fill(user)
                page.locator("input[type=password]").fill(PASSWORDS[user])
                page.get_by_role("button", name="Login").click()
                page.locator("#t2v-prompt").wait_for(timeout=60_000)
                page.get_by_role("tab", name="System").click()
                page.locator("#cs-system-table").wait_for(timeout=30_000)
                page.wait_for_timeout(1500)  # the load events have run
                shown[user] = {button: page.locator(f"#{button}").is_visible()
                               for button in ("cs-release", "cs-restart", "cs-benchmark", "cs-doctor")}
        finally:
            browser.close()
    assert all(shown["ana"].values()), shown
    assert not any(shown["cy"].values()), shown


def test_https_with_a_certificate(tmp_path, data_dir):
    """``--ssl-certfile`` / ``--ssl-keyfile``: the studio answers over HTTPS (a self-signed certificate)."""
    import shutil

    from tests.conftest import app_data_dir, free_port

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    port = free_port()
    log = tmp_path / "app.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--demo", "--port", str(port), "--outputs", str(tmp_path / "outputs"),
         "--data-dir", str(app_data_dir(tmp_path, data_dir)), "--auth", "ana:ana-pass-1234",
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--trusted-proxy", "127.0.0.1",
         "--login-failures", "1", "--login-lockout", "60"],
        cwd=ROOT, stdout=log.open("w", encoding="utf-8"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while "Cinescribe is ready: https://" not in log.read_text(encoding="utf-8"):
            assert process.poll() is None and time.time() < deadline, log.read_text(encoding="utf-8")
            time.sleep(0.5)
        client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=60)
        assert client.post("/login", data={"username": "ana", "password": "ana-pass-1234"}).status_code == 200
        assert client.get("/config").json()["username"] == "ana"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/config", timeout=10)  # plain HTTP is not served
        # Behind a trusted proxy (here: this machine), the forwarded address is the one throttled.
        def via(client_ip: str, password: str) -> int:
            return client.post("/login", data={"username": "ana", "password": password},
                               headers={"X-Forwarded-For": client_ip}).status_code

        assert via("203.0.113.5", "wrong-password") == 400  # one failure locks that address out (60 s)
        assert via("203.0.113.5", "ana-pass-1234") == 429
        assert via("198.51.100.7", "ana-pass-1234") == 200  # another client behind the same proxy
        assert "from 203.0.113.5" in log.read_text(encoding="utf-8")
    finally:
        process.terminate()
        process.wait(30)


def test_file_owners_follow_the_sidecars_zips_thumbnails_and_uploads(tmp_path):
    """``Access.may_read`` over a real outputs folder: sidecars name the owner of every file they list; a
    batch's zip is its files' owner's; a clip's thumbnail its clip's; uploads their uploader's (kept across a
    restart); Gradio's copy of an output follows the output; the trash is the admins'."""
    import zipfile

    from pipelines.studio.users import User, UserBook
    from ui.auth_access import Access

    outputs, uploads = tmp_path / "outputs", tmp_path / "tmp"
    day = outputs / "2026-01-01"
    day.mkdir(parents=True)
    uploads.mkdir()

    def sidecar(stem: str, owner: str, **data) -> None:
        record = {"app": "cinescribe", "runtime": {"owner": owner} if owner else {}, **data}
        (day / f"{stem}.json").write_text(json.dumps(record), encoding="utf-8")

    for stem in ("100000_asr_a", "100000_asr_b"):
        (day / f"{stem}.txt").write_text(f"words of {stem}", encoding="utf-8")
        sidecar(stem, "bo", task="asr", outputs={"txt": f"{stem}.txt"}, source={"name": f"{stem}.wav"})
    with zipfile.ZipFile(day / "100000_asr_batch-2-files.zip", "w") as archive:
        for stem in ("100000_asr_a", "100000_asr_b"):
            archive.write(day / f"{stem}.txt", f"{stem}.txt")
    (day / "110000_t2v_1.mp4").write_bytes(b"not really a clip")
    sidecar("110000_t2v_1", "bo", task="t2v", file="110000_t2v_1.mp4", settings={"prompt": "x"})
    (day / "120000_asr_old.txt").write_text("copied in", encoding="utf-8")
    sidecar("120000_asr_old", "", task="asr", outputs={"txt": "120000_asr_old.txt"})
    (outputs / ".trash").mkdir()
    (outputs / ".trash" / "gone.txt").write_text("deleted", encoding="utf-8")
    book = UserBook([User("ana", "pw", "admin"), User("bo", "pw", "creator"), User("cy", "pw", "creator")])
    access = Access(book, outputs_dir=outputs, upload_dir=uploads, owners_file=tmp_path / "uploads.owners")
    entry = next(e for e in access.history.entries(None) if e.video is not None)
    thumbnail = access.history.thumbnail_path(entry)
    thumbnail.parent.mkdir(parents=True)
    thumbnail.write_bytes(b"jpeg")
    upload = uploads / "abc123" / "talk.wav"
    upload.parent.mkdir()
    upload.write_bytes(b"RIFF bo's voice")
    access.record_upload("bo", [str(upload)])
    copy = uploads / "def456" / "100000_asr_a.txt"  # Gradio's copy of bo's transcript, served to bo
    copy.parent.mkdir()
    copy.write_bytes((day / "100000_asr_a.txt").read_bytes())

    bos = [day / "100000_asr_a.txt", day / "100000_asr_a.json", day / "100000_asr_batch-2-files.zip",
           day / "110000_t2v_1.mp4", thumbnail, copy]
    for path in bos:
        path = path.resolve()
        assert access.may_read("bo", path) and access.may_read("ana", path) and not access.may_read("cy", path), path
    assert access.may_read("cy", (day / "120000_asr_old.txt").resolve())  # unknown owner: everyone's
    trash = (outputs / ".trash" / "gone.txt").resolve()
    assert access.may_read("ana", trash) and not access.may_read("bo", trash)
    assert access.may_read("bo", upload.resolve()) and not access.may_read("cy", upload.resolve())
    assert not access.may_read("ana", upload.resolve())  # uploads are their uploader's alone
    restarted = Access(book, outputs_dir=outputs, upload_dir=uploads, owners_file=tmp_path / "uploads.owners")
    assert not restarted.may_read("cy", upload.resolve()) and restarted.may_read("bo", upload.resolve())
    copy.write_bytes(b"other bytes, same name")  # not a copy of bo's file any more: a file Gradio made
    assert access.may_read("cy", copy.resolve())
    assert Access(None, outputs_dir=outputs).may_read("cy", trash)  # no login: one person's studio


def test_each_viewer_reads_the_general_lines_and_their_own_jobs():
    import logging

    from pipelines.studio.logbuffer import ADMINS_ONLY, RingBufferHandler

    buffer = RingBufferHandler()
    log = logging.getLogger("tests.sharing.log")
    log.addHandler(buffer)
    log.propagate = False
    try:
        log.warning("Job aaaaaaaaaaaa started (t2v)")
        log.warning("Job bbbbbbbbbbbb: wrote 101010_t2v_secret.mp4")
        log.warning("GPU worker ready")
        log.warning("Login locked for bo", extra={"owner": ADMINS_ONLY})
        log.warning("History: moved bo's files", extra={"owner": "bo"})
        log.warning("Job cccccccccccc: of nobody known")
    finally:
        log.removeHandler(buffer)
    owners = {"aaaaaaaaaaaa": "ana", "bbbbbbbbbbbb": "bo"}.get
    assert len(buffer.tail(100)) == 6  # no viewer: every line
    bo = "\n".join(buffer.tail(100, viewer="bo", admin=False, owner_of_job=owners))
    assert "101010_t2v_secret" in bo and "moved bo's" in bo and "GPU worker ready" in bo
    assert "aaaaaaaaaaaa" not in bo and "Login locked" not in bo and "cccccccccccc" not in bo
    ana = buffer.tail(100, viewer="ana", admin=True, owner_of_job=owners)  # an admin by default (no roles)
    assert [line.split(": ", 1)[1] for line in ana] == [
        "Job aaaaaaaaaaaa started (t2v)", "GPU worker ready", "Login locked for bo", "Job cccccccccccc: of nobody known"]
    assert buffer.tail(1, viewer="bo", admin=False, owner_of_job=owners)[0].endswith("moved bo's files")
