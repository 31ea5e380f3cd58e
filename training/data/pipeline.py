"""Data preparation from sources to tokenized `datasets.Dataset`s and a data card, in one readable pass:

read sources -> apply templates -> clean (encoding, empty, PII, duplicates) -> cap -> split by content
hash -> tokenize (assistant-only labels, length limits) -> mixture weights on the train split -> data card.

Styles dpo / kto take the same path with preference records (prompt + chosen/rejected, or prompt +
completion + label): the same cleaning, PII scrubbing, dedupe, cap, split (by prompt, see
`Example.split_key`), mixture weights and card; instead of token ids the splits hold the rows TRL's
DPOTrainer / KTOTrainer read (`encode_preference`), measured with the same tokenizer.

Runs on the driver before any weights load (only the tokenizer is needed), so bad data fails fast and the
prepared data travels to the training worker as a small Arrow table.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.config import PREFERENCE_STYLES, TrainingConfig
from training.data.card import DataCard, SourceStats, length_stats
from training.data.clean import CleanReport, clean_examples
from training.data.encode import Encoded, PreferenceRow, encode_example, encode_preference
from training.data.example import Example, RowRejected
from training.data.format import check_template_for_style, format_row, resolve_columns, resolve_template
from training.data.sources import read_source, source_label
from training.data.split import Split, assign_split, repeat_count
from training.errors import ConfigError, DataError

__all__ = ["PreparedData", "load_tokenizer", "prepare_data"]


@dataclass
class PreparedData:
    """Tokenized splits (columns input_ids, labels, source; for dpo: prompt, chosen, rejected, source; for
    kto: prompt, completion, label, source; dpo / kto with tools shown in a prompt add `tools`, JSON text or
    null) plus the formatted held-out examples."""

    train: Any  # datasets.Dataset
    validation: Any | None  # datasets.Dataset, None when the split is empty
    examples: dict[str, list[Example]] = field(default_factory=dict)
    card: DataCard | None = None

    @property
    def dataset_hash(self) -> str:
        assert self.card is not None
        return self.card.dataset_hash


def load_tokenizer(base_model: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    except Exception as exc:  # transformers raises OSError/ValueError/... for unusable folders
        raise ConfigError(f"cannot load a tokenizer from {base_model}: {exc}", key="base_model") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _unique_labels(config: TrainingConfig) -> list[str]:
    labels: list[str] = []
    for i, source in enumerate(config.data.sources):
        label = source_label(source, i)
        labels.append(label if label not in labels else f"{label}_{i}")
    return labels


Piece = Encoded | PreferenceRow


def _dataset(rows: list[tuple[Piece, str]]) -> Any:
    import datasets

    if rows and isinstance(rows[0][0], PreferenceRow):
        records = [{**p.record, "source": s} for p, s in rows if isinstance(p, PreferenceRow)]
        if any("tools" in r for r in records):  # from_list reads the first row's keys: every row gets one
            records = [{"tools": None, **r} for r in records]
        return datasets.Dataset.from_list(records)
    rows_ids = [(e, s) for e, s in rows if isinstance(e, Encoded)]
    return datasets.Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e, _ in rows_ids],
            "labels": [e.labels for e, _ in rows_ids],
            "source": [s for _, s in rows_ids],
        }
    )


def prepare_data(config: TrainingConfig, tokenizer: Any) -> PreparedData:
    """Prepare the training data described by `config.data`; raises DataError with the cause."""
    data = config.data
    report = CleanReport()
    stats: dict[str, SourceStats] = {}
    weights: dict[str, float] = {}

    # 1. Read each source and apply its template.
    formatted: list[Example] = []
    for i, (source, label) in enumerate(zip(data.sources, _unique_labels(config), strict=True)):
        raw = read_source(source, label)
        where = f"data.sources.{i} ({label})"
        template = resolve_template(source.template, source.columns, raw.columns, where)
        check_template_for_style(config.style, template, where)
        mapping = resolve_columns(template, source.columns, raw.columns, where)
        stats[label] = SourceStats(
            label, source.kind, template, source.weight, len(raw.rows), details=raw.meta
        )
        weights[label] = source.weight
        for row in raw.rows:
            try:
                formatted.append(format_row(row, template, mapping, source.options, label))
            except RowRejected as rejected:
                report.dropped[rejected.reason] += 1

    # 2. Clean (encoding, empty, PII, duplicates) and cap.
    cleaned = clean_examples(formatted, data.clean, report)
    if data.max_rows is not None and len(cleaned) > data.max_rows:
        report.dropped["over_max_rows"] += len(cleaned) - data.max_rows
        cleaned = cleaned[: data.max_rows]

    # 3. Split by content hash, then tokenize.
    examples: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    encoded: dict[str, list[tuple[Piece, str]]] = {"train": [], "validation": [], "test": []}
    train_hashes: list[str] = []  # content hash of each train piece (for mixture weights)
    preference = config.style in PREFERENCE_STYLES
    for example in cleaned:
        split: Split = assign_split(
            example.split_key, data.split.validation, data.split.test, data.split.salt
        )
        try:
            pieces: list[Piece] = (
                list(encode_preference(example, tokenizer, data.max_seq_length, config.style, data.overlong))
                if preference
                else list(encode_example(example, tokenizer, data.max_seq_length, data.overlong))
            )
        except RowRejected as rejected:
            report.dropped[rejected.reason] += 1
            continue
        examples[split].append(example)
        stats[example.source].rows_kept += 1
        stats[example.source].splits[split] = stats[example.source].splits.get(split, 0) + 1
        encoded[split] += [(piece, example.source) for piece in pieces]
        if split == "train":
            train_hashes += [f"{example.content_hash}:{k}" for k in range(len(pieces))]

    kept = sum(len(v) for v in examples.values())
    if kept == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in report.dropped.most_common()) or "no rows were read"
        raise DataError(f"no training rows left after cleaning ({reasons}); check the data and data.clean")
    if not encoded["train"]:
        raise DataError(
            f"all {kept} prepared rows landed in validation/test; add rows or lower data.split fractions"
        )
    if config.train.early_stopping_patience and not encoded["validation"]:
        raise DataError(
            f"train.early_stopping_patience needs validation rows, but none of the {kept} rows landed in the "
            "validation split; add rows or raise data.split.validation"
        )

    # 4. Mixture weights (train split only; validation/test stay one copy per row).
    weighted: list[tuple[Piece, str]] = []
    for (piece, label), piece_hash in zip(encoded["train"], train_hashes, strict=True):
        weighted += [(piece, label)] * repeat_count(piece_hash, weights[label], data.split.salt)
    if not weighted:
        raise DataError("mixture weights removed every training row; raise data.sources[*].weight")
    if preference:
        _check_preference_rows(config, encoded, weighted)

    card = _card(config, tokenizer, stats, examples, encoded, weighted, report)
    return PreparedData(
        train=_dataset(weighted),
        validation=_dataset(encoded["validation"]) if encoded["validation"] else None,
        examples=examples,
        card=card,
    )


def _check_preference_rows(
    config: TrainingConfig, encoded: dict[str, list[tuple[Piece, str]]], weighted: list[tuple[Piece, str]]
) -> None:
    """One prompt format per run (TRL tokenizes a dataset as all-chat or all-plain); kto rows in a fixed,
    seeded order (KTOTrainer samples sequentially: its KL term pairs neighbours of a micro-batch)."""
    kinds = {p.conversational for rows in encoded.values() for p, _ in rows if isinstance(p, PreferenceRow)}
    if len(kinds) > 1:
        raise DataError(
            "preference records mix chat prompts (message lists) and plain-text prompts; TRL trains one kind "
            "per run - use one prompt format in every source"
        )
    if config.style == "kto":
        import random

        random.Random(config.train.seed).shuffle(weighted)


def _preference_counts(style: str, encoded: dict[str, list[tuple[Piece, str]]]) -> dict[str, Any]:
    """The card's preference section: records per split (dpo pairs; kto desirable / undesirable)."""
    out: dict[str, Any] = {"style": style}
    for split, rows in encoded.items():
        records = [p.record for p, _ in rows if isinstance(p, PreferenceRow)]
        if style == "kto":
            desirable = sum(1 for r in records if r["label"])
            out[split] = {"desirable": desirable, "undesirable": len(records) - desirable}
        else:
            out[split] = {"pairs": len(records)}
    return out


