#!/usr/bin/env python3
"""Pick the PyTorch build for this machine and keep track of the launchers' set-up.

start.sh and start.bat both call this file, so the decision lives in one place and can be
unit-tested. It runs before any package is installed (with the venv's bare interpreter, on
Linux and on Windows), so it uses the standard library only.

Sub-commands (all print ``KEY=VALUE`` lines that bash and cmd can read):

  select        which torch build suits this machine (``--json`` for humans and tests)
  plan          what the launcher has to (re)install now; writes ``--out`` and a JSON sidecar
  verify        run with the venv's python after installing torch: does it import, does CUDA
                work (a tiny kernel on the GPU), then write the pip constraints file
  write-marker  record a finished set-up inside .venv
  hf-symlinks   Windows, once per environment: can the Hugging Face cache use symlinks? If not,
                explain huggingface_hub's warning about it
  table         print the build table as Markdown (docs/install.md carries a copy)

How a build is chosen (``select``): by compute capability and driver version, never by GPU
name. Each CUDA variant below ships kernels for a range of GPU architectures and needs a minimum
driver; the newest variant that every GPU and the driver support wins. No GPU, ``--cpu``, or a
driver too old for any variant gives the CPU build (with a message naming the driver needed).
``CINESCRIBE_TORCH_INDEX`` / ``CINESCRIBE_TORCH_SPEC`` override the choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# --------------------------------------------------------------------------------------------
# The build table. Keep every number here; docs/install.md shows the same table (`table`).
#
# Sources (checked 2026):
# * variants per torch release: pytorch.org "previous versions" page and RELEASE.md's CUDA
#   support matrix. torch 2.11 is the newest release that still ships cu126, cu128 and cu130;
#   from 2.12 on cu128 is gone (cu126 / cu130 / cu132), and Blackwell cards on R570-R579
#   drivers need cu128. cu118 ended with torch 2.7.1.
# * architectures per variant (torch 2.11): cu126 sm_50-sm_90 (the "legacy" build, the last
#   one with Maxwell and Pascal kernels); cu128 and cu130 sm_75-sm_120 (Volta was dropped
#   from cu128 in 2.11, CUDA 13 dropped it altogether). cu118 (torch 2.7.1) sm_50-sm_90.
#   A cubin for sm_X.y also runs on sm_X.z with z >= y (so sm_61, sm_89, sm_121 are covered).
# * minimum driver: NVIDIA CUDA release notes / CUDA compatibility guide. The wheels bundle
#   their CUDA runtime, so only the driver matters. cu118 and cu126 use the CUDA 11.x / 12.x
#   minor-version-compatibility floor (long proven with PyTorch); cu128 and cu130 use the
#   driver of their CUDA GA release (12.8 GA, 13.0 GA): those builds matter mostly for
#   Blackwell, which needs R570+ anyway, and any older card loses nothing with cu126.
# * PyPI: torch 2.11.0's Linux wheel on PyPI is the CUDA 13.0 build (its metadata pins
#   cuda-toolkit 13.0.2); Windows wheels on PyPI are CPU-only.
# * triton: the version torch's Linux wheel pins (TRITON_FOR_TORCH, from the wheels' metadata);
#   on Windows the matching triton-windows release has the same major.minor.
# * Python: torch 2.11 has wheels for 3.10-3.14 and torch 2.7.1 (cu118) for 3.9-3.13, but
#   diffusers 0.42 (requirements.txt) needs 3.11+: so 3.11-3.13, the range every build and
#   every requirement covers. start.sh / start.bat carry PYTHON_CHECK verbatim (tested).
# --------------------------------------------------------------------------------------------

PYTHON_SUPPORTED = ((3, 11), (3, 13))  # oldest, newest (64-bit only)
PYTHON_CHECK = ("import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) "
                "and sys.maxsize > 2**32 else 1)")

PYTORCH_INDEX = "https://download.pytorch.org/whl"
COMPANIONS = ("torchvision", "torchaudio")  # installed with torch when requirements.txt names them


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str  # "cu128" (also the index folder and the local version label)
    cuda: str | None  # "12.8"; None for the CPU build
    torch: str
    torchvision: str
    torchaudio: str
    min_driver_linux: tuple[int, ...] | None = None
    min_driver_windows: tuple[int, ...] | None = None
    min_cc: tuple[int, int] | None = None  # oldest GPU architecture with kernels in the build
    max_cc: tuple[int, int] | None = None  # newest one (None: no upper limit)

    def pins(self) -> dict[str, str]:
        return {"torch": self.torch, "torchvision": self.torchvision, "torchaudio": self.torchaudio}

    def min_driver(self, platform: str) -> tuple[int, ...]:
        value = self.min_driver_windows if platform == "win32" else self.min_driver_linux
        assert value is not None, self.name
        return value

    def supports_cc(self, cc: tuple[int, int]) -> bool:
        if self.min_cc is None:
            return False
        return cc >= self.min_cc and (self.max_cc is None or cc <= self.max_cc)


VARIANTS: dict[str, Variant] = {  # newest first: the first one that fits wins
    "cu130": Variant("cu130", "13.0", "2.11.0", "0.26.0", "2.11.0",
                     (580, 65, 6), (580, 88), (7, 5), None),
    "cu128": Variant("cu128", "12.8", "2.11.0", "0.26.0", "2.11.0",
                     (570, 26), (570, 65), (7, 5), None),
    "cu126": Variant("cu126", "12.6", "2.11.0", "0.26.0", "2.11.0",
                     (525, 60, 13), (528, 33), (5, 0), (9, 9)),
    "cu118": Variant("cu118", "11.8", "2.7.1", "0.22.1", "2.7.1",
                     (450, 80, 2), (452, 39), (5, 0), (9, 9)),
    "cpu": Variant("cpu", None, "2.11.0", "0.26.0", "2.11.0"),
}
CUDA_VARIANTS = [v for v in VARIANTS.values() if v.cuda]

# The CUDA variant of the plain PyPI wheel on Linux for the pinned version (Windows: CPU only). Not
# used by the automatic choice; it documents what CINESCRIBE_TORCH_INDEX=pypi (a PyPI mirror) gives.
PYPI_LINUX_DEFAULT = {"2.11.0": "cu130", "2.10.0": "cu128", "2.9.1": "cu128"}

# Optional accelerators for --extras (CINESCRIBE_EXTRAS overrides the list). Each is installed on
# its own, binary wheels only (never a compile), with the constraints file that pins the installed
# torch, so pip can only pick a version made for that torch and can never replace torch; a
# failure is a warning. The floors are the versions diffusers' attention backends accept.
EXTRAS = ("xformers",)
EXTRAS_WINDOWS = ("triton-windows",)  # torch.compile and Triton kernels on Windows
TRITON_FOR_TORCH = {"2.7": "3.3", "2.8": "3.4", "2.9": "3.5", "2.10": "3.6", "2.11": "3.6"}
EXTRA_FLOORS = {"xformers": ">=0.0.29", "flash-attn": ">=2.6.3", "sageattention": ">=2.1.1"}

MARKER_NAME = "cinescribe-setup.json"
CONSTRAINTS_NAME = "cinescribe-constraints.txt"


# --------------------------------------------------------------------------------------------
# nvidia-smi
# --------------------------------------------------------------------------------------------

SMI_QUERY = ["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
SMI_QUERY_OLD = ["--query-gpu=name,driver_version", "--format=csv,noheader"]  # drivers < R510


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    cc: tuple[int, int] | None  # None: this nvidia-smi cannot report it
    driver: tuple[int, ...]
    driver_text: str

    @property
    def sm(self) -> str:
        return f"sm_{self.cc[0]}{self.cc[1]}" if self.cc else "sm_?"

    def describe(self) -> str:
        return f"{self.name} ({self.sm})"


def parse_version(text: str) -> tuple[int, ...] | None:
    """'575.64.03' -> (575, 64, 3); anything else -> None."""
    text = text.strip()
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        return None
    return tuple(int(part) for part in text.split("."))


def format_version(version: tuple[int, ...]) -> str:
    """(525, 60, 13) -> '525.60.13'; (580, 65, 6) -> '580.65.06' (NVIDIA's spelling)."""
    head, *rest = version
    return ".".join([str(head)] + [f"{part:02d}" for part in rest])


def parse_smi(text: str) -> list[Gpu]:
    """Parse the CSV of SMI_QUERY (or SMI_QUERY_OLD, without compute capability)."""
    gpus = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.lower().startswith("name"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) >= 3:
            name, cc_text, driver_text = ", ".join(fields[:-2]), fields[-2], fields[-1]
        elif len(fields) == 2:
            (name, driver_text), cc_text = fields, ""
        else:
            continue
        driver = parse_version(driver_text)
        if driver is None:
            continue
        cc_version = parse_version(cc_text)
        cc = (cc_version[0], cc_version[1] if len(cc_version) > 1 else 0) if cc_version else None
        gpus.append(Gpu(name, cc, driver, driver_text))
    return gpus


def find_nvidia_smi(env: dict[str, str]) -> str | None:
    configured = env.get("CINESCRIBE_NVIDIA_SMI", "").strip()
    if configured:
        return None if configured.lower() == "none" else configured
    found = shutil.which("nvidia-smi")
    if found:
        return found
    if sys.platform == "win32":  # drivers before the DCH era installed it outside PATH
        for base in (env.get("SystemRoot", r"C:\Windows") + r"\System32",
                     env.get("ProgramFiles", r"C:\Program Files") + r"\NVIDIA Corporation\NVSMI"):
            candidate = os.path.join(base, "nvidia-smi.exe")
            if os.path.isfile(candidate):
                return candidate
    return None


def run_nvidia_smi(env: dict[str, str] | None = None) -> tuple[str | None, str | None]:
    """Return (csv output, None) or (None, why there is no usable answer)."""
    env = dict(os.environ) if env is None else env
    exe = find_nvidia_smi(env)
    if exe is None:
        return None, "nvidia-smi not found"
    for query in (SMI_QUERY, SMI_QUERY_OLD):
        try:
            proc = subprocess.run([exe, *query], capture_output=True, text=True, encoding="utf-8",
                                  errors="replace", timeout=60, env=env)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"nvidia-smi could not run ({exc})"
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout, None
        output = (proc.stdout + proc.stderr).strip()
        if "compute_cap" in output and query is SMI_QUERY:
            continue  # old driver: ask again without the compute capability
        first_line = output.splitlines()[0] if output else "no output"
        return None, f"nvidia-smi failed (exit code {proc.returncode}: {first_line})"
    return None, "nvidia-smi gave no answer"


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Selection:
    variant: str  # "cu128", "cpu", or the last part of a custom index URL
    requirements: list[str]  # ["torch==2.11.0+cu128", ...]
    torch_version: str | None  # the version pip should end up with; None if not pinned
    index_url: str | None  # None: PyPI (or whatever pip is configured with)
    find_links: str | None = None  # a local folder of wheels (CINESCRIBE_TORCH_INDEX=DIR)
    cuda: bool | None = False  # None: unknown (custom index)
    reason: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)
    forced_cpu: bool = False

    def pip_args(self) -> list[str]:
        args = list(self.requirements)
        if self.find_links:
            args += ["--no-index", "--find-links", self.find_links]
        elif self.index_url:
            args += ["--index-url", self.index_url]
        return args

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Selection:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})


