"""Live A/B statistics from the request log: per-arm outcomes, tests, sequential decision, SRM, sample size.

Reads the `requests`, `feedback` and (optional) `scores` tables with SQLAlchemy reflection (SQLite or
Postgres; never imports serving). Shadow copies (`shadow_of` set) are not traffic and are left out.

Per arm: requests, error rate, feedback rate, thumbs-up rate, mean rating, mean score per scorer, latency
(mean/p50/p95), time to first token, tokens. Each treatment arm is compared with the control arm:
rates with a two-proportion z-test (Fisher's exact test when counts are small), continuous outcomes with
Mann-Whitney U and a bootstrap CI of the mean difference, and every outcome also with the always-valid mSPRT
(so looking at the report daily does not inflate false positives). A chi-square sample-ratio-mismatch check
guards the assignment itself, and a sample-size estimate says how long to keep going when nothing is
significant yet.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from common.db import make_engine
from common.log_schema import log_tables
from evals.errors import ExperimentDataError
from evals.results import dumps_json
from evals.stats.fixed_horizon import (
    SrmCheck,
    mean_difference_test,
    sample_ratio_mismatch,
    sample_size_means,
    sample_size_proportions,
    two_proportion_test,
)
from evals.stats.sequential import SequentialResult, msprt

CONTROL_NAMES = ("champion", "control", "baseline", "a", "A")


@dataclass(frozen=True)
class OutcomeSpec:
    """An outcome measured per request."""

    name: str
    kind: str
    """'rate' (0/1 per request) or 'mean' (a number per request)."""
    higher_is_better: bool | None
    """None: descriptive only (no better/worse verdict)."""
    description: str


@dataclass
class ExperimentData:
    """One experiment's requests as per-request arrays, in arrival order."""

    experiment: str
    request_ids: list[str]
    arms: np.ndarray
    created_at: list[datetime]
    outcomes: dict[str, np.ndarray]
    """Per-request values (NaN where the outcome does not apply to that request)."""
    specs: dict[str, OutcomeSpec]
    served: list[str]

    def arm_names(self) -> list[str]:
        return sorted(set(self.arms.tolist()))


@dataclass
class ArmSummary:
    arm: str
    requests: int
    share: float
    served: dict[str, int]
    values: dict[str, float]
    """Outcome means/rates plus latency percentiles."""
    counts: dict[str, int]
    """Observations behind each value."""


@dataclass
class OutcomeComparison:
    outcome: str
    kind: str
    higher_is_better: bool | None
    control: float
    treatment: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n_control: int
    n_treatment: int
    sequential_p: float
    sequential_low: float
    sequential_high: float
    sequential_rejected: bool
    verdict: str


@dataclass
class ArmComparison:
    arm: str
    control: str
    outcomes: list[OutcomeComparison]
    sample_size: dict[str, Any] | None = None


@dataclass
class CumulativePath:
    """Downsampled sequential path of the primary outcome (for the cumulative-effect plot)."""

    arm: str
    outcome: str
    n_total: list[int]
    estimate: list[float]
    low: list[float]
    high: list[float]
    p_value: list[float]


@dataclass
class ABReport:
    """Everything `tuneloop ab report` shows; JSON-serialisable (raw per-request arrays stay out)."""

    experiment: str
    generated_at: str
    first_request: str | None
    last_request: str | None
    control: str
    primary: str | None
    arms: list[ArmSummary]
    comparisons: list[ArmComparison]
    srm: dict[str, Any] | None
    recommendation: str
    problems: list[str] = field(default_factory=list)
    alpha: float = 0.05
    paths: list[CumulativePath] = field(default_factory=list)
    distributions: dict[str, dict[str, list[float]]] = field(default_factory=dict, repr=False)
    """outcome -> arm -> values, for plots only (not in to_dict)."""

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw.pop("distributions")
        return raw

    def to_json(self, indent: int | None = 2) -> str:
        return dumps_json(self.to_dict(), indent=indent)


# ---------------------------------------------------------------- loading


def _engine(db: str | Engine) -> Engine:
    return make_engine(db) if isinstance(db, str) else db


def list_experiments(db: str | Engine) -> dict[str, int]:
    """Experiments in the request log with their request counts."""
    engine = _engine(db)
    tables = _reflect(engine)
    requests = tables["requests"]
    query = (
        sa.select(requests.c.experiment, sa.func.count())
        .where(requests.c.experiment.is_not(None))
        .group_by(requests.c.experiment)
    )
    with engine.connect() as conn:
        return {str(name): int(count) for name, count in conn.execute(query)}