def _tool_counts(examples: dict[str, list[Example]]) -> dict[str, dict[str, int]]:
    """The card's tool-calling section: per split, records given tools and records answering with calls."""
    counts = {
        split: {
            "with_tools": sum(1 for e in rows if e.tools),
            "tool_call_answers": sum(1 for e in rows if e.has_tool_calls),
        }
        for split, rows in examples.items()
    }
    return counts if any(n for c in counts.values() for n in c.values()) else {}


def _card(
    config: TrainingConfig,
    tokenizer: Any,
    stats: dict[str, SourceStats],
    examples: dict[str, list[Example]],
    encoded: dict[str, list[tuple[Piece, str]]],
    weighted: list[tuple[Piece, str]],
    report: CleanReport,
) -> DataCard:
    digest = hashlib.sha256()
    tokenizer_name = Path(str(getattr(tokenizer, "name_or_path", "tokenizer"))).name
    digest.update(
        f"tok={tokenizer_name}|max={config.data.max_seq_length}|overlong={config.data.overlong}".encode()
    )
    if config.style in PREFERENCE_STYLES:  # the same records make other rows for dpo and kto
        digest.update(f"|style={config.style}".encode())
    for split, content_hash in sorted((s, e.content_hash) for s, xs in examples.items() for e in xs):
        digest.update(f"\n{split}:{content_hash}".encode())
    trainable: Counter[str] = Counter()
    for split, pieces in encoded.items():
        trainable[split] = sum(p.trainable_tokens for p, _ in pieces)
    return DataCard(
        dataset_hash=digest.hexdigest(),
        tokenizer=tokenizer_name,
        max_seq_length=config.data.max_seq_length,
        sources=list(stats.values()),
        splits={k: len(v) for k, v in examples.items()},
        train_rows_after_weighting=len(weighted),
        dropped=dict(report.dropped),
        pii_replaced=dict(report.pii),
        token_lengths={k: length_stats([p.length for p, _ in v]) for k, v in encoded.items()},
        trainable_tokens=dict(trainable),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        preference=_preference_counts(config.style, encoded) if config.style in PREFERENCE_STYLES else {},
        tool_calling=_tool_counts(examples),
    )
