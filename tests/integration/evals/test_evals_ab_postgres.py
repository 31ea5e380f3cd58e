"""A/B statistics read from a Postgres request log (own schema, dropped afterwards)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from evals.ab import ab_report
from evals.datasets.request_log import SyntheticArm, write_synthetic_experiment
from serving.testing import PostgresUnavailable, postgres_schema

pytestmark = pytest.mark.integration
PG_URL = os.environ.get("TUNELOOP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_engine() -> Iterator[sa.Engine]:
    try:
        with postgres_schema(PG_URL, "evals_") as schema:
            engine = sa.create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
            try:
                yield engine
            finally:
                engine.dispose()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def test_ab_report_from_postgres(pg_engine: sa.Engine) -> None:
    write_synthetic_experiment(
        pg_engine, "pg-exp", [SyntheticArm("champion"), SyntheticArm("challenger", score_mean=0.8)], 800
    )
    report = ab_report("pg-exp", pg_engine)
    assert sum(a.requests for a in report.arms) == 800
    score = next(o for o in report.comparisons[0].outcomes if o.outcome == "score:reference")
    assert score.sequential_rejected and score.verdict == "treatment better"
    assert report.first_request is not None and report.first_request.startswith("2026-01-01")
