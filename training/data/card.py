"""The data card: what went into an adapter, saved beside it (JSON in the manifest, Markdown in the run).

Counts per source and split (and of tool-calling records), rows dropped per reason, PII replaced per kind,
token length statistics per split, and the dataset hash (sha256 over the sorted (split, content hash) pairs
plus the tokenization settings), which identifies the prepared data independently of row order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["DataCard", "SourceStats", "length_stats"]


def length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"count": 0}
    arr = np.asarray(lengths)
    return {
        "count": int(arr.size),
        "min": int(arr.min()),
        "mean": round(float(arr.mean()), 1),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "total": int(arr.sum()),
    }


@dataclass
class SourceStats:
    name: str
    kind: str
    template: str
    weight: float
    rows_read: int
    rows_kept: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataCard:
    dataset_hash: str
    tokenizer: str
    max_seq_length: int
    sources: list[SourceStats]
    splits: dict[str, int]
    train_rows_after_weighting: int
    dropped: dict[str, int]
    pii_replaced: dict[str, int]
    token_lengths: dict[str, dict[str, float]]
    trainable_tokens: dict[str, int]
    created_at: str
    preference: dict[str, Any] = field(default_factory=dict)
    """dpo / kto runs: records per split ({"pairs"} or {"desirable", "undesirable"}); empty for SFT."""
    tool_calling: dict[str, dict[str, int]] = field(default_factory=dict)
    """Tool-calling records per split: {"with_tools": given function definitions, "tool_call_answers":
    trained on tool calls}; empty when no record has either."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [
            "# Data card",
            "",
            f"- dataset hash: `{self.dataset_hash}`",
            f"- tokenizer: `{self.tokenizer}`, max_seq_length {self.max_seq_length}",
            f"- created: {self.created_at}",
            "- splits: "
            + ", ".join(f"{k} {v}" for k, v in self.splits.items())
            + f" (train after mixture weights: {self.train_rows_after_weighting})",
            "",
            "| source | kind | template | weight | read | kept | train | validation | test |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in self.sources:
            lines.append(
                f"| {s.name} | {s.kind} | {s.template} | {s.weight:g} | {s.rows_read} | {s.rows_kept} | "
                f"{s.splits.get('train', 0)} | {s.splits.get('validation', 0)} | {s.splits.get('test', 0)} |"
            )
        if self.preference:
            lines += ["", f"## Preference records ({self.preference.get('style')})", ""]
            for split in ("train", "validation", "test"):
                counts = self.preference.get(split) or {}
                lines.append(f"- {split}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
        if self.tool_calling:
            lines += ["", "## Tool-calling records", ""]
            for split in ("train", "validation", "test"):
                counts = self.tool_calling.get(split) or {}
                lines.append(
                    f"- {split}: {counts.get('with_tools', 0)} with tools, "
                    f"{counts.get('tool_call_answers', 0)} answering with tool calls"
                )
        lines += ["", "## Dropped rows", ""]
        lines += [f"- {reason}: {n}" for reason, n in sorted(self.dropped.items())] or ["- none"]
        lines += ["", "## PII replaced", ""]
        lines += [f"- {kind}: {n}" for kind, n in sorted(self.pii_replaced.items())] or ["- none"]
        lines += [
            "",
            "## Token lengths",
            "",
            "| split | count | min | mean | p50 | p95 | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for split, st in self.token_lengths.items():
            if st.get("count"):
                lines.append(
                    f"| {split} | {st['count']} | {st['min']} | {st['mean']} | {st['p50']} | {st['p95']} "
                    f"| {st['max']} |"
                )
        return "\n".join(lines) + "\n"
