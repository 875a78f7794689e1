"""The Wine session (one prefix, the compiled shim, the bridge) and a Cinescribe folder with
stand-ins for start.bat (see test_launchers_wine_fakes.py for why they are built this way)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_launchers_fakes import FAKE_TORCH, LAUNCHER_SCRIPTS, LauncherRecord, _drop_log_option
from tests.test_launchers_wine_fakes import BRIDGE, FAKE_APP, FAKE_PYTHON, FAKE_SMI, MINGW, ROOT, SHIM_C, win


# --------------------------------------------------------------------------------------------
# Session: one Wine prefix, the compiled shim, the bridge
# --------------------------------------------------------------------------------------------


@dataclass
class Wine:
    env: dict[str, str]
    shim: Path
    spool: Path
    prefix_seconds: float


@pytest.fixture(scope="session")
def wine(tmp_path_factory) -> Wine:
    base = tmp_path_factory.mktemp("wine")
    shim_c = base / "shim.c"
    shim_c.write_text(SHIM_C, encoding="utf-8")
    shim = base / "shim.exe"
    subprocess.run([MINGW, "-O2", "-municode", "-s", "-o", str(shim), str(shim_c)], check=True,
                   capture_output=True, timeout=120)
    spool = base / "spool"
    spool.mkdir()
    fake_python = base / "fake_python.py"
    fake_python.write_text(f"FAKE_TORCH = {FAKE_TORCH!r}\n" + FAKE_PYTHON, encoding="utf-8")
    bridge = spool / "bridge"
    bridge.write_text(BRIDGE.format(python=sys.executable, fake_python=fake_python), encoding="utf-8")
    bridge.chmod(0o755)
    direct = spool / "direct-python"
    direct.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_python}" --direct "$FAKE_DIRECT_EXE" "$@"\n',
                      encoding="utf-8")
    direct.chmod(0o755)

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CINESCRIBE_", "PIP_", "FAKE_", "VIRTUAL_ENV", "PYTHON", "WINE", "DISPLAY"))}
    env.update(WINEPREFIX=str(base / "prefix"), WINEDEBUG="-all", WINEARCH="win64",
               WINEDLLOVERRIDES="mscoree,mshtml=",  # no Mono / Gecko install dialogs
               SHIM_SPOOL=win(spool), PYTHONDONTWRITEBYTECODE="1", LC_ALL="C.UTF-8")
    started = time.monotonic()
    try:
        subprocess.run(["wineboot", "--init"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(["wineserver", "-w"], env=env, capture_output=True, timeout=300)
        prefix_seconds = time.monotonic() - started
        # One wineserver for the whole session (each `wine cmd` then starts in well under a
        # second), and Wine's background processes started now, with no pipes to inherit.
        subprocess.run(["wineserver", "-p60"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        subprocess.run(["wine", "cmd", "/c", "ver"], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        print(f"\n[wine] prefix created in {prefix_seconds:.1f} s")
        yield Wine(env, shim, spool, prefix_seconds)
    finally:
        # Ends this prefix's wineserver and every Wine process it serves (nothing else).
        subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60)


# --------------------------------------------------------------------------------------------
# A Cinescribe folder with stand-ins
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr


class WineBox(LauncherRecord):
    def __init__(self, root: Path, wine: Wine, folder: str = "cinescribe", *, venv: bool = True,
                 pythons: dict[str, dict] | None = None):
        self.root, self.wine = root, wine
        self.repo = root / folder
        (self.repo / "scripts").mkdir(parents=True)
        shutil.copyfile(ROOT / "start.bat", self.repo / "start.bat")  # bytes: keeps CRLF
        for name in LAUNCHER_SCRIPTS:
            shutil.copyfile(ROOT / "scripts" / name, self.repo / "scripts" / name)
        (self.repo / "requirements.txt").write_text("torch>=2.4\ngradio-stand-in\n", encoding="utf-8")
        (self.repo / "app.py").write_text(FAKE_APP, encoding="utf-8")
        self.bin = root / "bin"
        self.bin.mkdir()
        shutil.copyfile(wine.shim, self.bin / "py.exe")
        smi = self.bin / "nvidia-smi"
        smi.write_text(FAKE_SMI, encoding="utf-8")
        smi.chmod(0o755)
        self.installs = {}
        for version, info in (pythons if pythons is not None else {"3.12": {"version": "3.12.7"}}).items():
            home = root / "Programs" / f"Python{version.replace('.', '')}"
            self.add_python(home, info)
            self.installs[version] = home / "python.exe"
        if venv:
            self.add_python(self.repo / ".venv" / "Scripts", {"version": "3.12.7"})
            (self.repo / ".venv" / "Lib" / "site-packages").mkdir(parents=True)
            (self.repo / ".venv" / "pyvenv.cfg").write_text("version = 3.12.7\n", encoding="utf-8")
        self.calls = root / "calls.jsonl"
        self.app_state = root / "app.json"
        self.smi_answer = root / "smi.csv"

    def add_python(self, folder: Path, info: dict) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.wine.shim, folder / "python.exe")
        (folder / "fake-python.json").write_text(json.dumps({"bits": 64, **info}), encoding="utf-8")
        return folder / "python.exe"

    def gpu(self, answer: str | None) -> None:
        if answer is None:
            self.smi_answer.unlink(missing_ok=True)
        else:  # nvidia-smi on Windows ends its lines with CRLF
            self.smi_answer.write_bytes(answer.replace("\n", "\r\n").encode())

    def run(self, command: str = '"{bat}"', *, codes=(0,), cwd: Path | None = None, stdin: str | None = None,
            no_pause: bool = True, **env: str) -> Result:
        """Run ``command`` (a cmd line; ``{bat}`` is start.bat's Windows path) under Wine's cmd.

        The path comes in through a variable: cmd reads run.bat in the OEM code page, which
        cannot spell every folder name; the environment is Unicode."""
        for path in (self.calls, self.app_state):
            path.unlink(missing_ok=True)
        script = self.root / "run.bat"
        lines = ["@echo off", f'set "PATH={win(self.bin)};%PATH%"',
                 command.format(bat=r"%TEST_REPO%\start.bat"),
                 "exit /b %ERRORLEVEL%"]  # cmd /c gives the batch file's errorlevel back
        script.write_bytes("\r\n".join(lines + [""]).encode())
        run_env = dict(self.wine.env, TEST_REPO=win(self.repo),
                       FAKE_CALLS=str(self.calls), FAKE_APP_STATE=str(self.app_state),
                       FAKE_SMI_ANSWER=str(self.smi_answer), FAKE_APP_CODES=json.dumps(list(codes)),
                       FAKE_PY_INSTALLS=";".join(f"{v}={win(p)}" for v, p in self.installs.items()))
        if no_pause:
            run_env["CINESCRIBE_NO_PAUSE"] = "1"
        run_env.update(env)
        # Files, not pipes: Wine's background processes would keep a pipe open after cmd exits.
        out, err, given = self.root / "stdout.txt", self.root / "stderr.txt", self.root / "stdin.txt"
        given.write_bytes((stdin or "").encode())
        with out.open("wb") as stdout, err.open("wb") as stderr, given.open("rb") as stdin_file:
            code = subprocess.run(["wine", "cmd", "/c", win(script)], cwd=cwd or self.root, env=run_env,
                                  stdin=stdin_file, stdout=stdout, stderr=stderr, timeout=180).returncode
        return Result(code, _text(out.read_bytes()), _text(err.read_bytes()))

    # what happened ------------------------------------------------------------------------
    def all_calls(self) -> list[dict]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text(encoding="utf-8").splitlines()]

    def pip_calls(self) -> list[list[str]]:
        calls = [c["args"][2:] for c in self.all_calls() if c["args"][:2] == ["-m", "pip"]]
        return [_drop_log_option(call) for call in calls if call[:1] not in (["--version"], ["index"], ["config"])]


    def log(self) -> str:
        path = self.repo / "logs" / "setup.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


@pytest.fixture
def box(tmp_path, wine) -> WineBox:
    return WineBox(tmp_path, wine)
