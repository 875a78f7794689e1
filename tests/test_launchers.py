"""Tests for the launchers: torch build selection, start.sh end to end, start.bat lint.

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
import os
import re
import shutil
import subprocess
import sys
import venv
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
# start.sh end to end
# ============================================================================================

FAKE_PIP = r'''
"""Stand-in for pip: logs its arguments, "installs" a fake torch, fails on request."""
import json, os, shutil, sys, sysconfig
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:1] == ["--version"]:
    print("pip 99.0 (stand-in)")
    sys.exit(0)
fail = os.environ.get("FAKE_PIP_FAIL")
if fail and any(fail in arg for arg in args):
    print(f"ERROR: stand-in failure for {fail}", file=sys.stderr)
    sys.exit(1)
site = Path(sysconfig.get_paths()["purelib"])
command, rest = args[0], args[1:]
if command == "uninstall":
    for path in list(site.glob("torch*")):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
elif command == "install":
    for arg in rest:
        name, _, version = arg.replace("===", "==").partition("==")
        if name not in ("torch", "torchvision", "torchaudio") or not version:
            continue
        dist = site / f"{name}-{version}.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        if name == "torch":
            local = version.partition("+")[2]
            cuda = None if local == "cpu" else ("13.0" if not local else f"{local[2:-1]}.{local[-1]}")
            (site / "torch").mkdir(exist_ok=True)
            (site / "torch" / "__init__.py").write_text(FAKE_TORCH.format(version=version, cuda=cuda))
print("Successfully installed (stand-in)")
'''

FAKE_TORCH = r'''
import os
__version__ = "{version}"
class version:
    cuda = {cuda!r}
class _Tensor:
    def __init__(self, values):
        self.values = values
    def __mul__(self, k):
        return _Tensor([v * k for v in self.values])
    def sum(self):
        return _Tensor([sum(self.values)])
    def item(self):
        return self.values[0]
def ones(n, device="cpu"):
    if device == "cuda" and os.environ.get("FAKE_TORCH_KERNEL", "1") != "1":
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
    return _Tensor([1.0] * n)
class cuda:
    @staticmethod
    def is_available():
        return version.cuda is not None and os.environ.get("FAKE_TORCH_CUDA", "1") == "1"
    @staticmethod
    def get_device_name(index=0):
        return "Stand-in GPU"
    @staticmethod
    def get_device_capability(index=0):
        return (8, 9)
    @staticmethod
    def get_arch_list():
        return ["sm_80", "sm_86", "sm_90"]
'''

FAKE_APP = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["FAKE_APP_STATE"])
runs = json.loads(state.read_text()) if state.exists() else []
runs.append({"argv": sys.argv, "cwd": os.getcwd(), "launcher": os.environ.get("CINESCRIBE_LAUNCHER"),
             "utf8": os.environ.get("PYTHONUTF8"), "python": sys.executable})
state.write_text(json.dumps(runs))
codes = json.loads(os.environ.get("FAKE_APP_CODES", "[0]"))
sys.exit(codes[min(len(runs), len(codes)) - 1])
'''

FAKE_SMI = """#!/bin/sh
if [ -f "$FAKE_SMI_ANSWER" ]; then cat "$FAKE_SMI_ANSWER"; exit 0; fi
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
"""


@pytest.fixture(scope="session")
def template_venv(tmp_path_factory):
    path = tmp_path_factory.mktemp("venv") / ".venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    return path


class LauncherRecord:
    """What a launcher run left behind, read the same way for start.sh here and start.bat under Wine: the
    stand-in pip's calls (``pip_calls``, given by the subclass) and the stand-in app's runs (``app_state``)."""

    app_state: Path

    def pip_calls(self) -> list[list[str]]:
        raise NotImplementedError

    def torch_install(self) -> list[str]:
        calls = [c for c in self.pip_calls() if c[0] == "install" and any(a.startswith("torch=") for a in c)]
        assert len(calls) == 1, self.pip_calls()
        return calls[0][1:]

    def app_runs(self) -> list[dict]:
        return json.loads(self.app_state.read_text()) if self.app_state.exists() else []


class Sandbox(LauncherRecord):
    def __init__(self, root: Path, template: Path | None):
        self.root = root
        self.repo = root / "repo"
        (self.repo / "scripts").mkdir(parents=True)
        shutil.copy2(ROOT / "start.sh", self.repo / "start.sh")
        shutil.copy2(ROOT / "scripts" / "torch_build.py", self.repo / "scripts" / "torch_build.py")
        (self.repo / "requirements.txt").write_text("torch>=2.4\ngradio-stand-in\n")
        (self.repo / "app.py").write_text(FAKE_APP)
        if template is not None:
            shutil.copytree(template, self.repo / ".venv", symlinks=True)
        fakes = root / "fakes"
        (fakes / "pip").mkdir(parents=True)
        (fakes / "pip" / "__init__.py").write_text("")
        (fakes / "pip" / "__main__.py").write_text(f"FAKE_TORCH = {FAKE_TORCH!r}\n" + FAKE_PIP)
        (fakes / "bin").mkdir()
        smi = fakes / "bin" / "nvidia-smi"
        smi.write_text(FAKE_SMI)
        smi.chmod(0o755)
        self.smi_answer = root / "smi.csv"
        self.pip_log = root / "pip.jsonl"
        self.app_state = root / "app.json"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("CINESCRIBE_", "PIP_", "FAKE_", "VIRTUAL_ENV", "PYTHONPATH"))}
        self.env.update(PATH=f"{fakes / 'bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(fakes),
                        FAKE_PIP_LOG=str(self.pip_log), FAKE_APP_STATE=str(self.app_state),
                        FAKE_SMI_ANSWER=str(self.smi_answer), PYTHONDONTWRITEBYTECODE="1")

    def gpu(self, answer: str | None) -> None:
        if answer is None:
            self.smi_answer.unlink(missing_ok=True)
        else:
            self.smi_answer.write_text(answer)

    def run(self, *args: str, codes=(0,), **env: str) -> subprocess.CompletedProcess:
        self.pip_log.unlink(missing_ok=True)
        self.app_state.unlink(missing_ok=True)
        run_env = dict(self.env, FAKE_APP_CODES=json.dumps(list(codes)), **env)
        return subprocess.run(["bash", str(self.repo / "start.sh"), *args], cwd=self.root, env=run_env,
                              capture_output=True, text=True, timeout=120)

    def pip_calls(self) -> list[list[str]]:
        if not self.pip_log.exists():
            return []
        calls = [json.loads(line) for line in self.pip_log.read_text().splitlines()]
        return [_drop_log_option(call) for call in calls if call[:1] != ["--version"]]



def _drop_log_option(call: list[str]) -> list[str]:
    out, skip = [], False
    for arg in call:
        if skip:
            skip = False
        elif arg == "--log":
            skip = True
        else:
            out.append(arg)
    return out


@pytest.fixture
def box(tmp_path, template_venv):
    return Sandbox(tmp_path, template_venv)


def _out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


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
    proc = subprocess.run([shellcheck, str(ROOT / "start.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ============================================================================================
# start.bat: line endings and a small lint (it is run under Wine elsewhere)
# ============================================================================================

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


# ============================================================================================
# scripts/download_models.py (no network: the list, and the offline failure)
# ============================================================================================

DOWNLOAD = ROOT / "scripts" / "download_models.py"


def _download(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH="")
    return subprocess.run([sys.executable, str(DOWNLOAD), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def _fake_cached_repo(home: Path, repo_id: str) -> None:
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/abc")


def test_download_models_list_shows_catalogue_and_cache(tmp_path):
    pytest.importorskip("huggingface_hub")
    _fake_cached_repo(tmp_path, "openai/whisper-small")
    proc = _download("--list", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in rows["wan2.1-t2v-1.3b"]
    assert "cached" in rows["whisper-small"]
    assert "not downloaded" in rows["whisper-large-v3"]


def test_download_models_offline_failure_is_a_clear_message(tmp_path):
    pytest.importorskip("huggingface_hub")
    proc = _download("whisper-small", "--revision", "main", home=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for hint in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "hf-mirror.com", "HF_TOKEN"):
        assert hint in proc.stderr


def test_download_models_rejects_unknown_ids(tmp_path):
    pytest.importorskip("huggingface_hub")
    proc = _download("wan-2.1-t2v", home=tmp_path)
    assert proc.returncode == 2 and "wan2.1-t2v-1.3b" in proc.stderr


def test_download_models_builtin_table_matches_the_brief():
    sys.path.insert(0, str(ROOT / "scripts"))
    import download_models as dm

    assert dm.BUILTIN["wan2.2-ti2v-5b"].repo_id == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    assert dm.BUILTIN["i2vgen-xl"].repo_id == "ali-vilab/i2vgen-xl"
    assert dm.BUILTIN["whisper-large-v3-turbo"].repo_id == "openai/whisper-large-v3-turbo"
