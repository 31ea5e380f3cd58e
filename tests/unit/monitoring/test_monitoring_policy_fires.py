"""Every shipped policy can fire: on planted drift of realistic size (a new topic is 30 % of the live
prompts; the mean quality score falls from 0.8 to 0.5) its rules trip, and on unchanged traffic they stay
quiet — each detector built the way the loop builds it (`detector_for_threshold`: permutations follow the
p threshold). The false-alarm rate on unchanged traffic is measured over several seeds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from monitoring.drift.base import DriftReport
from monitoring.drift.checks import check_input_drift, check_quality_drift, detector_for_threshold
from monitoring.policy import POLICIES_DIR, LoopState, Outcome, TriggerPolicy, load_policy, policy_names

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DIM = 24
QUIET_SEEDS = range(8)


def topics(rng: np.random.Generator, n_topics: int) -> np.ndarray:
    centres = rng.normal(size=(n_topics, DIM))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def prompts(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """Embedding-like points: a topic centre plus noise, normalised (as sentence embeddings are)."""
    x = centres[rng.integers(len(centres), size=n)] + rng.normal(scale=0.6, size=(n, DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reports_for(policy: TriggerPolicy, seed: int, *, drift: bool) -> list[DriftReport]:
    rng = np.random.default_rng(seed)
    reports: list[DriftReport] = []
    rule = policy.input_drift
    if rule is not None:
        old = topics(rng, 6)
        new = topics(rng, 1)
        n_ref, n_live = max(rule.min_reference_samples, 40), max(rule.min_samples, 40)
        ref = prompts(rng, old, n_ref)
        live = prompts(rng, old, n_live)
        if drift:
            k = int(0.3 * n_live)
            live[:k] = prompts(rng, new, k)
        for name in rule.detectors:
            detector = detector_for_threshold(name, rule.max_p_value)
            reports.append(
                check_input_drift(
                    [], [], detector=detector, ref_embeddings=ref, live_embeddings=live, clusters=0
                )
            )
    qrule = policy.quality_drift
    if qrule is not None:
        n = max(2 * qrule.min_samples, 100)
        before = (rng.random(n) < 0.8).astype(float)
        after = (rng.random(n) < (0.5 if drift else 0.8)).astype(float)
        stream = list(np.concatenate([before, after]))
        scorer = (qrule.scorers or ["reference"])[0]
        for name in qrule.detectors:
            detector = detector_for_threshold(name, qrule.max_p_value)
            reports.append(check_quality_drift(stream, detector=detector, subject=f"support:{scorer}"))
    return reports


def shipped() -> list[str]:
    return policy_names()


def test_the_shipped_policies_are_the_four_documented_ones() -> None:
    assert shipped() == ["default", "demo", "dry_run", "production"]


@pytest.mark.parametrize("name", shipped())
def test_policy_fires_on_planted_drift(name: str) -> None:
    policy = load_policy(POLICIES_DIR / f"{name}.yaml")
    decision = policy.decide(LoopState(), reports_for(policy, seed=100, drift=True), NOW)
    # what tripped is every rule the policy needs; only approval / dry run may hold the trigger back
    assert decision.outcome in (Outcome.FIRE, Outcome.AWAITING_APPROVAL, Outcome.DRY_RUN), decision.reasons
    assert decision.fire or decision.would_fire
    kinds = {t.split("[")[0] for t in decision.tripped}
    if policy.require_all:
        needed = {d for r in (policy.input_drift, policy.quality_drift) if r for d in r.detectors}
        assert kinds & set(policy.input_drift.detectors if policy.input_drift else [])
        assert kinds & set(policy.quality_drift.detectors if policy.quality_drift else [])
        assert kinds <= needed


@pytest.mark.parametrize("name", shipped())
def test_policy_stays_quiet_without_drift(name: str) -> None:
    policy = load_policy(POLICIES_DIR / f"{name}.yaml")
    false_alarms = sum(
        policy.decide(LoopState(), reports_for(policy, seed=seed, drift=False), NOW).outcome
        != Outcome.NO_DRIFT
        for seed in QUIET_SEEDS
    )
    # at p <= 0.01 per detector and two or three detectors per policy, the expected count over 8 seeds is
    # ~0.2; more than one means the thresholds do not hold their false-alarm rate
    assert false_alarms <= 1, f"{name}: {false_alarms} false alarms in {len(QUIET_SEEDS)} quiet windows"


def test_an_unreachable_threshold_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match=r"input_drift.max_p_value: detector 'mmd' cannot reach p <= 1e-06"):
        TriggerPolicy.model_validate({"input_drift": {"detectors": ["mmd"], "max_p_value": 1e-6}})


def test_a_detector_of_the_wrong_kind_or_unknown_is_refused() -> None:
    with pytest.raises(ValueError, match="'adwin' is not an input-drift detector"):
        TriggerPolicy.model_validate({"input_drift": {"detectors": ["adwin"]}})
    with pytest.raises(ValueError, match=r"'page_hinkly' is not a quality-drift detector \(did you mean"):
        TriggerPolicy.model_validate({"quality_drift": {"detectors": ["page_hinkly"]}})


def test_permutations_follow_the_threshold() -> None:
    assert detector_for_threshold("mmd", 0.01).permutations == 300  # type: ignore[attr-defined]
    assert detector_for_threshold("mmd", 0.001).permutations == 2000  # type: ignore[attr-defined]
    # the smallest p the test can report is below the threshold it serves
    det = detector_for_threshold("mmd", 0.001)
    assert 1 / (1 + det.permutations) <= 0.001  # type: ignore[attr-defined]
