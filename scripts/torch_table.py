"""The PyTorch build table and what nvidia-smi says about this machine's GPUs.

Standard library only: it runs with the venv's bare interpreter before anything is installed.
scripts/torch_build.py is the command line; this module holds every number of the table.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys

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


def _driver_text(version: tuple[int, ...]) -> str:
    return format_version(version)


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
