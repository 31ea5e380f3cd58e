"""PII scrubbing: each kind replaced and counted; look-alikes (order ids, dates, invalid checksums) kept."""

from __future__ import annotations

import pytest

from training.data.pii import scrub


@pytest.mark.parametrize(
    ("text", "kind", "placeholder"),
    [
        ("mail me at jane.doe+news@example.co.uk please", "email", "[EMAIL]"),
        ("call +1 (415) 555-0132 tomorrow", "phone", "[PHONE]"),
        ("my number is 020 7946 0958", "phone", "[PHONE]"),
        ("ring 4155550132 now", "phone", "[PHONE]"),
        ("card 4111 1111 1111 1111 expires soon", "card", "[CARD]"),
        ("card 5500-0000-0000-0004", "card", "[CARD]"),
        ("IBAN DE89 3704 0044 0532 0130 00 for the refund", "iban", "[IBAN]"),
        ("IBAN GB82WEST12345698765432", "iban", "[IBAN]"),
    ],
)
def test_each_kind_is_replaced_and_counted(text: str, kind: str, placeholder: str) -> None:
    clean, counts = scrub(text)
    assert placeholder in clean
    assert counts[kind] == 1
    assert sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "order 12345678 shipped",  # 8 digits, no separators: an id, not a phone
        "on 2026-11-26 at noon",  # ISO date
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "IBAN DE89 3704 0044 0532 0130 01",  # fails mod-97
        "version 1.2.3 and 42 apples",
        "the user@host part without a domain",
    ],
)
def test_look_alikes_are_kept(text: str) -> None:
    clean, counts = scrub(text)
    assert clean == text
    assert not counts


def test_several_items_in_one_text() -> None:
    clean, counts = scrub("a@b.io, c@d.org and +49 30 1234567")
    assert clean == "[EMAIL], [EMAIL] and [PHONE]"
    assert counts == {"email": 2, "phone": 1}
