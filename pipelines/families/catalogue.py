"""The catalogue: the list of model families, and the models they offer.

Every model-specific question the rest of the app asks (presets, loading, memory, FLOPs, preview, demo
build) goes to the family that owns the spec: ``family_of(spec)``. Adding a family is adding its module
to ``FAMILIES``.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from . import i2vgen_xl, wan, whisper
from .spec import ModelSpec

# In the order the page lists them: I2VGen-XL first (the default image-to-video model), then Wan.
FAMILIES: tuple[ModuleType, ...] = (wan, i2vgen_xl, whisper)
_LIST_ORDER = {"t2v": ("wan",), "i2v": ("i2vgen", "wan"), "asr": ("whisper",)}

CATALOGUE: dict[str, ModelSpec] = {
    spec.id: dataclasses.replace(spec, family=family.NAME) for family in FAMILIES for spec in family.SPECS
}

DEFAULT_MODEL = {"t2v": "wan2.1-t2v-1.3b", "i2v": "i2vgen-xl", "asr": "whisper-large-v3"}


def models_for(task: str) -> list[ModelSpec]:
    """The catalogue's models for one task, in the page's order."""
    order = _LIST_ORDER.get(task, ())
    specs = [spec for spec in CATALOGUE.values() if spec.task == task]
    return sorted(specs, key=lambda spec: order.index(spec.family) if spec.family in order else len(order))


def get_spec(model_id: str) -> ModelSpec:
    try:
        return CATALOGUE[model_id]
    except KeyError:
        known = ", ".join(CATALOGUE)
        raise ValueError(f"Unknown model {model_id!r}; the catalogue has {known}.") from None


def family_of(spec: ModelSpec | str) -> ModuleType:
    """The family module that owns a spec (or a model id)."""
    name = (get_spec(spec) if isinstance(spec, str) else spec).family
    for family in FAMILIES:
        if family.NAME == name:
            return family
    raise ValueError(f"No model family {name!r}.")
