"""Loading any catalogue model: its family's ``load``, or across GPU ranks with ``--parallel N``.

Above ``device.loading`` (which loads a diffusers pipeline as the family describes it): this is the
choice the model manager's loader makes, so nothing below it imports the families or the ranks.
"""

from __future__ import annotations

from ..families.catalogue import family_of
from ..families.spec import ModelSpec
from .loading import LoadedModel


def load_model(spec: ModelSpec, settings, device: str, dtype: str) -> LoadedModel:
    """Load any catalogue model; one clip across N GPUs when ``--parallel N`` and the family can
    (``scale.parallel``); other models on one GPU."""
    family = family_of(spec)
    if settings.parallel > 1 and getattr(family, "CONTEXT_PARALLEL", False):
        from ..scale.parallel import load_parallel_model, plan

        if plan(settings, spec, device)[0] > 1:
            return load_parallel_model(spec, settings, device, dtype)
    return family.load(spec, settings, device, dtype)
