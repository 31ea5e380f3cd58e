"""Synthetic A/B traffic in the shared request-log schema, for demos, tests and benchmarks.

The tables are `common.log_schema`'s (created when missing; an existing log is reused as it is). Writes
deterministic traffic for planted effects: per-arm error rate, feedback rate, thumbs-up rate, score
distribution and latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from common.log_schema import create_log_tables, feedback_table, requests_table, scores_table


@dataclass(frozen=True)
class SyntheticArm:
    """How one arm's traffic behaves."""

    name: str
    weight: float = 1.0
    served_name: str = "support"
    served_version: str | None = None
    error_rate: float = 0.01
    feedback_rate: float = 0.3
    thumbs_up_rate: float = 0.7
    score_mean: float = 0.7
    score_sd: float = 0.15
    latency_median_ms: float = 400.0
    latency_sigma: float = 0.3
    completion_tokens: int = 40


def write_synthetic_experiment(
    engine: Engine,
    experiment: str,
    arms: Sequence[SyntheticArm],
    n_requests: int,
    *,
    seed: int = 0,
    start: datetime | None = None,
    scorer: str = "reference",
    shadow_fraction: float = 0.0,
) -> int:
    """Write `n_requests` requests split over `arms` by weight, plus feedback and scores.

    Returns the number of request rows written.
    """
    if not arms:
        raise ValueError("need at least one arm")
    create_log_tables(engine)
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    weights = np.array([a.weight for a in arms], dtype=float)
    assignment = rng.choice(len(arms), size=n_requests, p=weights / weights.sum())
    requests, feedback, scores = [], [], []
    for i in range(n_requests):
        arm = arms[int(assignment[i])]
        created = start + timedelta(seconds=float(i) * 3.0)
        request_id = f"chatcmpl-{experiment}-{i:07d}"
        failed = rng.random() < arm.error_rate
        latency = float(arm.latency_median_ms * np.exp(rng.normal(0.0, arm.latency_sigma)))
        requests.append(
            {
                "id": request_id,
                "created_at": created,
                "endpoint": "chat.completions",
                "model_requested": "support",
                "served_name": arm.served_name,
                "served_version": arm.served_version,
                "experiment": experiment,
                "arm": arm.name,
                "shadow_of": None,
                "user_id": f"user-{i % 997}",
                "prompt": '[{"role": "user", "content": "synthetic"}]',
                "response": None if failed else "synthetic",
                "status_code": 500 if failed else 200,
                "error": "engine error" if failed else None,
                "stream": False,
                "latency_ms": latency,
                "ttft_ms": latency * 0.3,
                "prompt_tokens": 30,
                "completion_tokens": None if failed else int(rng.poisson(arm.completion_tokens)),
                "finish_reason": None if failed else "stop",
                "tags": {"slice": "synthetic"},
            }
        )
        if shadow_fraction and rng.random() < shadow_fraction:
            requests.append(
                {**requests[-1], "id": f"{request_id}-shadow", "shadow_of": request_id, "arm": None}
            )
        if failed:
            continue
        score = float(np.clip(rng.normal(arm.score_mean, arm.score_sd), 0.0, 1.0))
        scores.append(
            {
                "request_id": request_id,
                "scorer": scorer,
                "score": score,
                "details": None,
                "created_at": created + timedelta(seconds=1),
            }
        )
        if rng.random() < arm.feedback_rate:
            up = rng.random() < arm.thumbs_up_rate
            feedback.append(
                {
                    "request_id": request_id,
                    "created_at": created + timedelta(seconds=30),
                    "rating": 1.0 if up else 0.0,
                    "thumbs": 1 if up else -1,
                    "correction": None,
                    "source": "synthetic",
                }
            )
    with engine.begin() as conn:
        for table, rows in ((requests_table, requests), (feedback_table, feedback), (scores_table, scores)):
            if rows:
                conn.execute(sa.insert(table), rows)
    return len(requests)
