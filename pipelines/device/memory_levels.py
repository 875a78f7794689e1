"""Memory levels for a video pipeline: how much of it lives on the GPU, chosen from measured free VRAM.

One ladder, from fastest to leanest; the automatic choice at load time and the out-of-memory retry of a
job (``pipelines.tasks.t2v`` / ``pipelines.tasks.i2v``) both walk it:

===================  ===========================================================  ==========
level                what it does                                                 VAE decode
===================  ===========================================================  ==========
``resident``         every component on the GPU                                   whole, or tiled only when it would not fit
``text_offload``     the text encoder waits in CPU memory and comes to the GPU    whole, or tiled when it would not fit
                     only to encode a prompt not in the prompt cache
``vae_tiling``       as ``text_offload``                                          always tiled (as the family tiles: ``decode``)
``model_offload``    diffusers' ``enable_model_cpu_offload``: one component at    always tiled
                     a time on the GPU
``group_offload``    diffusers' group offload (leaf level, CUDA streams): only    always tiled
                     with ``--offload group`` / ``--memory-level group_offload``
``sequential_offload``  diffusers' ``enable_sequential_cpu_offload``: layer by    always tiled
                     layer; the leanest and slowest
===================  ===========================================================  ==========

``--fp8`` (layer-wise casting: weights stored in fp8, computed in bf16/fp16) is orthogonal to the
ladder and changes the output, so it is opt-in and recorded in the sidecar.

Out of memory, a job retries at the next level down (``next_level``: group offload is skipped unless it
is where the model already is), once per level; only when the lowest level fails does the job fail.
The level reached stays for the model until **Release VRAM** (a job that needed it would need it again).

Test hook, for the tests and the lead's soak script, which start the app as a subprocess::

    CINESCRIBE_TEST_INJECT_OOM="denoise:2"            # the next 2 times a denoise stage starts: OOM
    CINESCRIBE_TEST_INJECT_OOM="decode:1,text_encode:1"
    CINESCRIBE_TEST_INJECT_OOM="denoise:*"            # every time: the job fails at every level

Stages: ``text_encode``, ``denoise``, ``decode`` (also ``any``, which matches all three). The counts are
for the whole process (``stage:N`` raises N times in total, across jobs), so a soak run can inject a
known number of OOMs. The error raised is ``torch.OutOfMemoryError`` whose message starts with
``CUDA out of memory (injected by CINESCRIBE_TEST_INJECT_OOM)``; it works on the CPU too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

LEVELS = ("resident", "text_offload", "vae_tiling", "model_offload", "group_offload", "sequential_offload")
MEMORY_LEVEL_CHOICES = ("auto", *LEVELS)
# ``--offload`` is the short form of a level.
OFFLOAD_TO_LEVEL = {"model": "model_offload", "sequential": "sequential_offload", "group": "group_offload"}
LEVEL_TITLES = {
    "resident": "everything resident on the GPU",
    "text_offload": "text encoder offloaded to CPU memory",
    "vae_tiling": "text encoder offloaded, VAE decoded in tiles",
    "model_offload": "model offload (one component at a time on the GPU), VAE tiled",
    "group_offload": "group offload (layer groups streamed to the GPU), VAE tiled",
    "sequential_offload": "sequential offload (layer by layer), VAE tiled",
}
RESERVE_BYTES = 1 << 30  # kept free for the CUDA context, cuDNN/cuBLAS workspaces and fragmentation
INJECT_ENV = "CINESCRIBE_TEST_INJECT_OOM"
INJECT_STAGES = ("text_encode", "denoise", "decode", "any")

# Activation and decode estimates come from the model's family (``activation_bytes``, ``decode_bytes``:
# ``families/base.py``). They only choose a starting level (the out-of-memory ladder catches an estimate
# that was too low); the GPU run in docs/benchmarks.md is where they get checked.


def next_level(level: str) -> str | None:
    """The next level down the out-of-memory ladder, or None at the bottom. Group offload is not on the
    ladder (it needs pinned host memory as large as the model); from it the next is sequential."""
    if level == "group_offload":
        return "sequential_offload"
    index = LEVELS.index(level)
    for candidate in LEVELS[index + 1:]:
        if candidate != "group_offload":
            return candidate
    return None


def tiles_vae(level: str) -> bool:
    return LEVELS.index(level) >= LEVELS.index("vae_tiling")


def offloads_text_encoder(level: str) -> bool:
    return level in ("text_offload", "vae_tiling")


def requested_level(settings) -> str:
    """What the flags ask for: ``--offload`` (when not none) wins, then ``--memory-level`` (``auto`` by default)."""
    if settings.offload in OFFLOAD_TO_LEVEL:
        return OFFLOAD_TO_LEVEL[settings.offload]
    return getattr(settings, "memory_level", "auto") or "auto"


# --- the floor a model has been pushed down to (set by the out-of-memory ladder, read at load) ------------

_loading_floor: contextvars.ContextVar[str | None] = contextvars.ContextVar("cinescribe_loading_floor", default=None)


@contextlib.contextmanager
def loading_at(level: str | None):
    """While inside, a model being loaded starts at ``level`` or lower (set by ``ModelManager.get``)."""
    token = _loading_floor.set(level)
    try:
        yield
    finally:
        _loading_floor.reset(token)


def loading_floor() -> str | None:
    return _loading_floor.get()


def lowest(*levels: str | None) -> str:
    present = [level for level in levels if level]
    return max(present, key=LEVELS.index) if present else "resident"


# --- estimates -----------------------------------------------------------------------------------------


@dataclass
class JobShape:
    """The size of one clip, as the estimates need it."""

    frames: int
    height: int
    width: int
    guidance: bool = True


def component_bytes(pipe) -> dict[str, int]:
    """Bytes of parameters and buffers of each ``torch.nn.Module`` component of ``pipe``."""
    import torch

    sizes = {}
    for name, component in getattr(pipe, "components", {}).items():
        if isinstance(component, torch.nn.Module):
            sizes[name] = sum(t.numel() * t.element_size() for t in [*component.parameters(), *component.buffers()])
    return sizes


def activation_bytes(pipe, shape: JobShape, batched_guidance: bool, family) -> int:
    """Peak transient memory of one denoising step for ``shape`` (the family's estimate)."""
    return family.activation_bytes(pipe, shape, batched_guidance)


def decode_bytes(pipe, shape: JobShape, tiled: bool, family) -> int:
    """Peak memory of the VAE decode of one clip, whole or tiled (the family's estimate)."""
    return family.decode_bytes(pipe, shape, tiled)


def text_encoder_name(pipe) -> str | None:
    return "text_encoder" if getattr(pipe, "text_encoder", None) is not None else None


def needs_by_level(sizes: dict[str, int], pipe, shape: JobShape, batched_guidance: bool, family) -> dict[str, int]:
    """Peak GPU bytes of one job at each level (estimates of ``family``, before the reserve)."""
    total = sum(sizes.values())
    text = sizes.get(text_encoder_name(pipe) or "", 0)
    activations = family.activation_bytes(pipe, shape, batched_guidance)
    activations_unbatched = family.activation_bytes(pipe, shape, False)
    whole, tiled = family.decode_bytes(pipe, shape, False), family.decode_bytes(pipe, shape, True)
    denoisers = ("transformer", "transformer_2", "unet")
    # model offload: one component at a time, with what it computes on
    one_at_a_time = max((size + (activations_unbatched if name in denoisers else tiled if name == "vae" else 0)
                         for name, size in sizes.items()), default=0)
    largest = max(sizes.values(), default=0)
    return {
        "resident": total + max(activations, whole),
        # the text encoder comes in to encode (no activations then), and leaves before denoising
        "text_offload": max(total, total - text + max(activations_unbatched, whole)),
        "vae_tiling": max(total, total - text + max(activations_unbatched, tiled)),
        "model_offload": one_at_a_time,
        "group_offload": activations_unbatched + tiled + largest // 8,
        "sequential_offload": 0,
    }


def choose_level(needs: dict[str, int], available: int, floor: str | None = None) -> tuple[str, str]:
    """The fastest level whose estimated need fits in ``available`` bytes (after the reserve), not above
    ``floor``; and why, in words. Group offload is never chosen automatically."""
    room = available - RESERVE_BYTES
    start = LEVELS.index(floor) if floor else 0
    for level in LEVELS[start:]:
        if level == "group_offload" and floor != "group_offload":
            continue
        if needs[level] <= room or level == "sequential_offload":
            why = (f"needs about {needs[level] / 2**30:.1f} GiB of {room / 2**30:.1f} GiB available"
                   if level != "sequential_offload" else "nothing else fits")
            return level, why
    return "sequential_offload", "nothing else fits"


def available_bytes(device: str, budget_bytes: int | None, resident_elsewhere: int = 0) -> int:
    """What the app may still use on ``device``: measured free VRAM, capped by ``--gpu-memory`` minus what
    other resident models hold."""
    from .memory import read_memory

    free = read_memory(device).free
    if budget_bytes is not None:
        free = min(free, max(0, budget_bytes - resident_elsewhere))
    return free


def apply_memory_cap(settings, device: str) -> float | None:
    """``--gpu-memory``: make the CUDA allocator itself refuse to go past the cap (an allocation beyond it
    raises out-of-memory, which the ladder handles). Returns the fraction set, or None."""
    if not device.startswith("cuda") or not settings.gpu_memory_gb:
        return None
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, settings.gpu_memory_gb * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


# --- applying a level ----------------------------------------------------------------------------------


def place_at(pipe, level: str, device: str, current: str | None = None) -> str:
    """Put ``pipe`` at ``level`` on ``device`` (in place); returns the level now in effect.

    On the CPU there is nothing to offload to: every level places the pipeline in CPU memory and only the
    VAE tiling differs. From group offload the pipeline can only go to another level by a reload
    (``ReloadNeeded``): diffusers has no call that removes group offloading."""
    import torch

    if not device.startswith("cuda"):
        return level
    if current == "group_offload" and level != "group_offload":
        raise ReloadNeeded(level)
    if current == level and current is not None:
        return level
    if current in ("model_offload", "sequential_offload"):
        pipe.remove_all_hooks()
        if level in ("resident", "text_offload", "vae_tiling"):
            pipe.to("cpu")
    if level in ("resident", "text_offload", "vae_tiling"):
        # component by component: the text encoder that stays in CPU memory never visits the GPU
        keep_on_cpu = text_encoder_name(pipe) if offloads_text_encoder(level) else None
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                component.to("cpu" if name == keep_on_cpu else device)
    elif level == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif level == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    elif level == "group_offload":
        from diffusers.hooks import apply_group_offloading

        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):  # diffusers' models and transformers' text encoders alike
                apply_group_offloading(component, onload_device=torch.device(device), offload_type="leaf_level",
                                       use_stream=True)
    from .memory import free_memory

    free_memory(device)
    return level


