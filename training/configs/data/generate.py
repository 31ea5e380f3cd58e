"""Generate the small example datasets next to this file, deterministically (no downloads).

    python training/configs/data/generate.py

Writes support_chat.jsonl (chat), summarization.jsonl, classification.csv, translation.jsonl,
code.parquet and domain.jsonl (plain text). Same seed, same bytes: the files are committed, and this
script documents how they were made.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "You are the support assistant of Acme Cloud. Answer briefly and politely."
NAMES = [
    "Alice",
    "Bob",
    "Chen",
    "Dana",
    "Elif",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yara",
]
PLANS = ["Starter", "Team", "Business", "Enterprise"]
REGIONS = ["Frankfurt", "Virginia", "Singapore", "Sao Paulo", "Tokyo", "Dublin"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _support(rng: random.Random) -> list[dict[str, object]]:
    topics = [
        (
            [
                "How do I reset my password?",
                "I forgot my password, what now?",
                "My password stopped working.",
                "Can you help me change my password?",
            ],
            lambda d: (
                f"Open the sign-in page, click 'Forgot password' and follow the link we email you. "
                f"The link is valid for {d['hours']} hours. If it does not arrive, check the spam folder."
            ),
        ),
        (
            [
                "Why was I charged twice this month?",
                "I see a double charge on my card.",
                "There are two invoices for {month}, why?",
            ],
            lambda d: (
                f"Sorry about that. A duplicate charge on the {d['plan']} plan is refunded automatically "
                f"within {d['days']} business days. If it is still there on {d['day']}, reply here."
            ),
        ),
        (
            [
                "How can I upgrade to the {plan} plan?",
                "What does the {plan} plan add?",
                "Can I switch my workspace to {plan}?",
            ],
            lambda d: (
                f"Go to Settings > Billing > Change plan and pick {d['plan']}. The change applies at once "
                f"and the price difference is prorated for the remaining {d['days']} days of the cycle."
            ),
        ),
        (
            [
                "How do I enable two-factor authentication?",
                "Where do I turn on 2FA?",
                "Is there a way to secure my account with an authenticator app?",
            ],
            lambda d: (
                "Open Profile > Security, choose 'Enable two-factor authentication' and scan the QR code "
                f"with your authenticator app. Keep the {d['codes']} recovery codes somewhere safe."
            ),
        ),
        (
            [
                "Can I move my data to the {region} region?",
                "Do you have servers in {region}?",
                "How do I migrate my project to {region}?",
            ],
            lambda d: (
                f"Yes, {d['region']} is available on the {d['plan']} plan and above. Start a migration from "
                f"Project > Settings > Region; a project of {d['gb']} GB moves in under {d['hours']} hours."
            ),
        ),
        (
            [
                "How do I create an API key?",
                "Where can I find my API token?",
                "My API key expired, what do I do?",
            ],
            lambda d: (
                f"Open Developer > API keys and click 'New key'. Keys expire after {d['days']} days by "
                "default; you can rotate a key at any time without downtime."
            ),
        ),
        (
            ["How do I delete my account?", "Please close my account.", "I want to remove all my data."],
            lambda d: (
                f"You can delete the account from Settings > Account > Delete. We keep backups for "
                f"{d['days']} days, after which your data is gone for good. Export it first if needed."
            ),
        ),
        (
            [
                "How do I export my data?",
                "Can I download all my files?",
                "Is there a CSV export of my records?",
            ],
            lambda d: (
                f"Use Settings > Data > Export. We prepare an archive (about {d['gb']} GB for your "
                f"workspace) and email you a download link within {d['hours']} hours."
            ),
        ),
        (
            [
                "The dashboard is very slow today.",
                "Pages take forever to load since {day}.",
                "Is there an outage in {region}?",
            ],
            lambda d: (
                f"We had elevated latency in {d['region']} on {d['day']}; it is resolved now. If pages are "
                "still slow, clear the browser cache and send us the request id shown in the footer."
            ),
        ),
        (
            [
                "Can I get an invoice with my VAT number?",
                "How do I add my company details to invoices?",
                "I need a corrected invoice for {month}.",
            ],
            lambda d: (
                f"Add the VAT number under Settings > Billing > Company details. Invoices issued after that "
                f"include it; for {d['month']} we can reissue the invoice on request."
            ),
        ),
    ]
    months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
    ]
    greetings = ["", "Hi, ", "Hello! ", "Good morning. ", "Hey there, ", "Quick question: "]
    extras = [
        "",
        " Thanks!",
        " It is urgent.",
        " I am on the {plan} plan.",
        " My name is {name}.",
        " Cheers, {name}",
    ]
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    while len(rows) < 320:
        questions, answer = rng.choice(topics)
        d = {
            "plan": rng.choice(PLANS),
            "region": rng.choice(REGIONS),
            "day": rng.choice(DAYS),
            "month": rng.choice(months),
            "name": rng.choice(NAMES),
            "hours": rng.choice([2, 4, 12, 24, 48]),
            "days": rng.choice([3, 5, 7, 14, 30, 90]),
            "codes": rng.choice([8, 10, 12]),
            "gb": rng.choice([1, 5, 20, 80]),
        }
        user = (rng.choice(greetings) + rng.choice(questions) + rng.choice(extras)).format(**d)
        reply = (f"Hi {d['name']}, " if str(d["name"]) in user else "") + answer(d)
        key = user + reply
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return rows


def _tickets(rng: random.Random, n: int) -> list[dict[str, str]]:
    kinds = {
        "billing": [
            "I was charged {amount} EUR twice for the {plan} plan",
            "my invoice for {month} shows the wrong VAT",
            "the refund of {amount} EUR never arrived",
        ],
        "technical": [
            "the API returns error {code} when I upload files larger than {gb} GB",
            "the dashboard times out in {region} since {day}",
            "webhooks stopped firing after the update on {day}",
        ],
        "account": [
            "I cannot log in after enabling two-factor authentication",
            "my colleague {name} cannot accept the invite",
            "I want to transfer workspace ownership to {name}",
        ],
        "shipping": [
            "the hardware key I ordered on {day} has not arrived",
            "my parcel to {region} is stuck in customs",
            "I received the wrong security key model",
        ],
    }
    feelings = [
        "This is blocking my team.",
        "Please help soon.",
        "No rush.",
        "We tried twice already.",
        "Thanks in advance.",
    ]
    out: list[dict[str, str]] = []
    for _ in range(n):
        label = rng.choice(list(kinds))
        d = {
            "amount": rng.choice([9, 19, 49, 99, 249]),
            "plan": rng.choice(PLANS),
            "month": rng.choice(["May", "June", "July"]),
            "code": rng.choice([413, 500, 502, 503]),
            "gb": rng.choice([1, 2, 5]),
            "region": rng.choice(REGIONS),
            "day": rng.choice(DAYS),
            "name": rng.choice(NAMES),
        }
        issue = rng.choice(kinds[label]).format(**d)
        who = rng.choice(NAMES)
        document = (
            f"Customer {who} wrote on {rng.choice(DAYS)}: Hello, {issue}. {rng.choice(feelings)} "
            f"The account was created {rng.randint(2, 40)} months ago and uses the {d['plan']} plan."
        )
        out.append({"label": label, "issue": issue, "document": document, "who": who})
    return out


def _summaries(rng: random.Random) -> list[dict[str, str]]:
    return [
        {"document": t["document"], "summary": f"{t['who']} reports that {t['issue']}."}
        for t in _tickets(rng, 120)
    ]


def _classes(rng: random.Random) -> list[dict[str, str]]:
    return [{"text": t["document"], "label": t["label"]} for t in _tickets(rng, 160)]


def _translations(rng: random.Random) -> list[dict[str, str]]:
    verbs = [
        ("I would like to cancel", "Je voudrais annuler"),
        ("Please update", "Veuillez mettre à jour"),
        ("I cannot find", "Je ne trouve pas"),
        ("Can you send me", "Pouvez-vous m'envoyer"),
        ("We need to check", "Nous devons vérifier"),
        ("Where is", "Où est"),
    ]
    nouns = [
        ("my invoice", "ma facture"),
        ("my order", "ma commande"),
        ("my password", "mon mot de passe"),
        ("my account", "mon compte"),
        ("the contract", "le contrat"),
        ("the report", "le rapport"),
        ("my subscription", "mon abonnement"),
        ("the receipt", "le reçu"),
        ("my address", "mon adresse"),
        ("the delivery", "la livraison"),
    ]
    tails = [
        ("", ""),
        (" today", " aujourd'hui"),
        (" as soon as possible", " dès que possible"),
        (" before Friday", " avant vendredi"),
    ]
    rows = []
    for (ve, vf), (ne, nf), (te, tf) in ((v, n, t) for v in verbs for n in nouns for t in tails):
        end_en, end_fr = ("?", " ?") if ve in ("Can you send me", "Where is") else (".", ".")
        rows.append({"source": f"{ve} {ne}{te}{end_en}", "target": f"{vf} {nf}{tf}{end_fr}"})
    rng.shuffle(rows)
    return rows[:150]


def _code(rng: random.Random) -> list[dict[str, str]]:
    tasks = [
        ("return the sum of two numbers", "add", "a, b", "return a + b"),
        ("return the larger of two numbers", "larger", "a, b", "return a if a >= b else b"),
        ("reverse a string", "reverse", "text", "return text[::-1]"),
        (
            "count the vowels in a string",
            "count_vowels",
            "text",
            "return sum(ch in 'aeiouAEIOU' for ch in text)",
        ),
        (
            "keep only the even numbers of a list",
            "evens",
            "numbers",
            "return [n for n in numbers if n % 2 == 0]",
        ),
        (
            "return the average of a list of numbers",
            "average",
            "numbers",
            "return sum(numbers) / len(numbers) if numbers else 0.0",
        ),
        (
            "check whether a string is a palindrome",
            "is_palindrome",
            "text",
            "clean = text.lower()\n    return clean == clean[::-1]",
        ),
        (
            "return the factorial of n",
            "factorial",
            "n",
            "result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
        ),
        ("square every number in a list", "squares", "numbers", "return [n * n for n in numbers]"),
        ("count the words in a sentence", "word_count", "sentence", "return len(sentence.split())"),
        ("return the last element of a list or None", "last", "items", "return items[-1] if items else None"),
        ("join a list of words with commas", "join_words", "words", "return ', '.join(words)"),
    ]
    styles = [
        "Write a Python function that {t}.",
        "In Python, {t}.",
        "Implement a function to {t}.",
        "I need Python code to {t}.",
        "Give me a small function that can {t}.",
    ]
    rows = []
    for t, name, args, body in tasks:
        for style in styles:
            rows.append(
                {
                    "prompt": style.format(t=t),
                    "code": f"def {name}({args}):\n    {body}\n",
                    "language": "Python",
                }
            )
    rng.shuffle(rows)
    return rows


def _domain(rng: random.Random) -> list[dict[str, str]]:
    facts = [
        "Acme Cloud projects live in one region; data never leaves it unless you start a migration.",
        "Every workspace has an owner, admins and members; only the owner can delete the workspace.",
        "API keys are scoped to one project and expire after ninety days unless rotated.",
        "Backups run every night at 02:00 UTC and are kept for thirty days on every paid plan.",
        "The Starter plan includes five seats and ten gigabytes of storage.",
        "Webhooks retry with exponential backoff for up to twenty-four hours.",
        "Audit logs record sign-ins, permission changes and exports for one year.",
        "Single sign-on with SAML is available on the Business and Enterprise plans.",
        "Rate limits are applied per API key: one hundred requests per second by default.",
        "Exports are delivered as a ZIP archive with one CSV file per table.",
        "The status page lists incidents per region together with their timeline.",
        "Invoices are issued on the first day of each month in euros or US dollars.",
    ]
    intros = ["Note:", "Documentation:", "From the admin guide:", "Good to know:", "Policy:", "FAQ:"]
    rows = []
    for _ in range(90):
        picked = rng.sample(facts, 3)
        rows.append({"text": f"{rng.choice(intros)} {' '.join(picked)}"})
    return rows


def _write_jsonl(name: str, rows: list[dict[str, object]] | list[dict[str, str]]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(20261126)
    _write_jsonl("support_chat.jsonl", _support(rng))
    _write_jsonl("summarization.jsonl", _summaries(rng))
    with (HERE / "classification.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(_classes(rng))
    _write_jsonl("translation.jsonl", _translations(rng))
    pq.write_table(pa.Table.from_pylist(_code(rng)), HERE / "code.parquet")
    _write_jsonl("domain.jsonl", _domain(rng))


if __name__ == "__main__":
    main()