def wanted_companions(requirements_path: str | os.PathLike | None) -> list[str]:
    """torchvision / torchaudio named in requirements.txt: they must come from torch's index."""
    if not requirements_path:
        return []
    try:
        text = Path(requirements_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    names = set()
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)", line.split("#", 1)[0])
        if match and match.group(1).lower() in COMPANIONS:
            names.add(match.group(1).lower())
    return [name for name in COMPANIONS if name in names]


def _from_variant(variant: Variant, platform: str, companions: list[str], *, reason: str,
                  warnings: list[str] | None = None, forced_cpu: bool = False) -> Selection:
    pins = variant.pins()
    # Always the variant's own index with its exact local version: no CPU wheel from another index
    # in pip's config can take its place.
    local = f"+{variant.name}"
    requirements = [f"{name}=={pins[name]}{local}" for name in ("torch", *companions)]
    index_url = f"{PYTORCH_INDEX}/{variant.name}"
    reason += f" (torch {variant.torch})"
    return Selection(variant.name, requirements, f"{variant.torch}{local}", index_url,
                     cuda=variant.cuda is not None, reason=reason, warnings=list(warnings or []),
                     forced_cpu=forced_cpu)


def _driver_text(version: tuple[int, ...]) -> str:
    return format_version(version)


def select(smi_output: str | None, platform: str, *, force_cpu: bool = False,
           companions: list[str] | None = None, smi_problem: str | None = None,
           env: dict[str, str] | None = None) -> Selection:
    """Choose the torch build. ``smi_output`` is nvidia-smi's CSV (None: no usable GPU)."""
    env = {} if env is None else env
    companions = list(companions or [])
    platform = "win32" if platform.startswith("win") else platform
    override = _override(env, platform, companions, smi_output, force_cpu, smi_problem)
    if override is not None:
        return override
    cpu = VARIANTS["cpu"]
    if force_cpu:
        return _from_variant(cpu, platform, companions, forced_cpu=True,
                             reason="--cpu given: CPU build (no GPU acceleration)")
    if platform not in ("linux", "win32"):
        return Selection("default", [f"torch=={cpu.torch}"], cpu.torch, None, cuda=None,
                         reason=f"{platform}: the default PyPI wheel (torch {cpu.torch})")
    gpus = parse_smi(smi_output) if smi_output else []
    if not gpus:
        why = smi_problem or "nvidia-smi listed no GPU"
        warnings = []
        if smi_problem and "not found" not in smi_problem:
            warnings.append(f"{smi_problem}. If this machine has an NVIDIA GPU, repair the driver "
                            "(nvidia-smi must work), then run the launcher with --update.")
        return _from_variant(cpu, platform, companions, warnings=warnings,
                             reason=f"No NVIDIA GPU found ({why}): CPU build; generation will be very slow")
    return _select_cuda(gpus, platform, companions)


