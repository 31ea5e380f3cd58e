"""Cleaning tool-calling records: PII is scrubbed in tool-call arguments and tool results (the definitions,
the application's schema, are left as served), broken encodings in arguments drop the row, and duplicates
are found through the calls - not through the definitions every record of an application shares."""

from __future__ import annotations

from typing import Any

from tool_records import TOOLS  # type: ignore[import-not-found]

from training.config import CleanConfig
from training.data.clean import CleanReport, clean_examples
from training.data.example import Example


def mail(
    to: Any, body: str, *, ask: str = "Mail the invoice to the customer.", call_id: str = "c1"
) -> Example:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "send_email", "arguments": {"to": to, "body": body}},
    }
    return Example(
        kind="chat",
        source="s",
        messages=(
            {"role": "user", "content": ask},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "queued for jane.doe@example.com", "tool_call_id": call_id},
            {"role": "assistant", "content": "Done."},
        ),
        tools=tuple(TOOLS),
        tool_choice="auto",
    )


def test_pii_in_arguments_and_tool_results_is_scrubbed() -> None:
    report = CleanReport()
    example = mail(
        ["jane.doe@example.com", {"cc": "+1 (415) 555-0100"}],
        "Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32.",
    )
    (cleaned,) = clean_examples([example], CleanConfig(near_duplicates=False), report)
    arguments = cleaned.messages[1]["tool_calls"][0]["function"]["arguments"]
    assert arguments == {"to": ["[EMAIL]", {"cc": "[PHONE]"}], "body": "Card [CARD], IBAN [IBAN]."}
    assert cleaned.messages[1]["tool_calls"][0]["id"] == "c1"
    assert cleaned.messages[2] == {"role": "tool", "content": "queued for [EMAIL]", "tool_call_id": "c1"}
    assert report.pii == {"email": 2, "phone": 1, "card": 1, "iban": 1}
    assert cleaned.tools == tuple(TOOLS)  # the schema is not user text


def test_a_card_number_sent_as_a_number_is_scrubbed() -> None:
    (cleaned,) = clean_examples([mail(4111111111111111, "hi")], CleanConfig(), CleanReport())
    assert cleaned.messages[1]["tool_calls"][0]["function"]["arguments"]["to"] == "[CARD]"
    (kept,) = clean_examples([mail(42, "hi")], CleanConfig(), CleanReport())
    assert kept.messages[1]["tool_calls"][0]["function"]["arguments"]["to"] == 42  # numbers stay numbers


def test_broken_encoding_in_arguments_drops_the_row() -> None:
    report = CleanReport()
    assert clean_examples([mail("ops", "caf\u00c3\u00a9 order")], CleanConfig(), report) == []
    assert report.dropped == {"broken_encoding": 1}


def test_duplicates_are_found_through_the_calls_not_the_definitions() -> None:
    report = CleanReport()
    examples = [
        mail("ops", "Invoice 1001 is ready.", call_id="call_a"),
        mail("ops", "Invoice 1001 is ready.", call_id="call_b"),  # the same traffic, other random call ids
        mail("sales", "Quarterly numbers attached.", ask="Send the quarterly report to sales."),
        mail("legal", "Contract draft v2 for review.", ask="Forward the contract draft to legal."),
    ]
    kept = clean_examples(examples, CleanConfig(), report)
    assert report.dropped == {"duplicate": 1}  # the shared definitions make no near-duplicates
    assert [e.messages[1]["tool_calls"][0]["id"] for e in kept] == ["call_a", "c1", "c1"]
