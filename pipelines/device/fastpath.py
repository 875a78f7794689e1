"""The fast path: what the video tasks add around diffusers' own pipeline call to waste less of the GPU.

Output-preserving (the same seed gives the same frames within rounding; ``tests/test_fastpath.py``):

- **fused QKV projections** (``--no-fuse-qkv`` turns off): one matmul for q, k and v. The original
  projections become views into the fused weight, so no memory is added.
- **guidance batched with the conditional pass** (``--batch-guidance auto|on|off``): a transformer pipeline calls
  the transformer twice per step (with the prompt, then with the negative prompt); ``batched_guidance``
  runs both as one batch of two on the first call and hands back the second half on the second call. ``auto``
  batches at the levels that keep the transformer resident.
- **prompt embeddings cached** for repeated prompts (``pipelines.device.prompt_cache``), and the text encoder
  kept in CPU memory when VRAM is short (``pipelines.device.memory_levels``).
- **regional compilation** (``--compile``): diffusers' ``compile_repeated_blocks`` compiles one transformer
  block and reuses it for all of them, so the first job waits seconds, not minutes; inductor's caches go to
  ``<data dir>/compile_cache`` and survive restarts. The first compiled job's extra time is measured
  (first step minus the median step) and recorded as ``compile_extra_s``. A compile failure falls back to
  the eager model with a log line, and the step is run again.
- the attention kernel (``pipelines.device.attention``) and VAE tiling only when the decode would not fit.

Changing the output (opt-in, listed under ``changes_output`` in the sidecar):

- **step cache** (first-block cache, diffusers' ``FirstBlockCacheConfig``): when the first block's residual
  changed less than the threshold since the last full step, the other blocks are skipped and their last
  residual reused. Families with ``STEP_CACHE`` only.
- **fp8 weight storage** (``--fp8``, diffusers' layer-wise casting): weights in float8 e4m3, computed in the
  model's dtype; about half the transformer's memory.
- the Turbo presets (step-distilled weights / LoRA, 4 steps, guidance 1) and SageAttention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from pathlib import Path

from . import memory_levels

logger = logging.getLogger(__name__)

BATCH_GUIDANCE_CHOICES = ("auto", "on", "off")
MAX_STEP_CACHE = 1.0  # thresholds above this skip nearly every step
# Levels at which the denoiser stays on the GPU: compilation, fused projections and batching apply there.
RESIDENT_LEVELS = ("resident", "text_offload", "vae_tiling")
# What ``--fp8`` stores weights in (compute stays in the model's dtype); CUDA GPUs with fp8 (sm 8.9+).
FP8_MIN_CAPABILITY = (8, 9)


# --- load time --------------------------------------------------------------------------------------------


def denoisers(pipe) -> list:
    return [m for m in (getattr(pipe, n, None) for n in ("transformer", "transformer_2", "unet")) if m is not None]


def fuse_qkv(pipe) -> bool:
    """Fuse the attention projections of the denoiser(s); the unfused weights become views into the fused
    ones (no extra memory). Returns whether anything was fused."""
    fused = False
    for model in denoisers(pipe):
        if not hasattr(model, "fuse_qkv_projections"):
            continue
        try:
            model.fuse_qkv_projections()
        except (ValueError, NotImplementedError, AttributeError) as error:
            logger.info("Fused QKV: not supported by %s (%s)", type(model).__name__, error)
            continue
        fused = _alias_fused_weights(model) > 0 or fused
    return fused


def _alias_fused_weights(model) -> int:
    """Point to_q/to_k/to_v (and add_k/add_v) at slices of the fused weight, so both share memory."""
    import torch

    count = 0
    groups = (("to_qkv", ("to_q", "to_k", "to_v")), ("to_kv", ("to_k", "to_v")), ("to_added_kv", ("add_k_proj", "add_v_proj")))
    for module in model.modules():
        for fused_name, parts in groups:
            fused = getattr(module, fused_name, None)
            sources = [getattr(module, name, None) for name in parts]
            if not isinstance(fused, torch.nn.Linear) or any(not isinstance(s, torch.nn.Linear) for s in sources):
                continue
            start = 0
            for source in sources:
                rows = source.weight.shape[0]
                source.weight.data = fused.weight.data[start:start + rows]
                if source.bias is not None and fused.bias is not None:
                    source.bias.data = fused.bias.data[start:start + rows]
                start += rows
            count += 1
    return count


def unfuse_qkv(pipe) -> None:
    for model in denoisers(pipe):
        if hasattr(model, "unfuse_qkv_projections"):
            try:
                model.unfuse_qkv_projections()
            except Exception as error:  # pragma: no cover - unfusing a model that was never fused
                logger.debug("unfuse: %s", error)
        for module in model.modules():  # the old attention processors keep their fused layers around
            if getattr(module, "fused_projections", False) and hasattr(module, "fuse_projections") \
                    and not hasattr(module, "unfuse_projections"):
                for name in ("to_qkv", "to_kv", "to_added_kv"):
                    if hasattr(module, name):
                        delattr(module, name)
                module.fused_projections = False


def compile_cache_dir(settings) -> Path:
    return Path(settings.data_dir) / "compile_cache"


def compile_denoisers(pipe, settings) -> str:
    """Regional compilation of the denoiser(s); returns what was done, in words (for the log and sidecar).
    Compilation itself happens lazily, at the first step."""
    folder = compile_cache_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder.resolve()))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
    except Exception:  # pragma: no cover - older torch
        pass
    done = []
    for model in denoisers(pipe):
        if getattr(model, "_repeated_blocks", None) and hasattr(model, "compile_repeated_blocks"):
            model.compile_repeated_blocks(fullgraph=True)
            done.append(f"{type(model).__name__}: repeated blocks {', '.join(model._repeated_blocks)}")
        else:  # a UNet: compile its repeated block classes the same way
            names = ("BasicTransformerBlock", "ResnetBlock2D", "TemporalConvLayer", "TransformerTemporalModel")
            count = 0
            for submodule in model.modules():
                if type(submodule).__name__ in names:
                    submodule.compile(fullgraph=False)
                    count += 1
            done.append(f"{type(model).__name__}: {count} blocks ({', '.join(names)})")
    return "; ".join(done)


def uncompile(pipe) -> None:
    """Back to eager blocks (a compile failure, or an offload level that compilation does not support)."""
    for model in denoisers(pipe):
        for submodule in model.modules():
            if getattr(submodule, "_compiled_call_impl", None) is not None:
                submodule._compiled_call_impl = None


@contextlib.contextmanager
def eager_blocks(pipe):
    """While inside, compiled blocks run eager; compiled again afterwards (the compiled code is kept)."""
    stashed = []
    for model in denoisers(pipe):
        for submodule in model.modules():
            compiled = getattr(submodule, "_compiled_call_impl", None)
            if compiled is not None:
                stashed.append((submodule, compiled))
                submodule._compiled_call_impl = None
    try:
        yield
    finally:
        for submodule, compiled in stashed:
            submodule._compiled_call_impl = compiled


def fp8_supported(device: str) -> tuple[bool, str]:
    import torch

    if not hasattr(torch, "float8_e4m3fn"):
        return False, "this torch has no float8 dtype"
    if device.startswith("cuda"):
        capability = torch.cuda.get_device_capability(device)
        if tuple(capability) < FP8_MIN_CAPABILITY:
            return False, f"the GPU (sm {capability[0]}.{capability[1]}) has no fp8 (sm 8.9+)"
    return True, ""


def enable_fp8(pipe, device: str) -> bool:
    """Layer-wise casting of the denoiser(s): weights stored in float8 e4m3, computed in their dtype."""
    import torch

    ok, why = fp8_supported(device)
    if not ok:
        logger.info("fp8 weight storage not used: %s.", why)
        return False
    for model in denoisers(pipe):
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=model.dtype)
    return True


def setup(loaded, settings, device: str) -> None:
    """After placement: fused projections and compilation where the level keeps the denoiser on the GPU
    (on the CPU, always). Records what was done in ``loaded.optimisations``."""
    pipe = loaded.pipe
    record = loaded.optimisations
    on_device = loaded.level in RESIDENT_LEVELS
    record.setdefault("fp8", False)
    if settings.fuse_qkv and on_device and not record.get("fp8") and not getattr(loaded, "loras", None):  # LoRAs: q/k/v
        record["fused_qkv"] = fuse_qkv(pipe)
    else:
        record["fused_qkv"] = False
    if settings.compile and on_device:
        try:
            record["compile"] = compile_denoisers(pipe, settings)
            record["compile_first_run_pending"] = True
            logger.info("Compile: %s (inductor cache %s)", record["compile"], os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        except Exception as error:
            logger.warning("Compile failed (%s: %s); running eager.", type(error).__name__, error)
            uncompile(pipe)
            record["compile"] = None
    else:
        if settings.compile:
            logger.info("Compile: not at memory level %s (offload hooks break the graph); running eager.", loaded.level)
        record["compile"] = None


def set_level(loaded, level: str, settings, device: str) -> str:
    """Move a loaded pipeline to ``level`` in place (undoing and redoing what depends on the level); raises
    ``memory_levels.ReloadNeeded`` when only a reload can do it."""
    pipe = loaded.pipe
    if level == loaded.level:
        return level
    if loaded.optimisations.get("fused_qkv"):
        unfuse_qkv(pipe)
    if loaded.optimisations.get("compile"):
        uncompile(pipe)
    memory_levels.place_at(pipe, level, device, current=loaded.level)
    loaded.level = level
    setup(loaded, settings, device)
    return level


# --- per job ----------------------------------------------------------------------------------------------


def batch_guidance_enabled(settings, level: str, guidance: bool) -> bool:
    choice = getattr(settings, "batch_guidance", "auto")
    if not guidance or choice == "off":
        return False
    return choice == "on" or level in RESIDENT_LEVELS


def _same_tensor(a, b) -> bool:
    return a is b or (a is not None and b is not None and a.shape == b.shape and a.data_ptr() == b.data_ptr()
                      and a.dtype == b.dtype)


@contextlib.contextmanager
def batched_guidance(pipe, negative):
    """While inside, the transformer(s) run the conditional and the unconditional pass of a step as one
    batch: the call with the prompt computes both and the call with ``negative`` that follows (same latents
    object) gets the stored second half. Any other call goes through unchanged. Yields counters."""
    import torch

    stats = {"batched": 0, "unbatched": 0}
    patched = []
    for model in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)):
        if model is None or negative is None:
            continue
        had_own = "forward" in model.__dict__
        inner = model.forward
        state: dict = {"pending": None}

        def forward(hidden_states, timestep, encoder_hidden_states, *args, _inner=inner, _state=state, **kwargs):
            pending, _state["pending"] = _state["pending"], None
            if pending is not None and pending[0] is hidden_states and _same_tensor(encoder_hidden_states, negative):
                return pending[1]
            if args or _same_tensor(encoder_hidden_states, negative) or encoder_hidden_states.shape != negative.shape:
                stats["unbatched"] += 1
                return _inner(hidden_states, timestep, encoder_hidden_states, *args, **kwargs)
            return_dict = kwargs.pop("return_dict", True)
            image = kwargs.get("encoder_hidden_states_image")
            if image is not None:
                kwargs["encoder_hidden_states_image"] = torch.cat([image, image])
            out = _inner(torch.cat([hidden_states, hidden_states]), torch.cat([timestep, timestep]),
                         torch.cat([encoder_hidden_states, negative.to(encoder_hidden_states.dtype)]),
                         return_dict=False, **kwargs)[0]
            cond, uncond = out.chunk(2)
            stats["batched"] += 1
            _state["pending"] = (hidden_states, _output(uncond, return_dict))
            return _output(cond, return_dict)

        model.forward = forward
        patched.append((model, had_own, inner))
    try:
        yield stats
    finally:
        for model, had_own, inner in patched:
            if had_own:
                model.forward = inner
            else:
                del model.forward


def _output(sample, return_dict: bool):
    if not return_dict:
        return (sample,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


@contextlib.contextmanager
def step_cache(pipe, threshold: float):
    """First-block cache on the transformer(s) for the duration of one denoising run; yields counters
    of full and cached transformer calls (counted at the first and the last block's feed-forward)."""
    stats = {"threshold": threshold, "full": 0, "cached": 0}
    if not threshold:
        yield stats
        return
    from diffusers import FirstBlockCacheConfig

    enabled, handles = [], []
    try:
        for model in denoisers(pipe):
            model.enable_cache(FirstBlockCacheConfig(threshold=float(threshold)))
            enabled.append(model)
            blocks = getattr(model, "blocks", None)
            if blocks is not None and len(blocks) > 1:
                head, tail = blocks[0], blocks[-1]
                counts = {"head": 0, "tail": 0}
                handles.append(_counting_hook(getattr(head, "ffn", head), counts, "head"))
                handles.append(_counting_hook(getattr(tail, "ffn", tail), counts, "tail"))
                handles.append(counts)
        yield stats
    finally:
        for model in enabled:
            model.disable_cache()
        for item in handles:
            if isinstance(item, dict):
                stats["full"] += item["tail"]
                stats["cached"] += item["head"] - item["tail"]
            else:
                item.remove()


def _counting_hook(module, counts: dict, name: str):
    def hook(*_):
        counts[name] += 1

    return module.register_forward_hook(hook)


class StepTimer:
    """Seconds per denoising step, from the pipeline's step callback; the first step's excess over the median
    is what compilation (or a cold kernel cache) cost."""

    def __init__(self):
        self.start = time.perf_counter()
        self.last = self.start
        self.steps: list[float] = []

    def tick(self) -> None:
        now = time.perf_counter()
        self.steps.append(now - self.last)
        self.last = now

    def first_step_extra(self) -> float | None:
        if len(self.steps) < 3:
            return None
        return max(0.0, self.steps[0] - statistics.median(self.steps[1:]))


def decode_should_tile(pipe, level: str, shape, settings, device: str, family) -> tuple[bool, str]:
    """Tile the VAE decode when the level says so, ``--vae-tiling`` asks, or the whole decode would not fit
    in the free VRAM measured now (the family's ``decode_bytes``)."""
    if settings.vae_tiling:
        return True, "--vae-tiling"
    if memory_levels.tiles_vae(level):
        return True, f"memory level {level}"
    if not device.startswith("cuda"):
        return False, ""
    need = family.decode_bytes(pipe, shape, False)
    free = memory_levels.available_bytes(device, None)
    if need + memory_levels.RESERVE_BYTES > free:
        return True, f"a whole decode needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return False, ""


def changes_output(request_step_cache: float, preset_changes: bool, attention: str, fp8: bool) -> list[str]:
    """What in this job makes its frames differ from the plain pipeline's at the same seed."""
    from .attention import CHANGES_OUTPUT

    changed = []
    if preset_changes:
        changed.append("step-distilled preset (Turbo)")
    if request_step_cache:
        changed.append(f"step cache (first-block cache, threshold {request_step_cache:g})")
    if fp8:
        changed.append("fp8 weight storage")
    if attention in CHANGES_OUTPUT:
        changed.append(f"{attention} attention (quantised)")
    return changed


@contextlib.contextmanager
def denoise_context(model, settings, guidance: bool, negative, step_cache_threshold: float, family=None):
    """Everything the fast path wraps around one denoising run: batched guidance (when the family has it,
    ``BATCHED_GUIDANCE``, and it is enabled at this level), the step cache (when the request asks and the
    family has it, ``STEP_CACHE``), the step timer. Yields a dict that is filled with what happened (for the
    sidecar) when the block ends; ``info["timer"]`` is ticked by the task's step callback."""
    pipe = model.pipe
    batch = getattr(family, "BATCHED_GUIDANCE", True) and batch_guidance_enabled(settings, model.level, guidance) and negative is not None
    info: dict = {"timer": StepTimer()}
    first_compiled = bool(model.optimisations.get("compile") and model.optimisations.get("compile_first_run_pending"))
    batching = batched_guidance(pipe, negative) if batch else contextlib.nullcontext({"batched": 0, "unbatched": 0})
    # the step cache decides per step, on the host, whether to run the blocks: a graph break that full-graph
    # compiled blocks do not allow, so those blocks run eager for this job (as for a LoRA set past lora_compile's cap)
    run_eager = step_cache_threshold or model.optimisations.get("compile_loras_eager")
    eager = eager_blocks(pipe) if run_eager and model.optimisations.get("compile") else contextlib.nullcontext()
    cache_threshold = step_cache_threshold if getattr(family, "STEP_CACHE", True) else 0.0
    with eager, step_cache(pipe, cache_threshold) as cache_stats, batching as batch_stats:
        yield info
    timer = info.pop("timer")
    info["guidance_batched"] = bool(batch and batch_stats["batched"])
    info["guidance_batched_steps"] = batch_stats["batched"]
    if step_cache_threshold:
        info["step_cache"] = {"threshold": step_cache_threshold, "full_transformer_calls": cache_stats["full"],
                              "cached_transformer_calls": cache_stats["cached"]}
    else:
        info["step_cache"] = None
    if first_compiled:
        model.optimisations["compile_first_run_pending"] = False
        info["compile_extra_s"] = None if timer.first_step_extra() is None else round(timer.first_step_extra(), 3)
    info["step_s_median"] = round(statistics.median(timer.steps), 4) if timer.steps else None


def is_compile_error(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "torch.fx"))


def with_compile_fallback(model, run):
    """``run()``; when the compiled blocks fail to compile, go back to eager (logged, recorded) and run again."""
    try:
        return run()
    except Exception as error:
        if not model.optimisations.get("compile") or not is_compile_error(error):
            raise
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    logger.warning("Compile: the compiled blocks failed (%s); running eager from now on.", reason)
    uncompile(model.pipe)
    model.optimisations["compile"] = None
    model.optimisations["compile_failed"] = reason
    return run()
