"""Resident models: load once, keep warm between jobs, evict least recently used under a memory budget.

It also keeps what belongs with the resident models: the prompt-embedding cache (``pipelines.device.prompt_cache``;
entries go with their model) and each model's memory-level floor, the level an out-of-memory retry pushed
it down to (``pipelines.device.memory_levels``): a model loaded again starts there, until **Release VRAM**.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from . import memory_levels
from .loading import LoadedModel
from .memory import free_memory, gib, read_memory
from .prompt_cache import PromptCache
from ..families.spec import ModelSpec

logger = logging.getLogger(__name__)


class ModelManager:
    """Owned by the GPU worker thread; nothing else calls it."""

    def __init__(
        self,
        load: Callable[[ModelSpec], LoadedModel],
        device: str,
        budget_bytes: int | None,
        estimate_bytes: Callable[[ModelSpec], int] = lambda spec: int(spec.vram_gb * 2**30),
    ):
        self._load = load
        self._estimate = estimate_bytes
        self.device = device
        self.budget_bytes = budget_bytes
        self._resident: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self.load_counts: dict[str, int] = {}
        self.prompt_cache = PromptCache()
        self.floors: dict[str, str] = {}  # model id -> lowest memory level an out-of-memory retry reached

    def get(self, spec: ModelSpec) -> tuple[LoadedModel, bool]:
        """The loaded model for ``spec`` and whether it had to be loaded now (False: it was resident)."""
        if spec.id in self._resident:
            self._resident.move_to_end(spec.id)
            return self._resident[spec.id], False
        self._make_room(self._estimate(spec))
        with memory_levels.loading_at(self.floors.get(spec.id)):
            model = self._load(spec)
        self._resident[spec.id] = model
        self.load_counts[spec.id] = self.load_counts.get(spec.id, 0) + 1
        return model, True

    def _make_room(self, need: int) -> None:
        """Evict least recently used models until ``need`` more bytes fit in the budget."""
        if self.budget_bytes is None:
            return
        while self._resident and self.resident_bytes() + need > self.budget_bytes:
            model_id = next(iter(self._resident))
            logger.info(
                "Evicting %s to make room (%.1f GiB needed, budget %.1f GiB)",
                model_id,
                gib(need),
                gib(self.budget_bytes),
            )
            self.evict(model_id)

    def lower_floor(self, model_id: str, level: str) -> None:
        """From now on (until a release) ``model_id`` runs at ``level`` or lower."""
        self.floors[model_id] = memory_levels.lowest(self.floors.get(model_id), level)

    def resident_bytes(self) -> int:
        return sum(model.n_bytes for model in self._resident.values())

    def resident(self) -> list[dict]:
        return [
            {"id": m.spec.id, "title": m.spec.title, "gib": gib(m.n_bytes), "attention": m.attention,
             "memory_level": m.level}
            for m in self._resident.values()
        ]

    def evict(self, model_id: str) -> None:
        self.prompt_cache.forget_model(model_id)
        model = self._resident.pop(model_id, None)
        if model is None:
            return
        pipe = model.pipe
        model.pipe = None
        if hasattr(pipe, "remove_all_hooks"):
            pipe.remove_all_hooks()
        del pipe, model
        free_memory(self.device)

    def release_all(self) -> dict:
        """Drop every resident model and return what memory came back, measured before and after."""
        before = read_memory(self.device)
        dropped = list(self._resident)
        for model_id in dropped:
            self.evict(model_id)
        self.prompt_cache.clear()
        self.floors.clear()  # a fresh start: the next load chooses its level from the free memory again
        free_memory(self.device)
        after = read_memory(self.device)
        freed = max(0, before.process - after.process)
        logger.info(
            "Released %s: %.2f GiB back (%s in use %.2f -> %.2f GiB)",
            ", ".join(dropped) or "nothing",
            gib(freed),
            "VRAM" if self.device.startswith("cuda") else "process memory",
            gib(before.process),
            gib(after.process),
        )
        return {"released": dropped, "freed_bytes": freed, "before_bytes": before.process, "after_bytes": after.process}
