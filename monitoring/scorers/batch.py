"""Scoring logged traffic off the hot path, and aggregating scores per served version and per slice.

`score_batch(db_url, since=..., scorers=[...])` reads served requests (2xx, shadows included) created
since `since`, runs every scorer on the requests it has not scored yet, appends the results to `scores`
(one transaction per chunk, so a crash loses at most the chunk in flight), then aggregates all scores of
the window per served version (`served_name@served_version`, `@base` for the base model), per slice
(`<tag key>=<value>`, e.g. `intent=refunds`) and per version and slice.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, select

from monitoring.errors import ScorerError
from monitoring.scorers.base import Scorer, ScoreResult, ScorerSpec, build_scorers
from monitoring.store import (
    ScoreRecord,
    insert_scores,
    load_feedback,
    load_requests,
    load_scored_pairs,
    opened,
    requests_table,
    scores_table,
    utcnow,
)

__all__ = [
    "DEFAULT_SCORERS",
    "DEFAULT_SLICE_KEYS",
    "ScoreAggregate",
    "ScoreSummary",
    "ScoringFailure",
    "aggregate_scores",
    "parse_version_key",
    "score_batch",
    "version_key",
]

log = logging.getLogger(__name__)

DEFAULT_SCORERS: tuple[str, ...] = (
    "feedback",
    "reference",
    "empty",
    "refusal",
    "repetition",
    "truncation",
    "language_mismatch",
    "length_outlier",
)
"""Scorers run when none are named (the judge needs an endpoint, so it is opt-in)."""

DEFAULT_SLICE_KEYS: tuple[str, ...] = ("slice", "intent")
MAX_FAILURES_KEPT = 100


def version_key(served_name: str, served_version: str | None) -> str:
    """`name@version`, or `name@base` when no adapter version was served."""
    return f"{served_name}@{served_version or 'base'}"


def parse_version_key(key: str) -> tuple[str, str | None]:
    """Inverse of `version_key`."""
    name, _, version = key.rpartition("@")
    if not name:
        raise ValueError(f"{key!r} is not a 'name@version' key")
    return name, None if version == "base" else version


@dataclass
class ScoreAggregate:
    """Count, mean and standard deviation of one scorer's scores in a group."""

    n: int = 0
    mean: float = float("nan")
    std: float = float("nan")
    _sum: float = field(default=0.0, repr=False)
    _sumsq: float = field(default=0.0, repr=False)

    def add(self, value: float) -> None:
        self.n += 1
        self._sum += value
        self._sumsq += value * value
        self.mean = self._sum / self.n
        var = max(0.0, self._sumsq / self.n - self.mean * self.mean)
        self.std = math.sqrt(var * self.n / (self.n - 1)) if self.n > 1 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "mean": self.mean, "std": self.std}


Groups = dict[str, dict[str, ScoreAggregate]]


@dataclass(frozen=True)
class ScoringFailure:
    """A request a scorer failed on (it stays unscored and is retried next batch)."""

    request_id: str
    scorer: str
    message: str


