"""One eval example: its id, the fields templates read, the reference answer and its slice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """A row of a suite's dataset, ready to be prompted and scored."""

    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    slice: str | None = None
    split: str | None = None
