"""Portability of the app's own code to Windows, checked on Linux.

Two checks:

* A scan of app.py, pipelines/, ui/ and scripts/ (the syntax tree, not text search) for calls
  that exist only on POSIX systems (fork, exec* restarts, SIGKILL, fcntl, getuid, ...), POSIX
  paths (/tmp, /dev/null, $HOME), process spawning at module level (Windows re-imports the main
  module in every child process), and text files opened without ``encoding=`` (Windows would use
  the legacy code page, e.g. cp1252 or cp936, and Chinese text would crash or turn into garbage).
  A use that is guarded (``if sys.platform ...``, ``hasattr(os, ...)``, ``try: ... except
  ImportError``) is fine; so is a line marked ``# portable: <why>``.
* Every module imported with ``sys.platform`` set to "win32" and the POSIX-only functions,
  signals and modules taken away (as they are on Windows), then the path handling run: the
  output names, the atomic writes, the log file, Gradio's temporary folder and allowed paths
  (in test_portability_windows.py, which takes its lists of POSIX-only names from here).

Findings in code that other people own are listed in KNOWN_FINDINGS and marked
``xfail(strict=True)``: the test turns red (XPASS) when one is fixed, so that the entry is
removed, and a new finding anywhere fails ``test_no_new_findings``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["app.py", "pipelines", "ui", "scripts"]

# --------------------------------------------------------------------------------------------
# What is POSIX-only
# --------------------------------------------------------------------------------------------

POSIX_OS_FUNCTIONS = {
    "fork", "forkpty", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
    "setsid", "setpgid", "setpgrp", "getpgid", "getpgrp", "killpg", "getuid", "geteuid", "getgid",
    "getegid", "setuid", "setgid", "getgroups", "initgroups", "nice", "getloadavg", "mkfifo", "mknod",
    "chown", "lchown", "fchown", "uname", "sync", "sysconf", "pathconf", "fpathconf", "statvfs",
    "fstatvfs", "wait3", "wait4", "WNOHANG", "ttyname", "openpty", "login_tty", "posix_spawn",
    "posix_spawnp", "sched_setaffinity", "sched_getaffinity", "pipe2", "register_at_fork",
    "O_NONBLOCK", "getresuid", "getresgid",
}
POSIX_SIGNAL_NAMES = {
    "SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGPIPE", "SIGSTOP",
    "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGVTALRM", "SIGPROF", "SIGIO",
    "alarm", "setitimer", "getitimer", "pause", "siginterrupt", "pthread_kill", "pthread_sigmask",
    "sigwait", "sigwaitinfo", "sigtimedwait", "sigpending", "SIG_BLOCK", "SIG_UNBLOCK", "SIG_SETMASK",
}
POSIX_MODULES = {"fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "posix", "crypt", "spwd",
                 "syslog", "readline", "curses", "posixpath"}
POSIX_PATHS = re.compile(r"^(/tmp(/|$)|/dev/|/proc/|/var/|/etc/|/usr/|~/)")
SPAWNING_CALLS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                  "subprocess.check_output", "os.system", "os.popen", "multiprocessing.Process",
                  "multiprocessing.Pool", "Process", "Pool", "ProcessPoolExecutor"}
PATHLIB_ONLY = ("pipelines/", "ui/")  # and app.py; scripts/ may use os.path (torch_build: stdlib only)
SUBPROCESS_TEXT_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
TEXT_MODE = re.compile(r"^[rwxa+tU]*$")
GUARD_WORDS = ("sys.platform", "os.name", "platform.system", "hasattr(", "WINDOWS", "POSIX", "IS_WIN")
# Exceptions that a missing function or module raises: a try/except catching one guards the use.
GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "AttributeError", "NotImplementedError", "Exception"}


@dataclass(frozen=True)
class Finding:
    path: str  # relative, with /
    line: int
    kind: str
    code: str  # the offending expression's source, one line

    @property
    def key(self) -> tuple[str, str, str]:  # line numbers move; the code rarely does
        return self.path, self.kind, self.code

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.code}"


def scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in files if "__pycache__" not in f.parts]


def _dotted(node: ast.AST) -> str:
    """``os.path.join`` for an Attribute/Name chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: Path, source: str):
        self.rel = path.relative_to(ROOT).as_posix()
        self.lines = source.splitlines()
        self.source = source
        self.findings: list[Finding] = []
        self.stack: list[ast.AST] = []
        self.os_aliases = {"os"}
        self.signal_aliases = {"signal"}
        self.imported_names: dict[str, str] = {}  # local name -> module.attr (from os import fork)
        self.pathlib_only = self.rel == "app.py" or self.rel.startswith(PATHLIB_ONLY)

    # -- bookkeeping ------------------------------------------------------------------------
    def visit(self, node):
        self.stack.append(node)
        try:
            super().visit(node)
        finally:
            self.stack.pop()

    def _guarded(self) -> bool:
        for parent in self.stack[:-1]:
            if isinstance(parent, (ast.If, ast.IfExp, ast.While)):
                test = ast.get_source_segment(self.source, parent.test) or ""
                if any(word in test for word in GUARD_WORDS):
                    return True
            if isinstance(parent, ast.Try):
                for handler in parent.handlers:
                    names = {_dotted(e) for e in (handler.type.elts if isinstance(handler.type, ast.Tuple)
                                                  else [handler.type])} if handler.type else {"Exception"}
                    if names & GUARD_EXCEPTIONS:
                        return True
        return False

    def _report(self, node: ast.AST, kind: str, guardable: bool = True) -> None:
        """Record a finding; ``guardable``: a platform check or try/except makes it fine (a
        missing function); encodings are never fine, whatever the guard."""
        line = getattr(node, "lineno", 0)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if "# portable:" in text or (guardable and self._guarded()):
            return
        code = " ".join((ast.get_source_segment(self.source, node) or text).split())
        self.findings.append(Finding(self.rel, line, kind, code[:120]))

    def _in_function(self) -> bool:
        return any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) for p in self.stack[:-1])

    def _in_main_guard(self) -> bool:
        for parent in self.stack[:-1]:
            if isinstance(parent, ast.If):
                test = ast.get_source_segment(self.source, parent.test) or ""
                if "__name__" in test and "__main__" in test:
                    return True
        return False

    # -- imports --------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in POSIX_MODULES:
                self._report(node, f"POSIX-only module {alias.name}")
            if alias.name == "os" and alias.asname:
                self.os_aliases.add(alias.asname)
            if alias.name == "signal" and alias.asname:
                self.signal_aliases.add(alias.asname)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        module = node.module or ""
        if node.level == 0 and module.split(".")[0] in POSIX_MODULES:
            self._report(node, f"POSIX-only module {module}")
        for alias in node.names:
            if (module == "os" and alias.name in POSIX_OS_FUNCTIONS) or \
                    (module == "signal" and alias.name in POSIX_SIGNAL_NAMES):
                self._report(node, f"POSIX-only {module}.{alias.name}")
            self.imported_names[alias.asname or alias.name] = f"{module}.{alias.name}"
        self.generic_visit(node)

    # -- attribute uses: os.fork, signal.SIGKILL ----------------------------------------------
    def visit_Attribute(self, node: ast.Attribute):
        base = _dotted(node.value)
        if base in self.os_aliases and node.attr in POSIX_OS_FUNCTIONS:
            self._report(node, f"POSIX-only os.{node.attr}")
        elif base in self.signal_aliases and node.attr in POSIX_SIGNAL_NAMES:
            self._report(node, f"POSIX-only signal.{node.attr}")
        self.generic_visit(node)

    # -- string constants: /tmp, /dev/null -----------------------------------------------------
    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, str) and POSIX_PATHS.match(node.value) and "\n" not in node.value:
            parent = self.stack[-2] if len(self.stack) > 1 else None
            if not isinstance(parent, ast.Expr):  # not a docstring
                self._report(node, "POSIX path literal")

    # -- calls ------------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call):
        name = _dotted(node.func)
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else name
        self._check_text_file(node, name, attr)
        self._check_subprocess(node, name, attr)
        if name in ("multiprocessing.set_start_method", "multiprocessing.get_context", "set_start_method",
                    "get_context") and node.args and isinstance(node.args[0], ast.Constant) \
                and node.args[0].value in ("fork", "forkserver"):
            self._report(node, "fork start method")
        if name in {f"{alias}.getenv" for alias in self.os_aliases} | {"getenv"} and node.args \
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == "HOME":
            self._report(node, "$HOME (not set on Windows: use Path.home())")
        resolved = self.imported_names.get(name, name)
        at_import = not self._in_function() and not self._in_main_guard()
        if at_import and resolved in SPAWNING_CALLS:
            self._report(node, "process spawned at import (Windows re-imports modules in child processes)")
        if at_import and name in ("main", "sys.exit") and not any(
                isinstance(p, ast.ClassDef) for p in self.stack[:-1]):
            self._report(node, "script body runs at import (put it under if __name__ == '__main__')")
        if self.pathlib_only and name.startswith(tuple(f"{alias}.path." for alias in self.os_aliases)):
            self._report(node, f"{name} (the app uses pathlib)", False)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript):
        if _dotted(node.value) in {f"{alias}.environ" for alias in self.os_aliases} and \
                isinstance(node.slice, ast.Constant) and node.slice.value == "HOME":
            self._report(node, "$HOME (not set on Windows: use Path.home())")
        self.generic_visit(node)

    def _check_text_file(self, node: ast.Call, name: str, attr: str) -> None:
        if _keyword(node, "encoding") is not None:
            return
        if attr in ("read_text", "write_text"):
            self._report(node, f"{attr}() without encoding=", False)
            return
        mode_arg = None
        if name in ("open", "io.open", "codecs.open"):
            mode_arg = node.args[1] if len(node.args) > 1 else _keyword(node, "mode")
        elif attr == "open" and isinstance(node.func, ast.Attribute) and name not in ("os.open",):
            # Path.open(mode): only when the first argument is a mode string (not Image.open(file))
            first = node.args[0] if node.args else _keyword(node, "mode")
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
                    and TEXT_MODE.match(first.value)) or first is None:
                return
            mode_arg = first
        elif attr in ("NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile"):
            mode_arg = node.args[0] if node.args else _keyword(node, "mode")
            if mode_arg is None:
                return  # default mode is w+b
        elif attr in ("FileHandler", "RotatingFileHandler", "TimedRotatingFileHandler", "WatchedFileHandler"):
            self._report(node, f"logging.{attr} without encoding=", False)
            return
        elif name in ("os.fdopen",):
            mode_arg = node.args[1] if len(node.args) > 1 else _keyword(node, "mode")
        else:
            return
        label = name if name in ("open", "io.open", "codecs.open", "os.fdopen") else attr
        if mode_arg is None:
            self._report(node, f"{label}() in text mode without encoding=", False)
        elif isinstance(mode_arg, ast.Constant) and isinstance(mode_arg.value, str):
            if "b" not in mode_arg.value:
                self._report(node, f"{label}() in text mode without encoding=", False)

    def _check_subprocess(self, node: ast.Call, name: str, attr: str) -> None:
        if attr not in SUBPROCESS_TEXT_CALLS or not (name.startswith("subprocess.") or name == attr
                                                     and self.imported_names.get(name, "").startswith("subprocess.")):
            return
        if _keyword(node, "preexec_fn") is not None:
            self._report(node, "subprocess preexec_fn (not supported on Windows)")
        for option in ("start_new_session", "process_group", "pass_fds"):
            if _keyword(node, option) is not None:
                self._report(node, f"subprocess {option} (POSIX only)")
        text = _is_true(_keyword(node, "text")) or _is_true(_keyword(node, "universal_newlines"))
        if text and _keyword(node, "encoding") is None:
            self._report(node, "subprocess text mode without encoding= (decodes with the Windows code page)", False)


