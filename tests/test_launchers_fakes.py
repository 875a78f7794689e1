"""Stand-ins for the start.sh tests (no tests here): pip, torch, app.py, nvidia-smi, a sandbox.

start.sh runs for real in a temporary copy of the repo layout, with stand-ins where the real
thing would need a GPU or the network:

* ``nvidia-smi``: a script on PATH that prints a recorded answer;
* ``pip``: a package on PYTHONPATH (found before the venv's own pip) that logs its arguments
  and "installs" a small fake ``torch`` module whose CUDA behaviour the test controls; asked
  ``index versions torch`` it prints FAKE_PIP_INDEX (the versions "pip's own index" has);
* ``app.py``: records its arguments and environment, exits with the codes the test lists.

The venv itself is real (``python -m venv --without-pip``, made once and copied per test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_SCRIPTS = ("torch_build.py", "torch_table.py", "torch_index.py", "torch_setup.py")

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
if args[:2] == ["index", "versions"]:  # what "pip's own index" has
    versions = os.environ.get("FAKE_PIP_INDEX", "")
    print(f"torch ({versions.split(',')[0]})\nAvailable versions: {versions}" if versions else "")
    sys.exit(0 if versions else 1)
if args[:1] == ["config"]:
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
        for name in LAUNCHER_SCRIPTS:
            shutil.copy2(ROOT / "scripts" / name, self.repo / "scripts" / name)
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
        return [_drop_log_option(call) for call in calls if call[:1] not in (["--version"], ["index"], ["config"])]



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
