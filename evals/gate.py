"""The promotion gate: challenger vs champion on the same examples, decided with paired bootstrap CIs.

Pass requires every check to pass (the decision also carries every metric's paired delta per slice):
- improvement on each target scope (a suite, or `suite/slice`): the lower end of the CI of
  challenger - champion on the gate metric is above `min_improvement`;
- non-inferiority on each regression scope (each regression suite, and each of its slices): the lower end of
  the CI is at or above `-margin`;
- completeness: both runs answered every example (an endpoint that failed mid-run is not evidence);
- thresholds: the challenger meets the suite's absolute thresholds.
A check with fewer than `min_pairs` paired examples fails for lack of evidence. Decisions use the lower end
of the two-sided interval the report shows, so what a reader sees is exactly what decided.

`GateDecision` is plain data (`to_dict`/`to_json`/`from_dict`) the monitoring loop records as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from evals.compare import paired_deltas
from evals.errors import RunDataError
from evals.metrics import get_metric_class
from evals.results import RunResult, dumps_json
from evals.stats.bootstrap import paired_bootstrap

CheckKind = Literal["improvement", "non_inferiority", "completeness", "threshold"]


@dataclass(frozen=True)
class GatePolicy:
    """What the gate requires. Empty `target`/`regression` mean: use the suites' own `gate.role`."""

    target: tuple[str, ...] = ()
    """Scopes that must improve: "suite" or "suite/slice"."""
    regression: tuple[str, ...] = ()
    """Scopes that must not regress beyond the margin."""
    metric: str | None = None
    """Metric to decide on everywhere (default: each suite's gate metric)."""
    margin: float | None = None
    """Non-inferiority margin in metric units (default: each regression suite's gate.margin)."""
    min_improvement: float | None = None
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0
    regression_per_slice: bool = True
    """Also check every slice of a regression suite on its own."""
    min_pairs: int = 5
    require_complete: bool = True
    check_thresholds: bool = True


@dataclass
class GateCheck:
    """One piece of evidence."""

    kind: CheckKind
    scope: str
    metric: str
    passed: bool
    reason: str
    champion: float | None = None
    challenger: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    n_pairs: int = 0
    bound: float | None = None
    """The value the CI's lower end had to exceed (in 'better' units: sign flipped for lower-is-better)."""
    higher_is_better: bool = True
    prob_improvement: float | None = None
    p_value: float | None = None


