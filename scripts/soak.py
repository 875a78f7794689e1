"""Soak test: hundreds of mixed --demo jobs through the HTTP API, bad inputs among them, a kill -9 halfway.

    python scripts/soak.py --jobs 300 --clients 4            # about 10 minutes on a laptop CPU
    python scripts/soak.py --jobs 24 --clients 3 --json out.json

It starts ``app.py --demo`` in a scratch folder (``--workdir``), with ``CINESCRIBE_TEST_INJECT_OOM`` set so
a few out-of-memory errors are injected into video jobs, and drives it with ``--clients`` concurrent
``gradio_client`` clients: text-to-video, image-to-video and speech-to-text jobs, each good one with a
unique seed or file name, and bad ones in between (corrupt images and audio, absurd numbers, huge or
empty prompts, paths outside the app). When half the jobs are sent it kills the app with SIGKILL
(``taskkill /F`` on Windows) and starts it again on the same folders.

At the end it checks, from the outputs folder and the job store:
- every good job finished exactly once (one clip / one transcript with its tag);
- every bad job was refused with a message;
- the worker never died (``/status`` answers and a last job runs);
- memory did not drift (the app's RSS over the second life, first quarter against last quarter).
It prints these counts, writes them as JSON with ``--json``, and exits 0 only when all hold.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipelines.families.catalogue import DEFAULT_MODEL  # noqa: E402  (after the path is set)

T2V = dict(model_id=DEFAULT_MODEL["t2v"], preset_name="Preview", prompt_text="a cat walking", negative_text="",
           res="240p", asp="16:9", n_frames=9, seconds=0, n_steps=2, cfg=5.0, flow_shift=3.0, seed_value=1,
           frame_rate=16, n_clips=1)
I2V = dict(last_path=None, model_id=DEFAULT_MODEL["i2v"], preset_name="Quick preview", prompt_text="a cat turns its head",
           negative_text="", res="128p", asp="image", fit_mode="crop", n_frames=8, seconds=0, n_steps=2, cfg=9.0,
           flow_shift=0, seed_value=1, frame_rate=16, n_clips=1)
ASR = dict(microphone=None, model="whisper-large-v3", language="auto", task="transcribe", mode="chunked",
           batch_size=0, word_timestamps=False, max_line_chars=42, max_lines=2, max_cue_seconds=7, max_new_tokens=0)


@dataclass
class Item:
    """One job to send: what it is, whether it should succeed, and how its output is recognised."""

    index: int
    kind: str  # t2v, i2v, asr
    good: bool
    label: str
    params: dict
    tag: str = ""  # seed or file stem that names the output of a good job
    outcome: str = ""  # done, refused, lost-connection, error
    message: str = ""
    tries: int = 0
    extra: dict = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_inputs(folder: Path) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = folder / "photo.png"
    Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(image)
    corrupt_image = folder / "corrupt.png"
    corrupt_image.write_bytes(image.read_bytes()[:150])
    audio = folder / "speech.wav"
    rate, seconds = 16000, 3
    t = np.arange(rate * seconds) / rate
    voice = 0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > -0.2)
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((voice * 32767).astype("<i2").tobytes())
    corrupt_audio = folder / "corrupt.wav"
    corrupt_audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(rng.integers(0, 255, 300, dtype=np.uint8)))
    return {"image": image, "corrupt_image": corrupt_image, "audio": audio, "corrupt_audio": corrupt_audio}


def plan(count: int, inputs: dict[str, Path], folder: Path, seed: int) -> list[Item]:
    """A shuffled mix: about 3 in 4 good (half T2V, a quarter each I2V and ASR), the rest bad."""
    rng = random.Random(seed)
    bad_kinds = [
        ("t2v", "empty prompt", {"prompt_text": "   "}),
        ("t2v", "absurd frames", {"n_frames": 10**9}),
        ("t2v", "negative steps", {"n_steps": -5}),
        ("t2v", "huge prompt", {"prompt_text": "a cat " * 20000}),
        ("t2v", "unknown model", {"model_id": "no-such-model"}),
        ("i2v", "corrupt image", {"image": "corrupt_image"}),
        ("i2v", "path outside the app", {"image": "outside"}),
        ("asr", "corrupt audio", {"audio": "corrupt_audio"}),
        ("asr", "absurd line length", {"max_line_chars": -1}),
    ]
    items = []
    for index in range(count):
        if rng.random() < 0.25:
            kind, label, params = rng.choice(bad_kinds)
            defaults = {"i2v": {"image": "image"}, "asr": {"audio": "audio"}}.get(kind, {})
            items.append(Item(index, kind, False, label, {**defaults, **params}))
            continue
        kind = rng.choice(["t2v", "t2v", "i2v", "asr"])
        tag = str(100000 + index)
        params: dict = {"seed_value": int(tag)} if kind != "asr" else {}
        if kind == "asr":  # each good transcription gets a file of its own name: its outputs carry that name
            unique = folder / f"soak-{tag}.wav"
            shutil.copyfile(inputs["audio"], unique)
            params["audio"] = str(unique)
        if kind == "i2v":
            params["image"] = "image"
        items.append(Item(index, kind, True, "good", params, tag=tag))
    return items


class App:
    """``app.py --demo`` as a child process on a fixed port and folders (so a restart finds its queue)."""

    def __init__(self, workdir: Path, port: int, inject_oom: str):
        self.workdir, self.port, self.inject_oom = workdir, port, inject_oom
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}/"

    def start(self, timeout: float = 180) -> None:
        import urllib.request

        log = (self.workdir / "app.log").open("a", encoding="utf-8")
        env = {**os.environ, "CINESCRIBE_TEST_INJECT_OOM": self.inject_oom, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--demo", "--port", str(self.port), "--outputs",
             str(self.workdir / "outputs"), "--data-dir", str(self.workdir / "data")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}; see {self.workdir / 'app.log'}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the app did not start in time")

    def kill(self) -> None:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
        else:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def rss(self) -> int | None:
        try:
            import psutil

            return psutil.Process(self.process.pid).memory_info().rss
        except Exception:
            return None


class Soak:
    def __init__(self, app: App, items: list[Item], inputs: dict[str, Path], clients: int, kill_at: float):
        self.app, self.items, self.inputs, self.clients = app, items, inputs, clients
        self.kill_after = int(len(items) * kill_at) if kill_at > 0 else None
        self.sent = itertools.count()
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.up.set()
        self.killed = False
        self.memory: list[tuple[int, float, int]] = []  # (life, time, rss)
        self.life = 1

    def run(self) -> None:
        threads = [threading.Thread(target=self.client_loop, daemon=True) for _ in range(self.clients)]
        sampler = threading.Thread(target=self.sample_memory, daemon=True)
        sampler.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def sample_memory(self) -> None:
        while True:
            if self.up.is_set():
                rss = self.app.rss()
                if rss:
                    self.memory.append((self.life, time.time(), rss))
            time.sleep(1.0)

    def next_item(self) -> Item | None:
        with self.lock:
            number = next(self.sent)
            if self.kill_after is not None and number == self.kill_after and not self.killed:
                self.restart_app()
            return self.items[number] if number < len(self.items) else None

    def restart_app(self) -> None:
        print(f"  kill -9 after {self.kill_after} jobs sent; starting the app again", flush=True)
        self.up.clear()
        self.app.kill()
        self.killed = True
        self.app.start()
        self.life = 2
        self.up.set()

    def client_loop(self) -> None:
        from gradio_client import Client

        client = None
        while (item := self.next_item()) is not None:
            self.up.wait()
            for _attempt in range(3):
                try:
                    if client is None:
                        client = Client(self.app.url, verbose=False)
                    self.send(client, item)
                    break
                except _ConnectionLost as lost:
                    client = None
                    self.up.wait()
                    time.sleep(1)
                    if not self.accepted_before_crash(item):  # the app never saw it: send it again
                        item.tries += 1
                        continue
                    item.outcome, item.message = "lost-connection", str(lost)
                    break

    def send(self, client, item: Item) -> None:
        from gradio_client import handle_file

        params = dict(item.params)
        item.tries += 1
        try:
            if item.kind == "t2v":
                result = client.predict(**{**T2V, **params}, api_name="/t2v")
            elif item.kind == "i2v":
                image = params.pop("image")
                if image == "outside":  # a file of the app's own, named by path instead of uploaded
                    file = {"path": str(ROOT / "app.py"), "meta": {"_type": "gradio.FileData"}}
                else:
                    file = handle_file(str(self.inputs[image]))
                result = client.predict(image_path=file, **{**I2V, **params}, api_name="/i2v")
            else:
                audio = params.pop("audio")
                path = str(self.inputs[audio]) if audio in self.inputs else audio
                result = client.predict(files=[handle_file(path)], **{**ASR, **params}, api_name="/asr")
        except Exception as error:
            text = str(error)
            if _is_connection_error(error):
                raise _ConnectionLost(text) from error
            item.outcome, item.message = "refused", text.strip() or type(error).__name__
            return
        item.outcome = "done"
        item.message = str(result[0])[:200]

    def accepted_before_crash(self, item: Item) -> bool:
        """Whether the app recorded the job before it died (it will run it, or did): look in its store."""
        if not item.good:
            return True  # bad jobs are refused before the queue; nothing to resend
        from pipelines.studio.store import JobStore

        store = JobStore(self.app.workdir / "data" / "jobs.sqlite3")
        try:
            for row in store.rows(limit=100_000):
                request = row.request
                seed = getattr(request, "seed", None)
                files = getattr(request, "files", None) or []
                if str(seed) == item.tag or any(Path(f).stem == f"soak-{item.tag}" for f in files):
                    return True
        finally:
            store.close()
        return False


class _ConnectionLost(Exception):
    pass


def _is_connection_error(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("connect", "closed", "reset", "refused", "eof", "disconnect", "timed out",
                                         "502", "503", "remoteprotocol", "readerror"))


def wait_for_queue(app: App, timeout: float) -> bool:
    from gradio_client import Client

    client = Client(app.url, verbose=False)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict(api_name="/status")
        if status.get("queue") == 0 and not status.get("current"):
            return True
        time.sleep(1)
    return False


def check(items: list[Item], workdir: Path, memory: list[tuple[int, float, int]]) -> dict:
    from pipelines.studio.history import History
    from pipelines.studio.store import JobStore

    outputs = workdir / "outputs"
    names = [p.name for p in outputs.rglob("*") if p.is_file() and ".trash" not in p.parts]
    clips = [n for n in names if n.endswith(".mp4")]
    transcripts = [n for n in names if n.endswith(".srt")]
    good = [i for i in items if i.good]
    bad = [i for i in items if not i.good]
    counts_by_tag = {}
    for item in good:
        if item.kind == "asr":
            counts_by_tag[item.index] = sum(1 for n in transcripts if f"soak-{item.tag}" in n)
        else:
            counts_by_tag[item.index] = sum(1 for n in clips if n.removesuffix(".mp4").split("_")[-1] == item.tag)
    exactly_once = [i for i in good if counts_by_tag[i.index] == 1]
    missing = [i for i in good if counts_by_tag[i.index] == 0]
    duplicated = [i for i in good if counts_by_tag[i.index] > 1]
    refused_with_message = [i for i in bad if i.outcome == "refused" and i.message]
    bad_not_refused = [i for i in bad if i not in refused_with_message]
    store = JobStore(workdir / "data" / "jobs.sqlite3")
    rows = store.rows(limit=100_000)
    store.close()
    states = {state: sum(1 for r in rows if r.state == state) for state in {r.state for r in rows}}
    oom_retried = 0
    for sidecar in outputs.rglob("*.json"):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        oom_retried += bool(isinstance(data, dict) and (data.get("fast_path") or {}).get("out_of_memory_retries"))
    history = len(History(outputs).entries())

    # Memory over the second life, after a warm-up (the first quarter loads the three models): the median
    # of the next quarter against the median of the last quarter.
    second = [rss for life, _, rss in memory if life == 2] or [rss for _, _, rss in memory]
    quarter = max(1, len(second) // 4)
    first_q = statistics.median(second[quarter:2 * quarter]) if len(second) >= 4 else 0
    last_q = statistics.median(second[-quarter:]) if len(second) >= 4 else 0
    drift = (last_q - first_q) / first_q if first_q else 0.0
    return {
        "jobs": len(items),
        "good": len(good),
        "good_exactly_once": len(exactly_once),
        "good_missing": [(i.index, i.kind, i.outcome, i.message[:120]) for i in missing],
        "good_duplicated": [(i.index, i.kind, counts_by_tag[i.index]) for i in duplicated],
        "good_lost_connection_but_finished": sum(1 for i in good if i.outcome == "lost-connection"
                                                 and counts_by_tag[i.index] == 1),
        "bad": len(bad),
        "bad_refused_with_message": len(refused_with_message),
        "bad_not_refused": [(i.index, i.label, i.outcome, i.message[:120]) for i in bad_not_refused],
        "bad_examples": sorted({(i.label, i.message.splitlines()[-1][:140]) for i in refused_with_message}),
        "store_states": states,
        "clips_recovered_from_injected_oom": oom_retried,
        "history_entries": history,
        "rss_mib_second_life": {"second_quarter": round(first_q / 2**20, 1), "last_quarter": round(last_q / 2**20, 1),
                                "drift": round(drift, 3), "samples": len(second)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of jobs sent before kill -9 (0: none)")
    parser.add_argument("--inject-oom", default="denoise:2", help="CINESCRIBE_TEST_INJECT_OOM for the app")
    parser.add_argument("--max-drift", type=float, default=0.15, help="allowed RSS growth over the second life")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one, removed)")
    parser.add_argument("--demo-models", type=Path, help="a data folder whose demo_models to reuse")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cinescribe-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.demo_models and (args.demo_models / "demo_models").is_dir():
        (workdir / "data").mkdir(exist_ok=True)
        shutil.copytree(args.demo_models / "demo_models", workdir / "data" / "demo_models", dirs_exist_ok=True)
    inputs_folder = workdir / "data" / "inputs"
    inputs = make_inputs(inputs_folder)
    items = plan(args.jobs, inputs, inputs_folder, args.seed)
    app = App(workdir, free_port(), args.inject_oom)
    started = time.time()
    print(f"Soak: {len(items)} jobs, {args.clients} clients, workdir {workdir}", flush=True)
    app.start()
    try:
        soak = Soak(app, items, inputs, args.clients, args.kill_at)
        soak.run()
        drained = wait_for_queue(app, 600)
        from gradio_client import Client

        final = Client(app.url, verbose=False).predict(**{**T2V, "seed_value": 999999}, api_name="/t2v")
        alive = drained and "Done" in str(final[0])
    finally:
        app.stop()
    summary = check(items, workdir, soak.memory)
    summary["worker_alive_at_end"] = alive
    summary["killed_and_restarted"] = soak.killed
    summary["seconds"] = round(time.time() - started, 1)
    ok = (summary["good_exactly_once"] == summary["good"] and not summary["bad_not_refused"] and alive
          and summary["rss_mib_second_life"]["drift"] <= args.max_drift)
    summary["ok"] = ok
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    if not args.workdir and ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
