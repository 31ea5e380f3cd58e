"""Input drift detectors on synthetic Gaussians: calibrated under no drift, powerful under a shift."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from monitoring.drift import (
    ClassifierDetector,
    DriftReport,
    MMDDetector,
    build_detector,
    check_input_drift,
    cluster_shift,
    detector_names,
    input_detector,
    mmd_permutation_test,
)
from monitoring.errors import DriftInputError


def test_registry_names_kinds_and_errors() -> None:
    assert detector_names("input") == ["classifier", "mmd"]
    assert set(detector_names("quality")) == {"adwin", "page_hinkley"}
    assert isinstance(build_detector("mmd", alpha=0.05), MMDDetector)
    with pytest.raises(DriftInputError, match="unknown drift detector 'ks'"):
        build_detector("ks")
    with pytest.raises(DriftInputError, match="unknown option 'perms'"):
        build_detector("mmd", perms=10)
    with pytest.raises(DriftInputError, match="cannot reach p <= alpha"):
        build_detector("mmd", alpha=0.001, permutations=100)
    with pytest.raises(DriftInputError, match="not an input detector"):
        input_detector("adwin")


def test_mmd_p_values_are_calibrated_under_no_drift() -> None:
    """200 no-drift trials: the false-alarm rate stays near alpha and p-values look uniform."""
    rng = np.random.default_rng(7)
    alpha, trials = 0.05, 200
    p_values = []
    for trial in range(trials):
        a = rng.normal(size=(40, 4))
        b = rng.normal(size=(40, 4))
        _, p, _, _ = mmd_permutation_test(a, b, permutations=99, seed=trial)
        p_values.append(p)
    p_arr = np.array(p_values)
    fpr = float(np.mean(p_arr <= alpha))
    assert fpr <= alpha + 0.035  # binomial sd at n=200 is ~0.015
    assert 0.4 < float(np.mean(p_arr)) < 0.6
    assert 0.35 < float(np.mean(p_arr <= 0.5)) < 0.65


def test_mmd_detects_mean_shift_and_reports_threshold() -> None:
    rng = np.random.default_rng(3)
    detector = MMDDetector(alpha=0.01, permutations=200)
    detected = 0
    for trial in range(20):
        report = detector.test(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 0.5, seed=trial)
        detected += report.drifted
        assert (report.statistic > report.threshold) == report.drifted or report.p_value == pytest.approx(
            0.01, abs=0.01
        )
    assert detected >= 19
    report = detector.test(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 0.5)
    assert report.kind == "input" and report.n_ref == 60 and report.n_live == 60
    assert report.evidence["bandwidth"] > 0 and report.statistic > report.evidence["null_mean"]


def test_mmd_detects_a_mixture_shift() -> None:
    """A new mode holding 25% of the live window (what a new topic looks like)."""
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(200, 16))
    live = rng.normal(size=(200, 16))
    live[:50] += 2.0
    assert MMDDetector().test(ref, live).drifted


def test_mmd_subsamples_large_windows() -> None:
    rng = np.random.default_rng(0)
    report = MMDDetector(max_per_window=100, permutations=100, alpha=0.05).test(
        rng.normal(size=(400, 3)), rng.normal(size=(300, 3))
    )
    assert report.n_ref == 400 and report.evidence["subsampled_to"] == [100, 100]


def test_bad_windows_are_rejected_with_the_cause() -> None:
    d = MMDDetector()
    with pytest.raises(DriftInputError, match="dimension mismatch"):
        d.test(np.zeros((30, 3)), np.zeros((30, 4)))
    with pytest.raises(DriftInputError, match="live window has 5 samples"):
        d.test(np.zeros((30, 3)), np.zeros((5, 3)))
    bad = np.zeros((30, 3))
    bad[0, 0] = np.nan
    with pytest.raises(DriftInputError, match="NaN"):
        d.test(bad, np.zeros((30, 3)))


def test_classifier_test_calibration_and_power() -> None:
    rng = np.random.default_rng(5)
    detector = ClassifierDetector(alpha=0.05, folds=3)
    false_alarms = sum(
        detector.test(rng.normal(size=(50, 4)), rng.normal(size=(50, 4)), seed=i).drifted for i in range(20)
    )
    assert false_alarms <= 4  # alpha 0.05 over 20 trials: expected 1
    report = detector.test(rng.normal(size=(80, 4)), rng.normal(size=(80, 4)) + 0.6)
    assert report.drifted and report.statistic > report.threshold > 0.5


def test_cluster_shift_finds_the_grown_topic() -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 16)) * 4
    ref = np.vstack([centres[0] + rng.normal(size=(60, 16)), centres[1] + rng.normal(size=(60, 16))])
    live = np.vstack(
        [
            centres[0] + rng.normal(size=(40, 16)),
            centres[1] + rng.normal(size=(40, 16)),
            centres[2] + rng.normal(size=(40, 16)),
        ]
    )
    ref_texts = [f"refund question {i}" for i in range(60)] + [f"shipping delay {i}" for i in range(60)]
    live_texts = (
        [f"refund question {i}" for i in range(40)]
        + [f"shipping delay {i}" for i in range(40)]
        + [f"x200 warranty claim {i}" for i in range(40)]
    )
    shifts, overall = cluster_shift(ref, live, ref_texts, live_texts, k=3)
    top = shifts[0]
    assert top.ref_share == 0.0 and top.live_share == pytest.approx(1 / 3) and top.p_value < 1e-6
    assert all(t.startswith("x200") for t in top.examples)
    assert "warranty" in top.terms or "x200" in top.terms
    assert overall["chi2_p_value"] < 1e-6
    assert sum(s.n_ref for s in shifts) == 120 and sum(s.n_live for s in shifts) == 120


def test_check_input_drift_with_fake_embedder_and_json_roundtrip() -> None:
    rng = np.random.default_rng(4)
    vocab = {"refund": 0, "shipping": 1, "warranty": 2}

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = rng.normal(scale=0.3, size=(len(texts), 8))
        for i, t in enumerate(texts):
            out[i, vocab[t.split()[0]]] += 3
        return out

    ref = ["refund please"] * 50 + ["shipping late"] * 50
    live = ["refund please"] * 30 + ["shipping late"] * 30 + ["warranty claim"] * 40
    report = check_input_drift(
        ref, live, embedder=embed, subject="support@v1", clusters=3, permutations=100, alpha=0.05
    )
    assert report.drifted and report.subject == "support@v1"
    assert report.top_growing(1)[0].examples[0] == "warranty claim"
    data = json.loads(report.to_json())
    back = DriftReport.from_dict(data)
    assert (
        back.statistic == pytest.approx(report.statistic)
        and back.clusters[0].examples == report.clusters[0].examples
    )
    assert back.created_at == report.created_at
    assert "DRIFT" in report.summary()
    with pytest.raises(DriftInputError, match="2 reference texts but 3"):
        check_input_drift(
            ["a", "b"], ["c"], ref_embeddings=np.zeros((3, 2)), live_embeddings=np.zeros((1, 2))
        )
