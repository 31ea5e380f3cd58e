"""Output-quality drift: change detection on a score stream (ADWIN or Page-Hinkley, from `river`).

A stream is one scorer's scores for one served version, oldest first (`monitoring.store.load_score_stream`).
The detector runs over the whole stream. For each alarm, the change point is located by a one-sided CUSUM
test on the stretch between the previous and the next alarm, and the mean before it is compared with the
mean of everything after it; the alarm with the largest drop is reported: `statistic` = drop in mean
(before - after), `threshold` = `min_drop`, `p_value` = the CUSUM test's p-value. `drifted` needs an
alarm, a drop of at least `min_drop` and p <= alpha: quality that got *better* is reported, never flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from monitoring.drift.base import DriftReport, QualityDriftDetector, ScoreStream, register_detector
from monitoring.errors import DriftInputError

__all__ = ["ADWINDetector", "PageHinkleyDetector", "cusum_drop_test"]


def cusum_drop_test(x: np.ndarray) -> tuple[int, float]:
    """(change index, p-value) of the one-sided CUSUM test for a drop in the mean of `x`.

    The change index maximises |D_t|, D_t = S_t - t * mean(x) (S_t: sum of the first t values); a drop
    makes D_t positive. Under "no change"
    max_t D_t / (sd * sqrt(n)) is the supremum of a Brownian bridge, so P(max > u) = exp(-2 u^2). The
    p-value stays valid although the split was chosen from the data.
    """
    n = len(x)
    if n < 4:
        return n // 2, 1.0
    centred = np.cumsum(x - x.mean())[:-1]
    split = int(np.argmax(np.abs(centred))) + 1  # a rise shows as a valley: located, never significant
    sd = float(x.std(ddof=1))
    if sd <= 0 or centred[split - 1] <= 0:
        return split, 1.0
    u = float(centred[split - 1]) / (sd * np.sqrt(n))
    return split, float(min(1.0, np.exp(-2.0 * u * u)))


class _StreamDetector(QualityDriftDetector):
    """Shared logic: run a river detector, locate the change, compare means before/after."""

    def __init__(self, *, min_drop: float, alpha: float, min_samples: int) -> None:
        if not 0.0 <= min_drop <= 1.0:
            raise ValueError(f"min_drop must be in 0..1, got {min_drop}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.min_drop = min_drop
        self.alpha = alpha
        self.min_samples = min_samples

    def _detector(self) -> Any:
        raise NotImplementedError

    @staticmethod
    def _compare(stream: np.ndarray, start: int, end: int, alarm: int) -> tuple[int, float, float, int, int]:
        """(change index, drop in mean, CUSUM p-value, alarm index, segment start) for one alarm.

        The change is located in `stream[start:end]` (from just after the previous alarm to the next one,
        or to the end); "after" runs to the end of the stream, so a drop that recovered counts for less.
        """
        offset, p_value = cusum_drop_test(stream[start:end])
        split = start + offset
        drop = float(stream[start:split].mean() - stream[split:].mean())
        return split, drop, p_value, alarm, start

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def test(self, scores: ScoreStream, *, reference: ScoreStream | None = None) -> DriftReport:
        live = np.asarray(list(scores), dtype=np.float64)
        base = np.asarray([] if reference is None else list(reference), dtype=np.float64)
        stream = np.concatenate([base, live])
        if not np.isfinite(stream).all():
            raise DriftInputError(f"{self.name}: the score stream contains NaN or inf")
        alarms = self._alarms(stream)
        evidence: dict[str, Any] = {
            "alpha": self.alpha,
            "alarms": alarms,
            "n_stream": len(stream),
            "n_reference_prefix": len(base),
            **self._params(),
        }
        if len(stream) < self.min_samples or not alarms:
            return self._no_change(stream, base, live, evidence)
        return self._largest_drop(stream, alarms, evidence)

    def _alarms(self, stream: np.ndarray) -> list[int]:
        """Where the river detector, run over the whole stream, raised an alarm."""
        detector = self._detector()
        alarms: list[int] = []
        for i, value in enumerate(stream):
            detector.update(float(value))
            if detector.drift_detected:
                alarms.append(i)
        return alarms

    def _no_change(
        self, stream: np.ndarray, base: np.ndarray, live: np.ndarray, evidence: dict[str, Any]
    ) -> DriftReport:
        """The report when there is nothing to test (too few scores, or no alarm): never drifted; the
        statistic is the reference's mean minus the live mean (0 without a reference)."""
        evidence["reason"] = "too few scores" if len(stream) < self.min_samples else "no change detected"
        evidence["mean"] = float(stream.mean()) if len(stream) else float("nan")
        drop = float(base.mean() - live.mean()) if len(base) and len(live) else 0.0
        return self._report(drop, None, len(base), len(live), drifted=False, evidence=evidence)

    def _largest_drop(self, stream: np.ndarray, alarms: list[int], evidence: dict[str, Any]) -> DriftReport:
        """The report of the alarm with the largest drop in mean (the smaller p-value among equal drops)."""
        bounds = [0, *(a + 1 for a in alarms[:-1])]
        ends = [*(a + 1 for a in alarms[1:]), len(stream)]
        candidates = [self._compare(stream, s, e, a) for s, e, a in zip(bounds, ends, alarms, strict=True)]
        split, drop, p_value, last, start = max(candidates, key=lambda c: (c[1], -c[2]))
        before, after = stream[start:split], stream[split:]
        evidence.update(
            {
                "change_index": split,
                "detected_at": last,
                "mean_before": float(before.mean()),
                "mean_after": float(after.mean()),
                "direction": "drop" if drop > 0 else "rise",
            }
        )
        drifted = drop >= self.min_drop and p_value <= self.alpha
        return self._report(drop, p_value, len(before), len(after), drifted=drifted, evidence=evidence)

    def _report(
        self,
        drop: float,
        p_value: float | None,
        n_before: int,
        n_after: int,
        *,
        drifted: bool,
        evidence: dict[str, Any],
    ) -> DriftReport:
        return DriftReport(
            detector=self.name,
            kind=self.kind,
            statistic=drop,
            threshold=self.min_drop,
            p_value=p_value,
            n_ref=n_before,
            n_live=n_after,
            drifted=drifted,
            evidence=evidence,
        )