def _reflect(engine: Engine) -> dict[str, sa.Table]:
    """The log tables (`common.log_schema`), after checking the database holds a request log."""
    try:
        present = set(sa.inspect(engine).get_table_names())
    except sa.exc.OperationalError as exc:
        raise ExperimentDataError(f"cannot read the request log at {engine.url!r}: {exc.orig}") from exc
    if "requests" not in present:
        raise ExperimentDataError(
            f"no `requests` table in {engine.url!r}: is this tuneloop's request log database?"
        )
    return {table.name: table for table in log_tables if table.name in present}


def _db_time(value: datetime) -> datetime:
    # a naive bound is taken as UTC; the column type stores UTC on every backend.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def load_experiment(
    db: str | Engine, experiment: str, *, since: datetime | None = None, until: datetime | None = None
) -> ExperimentData:
    """Read one experiment's traffic, feedback and scores from the request log."""
    engine = _engine(db)
    tables = _reflect(engine)
    req = tables["requests"]
    where = [req.c.experiment == experiment, req.c.shadow_of.is_(None)]
    if since is not None:
        where.append(req.c.created_at >= _db_time(since))
    if until is not None:
        where.append(req.c.created_at < _db_time(until))
    columns = [
        req.c.id,
        req.c.created_at,
        req.c.arm,
        req.c.served_name,
        req.c.served_version,
        req.c.status_code,
        req.c.error,
        req.c.latency_ms,
        req.c.ttft_ms,
        req.c.prompt_tokens,
        req.c.completion_tokens,
    ]
    feedback: dict[str, list[tuple[Any, float | None, int | None]]] = defaultdict(list)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).where(*where).order_by(req.c.created_at, req.c.id)).all()
        ids_subquery = sa.select(req.c.id).where(*where).scalar_subquery()
        if "feedback" in tables:
            fb = tables["feedback"]
            for request_id, created, rating, thumbs in conn.execute(
                sa.select(fb.c.request_id, fb.c.created_at, fb.c.rating, fb.c.thumbs)
                .where(fb.c.request_id.in_(ids_subquery))
                .order_by(fb.c.created_at, fb.c.id)
            ):
                feedback[request_id].append((created, rating, thumbs))
        if "scores" in tables:
            sc = tables["scores"]
            for request_id, scorer, score in conn.execute(
                sa.select(sc.c.request_id, sc.c.scorer, sc.c.score).where(sc.c.request_id.in_(ids_subquery))
            ):
                if score is not None:
                    scores[scorer][request_id].append(float(score))
    if not rows:
        known = list_experiments(engine)
        listing = ", ".join(f"{k} ({v})" for k, v in sorted(known.items())) or "none"
        raise ExperimentDataError(
            f"experiment {experiment!r} has no requests in the log; experiments with traffic: {listing}"
        )
    return _to_arrays(experiment, rows, feedback, scores)