def _select_cuda(gpus: list[Gpu], platform: str, companions: list[str]) -> Selection:
    cpu = VARIANTS["cpu"]
    warnings: list[str] = []
    driver = min(gpu.driver for gpu in gpus)
    driver_shown = min(gpus, key=lambda gpu: gpu.driver).driver_text
    known = [gpu for gpu in gpus if gpu.cc is not None]
    if len(known) < len(gpus):
        warnings.append("This nvidia-smi does not report the compute capability (driver older than "
                        "R510); assuming a Maxwell-to-Hopper card. Updating the driver is recommended.")

    def arch_ok(variant: Variant, group: list[Gpu]) -> bool:
        return all(variant.supports_cc(gpu.cc) if gpu.cc else variant.max_cc is not None
                   for gpu in group)

    used = gpus
    fitting = [v for v in CUDA_VARIANTS if arch_ok(v, used)]
    if not fitting and len(gpus) > 1:
        primary = max(gpus, key=lambda gpu: gpu.cc or (0, 0))
        used = [primary]
        fitting = [v for v in CUDA_VARIANTS if arch_ok(v, used)]
        others = ", ".join(gpu.describe() for gpu in gpus if gpu is not primary)
        warnings.append(f"No single PyTorch build supports all GPUs; choosing for {primary.describe()}. "
                        f"Not usable with this build: {others}.")
    gpu = max(used, key=lambda g: g.cc or (0, 0))
    if not fitting:
        return _from_variant(cpu, platform, companions, warnings=warnings + [
            f"{gpu.describe()} is too old for current PyTorch CUDA builds (they need sm_50 or newer)."],
            reason=f"{gpu.describe()} has no PyTorch CUDA build: CPU build")
    allowed = [v for v in fitting if driver >= v.min_driver(platform)]
    if not allowed:
        oldest = min(fitting, key=lambda v: v.min_driver(platform))
        need = _driver_text(oldest.min_driver(platform))
        message = (f"{gpu.describe()} needs a CUDA {oldest.cuda}+ build ({oldest.name}), which needs "
                   f"NVIDIA driver {need} or newer; this driver is {driver_shown}")
        return _from_variant(cpu, platform, companions, warnings=warnings + [
            f"Update the NVIDIA driver to {need} or newer (https://www.nvidia.com/drivers), then run "
            "the launcher with --update to switch to the GPU build."],
            reason=f"{message}: CPU build for now")
    chosen, newest = allowed[0], fitting[0]
    if fitting[-1] is not CUDA_VARIANTS[-1]:  # the card needs a recent CUDA (Blackwell)
        reason = f"{gpu.describe()} needs CUDA {fitting[-1].cuda}+; driver {driver_shown} supports it: {chosen.name}"
    elif newest is not CUDA_VARIANTS[0]:  # newer builds dropped the card's kernels
        dropped = "/".join(v.name for v in CUDA_VARIANTS[:CUDA_VARIANTS.index(newest)])
        reason = (f"{gpu.describe()}: {dropped} builds no longer ship its kernels; driver "
                  f"{driver_shown}: {chosen.name}")
    else:
        reason = f"{gpu.describe()}, driver {driver_shown}: {chosen.name}"
    if chosen is not newest:
        reason += (f", the newest build this driver supports ({newest.name} needs driver "
                   f"{_driver_text(newest.min_driver(platform))}+)")
    return _from_variant(chosen, platform, companions, reason=reason, warnings=warnings)


