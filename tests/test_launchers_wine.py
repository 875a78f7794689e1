"""start.bat, run for real under Wine's cmd.exe, with stand-ins for Python, pip and nvidia-smi.

What is real: Wine's ``cmd.exe`` interpreting start.bat (CRLF, labels, quoting, ``for /f``,
``%*``, ``exit /b``, ``pause``), scripts/torch_build.py choosing the build from a recorded
``nvidia-smi`` answer, and the Windows argument splitting of every command start.bat runs.

The stand-ins, and why they are built this way:

* Wine can start Linux programs, but it does not wait for them and never sees their exit code,
  so a Linux script named ``python.exe`` would not do. Every stand-in program (``py.exe``, each
  ``python.exe``) is a copy of one tiny Windows program (``SHIM_C`` below, compiled with
  mingw-w64). It writes its own path, the current folder, ``PATH`` and its arguments (split by
  the C runtime, exactly as the real ``python.exe`` splits them) to a request file, starts the
  Linux bridge, waits for the bridge's exit-code file and exits with that code. The bridge's
  output goes straight to the shim's standard handles, so cmd's ``>>log 2>&1`` work as usual.
* On the Linux side ``FAKE_PYTHON`` plays Windows' Python: the ``py`` launcher (``-3.12``,
  ``-0p``), ``-c`` snippets (with ``sys.executable`` and ``sys.version_info`` of the Python it
  pretends to be), ``-m venv`` (a ``Scripts\\python.exe`` layout), ``-m pip`` (logs its
  arguments, "installs" a fake torch), ``scripts\\torch_build.py`` (the real file) and
  ``app.py`` (records its arguments and exits with the codes a test asks for). It writes
  CRLF line ends, like Python on Windows.
* ``nvidia-smi``: a stand-in in a folder on the Wine ``PATH``; torch_build.py finds it through
  that ``PATH``.

Requires ``wine`` and ``x86_64-w64-mingw32-gcc`` (Debian: ``apt install wine wine64
gcc-mingw-w64-x86-64-win32``); without them the tests skip, unless CINESCRIBE_REQUIRE_WINE=1
(set by .ci/run), where they fail. A Wine prefix is created once per session (about 10 s).
"""

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

from tests.test_launchers import (
    FAKE_TORCH,
    SMI_RTX4090_WIN,
    SMI_RTX5090_560,
    SMI_RTX5090_576,
    SMI_RTX5090_581,
    LauncherRecord,
    _drop_log_option,
)

ROOT = Path(__file__).resolve().parents[1]
CU = "https://download.pytorch.org/whl/"
MINGW = "x86_64-w64-mingw32-gcc"

_missing = [tool for tool in ("wine", "wineboot", "wineserver", MINGW) if shutil.which(tool) is None]
if _missing and os.environ.get("CINESCRIBE_REQUIRE_WINE") == "1":
    raise RuntimeError(f"CINESCRIBE_REQUIRE_WINE=1 but {', '.join(_missing)} missing "
                       "(apt install wine wine64 gcc-mingw-w64-x86-64-win32)")
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"start.bat under Wine needs {', '.join(_missing)} "
           "(apt install wine wine64 gcc-mingw-w64-x86-64-win32; .ci/run installs them)",
)

# --------------------------------------------------------------------------------------------
# The stand-in Windows program
# --------------------------------------------------------------------------------------------

