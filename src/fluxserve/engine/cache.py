"""A bounded LRU of text embeddings: a repeated prompt skips the CLIP and T5 encoders."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable


class EmbeddingCache:
    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, prompt: str, compute: Callable[[str], Any]) -> Any:
        with self._lock:
            if prompt in self._entries:
                self._entries.move_to_end(prompt)
                self.hits += 1
                return self._entries[prompt]
        value = compute(prompt)
        with self._lock:
            self.misses += 1
            if self.max_entries > 0:
                self._entries[prompt] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
