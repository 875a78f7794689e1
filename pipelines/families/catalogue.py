"""The catalogue: the list of model families, and the models they offer.

Every model-specific question the rest of the app asks (presets, loading, memory, FLOPs, preview, demo
build) goes to the family that owns the spec: ``family_of(spec)``. Adding a family is adding its module
to ``FAMILIES``.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from . import i2vgen_xl, ltx2, wan, whisper
from .spec import ModelSpec

# A task's model list starts with its default model's family, then follows this order.
FAMILIES: tuple[ModuleType, ...] = (wan, i2vgen_xl, ltx2, whisper)

CATALOGUE: dict[str, ModelSpec] = {
    spec.id: dataclasses.replace(spec, family=family.NAME) for family in FAMILIES for spec in family.SPECS
}

# Each task's default model, as its family declares it (``DEFAULTS``).
DEFAULT_MODEL: dict[str, str] = {task: model for family in FAMILIES for task, model in getattr(family, "DEFAULTS", {}).items()}


def models_for(task: str) -> list[ModelSpec]:
    """The catalogue's models for one task, in the page's order: the default model's family first."""
    default = CATALOGUE[DEFAULT_MODEL[task]].family if task in DEFAULT_MODEL else None
    order = [default] + [family.NAME for family in FAMILIES if family.NAME != default]
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
