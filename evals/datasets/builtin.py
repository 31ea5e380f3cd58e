"""Small, deterministic datasets for the shipped suites of each task type (no downloads).

Hand-written rows (general QA, translation, code problems) and template-generated rows (summaries, styled
replies), each with an id, a slice label and a train/test split. `evals.datasets.build` writes them to
evals/suites/data/*.jsonl; a unit test checks the shipped files match what this module generates.
"""

from __future__ import annotations

import random
from typing import Any

from evals.datasets.support_desk import INTENTS, generate_tickets

Row = dict[str, Any]

GENERAL_QA: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("geography", "What is the capital of France?", "Paris", ()),
    ("geography", "What is the capital of Japan?", "Tokyo", ()),
    ("geography", "What is the capital of Italy?", "Rome", ()),
    ("geography", "What is the capital of Germany?", "Berlin", ()),
    ("geography", "What is the capital of Spain?", "Madrid", ()),
    ("geography", "What is the capital of Canada?", "Ottawa", ()),
    ("geography", "Which ocean lies between Europe and North America?", "Atlantic", ("Atlantic Ocean",)),
    ("geography", "What is the longest river in Africa?", "Nile", ("the Nile",)),
    ("geography", "On which continent is Brazil?", "South America", ()),
    ("geography", "What is the largest country by area?", "Russia", ()),
    ("science", "What gas do plants absorb from the air?", "carbon dioxide", ("CO2",)),
    ("science", "What is the chemical symbol for water?", "H2O", ()),
    ("science", "How many legs does a spider have?", "8", ("eight",)),
    ("science", "What planet is known as the Red Planet?", "Mars", ()),
    ("science", "What is the closest star to Earth?", "Sun", ("the Sun",)),
    ("science", "At what temperature in Celsius does water boil at sea level?", "100", ("100 degrees",)),
    ("science", "What organ pumps blood through the body?", "heart", ()),
    ("science", "What is the chemical symbol for gold?", "Au", ()),
    ("science", "How many planets are in the solar system?", "8", ("eight",)),
    ("science", "What force keeps us on the ground?", "gravity", ()),
    ("arithmetic", "What is 7 plus 5?", "12", ("twelve",)),
    ("arithmetic", "What is 9 times 3?", "27", ()),
    ("arithmetic", "What is 100 minus 45?", "55", ()),
    ("arithmetic", "What is half of 50?", "25", ()),
    ("arithmetic", "How many minutes are in an hour?", "60", ("sixty",)),
    ("arithmetic", "How many days are in a week?", "7", ("seven",)),
    ("arithmetic", "What is 6 times 6?", "36", ()),
    ("arithmetic", "What is 15 divided by 3?", "5", ("five",)),
    ("arithmetic", "How many months are in a year?", "12", ("twelve",)),
    ("arithmetic", "What is 2 to the power of 5?", "32", ()),
)

TRANSLATIONS: tuple[tuple[str, str, str], ...] = (
    ("general", "Good morning.", "Bonjour."),
    ("general", "Thank you very much.", "Merci beaucoup."),
    ("general", "Where is the train station?", "Où est la gare ?"),
    ("general", "I would like a coffee, please.", "Je voudrais un café, s'il vous plaît."),
    ("general", "The cat is sleeping on the bed.", "Le chat dort sur le lit."),
    ("general", "It is raining today.", "Il pleut aujourd'hui."),
    ("general", "My brother lives in Paris.", "Mon frère habite à Paris."),
    ("general", "We are going to the beach tomorrow.", "Nous allons à la plage demain."),
    ("general", "The book is on the table.", "Le livre est sur la table."),
    ("general", "I do not understand.", "Je ne comprends pas."),
    ("general", "How much does this cost?", "Combien ça coûte ?"),
    ("general", "The children are playing in the garden.", "Les enfants jouent dans le jardin."),
    ("support", "Your order has shipped.", "Votre commande a été expédiée."),
    ("support", "Your refund has been processed.", "Votre remboursement a été traité."),
    ("support", "Please restart the device.", "Veuillez redémarrer l'appareil."),
    ("support", "We are sorry for the delay.", "Nous sommes désolés pour le retard."),
    ("support", "Your password has been changed.", "Votre mot de passe a été modifié."),
    ("support", "The package will arrive on Monday.", "Le colis arrivera lundi."),
    ("support", "Thank you for your patience.", "Merci de votre patience."),
    ("support", "Please check your email.", "Veuillez vérifier votre e-mail."),
    ("support", "Your account is now active.", "Votre compte est maintenant actif."),
    ("support", "The light does not turn on.", "La lampe ne s'allume pas."),
    ("support", "Can I help you with anything else?", "Puis-je vous aider avec autre chose ?"),
    (
        "support",
        "Your subscription will renew next month.",
        "Votre abonnement sera renouvelé le mois prochain.",
    ),
)

