"""``--compile`` with creators' LoRAs: what a job's LoRAs cost the compiled blocks, decided before it runs.

peft wraps the blocks' Linear layers in its LoRA layers; the compiled blocks (``fastpath.compile_denoisers``,
compiled lazily at their first call) then see other modules, and dynamo's guards recompile them at the next
step: once for each new state of the adapters (which files are loaded, which are active), and once the
first time an adapter's strength changes (after that the strength is an input of the compiled code, not a
constant). The output is the eager output within rounding (``tests/test_loras_compile.py``).

diffusers' hotswap (``enable_lora_hotswap`` then ``load_lora_weights(..., hotswap=True)``) avoids those
recompiles, but it swaps the weights of one adapter in place: it needs the highest rank and the layers of
every LoRA known before the first, and cannot keep several named adapters loaded and switch between them
with ``set_adapters``, which is how ``loras.adapters`` keeps switching free. So the compiled blocks are kept
and the recompiles are counted per model instead: ``MAX_STATES`` new adapter states are compiled for; a job
with a further new state runs its blocks eager (the compiled code is kept for the states it knows), logged
and written in the sidecar's ``loras.compile``. dynamo's own per-function limit is raised to hold them.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

MAX_STATES = 4  # new adapter states (loaded files, active set) compiled for on one model
RECOMPILE_LIMIT = 4 * MAX_STATES + 4  # dynamo's per-function cache: the base, the states, the strengths, experts


def state_of(model, active: list[str]) -> tuple:
    """The adapters' state as the compiled blocks' guards see it: the loaded adapters and the active ones."""
    return tuple(sorted(model.loras)), tuple(sorted(active))


def decide(model, active: list[str]) -> str | None:
    """How this job's blocks run, once its adapters are set (``adapters.use_loras``): ``"compiled"`` (a state
    the blocks know), ``"recompiled"`` (a new one, within ``MAX_STATES``) or ``"eager"``; None when the model
    is not compiled or has no adapters. Sets ``optimisations["compile_loras_eager"]`` for ``denoise_context``."""
    record = model.optimisations
    record["compile_loras_eager"] = False
    if not record.get("compile") or not model.loras:
        return None
    state = state_of(model, active)
    seen = record.setdefault("compile_lora_states", [])
    if state in seen:
        return "compiled"
    if len(seen) >= MAX_STATES:
        record["compile_loras_eager"] = True
        logger.info("Compile: %s has been recompiled for %d LoRA sets; this job's set runs eager (the compiled "
                    "code stays for the sets it knows).", model.spec.title, len(seen))
        return "eager"
    seen.append(state)
    _raise_recompile_limit()
    logger.info("Compile: %s recompiles its blocks for this LoRA set at the first step (%d of %d).",
                model.spec.title, len(seen), MAX_STATES)
    return "recompiled"


def _raise_recompile_limit() -> None:
    try:
        import torch._dynamo.config as dynamo_config

        if getattr(dynamo_config, "recompile_limit", RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
            dynamo_config.recompile_limit = RECOMPILE_LIMIT
    except Exception:  # pragma: no cover - a torch without dynamo: nothing is compiled anyway
        pass