class ReloadNeeded(Exception):
    """The pipeline cannot move to ``level`` in place; the caller evicts it and loads it again there."""

    def __init__(self, level: str):
        super().__init__(level)
        self.level = level


@contextlib.contextmanager
def text_encoder_on(pipe, device: str, level: str):
    """At the levels that keep the text encoder in CPU memory, bring it to the GPU for the encoding only."""
    name = text_encoder_name(pipe)
    if not (device.startswith("cuda") and offloads_text_encoder(level) and name):
        yield
        return
    encoder = getattr(pipe, name)
    encoder.to(device)
    try:
        yield
    finally:
        encoder.to("cpu")
        from .memory import free_memory

        free_memory(device)


# --- out-of-memory injection (tests and soak runs) --------------------------------------------------------

_inject_lock = threading.Lock()
_injected: dict[tuple[str, str], int] = {}  # (env value, stage) -> OOMs raised so far


def parse_injection(value: str) -> dict[str, int | None]:
    """``"denoise:2,decode:*"`` -> ``{"denoise": 2, "decode": None}`` (None: every time)."""
    plan: dict[str, int | None] = {}
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        stage, _, count = part.partition(":")
        stage = stage.strip()
        if stage not in INJECT_STAGES:
            raise ValueError(f"{INJECT_ENV}: unknown stage {stage!r}; use {', '.join(INJECT_STAGES)}.")
        count = count.strip() or "1"
        plan[stage] = None if count in ("*", "always") else int(count)
    return plan


def maybe_inject_oom(stage: str) -> None:
    """Raise torch's out-of-memory error here when ``CINESCRIBE_TEST_INJECT_OOM`` asks for it (see the
    module docstring); otherwise do nothing. Called as each video stage starts."""
    value = os.environ.get(INJECT_ENV, "")
    if not value:
        return
    plan = parse_injection(value)
    for key in (stage, "any"):
        if key not in plan:
            continue
        with _inject_lock:
            done = _injected.get((value, key), 0)
            if plan[key] is not None and done >= plan[key]:
                continue
            _injected[(value, key)] = done + 1
        import torch

        logger.warning("Injecting a CUDA out-of-memory error at %s (%s=%s, #%d)", stage, INJECT_ENV, value, done + 1)
        raise torch.OutOfMemoryError(
            f"CUDA out of memory (injected by {INJECT_ENV}={value} at {stage}). Tried to allocate 20.00 GiB"
        )


def reset_injection() -> None:
    """Forget the injection counts (tests)."""
    with _inject_lock:
        _injected.clear()
