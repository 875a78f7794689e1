"""What a model family module provides: the one place the rest of the app asks about a family.

A family is one module in ``pipelines/families/`` (``wan.py``, ``whisper.py``, ... one per family) plus
its architecture configs in ``assets/model_configs/<model id>.json``; ``catalogue.FAMILIES`` lists them.
Generic code gets a family with ``catalogue.family_of(spec)`` and reads the names below; it never
branches on a family's name and never imports a family's private (``_``) names. Families are plain
modules with module-level names (as ComfyUI's ``supported_models.py`` classes are declarations plus a
few hooks); ``VideoFamily`` and ``Family`` below are the contract, and ``tests/test_families.py`` checks
every family in the catalogue against it.

Every family (``Family``):

``NAME``            the family id, stored in each spec's ``family`` field (set by the catalogue)
``SPECS``           its ``ModelSpec`` catalogue entries, with their ``VideoPreset`` presets
``DEFAULTS``        ``{task: model id}`` for the tasks whose default model it provides (may be ``{}``);
                    the default model's family is listed first on the page
``load(spec, settings, device, dtype) -> LoadedModel``
                    load a model of the family (real weights, ``--demo`` tiny build, ``--random-weights``)
``DEMO_BUILDERS``   ``{spec.demo_kind: build()}``: tiny real-class models for ``--demo`` and the tests; each
                    returns an object with ``save_pretrained`` (``families.demo.ensure_demo_model`` caches it)
                    (Whisper: ``whisper.load`` picks the engine, ``whisper_load`` loads it; its demo build
                    is still in ``families.demo_asr``.)

A video family (``VideoFamily``) also answers what the t2v / i2v tasks, the device side and the
benchmark ask (diffusers class: ``spec.pipeline_class``):

Requests and sizes
``NEGATIVE_PROMPT`` its default negative prompt (a request without one gets it)
``TEXT_TOKENS``     prompt length in tokens (the prompt cache's key, the encoder's ``max_sequence_length``)
``USES_FLOW_SHIFT`` whether the request's flow shift means anything (False: ``shift`` stays ``None``)
``SIZE_MULTIPLE``   width and height are multiples of this (a spec's ``extra["size_multiple"]`` wins)
``MIN_FRAMES``      fewest frames an image-to-video request may ask for
``fit_frames(spec, wanted) -> (frames, note or None)``
                    the frame count the model can make (Wan: ``4n + 1``, rounded with a note; free: as is)
``call_kwargs(request) -> dict``
                    extra arguments of its pipeline call from a request (e.g. ``target_fps``)
Running a job (``pipe`` is the loaded diffusers pipeline)
``encode_prompt(pipe, request, guidance) -> (positive, negative or None)``
``denoise(pipe, request, embeds, seed, on_latents, job, inputs) -> latents``
                    the pipeline's loop to latents; ``on_latents(latents (C, F, h, w))`` once per step; stops
                    (``JobCancelled`` or diffusers' interrupt flag) when ``job.cancelled``; ``inputs`` holds
                    the pipeline's image arguments (``image``, ``last_image``) or nothing (text to video)
``decode(pipe, latents, tiled) -> uint8 frames (F, H, W, 3)``
                    VAE decode, whole or in tiles (whatever "tiled" means for its VAE)
``decode_audio(pipe, latents) -> (float samples (channels, n), sample rate)``
                    optional, for a family that makes sound too: the mp4 gets an AAC track and the sidecar
                    ``output.has_audio`` (families without it: silent clips, ``has_audio`` false)
Device side
``FP32_COMPONENTS`` components loaded in fp32 whatever the dtype (a spec's ``extra["fp32_components"]`` wins)
``activation_bytes(pipe, shape, batched_guidance) -> int``, ``decode_bytes(pipe, shape, tiled) -> int``
                    memory estimates for ``device.memory_levels`` (``shape`` is a ``memory_levels.JobShape``)
``ATTENTION``       ``"dispatcher"`` (diffusers' ``set_attention_backend``) or ``"processors"`` (older
                    attention processors: xformers or SDPA only), read by ``device.attention``
``BATCHED_GUIDANCE``, ``STEP_CACHE``, ``CONTEXT_PARALLEL``
                    which fast-path parts apply (``device.fastpath``, ``scale.parallel``)
Measuring and previews
``denoise_flops(model_id, frames, height, width, steps, guidance) -> dict``
                    ``{"per_forward", "forwards_per_step", "steps", "total"}`` at the real size, counted on the
                    ``meta`` device from ``assets/model_configs/<id>.json`` (``bench.flops``, ``bench.random_weights``)
``PREVIEW_RGB``     ``(factors (C, 3), bias (3,))`` of a linear latent-to-RGB map, or ``None`` (``media.preview``)

Creators' LoRAs (``pipelines/loras``: the LoRA folder, checks at submit, adapters on the resident pipeline)
``LORA_SUPPORT``    ``""`` when the family takes LoRAs from the LoRA folder; else why not (shown in the page)
``LORA_COMPONENTS`` the pipeline components its LoRA loader changes (Wan: the transformer(s), never the text
                    encoder, so cached prompt embeddings stay right)
``lora_check(spec, shapes, demo) -> (layout, reason)``
                    a file's tensors ``{key: shape}`` (its header only, no torch) against the model's layers:
                    the key layout it is in (``"diffusers"``, ``"wan-original"``, ...) and why it does not fit
                    (``""``: it fits); ``demo``: against the tiny demo build
``lora_rename(key, layout) -> key``
                    a key as the family's diffusers ``load_lora_weights`` reads it
``lora_experts(spec, name) -> (kwargs, ...)``
                    one ``load_lora_weights`` keyword set per denoiser the LoRA goes on (Wan 2.2 A14B's second
                    expert: ``load_into_transformer_2=True``); ``()`` for a family without LoRAs
A family that takes no LoRAs gets all five from ``no_loras(reason)``.

A new question about every family (e.g. LoRA rules): add the name to the list above and to the protocol,
and give every family an answer; generic code then reads it. ``load`` and the stages may take what
their family needs from the request; everything else is plain data.

A new family: write its module with these names (``docs/adding-a-model-family.md``), add its configs under
``assets/model_configs/``, add it to ``catalogue.FAMILIES``, its strings to the UI's tables, and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .spec import ModelSpec


@runtime_checkable
class Family(Protocol):
    """Every family."""

    NAME: str
    SPECS: tuple[ModelSpec, ...]
    DEFAULTS: dict[str, str]
    DEMO_BUILDERS: dict[str, Callable[[], Any]]

    def load(self, spec: ModelSpec, settings, device: str, dtype: str): ...


@runtime_checkable
class VideoFamily(Family, Protocol):
    """A text- or image-to-video family (diffusers pipeline)."""

    NEGATIVE_PROMPT: str
    TEXT_TOKENS: int
    USES_FLOW_SHIFT: bool
    SIZE_MULTIPLE: int
    MIN_FRAMES: int
    FP32_COMPONENTS: tuple[str, ...]
    ATTENTION: str
    BATCHED_GUIDANCE: bool
    STEP_CACHE: bool
    CONTEXT_PARALLEL: bool
    PREVIEW_RGB: tuple | None
    LORA_SUPPORT: str
    LORA_COMPONENTS: tuple[str, ...]

    def fit_frames(self, spec: ModelSpec, wanted: int) -> tuple[int, str | None]: ...

    def call_kwargs(self, request) -> dict: ...

    def encode_prompt(self, pipe, request, guidance: bool) -> tuple: ...

    def denoise(self, pipe, request, embeds, seed: int, on_latents, job, inputs: dict): ...

    def decode(self, pipe, latents, tiled: bool): ...

    def activation_bytes(self, pipe, shape, batched_guidance: bool) -> int: ...

    def decode_bytes(self, pipe, shape, tiled: bool) -> int: ...

    def denoise_flops(self, model_id: str, frames: int, height: int, width: int, steps: int, guidance: bool) -> dict: ...

    def lora_check(self, spec: ModelSpec, shapes: dict, demo: bool) -> tuple[str, str]: ...

    def lora_rename(self, key: str, layout: str) -> str: ...

    def lora_experts(self, spec: ModelSpec, name: str) -> tuple[dict, ...]: ...


def size_multiple(family, spec: ModelSpec) -> int:
    """Width and height multiple of ``spec``: its own, else its family's."""
    return int(spec.extra.get("size_multiple", getattr(family, "SIZE_MULTIPLE", 16)))


