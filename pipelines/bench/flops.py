"""FLOPs of the denoising steps, counted from the model's shapes, and the GPUs' peak throughput.

``denoise_flops`` builds the denoiser of a catalogue model from its shipped architecture config
(``assets/model_configs``) on PyTorch's ``meta`` device (no memory, no compute) and runs one forward pass
at the job's shapes under ``torch.utils.flop_counter.FlopCounterMode``, which adds up the matmuls,
convolutions and attention of every operator from their shapes (2 FLOPs per multiply-add). One step is
one forward per guidance pass. For Wan the closed form below gives the same number, and the tests check
that it does:

    per block: 8·N·d² (q, k, v, out) + 4·N²·d (self-attention) + 4·N·d² + 4·L·d² + 4·N·L·d (cross-attention
    to L text tokens) + 4·N·d·f (FFN), with N tokens, width d and FFN width f.

Wan 2.1 1.3B at 480p and 81 frames: N = 32,760, d = 1,536, f = 8,960, 30 blocks: 2.83e14 per forward, so
50 steps with guidance are 2.83e16 FLOPs.

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


def wan_forward_flops_closed_form(config, tokens: int, text_tokens: int = 512, image_tokens: int = 0) -> float:
    """One Wan transformer forward, from the closed form in the module docstring (blocks only)."""
    d = config.num_attention_heads * config.attention_head_dim
    f = config.ffn_dim
    n, context = tokens, text_tokens + image_tokens
    per_block = 8 * n * d * d + 4 * n * n * d + 4 * n * d * d + 4 * context * d * d + 4 * n * context * d + 4 * n * d * f
    return float(per_block * config.num_layers)


def count_forward_flops(model, *args, **kwargs) -> float:
    """FLOPs of ``model(*args, **kwargs)`` counted by ``FlopCounterMode`` (use meta tensors: nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return float(counter.get_total_flops())


def _meta_denoiser(model_id: str):
    import torch

    from .random_weights import build_component, config_for

    config = config_for(model_id)
    name = "transformer" if "transformer" in config else "unet"
    return build_component(config[name], "meta", torch.bfloat16), name


def wan_forward_flops(transformer, frames: int, height: int, width: int, text_tokens: int = 512,
                      spatial: int = 8, temporal: int = 4) -> float:
    import torch

    config = transformer.config
    latent = (1, config.in_channels, (frames - 1) // temporal + 1, height // spatial, width // spatial)
    dtype = transformer.dtype
    kwargs = {}
    if getattr(config, "image_dim", None):
        kwargs["encoder_hidden_states_image"] = torch.empty(1, 257, config.image_dim, device="meta", dtype=dtype)
    return count_forward_flops(transformer, torch.empty(latent, device="meta", dtype=dtype),
                               torch.empty(1, device="meta"),
                               torch.empty(1, text_tokens, config.text_dim, device="meta", dtype=dtype),
                               return_dict=False, **kwargs)


def i2vgen_forward_flops(unet, frames: int, height: int, width: int, batch: int = 2) -> float:
    """One I2VGen-XL UNet forward; ``batch`` 2 with guidance (its pipeline batches both passes)."""
    import torch

    dtype = unet.dtype
    latent = (batch, unet.config.in_channels, frames, height // 8, width // 8)
    cross = unet.config.cross_attention_dim
    return count_forward_flops(
        unet, torch.empty(latent, device="meta", dtype=dtype), torch.tensor(500, device="meta"),
        fps=torch.empty(batch, device="meta"), image_latents=torch.empty(latent, device="meta", dtype=dtype),
        image_embeddings=torch.empty(batch, 1, cross, device="meta", dtype=dtype),
        encoder_hidden_states=torch.empty(batch, 77, cross, device="meta", dtype=dtype), return_dict=False,
    )


def denoise_flops(model_id: str, frames: int, height: int, width: int, steps: int, guidance: bool) -> dict:
    """FLOPs of a job's denoising steps for a catalogue model at its real size: per forward and in total."""
    model, kind = _meta_denoiser(model_id)
    if kind == "transformer":
        per_forward = wan_forward_flops(model, frames, height, width)
        passes = 2 if guidance else 1
    else:
        per_forward = i2vgen_forward_flops(model, frames, height, width, batch=2 if guidance else 1)
        passes = 1  # one batched forward per step
    return {"per_forward": per_forward, "forwards_per_step": passes, "steps": steps,
            "total": per_forward * passes * steps}


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