SHIM_C = r"""
/* Stand-in for a Windows program under Wine: hands the call to a Linux bridge and waits. */
#include <windows.h>
#include <stdio.h>
#include <wchar.h>

static void put(HANDLE file, const wchar_t *text) {
    static char buffer[65536];
    DWORD written;
    int size = WideCharToMultiByte(CP_UTF8, 0, text, -1, buffer, sizeof buffer, NULL, NULL);
    if (size > 0) WriteFile(file, buffer, (DWORD)size, &written, NULL); /* with its NUL */
}

/* cmd's ">nul" is Wine's NUL device, which a Linux process cannot inherit: give it /dev/null. */
static HANDLE quiet(HANDLE handle, DWORD access) {
    DWORD mode;
    if (GetFileType(handle) != FILE_TYPE_CHAR || GetConsoleMode(handle, &mode)) return handle;
    SECURITY_ATTRIBUTES inherit = {sizeof inherit, NULL, TRUE};
    HANDLE null = CreateFileW(L"Z:\\dev\\null", access, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit,
                              OPEN_EXISTING, 0, NULL);
    return null == INVALID_HANDLE_VALUE ? handle : null;
}

int wmain(int argc, wchar_t **argv) {
    static wchar_t spool[MAX_PATH], request[MAX_PATH], temp[MAX_PATH], code_file[MAX_PATH];
    static wchar_t command[4 * MAX_PATH], exe[MAX_PATH], cwd[MAX_PATH], path[32767];
    if (!GetEnvironmentVariableW(L"SHIM_SPOOL", spool, MAX_PATH)) {
        fputs("stand-in: SHIM_SPOOL is not set\n", stderr);
        return 250;
    }
    swprintf(request, MAX_PATH, L"%ls\\%lu-%lu.req", spool, GetCurrentProcessId(), GetTickCount());
    swprintf(temp, MAX_PATH, L"%ls.tmp", request);
    swprintf(code_file, MAX_PATH, L"%ls.rc", request);
    GetModuleFileNameW(NULL, exe, MAX_PATH);
    GetCurrentDirectoryW(MAX_PATH, cwd);
    if (!GetEnvironmentVariableW(L"PATH", path, 32767)) path[0] = 0;
    HANDLE file = CreateFileW(temp, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE) {
        fputs("stand-in: cannot write the request\n", stderr);
        return 251;
    }
    put(file, exe);
    put(file, cwd);
    put(file, path);
    for (int i = 1; i < argc; i++) put(file, argv[i]);
    CloseHandle(file);
    MoveFileW(temp, request);

    swprintf(command, 4 * MAX_PATH, L"\"%ls\\bridge\" \"%ls\"", spool, request);
    STARTUPINFOW startup = {sizeof startup};
    PROCESS_INFORMATION process;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = quiet(GetStdHandle(STD_INPUT_HANDLE), GENERIC_READ);
    startup.hStdOutput = quiet(GetStdHandle(STD_OUTPUT_HANDLE), GENERIC_WRITE);
    startup.hStdError = quiet(GetStdHandle(STD_ERROR_HANDLE), GENERIC_WRITE);
    if (!CreateProcessW(NULL, command, NULL, NULL, TRUE, 0, NULL, NULL, &startup, &process)) {
        fprintf(stderr, "stand-in: cannot start the bridge (error %lu)\n", GetLastError());
        return 252;
    }
    for (DWORD waited = 0; GetFileAttributesW(code_file) == INVALID_FILE_ATTRIBUTES; waited += 5) {
        if (waited > 300000) {
            fputs("stand-in: no answer from the bridge\n", stderr);
            return 253;
        }
        Sleep(5);
    }
    int code = 254;
    FILE *answer = _wfopen(code_file, L"r");
    if (answer) {
        if (fscanf(answer, "%d", &code) != 1) code = 254;
        fclose(answer);
    }
    DeleteFileW(code_file);
    DeleteFileW(request);
    return code;
}
"""

BRIDGE = """#!/bin/sh
# Runs one stand-in call on Linux, then leaves its exit code where the waiting shim looks.
request=$(printf '%s' "$1" | sed -e 's|^[A-Za-z]:||' -e 's|\\\\|/|g')
"{python}" "{fake_python}" "$request"
code=$?
# A Windows exit code Linux cannot give (a crash: 0xC0000005 is -1073741819), if one was asked for.
if [ -f "$request.code" ]; then code=$(cat "$request.code"); rm -f "$request.code"; fi
printf '%s\\n' "$code" >"$request.rc.tmp" && mv -f "$request.rc.tmp" "$request.rc"
"""

# --------------------------------------------------------------------------------------------
# Windows' Python, played on Linux
# --------------------------------------------------------------------------------------------

