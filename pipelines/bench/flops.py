"""FLOPs of the denoising steps, counted from the model's shapes, and the GPUs' peak throughput.

``denoise_flops`` asks the model's family (``denoise_flops``, ``families/base.py``): it builds the denoiser
from its shipped architecture config (``assets/model_configs``) on PyTorch's ``meta`` device (no memory,
no compute) and runs one forward pass at the job's shapes under ``torch.utils.flop_counter.FlopCounterMode``
(``families.base.count_forward_flops``), which adds up the matmuls, convolutions and attention of every
operator from their shapes (2 FLOPs per multiply-add). One step is one forward per guidance pass (or one
batched forward). A family may also give a closed form the tests check the count against (Wan 2.1 1.3B
at 480p and 81 frames: 2.83e14 per forward, so 50 steps with guidance are 2.83e16 FLOPs).

``GPU_BF16_PEAK_TFLOPS`` holds dense bf16 tensor-core peaks from the vendors' published specifications; the
fraction of peak reached in the denoising steps ("MFU") divides the counted FLOPs by the measured denoise
seconds and by that peak. The benchmark also measures a large bf16 matmul on the machine itself
(``measured_matmul_tflops``), a peak that is actually reachable there.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# Dense (no sparsity) BF16 tensor-core TFLOP/s, FP32 accumulate where the vendor distinguishes.
GPU_BF16_PEAK_TFLOPS = {
    # NVIDIA H200 SXM datasheet: 1,979 TFLOPS BF16 "with sparsity"; dense is half.
    "H200": 989.5,
    # NVIDIA H100 SXM datasheet: 1,979 TFLOPS BF16 with sparsity (989.5 dense); H100 PCIe 1,513 (756 dense).
    "H100 PCIe": 756.0,
    "H100": 989.5,
    # NVIDIA A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity).
    "A100": 312.0,
    # NVIDIA Ada Lovelace architecture whitepaper, RTX 4090: 165.2 TFLOPS FP16/BF16 tensor with FP32 accumulate
    # (330.3 with FP16 accumulate; twice each with sparsity).
    "RTX 4090": 165.2,
    # NVIDIA RTX Blackwell GPU architecture whitepaper, RTX 5090: 209.5 TFLOPS FP16/BF16 tensor with FP32
    # accumulate, dense (419 with sparsity).
    "RTX 5090": 209.5,
}
SOURCES = {
    "H200": "NVIDIA H200 Tensor Core GPU datasheet (BF16 1,979 TFLOPS with sparsity)",
    "H100": "NVIDIA H100 Tensor Core GPU datasheet (SXM: BF16 1,979 TFLOPS with sparsity; PCIe: 1,513)",
    "H100 PCIe": "NVIDIA H100 Tensor Core GPU datasheet (PCIe: BF16 1,513 TFLOPS with sparsity)",
    "A100": "NVIDIA A100 Tensor Core GPU datasheet (BF16 312 TFLOPS dense)",
    "RTX 4090": "NVIDIA Ada Lovelace GPU architecture whitepaper, appendix table (RTX 4090)",
    "RTX 5090": "NVIDIA RTX Blackwell GPU architecture whitepaper, appendix table (RTX 5090)",
}


def gpu_peak_tflops(device_name: str | None) -> tuple[float | None, str | None]:
    """The published dense bf16 peak for a device name as torch reports it (``NVIDIA H200``), and its key."""
    name = (device_name or "").upper()
    for key in sorted(GPU_BF16_PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if all(part.upper() in name for part in key.split()):
            return GPU_BF16_PEAK_TFLOPS[key], key
    return None, None


def denoise_flops(model_id: str, frames: int, height: int, width: int, steps: int, guidance: bool) -> dict:
    """FLOPs of a job's denoising steps for a catalogue model at its real size: per forward and in total."""
    from ..families.catalogue import family_of

    return family_of(model_id).denoise_flops(model_id, frames, height, width, steps, guidance)


def mfu(flops: float | None, seconds: float | None, peak_tflops: float | None) -> float | None:
    """Fraction of ``peak_tflops`` reached doing ``flops`` in ``seconds``."""
    if not flops or not seconds or not peak_tflops:
        return None
    return flops / seconds / (peak_tflops * 1e12)


def measured_matmul_tflops(device: str, size: int = 8192, repeat: int = 20) -> float | None:
    """bf16 TFLOP/s of a large square matmul on ``device`` (CUDA only): what this GPU really reaches."""
    if not device.startswith("cuda"):
        return None
    import time

    import torch

    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    del a, b
    return 2 * size**3 * repeat / seconds / 1e12