def fp32_components(family, spec: ModelSpec) -> tuple[str, ...]:
    """Components of ``spec`` kept in fp32: its own list, else its family's."""
    return tuple(spec.extra.get("fp32_components", getattr(family, "FP32_COMPONENTS", ())))


def snap_frames(spec: ModelSpec, wanted: int, temporal: int, who: str) -> tuple[int, str | None]:
    """``fit_frames`` for a family whose VAE makes ``temporal * n + 1`` frames: the nearest such count, not
    above the spec's maximum, with a note naming ``who`` when it changed."""
    from .spec import snap_frames as nearest

    frames = nearest(wanted, temporal)
    if frames > spec.max_frames:
        frames -= temporal
    note = f"{who} makes {temporal}n+1 frames: {wanted} became {frames}." if frames != wanted else None
    return frames, note


def count_forward_flops(model, *args, **kwargs) -> float:
    """FLOPs of ``model(*args, **kwargs)`` counted by ``FlopCounterMode`` (use meta tensors: nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return float(counter.get_total_flops())


def meta_component(model_id: str, name: str):
    """Component ``name`` of a catalogue model at its real size, on the ``meta`` device (no memory), in bf16."""
    import torch

    from ..bench.random_weights import build_component, config_for

    return build_component(config_for(model_id)[name], "meta", torch.bfloat16)


def no_loras(reason: str) -> tuple:
    """The five LoRA answers of a family that takes no LoRAs, ``reason`` saying why:
    ``LORA_SUPPORT, LORA_COMPONENTS, lora_check, lora_rename, lora_experts = base.no_loras("...")``."""

    def lora_check(spec: ModelSpec, shapes: dict, demo: bool) -> tuple[str, str]:
        return "", reason

    def lora_rename(key: str, layout: str) -> str:
        return key

    def lora_experts(spec: ModelSpec, name: str) -> tuple[dict, ...]:
        return ()

    return reason, (), lora_check, lora_rename, lora_experts
