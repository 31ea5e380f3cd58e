"""Generates this example's data files (deterministic; the files are committed, run it only to change them).

Support tickets of a fictional online shop, each with one triage label. The first champion learns
`billing`, `shipping` and `account`; later a wave of account-security tickets arrives, a label the
clients' prompt does not even name: the right label (`security`) is known only when a human triager
corrects the answer, through `POST /v1/feedback`.

    python examples/ticket_triage/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SYSTEM_PROMPT = (
    "You triage support tickets for Nimbus Store. Reply with one label for the ticket: billing, shipping "
    "or account. Reply with the label only."
)
PRODUCTS = ["kettle", "desk lamp", "backpack", "headphones", "coffee grinder", "rain jacket", "monitor stand"]
TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my {p} order.",
        "My invoice for the {p} shows the wrong amount.",
        "Why did my card get charged before the {p} shipped?",
        "Can you refund the extra fee on my {p} purchase?",
        "The discount code was not applied to my {p}, please fix the price.",
        "I need a VAT invoice for the {p} I bought.",
        "My payment for the {p} was declined but the money left my bank.",
        "Please cancel the duplicate charge for the {p}.",
        "How do I pay the balance left on my {p} order?",
        "The receipt for my {p} is missing the tax line.",
    ],
    "shipping": [
        "Where is my {p}? The tracking has not moved in days.",
        "My {p} arrived damaged in the box.",
        "Can I change the delivery address for my {p}?",
        "The courier left my {p} at the wrong house.",
        "How long does delivery of a {p} take to Spain?",
        "My {p} was marked delivered but it never came.",
        "Can you ship the {p} with express delivery?",
        "The tracking number for my {p} does not work.",
        "I only received half of my {p} order.",
        "Can I pick up the {p} at a store instead of delivery?",
    ],
    "account": [
        "How do I change the email address on my account?",
        "I want to update my name in my profile before ordering a {p}.",
        "How can I unsubscribe from your newsletter?",
        "Please delete my account and my saved {p} wishlist.",
        "How do I add a second delivery address to my profile?",
        "I cannot find my order history for the {p} in my account.",
        "How do I change my preferred language in the settings?",
        "Can I merge my two customer accounts?",
        "Where do I update my phone number in my profile?",
        "How do I save my {p} to my wishlist?",
    ],
    "security": [
        "Someone logged into my account from another country and ordered a {p}.",
        "I got an email asking for my password to confirm a {p} order, is it real?",
        "My account was hacked and the password no longer works.",
        "There is an unknown device in my login history.",
        "I received a one-time code I did not ask for.",
        "How do I turn on two-factor authentication?",
        "A text message says my account is locked and asks me to click a link.",
        "Somebody changed the email on my account without me.",
        "I think my saved card was stolen through my account, a {p} was bought.",
        "Please sign out all sessions, I think someone else is using my account.",
    ],
}
OPENERS = ["", "Hi, ", "Hello team, ", "Good morning. ", "Hey, ", "Urgent: "]
CLOSERS = ["", " Thanks!", " Thank you.", " Please help.", " Regards, Sam", " Order 4{n:03d}."]
HELD_OUT = 3
"""Templates per label kept out of training (the suites ask about them: new wordings, not memorised ones)."""


def variants(
    label: str, template_index: int, template: str, n: int, rng: random.Random
) -> list[dict[str, str]]:
    rows = []
    for k in range(n):
        text = OPENERS[rng.randrange(len(OPENERS))] + template.format(p=rng.choice(PRODUCTS))
        text += CLOSERS[rng.randrange(len(CLOSERS))].format(n=rng.randrange(1000))
        rows.append({"id": f"{label}-{template_index:02d}-{k}", "label": label, "text": text.strip()})
    return rows


def chat(row: dict[str, str]) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": row["text"]},
            {"role": "assistant", "content": row["label"]},
        ]
    }


def main() -> None:
    rng = random.Random(7)
    train, traffic, heldout = [], [], []
    for label, templates in TEMPLATES.items():
        for i, template in enumerate(templates):
            if i < len(templates) - HELD_OUT:
                rows = variants(label, i, template, 6, rng)
                (train if label != "security" else traffic).extend(rows[:3])
                traffic.extend(rows[3:])
            else:
                heldout.extend(variants(label, i, template, 10, rng))
    (HERE / "data").mkdir(exist_ok=True)
    with (HERE / "data" / "train.jsonl").open("w", encoding="utf-8") as fh:  # the first champion's data
        for row in train:
            fh.write(json.dumps(chat(row)) + "\n")
    with (HERE / "data" / "traffic.jsonl").open("w", encoding="utf-8") as fh:  # what clients will send
        for row in traffic:
            fh.write(json.dumps(row) + "\n")
    for name, keep in (("target", {"security"}), ("regression", {"billing", "shipping", "account"})):
        with (HERE / "suites" / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in heldout:
                if row["label"] in keep:
                    fh.write(json.dumps(row) + "\n")
    print(f"train {len(train)}, traffic {len(traffic)}, held out {len(heldout)}")


if __name__ == "__main__":
    main()
