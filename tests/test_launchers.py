"""Tests for the launchers' torch build choice and plan (scripts/torch_build.py and its modules).

start.sh end to end: test_launchers_sh.py (stand-ins from test_launchers_fakes.py); start.bat:
test_launchers_bat.py and, under Wine, test_launchers_wine.py.

start.sh runs for real in a temporary copy of the repo layout, with stand-ins where the real
thing would need a GPU or the network:

* ``nvidia-smi``: a script on PATH that prints a recorded answer;
* ``pip``: a package on PYTHONPATH (found before the venv's own pip) that logs its arguments
  and "installs" a small fake ``torch`` module whose CUDA behaviour the test controls;
* ``app.py``: records its arguments and environment, exits with the codes the test lists.

The venv itself is real (``python -m venv --without-pip``, made once and copied per test).
No network, no GPU; the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch_build as tb  # noqa: E402

# Recorded `nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader` answers.
SMI_GTX1080_OLD = "NVIDIA GeForce GTX 1080, 6.1, 470.256.02\n"
SMI_GTX1080_NEW = "NVIDIA GeForce GTX 1080, 6.1, 580.95.05\n"
SMI_RTX3090_535 = "NVIDIA GeForce RTX 3090, 8.6, 535.183.01\n"
SMI_RTX3090_580 = "NVIDIA GeForce RTX 3090, 8.6, 580.95.05\n"
SMI_RTX4090_550 = "NVIDIA GeForce RTX 4090, 8.9, 550.54.14\n"
SMI_RTX4090_WIN = "NVIDIA GeForce RTX 4090, 8.9, 552.22\n"
SMI_RTX5090_576 = "NVIDIA GeForce RTX 5090, 12.0, 576.88\n"
SMI_RTX5090_LINUX = "NVIDIA GeForce RTX 5090, 12.0, 575.64.03\n"
SMI_RTX5090_560 = "NVIDIA GeForce RTX 5090, 12.0, 560.94\n"
SMI_RTX5090_581 = "NVIDIA GeForce RTX 5090, 12.0, 581.57\n"
SMI_V100_580 = "Tesla V100-SXM2-16GB, 7.0, 580.65.06\n"
SMI_K80 = "Tesla K80, 3.7, 470.82.01\n"
SMI_MIXED = "NVIDIA GeForce RTX 5090, 12.0, 576.88\nNVIDIA GeForce GTX 1080, 6.1, 576.88\n"
SMI_NO_COMPUTE_CAP = "GeForce GTX 1070, 470.57.02\n"  # drivers before R510 cannot report it

CU = "https://download.pytorch.org/whl/"


def pick(smi, platform="linux", **kwargs):
    return tb.select(smi, platform, **kwargs)


# ============================================================================================
# Selection logic
# ============================================================================================


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_no_gpu_gives_cpu_build_from_the_cpu_index(platform):
    sel = pick(None, platform, smi_problem="nvidia-smi not found")
    assert sel.variant == "cpu" and sel.cuda is False
    assert sel.pip_args() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]
    assert "No NVIDIA GPU" in sel.reason
    assert sel.warnings == []


def test_broken_driver_gives_cpu_build_with_a_warning():
    sel = pick(None, smi_problem="nvidia-smi failed (exit code 9: NVIDIA-SMI has failed)")
    assert sel.variant == "cpu"
    assert "nvidia-smi must work" in sel.warnings[0] and "--update" in sel.warnings[0]


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_cpu_flag_wins_over_any_gpu(platform):
    sel = pick(SMI_RTX5090_581, platform, force_cpu=True)
    assert sel.variant == "cpu" and sel.forced_cpu
    assert sel.pip_args() == ["torch==2.11.0+cpu", "--index-url", CU + "cpu"]
    assert "--cpu" in sel.reason


def test_gtx1080_on_an_old_driver_gets_cu118_and_its_older_torch():
    sel = pick(SMI_GTX1080_OLD)
    assert sel.variant == "cu118"
    assert sel.pip_args() == ["torch==2.7.1+cu118", "--index-url", CU + "cu118"]
    assert "sm_61" in sel.reason and "cu126 needs driver 525.60.13" in sel.reason


def test_gtx1080_on_a_new_driver_stays_on_cu126_which_still_ships_pascal_kernels():
    sel = pick(SMI_GTX1080_NEW)
    assert sel.variant == "cu126"
    assert "no longer ship its kernels" in sel.reason


def test_volta_is_limited_to_cu126():
    assert pick(SMI_V100_580).variant == "cu126"


def test_rtx3090_on_driver_535_gets_cu126():
    sel = pick(SMI_RTX3090_535)
    assert sel.variant == "cu126" and sel.torch_version == "2.11.0+cu126"


def test_rtx3090_on_driver_580_linux_uses_the_cu130_index():
    sel = pick(SMI_RTX3090_580, "linux")
    assert sel.variant == "cu130"
    assert sel.pip_args() == ["torch==2.11.0+cu130", "--index-url", CU + "cu130"]  # a +cpu wheel can't win
    assert sel.torch_version == "2.11.0+cu130"


def test_rtx3090_on_driver_580_windows_always_uses_the_pytorch_index():
    sel = pick("NVIDIA GeForce RTX 3090, 8.6, 581.15\n", "win32")
    assert sel.pip_args() == ["torch==2.11.0+cu130", "--index-url", CU + "cu130"]


@pytest.mark.parametrize("smi, platform", [(SMI_RTX4090_550, "linux"), (SMI_RTX4090_WIN, "win32")])
def test_rtx4090_on_driver_550_gets_cu126(smi, platform):
    sel = pick(smi, platform)
    assert sel.variant == "cu126"
    assert sel.pip_args() == ["torch==2.11.0+cu126", "--index-url", CU + "cu126"]
    assert "sm_89" in sel.reason and "newest build this driver supports" in sel.reason


@pytest.mark.parametrize("smi, platform", [(SMI_RTX5090_576, "win32"), (SMI_RTX5090_LINUX, "linux")])
def test_rtx5090_on_r575_driver_needs_and_gets_cu128(smi, platform):
    sel = pick(smi, platform)
    assert sel.variant == "cu128" and sel.cuda
    assert sel.pip_args() == ["torch==2.11.0+cu128", "--index-url", CU + "cu128"]
    assert "sm_120" in sel.reason and "needs CUDA 12.8+" in sel.reason


def test_rtx5090_on_a_580_driver_gets_cu130():
    assert pick(SMI_RTX5090_581, "win32").variant == "cu130"
    assert pick(SMI_RTX5090_581, "linux").pip_args() == ["torch==2.11.0+cu130", "--index-url", CU + "cu130"]


@pytest.mark.parametrize("platform, needed", [("linux", "570.26"), ("win32", "570.65")])
def test_rtx5090_on_a_driver_too_old_falls_back_to_cpu_naming_the_driver_needed(platform, needed):
    sel = pick(SMI_RTX5090_560, platform)
    assert sel.variant == "cpu"
    assert f"driver {needed} or newer" in sel.reason and "560.94" in sel.reason
    assert needed in sel.warnings[0] and "--update" in sel.warnings[0]


def test_kepler_has_no_cuda_build():
    sel = pick(SMI_K80)
    assert sel.variant == "cpu" and "sm_50 or newer" in sel.warnings[0]


def test_mixed_gpus_choose_for_the_newest_card_and_warn():
    sel = pick(SMI_MIXED, "win32")
    assert sel.variant == "cu128"
    assert "GTX 1080" in sel.warnings[0]


def test_old_nvidia_smi_without_compute_capability():
    sel = pick(SMI_NO_COMPUTE_CAP)
    assert sel.variant == "cu118"  # driver 470 allows only cu118; the card is assumed pre-Blackwell
    assert "compute capability" in sel.warnings[0]


def test_parse_smi_and_versions():
    gpus = tb.parse_smi(SMI_MIXED + "\n")
    assert [(g.cc, g.driver) for g in gpus] == [((12, 0), (576, 88)), ((6, 1), (576, 88))]
    assert tb.parse_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == []
    assert tb.parse_version("575.64.03") == (575, 64, 3) > (570, 26)
    assert tb.format_version((580, 65, 6)) == "580.65.06"


def test_companions_named_in_requirements_come_from_the_same_index(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("torch>=2.4\ntorchvision  # for transforms\ngradio>=5\n")
    sel = pick(SMI_RTX4090_550, companions=tb.wanted_companions(req))
    assert sel.requirements == ["torch==2.11.0+cu126", "torchvision==0.26.0+cu126"]


def test_env_override_of_the_index(tmp_path):
    sel = pick(SMI_RTX4090_550, env={"CINESCRIBE_TORCH_INDEX": CU + "cu128"})
    assert sel.pip_args() == ["torch==2.11.0+cu128", "--index-url", CU + "cu128"] and sel.cuda
    sel = pick(None, env={"CINESCRIBE_TORCH_INDEX": "https://mirror.example/whl/cu124"})
    assert sel.pip_args() == ["torch", "--index-url", "https://mirror.example/whl/cu124"]
    assert sel.variant == "cu124" and sel.cuda is True and sel.torch_version is None
    sel = pick(None, env={"CINESCRIBE_TORCH_INDEX": str(tmp_path), "CINESCRIBE_TORCH_SPEC": "torch==2.9.1"})
    assert sel.pip_args() == ["torch==2.9.1", "--no-index", "--find-links", str(tmp_path)]
    assert sel.torch_version == "2.9.1"


def test_env_override_of_the_spec_keeps_the_chosen_index():
    sel = pick(SMI_RTX5090_576, "win32", env={"CINESCRIBE_TORCH_SPEC": "torch==2.10.0+cu128"})
    assert sel.pip_args() == ["torch==2.10.0+cu128", "--index-url", CU + "cu128"]
    assert "CINESCRIBE_TORCH_SPEC" in sel.reason


def test_every_cuda_variant_is_consistent():
    for variant in tb.CUDA_VARIANTS:
        assert variant.min_driver("linux") and variant.min_driver("win32")
        assert re.fullmatch(r"cu\d{3}", variant.name)
    assert tb.PYPI_LINUX_DEFAULT[tb.VARIANTS["cu130"].torch] == "cu130"


def test_cmd_quoting_of_pip_args():
    assert tb.cmd_quote("torch==2.11.0+cu128") == "torch==2.11.0+cu128"
    assert tb.cmd_quote("torch<2.12") == '"torch<2.12"'
    assert tb.cmd_quote("C:\\my wheels\\") == '"C:\\my wheels\\\\"'  # else \" would be a quote
    fields = tb.selection_fields(pick(SMI_RTX4090_WIN, "win32"), "win32")
    assert fields["PIP_ARGS"] == "torch==2.11.0+cu126 --index-url " + CU + "cu126"


def test_python_check_matches_the_supported_range():
    low, high = tb.PYTHON_SUPPORTED
    assert f"{low} <= sys.version_info[:2] <= {high}" in tb.PYTHON_CHECK
    assert "sys.maxsize > 2**32" in tb.PYTHON_CHECK  # 64-bit only: torch has no 32-bit wheels
    ok = subprocess.run([sys.executable, "-c", tb.PYTHON_CHECK]).returncode == 0
    assert ok == (low <= sys.version_info[:2] <= high)


@pytest.mark.parametrize("torch_version, platform, names, expected, left_out", [
    ("2.11.0+cu128", "win32", ["xformers", "triton-windows"], ["xformers>=0.0.29", "triton-windows>=3.6,<3.7"], 0),
    ("2.7.1+cu118", "win32", ["triton-windows"], ["triton-windows>=3.3,<3.4"], 0),
    ("2.11.0", "linux", ["xformers", "triton-windows"], ["xformers>=0.0.29"], 1),
    ("2.11.0+cu126", "linux", ["flash_attn", "sageattention", "xformers==0.0.35"],
     ["flash_attn>=2.6.3", "sageattention>=2.1.1", "xformers==0.0.35"], 0),
    ("2.11.0+cu128", "win32",
     ["https://example.org/flash_attn-2.8.3%2Bcu12torch2.8cxx11abiFALSE-cp312-cp312-win_amd64.whl"], [], 1),
    ("2.11.0+cu128", "win32", [r"C:\wheels\sageattention-2.2.0+cu128torch2.11.0-cp39-abi3-win_amd64.whl"],
     [r"C:\wheels\sageattention-2.2.0+cu128torch2.11.0-cp39-abi3-win_amd64.whl"], 0),
    ("2.99.0+cu140", "win32", ["triton-windows"], [], 1),
])
def test_extra_requirements_are_made_for_the_installed_torch(torch_version, platform, names, expected, left_out):
    requirements, why = tb.extra_requirements(names, platform, torch_version)
    assert requirements == expected
    assert len(why) == left_out, why


def test_default_extras_per_platform():
    assert tb.default_extras("linux") == ["xformers"]
    assert tb.default_extras("win32") == ["xformers", "triton-windows"]
    assert set(tb.TRITON_FOR_TORCH) >= {v.torch.rsplit(".", 1)[0] for v in tb.VARIANTS.values()}


def test_hf_symlink_note_only_when_symlinks_fail_and_recorded_once(tmp_path, monkeypatch, capsys):
    env = {"HF_HOME": str(tmp_path / "hf")}
    marker = tmp_path / "marker.txt"
    assert tb.hf_symlinks(marker, env) == 0
    assert capsys.readouterr().out == "" and "True" in marker.read_text()

    def no_symlinks(*args, **kwargs):
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(tb.os, "symlink", no_symlinks)
    log = tmp_path / "setup.log"
    tb.hf_symlinks(marker, env, log=str(log))
    out = capsys.readouterr().out
    assert "Developer Mode" in out and "HF_HUB_DISABLE_SYMLINKS_WARNING=1" in out
    assert str(tmp_path / "hf" / "hub") in out.replace("\n[cinescribe] ", " ")
    assert "Developer Mode" in log.read_text(encoding="utf-8")
    assert "False" in marker.read_text()
    assert tb.hf_cache_dir({"HF_HUB_CACHE": "/x/hub", "HF_HOME": "/y"}) == Path("/x/hub")


def test_docs_show_the_same_build_table():
    docs = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    assert tb.table_markdown() in docs, "refresh docs/install.md with: python scripts/torch_build.py table"


# --------------------------------------------------------------------------------------------
# plan(): what the launcher must do, from the state of .venv
# --------------------------------------------------------------------------------------------


def _fake_dist(venv_dir: Path, version: str) -> None:
    site = venv_dir / "lib" / "python3.11" / "site-packages"
    (site / f"torch-{version}.dist-info").mkdir(parents=True)


def _smi(answer):
    return lambda env: (answer, None)


def test_plan_on_a_fresh_venv_installs_everything(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("gradio\n")
    fields, _ = tb.plan(tmp_path / ".venv", req, "linux", env={}, smi=_smi(SMI_RTX4090_550))
    assert fields["NEED_TORCH"] == fields["NEED_REQS"] == fields["VERIFY"] == "1"
    assert fields["UNINSTALL"] == "0" and fields["VARIANT"] == "cu126"


def test_plan_after_set_up_does_nothing_until_requirements_change(tmp_path):
    venv_dir, req = tmp_path / ".venv", tmp_path / "requirements.txt"
    req.write_text("gradio\n")
    _fake_dist(venv_dir, "2.11.0+cu126")
    (venv_dir / tb.CONSTRAINTS_NAME).write_text("torch==2.11.0+cu126\n")
    fields, sel = tb.plan(venv_dir, req, "linux", env={}, smi=_smi(SMI_RTX4090_550))
    assert fields["NEED_TORCH"] == "0"  # already installed, so only verify
    plan_json = tmp_path / "plan.json"
    plan_json.write_text(json.dumps({"fields": fields, "selection": sel.to_dict()}))
    tb.write_marker(venv_dir, plan_json)

    def no_smi(env):
        raise AssertionError("nvidia-smi must not run once set up")

    fields, _ = tb.plan(venv_dir, req, "linux", env={}, smi=no_smi)
    assert (fields["NEED_TORCH"], fields["NEED_REQS"], fields["VERIFY"]) == ("0", "0", "0")
    req.write_text("gradio\ndiffusers\n")
    fields, _ = tb.plan(venv_dir, req, "linux", env={}, smi=no_smi)
    assert (fields["NEED_TORCH"], fields["NEED_REQS"]) == ("0", "1")


def test_plan_switches_the_build_when_asked(tmp_path):
    venv_dir, req = tmp_path / ".venv", tmp_path / "requirements.txt"
    req.write_text("gradio\n")
    _fake_dist(venv_dir, "2.11.0+cu126")
    fields, _ = tb.plan(venv_dir, req, "linux", cpu=True, env={}, smi=_smi(SMI_RTX4090_550))
    assert fields["VARIANT"] == "cpu" and fields["NEED_TORCH"] == "1" and fields["UNINSTALL"] == "1"
    assert fields["INSTALLED_TORCH"] == "2.11.0+cu126"


def test_plan_with_an_unpinned_override_installs_once(tmp_path):
    venv_dir, req = tmp_path / ".venv", tmp_path / "requirements.txt"
    req.write_text("gradio\n")
    env = {"CINESCRIBE_TORCH_INDEX": "https://mirror.example/whl/cu124"}
    fields, sel = tb.plan(venv_dir, req, "linux", env=env, smi=_smi(None))
    assert fields["NEED_TORCH"] == "1" and fields["PIP_ARGS"] == "torch --index-url https://mirror.example/whl/cu124"
    _fake_dist(venv_dir, "2.4.1+cu124")
    (venv_dir / tb.CONSTRAINTS_NAME).write_text("torch==2.4.1+cu124\n")
    plan_json = tmp_path / "plan.json"
    plan_json.write_text(json.dumps({"fields": fields, "selection": sel.to_dict()}))
    tb.write_marker(venv_dir, plan_json)
    fields, _ = tb.plan(venv_dir, req, "linux", env=env, smi=_smi(None))
    assert (fields["NEED_TORCH"], fields["NEED_REQS"], fields["VERIFY"]) == ("0", "0", "0")


# ============================================================================================
# Fallback: torch from the index pip is configured with when PyTorch's own index fails
# ============================================================================================

PIP_INDEX = "2.15.0, 2.14.1, 2.13.0+cpu, 2.13.0, 2.12.0rc1, 2.11.0, 2.3.1"


def test_fallback_without_a_gpu_takes_a_cpu_build_the_index_has():
    chosen = pick(None)
    selection, line = tb.fallback_selection(chosen, "linux", tb.parse_versions(f"Available versions: {PIP_INDEX}"),
                                            "PyPI")
    assert selection.requirements == ["torch==2.13.0+cpu"] and selection.index_url is None
    assert selection.variant == "cpu" and "CPU build" in line and CU + "cpu" in line
    plain, line = tb.fallback_selection(chosen, "linux", ["2.15.0", "2.11.0"], "https://mirror.example/simple")
    assert plain.requirements == ["torch==2.11.0"]  # the pinned release, as it exists there
    assert "CUDA build, which runs on the CPU too" in line and "https://mirror.example/simple" in line
    newer, _ = tb.fallback_selection(chosen, "linux", ["2.15.0", "2.12.0rc1"], "PyPI")
    assert newer.requirements == ["torch==2.15.0"]  # the pin is missing: the newest release


def test_fallback_with_a_gpu_on_linux_is_pypis_cuda_build_and_is_verified():
    chosen = pick(SMI_RTX4090_550)
    selection, line = tb.fallback_selection(chosen, "linux", tb.parse_versions(f"Available versions: {PIP_INDEX}"),
                                            "PyPI")
    assert selection.requirements == ["torch==2.11.0"] and selection.cuda is True
    assert selection.variant == "cu130" and "CUDA 13.0 build" in line and "580.65.06" in line
    assert len(line.splitlines()) == 1


def test_fallback_on_windows_is_cpu_only_and_says_how_to_get_cuda():
    chosen = pick(SMI_RTX4090_WIN, platform="win32")
    selection, line = tb.fallback_selection(chosen, "win32", ["2.13.0", "2.11.0"], "PyPI")
    assert selection.requirements == ["torch==2.11.0"] and selection.cuda is False
    assert "CPU-only" in line and "CINESCRIBE_TORCH_INDEX" in line and "start.bat --update" in line


def test_pip_index_name_from_environment_or_config():
    assert tb.pip_index_name({"PIP_INDEX_URL": "https://m.example/simple"}, "") == "https://m.example/simple"
    assert tb.pip_index_name({}, "global.index-url='https://mirrors.example/pypi/simple'\n") == \
        "https://mirrors.example/pypi/simple"
    assert tb.pip_index_name({}, "global.find-links='/opt/wheels'\n") == "PyPI"
