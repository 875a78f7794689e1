"""More of start.bat, run for real under Wine's cmd.exe, with stand-ins for Python, pip and nvidia-smi
(tests/test_launchers_wine_fakes.py explains them; the sandbox is test_launchers_wine_box.py).

Requires ``wine`` and ``x86_64-w64-mingw32-gcc``; without them the tests skip, unless
CINESCRIBE_REQUIRE_WINE=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations


import pytest

from tests.test_launchers import SMI_RTX4090_WIN, SMI_RTX5090_576
from tests.test_launchers_wine_box import WineBox, box, wine  # noqa: F401
from tests.test_launchers_wine_fakes import CU, ROOT, pytestmark, win  # noqa: F401


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


def test_unreachable_pytorch_index_falls_back_to_a_cpu_build_and_says_how_to_get_cuda(box):
    box.gpu(SMI_RTX4090_WIN)
    result = box.run(FAKE_PIP_FAIL="download.pytorch.org", FAKE_PIP_INDEX="2.13.0, 2.11.0")
    assert result.returncode == 0, result.out
    installs = [c for c in box.pip_calls() if c[0] == "install" and any(a.startswith("torch==") for a in c)]
    assert installs == [["install", "torch==2.11.0+cu126", "--index-url", CU + "cu126"], ["install", "torch==2.11.0"]]
    said = [line for line in result.out.splitlines() if "cannot be reached" in line]
    assert len(said) == 1 and "CPU-only" in said[0] and "start.bat --update" in said[0], result.out
    assert "torch 2.11.0 imports" in result.stdout
    assert len(box.app_runs()) == 1
