"""start.sh end to end in a sandbox with stand-ins (tests/test_launchers_fakes.py): set-up, restarts,
GPU builds, failures, options, and the fallback to pip's own index when PyTorch's is out of reach."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_launchers import (CU, SMI_RTX3090_580, SMI_RTX4090_550, SMI_RTX5090_LINUX,  # noqa: F401
                                  SMI_GTX1080_OLD, SMI_RTX5090_560)
from tests.test_launchers_fakes import ROOT, Sandbox, _out, box, template_venv  # noqa: F401


def test_first_run_sets_up_then_restarts_on_42_and_stops_on_0(box):
    box.gpu(SMI_RTX4090_550)
    proc = box.run("--port", "7861", "--title", "my video studio", codes=(42, 42, 0))
    assert proc.returncode == 0, _out(proc)
    calls = box.pip_calls()
    assert calls[0] == ["install", "torch==2.11.0+cu126", "--index-url", CU + "cu126"]
    constraints = str(box.repo / ".venv" / "cinescribe-constraints.txt")
    assert calls[1] == ["install", "-r", str(box.repo / "requirements.txt"), "-c", constraints]
    assert len(calls) == 2
    assert Path(constraints).read_text() == "torch==2.11.0+cu126\n"
    runs = box.app_runs()
    assert len(runs) == 3
    for run in runs:
        assert run["argv"] == ["app.py", "--port", "7861", "--title", "my video studio"]
        assert run["launcher"] == "1" and run["utf8"] == "1"
        assert run["cwd"] == str(box.repo)
        assert run["python"].startswith(str(box.repo / ".venv"))
    assert _out(proc).count("asked for a restart") == 2
    assert "GPU check passed" in proc.stdout
    log = (box.repo / "logs" / "setup.log").read_text()
    assert "RTX 4090 (sm_89)" in log and "cu126" in log
    assert (box.repo / ".venv" / "cinescribe-setup.json").is_file()


def test_second_run_skips_set_up_and_reinstalls_only_changed_requirements(box):
    box.gpu(SMI_RTX4090_550)
    assert box.run().returncode == 0
    proc = box.run()
    assert proc.returncode == 0 and box.pip_calls() == [] and len(box.app_runs()) == 1
    (box.repo / "requirements.txt").write_text("torch>=2.4\ngradio-stand-in\nextra-package\n")
    proc = box.run()
    assert proc.returncode == 0, _out(proc)
    assert [c[:2] for c in box.pip_calls()] == [["install", "-r"]]


def test_other_exit_codes_end_the_launcher_with_that_code(box):
    box.gpu(None)
    proc = box.run("--share", codes=(3, 0))
    assert proc.returncode == 3
    assert len(box.app_runs()) == 1


def test_launcher_options_are_consumed_and_the_rest_passes_through_unchanged(box):
    box.gpu(SMI_RTX4090_550)
    args = ["--cpu", "--listen", "--prompt=a cat; on a \"mat\"", "", "--", "--cpu", "x  y"]
    proc = box.run(*args)
    assert proc.returncode == 0, _out(proc)
    assert box.app_runs()[0]["argv"] == ["app.py", "--listen", "--prompt=a cat; on a \"mat\"", "", "--cpu", "x  y"]
    assert box.torch_install() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]


@pytest.mark.parametrize("smi, expected", [
    (None, ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]),
    (SMI_GTX1080_OLD, ["torch==2.7.1+cu118", "--index-url", CU + "cu118"]),
    (SMI_RTX4090_550, ["torch==2.11.0+cu126", "--index-url", CU + "cu126"]),
    (SMI_RTX5090_LINUX, ["torch==2.11.0+cu128", "--index-url", CU + "cu128"]),
    (SMI_RTX3090_580, ["torch==2.11.0+cu130", "--index-url", CU + "cu130"]),
])
def test_each_gpu_gets_the_right_torch_command(box, smi, expected):
    box.gpu(smi)
    proc = box.run()
    assert proc.returncode == 0, _out(proc)
    assert box.torch_install() == expected


def test_driver_too_old_installs_cpu_and_says_which_driver_is_needed(box):
    box.gpu(SMI_RTX5090_560)
    proc = box.run()
    assert proc.returncode == 0, _out(proc)
    assert box.torch_install() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]
    assert "570.26 or newer" in _out(proc) and "WARNING" in proc.stderr


def test_failed_torch_install_stops_with_a_message(box):
    box.gpu(SMI_RTX4090_550)
    proc = box.run(FAKE_PIP_FAIL="torch==")
    assert proc.returncode == 1
    assert "Installing PyTorch failed" in proc.stderr and "logs/setup.log" in proc.stderr
    assert box.app_runs() == []
    assert not (box.repo / ".venv" / "cinescribe-setup.json").exists()


def test_failed_requirements_install_stops(box):
    box.gpu(None)
    proc = box.run(FAKE_PIP_FAIL="requirements.txt")
    assert proc.returncode == 1 and "Installing requirements.txt failed" in proc.stderr
    assert box.app_runs() == []


@pytest.mark.parametrize("env, said", [
    ({"FAKE_TORCH_CUDA": "0"}, "torch.cuda.is_available() is False"),
    ({"FAKE_TORCH_KERNEL": "0"}, "no kernel image"),
])
def test_a_cuda_build_that_cannot_use_the_gpu_stops_with_fixes(box, env, said):
    box.gpu(SMI_RTX4090_550)
    proc = box.run(**env)
    assert proc.returncode == 1, _out(proc)
    assert said in proc.stderr
    assert "525.60.13 or newer" in proc.stderr and "./start.sh --cpu" in proc.stderr
    assert box.app_runs() == []


def test_update_after_a_driver_upgrade_switches_the_build(box):
    box.gpu(SMI_RTX4090_550)
    assert box.run().returncode == 0
    box.gpu("NVIDIA GeForce RTX 4090, 8.9, 580.95.05\n")
    assert box.run().returncode == 0 and box.pip_calls() == []  # no re-detection without --update
    proc = box.run("--update")
    assert proc.returncode == 0, _out(proc)
    calls = box.pip_calls()
    assert calls[0] == ["uninstall", "-y", "torch", "torchvision", "torchaudio"]
    assert calls[1] == ["install", "torch==2.11.0+cu130", "--index-url", CU + "cu130"]
    assert calls[2][:2] == ["install", "-r"] and calls[2][-1] == "--upgrade"
    assert "--update" not in box.app_runs()[0]["argv"]


def test_cpu_choice_is_kept_and_announced(box):
    box.gpu(SMI_RTX4090_550)
    assert box.run("--cpu").returncode == 0
    proc = box.run()
    assert box.pip_calls() == [] and "chosen earlier with --cpu" in proc.stdout


def test_extras_use_the_constraints_wheels_only_and_only_warn_on_failure(box):
    box.gpu(SMI_RTX5090_LINUX)
    proc = box.run("--extras", FAKE_PIP_FAIL="xformers")
    assert proc.returncode == 0, _out(proc)
    extras = [c for c in box.pip_calls() if any("xformers" in a for a in c)]
    constraints = str(box.repo / ".venv" / "cinescribe-constraints.txt")
    assert extras == [["install", "--only-binary=:all:", "-c", constraints, "--extra-index-url", CU + "cu128",
                       "xformers>=0.0.29"]]
    assert "xformers>=0.0.29 could not be installed" in proc.stderr and "works without it" in proc.stderr
    assert not any("triton-windows" in a for c in box.pip_calls() for a in c)  # Windows only
    assert len(box.app_runs()) == 1


def test_extras_come_with_the_torch_builds_own_index(box):
    box.gpu(SMI_RTX3090_580)
    proc = box.run("--extras", CINESCRIBE_EXTRAS="xformers flash-attn")
    assert proc.returncode == 0, _out(proc)
    extras = [c for c in box.pip_calls() if "--only-binary=:all:" in c]
    assert [c[-1] for c in extras] == ["xformers>=0.0.29", "flash-attn>=2.6.3"]
    assert all(" ".join(["--extra-index-url", CU + "cu130"]) in " ".join(c) for c in extras), extras


def test_torch_index_override_from_the_environment(box, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    box.gpu(SMI_RTX4090_550)
    proc = box.run(CINESCRIBE_TORCH_INDEX=str(wheels), CINESCRIBE_TORCH_SPEC="torch==2.11.0+cu126")
    assert proc.returncode == 0, _out(proc)
    assert box.torch_install() == ["torch==2.11.0+cu126", "--no-index", "--find-links", str(wheels)]


def test_help_launcher_prints_usage_and_touches_nothing(box):
    proc = box.run("--help-launcher")
    assert proc.returncode == 0 and "--reinstall" in proc.stdout
    assert box.app_runs() == [] and box.pip_calls() == []


def test_creates_the_venv_when_missing(tmp_path):
    box = Sandbox(tmp_path, template=None)
    box.gpu(None)
    proc = box.run(CINESCRIBE_PYTHON=sys.executable)
    assert proc.returncode == 0, _out(proc)
    assert (box.repo / ".venv" / "bin" / "python").exists()
    assert box.pip_calls()[0] == ["install", "--upgrade", "pip"]
    assert len(box.app_runs()) == 1


def test_unsuitable_python_is_refused(tmp_path):
    box = Sandbox(tmp_path, template=None)
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 'Python 3.9.18'\nexit 1\n")
    old.chmod(0o755)
    proc = box.run(CINESCRIBE_PYTHON=str(old))
    assert proc.returncode == 1
    assert "3.11-3.13" in proc.stderr
    assert not (box.repo / ".venv").exists()


def test_venv_elsewhere_with_cinescribe_venv(tmp_path, template_venv):
    box = Sandbox(tmp_path, template=None)
    elsewhere = tmp_path / "venvs" / "cinescribe"
    shutil.copytree(template_venv, elsewhere, symlinks=True)
    box.gpu(None)
    proc = box.run(CINESCRIBE_VENV=str(elsewhere))
    assert proc.returncode == 0, _out(proc)
    assert not (box.repo / ".venv").exists()
    assert (elsewhere / "cinescribe-setup.json").is_file()
    assert box.app_runs()[0]["python"].startswith(str(elsewhere))
    assert "spaces or brackets" not in _out(proc)


def test_a_venv_path_with_spaces_gets_a_plain_one_suggested(tmp_path, template_venv):
    box = Sandbox(tmp_path, template=None)
    spaced = tmp_path / "my venvs (old)"
    shutil.copytree(template_venv, spaced, symlinks=True)
    box.gpu(None)
    proc = box.run(CINESCRIBE_VENV=str(spaced))
    assert proc.returncode == 0, _out(proc)
    assert "spaces or brackets" in proc.stderr and "CINESCRIBE_VENV=" in proc.stderr


def test_a_failed_venv_creation_removes_only_what_it_created(tmp_path):
    box = Sandbox(tmp_path, template=None)
    python = tmp_path / "python-without-venv"
    python.write_text(f'#!/bin/sh\ncase "$*" in *"-m venv"*) echo "no venv module" >&2; exit 1;; esac\n'
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    proc = box.run(CINESCRIBE_PYTHON=str(python))
    assert proc.returncode == 1 and "python3-venv" in proc.stderr
    assert not (box.repo / ".venv").exists()
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = box.run(CINESCRIBE_PYTHON=str(python), CINESCRIBE_VENV=str(mine))
    assert proc.returncode == 1 and (mine / "notes.txt").exists()


def test_reinstall_never_deletes_a_folder_that_is_not_a_venv(tmp_path):
    box = Sandbox(tmp_path, template=None)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    proc = box.run("--reinstall", CINESCRIBE_VENV=str(precious))
    assert proc.returncode == 1 and "not deleting it" in proc.stderr
    assert (precious / "thesis.txt").exists()


def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    scripts = [ROOT / "start.sh", *sorted((ROOT / "scripts").glob("*.sh"))]
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unreachable_pytorch_index_falls_back_to_pips_own_index_in_one_line(box):
    box.gpu(None)
    proc = box.run(FAKE_PIP_FAIL="download.pytorch.org", FAKE_PIP_INDEX="2.14.1, 2.13.0+cpu, 2.11.0")
    assert proc.returncode == 0, _out(proc)
    installs = [c for c in box.pip_calls() if c[0] == "install" and any(a.startswith("torch==") for a in c)]
    assert installs == [["install", "torch==2.11.0+cpu", "--index-url", CU + "cpu"], ["install", "torch==2.13.0+cpu"]]
    said = [line for line in proc.stderr.splitlines() if "cannot be reached" in line]
    assert len(said) == 1 and "torch 2.13.0+cpu" in said[0] and "its CPU build" in said[0]
    assert "torch 2.13.0+cpu imports" in proc.stdout  # verified as always
    assert (box.repo / ".venv" / "cinescribe-constraints.txt").read_text() == "torch==2.13.0+cpu\n"
    assert len(box.app_runs()) == 1
    assert box.run().returncode == 0 and box.pip_calls() == []  # recorded: no new attempt next time


def test_fallback_on_a_gpu_machine_still_checks_the_gpu(box):
    box.gpu(SMI_RTX4090_550)
    proc = box.run(FAKE_PIP_FAIL="download.pytorch.org", FAKE_PIP_INDEX="2.13.0, 2.11.0", FAKE_TORCH_CUDA="0")
    assert proc.returncode == 1, _out(proc)
    assert "CUDA 13.0 build" in proc.stderr and "torch.cuda.is_available() is False" in proc.stderr
    proc = box.run(FAKE_PIP_FAIL="download.pytorch.org", FAKE_PIP_INDEX="2.13.0, 2.11.0")
    assert proc.returncode == 0 and "GPU check passed" in proc.stdout, _out(proc)


def test_an_unreachable_mirror_falls_back_too(box):
    box.gpu(None)
    proc = box.run(CINESCRIBE_TORCH_INDEX="http://127.0.0.1:9/whl/cpu", FAKE_PIP_FAIL="127.0.0.1:9",
                   FAKE_PIP_INDEX="2.11.0")
    assert proc.returncode == 0, _out(proc)
    assert "http://127.0.0.1:9/whl/cpu cannot be reached" in proc.stderr
    assert ["install", "torch==2.11.0"] in box.pip_calls()
