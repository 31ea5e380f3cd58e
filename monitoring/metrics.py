"""Prometheus metrics of the monitoring loop, on their own CollectorRegistry.

`LoopMetrics` exposes drift statistics and p-values per detector and subject, mean scores and counts
per served version and scorer, the loop state (an enum gauge, seconds in the current state, and a
total per state over completed stays), and trainings started / passed / failed. Its registry is
separate from the serving metrics, so the loop can run in its own process (`serve(port)`) or be merged
into another exporter (`registry`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.metrics import Enum as EnumMetric

from monitoring.drift.base import DriftReport
from monitoring.scorers.batch import ScoreSummary, parse_version_key

__all__ = ["DEFAULT_LOOP_STATES", "LoopMetrics", "TrainingOutcome"]

DEFAULT_LOOP_STATES: tuple[str, ...] = (
    "watching",
    "triggered",
    "dataset_built",
    "training",
    "gating",
    "registered",
    "canary",
    "promoted",
    "rolled_back",
    "backoff",
    "failed",
)
"""State names the loop gauge knows by default (the loop controller may pass its own)."""

TrainingOutcome = Literal["started", "passed", "failed"]


@dataclass(frozen=True)
class _MetricNamespace:
    """Declares metrics under one namespace on one registry (so each declaration states only what differs)."""

    namespace: str
    registry: CollectorRegistry

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, list(labels), namespace=self.namespace, registry=self.registry)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, list(labels), namespace=self.namespace, registry=self.registry)


_DRIFT_LABELS = ("detector", "kind", "subject")
_SCORE_LABELS = ("served_name", "served_version", "scorer")


class LoopMetrics:
    """The loop's metrics. One instance per loop process; every method is thread-safe."""

    # drift, per detector / kind / subject
    drift_statistic: Gauge
    drift_threshold: Gauge
    drift_p_value: Gauge
    drift_detected: Gauge
    drift_checks: Counter
    # scores, per served version and scorer
    score_mean: Gauge
    score_count: Gauge
    scores_written: Counter
    scoring_failures: Counter
    # loop state and trainings
    loop_state: EnumMetric
    state_seconds: Gauge
    state_seconds_total: Counter
    trainings: Counter

    def __init__(
        self,
        *,
        states: Sequence[str] = DEFAULT_LOOP_STATES,
        namespace: str = "tuneloop",
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not states:
            raise ValueError("states must not be empty")
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.states = tuple(states)
        self._clock = clock
        self._lock = threading.Lock()
        declare = _MetricNamespace(namespace, self.registry)
        self._declare_drift(declare)
        self._declare_scores(declare)
        self._declare_loop(declare)
        self._state = self.states[0]
        self._entered = self._clock()
        self.loop_state.state(self._state)
        self.state_seconds.set_function(self._seconds_in_state)

    def _declare_drift(self, declare: _MetricNamespace) -> None:
        """The latest drift check per detector, kind and subject, and checks run."""
        self.drift_statistic = declare.gauge(
            "drift_statistic", "Latest drift statistic (MMD^2, AUC, or drop in mean score)", _DRIFT_LABELS
        )
        self.drift_threshold = declare.gauge(
            "drift_threshold", "Critical value of the latest drift statistic", _DRIFT_LABELS
        )
        self.drift_p_value = declare.gauge(
            "drift_p_value",
            "p-value of the latest drift check (NaN when the detector has none)",
            _DRIFT_LABELS,
        )
        self.drift_detected = declare.gauge(
            "drift_detected",
            "1 when the latest check of this detector and subject found drift",
            _DRIFT_LABELS,
        )
        self.drift_checks = declare.counter("drift_checks", "Drift checks run", ["detector", "kind"])

    def _declare_scores(self, declare: _MetricNamespace) -> None:
        """The latest scoring window per served version and scorer, rows written and failures."""
        self.score_mean = declare.gauge(
            "score_mean", "Mean score over the latest scoring window", _SCORE_LABELS
        )
        self.score_count = declare.gauge(
            "score_count", "Number of scores in the latest scoring window", _SCORE_LABELS
        )
        self.scores_written = declare.counter(
            "scores_written", "Score rows written by the scorers", ["scorer"]
        )
        self.scoring_failures = declare.counter("scoring_failures", "Requests a scorer failed on")

    def _declare_loop(self, declare: _MetricNamespace) -> None:
        """The loop state (enum, seconds in it, totals per state) and trainings by outcome (all 3 shown)."""
        self.loop_state = EnumMetric(
            "loop_state",
            "Current state of the monitoring loop",
            states=list(self.states),
            namespace=declare.namespace,
            registry=declare.registry,
        )
        self.state_seconds = declare.gauge(
            "loop_time_in_state_seconds", "Seconds spent in the current loop state so far"
        )
        self.state_seconds_total = declare.counter(
            "loop_state_seconds", "Seconds spent in each loop state (completed stays)", ["state"]
        )
        self.trainings = declare.counter(
            "trainings", "Trainings by outcome (started, passed the gate, failed)", ["outcome"]
        )
        for outcome in ("started", "passed", "failed"):
            self.trainings.labels(outcome=outcome)

    # ------------------------------------------------------------------ state

    def _seconds_in_state(self) -> float:
        with self._lock:
            return self._clock() - self._entered

    @property
    def state(self) -> str:
        return self._state

    def set_state(self, state: str) -> None:
        """Enter `state` (must be one of `states`); re-entering the current state is a no-op."""
        if state not in self.states:
            raise ValueError(f"unknown loop state {state!r} (known: {', '.join(self.states)})")
        with self._lock:
            if state == self._state:
                return
            now = self._clock()
            self.state_seconds_total.labels(state=self._state).inc(max(0.0, now - self._entered))
            self._state = state
            self._entered = now
            self.loop_state.state(state)

    # ------------------------------------------------------------------ observations

    def observe_drift(self, report: DriftReport) -> None:
        """Record one drift report."""
        labels = {"detector": report.detector, "kind": report.kind, "subject": report.subject or "-"}
        self.drift_statistic.labels(**labels).set(report.statistic)
        self.drift_threshold.labels(**labels).set(report.threshold)
        self.drift_p_value.labels(**labels).set(float("nan") if report.p_value is None else report.p_value)
        self.drift_detected.labels(**labels).set(1.0 if report.drifted else 0.0)
        self.drift_checks.labels(detector=report.detector, kind=report.kind).inc()

    def observe_scores(self, summary: ScoreSummary) -> None:
        """Record a scoring batch: rows written, failures, and the window's means per version and scorer."""
        for scorer, n in summary.written.items():
            if n:
                self.scores_written.labels(scorer=scorer).inc(n)
        if summary.n_failures:
            self.scoring_failures.inc(summary.n_failures)
        for key, scorers in summary.per_version.items():
            name, version = parse_version_key(key)
            for scorer, agg in scorers.items():
                labels = {"served_name": name, "served_version": version or "base", "scorer": scorer}
                self.score_mean.labels(**labels).set(agg.mean)
                self.score_count.labels(**labels).set(agg.n)

    def training(self, outcome: TrainingOutcome) -> None:
        """Count a training event: 'started', 'passed' (the gate accepted it) or 'failed'."""
        if outcome not in ("started", "passed", "failed"):
            raise ValueError(f"training outcome must be started, passed or failed, not {outcome!r}")
        self.trainings.labels(outcome=outcome).inc()

    # ------------------------------------------------------------------ export

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose the registry over HTTP on `addr:port` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
