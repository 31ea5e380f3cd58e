"""Templates: each task template builds the expected chat example; bad rows are rejected with a reason;
column checks name the missing columns and the available ones."""

from __future__ import annotations

import pytest

from training.config import TemplateOptions
from training.data.example import RowRejected
from training.data.format import format_row, resolve_columns, resolve_template
from training.errors import DataError


def fmt(template: str, row: dict, **options: object):  # type: ignore[no-untyped-def]
    mapping = resolve_columns(template, {}, list(row), "test")
    return format_row(row, template, mapping, TemplateOptions(**options), "src")


def test_chat_keeps_roles_and_adds_system_prompt() -> None:
    ex = fmt(
        "chat",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        system_prompt="Be brief.",
    )
    assert ex.kind == "chat"
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant"]
    assert ex.target_text() == "hello"


def test_chat_accepts_sharegpt_and_json_strings() -> None:
    ex = fmt("chat", {"messages": '[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]'})
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no_assistant_turn"),
        ({"messages": []}, "empty"),
        ({"messages": "not json"}, "bad_messages"),
        ({"messages": [{"role": "alien", "content": "x"}]}, "bad_messages"),
    ],
)
def test_bad_chat_rows(row: dict, reason: str) -> None:
    with pytest.raises(RowRejected) as info:
        fmt("chat", row)
    assert info.value.reason == reason


def test_task_templates() -> None:
    summary = fmt("summarization", {"document": "Long text.", "summary": "Short."})
    assert (
        summary.messages[0]["content"].startswith("Summarize") and summary.messages[-1]["content"] == "Short."
    )
    label = fmt(
        "classification", {"text": "I was charged twice", "label": "billing"}, labels=["billing", "tech"]
    )
    assert "billing, tech" in label.messages[0]["content"] and label.target_text() == "billing"
    translation = fmt("translation", {"source": "Hello", "target": "Bonjour"}, target_lang="French")
    assert "to French" in translation.messages[0]["content"]
    code = fmt(
        "code", {"prompt": "add two numbers", "code": "def add(a, b): return a + b", "language": "Python"}
    )
    assert "Python" in code.messages[0]["content"]
    instruction = fmt("instruction", {"instruction": "Translate", "input": "cat", "output": "chat"})
    assert instruction.messages[0]["content"] == "Translate\n\ncat"
    text = fmt("text", {"text": "Plain documentation."})
    assert text.kind == "text" and text.target_text() == "Plain documentation."
    comp = fmt("completion", {"prompt": "2+2=", "completion": "4"})
    assert comp.kind == "completion" and comp.completion == "4"


def test_classification_rejects_unknown_labels() -> None:
    with pytest.raises(RowRejected) as info:
        fmt("classification", {"text": "x", "label": "weather"}, labels=["billing"])
    assert info.value.reason == "invalid_label"


def test_missing_columns_are_named() -> None:
    with pytest.raises(DataError) as info:
        resolve_columns("summarization", {}, ["article", "highlights"], "data.sources.0 (news)")
    message = str(info.value)
    assert "'document'" in message and "article, highlights" in message and "data.sources.0" in message
    mapping = resolve_columns(
        "summarization", {"document": "article", "summary": "highlights"}, ["article", "highlights"], "x"
    )
    assert mapping == {"document": "article", "summary": "highlights"}
    with pytest.raises(DataError, match="does not use"):
        resolve_columns("text", {"body": "x"}, ["x"], "x")


def test_auto_template() -> None:
    assert resolve_template("auto", {}, ["messages"]) == "chat"
    assert resolve_template("auto", {}, ["prompt", "completion"]) == "completion"
    assert resolve_template("auto", {}, ["text", "id"]) == "text"
    assert resolve_template("auto", {"text": "body"}, ["body"]) == "text"
    with pytest.raises(DataError, match="cannot pick a template"):
        resolve_template("auto", {}, ["question", "answer"])


def test_content_hash_ignores_source() -> None:
    a = fmt("completion", {"prompt": "p", "completion": "c"})
    b = format_row(
        {"prompt": "p", "completion": "c"},
        "completion",
        {"prompt": "prompt", "completion": "completion"},
        TemplateOptions(),
        "other",
    )
    assert a.content_hash == b.content_hash
