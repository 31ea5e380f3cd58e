"""Fixtures for the tool-calling data tests: a tokenizer whose chat template renders tools, and a request log
holding tool-calling traffic written as serving writes it (rows from `tool_records`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tool_records import HERMES_TEMPLATE, Logged  # type: ignore[import-not-found]


@pytest.fixture
def hermes_tokenizer(base_model: Path) -> Any:
    """The default model's tokenizer with a chat template that renders tools and tool calls."""
    from training.data.pipeline import load_tokenizer

    tokenizer = load_tokenizer(base_model)
    tokenizer.chat_template = HERMES_TEMPLATE
    return tokenizer


@pytest.fixture
def write_log(tmp_path: Path) -> Any:
    """write_log([Logged, ...]) -> the SQLite URL of a request log holding them (newest last)."""
    import sqlalchemy as sa

    from common.log_schema import create_log_tables, feedback_table, requests_table

    def write(rows: list[Logged]) -> str:
        url = f"sqlite:///{tmp_path / 'log.db'}"
        engine = sa.create_engine(url)
        create_log_tables(engine)
        with engine.begin() as conn:
            for i, row in enumerate(rows):
                created = datetime(2026, 11, 20, 12, i, tzinfo=UTC)
                conn.execute(
                    requests_table.insert().values(
                        id=row.id,
                        created_at=created,
                        endpoint="chat.completions",
                        model_requested="assist",
                        served_name="assist",
                        prompt=json.dumps(row.messages),
                        response=row.response,
                        status_code=200,
                        stream=False,
                        tags=row.tags,
                        tools=row.tools,
                        tool_calls=row.tool_calls,
                    )
                )
                conn.execute(
                    feedback_table.insert().values(
                        request_id=row.id, created_at=created, thumbs=row.thumbs, correction=row.correction
                    )
                )
        engine.dispose()
        return url

    return write