def _override(env: dict[str, str], platform: str, companions: list[str], smi_output: str | None,
              force_cpu: bool, smi_problem: str | None) -> Selection | None:
    """CINESCRIBE_TORCH_INDEX / CINESCRIBE_TORCH_SPEC win over everything (including --cpu).

    INDEX: an index URL (its last part names the variant: .../cu124), ``pypi``, or a local
    folder of wheels. SPEC: the pip requirement(s) for torch, e.g. ``torch==2.8.0+cu128``.
    """
    index = env.get("CINESCRIBE_TORCH_INDEX", "").strip()
    spec = env.get("CINESCRIBE_TORCH_SPEC", "").strip()
    if not index and not spec:
        return None
    if index:
        find_links = None
        if index.lower() == "pypi":
            name, index_url = "pypi", None
        elif os.path.isdir(index):
            name, index_url, find_links = "local", None, index
        else:
            name, index_url = index.rstrip("/").rsplit("/", 1)[-1].lower(), index
        variant = VARIANTS.get(name)
        if spec:
            requirements = spec.split()
        elif variant is not None:
            pins = variant.pins()
            requirements = [f"{n}=={pins[n]}+{variant.name}" for n in ("torch", *companions)]
        else:
            requirements = ["torch", *companions]
        if variant is not None:
            cuda = variant.cuda is not None
        else:
            cuda = True if re.fullmatch(r"cu\d+", name) else None
        reason = f"CINESCRIBE_TORCH_INDEX={index} (set by you)"
        if spec:
            reason += f", CINESCRIBE_TORCH_SPEC={spec}"
        selection = Selection(name, requirements, None, index_url, find_links, cuda=cuda, reason=reason)
    else:
        selection = select(smi_output, platform, force_cpu=force_cpu, companions=companions,
                           smi_problem=smi_problem, env={})
        selection.requirements = spec.split()
        selection.reason = f"CINESCRIBE_TORCH_SPEC={spec} (set by you); index from: {selection.reason}"
        if selection.index_url is None and selection.cuda:
            selection.cuda = None  # a PyPI spec may or may not be a CUDA build
    selection.torch_version = _pinned_version(selection.requirements)
    return selection


