"""start.bat, run for real under Wine's cmd.exe, with stand-ins for Python, pip and nvidia-smi
(tests/test_launchers_wine_fakes.py explains them; the sandbox is test_launchers_wine_box.py).

Requires ``wine`` and ``x86_64-w64-mingw32-gcc``; without them the tests skip, unless
CINESCRIBE_REQUIRE_WINE=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations


import pytest

from tests.test_launchers import SMI_RTX4090_WIN, SMI_RTX5090_560, SMI_RTX5090_576, SMI_RTX5090_581
from tests.test_launchers_wine_box import WineBox, box, wine  # noqa: F401
from tests.test_launchers_wine_fakes import CU, ROOT, pytestmark, win  # noqa: F401

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
