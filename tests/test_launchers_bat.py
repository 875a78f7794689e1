"""start.bat without Wine: line endings, labels, blocks and exit-code checks (a small lint)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch_build as tb  # noqa: E402


BAT = ROOT / "start.bat"


def _bat_lines() -> list[str]:
    return BAT.read_bytes().decode("ascii").split("\r\n")


def test_start_bat_has_crlf_line_endings_only():
    data = BAT.read_bytes()
    assert data.endswith(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n"), "LF-only line in start.bat"
    assert data.count(b"\r") == data.count(b"\r\n"), "lone CR in start.bat"
    assert not data.startswith(b"\xef\xbb\xbf"), "no BOM: cmd would print garbage before @echo off"


def _code_lines():
    for number, line in enumerate(_bat_lines(), 1):
        stripped = line.strip()
        if not stripped or stripped.lower().startswith(("rem ", "rem\t", "::")) or stripped.lower() == "rem":
            continue
        yield number, line


def _unquoted(line: str) -> str:
    line = line.replace("^(", "").replace("^)", "")
    return re.sub(r'"[^"]*"', '""', line)


def test_start_bat_labels_exist():
    labels = {line.strip()[1:].split()[0].lower() for _, line in _code_lines()
              if re.match(r"\s*:[A-Za-z_]", line)}
    missing = []
    for number, line in _code_lines():
        for target in re.findall(r"(?:goto|call)\s+:?([A-Za-z_][\w-]*)", _unquoted(line), flags=re.I):
            if target.lower() != "eof" and target.lower() not in labels:
                if re.search(rf"call\s+{target}\b", line, flags=re.I):
                    continue  # `call program` rather than `call :label`
                missing.append(f"line {number}: {target}")
    assert not missing, missing


def test_start_bat_blocks_are_balanced_and_safe():
    depth = 0
    problems = []
    for number, line in _code_lines():
        code = _unquoted(line)
        if re.match(r"\s*echo[.(]", code, flags=re.I):
            code = code.replace("echo(", "echo ")
        for char in code:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth < 0:
                    problems.append(f"line {number}: unbalanced ')'")
                    depth = 0
        if depth > 0 or line.strip().startswith("("):
            if "%ERRORLEVEL%" in line.upper():
                problems.append(f"line {number}: %ERRORLEVEL% inside a ( ) block is expanded too early")
        if re.search(r"\(.*\becho\b[^&]*\)[^)]*\)", code, flags=re.I):
            problems.append(f"line {number}: ')' in echo text inside a block closes the block")
        if depth != 0 and re.search(r"%(REASON|WARNING|TB_\w+|CD|PY_EXE)%", line):
            problems.append(f"line {number}: user text expanded inside a block")
    assert depth == 0, "unclosed '(' in start.bat"
    assert not problems, problems


def test_start_bat_structure():
    text = BAT.read_text(encoding="ascii")
    lines = [line for _, line in _code_lines()]
    assert lines[0].strip().lower() == "@echo off"
    assert re.search(r"^setlocal\b", text, flags=re.M | re.I)
    assert 'pushd "%~dp0"' in text
    delayed_uses = [line for line in lines if re.search(r"![A-Za-z_%~]", line) and "echo" in line.lower()]
    assert delayed_uses and "EnableDelayedExpansion" in text  # !var! only where it is enabled
    assert "exit /b %APP_CODE%" in text and '"%APP_CODE%"=="42"' in text
    assert "pause" in text and "CINESCRIBE_NO_PAUSE" in text
    for option in ("--cpu", "--update", "--reinstall", "--extras", "--help-launcher"):
        assert f'"{option}"' in text
    # every path variable is used quoted
    for var in ("VENV", "VENV_PY", "PY_EXE", "LOG", "PLAN", "CONSTRAINTS", "HELPER", "HF_MARKER"):
        for line in lines:
            for match in re.finditer(rf"%{var}%", line):
                before = line[: match.start()]
                assert before.count('"') % 2 == 1 or line.lstrip().lower().startswith("set "), \
                    f"unquoted %{var}% in: {line.strip()}"
    # the Python version check is torch_build's, in both launchers
    assert text.count(tb.PYTHON_CHECK) == 2
    assert (ROOT / "start.sh").read_text().count(tb.PYTHON_CHECK) == 1
    assert re.search(r"py -3\.12.*\n.*py -3\.11.*\n.*py -3\.13", text)
    assert "py -3.10" not in text


def test_start_bat_checks_exit_codes_so_crashes_count_as_failures():
    """`if errorlevel 1` is false for negative exit codes (crashes, 0xC0000005); && and || are
    avoided too (Wine's cmd evaluates them wrongly, so the Wine tests could not cover them)."""
    for number, line in _code_lines():
        code = _unquoted(line)
        assert not re.search(r"\bif\s+(not\s+)?errorlevel\b", code, flags=re.I), f"line {number}: {line}"
        assert "&&" not in code and "||" not in code, f"line {number}: {line}"


def test_gitattributes_pins_line_endings():
    attributes = (ROOT / ".gitattributes").read_text(encoding="utf-8")
    assert re.search(r"^\*\.bat\s+-text\b", attributes, flags=re.M)
    assert re.search(r"^\*\.sh\s+text\s+eol=lf", attributes, flags=re.M)


def test_git_stores_start_bat_with_crlf_and_start_sh_with_lf():
    """Stored as is: a raw download of start.bat (GitHub's "Raw" button) has CRLF too."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run([git, "ls-files", "--eol", "start.bat", "start.sh"], cwd=ROOT,
                          capture_output=True, text=True)
    eol = {line.split()[-1]: line.split()[0] for line in proc.stdout.splitlines()}
    assert eol == {"start.bat": "i/crlf", "start.sh": "i/lf"}, proc.stdout
