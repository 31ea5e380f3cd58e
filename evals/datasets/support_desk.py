"""Deterministic support-desk data for the demo company "Lumen Home" (smart lights).

Reused by the evals suites, the demo and the monitoring loop's training data.

Lumen Home sells the Lumen Bulb, Lumen Strip and Lumen Hub, and a "Lumen Plus" subscription. Its policies
(refund window, shipping times, prices) are invented, so a base model cannot know them: an adapter trained on
the train split should answer the test split's re-worded questions better, which is what the target-slice
suite measures. Every ticket carries its intent (refunds, shipping, account, billing) as the slice label and
a short key fact that a correct answer must contain.

Same seed, same tickets, on every machine (only `random.Random(seed)` is used).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

COMPANY = "Lumen Home"
PRODUCTS = ("Lumen Bulb", "Lumen Strip", "Lumen Hub")
INTENTS = ("refunds", "shipping", "account", "billing")
SYSTEM_PROMPT = (
    "You are the customer support assistant of Lumen Home, which sells the Lumen Bulb, Lumen Strip and "
    "Lumen Hub smart lights and the Lumen Plus subscription. Answer in one or two short sentences."
)


@dataclass(frozen=True)
class SupportFact:
    """One policy fact: the canonical answer, the phrase a correct answer contains, and ways to ask."""

    intent: str
    key: str
    answer: str
    questions: tuple[str, ...]


FACTS: tuple[SupportFact, ...] = (
    SupportFact(
        "refunds",
        "30 days",
        "You can return any Lumen product within 30 days of delivery for a full refund.",
        (
            "How long do I have to return my {product}?",
            "What is your return window for the {product}?",
            "Is it too late to return a {product} I got three weeks ago?",
            "How many days do I have to send back a {product}?",
            "Can I still return my {product}? What's the deadline?",
        ),
    ),
    SupportFact(
        "refunds",
        "5 business days",
        "Refunds reach your original payment method within 5 business days after we receive the return.",
        (
            "When will I get my money back for the returned {product}?",
            "How long does a refund take to arrive?",
            "I sent my {product} back. How soon is the refund processed?",
            "How many days until my refund shows up on my card?",
            "What's the refund processing time after a return?",
        ),
    ),
    SupportFact(
        "refunds",
        "prepaid label",
        "Return shipping is free: print the prepaid label from your order page.",
        (
            "Do I have to pay to ship my {product} back?",
            "Who pays for return shipping?",
            "How do I send back a {product} without paying postage?",
            "Is there a return shipping fee for the {product}?",
            "Where do I get a return label?",
        ),
    ),
    SupportFact(
        "refunds",
        "store credit",
        "Gifts are refunded as store credit to the person who received them.",
        (
            "My {product} was a gift. Can I get a refund?",
            "How are refunds handled for gifted items?",
            "I received a {product} as a present and want to return it. What do I get?",
            "Can a gift recipient get cash back for a {product}?",
            "What happens when I return a {product} someone gave me?",
        ),
    ),
    SupportFact(
        "shipping",
        "3 to 5 business days",
        "Standard shipping takes 3 to 5 business days.",
        (
            "How long does standard shipping take for a {product}?",
            "When will my {product} arrive with normal shipping?",
            "What's the delivery time for standard orders?",
            "How many days is regular shipping?",
            "If I order a {product} today, when does it get here?",
        ),
    ),
    SupportFact(
        "shipping",
        "24 countries",
        "We ship to 24 countries; the shipping page lists them.",
        (
            "Do you ship the {product} internationally?",
            "Which countries do you deliver to?",
            "Can I order a {product} from outside the US?",
            "How many countries do you ship to?",
            "Do you deliver abroad?",
        ),
    ),
    SupportFact(
        "shipping",
        "$12",
        "Express shipping costs $12 and arrives in 1 to 2 business days.",
        (
            "How much is express shipping for a {product}?",
            "What does faster delivery cost?",
            "Is there an express option and what's the price?",
            "How much extra for next-day-ish shipping?",
            "What's the express shipping fee?",
        ),
    ),
    SupportFact(
        "shipping",
        "tracking link",
        "Use the tracking link in your shipping confirmation email.",
        (
            "How do I track my {product} order?",
            "Where can I see where my package is?",
            "How can I follow my delivery?",
            "Is there a way to track my shipment?",
            "My {product} shipped. How do I check its status?",
        ),
    ),
    SupportFact(
        "account",
        "forgot password",
        "Click Forgot password on the sign-in page and follow the link we email you.",
        (
            "How do I reset my password?",
            "I can't log in to the app for my {product}. What do I do?",
            "I forgot my password. How do I get back in?",
            "How can I change a password I don't remember?",
            "Locked out of my Lumen account. Help?",
        ),
    ),
    SupportFact(
        "account",
        "48 hours",
        "Go to Settings, Privacy, Delete account; deletion completes within 48 hours.",
        (
            "How do I delete my Lumen account?",
            "How long does account deletion take?",
            "I want to close my account. How?",
            "Can you remove all my data and my account?",
            "What's the process to permanently delete my profile?",
        ),
    ),
    SupportFact(
        "account",
        "two-factor",
        "Turn on two-factor authentication under Settings, Security.",
        (
            "How do I make my account more secure?",
            "Can I add a second login step to my account?",
            "Where do I enable 2FA?",
            "How do I turn on login codes for my Lumen account?",
            "Is there two-step verification for the {product} app?",
        ),
    ),
    SupportFact(
        "account",
        "up to 5",
        "Up to 5 people can share one Lumen Home with the Household feature.",
        (
            "Can my family control the {product} too?",
            "How many people can share one home in the app?",
            "Can I add my partner to my Lumen account?",
            "Is there a limit on household members?",
            "How do I share my {product} with my roommates?",
        ),
    ),
    SupportFact(
        "billing",
        "$4.99",
        "Lumen Plus costs $4.99 per month.",
        (
            "How much is Lumen Plus?",
            "What's the monthly price of the subscription?",
            "How much does Lumen Plus cost per month?",
            "What do you charge for the premium plan?",
            "Is Lumen Plus expensive? What's the price?",
        ),
    ),
    SupportFact(
        "billing",
        "PayPal",
        "We accept Visa, Mastercard, American Express and PayPal.",
        (
            "Which payment methods do you accept?",
            "Can I pay for my {product} with PayPal?",
            "What cards do you take?",
            "How can I pay for an order?",
            "Do you accept anything other than credit cards?",
        ),
    ),
    SupportFact(
        "billing",
        "3 days",
        "A duplicate charge is a pending authorization that disappears within 3 days.",
        (
            "Why was I charged twice for my {product}?",
            "I see two charges on my card. What happened?",
            "There's a double charge on my statement. Can you fix it?",
            "My bank shows the same order twice. Why?",
            "Was I billed two times for one order?",
        ),
    ),
    SupportFact(
        "billing",
        "billing history",
        "Download invoices from Settings, Billing history.",
        (
            "Where can I get an invoice for my {product}?",
            "I need a receipt for my subscription. Where is it?",
            "How do I download my invoices?",
            "Can I get a VAT invoice?",
            "Where do I find past receipts?",
        ),
    ),
)

_OPENERS = ("", "Hi, ", "Hello! ", "Hey there. ", "Quick question: ")
_CLOSERS = ("", " Thanks!", " Thank you.", " Appreciate it.", "")


@dataclass(frozen=True)
class SupportTicket:
    """One customer question with the answer the support desk should give."""

    id: str
    intent: str
    question: str
    answer: str
    key_fact: str
    split: str

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def generate_tickets(
    *,
    seed: int = 0,
    intents: Sequence[str] | None = None,
    test_questions_per_fact: int = 2,
    train_variants_per_question: int = 3,
    test_variants_per_question: int = 2,
) -> list[SupportTicket]:
    """Tickets for every fact: the last `test_questions_per_fact` wordings of each fact are the test split,
    the others the train split; each wording comes in several opener/product variants.

    Test questions are worded differently from every train question, so the test split measures whether
    a model learnt the fact, not the sentence.
    """
    chosen = set(intents or INTENTS)
    unknown = chosen - set(INTENTS)
    if unknown:
        raise ValueError(f"unknown intents {sorted(unknown)}; known: {INTENTS}")
    rng = random.Random(seed)
    tickets: list[SupportTicket] = []
    for fact_index, fact in enumerate(FACTS):
        if fact.intent not in chosen:
            continue
        n_test = min(test_questions_per_fact, len(fact.questions) - 1)
        for q_index, template in enumerate(fact.questions):
            split = "test" if q_index >= len(fact.questions) - n_test else "train"
            variants = test_variants_per_question if split == "test" else train_variants_per_question
            for variant in range(variants):
                question = _render(template, rng)
                tickets.append(
                    SupportTicket(
                        id=f"{fact.intent}-{fact_index:02d}-{q_index}-{variant}",
                        intent=fact.intent,
                        question=question,
                        answer=fact.answer,
                        key_fact=fact.key,
                        split=split,
                    )
                )
    return tickets


def _render(template: str, rng: random.Random) -> str:
    product = rng.choice(PRODUCTS)
    return f"{rng.choice(_OPENERS)}{template.format(product=product)}{rng.choice(_CLOSERS)}".strip()


def chat_records(
    tickets: Iterable[SupportTicket], *, system_prompt: str = SYSTEM_PROMPT
) -> list[dict[str, Any]]:
    """Tickets as chat-format training records: {"messages": [...], "intent": ..., "id": ...}."""
    return [
        {
            "id": t.id,
            "intent": t.intent,
            "messages": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": t.question},
                {"role": "assistant", "content": t.answer},
            ],
        }
        for t in tickets
    ]
