"""Context-parallel numerics: a tiny real ``WanTransformer3DModel`` split across ranks against one process.

Run under ``torchrun`` (``scripts/parallel_check.py`` is the entry point; ``tests/test_context_parallel.py``
runs it on 2 CPU processes with gloo):

    torchrun --nproc-per-node 2 scripts/parallel_check.py --out /tmp/cp            # CPU, gloo
    torchrun --nproc-per-node 8 scripts/parallel_check.py --out /tmp/cp --device cuda --dtype bf16

Every rank builds the same seeded transformer, runs it alone first (the one-process reference: no
collective involved), then again with diffusers' context parallelism on, once per case:

- ``divisible``: as many heads as ranks: the app's choice is Ulysses;
- ``not_divisible``: one head more: ring on a GPU in bf16/fp16, padded Ulysses elsewhere;
- ``ring``: ring attention, forced (on a CPU it cannot run: no CPU kernel returns the log-sum-exp);
- ``uneven``: a sequence that does not divide by the ranks (NCCL only: gloo cannot gather uneven pieces).

Each rank writes ``rank<r>.pt`` under ``--out`` with, per case, the reference, the parallel output, the
sequence length its attention saw and the mode, or the error; rank 0 prints the largest differences.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The tiny model of the tests (pipelines/demo_models.py), with the head count as a parameter.
HEAD_DIM = 12
FRAMES, SIZE = 3, 8  # latents (1, 16, 3, 8, 8): 3 x 4 x 4 = 48 tokens
UNEVEN_SIZE = 6  # (1, 16, 3, 6, 6): 27 tokens


def tiny_transformer(heads: int):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=HEAD_DIM, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def check_inputs(size: int = SIZE):
    """Latents, timestep and text embeddings, the same on every rank."""
    import torch

    generator = torch.Generator("cpu").manual_seed(1)
    latents = torch.randn(1, 16, FRAMES, size, size, generator=generator)
    timestep = torch.tensor([500])
    text = torch.randn(1, 10, 32, generator=generator)
    return latents, timestep, text


def reference(heads: int, size: int = SIZE):
    """The output of one process: no distributed anything."""
    import torch

    model = tiny_transformer(heads)
    latents, timestep, text = check_inputs(size)
    with torch.no_grad():
        return model(latents, timestep, text, return_dict=False)[0]


def run_case(name: str, heads: int, size: int, mode, device: str, dtype, device_kind: str) -> dict:
    import torch

    from .parallel_rank import enable_context_parallel

    model = tiny_transformer(heads).to(device, dtype)
    latents, timestep, text = (x.to(device) for x in check_inputs(size))
    latents, text = latents.to(dtype), text.to(dtype)
    with torch.no_grad():
        alone = model(latents, timestep, text, return_dict=False)[0].float().cpu()
    seen = []
    model.blocks[0].attn1.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    result = {"heads": heads, "tokens": FRAMES * (size // 2) ** 2, "mode": mode.as_dict(), "reference": alone}
    try:
        configs = enable_context_parallel([model], mode, "sdpa", device_kind)
        for config in configs:
            mode.set_flags(config, uneven=result["tokens"] % mode.degree != 0)
        with torch.no_grad():
            result["parallel"] = model(latents, timestep, text, return_dict=False)[0].float().cpu()
        result["local_tokens"] = seen[-1]
    except Exception as error:  # recorded: a mode that cannot run here says why
        result["error"] = f"{type(error).__name__}: {error}"
    return result


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from .parallel_mode import CPMode, choose_mode, ring_available

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    device = f"cuda:{torch.cuda.current_device()}" if args.device == "cuda" else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    ring_ok = ring_available(args.device, args.dtype)
    cases = {
        "divisible": (world, SIZE, choose_mode(world, world, ring_ok)),
        "ring": (world, SIZE, CPMode("ring", world)),
    }
    try:
        cases["not_divisible"] = (world + 1, SIZE, choose_mode(world + 1, world, ring_ok))
    except ValueError as error:  # no mode for that head count here
        cases["not_divisible"] = None
        print(f"not_divisible: {error}")
    if args.device == "cuda":
        cases["uneven"] = (world, UNEVEN_SIZE, choose_mode(world, world, ring_ok))
    results = {}
    for name, case in cases.items():
        if case is not None:
            results[name] = run_case(name, *case, device=device, dtype=dtype, device_kind=args.device)
        dist.barrier()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"world": world, "device": device, "dtype": args.dtype, "cases": results}, args.out / f"rank{rank}.pt")
    if rank == 0:
        for name, result in results.items():
            if "error" in result:
                print(f"{name:14s} {CPMode(**result['mode']).label:24s} cannot run here: {result['error'][:120]}")
            else:
                diff = (result["parallel"] - result["reference"]).abs().max().item()
                print(f"{name:14s} {CPMode(**result['mode']).label:24s} tokens {result['tokens']} "
                      f"(attention saw {result['local_tokens']} per rank)  max |diff| {diff:.3g}")
    dist.destroy_process_group()
    return 0