CODE_PROBLEMS: tuple[tuple[str, str, str, str], ...] = (
    (
        "math",
        "add",
        "Write a Python function `add(a, b)` that returns the sum of a and b.",
        "assert add(2, 3) == 5\nassert add(-1, 1) == 0",
    ),
    (
        "math",
        "is_even",
        "Write a Python function `is_even(n)` that returns True if n is even, else False.",
        "assert is_even(4)\nassert not is_even(7)\nassert is_even(0)",
    ),
    (
        "math",
        "square",
        "Write a Python function `square(x)` that returns x squared.",
        "assert square(3) == 9\nassert square(-4) == 16",
    ),
    (
        "math",
        "maximum",
        "Write a Python function `maximum(a, b)` that returns the larger of a and b.",
        "assert maximum(3, 8) == 8\nassert maximum(5, 2) == 5",
    ),
    (
        "math",
        "factorial",
        "Write a Python function `factorial(n)` that returns n! for n >= 0.",
        "assert factorial(0) == 1\nassert factorial(5) == 120",
    ),
    (
        "math",
        "absolute",
        "Write a Python function `absolute(x)` that returns the absolute value of x.",
        "assert absolute(-3) == 3\nassert absolute(2) == 2",
    ),
    (
        "math",
        "average",
        "Write a Python function `average(xs)` that returns the mean of a non-empty list.",
        "assert average([1, 2, 3]) == 2\nassert average([4]) == 4",
    ),
    (
        "math",
        "is_prime",
        "Write a Python function `is_prime(n)` that returns True if n is a prime number.",
        "assert is_prime(7)\nassert not is_prime(9)\nassert not is_prime(1)\nassert is_prime(2)",
    ),
    (
        "strings",
        "reverse",
        "Write a Python function `reverse(s)` that returns the string s reversed.",
        "assert reverse('abc') == 'cba'\nassert reverse('') == ''",
    ),
    (
        "strings",
        "shout",
        "Write a Python function `shout(s)` that returns s in upper case.",
        "assert shout('hi') == 'HI'",
    ),
    (
        "strings",
        "count_vowels",
        "Write a Python function `count_vowels(s)` that counts the vowels (aeiou) in s.",
        "assert count_vowels('banana') == 3\nassert count_vowels('xyz') == 0",
    ),
    (
        "strings",
        "is_palindrome",
        "Write a Python function `is_palindrome(s)` that returns True if s reads the same backwards.",
        "assert is_palindrome('level')\nassert not is_palindrome('lamp')",
    ),
    (
        "strings",
        "first_word",
        "Write a Python function `first_word(s)` that returns the first word of a sentence.",
        "assert first_word('hello big world') == 'hello'",
    ),
    (
        "strings",
        "greet",
        "Write a Python function `greet(name)` that returns 'Hello, <name>!'.",
        "assert greet('Ada') == 'Hello, Ada!'",
    ),
    (
        "strings",
        "word_count",
        "Write a Python function `word_count(s)` that returns the number of words in s.",
        "assert word_count('one two three') == 3\nassert word_count('') == 0",
    ),
    (
        "strings",
        "capitalize_words",
        "Write a Python function `capitalize_words(s)` that capitalises each word.",
        "assert capitalize_words('smart lamp') == 'Smart Lamp'",
    ),
    (
        "lists",
        "total",
        "Write a Python function `total(xs)` that returns the sum of a list of numbers.",
        "assert total([1, 2, 3]) == 6\nassert total([]) == 0",
    ),
    (
        "lists",
        "evens",
        "Write a Python function `evens(xs)` that returns the even numbers of xs in order.",
        "assert evens([1, 2, 3, 4]) == [2, 4]",
    ),
    (
        "lists",
        "last",
        "Write a Python function `last(xs)` that returns the last element of a non-empty list.",
        "assert last([1, 2, 3]) == 3",
    ),
    (
        "lists",
        "unique",
        "Write a Python function `unique(xs)` that returns xs without duplicates, "
        "keeping first occurrences in order.",
        "assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]",
    ),
    (
        "lists",
        "flatten",
        "Write a Python function `flatten(xss)` that flattens a list of lists one level.",
        "assert flatten([[1, 2], [3], []]) == [1, 2, 3]",
    ),
    (
        "lists",
        "smallest",
        "Write a Python function `smallest(xs)` that returns the smallest number in a non-empty list.",
        "assert smallest([4, 2, 9]) == 2",
    ),
    (
        "lists",
        "count_items",
        "Write a Python function `count_items(xs, x)` that counts how often x occurs in xs.",
        "assert count_items([1, 2, 1, 1], 1) == 3\nassert count_items([], 5) == 0",
    ),
    (
        "lists",
        "double_all",
        "Write a Python function `double_all(xs)` that returns a list with every number doubled.",
        "assert double_all([1, 2, 3]) == [2, 4, 6]",
    ),
)

