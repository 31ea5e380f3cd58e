"""PII scrubbing: emails, phone numbers, payment card numbers and IBANs become placeholders, with counts.

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so order ids and other long
numbers are left alone. Phone numbers need 7-15 digits and either a leading '+', separators/parentheses,
or at least 10 digits; ISO dates are not phones. `scrub(text)` returns the new text and a Counter per kind.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["PII_KINDS", "PLACEHOLDERS", "scrub"]

PII_KINDS = ("email", "card", "iban", "phone")
PLACEHOLDERS = {"email": "[EMAIL]", "card": "[CARD]", "iban": "[IBAN]", "phone": "[PHONE]"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){0,4}(?![\w])")
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


def _is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15 or _ISO_DATE.match(candidate):
        return False
    separated = candidate.startswith("+") or "(" in candidate or bool(re.search(r"\d[\s.-]\d", candidate))
    return separated or digits >= 10


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Replace PII in `text`; returns the scrubbed text and how many of each kind were replaced."""
    counts: Counter[str] = Counter()

    def sub(kind: str, pattern: re.Pattern[str], check: object, value: str) -> str:
        def repl(match: re.Match[str]) -> str:
            found = match.group(0)
            ok = check(found) if callable(check) else True
            if not ok:
                return found
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return pattern.sub(repl, value)

    text = sub("email", _EMAIL, None, text)
    text = sub("iban", _IBAN, _iban_ok, text)
    text = sub("card", _CARD, lambda s: _luhn_ok(re.sub(r"\D", "", s)), text)
    text = sub("phone", _PHONE, _is_phone, text)
    return text, counts