def _pinned_version(requirements: list[str]) -> str | None:
    for requirement in requirements:
        match = re.fullmatch(r"torch\s*===?\s*([0-9][0-9A-Za-z.+]*)", requirement.strip())
        if match:
            return match.group(1)
    return None


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
    cuda = variant.cuda is not None if variant else bool(re.fullmatch(r"cu\d+", variant_name))
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
    expect_cuda = variant.cuda is not None if variant else bool(re.fullmatch(r"cu\d+", variant_name))
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


# --------------------------------------------------------------------------------------------
# hf-symlinks: huggingface_hub's symlink warning on Windows, explained once
# --------------------------------------------------------------------------------------------

HF_SYMLINK_NOTE = """\
Note (shown once): this Windows account cannot create symbolic links, so the Hugging Face cache
({cache}) stores a full copy of a file where it would otherwise link to it. Downloads work, they
just take more disk space when two revisions share a file. huggingface_hub prints a long warning
about this for every download; Cinescribe switches that warning off
(HF_HUB_DISABLE_SYMLINKS_WARNING=1). To get symlinks, turn on Developer Mode
(Settings > System > For developers) and start Cinescribe again."""


def hf_cache_dir(env: dict[str, str]) -> Path:
    """Where huggingface_hub keeps models (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/...)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"


def symlinks_supported(folder: Path) -> bool:
    """The same test huggingface_hub makes: can a relative symlink be created in ``folder``?"""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            source = Path(tmp) / "source"
            source.touch()
            os.symlink("source", Path(tmp) / "link")
        return True
    except OSError:
        return False


def hf_symlinks(marker: Path, env: dict[str, str] | None = None, log: str | None = None) -> int:
    """Explain the symlink warning if this machine would get it; once (``marker`` records it)."""
    env = dict(os.environ) if env is None else env
    cache = hf_cache_dir(env)
    supported = symlinks_supported(cache)
    if not supported:
        _Reporter(log)(HF_SYMLINK_NOTE.format(cache=cache))
    try:
        marker.write_text(f"symlinks supported in {cache}: {supported}\n", encoding="utf-8")
    except OSError:
        pass
    return 0


_ARCH_NAMES = {(5, 0): "Maxwell", (7, 5): "Turing"}


def table_markdown() -> str:
    rows = ["| variant | torch | torchvision | GPU architectures | min. driver Linux | min. driver Windows |",
            "| --- | --- | --- | --- | --- | --- |"]
    for variant in VARIANTS.values():
        if variant.cuda:
            low = f"sm_{variant.min_cc[0]}{variant.min_cc[1]}"
            if variant.max_cc:
                arch = f"{low}-sm_{variant.max_cc[0]}0 ({_ARCH_NAMES.get(variant.min_cc, low)} to Hopper)"
            else:
                arch = f"{low} and newer ({_ARCH_NAMES.get(variant.min_cc, low)} to Blackwell sm_120)"
            linux, windows = (_driver_text(variant.min_driver(p)) for p in ("linux", "win32"))
        else:
            arch, linux, windows = "any (CPU)", "-", "-"
        rows.append(f"| {variant.name} | {variant.torch} | {variant.torchvision} | {arch} | {linux} | {windows} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _default_platform() -> str:
    return "win32" if sys.platform == "win32" else ("linux" if sys.platform.startswith("linux") else sys.platform)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_select = sub.add_parser("select", help="print the torch build for this machine")
    p_select.add_argument("--platform", default=_default_platform(), choices=["linux", "win32", "darwin"])
    p_select.add_argument("--cpu", action="store_true", help="force the CPU build")
    p_select.add_argument("--smi-file", help="read nvidia-smi's CSV from this file instead of running it")
    p_select.add_argument("--requirements", help="requirements.txt (to add torchvision/torchaudio)")
    p_select.add_argument("--json", action="store_true")

    p_plan = sub.add_parser("plan", help="decide what the launcher must install")
    p_plan.add_argument("--venv", required=True)
    p_plan.add_argument("--requirements", required=True)
    p_plan.add_argument("--platform", default=_default_platform(), choices=["linux", "win32", "darwin"])
    p_plan.add_argument("--cpu", action="store_true")
    p_plan.add_argument("--update", action="store_true")
    p_plan.add_argument("--out", help="write KEY=VALUE lines here (and a .json sidecar) instead of stdout")

    p_verify = sub.add_parser("verify", help="check the installed torch (run with the venv's python)")
    p_verify.add_argument("--variant", required=True)
    p_verify.add_argument("--platform", default=_default_platform())
    p_verify.add_argument("--constraints", help="write the pip constraints file here")
    p_verify.add_argument("--log", help="append the messages to this file too")
    p_verify.add_argument("--launcher", default="start.bat" if sys.platform == "win32" else "./start.sh")

    p_marker = sub.add_parser("write-marker", help="record a finished set-up")
    p_marker.add_argument("--venv", required=True)
    p_marker.add_argument("--plan", required=True, help="the .json sidecar written by plan --out")

    p_extras = sub.add_parser("extras", help="install the optional accelerators (run with the venv's python)")
    p_extras.add_argument("--variant", required=True)
    p_extras.add_argument("--platform", default=_default_platform())
    p_extras.add_argument("--constraints", required=True, help="the constraints file that pins torch")
    p_extras.add_argument("--index-url", default="", help="torch's index, as an extra index")
    p_extras.add_argument("--log", help="pip's log and the messages go here too")

    p_hf = sub.add_parser("hf-symlinks", help="explain the Hugging Face cache's symlink warning, once")
    p_hf.add_argument("--marker", required=True, help="file that records that it was checked")
    p_hf.add_argument("--log", help="append the note to this file too")

    sub.add_parser("table", help="print the build table as Markdown")

    args = parser.parse_args(argv)
    if args.command == "select":
        if args.smi_file:
            smi_output, smi_problem = Path(args.smi_file).read_text(encoding="utf-8"), None
        elif args.cpu:
            smi_output, smi_problem = None, None
        else:
            smi_output, smi_problem = run_nvidia_smi()
        selection = select(smi_output, args.platform, force_cpu=args.cpu, smi_problem=smi_problem,
                           companions=wanted_companions(args.requirements), env=dict(os.environ))
        if args.json:
            print(json.dumps({**selection.to_dict(), "pip_args": selection.pip_args()}, indent=2))
        else:
            write_fields(selection_fields(selection, args.platform), sys.stdout, selection.pip_args())
        return 0
    if args.command == "plan":
        fields, selection = plan(Path(args.venv), Path(args.requirements), args.platform,
                                 cpu=args.cpu, update=args.update)
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="\n") as handle:
                write_fields(fields, handle, selection.pip_args())
            Path(args.out + ".json").write_text(
                json.dumps({"fields": fields, "selection": selection.to_dict()}, indent=2), encoding="utf-8")
        else:
            write_fields(fields, sys.stdout, selection.pip_args())
        return 0
    if args.command == "verify":
        return verify(args.variant, args.platform, args.constraints, args.log, args.launcher)
    if args.command == "write-marker":
        write_marker(Path(args.venv), Path(args.plan))
        return 0
    if args.command == "extras":
        return install_extras(args.variant, args.platform, args.constraints, args.index_url or None, args.log)
    if args.command == "hf-symlinks":
        return hf_symlinks(Path(args.marker), log=args.log)
    if args.command == "table":
        print(table_markdown())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
