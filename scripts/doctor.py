#!/usr/bin/env python3
"""The troubleshooting checklist users otherwise follow by hand: each line OK / WARN / FAIL, with the fix.

    python scripts/doctor.py            # the checklist
    python scripts/doctor.py --json     # the same as JSON (the System tab shows it)
    python scripts/doctor.py --port 7861 --outputs D:\\clips

Exit code 0 when nothing FAILs. It runs in its own process, so the app's GPU worker stays the only
thread of the app that touches CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
from torch_build import PYTHON_SUPPORTED as SUPPORTED_PYTHON  # noqa: E402  (one range for launchers and doctor)
DISK_WARN_GB, DISK_FAIL_GB = 30.0, 3.0


@dataclasses.dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


# --- the checks -------------------------------------------------------------------------------------


def check_python(version: tuple[int, int] = sys.version_info[:2]) -> Check:
    low, high = SUPPORTED_PYTHON
    text = f"Python {version[0]}.{version[1]} ({platform.architecture()[0]})"
    if low <= version <= high:
        return Check("Python", OK, text)
    return Check("Python", FAIL, text + ": PyTorch has no wheels for it",
                 f"Install Python {low[0]}.{low[1]}-{high[0]}.{high[1]} and run the launcher with --reinstall.")


def check_torch() -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        return [Check("PyTorch", FAIL, "torch is not installed", "Run ./start.sh (or start.bat) to set up .venv.")]
    import torch

    checks = []
    build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build")
    has_gpu = _nvidia_gpu_present()
    if not torch.version.cuda:
        status = WARN if has_gpu else OK
        fix = "An NVIDIA GPU is present but torch is the CPU build: run the launcher with --update." if has_gpu else ""
        checks.append(Check("PyTorch build", status, build, fix))
        return checks
    try:
        available = torch.cuda.is_available()
    except Exception as error:  # a broken driver can raise here
        available, build = False, f"{build}; CUDA error: {error}"
    if not available:
        checks.append(Check("PyTorch build", FAIL, build + ", but it sees no GPU",
                            "Update the NVIDIA driver (see the driver check) or reinstall with the launcher's --update."))
        return checks
    try:
        ok = (torch.ones(2, device="cuda") * 2).sum().item() == 4
        checks.append(Check("PyTorch build", OK if ok else FAIL, f"{build}; a test kernel ran on {torch.cuda.get_device_name(0)}"))
    except Exception as error:  # "no kernel image is available": a build without this GPU's kernels
        checks.append(Check("PyTorch build", FAIL, f"{build}; a test kernel failed: {error}",
                            "This torch build lacks kernels for your GPU: run the launcher with --update "
                            "(RTX 50 cards need a CUDA 12.8+ build)."))
    return checks


def _nvidia_gpu_present() -> bool:
    return bool(_smi(["-L"]))


def _smi(arguments: list[str]) -> str:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ""
    try:
        result = subprocess.run([exe, *arguments], capture_output=True, text=True, encoding="utf-8",
                                errors="replace", timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def check_gpu() -> list[Check]:
    """Driver, GPU, VRAM and other processes on it, from NVML (nvidia-ml-py) or nvidia-smi."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        if _nvidia_gpu_present():
            return [Check("GPU", WARN, "nvidia-smi works but NVML could not be read", "pip install nvidia-ml-py")]
        return [Check("GPU", WARN, "no NVIDIA GPU found (nvidia-smi and NVML absent)",
                      "Video generation needs an NVIDIA GPU with a current driver; the app runs on the CPU, very slowly.")]
    checks = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        checks.append(_driver_check(driver))
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            total, free = memory.total / 2**30, memory.free / 2**30
            status = OK if total >= 12 else WARN
            fix = "" if status == OK else "Less than 12 GB: use --offload model and --vae-tiling, and the smaller models."
            checks.append(Check(f"GPU {index}", status, f"{name} (sm_{major}{minor}), {free:.1f} of {total:.1f} GiB free", fix))
            others = []
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid != os.getpid():
                    used = (process.usedGpuMemory or 0) / 2**30
                    others.append(f"pid {process.pid} ({used:.1f} GiB)")
            if others:
                checks.append(Check(f"GPU {index} other processes", WARN, ", ".join(others),
                                    "Other programs hold VRAM; close them (or another Cinescribe) for the largest models."))
    finally:
        pynvml.nvmlShutdown()
    return checks


def _driver_check(driver: str) -> Check:
    """Does the driver fit the installed torch's CUDA version? Uses the launchers' build table."""
    try:
        import torch
        import torch_build

        cuda = torch.version.cuda
    except ImportError:
        return Check("NVIDIA driver", OK, f"driver {driver}")
    if not cuda:
        return Check("NVIDIA driver", OK, f"driver {driver} (torch is a CPU build)")
    wanted = next((v for v in torch_build.VARIANTS.values() if v.cuda and cuda.startswith(v.cuda)), None)
    have = torch_build.parse_version(driver)
    if wanted is None or have is None:
        return Check("NVIDIA driver", OK, f"driver {driver}, torch CUDA {cuda}")
    need = wanted.min_driver(sys.platform if sys.platform == "win32" else "linux")
    if have >= need:
        return Check("NVIDIA driver", OK, f"driver {driver}, enough for torch's CUDA {cuda}")
    return Check("NVIDIA driver", FAIL, f"driver {driver} is older than CUDA {cuda} needs ({torch_build.format_version(need)})",
                 f"Install NVIDIA driver {torch_build.format_version(need)} or newer, or run the launcher with --update "
                 "to get a torch build for this driver.")


