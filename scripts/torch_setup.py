"""The launchers' set-up steps after the choice: optional accelerators, the plan (what to
(re)install now), the check of the installed torch, constraints and the set-up marker."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from torch_index import Selection, select, wanted_companions
from torch_table import (COMPANIONS, CONSTRAINTS_NAME, EXTRA_FLOORS, EXTRAS, EXTRAS_WINDOWS, MARKER_NAME,
                         TRITON_FOR_TORCH, VARIANTS, Variant, _driver_text, parse_smi, run_nvidia_smi)

# --------------------------------------------------------------------------------------------
# Optional accelerators (--extras)
# --------------------------------------------------------------------------------------------


def extra_requirements(names: list[str], platform: str, torch_version: str | None
                       ) -> tuple[list[str], list[str]]:
    """pip requirements for the accelerators ``names``, and why any of them is left out.

    A bare name gets the floor diffusers needs; ``triton-windows`` is pinned to the triton
    release of the installed torch; a wheel file or URL whose name says it was built for
    another torch (``...torch2.8...``) is left out, since it would crash on import.
    """
    match = re.match(r"(\d+)\.(\d+)", torch_version or "")
    torch_minor = f"{match.group(1)}.{match.group(2)}" if match else None
    requirements, left_out = [], []
    for name in names:
        base = re.split(r"[\\/]", name)[-1]
        bare = re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None
        if base.lower().endswith(".whl") or "://" in name:
            tag = re.search(r"torch(\d+)\.(\d+)", base)
            built_for = f"{tag.group(1)}.{tag.group(2)}" if tag else None
            if built_for and torch_minor and built_for != torch_minor:
                left_out.append(f"{base} is built for torch {built_for}, but torch {torch_version} is "
                                "installed: left out (find the wheel built for this torch)")
                continue
            requirements.append(name)
        elif bare and name.lower() == "triton-windows":
            if platform != "win32":
                left_out.append("triton-windows is for Windows only (Linux torch brings triton): left out")
                continue
            triton = TRITON_FOR_TORCH.get(torch_minor or "")
            if triton is None:
                left_out.append(f"no known triton-windows release for torch {torch_version}: left out")
                continue
            major, minor = triton.split(".")
            requirements.append(f"triton-windows>={triton},<{major}.{int(minor) + 1}")
        elif bare and name.lower().replace("_", "-") in EXTRA_FLOORS:
            requirements.append(name + EXTRA_FLOORS[name.lower().replace("_", "-")])
        else:
            requirements.append(name)
    return requirements, left_out


def default_extras(platform: str) -> list[str]:
    return list(EXTRAS) + (list(EXTRAS_WINDOWS) if platform == "win32" else [])


# What to import to see that an accelerator loads (a wheel built for another torch does not).
EXTRA_MODULES = {"xformers": "xformers.ops", "triton-windows": "triton", "flash-attn": "flash_attn",
                 "sageattention": "sageattention"}


def _dist_name(requirement: str) -> str:
    """'xformers>=0.0.29' -> 'xformers'; '.../flash_attn-2.8.3+cu12torch2.8-cp312-....whl' -> 'flash-attn'."""
    base = re.split(r"[\\/]", requirement)[-1]
    name = base.split("-")[0] if base.lower().endswith(".whl") else re.match(r"[A-Za-z0-9_.-]*", base).group(0)
    return name.lower().replace("_", "-")


def install_extras(variant_name: str, platform: str, constraints: str, index_url: str | None,
                   log: str | None, env: dict[str, str] | None = None) -> int:
    """--extras, run with the venv's python after torch is installed: each accelerator on its own,
    binary wheels only, torch pinned by the constraints file. Failures are warnings (returns 0)."""
    from importlib import metadata

    env = dict(os.environ) if env is None else env
    say = _Reporter(log)
    variant = VARIANTS.get(variant_name)
    cuda = variant.cuda is not None if variant else bool(re.fullmatch(r"cu\d+|cuda", variant_name))
    if not cuda:
        say("WARNING: --extras ignored: the optional accelerators need a CUDA build of PyTorch.", hint=True)
        return 0
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    names = env.get("CINESCRIBE_EXTRAS", "").split() or default_extras(platform)
    requirements, left_out = extra_requirements(names, platform, torch_version)
    for why in left_out:
        say(f"WARNING: {why}", hint=True)
    for requirement in requirements:
        say(f"Installing the optional accelerator {requirement} (for torch {torch_version})")
        command = [sys.executable, "-m", "pip", "install", "--only-binary=:all:", "-c", constraints]
        if index_url:
            command += ["--extra-index-url", index_url]
        if log:
            command += ["--log", log]
        if subprocess.run([*command, requirement]).returncode != 0:
            say(f"WARNING: {requirement} could not be installed for this torch; Cinescribe works "
                "without it.", hint=True)
            continue
        module = EXTRA_MODULES.get(_dist_name(requirement))
        if module:
            probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                                   text=True, encoding="utf-8", errors="replace")
            if probe.returncode != 0:
                last = (probe.stderr.strip().splitlines() or ["?"])[-1]
                say(f"WARNING: {requirement} was installed but does not load ({last}); the app "
                    "will use PyTorch's own attention.", hint=True)
    return 0


# --------------------------------------------------------------------------------------------
# Set-up state: marker, installed torch, plan
# --------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def read_marker(venv: Path) -> dict | None:
    try:
        data = json.loads((venv / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "selection" in data else None


def installed_torch(venv: Path) -> str | None:
    """The torch version installed in ``venv`` (from its dist-info folder), without importing it."""
    patterns = ("lib/python3*/site-packages/torch-*.dist-info", "Lib/site-packages/torch-*.dist-info")
    for pattern in patterns:
        for path in sorted(venv.glob(pattern)):
            return path.name[len("torch-"):-len(".dist-info")]
    return None


def plan(venv: Path, requirements: Path, platform: str, *, cpu: bool = False, update: bool = False,
         env: dict[str, str] | None = None, smi=run_nvidia_smi) -> tuple[dict[str, str], Selection]:
    """Decide what the launcher must do. Returns (KEY=VALUE fields, the selection)."""
    env = dict(os.environ) if env is None else env
    marker = read_marker(venv)
    installed = installed_torch(venv)
    overrides = bool(env.get("CINESCRIBE_TORCH_INDEX", "").strip() or env.get("CINESCRIBE_TORCH_SPEC", "").strip())
    reselect = marker is None or cpu or update or overrides or installed is None
    notes = []
    if reselect:
        smi_output, smi_problem = (None, None) if cpu and not overrides else smi(env)
        selection = select(smi_output, platform, force_cpu=cpu, smi_problem=smi_problem,
                           companions=wanted_companions(requirements), env=env)
    else:
        selection = Selection.from_dict(marker["selection"])
        if selection.forced_cpu:
            notes.append("Using the CPU build chosen earlier with --cpu; run with --update to detect the GPU again.")
    if not reselect:
        need_torch = False
    elif selection.torch_version:  # pinned: compare with what is installed
        need_torch = selection.torch_version != installed
    else:  # unpinned (CINESCRIBE_TORCH_SPEC=torch): install once, not on every start
        previous = Selection.from_dict(marker["selection"]).pip_args() if marker else None
        need_torch = installed is None or previous != selection.pip_args()
    req_hash = file_sha256(requirements)
    constraints_ok = (venv / CONSTRAINTS_NAME).is_file()
    need_reqs = marker is None or need_torch or update or marker.get("requirements_sha256") != req_hash
    fields = {
        "NEED_TORCH": "1" if need_torch else "0",
        "UNINSTALL": "1" if need_torch and installed else "0",
        "INSTALLED_TORCH": installed or "",
        "VERIFY": "1" if need_torch or marker is None or not constraints_ok else "0",
        "NEED_REQS": "1" if need_reqs else "0",
        "REQUIREMENTS_SHA256": req_hash,
        **selection_fields(selection, platform),
        "NOTE": " ".join(notes),
    }
    return fields, selection


def selection_fields(selection: Selection, platform: str) -> dict[str, str]:
    args = selection.pip_args()
    return {
        "VARIANT": selection.variant,
        "CUDA": {True: "1", False: "0", None: ""}[selection.cuda],
        "TORCH_VERSION": selection.torch_version or "",
        "INDEX_URL": selection.index_url or "",
        "PIP_ARGS": " ".join(cmd_quote(arg) for arg in args) if platform == "win32" else " ".join(args),
        "REASON": selection.reason,
        "WARNING": " ".join(selection.warnings),
    }


def cmd_quote(arg: str) -> str:
    """Quote one argument for a cmd.exe command line (pip specs like torch<2.12 contain '<').

    Backslashes right before the closing quote are doubled: the C runtime reads ``\\"`` as a
    literal quote, so ``"C:\\wheels\\"`` would swallow the rest of the command line."""
    if arg and not re.search(r'[\s<>|&^()%!,;="]', arg.replace("==", "")):
        return arg
    inner = arg.replace('"', '')
    return '"' + inner + "\\" * (len(inner) - len(inner.rstrip("\\"))) + '"'


def write_fields(fields: dict[str, str], stream, pip_args: list[str] | None = None) -> None:
    for key, value in fields.items():
        stream.write(f"{key}={_one_line(value)}\n")
    for arg in pip_args or []:  # one per line for bash, which reads them into an array
        stream.write(f"PIP_ARG={_one_line(arg)}\n")


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


# --------------------------------------------------------------------------------------------
# verify: runs with the venv's python after torch is installed
# --------------------------------------------------------------------------------------------


class _Reporter:
    def __init__(self, log: str | None):
        self.log = log

    def __call__(self, message: str = "", *, error: bool = False, hint: bool = False) -> None:
        for line in message.splitlines() or [""]:
            text = f"[cinescribe] {'ERROR: ' if error else ''}{line}"
            print(text, file=sys.stderr if error or hint else sys.stdout, flush=True)
            if self.log:
                try:
                    with open(self.log, "a", encoding="utf-8") as handle:
                        handle.write(text + "\n")
                except OSError:
                    pass


def verify(variant_name: str, platform: str, constraints: str | None, log: str | None,
           launcher: str) -> int:
    say = _Reporter(log)
    variant = VARIANTS.get(variant_name)
    expect_cuda = variant.cuda is not None if variant else bool(re.fullmatch(r"cu\d+|cuda", variant_name))
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch
    except Exception as exc:  # any import failure is reported, not dumped
        say(f"torch does not import: {type(exc).__name__}: {exc}", error=True)
        if platform == "win32":
            say("On Windows this is usually the missing Microsoft Visual C++ Redistributable (x64): "
                "https://aka.ms/vs/17/release/vc_redist.x64.exe - install it, then start again.", hint=True)
        say(f"If it persists, rebuild the environment: {launcher} --reinstall", hint=True)
        return 1
    cuda_build = getattr(torch.version, "cuda", None)
    say(f"torch {torch.__version__} imports (CUDA runtime: {cuda_build or 'none, CPU build'}).")
    if expect_cuda:
        failure, passed = _check_cuda(torch, cuda_build, variant_name)
        if passed:
            say(passed)
        if failure:
            say(failure, error=True)
            say(_fixes(variant, platform, launcher), hint=True)
            return 1
    if constraints:
        write_constraints(Path(constraints))
    return 0


def _check_cuda(torch, cuda_build: str | None, variant_name: str) -> tuple[str | None, str | None]:
    """(None, what passed) when a tiny kernel runs on the GPU, else (what went wrong, None)."""
    import warnings

    if not cuda_build:
        return (f"A CPU-only torch was installed although the {variant_name} (CUDA) build was chosen. "
                "pip probably took torch from another index: check `pip config list`, "
                "PIP_INDEX_URL and PIP_EXTRA_INDEX_URL."), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            available = torch.cuda.is_available()
        except Exception as exc:  # a broken driver can raise here
            available, caught = False, [*caught, exc]
    if not available:
        said = " ".join(" ".join(str(getattr(w, "message", w)).split()) for w in caught)
        smi_output, smi_problem = run_nvidia_smi()
        gpus = parse_smi(smi_output) if smi_output else []
        driver = f"driver {gpus[0].driver_text}" if gpus else (smi_problem or "no driver answer")
        return (f"torch {torch.__version__} (CUDA {cuda_build}) cannot use the GPU: "
                f"torch.cuda.is_available() is False ({driver}). {said}".strip()), None
    try:
        result = (torch.ones(2, device="cuda") * 2).sum().item()
    except Exception as exc:  # typically "no kernel image is available for execution on the device"
        arch = ""
        try:
            major, minor = torch.cuda.get_device_capability(0)
            arch = f" The GPU is sm_{major}{minor}; this build has kernels for {' '.join(torch.cuda.get_arch_list())}."
        except Exception:
            pass
        return f"A test kernel failed on the GPU: {' '.join(str(exc).split())}.{arch}", None
    if result != 4:
        return f"A test kernel on the GPU computed {result} instead of 4; the driver or GPU is unhealthy.", None
    try:
        name = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        return None, f"GPU check passed: {name} (sm_{major}{minor}), CUDA {cuda_build}."
    except Exception:
        return None, f"GPU check passed (CUDA {cuda_build})."


def _fixes(variant: Variant | None, platform: str, launcher: str) -> str:
    lines = ["How to fix it:"]
    if variant is not None and variant.cuda:
        need = _driver_text(variant.min_driver(platform))
        lines.append(f"* Install a current NVIDIA driver ({variant.name} needs {need} or newer) from "
                     "https://www.nvidia.com/drivers, reboot (also after any driver update), check that "
                     "`nvidia-smi` works; "
                     f"then run: {launcher} --update")
    if platform == "linux":
        lines.append("* In a container or WSL, the GPU must be passed through (docker --gpus all; "
                     "WSL needs the Windows driver, not a Linux one).")
    lines.append(f"* Or use the CPU build (very slow): {launcher} --cpu")
    lines.append("* Or pick a build yourself: set CINESCRIBE_TORCH_INDEX (see docs/install.md).")
    return "\n".join(lines)


def write_constraints(path: Path) -> None:
    """Pin the installed torch (and companions) so later pip runs can never replace them."""
    from importlib import metadata

    lines = []
    for name in ("torch", *COMPANIONS):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        # '==2.11.0' would also accept '2.11.0+cpu' from another index; '===' matches exactly.
        lines.append(f"{name}=={version}" if "+" in version else f"{name}==={version}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_marker(venv: Path, plan_json: Path) -> None:
    data = json.loads(plan_json.read_text(encoding="utf-8"))
    marker = {
        "format": 1,
        "requirements_sha256": data["fields"]["REQUIREMENTS_SHA256"],
        "selection": data["selection"],
        "python": ".".join(map(str, sys.version_info[:3])),
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    (venv / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