def scan(paths: list[Path] | None = None) -> list[Finding]:
    findings = []
    for path in paths or scanned_files():
        source = path.read_text(encoding="utf-8")
        scanner = _Scanner(path, source)
        scanner.visit(ast.parse(source, filename=str(path)))
        findings += scanner.findings
    return findings


if __name__ == "__main__":
    for finding in scan():
        print(finding)


# --------------------------------------------------------------------------------------------
# Findings in code owned by others: xfail(strict=True) until the owner fixes them
# --------------------------------------------------------------------------------------------

KNOWN_FINDINGS: list[tuple[int | str, ...]] = [
    # (path, line when found, kind, code)
]


@pytest.fixture(scope="module")
def findings() -> list[Finding]:
    return scan()


def test_no_new_findings(findings):
    known = {(path, kind, code) for path, _, kind, code in KNOWN_FINDINGS}
    new = [str(f) for f in findings if f.key not in known]
    assert not new, "POSIX-only or encoding problems:\n" + "\n".join(new)


@pytest.mark.parametrize("path, line, kind, code", [
    pytest.param(*known, id=f"{known[0]}:{known[1]}",
                 marks=pytest.mark.xfail(strict=True, reason=f"{known[0]}:{known[1]}: {known[2]} (owner to fix)"))
    for known in KNOWN_FINDINGS
])
def test_known_finding_is_fixed(findings, path, line, kind, code):
    if not (ROOT / path).exists():
        pytest.skip(f"{path} is not in this checkout")
    assert (path, kind, code) not in {f.key for f in findings}


