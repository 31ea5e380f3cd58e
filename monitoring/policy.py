"""The trigger policy: when drift reports justify starting a retraining, validated from YAML.

`TriggerPolicy` (pydantic, unknown keys rejected) holds the thresholds (input-drift p-value / statistic,
quality drop), minimum sample counts, a cooldown, a cap on trainings per rolling 24 hours, a compute
budget (training minutes per rolling 24 hours), a manual-approval flag and a dry-run switch.
`decide(policy, state, reports, now)` is a pure function: the same inputs give the same
`TriggerDecision`, which says whether to fire, and why (or why not).

Checks run in this order, and the first that blocks names the outcome: no report trips a threshold
(`no_drift`; reports with too few samples are listed as `insufficient_samples`) -> a training is already
running -> cooldown since the last trigger -> trainings in the last 24 h -> training minutes in the
last 24 h (including the estimate for this one) -> manual approval -> dry run -> `fire`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.settings import did_you_mean, load_config_file
from monitoring.drift.base import DriftReport
from monitoring.errors import PolicyError

__all__ = [
    "BudgetPolicy",
    "InputDriftRule",
    "LoopState",
    "Outcome",
    "QualityDriftRule",
    "TrainingRecord",
    "TriggerDecision",
    "TriggerPolicy",
    "decide",
    "load_policy",
    "policy_names",
]

DAY = timedelta(hours=24)
POLICIES_DIR = Path(__file__).parent / "policies"
"""The shipped policies; a loop spec names one by its file stem (`policy: production`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class InputDriftRule(_Strict):
    """When an input-drift report trips."""

    detectors: list[str] = Field(default_factory=lambda: ["mmd"])
    """Input detectors that run on the prompt embeddings (`mmd`, `classifier`); each can trip."""
    max_p_value: float | None = Field(default=0.01, gt=0, lt=1)
    """Trip when p <= this (None: the detector's own verdict at alpha 0.01). Permutation tests run
    2/max_p_value permutations (at least 300) so the threshold is reachable."""
    min_statistic: dict[str, float] = Field(default_factory=dict)
    """Per detector, also require statistic >= this (e.g. `{mmd: 0.002, classifier: 0.6}`: an effect size,
    so a very large window cannot trip on a negligible shift)."""
    min_samples: int = Field(default=200, ge=1)
    """Live prompts a report needs before it may trip."""
    min_reference_samples: int = Field(default=100, ge=1)
    """Reference prompts a report needs before it may trip."""


class QualityDriftRule(_Strict):
    """When a quality-drift report (score-stream change) trips."""

    detectors: list[str] = Field(default_factory=lambda: ["adwin", "page_hinkley"])
    """Change detectors that run on each watched score stream (`adwin`, `page_hinkley`); each can trip."""
    scorers: list[str] | None = None
    """Only reports whose subject ends with `:<scorer>` for one of these (None: any scorer)."""
    min_drop: float = Field(default=0.1, ge=0, le=1)
    """Trip when the mean score dropped by at least this much."""
    max_p_value: float | None = Field(default=0.01, gt=0, lt=1)
    """Also require the drop's p-value (scores before vs after the change) to be <= this."""
    min_samples: int = Field(default=50, ge=1)
    """Scores after the change point a report needs before it may trip."""


class BudgetPolicy(_Strict):
    """Compute budget per rolling 24 hours."""

    max_training_minutes_per_day: float = Field(default=120.0, gt=0)
    """Training minutes allowed per rolling 24 hours."""
    estimated_training_minutes: float = Field(default=15.0, gt=0)
    """What one training is expected to cost (for runs still in progress and the one about to start)."""


class TriggerPolicy(_Strict):
    """Everything that decides whether drift starts a retraining."""

    name: str = "default"
    """A label for events and reports."""
    input_drift: InputDriftRule | None = InputDriftRule()
    """None: input drift never triggers."""
    quality_drift: QualityDriftRule | None = QualityDriftRule()
    """None: quality drift never triggers."""
    require_all: bool = False
    """True: input AND quality drift must both trip (when both rules are set); False: either."""
    cooldown_minutes: float = Field(default=60.0, ge=0)
    """Minimum time between two triggers."""
    max_trainings_per_day: int = Field(default=4, ge=0)
    """Trainings allowed per rolling 24 hours."""
    budget: BudgetPolicy = BudgetPolicy()
    """Compute budget."""
    require_approval: bool = False
    """A human must approve (`LoopState.approved`) before a trigger fires."""
    dry_run: bool = False
    """Decide and report, never fire."""

    @model_validator(mode="after")
    def _some_rule(self) -> TriggerPolicy:
        if self.input_drift is None and self.quality_drift is None:
            raise ValueError("a policy needs input_drift or quality_drift (or both)")
        return self

    @model_validator(mode="after")
    def _detectors_can_fire(self) -> TriggerPolicy:
        """Every detector a rule names exists, is of the rule's kind and can reach the rule's threshold."""
        from monitoring.drift.base import detector_names
        from monitoring.drift.checks import detector_for_threshold
        from monitoring.errors import DriftInputError

        for kind, rule in (("input", self.input_drift), ("quality", self.quality_drift)):
            if rule is None:
                continue
            if not rule.detectors:
                raise ValueError(f"{kind}_drift.detectors: name at least one detector")
            known = detector_names(kind)  # type: ignore[arg-type]
            for name in rule.detectors:
                if name not in known:
                    raise ValueError(
                        f"{kind}_drift.detectors: {name!r} is not {'an' if kind == 'input' else 'a'} "
                        f"{kind}-drift detector"
                        f"{did_you_mean(name, known)} (known: {', '.join(known)})"
                    )
                try:
                    detector_for_threshold(name, rule.max_p_value)
                except DriftInputError as exc:
                    raise ValueError(f"{kind}_drift.max_p_value: {exc}") from None
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> TriggerPolicy:
        return load_policy(path)

    def decide(self, state: LoopState, reports: Sequence[DriftReport], now: datetime) -> TriggerDecision:
        return decide(self, state, reports, now)


class TrainingRecord(_Strict):
    """A training the loop started (for the daily cap and the budget)."""

    started_at: datetime
    minutes: float | None = None
    """Compute minutes used; None while running (the budget counts the estimate)."""

    @field_validator("started_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("started_at must be timezone-aware (UTC)")
        return value


class LoopState(_Strict):
    """What the policy needs to know about the loop's recent history."""

    last_triggered_at: datetime | None = None
    trainings: list[TrainingRecord] = Field(default_factory=list)
    training_in_progress: bool = False
    approved: bool = False
    """A human approved the pending trigger (used when the policy requires approval)."""

    @field_validator("last_triggered_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("last_triggered_at must be timezone-aware (UTC)")
        return value


class Outcome(StrEnum):
    """What `decide` concluded (exactly one)."""

    FIRE = "fire"
    NO_DRIFT = "no_drift"
    INSUFFICIENT_SAMPLES = "insufficient_samples"
    TRAINING_IN_PROGRESS = "training_in_progress"
    COOLDOWN = "cooldown"
    DAILY_LIMIT = "daily_limit"
    BUDGET_EXHAUSTED = "budget_exhausted"
    AWAITING_APPROVAL = "awaiting_approval"
    DRY_RUN = "dry_run"


class TriggerDecision(_Strict):
    """Whether to start a retraining now, and the reasons."""

    fire: bool
    outcome: Outcome
    reasons: list[str]
    """Human-readable lines: what tripped, and what blocked (if anything)."""
    tripped: list[str] = Field(default_factory=list)
    """Subjects/detectors of the reports that tripped a threshold."""
    retry_after: datetime | None = None
    """When a time-based block (cooldown, daily cap, budget) lifts, if known."""
    would_fire: bool = False
    """True when only the dry run (or a missing approval) kept it from firing."""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_policy(path: str | Path) -> TriggerPolicy:
    """A policy from a YAML file; a PolicyError names the file and every bad field."""
    return load_config_file(TriggerPolicy, path, what="policy", error=PolicyError)


def policy_names() -> list[str]:
    """The shipped policies (`monitoring/policies/<name>.yaml`), by name."""
    return sorted(p.stem for p in POLICIES_DIR.glob("*.yaml"))


def _label(report: DriftReport) -> str:
    return f"{report.detector}[{report.subject}]" if report.subject else report.detector


def _input_trips(rule: InputDriftRule, report: DriftReport) -> tuple[bool, str | None, str]:
    """(trips, too-few-samples reason or None, description)."""
    label = _label(report)
    if report.n_live < rule.min_samples or report.n_ref < rule.min_reference_samples:
        return (
            False,
            (
                f"{label}: {report.n_live} live / {report.n_ref} reference samples, need "
                f"{rule.min_samples} / {rule.min_reference_samples}"
            ),
            "",
        )
    if rule.max_p_value is not None:
        tripped = report.p_value is not None and report.p_value <= rule.max_p_value
        why = f"p={report.p_value} <= {rule.max_p_value}" if tripped else ""
    else:
        tripped = report.drifted
        why = "detector verdict: drifted" if tripped else ""
    floor = rule.min_statistic.get(report.detector)
    if tripped and floor is not None:
        tripped = report.statistic >= floor
        why += f", statistic {report.statistic:.4g} >= {floor}"
    return tripped, None, f"input drift {label}: {why}"


def _quality_trips(rule: QualityDriftRule, report: DriftReport) -> tuple[bool, str | None, str]:
    label = _label(report)
    if rule.scorers is not None and not any(report.subject.endswith(f":{s}") for s in rule.scorers):
        return False, None, ""
    if report.n_live < rule.min_samples:
        return False, f"{label}: {report.n_live} scores after the change, need {rule.min_samples}", ""
    alarm = bool(report.evidence.get("alarms")) or report.drifted
    tripped = alarm and report.statistic >= rule.min_drop
    if tripped and rule.max_p_value is not None:
        tripped = report.p_value is not None and report.p_value <= rule.max_p_value
    why = f"mean score dropped by {report.statistic:.3f} >= {rule.min_drop} (p={report.p_value})"
    return tripped, None, f"quality drift {label}: {why}"


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def decide(
    policy: TriggerPolicy, state: LoopState, reports: Sequence[DriftReport], now: datetime
) -> TriggerDecision:
    """Whether the reports justify starting a retraining now under `policy` (pure: no I/O, no clock)."""
    now = _aware(now)
    input_hits: list[str] = []
    quality_hits: list[str] = []
    tripped: list[str] = []
    short: list[str] = []
    for report in reports:
        if report.kind == "input" and policy.input_drift and report.detector in policy.input_drift.detectors:
            hit, too_few, why = _input_trips(policy.input_drift, report)
            target = input_hits
        elif (
            report.kind == "quality"
            and policy.quality_drift
            and report.detector in policy.quality_drift.detectors
        ):
            hit, too_few, why = _quality_trips(policy.quality_drift, report)
            target = quality_hits
        else:
            continue
        if too_few:
            short.append(too_few)
        if hit:
            target.append(why)
            tripped.append(_label(report))
    both_rules = policy.input_drift is not None and policy.quality_drift is not None
    if policy.require_all and both_rules:
        triggered = bool(input_hits) and bool(quality_hits)
    else:
        triggered = bool(input_hits) or bool(quality_hits)
    hits = input_hits + quality_hits
    if not triggered:
        if short and not hits:
            return TriggerDecision(fire=False, outcome=Outcome.INSUFFICIENT_SAMPLES, reasons=short)
        reasons = hits + short or ["no report crossed a threshold"]
        if policy.require_all and hits:
            reasons.append("policy requires both input and quality drift")
        return TriggerDecision(fire=False, outcome=Outcome.NO_DRIFT, reasons=reasons, tripped=tripped)

    def blocked(
        outcome: Outcome, why: str, retry_after: datetime | None = None, would_fire: bool = False
    ) -> TriggerDecision:
        return TriggerDecision(
            fire=False,
            outcome=outcome,
            reasons=[*hits, why],
            tripped=tripped,
            retry_after=retry_after,
            would_fire=would_fire,
        )

    if state.training_in_progress:
        return blocked(Outcome.TRAINING_IN_PROGRESS, "a training is already in progress")
    if state.last_triggered_at is not None:
        until = state.last_triggered_at.astimezone(UTC) + timedelta(minutes=policy.cooldown_minutes)
        if now < until:
            return blocked(
                Outcome.COOLDOWN,
                f"cooldown of {policy.cooldown_minutes:g} min lasts until {until.isoformat()}",
                until,
            )
    recent = sorted(
        (t for t in state.trainings if now - DAY < t.started_at.astimezone(UTC) <= now),
        key=lambda t: t.started_at,
    )
    if len(recent) >= policy.max_trainings_per_day:
        lifts = None
        if policy.max_trainings_per_day > 0:
            lifts = recent[len(recent) - policy.max_trainings_per_day].started_at.astimezone(UTC) + DAY
        return blocked(
            Outcome.DAILY_LIMIT,
            f"{len(recent)} trainings in the last 24 h, the limit is {policy.max_trainings_per_day}",
            lifts,
        )
    budget = policy.budget
    used = sum(t.minutes if t.minutes is not None else budget.estimated_training_minutes for t in recent)
    if used + budget.estimated_training_minutes > budget.max_training_minutes_per_day:
        lifts = recent[0].started_at.astimezone(UTC) + DAY if recent else None
        return blocked(
            Outcome.BUDGET_EXHAUSTED,
            f"{used:g} training minutes used in the last 24 h + "
            f"{budget.estimated_training_minutes:g} estimated > budget "
            f"{budget.max_training_minutes_per_day:g}",
            lifts,
        )
    if policy.require_approval and not state.approved:
        return blocked(Outcome.AWAITING_APPROVAL, "the policy requires manual approval", would_fire=True)
    if policy.dry_run:
        return blocked(Outcome.DRY_RUN, "dry run: would fire", would_fire=True)
    return TriggerDecision(fire=True, outcome=Outcome.FIRE, reasons=hits, tripped=tripped)