def _to_arrays(
    experiment: str,
    rows: Sequence[Any],
    feedback: Mapping[str, list[tuple[Any, float | None, int | None]]],
    scores: Mapping[str, Mapping[str, list[float]]],
) -> ExperimentData:
    n = len(rows)
    nan = np.full(n, np.nan)
    ids = [str(r.id) for r in rows]
    error = np.array([1.0 if (r.status_code or 0) >= 400 or r.error else 0.0 for r in rows])
    ok = error == 0

    def column(name: str) -> np.ndarray:
        values = np.array([np.nan if getattr(r, name) is None else float(getattr(r, name)) for r in rows])
        return np.where(ok, values, np.nan)

    has_feedback, thumbs_up, rating = nan.copy(), nan.copy(), nan.copy()
    for i, request_id in enumerate(ids):
        if not ok[i]:
            continue
        entries = feedback.get(request_id, [])
        has_feedback[i] = 1.0 if entries else 0.0
        thumbs = [t for _, _, t in entries if t is not None and t != 0]
        if thumbs:
            thumbs_up[i] = 1.0 if thumbs[-1] > 0 else 0.0
        ratings = [float(r) for _, r, _ in entries if r is not None]
        if ratings:
            rating[i] = float(np.mean(ratings))
    outcomes: dict[str, np.ndarray] = {
        "error_rate": error,
        "feedback_rate": has_feedback,
        "thumbs_up_rate": thumbs_up,
        "rating": rating,
    }
    specs = {
        "error_rate": OutcomeSpec(
            "error_rate", "rate", False, "share of requests that failed (status >= 400 or error)"
        ),
        "feedback_rate": OutcomeSpec(
            "feedback_rate", "rate", None, "share of answered requests with any feedback"
        ),
        "thumbs_up_rate": OutcomeSpec(
            "thumbs_up_rate", "rate", True, "share of thumbs that are up (latest per request)"
        ),
        "rating": OutcomeSpec("rating", "mean", True, "mean user rating (0..1)"),
    }
    for scorer in sorted(scores):
        values = nan.copy()
        for i, request_id in enumerate(ids):
            got = scores[scorer].get(request_id)
            if got and ok[i]:
                values[i] = float(np.mean(got))
        name = f"score:{scorer}"
        outcomes[name] = values
        specs[name] = OutcomeSpec(name, "mean", True, f"mean `{scorer}` score from the scores table")
    for name, description, higher in (
        ("latency_ms", "end-to-end latency (ms)", False),
        ("ttft_ms", "time to first token (ms)", False),
        ("completion_tokens", "completion tokens per request", None),
        ("prompt_tokens", "prompt tokens per request", None),
    ):
        outcomes[name] = column(name)
        specs[name] = OutcomeSpec(name, "mean", higher, description)
    served = [f"{r.served_name}@{(r.served_version or 'base')[:12]}" for r in rows]
    return ExperimentData(
        experiment=experiment,
        request_ids=ids,
        arms=np.array([str(r.arm) if r.arm is not None else "(none)" for r in rows]),
        created_at=[r.created_at for r in rows],
        outcomes=outcomes,
        specs=specs,
        served=served,
    )


# ---------------------------------------------------------------- analysis


def pick_control(arms: Sequence[str], control: str | None = None) -> str:
    """The control arm: as given, else a conventionally named arm, else the first by name."""
    if control is not None:
        if control not in arms:
            raise ExperimentDataError(f"control arm {control!r} has no traffic; arms: {', '.join(arms)}")
        return control
    for name in CONTROL_NAMES:
        if name in arms:
            return name
    return sorted(arms)[0]


def pick_primary(data: ExperimentData, control: str, primary: str | None) -> str | None:
    """The outcome that drives the recommendation: given, else the first with data in every arm among
    scores, thumbs-up rate, rating (quality first), else the error rate."""
    if primary is not None:
        if primary not in data.outcomes:
            raise ExperimentDataError(f"unknown outcome {primary!r}; available: {', '.join(data.outcomes)}")
        return primary
    candidates = [n for n in data.outcomes if n.startswith("score:")] + [
        "thumbs_up_rate",
        "rating",
        "error_rate",
    ]
    for name in candidates:
        values = data.outcomes[name]
        if all(np.isfinite(values[data.arms == arm]).sum() >= 2 for arm in data.arm_names()):
            return name
    return None


def _percentile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else float("nan")


def summarise_arm(data: ExperimentData, arm: str) -> ArmSummary:
    mask = data.arms == arm
    values: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, series in data.outcomes.items():
        chosen = series[mask]
        finite = chosen[np.isfinite(chosen)]
        counts[name] = int(finite.size)
        values[name] = float(finite.mean()) if finite.size else float("nan")
    values["latency_p50_ms"] = _percentile(data.outcomes["latency_ms"][mask], 50)
    values["latency_p95_ms"] = _percentile(data.outcomes["latency_ms"][mask], 95)
    values["ttft_p50_ms"] = _percentile(data.outcomes["ttft_ms"][mask], 50)
    served = Counter(s for s, m in zip(data.served, mask, strict=True) if m)
    return ArmSummary(arm, int(mask.sum()), float(mask.mean()), dict(served), values, counts)


