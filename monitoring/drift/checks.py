"""The drift checks the loop calls: input drift on prompt texts (or embeddings), quality drift on score
streams, and both straight from the request log for one served version.

`check_input_drift` embeds both windows (MiniLM by default, any `Embedder` allowed), runs a registered
input detector and adds the cluster shifts (which topics grew). `check_quality_drift` runs a registered
quality detector over one score stream.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import Engine

from monitoring.drift.base import (
    DriftDetector,
    DriftReport,
    InputDriftDetector,
    QualityDriftDetector,
    ScoreStream,
    build_detector,
    get_detector_class,
)
from monitoring.drift.clusters import cluster_shift
from monitoring.embeddings import Embedder
from monitoring.errors import DriftInputError
from monitoring.store import load_prompts, load_score_stream, opened

__all__ = [
    "MAX_PERMUTATIONS",
    "check_input_drift",
    "check_input_drift_from_log",
    "check_quality_drift",
    "check_quality_drift_from_log",
    "detector_for_threshold",
    "input_detector",
    "permutations_for",
    "quality_detector",
]

MAX_PERMUTATIONS = 20_000
"""The most permutations a permutation test runs per check (20k of 400 + 400 prompts: a few seconds)."""


def input_detector(name: str = "mmd", **options: Any) -> InputDriftDetector:
    """A registered input-drift detector by name."""
    detector = build_detector(name, **options)
    if not isinstance(detector, InputDriftDetector):
        raise DriftInputError(f"drift detector {name!r} is a {detector.kind} detector, not an input detector")
    return detector


def quality_detector(name: str = "adwin", **options: Any) -> QualityDriftDetector:
    """A registered quality-drift detector by name."""
    detector = build_detector(name, **options)
    if not isinstance(detector, QualityDriftDetector):
        raise DriftInputError(
            f"drift detector {name!r} is an {detector.kind} detector, not a quality detector"
        )
    return detector


def permutations_for(max_p_value: float | None) -> int:
    """Permutations a permutation test needs so that `p <= max_p_value` is reachable with room to spare
    (the smallest p of n permutations is 1/(n+1)): at least 2/max_p_value, and at least 300."""
    if max_p_value is None:
        return 300
    return max(300, math.ceil(2.0 / max_p_value))


def detector_for_threshold(name: str, max_p_value: float | None) -> DriftDetector:
    """The detector `name` built so that its verdict and its p-value can reach `max_p_value`: the alpha is the
    threshold, and a permutation test gets enough permutations (`permutations_for`). A threshold no
    detector setting can reach is a `DriftInputError`."""
    options: dict[str, Any] = {} if max_p_value is None else {"alpha": max_p_value}
    cls = get_detector_class(name)
    if "permutations" in inspect.signature(cls.__init__).parameters:
        needed = permutations_for(max_p_value)
        if needed > MAX_PERMUTATIONS:
            raise DriftInputError(
                f"detector {name!r} cannot reach p <= {max_p_value}: that needs {needed} permutations per "
                f"check (at most {MAX_PERMUTATIONS}); raise max_p_value to >= {2.0 / MAX_PERMUTATIONS:g}"
            )
        options["permutations"] = needed
    try:
        return build_detector(name, **options)
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"detector {name!r} with {options}: {exc}") from exc


def _default_embedder() -> Embedder:
    from monitoring.embeddings import encode

    return cast(Embedder, encode)


def check_input_drift(
    ref_texts: Sequence[str],
    live_texts: Sequence[str],
    *,
    detector: str | InputDriftDetector = "mmd",
    embedder: Embedder | None = None,
    ref_embeddings: np.ndarray | None = None,
    live_embeddings: np.ndarray | None = None,
    subject: str = "",
    clusters: int = 8,
    seed: int = 0,
    **options: Any,
) -> DriftReport:
    """Two-sample test of the live prompts against the reference prompts, plus which clusters grew.

    Pass `ref_embeddings` (e.g. cached for the champion's training data) or `live_embeddings` to skip
    embedding that window; `clusters=0` skips the clustering. `options` go to the detector.
    """
    det = detector if isinstance(detector, InputDriftDetector) else input_detector(detector, **options)
    if isinstance(detector, InputDriftDetector) and options:
        raise DriftInputError("options= apply when the detector is named, not to a built detector")
    if ref_embeddings is None or live_embeddings is None:
        embed = embedder or _default_embedder()
        if ref_embeddings is None:
            ref_embeddings = embed(list(ref_texts))
        if live_embeddings is None:
            live_embeddings = embed(list(live_texts))
    for label, texts, emb in (
        ("reference", ref_texts, ref_embeddings),
        ("live", live_texts, live_embeddings),
    ):
        if texts and len(texts) != len(emb):
            raise DriftInputError(f"{len(texts)} {label} texts but {len(emb)} {label} embeddings")
    report = det.test(ref_embeddings, live_embeddings, seed=seed)
    report.subject = subject
    if clusters > 0:
        shifts, overall = cluster_shift(
            ref_embeddings, live_embeddings, ref_texts or None, live_texts or None, k=clusters, seed=seed
        )
        report.clusters = shifts
        report.evidence["clusters"] = overall
    return report


def check_quality_drift(
    scores: ScoreStream,
    *,
    detector: str | QualityDriftDetector = "adwin",
    reference: ScoreStream | None = None,
    subject: str = "",
    **options: Any,
) -> DriftReport:
    """Change detection on one score stream (oldest first); `reference` = earlier baseline scores."""
    det = detector if isinstance(detector, QualityDriftDetector) else quality_detector(detector, **options)
    report = det.test(scores, reference=reference)
    report.subject = subject
    return report


def check_input_drift_from_log(
    db: str | Engine,
    ref_texts: Sequence[str],
    *,
    served_name: str | None = None,
    served_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    live_limit: int = 500,
    schema: str | None = None,
    **kwargs: Any,
) -> DriftReport:
    """Input drift of the last `live_limit` served prompts (of one version, if named) against `ref_texts`."""
    with opened(db, schema=schema) as engine:
        rows = load_prompts(
            engine,
            since=since,
            until=until,
            served_name=served_name,
            served_version=served_version,
            limit=live_limit,
        )
    live = [r.user_text for r in rows]
    subject = kwargs.pop("subject", None) or f"{served_name or '*'}@{served_version or '*'}"
    report = check_input_drift(ref_texts, live, subject=subject, **kwargs)
    if rows:
        report.evidence["live_window"] = [rows[0].created_at.isoformat(), rows[-1].created_at.isoformat()]
    return report


def check_quality_drift_from_log(
    db: str | Engine,
    scorer: str,
    *,
    served_name: str | None = None,
    served_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    schema: str | None = None,
    **kwargs: Any,
) -> DriftReport:
    """Quality drift of one scorer's stream for one served version, read from the request log."""
    with opened(db, schema=schema) as engine:
        stream = load_score_stream(
            engine, scorer, served_name=served_name, served_version=served_version, since=since, until=until
        )
    subject = kwargs.pop("subject", None) or f"{served_name or '*'}@{served_version or '*'}:{scorer}"
    report = check_quality_drift([v for _, _, v in stream], subject=subject, **kwargs)
    if stream:
        report.evidence["window"] = [stream[0][0].isoformat(), stream[-1][0].isoformat()]
    return report
