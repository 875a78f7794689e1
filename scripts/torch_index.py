"""Which torch build to install (``select``) and what to install instead when its index is
out of reach (``fallback``). Standard library only."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from torch_table import (COMPANIONS, CUDA_VARIANTS, PYPI_LINUX_DEFAULT, PYTORCH_INDEX, VARIANTS, Gpu, Variant,
                         _driver_text,
                         parse_smi)

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
# Fallback: PyTorch's index (or the mirror in CINESCRIBE_TORCH_INDEX) is out of reach
# --------------------------------------------------------------------------------------------

TORCH_FLOOR = (2, 4)  # requirements.txt: torch>=2.4


def parse_versions(text: str) -> list[str]:
    """The versions of ``pip index versions torch`` ('Available versions: 2.13.0, 2.12.1, ...')."""
    for line in text.splitlines():
        head, _, rest = line.partition(":")
        if head.strip().lower() == "available versions":
            return [v.strip() for v in rest.split(",") if v.strip()]
    return []


def _release(version: str) -> tuple[int, ...] | None:
    """'2.13.0+cpu' -> (2, 13, 0); a pre-release ('2.12.0rc1') -> None."""
    public = version.partition("+")[0]
    return tuple(int(p) for p in public.split(".")) if re.fullmatch(r"\d+(\.\d+)*", public) else None


def fallback_selection(chosen: Selection, platform: str, available: list[str], pip_index: str,
                       companions: list[str] | None = None) -> tuple[Selection, str]:
    """What to install from the index pip is configured with when ``chosen``'s index failed,
    and the one line that says so. ``available``: that index's torch versions, newest first
    (empty: unknown). On a machine without a GPU the version is one the index has (its CPU
    build when it carries one); with a GPU on Linux, the pinned release (PyPI's is a CUDA build)."""
    platform = "win32" if platform.startswith("win") else platform
    pinned = (chosen.torch_version or VARIANTS["cpu"].torch).partition("+")[0]
    usable = [v for v in available if (_release(v) or (0,)) >= TORCH_FLOOR]
    plain = [v for v in usable if "+" not in v]
    gpu = bool(chosen.cuda)
    if platform == "linux" and not gpu and any(v.endswith("+cpu") for v in usable):
        version = next(v for v in usable if v.endswith("+cpu"))
    else:
        version = pinned if pinned in plain or not plain else plain[0]
    failed = chosen.index_url or chosen.find_links or "PyTorch's index"
    head = (f"PyTorch's index {failed} cannot be reached (or lacks this build): installing torch {version} "
            f"from the index pip is configured with ({pip_index}) instead")
    if platform == "linux" and gpu:
        variant = PYPI_LINUX_DEFAULT.get(version, "cuda")
        known = VARIANTS.get(variant)
        build = f"CUDA {known.cuda}" if known else "CUDA"
        driver = f", needs NVIDIA driver {_driver_text(known.min_driver('linux'))}+" if known else ""
        line, cuda = f"{head}; on Linux that is a {build} build{driver}.", True
    elif platform == "linux":
        variant, cuda = ("cpu" if version.endswith("+cpu") else "pypi"), False
        line = (f"{head}; its CPU build." if variant == "cpu" else
                f"{head}; on Linux that is a CUDA build, which runs on the CPU too (a larger download).")
    else:
        variant, cuda = "cpu", False
        line = f"{head}; on Windows that is a CPU-only build"
        line += (f" (for CUDA: set CINESCRIBE_TORCH_INDEX to a reachable copy of {failed} or a folder of "
                 "its wheels, then run start.bat --update)." if gpu else ".")
    requirements = [f"torch=={version}", *(companions or [])]
    selection = Selection(variant, requirements, version, None, cuda=cuda, reason=line,
                          forced_cpu=chosen.forced_cpu)
    return selection, line
