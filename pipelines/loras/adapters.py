"""Creators' LoRAs on the resident pipeline: each file loaded once as a named peft adapter through diffusers'
own ``load_lora_weights`` (its converters read the Wan original, kohya and lightx2v layouts and LTX-2's original
one; Wan 2.2 A14B's second expert through ``load_into_transformer_2``), then switched between jobs with ``set_adapters``:
strengths and sets change without reloading anything, least of all the base model.

Memory stays bounded: adapters a job does not use stay loaded but inactive, up to ``MAX_IDLE`` of them (a
creator going back and forth between two LoRAs pays nothing); older ones are deleted. A job without LoRAs
turns the adapters off. LoRAs need the separate q/k/v projections, so fused QKV (``device.fastpath``) is
undone on a model the first time one is loaded; the sidecar's ``fast_path`` says so.

Each family says which components its loader changes (``LORA_COMPONENTS``): Wan's are the transformers, LTX-2's
its transformer and text connectors (run inside the call), never the text encoder, so cached prompt embeddings
stay right. An ``alpha`` beside peft ``lora_A`` / ``lora_B`` keys (which the loaders do not read there) is folded
into ``lora_A``.
"""

from __future__ import annotations

import hashlib
import logging
import time

from ..studio.jobs import RequestError

logger = logging.getLogger(__name__)

MAX_IDLE = 2  # adapters kept loaded though the current job does not use them


def adapter_name(lora) -> str:
    """The adapter's name: one per file version (path, size, mtime), so a changed file is loaded afresh."""
    info = lora.info
    ident = f"{info.path}|{info.size}|{info.mtime_ns}".encode()
    return "lora_" + hashlib.sha256(ident).hexdigest()[:12]


def _components(pipe, family) -> list:
    return [model for name in getattr(family, "LORA_COMPONENTS", ()) if (model := getattr(pipe, name, None)) is not None]


def _has_peft(model) -> bool:
    return bool(getattr(model, "_hf_peft_config_loaded", False)) and bool(getattr(model, "peft_config", None))


def _drop(pipe, family, name: str) -> None:
    for model in _components(pipe, family):
        if _has_peft(model) and name in model.peft_config:
            model.delete_adapters([name])


def _alphas(keys) -> list[str]:
    """``M.alpha`` keys beside peft's ``M.lora_A.weight``: an alpha no diffusers loader reads in that layout."""
    keys = set(keys)
    return [key for key in keys if key.endswith(".alpha") and key[: -len(".alpha")] + ".lora_A.weight" in keys]


def _fold(state: dict) -> dict:
    """Each such alpha folded into its ``lora_A`` as alpha / rank (the scale the file means), then dropped."""
    for key in _alphas(state):
        down = key[: -len(".alpha")] + ".lora_A.weight"
        state[down] = state[down] * (float(state.pop(key)) / state[down].shape[0])
    return state


def _load(pipe, family, spec, lora, name: str) -> None:
    """Load the file onto each expert it goes on: as it is when its keys are what the family's loader reads
    (diffusers then reads its metadata too), else its tensors with the keys renamed (``lora_rename``). A
    failure leaves no half-loaded adapter behind."""
    import warnings

    from safetensors import safe_open

    file = lora.path.name
    try:
        with safe_open(str(lora.path), framework="pt") as handle:
            keys = list(handle.keys())
            renamed = {key: family.lora_rename(key, lora.info.layout) for key in keys}
            # keys as the loader reads them: the file itself, so diffusers also reads its metadata (peft's alpha)
            state = None if all(renamed[key] == key for key in keys) and not _alphas(renamed.values()) else _fold(
                {renamed[key]: handle.get_tensor(key) for key in keys})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")  # several adapters is the point
            for kwargs in family.lora_experts(spec, lora.name):
                if state is None:
                    pipe.load_lora_weights(str(lora.path.parent), weight_name=file, adapter_name=name, **kwargs)
                else:
                    pipe.load_lora_weights(dict(state), adapter_name=name, **kwargs)
    except Exception as error:
        _drop(pipe, family, name)
        from ..device.memory import is_out_of_memory

        if is_out_of_memory(error):
            raise  # the out-of-memory ladder (tasks.video) frees memory and tries again a level lower
        first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        logger.warning("LoRA %s could not be loaded onto %s: %s", file, spec.title, first)
        raise RequestError(f"The LoRA {file} could not be loaded onto {spec.title}: {first}", key="lora_load_failed",
                           file=file, model=spec.title, why=first) from None


def use_loras(model, family, chosen: list, settings=None) -> dict:
    """Make ``chosen`` (``check.ChosenLora``, with strengths) the active adapters of the resident ``model``;
    returns what happened: ``loaded`` and ``reused`` names, ``unloaded`` (idle ones deleted), ``seconds``."""
    pipe = model.pipe
    state: dict[str, str] = model.loras  # adapter name -> LoRA name, least recently used first
    started = time.perf_counter()
    wanted = {adapter_name(lora): lora for lora in chosen}
    loaded, reused, unloaded = [], [], []
    if wanted and model.optimisations.get("fused_qkv"):
        from ..device import fastpath

        fastpath.unfuse_qkv(pipe)
        model.optimisations["fused_qkv"] = False
        model.optimisations["fused_qkv_off"] = "LoRAs change q, k and v separately"
    for name, lora in wanted.items():
        if name in state:
            reused.append(lora.name)
            state[name] = state.pop(name)  # most recently used last
            continue
        _load(pipe, family, model.spec, lora, name)
        state[name] = lora.name
        loaded.append(lora.name)
    idle = [name for name in state if name not in wanted]
    for name in idle[: max(0, len(idle) - MAX_IDLE)]:
        _drop(pipe, family, name)
        unloaded.append(state.pop(name))
    for component in _components(pipe, family):
        if not _has_peft(component):
            continue
        names = [name for name in wanted if name in component.peft_config]
        if names:
            component.enable_lora()
            component.set_adapters(names, [float(wanted[name].strength) for name in names])
        else:
            component.disable_lora()
    if loaded or unloaded:  # the resident-model budget counts the adapters too
        from ..device.loading import parameter_bytes

        model.n_bytes = parameter_bytes(pipe)
    seconds = time.perf_counter() - started
    if wanted or unloaded:
        logger.info("LoRAs on %s: %s (loaded %s; reused %s; unloaded %s) in %.2f s", model.spec.title,
                    ", ".join(f"{lora.name}:{lora.strength:g}" for lora in chosen) or "none",
                    ", ".join(loaded) or "none", ", ".join(reused) or "none", ", ".join(unloaded) or "none", seconds)
    return {"loaded": loaded, "reused": reused, "unloaded": unloaded, "idle": [state[n] for n in state if n not in wanted],
            "seconds": round(seconds, 3)}