def compare_outcome(
    data: ExperimentData, control: str, arm: str, outcome: str, *, alpha: float, tau_rel: float, burn_in: int
) -> tuple[OutcomeComparison, SequentialResult] | None:
    """Fixed-horizon and sequential tests of one outcome, arm vs control (None when an arm lacks data)."""
    spec = data.specs[outcome]
    series = data.outcomes[outcome]
    in_pair = (data.arms == control) | (data.arms == arm)
    keep = in_pair & np.isfinite(series)
    treat = data.arms[keep] == arm
    values = series[keep]
    a, b = values[~treat], values[treat]
    if a.size < 2 or b.size < 2:
        return None
    if spec.kind == "rate":
        rate = two_proportion_test(int(a.sum()), a.size, int(b.sum()), b.size, confidence=1 - alpha)
        control_value, treatment_value, diff = rate.control_rate, rate.treatment_rate, rate.diff
        low, high, p_value = rate.ci_low, rate.ci_high, rate.p_value
        test = "two-proportion z" if rate.method == "z" else "Fisher exact"
    else:
        mean = mean_difference_test(a, b, confidence=1 - alpha)
        control_value, treatment_value, diff = mean.control_mean, mean.treatment_mean, mean.diff
        low, high, p_value, test = mean.ci_low, mean.ci_high, mean.p_value, "Mann-Whitney U"
    seq = msprt(treat, values, alpha=alpha, tau_rel=tau_rel, burn_in=burn_in, binary=spec.kind == "rate")
    comparison = OutcomeComparison(
        outcome=outcome,
        kind=spec.kind,
        higher_is_better=spec.higher_is_better,
        control=control_value,
        treatment=treatment_value,
        diff=diff,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        test=test,
        n_control=int(a.size),
        n_treatment=int(b.size),
        sequential_p=seq.p_value,
        sequential_low=seq.ci_low,
        sequential_high=seq.ci_high,
        sequential_rejected=seq.rejected,
        verdict=_verdict(spec, diff, seq.rejected, p_value <= alpha),
    )
    return comparison, seq


def _verdict(spec: OutcomeSpec, diff: float, sequential: bool, fixed: bool) -> str:
    if not sequential:
        return "significant at fixed horizon only (keep running)" if fixed else "no significant difference"
    if spec.higher_is_better is None:
        return "differs (descriptive outcome)"
    better = diff > 0 if spec.higher_is_better else diff < 0
    return "treatment better" if better else "treatment worse"


def _path(seq: SequentialResult, arm: str, outcome: str, max_points: int = 200) -> CumulativePath:
    n_total = seq.path.n_control + seq.path.n_treatment
    index = np.unique(np.linspace(0, n_total.size - 1, min(max_points, n_total.size)).astype(int))
    return CumulativePath(
        arm=arm,
        outcome=outcome,
        n_total=[int(x) for x in n_total[index]],
        estimate=seq.path.estimate[index].tolist(),
        low=seq.path.ci_low[index].tolist(),
        high=seq.path.ci_high[index].tolist(),
        p_value=seq.path.p_value[index].tolist(),
    )


def _sample_size(
    data: ExperimentData, control: str, outcome: str, mde: float | None, alpha: float, power: float
) -> dict[str, Any] | None:
    spec = data.specs[outcome]
    series = data.outcomes[outcome][data.arms == control]
    finite = series[np.isfinite(series)]
    if finite.size < 2:
        return None
    try:
        if spec.kind == "rate":
            p = float(finite.mean())
            effect = mde if mde is not None else max(0.02, 0.1 * p)
            effect = min(effect, 1 - p) if p + effect <= 1 else -min(effect, p)
            if effect == 0:
                return None
            size = sample_size_proportions(p, effect, alpha=alpha, power=power)
        else:
            sd = float(finite.std(ddof=1))
            effect = mde if mde is not None else max(abs(float(finite.mean())) * 0.05, 0.1 * sd, 1e-9)
            if sd <= 0:
                return None
            size = sample_size_means(sd, effect, alpha=alpha, power=power)
    except ValueError:
        return None
    return {
        "outcome": outcome,
        "mde": effect,
        "alpha": alpha,
        "power": power,
        "n_per_arm": size.n_control,
        "fixed_horizon": True,
    }