def _river_drift() -> Any:
    try:
        from river import drift
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DriftInputError("quality drift detection needs the `river` package: pip install river") from exc
    return drift


@register_detector("adwin")
class ADWINDetector(_StreamDetector):
    """ADWIN (adaptive windowing, river) on the score stream."""

    def __init__(
        self,
        *,
        delta: float = 0.002,
        clock: int = 4,
        min_drop: float = 0.05,
        alpha: float = 0.01,
        min_samples: int = 30,
    ) -> None:
        super().__init__(min_drop=min_drop, alpha=alpha, min_samples=min_samples)
        if not 0.0 < delta < 1.0:
            raise ValueError("delta must be in (0, 1)")
        self.delta = delta
        self.clock = clock

    def _detector(self) -> Any:
        return _river_drift().ADWIN(delta=self.delta, clock=self.clock)

    def _params(self) -> dict[str, Any]:
        return {"delta": self.delta, "clock": self.clock}


@register_detector("page_hinkley")
class PageHinkleyDetector(_StreamDetector):
    """Page-Hinkley (river, mode 'down': decreases only) on the score stream."""

    def __init__(
        self,
        *,
        threshold: float = 16.0,
        delta: float = 0.005,
        min_instances: int = 30,
        forgetting: float = 1.0 - 1e-4,
        min_drop: float = 0.05,
        alpha: float = 0.01,
        min_samples: int = 30,
    ) -> None:
        super().__init__(min_drop=min_drop, alpha=alpha, min_samples=min_samples)
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = threshold
        self.delta = delta
        self.min_instances = min_instances
        self.forgetting = forgetting

    def _detector(self) -> Any:
        return _river_drift().PageHinkley(
            min_instances=self.min_instances,
            delta=self.delta,
            threshold=self.threshold,
            alpha=self.forgetting,
            mode="down",
        )

    def _params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "delta": self.delta, "min_instances": self.min_instances}