_SUMMARY_KINDS = {
    "announcement": (
        "Lumen Home announced on {day} that the {product} will {change} starting {month}. "
        "The company said the change follows requests from {who}. "
        "Existing owners get the update automatically "
        "through the app, and no action is needed. Support staff were briefed the same week.",
        "The {product} will {change} from {month}, applied automatically.",
    ),
    "incident": (
        "On {day}, some {product} owners could not {action} for about {hours} hours. "
        "The cause was a faulty server update, which engineers rolled back. "
        "Lumen Home apologised to {who} and said no data was lost.",
        "A faulty update stopped {product} owners from being able to {action} for {hours} hours; "
        "it was rolled back.",
    ),
    "policy": (
        "From {month}, Lumen Home will {policy}. The company explained that {reason}. "
        "Customers who bought before the change keep the old terms. "
        "Questions go to the support desk as usual.",
        "From {month}, Lumen Home will {policy}; earlier buyers keep the old terms.",
    ),
}
_SUMMARY_FILL = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "product": ("Lumen Bulb", "Lumen Strip", "Lumen Hub"),
    "change": ("support voice control", "dim more smoothly", "use less power in standby", "sync with music"),
    "month": ("March", "April", "June", "September", "November"),
    "who": ("long-time customers", "families", "small businesses", "reviewers"),
    "action": ("turn on their lights", "change colours", "use schedules", "log in to the app"),
    "hours": ("two", "three", "four", "six"),
    "policy": (
        "extend the warranty to three years",
        "offer free express shipping on large orders",
        "accept returns for 45 days",
        "bill Lumen Plus yearly at a discount",
    ),
    "reason": (
        "customers asked for it",
        "returns have fallen",
        "it simplifies billing",
        "shipping costs dropped",
    ),
}

_STYLES = {
    "friendly": "warm and friendly, with a casual tone",
    "formal": "formal and polite, without contractions",
    "apologetic": "apologetic and empathetic, taking responsibility",
    "concise": "as short as possible, at most 20 words",
}
_SITUATIONS = (
    "received a Lumen Bulb that flickers",
    "is waiting for a refund that is two days late",
    "was charged twice for Lumen Plus",
    "cannot connect the Lumen Hub to Wi-Fi",
    "wants to know when their Lumen Strip will arrive",
)


def general_qa_rows() -> list[Row]:
    rows = []
    for i, (topic, question, answer, aliases) in enumerate(GENERAL_QA):
        rows.append(
            {
                "id": f"qa-{i:02d}",
                "topic": topic,
                "question": question,
                "answer": answer,
                "aliases": list(aliases),
                "split": "train" if i % 5 == 4 else "test",
            }
        )
    return rows


def translation_rows() -> list[Row]:
    return [
        {
            "id": f"tr-{i:02d}",
            "domain": domain,
            "english": en,
            "french": fr,
            "split": "train" if i % 6 == 5 else "test",
        }
        for i, (domain, en, fr) in enumerate(TRANSLATIONS)
    ]


def code_rows() -> list[Row]:
    return [
        {
            "id": f"code-{name}",
            "topic": topic,
            "function": name,
            "problem": problem,
            "tests": tests,
            "solution_hint": "",
            "split": "test",
        }
        for topic, name, problem, tests in CODE_PROBLEMS
    ]


def summarization_rows(seed: int = 0, per_kind: int = 10) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for kind, (passage, summary) in _SUMMARY_KINDS.items():
        for i in range(per_kind):
            fill = {key: rng.choice(values) for key, values in _SUMMARY_FILL.items()}
            rows.append(
                {
                    "id": f"sum-{kind}-{i:02d}",
                    "kind": kind,
                    "passage": passage.format(**fill),
                    "summary": summary.format(**fill),
                    "split": "train" if i % 5 == 4 else "test",
                }
            )
    return rows


def styled_rows() -> list[Row]:
    rows = []
    for style, description in _STYLES.items():
        for i, situation in enumerate(_SITUATIONS):
            rows.append(
                {
                    "id": f"style-{style}-{i}",
                    "style": style,
                    "style_description": description,
                    "situation": situation,
                    "split": "test",
                }
            )
    return rows


def intent_rows(seed: int = 0) -> list[Row]:
    """Intent classification: support questions labelled with their intent (test variant 0 only)."""
    rows = []
    for ticket in generate_tickets(seed=seed):
        if ticket.split == "test" and not ticket.id.endswith("-0"):
            continue
        rows.append(
            {"id": ticket.id, "text": ticket.question, "intent": ticket.intent, "split": ticket.split}
        )
    return rows


def support_target_rows(seed: int = 0, intent: str = "refunds") -> list[Row]:
    """The target slice: every ticket of one intent (test rows evaluated, train rows for k-shot)."""
    return [t.to_row() for t in generate_tickets(seed=seed, intents=[intent])]


def support_regression_rows(seed: int = 0, exclude: str = "refunds") -> list[Row]:
    """Regression: other intents' test questions (every variant: a non-inferiority check needs pairs)
    plus a few general questions."""
    rows: list[Row] = []
    others = [i for i in INTENTS if i != exclude]
    for ticket in generate_tickets(seed=seed, intents=others):
        if ticket.split == "test":
            rows.append(ticket.to_row())
    for row in general_qa_rows()[:10]:
        if row["split"] == "test":
            rows.append(
                {
                    "id": row["id"],
                    "intent": "general",
                    "question": row["question"],
                    "answer": row["answer"],
                    "key_fact": row["answer"],
                    "split": "test",
                }
            )
    return rows
