"""Stand-ins for running start.bat under Wine's cmd.exe (no tests here): Python, pip, nvidia-smi.

The Wine session and the sandbox folder: test_launchers_wine_box.py; the tests:
test_launchers_wine.py and test_launchers_wine_more.py.

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

import os
import shutil
from pathlib import Path

import pytest


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
    if pip_args[:2] == ["index", "versions"]:  # what "pip's own index" has
        versions = os.environ.get("FAKE_PIP_INDEX", "")
        print(f"torch ({versions.split(',')[0]})\nAvailable versions: {versions}" if versions else "")
        return 0 if versions else 1
    command, rest = pip_args[0], pip_args[1:]
    if command == "config":
        return 0
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
        sys.path.insert(0, str(Path(unix(script)).parent))  # its sibling modules, as Python does
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