FAKE_PYTHON = r'''
"""Plays python.exe / py.exe for one call handed over by the Wine shim (see the test module)."""
import collections, json, os, runpy, shutil, sys
from pathlib import Path, PureWindowsPath


def unix(path):
    """Z:\\tmp\\x -> /tmp/x (Wine maps Z: to /); relative paths: backslashes to slashes."""
    text = path.replace("\\", "/")
    if len(text) >= 2 and text[1] == ":":
        if text[0].upper() != "Z":
            raise SystemExit(f"stand-in: no Linux path for {path}")
        text = text[2:] or "/"
    return text


def looks_like_path(arg):
    return "\\" in arg or (len(arg) > 2 and arg[1] == ":" and arg[2] in "\\/")


def log_call(record):
    with open(os.environ["FAKE_CALLS"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


SPOOL = Path(__file__).parent / "spool"
if sys.argv[1] == "--direct":  # torch_build.py (a Linux process here) running "sys.executable -m pip"
    exe, args = sys.argv[2], sys.argv[3:]
    cwd = "Z:" + os.getcwd().replace("/", "\\")
else:  # a call from Windows, handed over by the shim
    exe, cwd, win_path, *args = Path(sys.argv[1]).read_bytes().decode("utf-8").split("\0")[:-1]
    os.chdir(unix(cwd))
    os.environ["PATH"] = os.pathsep.join(
        [unix(p) for p in win_path.split(";") if p[:2].upper() == "Z:"] + ["/usr/bin", "/bin"])
sys.stdout.reconfigure(newline="\r\n")  # print() on Windows writes CRLF
sys.stderr.reconfigure(newline="\r\n")
log_call({"exe": exe, "cwd": cwd, "args": args})
crash = os.environ.get("FAKE_CRASH")
if crash and any(crash in arg for arg in args):  # e.g. torch's DLLs crashing the interpreter
    print("stand-in: access violation", file=sys.stderr)
    Path(sys.argv[1] + ".code").write_text("-1073741819")
    sys.exit(1)

# ---- the py launcher --------------------------------------------------------------------------
installs = dict(item.split("=", 1) for item in os.environ.get("FAKE_PY_INSTALLS", "").split(";") if item)
if PureWindowsPath(exe).name.lower() == "py.exe":
    if args[:1] in (["-0p"], ["--list-paths"]):
        for version, path in installs.items():
            print(f" -V:{version}          {path}")
        sys.exit(0)
    if args and args[0].startswith("-3"):
        wanted, args = args[0][1:], args[1:]
    else:
        wanted = max(installs, key=lambda v: tuple(map(int, v.split("."))), default=None)
    if wanted not in installs:
        print("No suitable Python runtime found", file=sys.stderr)
        print("Pass --list (-0) to see all detected environments on your machine", file=sys.stderr)
        sys.exit(103)
    exe = installs[wanted]

# ---- the Python this exe pretends to be ---------------------------------------------------------
exe_path = Path(unix(exe))
info = json.loads((exe_path.parent / "fake-python.json").read_text(encoding="utf-8"))
version = tuple(int(part) for part in info["version"].split("."))
venv_dir = exe_path.parent.parent if (exe_path.parent.parent / "pyvenv.cfg").is_file() else None
site = venv_dir / "Lib" / "site-packages" if venv_dir else None


def fake_pip(pip_args):
    fail = os.environ.get("FAKE_PIP_FAIL")
    if pip_args[:1] == ["--version"]:
        print("pip 99.0 (stand-in)")
        return 0
    if fail and any(fail in arg for arg in pip_args):
        print(f"ERROR: stand-in failure for {fail}", file=sys.stderr)
        return 1
    command, rest = pip_args[0], pip_args[1:]
    if command == "uninstall":
        for path in list(site.glob("torch*")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif command == "install":
        for arg in rest:
            accelerator = {"xformers": "xformers", "triton-windows": "triton"}.get(arg.split(">")[0])
            if accelerator:  # an importable stand-in, broken on request
                (site / accelerator).mkdir(parents=True, exist_ok=True)
                broken = "raise ImportError('DLL load failed')" if os.environ.get("FAKE_EXTRA_BROKEN") else ""
                (site / accelerator / "__init__.py").write_text(broken)
                (site / accelerator / "ops.py").write_text("")
            name, _, pinned = arg.replace("===", "==").partition("==")
            if name not in ("torch", "torchvision", "torchaudio") or not pinned:
                continue
            dist = site / f"{name}-{pinned}.dist-info"
            dist.mkdir(parents=True, exist_ok=True)
            (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {pinned}\n")
            if name == "torch":
                local = pinned.partition("+")[2]
                cuda = None if local in ("", "cpu") else f"{local[2:-1]}.{local[-1]}"
                (site / "torch").mkdir(exist_ok=True)
                (site / "torch" / "__init__.py").write_text(FAKE_TORCH.format(version=pinned, cuda=cuda))
    print("Successfully installed (stand-in)")
    return 0


def make_venv(target):
    if os.environ.get("FAKE_VENV_FAIL"):
        print("Error: stand-in venv failure", file=sys.stderr)
        return 1
    scripts = Path(target) / "Scripts"
    scripts.mkdir(parents=True)
    shutil.copy(exe_path, scripts / "python.exe")
    (scripts / "fake-python.json").write_text(json.dumps(info), encoding="utf-8")
    (Path(target) / "Lib" / "site-packages").mkdir(parents=True)
    (Path(target) / "pyvenv.cfg").write_text(
        f"home = {PureWindowsPath(exe).parent}\nversion = {info['version']}\n", encoding="utf-8")
    return 0


def run():
    if args[:1] == ["-c"]:
        sys.executable = exe
        sys.version_info = collections.namedtuple(
            "version_info", "major minor micro releaselevel serial")(*version, "final", 0)
        if info.get("bits") == 32:
            sys.maxsize = 2**31 - 1
        if site is not None:
            sys.path.insert(0, str(site))
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        return 0
    if args[:2] == ["-m", "venv"]:
        return make_venv(unix(args[2]))
    if args[:2] == ["-m", "pip"]:
        return fake_pip(args[2:])
    if args[:2] == ["-m", "ensurepip"]:
        return 0
    if not args:
        print("stand-in: interactive Python is not supported", file=sys.stderr)
        return 2
    script = args[0]
    if PureWindowsPath(script).name == "torch_build.py":
        sys.argv = [unix(a) if looks_like_path(a) else a for a in args]
        for key, value in list(os.environ.items()):  # CINESCRIBE_TORCH_INDEX=Z:\wheels, HF_HOME, ...
            if key != "PATH" and value[:3].upper() == "Z:\\":
                os.environ[key] = unix(value)
        # Its subprocesses ("python -m pip ...", "python -c 'import xformers'") come back here.
        os.environ["FAKE_DIRECT_EXE"] = exe
        sys.executable = str(SPOOL / "direct-python")
        if site is not None:
            sys.path.insert(0, str(site))
    else:  # app.py: its arguments exactly as Windows split them
        sys.argv = list(args)
        sys.executable = exe
        os.environ["FAKE_WIN_CWD"] = cwd
    runpy.run_path(unix(script), run_name="__main__")
    return 0


sys.exit(run())
'''