def check_ffmpeg(which: Callable[[str], str | None] = shutil.which) -> Check:
    found = which("ffmpeg")
    if found:
        return Check("ffmpeg", OK, found)
    try:
        import imageio_ffmpeg

        return Check("ffmpeg", OK, f"{imageio_ffmpeg.get_ffmpeg_exe()} (bundled with imageio-ffmpeg)")
    except Exception:
        return Check("ffmpeg", FAIL, "no ffmpeg on PATH and none bundled",
                     "pip install imageio-ffmpeg (or: apt install ffmpeg / winget install ffmpeg).")


def check_port(host: str, port: int) -> Check:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            return Check(f"Port {port}", FAIL, f"{host}:{port} is taken ({error.strerror or error})",
                         f"Stop the program using it (another Cinescribe?) or start with --port {port + 1}.")
    return Check(f"Port {port}", OK, f"{host}:{port} is free")


def check_disk(label: str, folder: Path) -> Check:
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    text = f"{free:.1f} GB free at {folder}"
    if free < DISK_FAIL_GB:
        return Check(f"Disk ({label})", FAIL, text, f"Free disk space, or move {label} to a bigger disk.")
    if free < DISK_WARN_GB:
        return Check(f"Disk ({label})", WARN, text, "Video models take 10-100 GB each; keep room for them.")
    return Check(f"Disk ({label})", OK, text)


def check_models() -> list[Check]:
    from huggingface_hub import snapshot_download

    from pipelines.families.catalogue import CATALOGUE

    cached, missing = [], []
    for spec in CATALOGUE.values():
        try:
            snapshot_download(spec.repo_id, local_files_only=True)
            cached.append(spec.id)
        except Exception:
            missing.append(spec.id)
    if not cached:
        return [Check("Models in cache", WARN, "none of the catalogue's models is in the Hugging Face cache",
                      "python scripts/download_models.py wan2.1-t2v-1.3b (or start with --demo to try the app).")]
    return [Check("Models in cache", OK, ", ".join(cached) + (f"; not cached: {', '.join(missing)}" if missing else ""))]


def check_accelerators() -> list[Check]:
    checks = []
    for module, label in (("xformers", "xformers"), ("flash_attn", "flash-attn"), ("sageattention", "SageAttention")):
        if importlib.util.find_spec(module) is None:
            checks.append(Check(label, OK, "not installed (optional; PyTorch SDPA is used)"))
            continue
        try:
            importlib.import_module(module)
            checks.append(Check(label, OK, "installed and importable"))
        except Exception as error:
            checks.append(Check(label, WARN, f"installed but fails to import: {error}",
                                f"pip uninstall {label} (the app falls back to SDPA), or reinstall a build for your torch."))
    return checks


def check_platform() -> list[Check]:
    checks = []
    release = platform.release().lower()
    if sys.platform.startswith("linux") and ("microsoft" in release or "wsl" in release):
        checks.append(Check("WSL", WARN, "running under WSL 2",
                            "Keep the app and outputs inside the Linux file system (~/...), not /mnt/c: it is much faster."))
    if sys.platform == "win32":
        checks.append(Check("Windows", WARN, "the Hugging Face cache may warn that symlinks are unavailable",
                            "Harmless (files are copied instead); enable Developer Mode to save disk space."))
        if " " in str(ROOT) or any(c in str(ROOT) for c in "()[]"):
            checks.append(Check("App folder", WARN, f"{ROOT} has spaces or brackets",
                                "Move the app to a short plain path such as C:\\cinescribe."))
    return checks


def run_checks(host: str = "127.0.0.1", port: int | None = 7860, outputs: Path = ROOT / "outputs") -> list[Check]:
    """Every check; ``port=None`` skips the port (the running app asks, and holds its own port)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    port_checks = [check_port(host, port)] if port is not None else []
    checks = [check_python(), *check_torch(), *check_gpu(), check_ffmpeg(), *port_checks,
              check_disk("outputs", outputs), check_disk("HF cache", Path(HF_HUB_CACHE)), *check_models(),
              *check_accelerators(), *check_platform()]
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"[{check.status:<4}] {check.name}: {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"       fix: {check.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append(f"{len(checks)} checks: {failed} FAIL, {warned} WARN")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs")
    parser.add_argument("--no-port", action="store_true", help="skip the port check")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checks = run_checks(args.host, None if args.no_port else args.port, args.outputs)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2, ensure_ascii=False))
    else:
        print(format_checks(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