@dataclass
class GateDecision:
    """The gate's verdict and all its evidence (JSON-serialisable)."""

    passed: bool
    summary: str
    checks: list[GateCheck]
    champion: dict[str, Any]
    challenger: dict[str, Any]
    policy: dict[str, Any]
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    deltas: list[dict[str, Any]] = field(default_factory=list)
    """Every metric's paired delta with its CI, per suite and slice (evidence beyond the gate metric)."""

    def failed_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return dumps_json(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateDecision:
        checks = [GateCheck(**c) for c in raw.get("checks", [])]
        return cls(**{**raw, "checks": checks})


def _as_list(runs: RunResult | Sequence[RunResult]) -> list[RunResult]:
    return [runs] if isinstance(runs, RunResult) else list(runs)


def _by_suite(runs: list[RunResult], side: str) -> dict[str, RunResult]:
    out: dict[str, RunResult] = {}
    for run in runs:
        if run.suite in out:
            raise RunDataError(f"{side}: two runs of suite {run.suite!r}; pass one run per suite")
        out[run.suite] = run
    return out


def _split_scope(scope: str) -> tuple[str, str | None]:
    suite, _, slice_name = scope.partition("/")
    return suite, (slice_name or None)


def gate(
    champion: RunResult | Sequence[RunResult],
    challenger: RunResult | Sequence[RunResult],
    policy: GatePolicy | None = None,
) -> GateDecision:
    """Decide whether `challenger` may replace `champion` (one run per suite on each side)."""
    policy = policy or GatePolicy()
    champ = _by_suite(_as_list(champion), "champion")
    chall = _by_suite(_as_list(challenger), "challenger")
    missing = sorted(set(champ) ^ set(chall))
    if missing:
        raise RunDataError(
            f"suite(s) {missing} were run for only one side; run both models on the same suites"
        )
    if not champ:
        raise RunDataError("no runs to compare")

    targets = list(policy.target) or [s for s, r in chall.items() if r.gate.get("role") == "target"]
    regressions = list(policy.regression) or [
        s for s, r in chall.items() if r.gate.get("role") == "regression"
    ]
    if not targets:
        raise RunDataError(
            "the gate has no target: pass GatePolicy(target=('suite' or 'suite/slice',)) or include a suite "
            "whose YAML says gate.role: target"
        )
    checks: list[GateCheck] = []
    suites_used = sorted({_split_scope(s)[0] for s in [*targets, *regressions]})
    for suite in suites_used:
        if suite not in chall:
            raise RunDataError(f"gate scope names suite {suite!r}, but no run of it was given")
        if policy.require_complete:
            checks.extend(_completeness(suite, champ[suite], chall[suite]))
        if policy.check_thresholds:
            checks.extend(_thresholds(suite, chall[suite]))
    for scope in targets:
        suite, slice_name = _split_scope(scope)
        run = chall[suite]
        need = (
            policy.min_improvement
            if policy.min_improvement is not None
            else float(run.gate.get("min_improvement", 0.0))
        )
        checks.append(_compare(scope, champ[suite], run, slice_name, "improvement", need, policy))
    for scope in regressions:
        suite, slice_name = _split_scope(scope)
        run = chall[suite]
        margin = policy.margin if policy.margin is not None else float(run.gate.get("margin", 0.02))
        scopes = [(scope, slice_name)]
        if slice_name is None and policy.regression_per_slice:
            scopes += [(f"{suite}/{s}", s) for s in run.slices()]
        for sub_scope, sub_slice in scopes:
            checks.append(
                _compare(sub_scope, champ[suite], run, sub_slice, "non_inferiority", -margin, policy)
            )

    passed = all(c.passed for c in checks)
    deltas = [
        asdict(d)
        for suite in sorted(chall)
        for d in paired_deltas(
            champ[suite],
            chall[suite],
            confidence=policy.confidence,
            n_resamples=policy.n_resamples,
            seed=policy.seed,
        )
    ]
    return GateDecision(
        passed=passed,
        summary=_summary(passed, checks),
        checks=checks,
        champion=_side(champ),
        challenger=_side(chall),
        policy={**asdict(policy), "target": targets, "regression": regressions},
        deltas=deltas,
    )


def _metric_for(run: RunResult, policy: GatePolicy) -> str:
    metric = policy.metric or str(run.gate.get("metric") or run.primary_metric)
    if metric not in run.metric_kinds:
        raise RunDataError(
            f"suite {run.suite!r} has no metric {metric!r} (has: {', '.join(run.metric_kinds)})"
        )
    return metric


def _compare(
    scope: str,
    champion: RunResult,
    challenger: RunResult,
    slice_name: str | None,
    kind: CheckKind,
    bound: float,
    policy: GatePolicy,
) -> GateCheck:
    metric = _metric_for(challenger, policy)
    if champion.metric_kinds.get(metric) != challenger.metric_kinds[metric]:
        raise RunDataError(f"suite {challenger.suite!r}: metric {metric!r} differs between the runs")
    if slice_name is not None and slice_name not in challenger.slices() + champion.slices():
        raise RunDataError(f"scope {scope!r}: suite {challenger.suite!r} has no slice {slice_name!r}")
    higher = challenger.higher_is_better.get(metric, True)
    champ_ids = set(champion.scored_ids(metric, slice_name))
    ids = [i for i in challenger.scored_ids(metric, slice_name) if i in champ_ids]
    base = GateCheck(
        kind=kind,
        scope=scope,
        metric=metric,
        passed=False,
        reason="",
        n_pairs=len(ids),
        bound=bound,
        higher_is_better=higher,
        confidence=policy.confidence,
    )
    if len(ids) < policy.min_pairs:
        base.reason = f"only {len(ids)} paired examples (need {policy.min_pairs}): not enough evidence"
        return base
    statistic = get_metric_class(challenger.metric_kinds[metric]).statistic
    delta = paired_bootstrap(
        champion.metric_rows(metric, ids),
        challenger.metric_rows(metric, ids),
        statistic,
        higher_is_better=higher,
        confidence=policy.confidence,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
    )
    # In "better" units: positive is good whatever the metric's direction.
    better_low = delta.low if higher else -delta.high
    # Improvement must clear its bound strictly; non-inferiority may touch it (identical answers pass).
    passed = bool(better_low > bound) if kind == "improvement" else bool(better_low >= bound)
    verb = "improves" if kind == "improvement" else "stays within margin"
    interval = f"{delta.delta:+.3f} [{delta.low:+.3f}, {delta.high:+.3f}]"
    op = (">" if kind == "improvement" else ">=") if higher else ("<" if kind == "improvement" else "<=")
    requirement = f"lower CI end {op} {bound:+.3f}" if higher else f"upper CI end {op} {-bound:+.3f}"
    reason = (
        f"{verb}: {metric} {interval}, {requirement}"
        if passed
        else f"{'no clear improvement' if kind == 'improvement' else 'regression'}: "
        f"{metric} {interval}, needs {requirement}"
    )
    base.passed = passed
    base.reason = reason
    base.champion, base.challenger, base.delta = delta.baseline, delta.candidate, delta.delta
    base.ci_low, base.ci_high = delta.low, delta.high
    base.prob_improvement, base.p_value = delta.prob_improvement, delta.p_value_no_improvement
    return base


def _completeness(suite: str, champion: RunResult, challenger: RunResult) -> list[GateCheck]:
    checks = []
    for side, run in (("champion", champion), ("challenger", challenger)):
        ok = run.complete and run.n_failed == 0 and run.n_ok == run.planned
        reason = (
            f"{side} answered all {run.planned} examples"
            if ok
            else f"{side} run incomplete: {run.n_ok}/{run.planned} answered"
            + (f" ({run.stop_reason})" if run.stop_reason else "")
        )
        checks.append(
            GateCheck(
                kind="completeness", scope=suite, metric="-", passed=ok, reason=reason, n_pairs=run.n_ok
            )
        )
    return checks


def _thresholds(suite: str, challenger: RunResult) -> list[GateCheck]:
    checks = []
    for metric, result in challenger.threshold_results.items():
        higher = challenger.higher_is_better.get(metric, True)
        op = ">=" if higher else "<="
        checks.append(
            GateCheck(
                kind="threshold",
                scope=suite,
                metric=metric,
                passed=bool(result["passed"]),
                reason=f"challenger {metric} {result['value']:.3f} {op} {result['threshold']:.3f} required",
                challenger=result["value"],
                bound=result["threshold"],
                higher_is_better=higher,
            )
        )
    return checks


def _side(runs: dict[str, RunResult]) -> dict[str, Any]:
    any_run = next(iter(runs.values()))
    return {
        "model": any_run.model,
        "k_shot": any_run.k_shot,
        "runs": {
            suite: {
                "run_id": r.run_id,
                "path": r.path,
                "served_by": r.served_by(),
                "n_ok": r.n_ok,
                "planned": r.planned,
            }
            for suite, r in runs.items()
        },
    }


def _summary(passed: bool, checks: list[GateCheck]) -> str:
    failed = [c for c in checks if not c.passed]
    if passed:
        improved = [c for c in checks if c.kind == "improvement"]
        held = [c for c in checks if c.kind == "non_inferiority"]
        parts = [f"{c.scope} {c.metric} {c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]" for c in improved]
        return f"PASS: improves {'; '.join(parts)}; no regression on {len(held)} scope(s)"
    shown = "; ".join(f"{c.scope}: {c.reason}" for c in failed[:3])
    more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
    return f"FAIL ({len(failed)} of {len(checks)} checks): {shown}{more}"
