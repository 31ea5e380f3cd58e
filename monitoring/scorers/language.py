"""A cheap language identifier (Unicode script counts + stopword hits) and the language-mismatch scorer.

No model and no download: non-Latin scripts name the language (or script family) directly; Latin text
is told apart by stopword hits for English, Spanish, French, German, Italian, Portuguese and Dutch.
Text that is too short or ambiguous is "unknown", and the scorer then does not apply.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from monitoring.scorers.base import Scorer, ScoreResult, register_scorer
from monitoring.store import FeedbackEntry, LoggedRequest

__all__ = ["LanguageGuess", "LanguageMismatchScorer", "detect_language"]


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS: dict[str, frozenset[str]] = {
    "en": _wordset(
        "the and is are was were to of in that it for on with as you this be have not but or at by "
        "from your can will my i we they do does how what please"
    ),
    "es": _wordset(
        "el la los las de que y en un una es por para con no se su al lo como más pero sus le ya o "
        "este sí porque esta cuando muy sin sobre también me hay donde puedo mi"
    ),
    "fr": _wordset(
        "le la les de des et est en un une du que qui dans pour pas sur au avec il elle ce vous "
        "nous je ne sont mais ou son sa ses cette aux par plus mon"
    ),
    "de": _wordset(
        "der die das und ist nicht ein eine zu den mit von sie ich es im für auf dem des sich auch "
        "wie werden wird kann ihr mein bitte wir haben oder aber"
    ),
    "it": _wordset(
        "il lo la gli le di che e è un una per non con del della sono ma come si questo mi ho anche "
        "nel alla più io voi mio"
    ),
    "pt": _wordset(
        "o a os as de que e do da em um uma para com não por se mais mas como ao dos das foi você "
        "eu meu minha isso está são"
    ),
    "nl": _wordset(
        "de het een en van is dat niet op te in zijn met voor je ik ze er maar om ook als bij wat "
        "mijn hoe kan wordt"
    ),
}

_SCRIPT_LANG = {
    "CYRILLIC": "cyrillic",
    "GREEK": "el",
    "ARABIC": "ar",
    "HEBREW": "he",
    "DEVANAGARI": "hi",
    "HANGUL": "ko",
    "THAI": "th",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "CJK": "zh",
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class LanguageGuess:
    """A language code (ISO 639-1 where known, a script family otherwise) or 'unknown', with evidence."""

    language: str
    confidence: float
    evidence: str

    @property
    def known(self) -> bool:
        return self.language != "unknown"


def _script(char: str) -> str:
    try:
        name = unicodedata.name(char)
    except ValueError:
        return ""
    head = name.split(" ", 1)[0]
    return "CJK" if head == "CJK" else head


def detect_language(text: str, *, min_letters: int = 12, min_hits: int = 2) -> LanguageGuess:
    """Guess the language of `text` from its script and, for Latin script, its stopwords."""
    scripts = Counter(_script(c) for c in text if c.isalpha())
    letters = sum(scripts.values())
    if letters < min_letters:
        return LanguageGuess("unknown", 0.0, f"{letters} letters")
    script, count = scripts.most_common(1)[0]
    share = count / letters
    if script != "LATIN":
        if scripts.get("HIRAGANA", 0) + scripts.get("KATAKANA", 0) > 0 and script in (
            "CJK",
            "HIRAGANA",
            "KATAKANA",
        ):
            return LanguageGuess("ja", share, "kana present")
        lang = _SCRIPT_LANG.get(script)
        if lang is None:
            return LanguageGuess("unknown", share, f"script {script}")
        return LanguageGuess(lang, share, f"script {script} ({share:.0%} of letters)")
    words = [w.lower() for w in _WORD.findall(text)]
    hits = {lang: sum(1 for w in words if w in stops) for lang, stops in _STOPWORDS.items()}
    ranked = sorted(hits.items(), key=lambda kv: kv[1], reverse=True)
    (best, best_hits), (_, second_hits) = ranked[0], ranked[1]
    if best_hits < min_hits or best_hits < 1.5 * second_hits:
        return LanguageGuess("unknown", 0.0, f"stopword hits {dict(ranked[:3])}")
    return LanguageGuess(
        best, best_hits / max(1, len(words)), f"{best_hits} {best} stopwords, next {second_hits}"
    )


@register_scorer("language_mismatch")
class LanguageMismatchScorer(Scorer):
    """0 when the answer is in another language than the question (or than `tags.language`), else 1."""

    description = "answer language differs from the question's"

    def __init__(self, *, name: str | None = None, tag_key: str = "language") -> None:
        super().__init__(name=name)
        self.tag_key = tag_key

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        answer = detect_language(request.response or "")
        if not answer.known:
            return None
        tagged = request.tags.get(self.tag_key)
        if isinstance(tagged, str) and tagged:
            expected, source = tagged.lower(), "tags"
        else:
            guess = detect_language(request.user_text)
            if not guess.known:
                return None
            expected, source = guess.language, "prompt"
        mismatch = answer.language != expected
        return ScoreResult(
            0.0 if mismatch else 1.0,
            {
                "expected": expected,
                "expected_from": source,
                "answer": answer.language,
                "evidence": answer.evidence,
            },
        )
