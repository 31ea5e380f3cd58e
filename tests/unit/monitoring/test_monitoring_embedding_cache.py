"""The text -> embedding LRU cache (no model load: the cache alone)."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.embeddings import EmbeddingCache, model_path


def test_lru_eviction_and_counters() -> None:
    cache = EmbeddingCache(max_entries=2)
    cache.put("a", np.ones(3, dtype=np.float32))
    cache.put("b", np.zeros(3, dtype=np.float32))
    assert cache.get("a") is not None  # "a" is now most recent
    cache.put("c", np.full(3, 2.0, dtype=np.float32))
    assert cache.get("b") is None and cache.get("c") is not None and len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 1)
    cache.clear()
    assert len(cache) == 0 and cache.hits == 0


def test_disabled_cache_and_validation() -> None:
    off = EmbeddingCache(max_entries=0)
    off.put("a", np.ones(3))
    assert off.get("a") is None
    with pytest.raises(ValueError, match="max_entries"):
        EmbeddingCache(max_entries=-1)


def test_bundled_model_folder_is_found() -> None:
    path = model_path()
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()
