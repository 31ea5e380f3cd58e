"""Deterministic train/validation/test assignment by content hash.

A row's split depends only on its content hash (and an optional salt), never on the other rows, so a row
never moves between splits when the dataset grows. Mixture weights use a second, independent hash draw.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

__all__ = ["Split", "assign_split", "repeat_count", "unit_draw"]

Split = Literal["train", "validation", "test"]


def unit_draw(content_hash: str, salt: str) -> float:
    """A number in [0, 1) that is a pure function of (salt, content_hash)."""
    digest = hashlib.sha256(f"{salt}\0{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(content_hash: str, validation: float, test: float, salt: str = "") -> Split:
    u = unit_draw(content_hash, f"split:{salt}")
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def repeat_count(content_hash: str, weight: float, salt: str = "") -> int:
    """How many times a training row appears under mixture weight `weight` (deterministic):
    floor(weight) copies plus one more with probability frac(weight)."""
    whole = math.floor(weight)
    frac = weight - whole
    return whole + (1 if frac > 0 and unit_draw(content_hash, f"weight:{salt}") < frac else 0)