@dataclass
class ScoreSummary:
    """What one `score_batch` call did, and the scores of its window aggregated."""

    since: datetime | None
    until: datetime
    n_requests: int = 0
    """Served requests in the window that were looked at."""
    written: dict[str, int] = field(default_factory=dict)
    """New score rows per scorer."""
    not_applicable: dict[str, int] = field(default_factory=dict)
    """Requests a scorer did not apply to (no feedback, no reference, not sampled ...)."""
    n_failures: int = 0
    failures: list[ScoringFailure] = field(default_factory=list)
    """The first failures (at most 100; `n_failures` counts all)."""
    per_version: Groups = field(default_factory=dict)
    """version key -> scorer -> aggregate."""
    per_slice: Groups = field(default_factory=dict)
    """`key=value` slice -> scorer -> aggregate."""
    per_version_slice: dict[str, Groups] = field(default_factory=dict)
    """version key -> slice -> scorer -> aggregate."""

    @property
    def n_written(self) -> int:
        return sum(self.written.values())

    def mean(self, scorer: str, *, version: str | None = None, slice: str | None = None) -> float:
        """Mean score of `scorer` overall in a version, a slice, or both (NaN when none)."""
        if version is not None and slice is not None:
            agg = self.per_version_slice.get(version, {}).get(slice, {}).get(scorer)
        elif version is not None:
            agg = self.per_version.get(version, {}).get(scorer)
        elif slice is not None:
            agg = self.per_slice.get(slice, {}).get(scorer)
        else:
            total = ScoreAggregate()
            for scorers in self.per_version.values():
                if scorer in scorers:
                    a = scorers[scorer]
                    total.n += a.n
                    total._sum += a._sum
            return total._sum / total.n if total.n else float("nan")
        return agg.mean if agg is not None else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (datetimes as ISO strings)."""

        def groups(g: Groups) -> dict[str, dict[str, dict[str, float | int]]]:
            return {k: {s: a.to_dict() for s, a in v.items()} for k, v in g.items()}

        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat(),
            "n_requests": self.n_requests,
            "written": dict(self.written),
            "not_applicable": dict(self.not_applicable),
            "n_failures": self.n_failures,
            "failures": [asdict(f) for f in self.failures],
            "per_version": groups(self.per_version),
            "per_slice": groups(self.per_slice),
            "per_version_slice": {v: groups(g) for v, g in self.per_version_slice.items()},
        }


def _slices(tags: Mapping[str, Any] | None, keys: Sequence[str]) -> list[str]:
    if not tags:
        return []
    out = []
    for key in keys:
        value = tags.get(key)
        if isinstance(value, (str, int, float, bool)) and str(value) != "":
            out.append(f"{key}={value}")
    return out


def aggregate_scores(
    db: str | Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    scorers: Sequence[str] | None = None,
    slice_keys: Sequence[str] = DEFAULT_SLICE_KEYS,
    include_shadow: bool = True,
    schema: str | None = None,
) -> tuple[Groups, Groups, dict[str, Groups]]:
    """Scores of requests created in `[since, until)`: per version, per slice, per version and slice."""
    r, s = requests_table, scores_table
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(r.c.created_at >= since)
    if until is not None:
        conditions.append(r.c.created_at < until)
    if scorers is not None:
        conditions.append(s.c.scorer.in_(list(scorers)))
    if not include_shadow:
        conditions.append(r.c.shadow_of.is_(None))
    query = (
        select(r.c.served_name, r.c.served_version, r.c.tags, s.c.scorer, s.c.score)
        .select_from(s.join(r, r.c.id == s.c.request_id))
        .where(and_(*conditions))
    )
    per_version: Groups = defaultdict(lambda: defaultdict(ScoreAggregate))
    per_slice: Groups = defaultdict(lambda: defaultdict(ScoreAggregate))
    per_both: dict[str, Groups] = defaultdict(lambda: defaultdict(lambda: defaultdict(ScoreAggregate)))
    with opened(db, schema=schema) as engine, engine.connect() as conn:
        for name, version, tags, scorer, value in conn.execute(query):
            key = version_key(name, version)
            per_version[key][scorer].add(float(value))
            for sl in _slices(tags if isinstance(tags, dict) else None, slice_keys):
                per_slice[sl][scorer].add(float(value))
                per_both[key][sl][scorer].add(float(value))

    def plain(g: Groups) -> Groups:
        return {k: dict(v) for k, v in g.items()}

    return plain(per_version), plain(per_slice), {k: plain(v) for k, v in per_both.items()}


def score_batch(
    db_url: str | Engine,
    since: datetime | None = None,
    scorers: Sequence[ScorerSpec] | None = None,
    *,
    until: datetime | None = None,
    slice_keys: Sequence[str] = DEFAULT_SLICE_KEYS,
    schema: str | None = None,
    limit: int | None = None,
    chunk_size: int = 500,
) -> ScoreSummary:
    """Score the not-yet-scored served requests created in `[since, until)` and aggregate the window.

    `scorers`: kind names, config mappings (`{"kind": ..., options}`) or built `Scorer` instances (pass
    instances to keep state such as the length-outlier window across calls); defaults to
    `DEFAULT_SCORERS`. `limit` bounds how many requests one call looks at: the newest `limit` of the
    window (fresh traffic first; an older backlog needs a call with an earlier `until`).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    built: list[Scorer] = build_scorers(list(scorers) if scorers is not None else list(DEFAULT_SCORERS))
    with opened(db_url, schema=schema) as engine:
        until = until or utcnow()
        summary = ScoreSummary(since=since, until=until)
        summary.written = {s.name: 0 for s in built}
        summary.not_applicable = {s.name: 0 for s in built}
        requests = load_requests(
            engine, since=since, until=until, ok_only=True, limit=limit, newest_first=True
        )
        requests.reverse()  # score oldest first, so the length-outlier window sees traffic in order
        summary.n_requests = len(requests)
        names = [s.name for s in built]
        for start in range(0, len(requests), chunk_size):
            chunk = requests[start : start + chunk_size]
            ids = [r.id for r in chunk]
            done = load_scored_pairs(engine, ids, names)
            feedback = load_feedback(engine, ids)
            records: list[ScoreRecord] = []
            for scorer in built:
                todo = [r for r in chunk if (r.id, scorer.name) not in done]
                if not todo:
                    continue
                items = [(r, feedback.get(r.id, [])) for r in todo]
                try:
                    results = scorer.score_many(items)
                except ScorerError as exc:  # a scorer that fails as a whole: all its items stay unscored
                    results = [exc] * len(items)
                for request, result in zip(todo, results, strict=True):
                    if isinstance(result, ScoreResult):
                        records.append(ScoreRecord(request.id, scorer.name, result.score, result.details))
                        summary.written[scorer.name] += 1
                    elif result is None:
                        summary.not_applicable[scorer.name] += 1
                    else:
                        summary.n_failures += 1
                        if len(summary.failures) < MAX_FAILURES_KEPT:
                            summary.failures.append(ScoringFailure(request.id, scorer.name, str(result)))
            insert_scores(engine, records)
        if summary.n_failures:
            log.warning("scoring: %d failures (first: %s)", summary.n_failures, summary.failures[0])
        summary.per_version, summary.per_slice, summary.per_version_slice = aggregate_scores(
            engine, since=since, until=until, slice_keys=slice_keys
        )
    return summary
