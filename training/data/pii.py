"""PII scrubbing: emails, phone numbers, payment card numbers and IBANs become placeholders, with counts.

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so order ids and other long
numbers are left alone. Phone numbers need 7-15 digits and either a leading '+', separators/parentheses,
or at least 10 digits; ISO dates are not phones. `scrub(text)` returns the new text and a Counter per kind.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

__all__ = ["PII_KINDS", "PLACEHOLDERS", "scrub"]

PII_KINDS = ("email", "card", "iban", "phone")
PLACEHOLDERS = {"email": "[EMAIL]", "card": "[CARD]", "iban": "[IBAN]", "phone": "[PHONE]"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,20}\d(?![\w])")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    iban = candidate.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _card_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _phone_ok(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15 or _ISO_DATE.match(candidate):
        return False
    separated = candidate.startswith("+") or "(" in candidate or bool(re.search(r"\d[\s.-]\d", candidate))
    return separated or digits >= 10


# Detectors in priority order. A candidate that has the shape of a kind but fails its check (an IBAN with a
# wrong checksum) still claims its characters, so a later detector does not scrub part of it.
_DETECTORS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    ("email", _EMAIL, lambda s: True),
    ("iban", _IBAN, _iban_ok),
    ("card", _CARD, _card_ok),
    ("phone", _PHONE, _phone_ok),
)
_CLAIMS_WHEN_INVALID = {"iban"}


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Replace PII in `text`; returns the scrubbed text and how many of each kind were replaced."""
    spans: list[tuple[int, int, str | None]] = []
    for kind, pattern, check in _DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e, _ in spans):
                continue
            if check(match.group(0)):
                spans.append((start, end, kind))
            elif kind in _CLAIMS_WHEN_INVALID:
                spans.append((start, end, None))
    counts: Counter[str] = Counter()
    out: list[str] = []
    cursor = 0
    for start, end, found in sorted(spans, key=lambda span: span[0]):
        if found is None:
            continue
        out.append(text[cursor:start])
        out.append(PLACEHOLDERS[found])
        counts[found] += 1
        cursor = end
    out.append(text[cursor:])
    return "".join(out), counts
