"""Measuring and freeing device memory. Called from the GPU worker thread only."""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class MemoryReading:
    """Memory of the device in bytes; on CPU, the machine's RAM and this process's resident set."""

    used: int
    total: int
    free: int
    process: int  # bytes this process holds on the device (torch allocator on CUDA, RSS on CPU)


def read_memory(device: str) -> MemoryReading:
    import psutil

    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(device)
        # Honest "free": what the driver reports plus what torch reserved but does not use.
        reserved_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return MemoryReading(
            used=total - free, total=total, free=free + reserved_unused, process=torch.cuda.memory_allocated(device)
        )
    vm = psutil.virtual_memory()
    return MemoryReading(
        used=vm.total - vm.available, total=vm.total, free=vm.available, process=psutil.Process().memory_info().rss
    )


def free_memory(device: str) -> None:
    """Collect garbage and hand cached blocks back: CUDA caching allocator, or glibc's heap on Linux CPU."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    elif sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class PeakTracker:
    """Peak memory over a job: the torch allocator's peak on CUDA, sampled RSS on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        self.sample()

    def sample(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            import psutil

            self.peak = max(self.peak, psutil.Process().memory_info().rss)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA out-of-memory errors (torch's dedicated class, or the older RuntimeError text)."""
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(error, (RuntimeError, MemoryError)) and (
        isinstance(error, MemoryError) or "out of memory" in str(error).lower()
    )


def gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 2)