# --------------------------------------------------------------------------------------------
# The scanner itself
# --------------------------------------------------------------------------------------------

SCANNER_CASES = [
    ("import os\nos.fork()\n", ["POSIX-only os.fork"]),
    ("import os, sys\nos.execv(sys.executable, sys.argv)\n", ["POSIX-only os.execv"]),
    ("import os, signal\nos.kill(1, signal.SIGKILL)\n", ["POSIX-only signal.SIGKILL"]),
    ("import fcntl\n", ["POSIX-only module fcntl"]),
    ("from os import getuid\n", ["POSIX-only os.getuid"]),
    ("try:\n    import fcntl\nexcept ImportError:\n    fcntl = None\n", []),
    ("import os, sys\nif sys.platform != 'win32':\n    os.setsid()\n", []),
    ("import os\nif hasattr(os, 'fork'):\n    os.fork()\n", []),
    ("import os\nos.getuid()  # portable: only called on Linux by the caller\n", []),
    ("open('a.txt')\n", ["open() in text mode without encoding="]),
    ("open('a.txt', 'w')\n", ["open() in text mode without encoding="]),
    ("open('a.bin', 'rb')\nopen('a.txt', encoding='utf-8')\n", []),
    ("from pathlib import Path\nPath('x').read_text()\n", ["read_text() without encoding="]),
    ("from pathlib import Path\nPath('x').write_text('t', encoding='utf-8')\nPath('x').read_bytes()\n", []),
    ("from pathlib import Path\nwith Path('x').open('w') as f: pass\n", ["open() in text mode without encoding="]),
    ("from PIL import Image\nImage.open('x.png')\n", []),
    ("import subprocess\ndef f():\n    subprocess.run(['a'], text=True)\n",
     ["subprocess text mode without encoding= (decodes with the Windows code page)"]),
    ("import subprocess\ndef f():\n    try:\n        subprocess.run(['a'], text=True)\n    except OSError:\n"
     "        pass\n", ["subprocess text mode without encoding= (decodes with the Windows code page)"]),
    ("import subprocess\ndef f():\n    subprocess.run(['a'], capture_output=True, encoding='utf-8')\n", []),
    ("import subprocess\ndef f():\n    subprocess.Popen(['a'], start_new_session=True)\n",
     ["subprocess start_new_session (POSIX only)"]),
    ("import subprocess\nsubprocess.run(['a'])\n",
     ["process spawned at import (Windows re-imports modules in child processes)"]),
    ("import subprocess\nif __name__ == '__main__':\n    subprocess.run(['a'])\n", []),
    ("import multiprocessing\nmultiprocessing.set_start_method('fork')\n", ["fork start method"]),
    ("import os\nhome = os.environ['HOME']\n", ["$HOME (not set on Windows: use Path.home())"]),
    ("x = '/tmp/cache'\n", ["POSIX path literal"]),
    ("def f():\n    '/tmp/x is where it used to go'\n", []),
    ("import logging\nlogging.FileHandler('a.log')\n", ["logging.FileHandler without encoding="]),
    ("import tempfile\ntempfile.NamedTemporaryFile('w')\ntempfile.NamedTemporaryFile()\n",
     ["NamedTemporaryFile() in text mode without encoding="]),
    ("import sys\ndef main():\n    return 0\nsys.exit(main())\n",
     ["script body runs at import (put it under if __name__ == '__main__')"] * 2),
    ("import sys\ndef main():\n    return 0\nif __name__ == '__main__':\n    sys.exit(main())\n", []),
]


@pytest.mark.parametrize("source, kinds", SCANNER_CASES, ids=[str(i) for i in range(len(SCANNER_CASES))])
def test_the_scanner_finds_what_it_should(tmp_path, monkeypatch, source, kinds):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    path = tmp_path / "case.py"
    path.write_text(source, encoding="utf-8")
    assert [f.kind for f in scan([path])] == kinds


def test_the_app_uses_pathlib_not_os_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    source = "import os\np = os.path.join('a', 'b')\n"
    for rel in ("pipelines/case.py", "scripts/case.py"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(source, encoding="utf-8")
    assert [str(f) for f in scan([tmp_path / "pipelines/case.py", tmp_path / "scripts/case.py"])] == [
        "pipelines/case.py:2: os.path.join (the app uses pathlib): os.path.join('a', 'b')"]