FAKE_APP = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["FAKE_APP_STATE"])
runs = json.loads(state.read_text()) if state.exists() else []
keys = ("CINESCRIBE_LAUNCHER", "PYTHONUTF8", "VIRTUAL_ENV", "HF_HUB_DISABLE_SYMLINKS_WARNING")
runs.append({"argv": sys.argv[1:], "python": sys.executable, "cwd": os.environ["FAKE_WIN_CWD"],
             "env": {key: os.environ.get(key) for key in keys}})
state.write_text(json.dumps(runs))
print("stand-in app: 中文 output")
codes = json.loads(os.environ.get("FAKE_APP_CODES", "[0]"))
sys.exit(codes[min(len(runs), len(codes)) - 1])
'''

FAKE_SMI = """#!/bin/sh
if [ -f "$FAKE_SMI_ANSWER" ]; then cat "$FAKE_SMI_ANSWER"; exit 0; fi
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
"""


def win(path: Path | str) -> str:
    """The Windows path Wine gives a Linux path (drive Z: is the Linux root)."""
    return "Z:" + str(path).replace("/", "\\")


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
        shutil.copyfile(ROOT / "scripts" / "torch_build.py", self.repo / "scripts" / "torch_build.py")
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
        return [_drop_log_option(call) for call in calls if call[:1] != ["--version"]]


    def log(self) -> str:
        path = self.repo / "logs" / "setup.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


@pytest.fixture
def box(tmp_path, wine) -> WineBox:
    return WineBox(tmp_path, wine)


# ============================================================================================
# Tests
# ============================================================================================


VENV_PY_SUFFIX = "\\.venv\\Scripts\\python.exe"


def test_first_run_sets_up_then_restarts_on_42_and_stops_on_0(box):
    box.gpu(SMI_RTX4090_WIN)
    result = box.run('"{bat}" --port 7861 --title "my video studio"', codes=(42, 42, 0))
    assert result.returncode == 0, result.out
    calls = box.pip_calls()
    assert calls[0] == ["install", "torch==2.11.0+cu126", "--index-url", CU + "cu126"]
    constraints = win(box.repo / ".venv" / "cinescribe-constraints.txt")
    assert calls[1] == ["install", "-r", "requirements.txt", "-c", constraints]
    assert len(calls) == 2, calls
    assert (box.repo / ".venv" / "cinescribe-constraints.txt").read_text() == "torch==2.11.0+cu126\n"
    runs = box.app_runs()
    assert len(runs) == 3
    for run in runs:
        assert run["argv"] == ["--port", "7861", "--title", "my video studio"]
        assert run["python"] == win(box.repo) + VENV_PY_SUFFIX
        assert run["cwd"] == win(box.repo)
        assert run["env"]["CINESCRIBE_LAUNCHER"] == "1" and run["env"]["PYTHONUTF8"] == "1"
        assert run["env"]["VIRTUAL_ENV"] == win(box.repo / ".venv")
    assert result.out.count("asked for a restart") == 2
    assert "GPU check passed" in result.stdout
    assert "中文" in result.stdout  # the app's UTF-8 output reaches the console unharmed
    log = box.log()
    assert "RTX 4090 (sm_89)" in log and "cu126" in log
    assert (box.repo / ".venv" / "cinescribe-setup.json").is_file()


@pytest.mark.parametrize("smi, expected", [
    (None, ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]),
    ("NVIDIA GeForce GTX 1080, 6.1, 472.12\n", ["torch==2.7.1+cu118", "--index-url", CU + "cu118"]),
    (SMI_RTX4090_WIN, ["torch==2.11.0+cu126", "--index-url", CU + "cu126"]),
    (SMI_RTX5090_576, ["torch==2.11.0+cu128", "--index-url", CU + "cu128"]),
    (SMI_RTX5090_581, ["torch==2.11.0+cu130", "--index-url", CU + "cu130"]),
], ids=["no-gpu", "gtx1080-old-driver", "rtx4090", "rtx5090-r575", "rtx5090-r580"])
def test_each_gpu_gets_the_right_torch_command(box, smi, expected):
    box.gpu(smi)
    result = box.run()
    assert result.returncode == 0, result.out
    assert box.torch_install() == expected
    assert len(box.app_runs()) == 1


def test_driver_too_old_installs_cpu_and_names_the_driver_needed(box):
    box.gpu(SMI_RTX5090_560)
    result = box.run()
    assert result.returncode == 0, result.out
    assert box.torch_install() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]
    assert "570.65 or newer" in result.stdout and "WARNING" in result.stdout
    assert "560.94" in box.log()


def test_other_exit_codes_end_the_launcher_with_that_code(box):
    box.gpu(None)
    result = box.run('"{bat}" --share', codes=(3, 0))
    assert result.returncode == 3, result.out
    assert len(box.app_runs()) == 1
    assert "exited with code 3" in result.stdout


def test_failed_torch_install_stops_with_its_message(box):
    box.gpu(SMI_RTX4090_WIN)
    result = box.run(FAKE_PIP_FAIL="torch==")
    assert result.returncode == 1, result.out
    assert "Installing PyTorch failed" in result.stdout and "setup.log" in result.stdout
    assert box.app_runs() == []
    assert not (box.repo / ".venv" / "cinescribe-setup.json").exists()


def test_failed_requirements_install_stops(box):
    box.gpu(None)
    result = box.run(FAKE_PIP_FAIL="requirements.txt")
    assert result.returncode == 1 and "Installing requirements.txt failed" in result.stdout
    assert box.app_runs() == []


def test_a_cuda_build_that_cannot_use_the_gpu_stops_with_fixes_and_keeps_the_window_open(box):
    box.gpu(SMI_RTX4090_WIN)
    result = box.run(stdin="\r\n", no_pause=False, FAKE_TORCH_CUDA="0")
    assert result.returncode == 1, result.out
    assert "torch.cuda.is_available() is False" in result.out
    assert "528.33 or newer" in result.out and "start.bat --cpu" in result.out
    assert "Press any key" in result.out  # pause: a double-clicked window stays open
    assert box.app_runs() == []


def test_a_crashing_python_stops_the_set_up(box):
    """Windows exit codes of crashes are negative: `if errorlevel 1` would take them for success."""
    box.gpu(SMI_RTX4090_WIN)
    result = box.run(FAKE_CRASH="verify")
    assert result.returncode == 1, result.out
    assert "PyTorch does not work as installed" in result.out
    assert box.app_runs() == []


def test_launcher_options_are_consumed_and_the_rest_passes_through(box):
    box.gpu(SMI_RTX4090_WIN)
    result = box.run('"{bat}" --cpu --listen --title "a cat, on a mat" "" -- --cpu "x  y"')
    assert result.returncode == 0, result.out
    assert box.app_runs()[0]["argv"] == ["--listen", "--title", "a cat, on a mat", "", "--cpu", "x  y"]
    assert box.torch_install() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]


def test_without_launcher_options_the_app_gets_the_command_line_untouched(box):
    box.gpu(None)
    # (No "%" here: Wine 8's cmd expands text that %* put in the line again; Windows does not.)
    result = box.run('"{bat}" --port=7861 --auth "alice:pw1,bob:pw2" --title "a (draft) & more; x=1"')
    assert result.returncode == 0, result.out
    assert box.app_runs()[0]["argv"] == ["--port=7861", "--auth", "alice:pw1,bob:pw2",
                                         "--title", "a (draft) & more; x=1"]


def test_works_from_any_folder_and_in_a_path_with_spaces_and_brackets(tmp_path, wine):
    box = WineBox(tmp_path, wine, folder="my (video) studio [v2]")
    box.gpu(SMI_RTX5090_576)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = box.run('cd /d "{}" \r\n"{{bat}}" --port 7862'.format(win(elsewhere)), cwd=elsewhere)
    assert result.returncode == 0, result.out
    assert box.torch_install() == ["torch==2.11.0+cu128", "--index-url", CU + "cu128"]
    run = box.app_runs()[0]
    assert run["cwd"] == win(box.repo) and run["argv"] == ["--port", "7862"]
    assert "spaces or brackets" in result.out
    assert (box.repo / "logs" / "setup.log").is_file() and not (elsewhere / "logs").exists()


def test_second_run_skips_set_up_and_reinstalls_only_changed_requirements(box):
    box.gpu(SMI_RTX4090_WIN)
    assert box.run().returncode == 0
    result = box.run()
    assert result.returncode == 0 and box.pip_calls() == [] and len(box.app_runs()) == 1
    (box.repo / "requirements.txt").write_text("torch>=2.4\ngradio-stand-in\nextra-package\n")
    result = box.run()
    assert result.returncode == 0, result.out
    assert [c[:2] for c in box.pip_calls()] == [["install", "-r"]]


def test_update_after_a_driver_upgrade_switches_the_build(box):
    box.gpu(SMI_RTX4090_WIN)
    assert box.run().returncode == 0
    box.gpu("NVIDIA GeForce RTX 4090, 8.9, 581.57\n")
    result = box.run('"{bat}" --update')
    assert result.returncode == 0, result.out
    calls = box.pip_calls()
    assert calls[0] == ["uninstall", "-y", "torch", "torchvision", "torchaudio"]
    assert calls[1] == ["install", "torch==2.11.0+cu130", "--index-url", CU + "cu130"]
    assert calls[2][:2] == ["install", "-r"] and calls[2][-1] == "--upgrade"
    assert box.app_runs()[0]["argv"] == []


def test_help_launcher_prints_usage_and_touches_nothing(box):
    result = box.run('"{bat}" --help-launcher')
    assert result.returncode == 0 and "--reinstall" in result.stdout
    assert box.app_runs() == [] and box.all_calls() == []


def test_creates_the_venv_with_the_py_launcher(tmp_path, wine):
    box = WineBox(tmp_path, wine, venv=False, pythons={"3.14": {"version": "3.14.0"},
                                                      "3.12": {"version": "3.12.7"}})
    box.gpu(None)
    result = box.run()
    assert result.returncode == 0, result.out
    venv_call = next(c for c in box.all_calls() if c["args"][:2] == ["-m", "venv"])
    assert venv_call["exe"] == win(box.installs["3.12"])  # not the newer, unsupported 3.14
    assert (box.repo / ".venv" / "Scripts" / "python.exe").is_file()
    assert box.pip_calls()[0] == ["install", "--upgrade", "pip"]
    assert len(box.app_runs()) == 1


def test_no_suitable_python_is_explained(tmp_path, wine):
    box = WineBox(tmp_path, wine, venv=False, pythons={"3.14": {"version": "3.14.0"},
                                                      "3.9": {"version": "3.9.13"}})
    result = box.run()
    assert result.returncode == 1, result.out
    assert "64-bit Python" in result.out and "python.org" in result.out
    assert not (box.repo / ".venv").exists() and box.app_runs() == []


def test_reinstall_rebuilds_the_environment(box):
    box.gpu(None)
    assert box.run().returncode == 0
    (box.repo / ".venv" / "stale-file").write_text("x")
    result = box.run('"{bat}" --reinstall')
    assert result.returncode == 0, result.out
    assert not (box.repo / ".venv" / "stale-file").exists()
    assert any(c["args"][:2] == ["-m", "venv"] for c in box.all_calls())
    assert box.torch_install() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]


def test_extras_are_pinned_to_torch_one_at_a_time_and_only_warn_on_failure(box):
    box.gpu(SMI_RTX5090_576)
    result = box.run('"{bat}" --extras', FAKE_PIP_FAIL="xformers")
    assert result.returncode == 0, result.out
    constraints = str(box.repo / ".venv" / "cinescribe-constraints.txt")
    extras = [c for c in box.pip_calls() if c[:2] == ["install", "--only-binary=:all:"]]
    assert extras == [
        ["install", "--only-binary=:all:", "-c", constraints, "--extra-index-url", CU + "cu128", "xformers>=0.0.29"],
        ["install", "--only-binary=:all:", "-c", constraints, "--extra-index-url", CU + "cu128",
         "triton-windows>=3.6,<3.7"],
    ]
    assert "xformers>=0.0.29 could not be installed" in result.out and "works without it" in result.out
    assert "triton-windows>=3.6,<3.7 was installed" not in result.out
    assert len(box.app_runs()) == 1


def test_an_extra_that_does_not_load_is_reported(box):
    box.gpu(SMI_RTX4090_WIN)
    result = box.run('"{bat}" --extras', FAKE_EXTRA_BROKEN="1")
    assert result.returncode == 0, result.out
    assert "does not load (ImportError: DLL load failed)" in result.out
    assert len(box.app_runs()) == 1


def test_extras_on_the_cpu_build_are_skipped_with_a_warning(box):
    box.gpu(None)
    result = box.run('"{bat}" --extras')
    assert result.returncode == 0, result.out
    assert "--extras ignored" in result.out and box.torch_install()[0] == "torch==2.11.0+cpu"
    assert not [c for c in box.pip_calls() if "--only-binary=:all:" in c]


def test_torch_index_override_from_the_environment(box, tmp_path):
    wheels = tmp_path / "my wheels"
    wheels.mkdir()
    box.gpu(SMI_RTX4090_WIN)
    result = box.run(CINESCRIBE_TORCH_INDEX=win(wheels), CINESCRIBE_TORCH_SPEC="torch==2.11.0+cu126")
    assert result.returncode == 0, result.out
    # (torch_build.py runs on Linux here, so it sees the folder by its Linux name.)
    assert box.torch_install() == ["torch==2.11.0+cu126", "--no-index", "--find-links", str(wheels)]


def test_an_app_error_keeps_the_window_open(box):
    box.gpu(None)
    result = box.run(codes=(1,), no_pause=False, stdin="\r\n")
    assert result.returncode == 1, result.out
    assert "exited with code 1" in result.out and "Press any key" in result.out


def test_hf_symlink_check_runs_once_and_the_warning_is_silenced(box, tmp_path):
    box.gpu(None)
    result = box.run(HF_HOME=win(tmp_path / "hf"))
    assert result.returncode == 0, result.out
    marker = box.repo / ".venv" / "cinescribe-hf-symlinks.txt"
    assert marker.is_file()  # symlinks work on Linux, so no note was printed here
    assert any("hf-symlinks" in c["args"] for c in box.all_calls())
    assert box.app_runs()[0]["env"]["HF_HUB_DISABLE_SYMLINKS_WARNING"] == "1"
    result = box.run(HF_HOME=win(tmp_path / "hf"))
    assert result.returncode == 0 and not any("hf-symlinks" in c["args"] for c in box.all_calls())


def test_environment_elsewhere_with_cinescribe_venv(tmp_path, wine):
    box = WineBox(tmp_path, wine, folder="Jane Doe (downloads)", venv=False)
    box.gpu(SMI_RTX4090_WIN)
    plain = tmp_path / "cinescribe-venv"
    result = box.run(CINESCRIBE_VENV=win(plain))
    assert result.returncode == 0, result.out
    assert "spaces or brackets" not in result.out
    assert not (box.repo / ".venv").exists() and (plain / "Scripts" / "python.exe").is_file()
    assert (plain / "cinescribe-setup.json").is_file()
    run = box.app_runs()[0]
    assert run["python"] == win(plain / "Scripts" / "python.exe") and run["cwd"] == win(box.repo)


def test_reinstall_never_deletes_a_folder_that_is_not_a_venv(box, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = box.run('"{bat}" --reinstall', CINESCRIBE_VENV=win(precious))
    assert result.returncode == 1, result.out
    assert "not deleting it" in result.out and (precious / "thesis.txt").exists()


def test_a_32_bit_python_is_refused_and_cinescribe_python_is_honoured(tmp_path, wine):
    box = WineBox(tmp_path, wine, venv=False, pythons={"3.12": {"version": "3.12.7", "bits": 32}})
    result = box.run()
    assert result.returncode == 1 and "64-bit Python" in result.out, result.out
    chosen = box.add_python(tmp_path / "Portable Python", {"version": "3.11.9"})
    box.gpu(None)
    result = box.run(CINESCRIBE_PYTHON=win(chosen))
    assert result.returncode == 0, result.out
    venv_call = next(c for c in box.all_calls() if c["args"][:2] == ["-m", "venv"])
    assert venv_call["exe"] == win(chosen)


def test_a_failed_venv_creation_removes_only_what_it_created(tmp_path, wine):
    box = WineBox(tmp_path, wine, venv=False)
    result = box.run(FAKE_VENV_FAIL="1")
    assert result.returncode == 1 and "Could not create the Python environment" in result.out, result.out
    assert not (box.repo / ".venv").exists()
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = box.run(FAKE_VENV_FAIL="1", CINESCRIBE_VENV=win(mine))
    assert result.returncode == 1, result.out
    assert (mine / "notes.txt").exists()


def test_a_trailing_backslash_in_cinescribe_venv_does_not_break_the_arguments(box, tmp_path):
    plain = tmp_path / "venv"
    box.gpu(None)
    result = box.run(CINESCRIBE_VENV=win(plain) + "\\")
    assert result.returncode == 0, result.out
    plan = next(c for c in box.all_calls() if "plan" in c["args"])
    assert plan["args"][plan["args"].index("--venv") + 1] == win(plain)
    assert (plain / "cinescribe-setup.json").is_file()


@pytest.mark.parametrize("folder", ["Wow! cinescribe", "视频 工作室"])
def test_unusual_folder_names(tmp_path, wine, folder):
    """A "!" must not be eaten where delayed expansion is on; Chinese must survive cmd.
    (Not "&": Wine's cmd cannot start a batch file whose quoted path has one; Windows can.)"""
    box = WineBox(tmp_path, wine, folder=folder)
    box.gpu(SMI_RTX4090_WIN)
    result = box.run('"{bat}" --port 7861', codes=(42, 0))
    assert result.returncode == 0, result.out
    assert box.torch_install() == ["torch==2.11.0+cu126", "--index-url", CU + "cu126"]
    assert [run["cwd"] for run in box.app_runs()] == [win(box.repo)] * 2
    log = box.log()
    assert "RTX 4090" in log and "asked for a restart" in log
