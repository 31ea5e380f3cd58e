"""Quality drift on score streams: ADWIN and Page-Hinkley find a planted drop and ignore noise and rises."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitoring.drift import check_quality_drift, quality_detector
from monitoring.drift.quality import cusum_drop_test
from monitoring.errors import DriftInputError


def stream(rng: np.random.Generator, before: float, after: float, n: int = 300) -> np.ndarray:
    return np.concatenate([rng.random(n) < before, rng.random(n) < after]).astype(float)


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_planted_drop_is_detected_near_the_change(detector: str) -> None:
    rng = np.random.default_rng(0)
    hits, latencies = 0, []
    for _ in range(20):
        report = check_quality_drift(
            stream(rng, 0.85, 0.5), detector=detector, subject="support@v1:reference"
        )
        if report.drifted:
            hits += 1
            latencies.append(report.evidence["detected_at"] - 300)
            assert abs(report.evidence["change_index"] - 300) <= 40
            assert report.statistic == pytest.approx(0.35, abs=0.12)
    assert hits >= 19
    assert 0 <= float(np.median(latencies)) <= 150


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_stable_streams_rarely_alarm(detector: str) -> None:
    rng = np.random.default_rng(1)
    alarms = sum(
        check_quality_drift((rng.random(600) < 0.8).astype(float), detector=detector).drifted
        for _ in range(40)
    )
    assert alarms <= 2


def test_a_rise_is_reported_but_not_flagged() -> None:
    rng = np.random.default_rng(2)
    report = check_quality_drift(stream(rng, 0.4, 0.9), detector="adwin")
    assert not report.drifted
    assert report.evidence.get("direction") == "rise" and report.statistic < 0


def test_reference_prefix_and_too_few_scores() -> None:
    rng = np.random.default_rng(3)
    report = check_quality_drift(
        (rng.random(200) < 0.4).astype(float), reference=(rng.random(300) < 0.9).astype(float)
    )
    assert report.drifted and report.evidence["n_reference_prefix"] == 300
    short = check_quality_drift([1.0, 0.0, 1.0])
    assert not short.drifted and short.evidence["reason"] == "too few scores"
    json.dumps(short.to_dict(), allow_nan=False)


def test_bad_input_and_options() -> None:
    with pytest.raises(DriftInputError, match="NaN"):
        check_quality_drift([0.5, float("nan")])
    with pytest.raises(DriftInputError, match="min_drop"):
        quality_detector("adwin", min_drop=2.0)
    with pytest.raises(DriftInputError, match="not a quality detector"):
        quality_detector("mmd")


def test_cusum_drop_test_finds_a_step_and_is_calibrated() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.random(70) < 0.9, rng.random(60) < 0.3]).astype(float)
    split, p = cusum_drop_test(x)
    assert abs(split - 70) <= 5 and p < 1e-6
    assert cusum_drop_test(np.concatenate([np.zeros(30), np.ones(30)]))[1] == 1.0  # a rise is no drop
    null_p = np.array([cusum_drop_test((rng.random(200) < 0.7).astype(float))[1] for _ in range(300)])
    assert float(np.mean(null_p <= 0.05)) <= 0.08