def ab_report(
    experiment: str,
    db: str | Engine,
    *,
    control: str | None = None,
    primary: str | None = None,
    weights: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    tau_rel: float = 0.25,
    burn_in: int = 20,
    mde: float | None = None,
    power: float = 0.8,
    since: datetime | None = None,
    until: datetime | None = None,
    data: ExperimentData | None = None,
) -> ABReport:
    """Analyse a live experiment from the request log at `db` (SQLAlchemy URL or Engine).

    Raises `ExperimentDataError` when the experiment has no traffic. With one arm only, the report holds
    that arm's numbers, no comparison, and a problem saying so.
    """
    data = data or load_experiment(db, experiment, since=since, until=until)
    arms = data.arm_names()
    ctrl = pick_control(arms, control)
    summaries = [summarise_arm(data, arm) for arm in [ctrl, *[a for a in arms if a != ctrl]]]
    problems: list[str] = []
    first = min(data.created_at).isoformat() if data.created_at else None
    last = max(data.created_at).isoformat() if data.created_at else None
    report = ABReport(
        experiment=experiment,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        first_request=first,
        last_request=last,
        control=ctrl,
        primary=None,
        arms=summaries,
        comparisons=[],
        srm=None,
        recommendation="",
        problems=problems,
        alpha=alpha,
    )
    if len(arms) < 2:
        problems.append(
            f"only arm {arms[0]!r} has traffic ({summaries[0].requests} requests): nothing to compare yet; "
            "check the experiment's split weights and that the other arm's model is loaded"
        )
        report.recommendation = "Cannot compare: one arm only."
        return report
    counts = {s.arm: s.requests for s in summaries}
    srm: SrmCheck | None = None
    try:
        srm = sample_ratio_mismatch(counts, weights)
    except ValueError as exc:
        problems.append(f"SRM check skipped: {exc}")
    if srm is not None and srm.mismatch:
        problems.append(
            f"sample ratio mismatch: observed {counts} vs expected shares "
            f"{ {k: round(v, 3) for k, v in srm.expected_share.items()} } (chi2 p={srm.p_value:.2g}); "
            "arm assignment or logging is broken, so the comparison below is not trustworthy"
        )
    main = pick_primary(data, ctrl, primary)
    comparisons: list[ArmComparison] = []
    paths: list[CumulativePath] = []
    for arm in arms:
        if arm == ctrl:
            continue
        outcomes: list[OutcomeComparison] = []
        for name in data.outcomes:
            result = compare_outcome(data, ctrl, arm, name, alpha=alpha, tau_rel=tau_rel, burn_in=burn_in)
            if result is None:
                continue
            outcomes.append(result[0])
            if name == main:
                paths.append(_path(result[1], arm, name))
        size = _sample_size(data, ctrl, main, mde, alpha, power) if main else None
        comparisons.append(ArmComparison(arm=arm, control=ctrl, outcomes=outcomes, sample_size=size))
    if main is None:
        problems.append("no outcome has data in every arm yet (no scores or feedback logged)")
    ordered = [ctrl, *[a for a in arms if a != ctrl]]
    distributions = {
        name: {
            arm: [
                float(v) for v in data.outcomes[name][(data.arms == arm) & np.isfinite(data.outcomes[name])]
            ]
            for arm in ordered
        }
        for name in dict.fromkeys(["latency_ms", *([main] if main else [])])
    }
    report.primary = main
    report.comparisons = comparisons
    report.srm = asdict(srm) if srm else None
    report.recommendation = _recommend(comparisons, main, srm, data, ctrl)
    report.paths = paths
    report.distributions = distributions
    return report


def _recommend(
    comparisons: list[ArmComparison],
    primary: str | None,
    srm: SrmCheck | None,
    data: ExperimentData,
    control: str,
) -> str:
    if srm is not None and srm.mismatch:
        return "Stop and fix assignment: sample ratio mismatch."
    if primary is None:
        return "Keep collecting: no quality outcome (scores, feedback) logged yet."
    lines = []
    for comparison in comparisons:
        found = next((o for o in comparison.outcomes if o.outcome == primary), None)
        if found is None:
            lines.append(f"{comparison.arm}: no {primary} data yet.")
            continue
        if found.sequential_rejected:
            lines.append(
                f"{comparison.arm}: {found.verdict} on {primary} ({found.diff:+.3g}, always-valid p="
                f"{found.sequential_p:.3g}); safe to stop the experiment."
            )
        else:
            size = comparison.sample_size
            need = ""
            if size:
                have = min(found.n_control, found.n_treatment)
                need = (
                    f" A fixed-horizon test needs about {size['n_per_arm']} per arm to detect "
                    f"{size['mde']:+.3g}; each arm has {have}."
                )
            lines.append(f"{comparison.arm}: no significant difference on {primary} yet; keep running.{need}")
    return " ".join(lines)
