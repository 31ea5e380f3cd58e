"""Real MiniLM embeddings of support-desk prompts: a planted topic shift is detected and named, a
re-sample of the same traffic is not."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evals.datasets.support_desk import generate_tickets
from monitoring.drift import check_input_drift
from monitoring.embeddings import EMBEDDING_DIM, encode, get_model, text_cache

pytestmark = pytest.mark.integration

NEW_WORLD = (
    "Does the new Lumen Cam record video at night?",
    "How do I mount my Lumen Cam outdoors?",
    "Is cloud video storage for the Lumen Cam included in Lumen Plus now?",
    "My Lumen Cam motion alerts are not arriving. What should I check?",
    "Can I trade in my old Lumen Strip for the Lumen Strip 2?",
    "Is my Lumen Strip part of the overheating recall?",
    "How do I get the recall replacement for my Lumen Strip?",
    "Can the Lumen Lock open my front door from the app?",
)


def new_world_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    openers = ("", "Hi, ", "Hello! ", "Quick question: ")
    return [f"{rng.choice(openers)}{rng.choice(NEW_WORLD)}".strip() for _ in range(n)]


def test_minilm_embeddings_are_normalised_and_cached() -> None:
    texts = [
        "How long does a refund take?",
        "Which countries do you ship to?",
        "How long does a refund take?",
    ]
    vectors = encode(texts)
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.array_equal(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert get_model() is get_model()
    hits = text_cache.hits
    again = encode(texts[:2])
    assert text_cache.hits == hits + 2 and np.array_equal(again, vectors[:2])
    fresh = encode(texts[:1], cache=False)
    assert np.allclose(fresh[0], vectors[0], atol=1e-5)
    # related questions sit closer than unrelated ones
    a, b, c = encode(
        ["How do I get my money back?", "Can I have a refund?", "Which countries do you ship to?"]
    )
    assert float(a @ b) > float(a @ c)
    assert encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError):
        encode("one string")


def test_topic_shift_is_detected_and_the_new_topic_named() -> None:
    tickets = [
        t.question
        for t in generate_tickets(seed=0, train_variants_per_question=4, test_variants_per_question=4)
    ]
    rng = random.Random(1)
    rng.shuffle(tickets)
    ref, same, base_live = tickets[:150], tickets[150:300], tickets[300:390]
    shifted = base_live + new_world_prompts(60, seed=2)  # 40% of the live window is about new products
    ref_emb = encode(ref)

    calm = check_input_drift(ref, same, ref_embeddings=ref_emb, subject="support@v1", clusters=0)
    assert not calm.drifted and calm.p_value is not None and calm.p_value > 0.01

    report = check_input_drift(ref, shifted, ref_embeddings=ref_emb, subject="support@v1", clusters=8)
    assert report.drifted and report.p_value is not None and report.p_value <= 0.01
    assert report.statistic > report.threshold
    grown = report.top_growing(2)
    assert grown, report.clusters
    top_examples = [e for c in grown for e in c.examples]
    assert (
        sum(any(name in e for name in ("Cam", "recall", "Lock", "Strip 2", "trade in")) for e in top_examples)
        >= 2
    )
    assert grown[0].ref_share < 0.05 < grown[0].live_share
