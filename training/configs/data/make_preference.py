"""Derive the example preference datasets from support_chat.jsonl, deterministically (no downloads).

    python training/configs/data/make_preference.py

Writes, next to this file:
  * support_preference.jsonl - DPO pairs {prompt: [system, user], chosen, rejected}: chosen is the
    conversation's own answer, rejected one of the failure modes a served support bot shows and users
    correct or thumb down: a deflection that answers nothing, or a confident answer to another question;
  * support_kto.jsonl - KTO records {prompt, completion, label}: the right answer (label true) for some
    prompts, a bad answer (label false) for others, both for a few - as feedback arrives in practice
    (about 55 % desirable).
The same rows in the same order as the conversations (one per conversation), so a data budget of N
records means the same N prompts in both files and in support_chat.jsonl. Same seed, same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFLECTIONS = [
    "I'm not sure about that. Please contact our support team.",
    "Sorry, I can't help with this request.",
    "That depends on many factors. Please check the documentation.",
    "Could you please rephrase your question?",
    "I don't have information about that at the moment.",
]


def _conversations() -> list[tuple[list[dict[str, str]], str]]:
    rows = []
    for line in (HERE / "support_chat.jsonl").read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        rows.append((messages[:-1], messages[-1]["content"]))
    return rows


def _bad_answer(rng: random.Random, answer: str, answers: list[str]) -> str:
    if rng.random() < 0.5:
        return rng.choice(DEFLECTIONS)
    while True:  # a confident answer to another question (same first words = same topic: skip)
        other = rng.choice(answers)
        if other.split()[:3] != answer.split()[:3]:
            return other


def build(seed: int = 20261207) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    rng = random.Random(seed)
    conversations = _conversations()
    answers = [a for _, a in conversations]
    pairs: list[dict[str, object]] = []
    kto: list[dict[str, object]] = []
    for prompt, answer in conversations:
        bad = _bad_answer(rng, answer, answers)
        pairs.append({"prompt": prompt, "chosen": answer, "rejected": bad})
        draw = rng.random()
        if draw < 0.45:
            kto.append({"prompt": prompt, "completion": answer, "label": True})
        elif draw < 0.8:
            kto.append({"prompt": prompt, "completion": bad, "label": False})
        else:
            kto.append({"prompt": prompt, "completion": answer, "label": True})
            kto.append({"prompt": prompt, "completion": bad, "label": False})
    return pairs, kto


def _write(name: str, rows: list[dict[str, object]]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    pairs, kto = build()
    _write("support_preference.jsonl", pairs)
    _write("support_kto.jsonl", kto)


if __name__ == "__main__":
    main()
