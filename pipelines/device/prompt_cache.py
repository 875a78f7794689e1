"""Prompt embeddings kept for repeated prompts: a small LRU per app, owned by the GPU worker thread.

A creator iterating on seeds, frames or steps sends the same prompt again and again; Wan's text encoder
(UMT5-XXL, 5.7B parameters) then does the same work each time. The cache keys on everything that
changes the embeddings (model, prompt, negative prompt, token length, dtype, device, whether the negative
is needed) and hands back the very tensors computed the first time, so a hit gives bit-identical
conditioning. ``--prompt-cache 0`` turns it off.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_ENTRIES = 8


class PromptCache:
    """``get_or_encode(key, encode)``: the cached value for ``key``, or ``encode()`` stored under it."""

    def __init__(self, entries: int = DEFAULT_ENTRIES):
        self.entries = max(0, int(entries))
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_id: str, prompt: str, negative: str | None, max_length: int, dtype: str, device: str,
            guidance: bool) -> tuple:
        return (model_id, prompt, negative if guidance else None, int(max_length), str(dtype), str(device), bool(guidance))

    def get_or_encode(self, key: tuple, encode) -> tuple[Any, bool]:
        """``(value, hit)``."""
        if self.entries == 0:
            return encode(), False
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key], True
        value = encode()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
            self.misses += 1
        return value, False

    def forget_model(self, model_id: str) -> None:
        """Drop the entries of a model (it was evicted or released: its tensors may sit on the GPU)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == model_id]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
