"""The progressive canary's decision rule, pure (no database, no Ray, no serving): a challenger takes a
growing share of an adapter's traffic, step by step (e.g. 5 % → 20 % → 50 % → promoted), and every look at
the data decides to wait, advance to the next step, promote, or roll back — with the statistics behind it.

    policy = CanaryPolicy.from_settings(spec.canary)
    state = policy.start()
    look = CanaryObservation(steps=[...], challenger=..., champion=..., elapsed_s=...)
    decision = policy.decide(state, look)
    decision.action, decision.reason, decision.statistics, decision.state     # keep .state for the next look

`monitoring.loop` reads the request log into a `CanaryObservation` and moves the experiment's weights;
`benchmarks/canary_simulation.py` runs the very same rule on simulated arms (the array functions below
take many canaries at once).

**The effect.** delta = mean score of the challenger - mean score of the champion (`canary.scorer`),
estimated within each step and combined across steps by inverse variance, so traffic that changes
between steps (while the weights change) does not bias it. Variances are plug-in per arm (pooled within
steps); a 0/1 score uses (x+1)/(n+2), so an early all-zero arm does not look certain.

**The test.** The mixture SPRT of `evals.stats.sequential` (Johari et al., always valid) with mixing
standard deviation tau = `mde`, one test over the whole canary: its confidence sequence
[ci_low, ci_high] covers delta at every look at once with probability >= 1 - `alpha`, and the loop keeps
its running intersection across looks. It is active once each arm has `min_requests_per_step` scored
requests in total.

**The rule**, at every look, first match wins:

1. *guardrail*: once the challenger has served `guardrails.min_requests` requests in the canary, if its
   error rate, its empty-or-refused answer rate or its p99 latency is above the cap with confidence (the
   one-sided 1 - alpha lower bound — Wilson for rates, an order statistic for the p99 — exceeds the cap)
   and worse than the champion's on the same measure → roll back;
2. *SRM*: the current step's requests per arm do not match its weights (an always-valid sequential test,
   p < `srm_p_value`) → roll back: the split is broken, so the comparison is too;
3. *worse*: ci_high < 0 and ci_low <= -mde (the challenger is worse than the champion, and a harm of `mde`
   or more is not ruled out) → roll back;
4. *timeout*: the canary has run `timeout_s` → roll back (no conclusion in time);
5. *non-inferior*: ci_low > -mde and the challenger has `min_requests_per_step` scored requests in this
   step → advance to the next step, or promote after the last one;
6. *budget*: on a step before the last, the challenger has `max_requests_per_step` scored requests in this
   step and none of the above holds (no evidence of harm) → advance; the last step has no budget: it runs
   until 3 or 5 decides (one of them must once the interval is narrower than `mde`) or 1, 2, 4 ends it;
7. otherwise wait for more traffic.

So a challenger worse by `mde` or more is promoted with probability <= alpha (promotion needs 5 on the
last step), and one as good as the champion is rolled back by the test with probability <= alpha (3);
guardrails, SRM and the timeout add their own rates, which `benchmarks/canary_simulation.py` measures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import special, stats

from evals.stats.sequential import mixture_statistics

__all__ = [
    "Action",
    "ArmHealth",
    "ArmScores",
    "CanaryDecision",
    "CanaryObservation",
    "CanaryPolicy",
    "CanaryState",
    "Code",
    "GuardrailCheck",
    "Guardrails",
    "Reason",
    "StepData",
    "combined_effect",
    "decide_codes",
    "guardrail_checks",
    "quantile_lower_bound",
    "sequential_bounds",
    "srm_p_values",
    "wilson_lower",
]


class Action(StrEnum):
    """What the loop does after a look."""

    WAIT = "wait"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class Reason(StrEnum):
    """Why (the rule's clause that matched)."""

    WAITING = "waiting"
    GUARDRAIL = "guardrail"
    SRM = "srm"
    WORSE = "worse"
    TIMEOUT = "timeout"
    NON_INFERIOR = "non_inferior"
    BUDGET = "budget"


class Code(IntEnum):
    """`Reason` as the integers `decide_codes` returns for many canaries at once."""

    WAITING = 0
    GUARDRAIL = 1
    SRM = 2
    WORSE = 3
    TIMEOUT = 4
    NON_INFERIOR = 5
    BUDGET = 6

    @property
    def reason(self) -> Reason:
        return Reason(self.name.lower())


ROLLBACK_CODES = (Code.GUARDRAIL, Code.SRM, Code.WORSE, Code.TIMEOUT)
ADVANCE_CODES = (Code.NON_INFERIOR, Code.BUDGET)


# ----------------------------------------------------------------------------------------- statistics
def _arm_variance(arm: np.ndarray, binary: bool | np.ndarray) -> np.ndarray:
    """Per-arm variance from (..., K, 3) step statistics: pooled within steps, or (x+1)/(n+2) for 0/1."""
    n, s, q = arm[..., 0], arm[..., 1], arm[..., 2]
    total_n, total_s = n.sum(axis=-1), s.sum(axis=-1)
    p = (total_s + 1) / (total_n + 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(n > 0, q - s * s / np.maximum(n, 1), 0.0).sum(axis=-1)
    dof = total_n - (n > 0).sum(axis=-1)
    continuous = np.maximum(within, 0.0) / np.maximum(dof, 1)
    return np.where(binary, p * (1 - p), continuous)


def combined_effect(
    champion: np.ndarray, challenger: np.ndarray, *, binary: bool | np.ndarray = False
) -> tuple[np.ndarray, np.ndarray]:
    """(delta, variance): challenger - champion mean, combined over steps by inverse variance.

    `champion` and `challenger` are arrays shaped (..., K, 3) of (n, sum, sum of squares) per step; steps
    where an arm has no data are left out; no usable step gives (nan, inf)."""
    ctrl, treat = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    var_c = _arm_variance(ctrl, binary)[..., None]
    var_t = _arm_variance(treat, binary)[..., None]
    n_c, n_t = ctrl[..., 0], treat[..., 0]
    usable = (n_c > 0) & (n_t > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_step = treat[..., 1] / n_t - ctrl[..., 1] / n_c
        v_step = np.maximum(var_t / n_t + var_c / n_c, 1e-12)
        info = np.where(usable, 1 / v_step, 0.0)
        total_info = info.sum(axis=-1)
        delta = np.where(usable, d_step * info, 0.0).sum(axis=-1) / total_info
        variance = 1 / total_info
    return np.where(total_info > 0, delta, np.nan), np.where(total_info > 0, variance, np.inf)


def sequential_bounds(
    delta: np.ndarray | float, variance: np.ndarray | float, *, mde: float, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mSPRT at one look with mixing sd tau = mde: (ci_low, ci_high, log e-value against delta = 0).
    The caller intersects the intervals over its looks (`CanaryState`)."""
    log_e, radius = mixture_statistics(delta, variance, mde**2, alpha)
    d = np.asarray(delta, dtype=float)
    return d - radius, d + radius, log_e


SRM_PRIOR_CONCENTRATION = 100.0
"""The sequential SRM test's Beta prior on the challenger's share: Beta(w c, (1 - w) c), centred on the
configured weight w (sd ~0.02 at w = 0.05)."""


def srm_p_values(
    champion: np.ndarray | int, challenger: np.ndarray | int, weight: np.ndarray | float
) -> np.ndarray:
    """Always-valid p-value of a sample ratio mismatch: requests per arm against the split (challenger
    share `weight`). The Beta-binomial mixture likelihood ratio against the point null (a sequential SRM
    test, as Lindon & Malek propose), p = min(1, 1/LR): rejecting when p < level keeps the false-alarm rate
    at most `level` however often the counts are looked at, which a chi-square test checked at every look
    does not (it trips about 1 canary in 50 on correct splits over a few hundred looks: measured in
    benchmarks/canary_simulation.py). Vectorised."""
    c, t = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    w = np.asarray(weight, dtype=float)
    a, b = w * SRM_PRIOR_CONCENTRATION, (1 - w) * SRM_PRIOR_CONCENTRATION
    log_lr = special.betaln(t + a, c + b) - special.betaln(a, b) - t * np.log(w) - c * np.log1p(-w)
    return np.minimum(1.0, np.exp(-log_lr))


def decide_codes(
    *,
    ci_low: np.ndarray,
    ci_high: np.ndarray,
    active: np.ndarray,
    step_requests: np.ndarray,
    last_step: np.ndarray | bool,
    guardrail: np.ndarray | bool,
    srm: np.ndarray | bool,
    timed_out: np.ndarray | bool,
    mde: float,
    min_requests: int,
    max_requests: int | None,
) -> np.ndarray:
    """The rule of the module docstring for many canaries at once: a `Code` per canary.

    `ci_low`/`ci_high` are the running (intersected) bounds, `active` whether the test has its burn-in,
    `step_requests` the challenger's scored requests in the current step."""
    lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    on = np.asarray(active, dtype=bool)
    n = np.asarray(step_requests)
    code = np.full(np.broadcast(lo, hi, on, n).shape, int(Code.WAITING))
    if max_requests is not None:  # lowest precedence first; later lines overwrite
        code = np.where(~np.asarray(last_step, dtype=bool) & (n >= max_requests), int(Code.BUDGET), code)
    code = np.where(on & (n >= min_requests) & (lo > -mde), int(Code.NON_INFERIOR), code)
    code = np.where(np.asarray(timed_out, dtype=bool), int(Code.TIMEOUT), code)
    code = np.where(on & (hi < 0) & (lo <= -mde), int(Code.WORSE), code)
    code = np.where(np.asarray(srm, dtype=bool), int(Code.SRM), code)
    return np.where(np.asarray(guardrail, dtype=bool), int(Code.GUARDRAIL), code)


def wilson_lower(count: int, n: int, alpha: float) -> float:
    """One-sided 1 - alpha lower confidence bound of a rate (Wilson score); 0 without data."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - alpha)
    p = count / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def quantile_lower_bound(values: Sequence[float], q: float, alpha: float) -> float:
    """One-sided 1 - alpha lower confidence bound of the q-quantile: the largest order statistic X(k) with
    P(Binomial(n, q) >= k) >= 1 - alpha (distribution-free); -inf without data."""
    x = np.sort(np.asarray(values, dtype=float))
    if x.size == 0:
        return -math.inf
    k = np.arange(1, x.size + 1)
    ok = stats.binom.sf(k - 1, x.size, q) >= 1 - alpha
    return float(x[k[ok][-1] - 1]) if ok.any() else -math.inf


# --------------------------------------------------------------------------------------- observations
@dataclass(frozen=True)
class ArmScores:
    """One arm's scores in one step, as sufficient statistics."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    binary: bool = True
    """Every score is 0 or 1."""

    @classmethod
    def of(cls, values: Iterable[float]) -> ArmScores:
        x = np.asarray(list(values), dtype=float)
        return cls(int(x.size), float(x.sum()), float((x * x).sum()), bool(np.isin(x, (0.0, 1.0)).all()))

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def row(self) -> tuple[float, float, float]:
        return (float(self.n), self.total, self.total_sq)


@dataclass(frozen=True)
class StepData:
    """What one step collected: scores per arm, and requests routed to each arm (scored or not, for SRM)."""

    champion: ArmScores = field(default_factory=ArmScores)
    challenger: ArmScores = field(default_factory=ArmScores)
    routed_champion: int = 0
    routed_challenger: int = 0


@dataclass(frozen=True)
class ArmHealth:
    """One arm's requests over the canary, for the guardrails."""

    requests: int = 0
    errors: int = 0
    """Requests that did not succeed (status != 200)."""
    empty: int = 0
    """Answered requests whose answer is empty or a refusal."""
    latencies_ms: tuple[float, ...] = ()
    """Latencies of the answered requests."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def answered(self) -> int:
        return self.requests - self.errors

    @property
    def empty_rate(self) -> float | None:
        return self.empty / self.answered if self.answered else None

    @property
    def p99_latency_ms(self) -> float | None:
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else None


@dataclass(frozen=True)
class CanaryObservation:
    """Everything a look sees: one `StepData` per step started so far (the last is the current step), both
    arms' health over the whole canary, and how long the canary has run."""

    steps: Sequence[StepData]
    challenger: ArmHealth = field(default_factory=ArmHealth)
    champion: ArmHealth = field(default_factory=ArmHealth)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Guardrails:
    """Caps on the challenger's health; None switches one off."""

    max_error_rate: float | None = 0.05
    max_p99_latency_ms: float | None = None
    max_empty_rate: float | None = 0.1
    min_requests: int = 10


@dataclass(frozen=True)
class GuardrailCheck:
    name: str
    value: float | None
    """The challenger's observed value."""
    bound: float | None
    """Its one-sided 1 - alpha lower confidence bound."""
    limit: float
    champion: float | None
    tripped: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": _num(self.value),
            "lower_bound": _num(self.bound),
            "limit": self.limit,
            "champion": _num(self.champion),
            "tripped": self.tripped,
        }


def guardrail_checks(
    challenger: ArmHealth, champion: ArmHealth, guardrails: Guardrails, alpha: float
) -> list[GuardrailCheck]:
    """Each configured guardrail; tripped when the challenger has `min_requests` requests, its lower bound
    is above the cap and its value is worse than the champion's (so errors both arms share, e.g. bad
    client requests or an overloaded service, do not blame the challenger)."""
    g, out = guardrails, []
    enough = challenger.requests >= g.min_requests

    def worse(mine: float | None, theirs: float | None) -> bool:
        return mine is not None and (theirs is None or mine > theirs)

    if g.max_error_rate is not None:
        bound = wilson_lower(challenger.errors, challenger.requests, alpha)
        value, theirs = challenger.error_rate, champion.error_rate
        tripped = enough and bound > g.max_error_rate and worse(value, theirs)
        out.append(GuardrailCheck("error_rate", value, bound, g.max_error_rate, theirs, tripped))
    if g.max_empty_rate is not None:
        bound = wilson_lower(challenger.empty, challenger.answered, alpha)
        value, theirs = challenger.empty_rate, champion.empty_rate
        tripped = enough and bound > g.max_empty_rate and worse(value, theirs)
        out.append(GuardrailCheck("empty_rate", value, bound, g.max_empty_rate, theirs, tripped))
    if g.max_p99_latency_ms is not None:
        lat_bound = quantile_lower_bound(challenger.latencies_ms, 0.99, alpha)
        value, theirs = challenger.p99_latency_ms, champion.p99_latency_ms
        tripped = enough and lat_bound > g.max_p99_latency_ms and worse(value, theirs)
        bound_or_none = lat_bound if math.isfinite(lat_bound) else None
        out.append(
            GuardrailCheck("p99_latency_ms", value, bound_or_none, g.max_p99_latency_ms, theirs, tripped)
        )
    return out


# ------------------------------------------------------------------------------------------- the policy
@dataclass
class CanaryState:
    """What a canary keeps between looks: the current step and the test's running bounds."""

    step: int = 0
    ci_low: float = -math.inf
    ci_high: float = math.inf
    p_value: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryState:
        low, high = data.get("ci_low"), data.get("ci_high")
        return cls(
            step=int(data.get("step", 0)),
            ci_low=-math.inf if low is None else float(low),
            ci_high=math.inf if high is None else float(high),
            p_value=float(data.get("p_value", 1.0)),
        )


@dataclass(frozen=True)
class CanaryDecision:
    action: Action
    reason: Reason
    message: str
    step: int
    """The step looked at (0-based)."""
    weight: float
    next_weight: float | None
    """The challenger's share after an advance (None otherwise; 1.0 = promoted)."""
    statistics: dict[str, Any]
    state: CanaryState


@dataclass(frozen=True)
class CanaryPolicy:
    """The rule of the module docstring with its settings (`monitoring.spec.CanarySettings`)."""

    steps: tuple[float, ...] = (0.05, 0.2, 0.5)
    alpha: float = 0.05
    mde: float = 0.05
    min_requests_per_step: int = 20
    max_requests_per_step: int | None = 100
    guardrails: Guardrails = field(default_factory=Guardrails)
    srm_p_value: float | None = 0.001
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < w < 1 for w in self.steps):
            raise ValueError(f"canary steps must be shares in (0, 1), got {list(self.steps)}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"canary steps must increase, got {list(self.steps)}")

    @classmethod
    def from_settings(cls, settings: Any) -> CanaryPolicy:
        """From `monitoring.spec.CanarySettings`."""
        g = settings.guardrails
        return cls(
            steps=tuple(settings.steps),
            alpha=settings.alpha,
            mde=settings.mde,
            min_requests_per_step=settings.min_requests_per_step,
            max_requests_per_step=settings.max_requests_per_step,
            guardrails=Guardrails(
                max_error_rate=g.max_error_rate,
                max_p99_latency_ms=g.max_p99_latency_ms,
                max_empty_rate=g.max_empty_rate,
                min_requests=g.min_requests,
            ),
            srm_p_value=settings.srm_p_value,
            timeout_s=settings.timeout_s,
        )

    def start(self) -> CanaryState:
        return CanaryState()

    def decide(self, state: CanaryState, observation: CanaryObservation) -> CanaryDecision:
        """One look: the rule applied to everything observed so far (see the module docstring)."""
        k = state.step
        if not 0 <= k < len(self.steps):
            raise ValueError(f"canary state at step {k}, but the policy has {len(self.steps)} steps")
        weight = self.steps[k]
        steps = list(observation.steps)[: k + 1]
        current = steps[k] if len(steps) > k else StepData()
        ctrl = np.array([s.champion.row() for s in steps] or [(0.0, 0.0, 0.0)])
        treat = np.array([s.challenger.row() for s in steps] or [(0.0, 0.0, 0.0)])
        binary = all(s.champion.binary and s.challenger.binary for s in steps)
        delta, variance = combined_effect(ctrl, treat, binary=binary)
        n_ctrl, n_treat = int(ctrl[:, 0].sum()), int(treat[:, 0].sum())
        active = min(n_ctrl, n_treat) >= self.min_requests_per_step and math.isfinite(float(variance))
        low, high, log_e = (
            float(x) for x in sequential_bounds(delta, variance, mde=self.mde, alpha=self.alpha)
        )
        new = CanaryState(k, state.ci_low, state.ci_high, state.p_value)
        if active:
            new.ci_low, new.ci_high = max(state.ci_low, low), min(state.ci_high, high)
            new.p_value = min(state.p_value, min(1.0, math.exp(-log_e)))
        checks = guardrail_checks(observation.challenger, observation.champion, self.guardrails, self.alpha)
        srm_p = float(srm_p_values(current.routed_champion, current.routed_challenger, weight))
        srm = self.srm_p_value is not None and srm_p < self.srm_p_value
        timed_out = self.timeout_s is not None and observation.elapsed_s >= self.timeout_s
        last = k == len(self.steps) - 1
        code = Code(
            int(
                decide_codes(
                    ci_low=np.asarray(new.ci_low),
                    ci_high=np.asarray(new.ci_high),
                    active=np.asarray(active),
                    step_requests=np.asarray(current.challenger.n),
                    last_step=last,
                    guardrail=any(c.tripped for c in checks),
                    srm=srm,
                    timed_out=timed_out,
                    mde=self.mde,
                    min_requests=self.min_requests_per_step,
                    max_requests=self.max_requests_per_step,
                )
            )
        )
        if code in ROLLBACK_CODES:
            action, next_weight = Action.ROLLBACK, None
        elif code in ADVANCE_CODES:
            action = Action.PROMOTE if last else Action.ADVANCE
            next_weight = 1.0 if last else self.steps[k + 1]
            if not last:
                new.step = k + 1
        else:
            action, next_weight = Action.WAIT, None
        statistics = {
            "step": k + 1,
            "steps": len(self.steps),
            "weight": weight,
            "n": {"champion": current.champion.n, "challenger": current.challenger.n},
            "mean": {"champion": _num(current.champion.mean), "challenger": _num(current.challenger.mean)},
            "routed": {"champion": current.routed_champion, "challenger": current.routed_challenger},
            "n_total": {"champion": n_ctrl, "challenger": n_treat},
            "mean_total": {
                "champion": _num(_mean(ctrl)),
                "challenger": _num(_mean(treat)),
            },
            "estimate": _num(float(delta)),
            "ci_low": _num(new.ci_low),
            "ci_high": _num(new.ci_high),
            "p_value": new.p_value,
            "e_value": _num(math.exp(min(float(log_e), 700.0))) if active else None,
            "test_active": active,
            "mde": self.mde,
            "alpha": self.alpha,
            "srm_p_value": srm_p,
            "guardrails": {c.name: c.to_dict() for c in checks},
            "elapsed_s": observation.elapsed_s,
            "decision": str(action),
            "reason": str(code.reason),
        }
        message = self._message(code, action, k, weight, next_weight, statistics, checks)
        return CanaryDecision(action, code.reason, message, k, weight, next_weight, statistics, new)

    def _message(
        self,
        code: Code,
        action: Action,
        k: int,
        weight: float,
        next_weight: float | None,
        s: dict[str, Any],
        checks: list[GuardrailCheck],
    ) -> str:
        where = f"step {k + 1}/{len(self.steps)} ({weight:.0%})"
        n = f"{s['n']['challenger']} challenger / {s['n']['champion']} champion scored requests"
        ci = (
            f"delta {s['estimate']:+.3f}, {1 - self.alpha:.0%} always-valid CI "
            f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}], p={s['p_value']:.3g}"
            if s["test_active"]
            else f"test not active yet (< {self.min_requests_per_step} scored requests per arm)"
        )
        if code == Code.GUARDRAIL:
            tripped = "; ".join(
                f"{c.name} {_fmt(c.value)} (lower bound {_fmt(c.bound)} > cap {c.limit:g}; champion "
                f"{_fmt(c.champion)})"
                for c in checks
                if c.tripped
            )
            return f"canary {where}: guardrail tripped: {tripped}; rolled back"
        if code == Code.SRM:
            r = s["routed"]
            return (
                f"canary {where}: sample ratio mismatch: {r['challenger']} challenger / {r['champion']} "
                f"champion requests for a {weight:.0%} split (p={s['srm_p_value']:.2g}); rolled back"
            )
        if code == Code.WORSE:
            return f"canary {where}: challenger worse than the champion ({ci}; mde {self.mde:g}); rolled back"
        if code == Code.TIMEOUT:
            return f"canary {where}: no decision after {s['elapsed_s']:.0f} s ({n}; {ci}); rolled back"
        if code in ADVANCE_CODES:
            why = (
                f"not worse by {self.mde:g} or more ({ci})"
                if code == Code.NON_INFERIOR
                else f"step budget of {self.max_requests_per_step} reached without evidence of harm ({ci})"
            )
            then = "promote" if action == Action.PROMOTE else f"advance to {next_weight:.0%}"
            return f"canary {where}: {why}; {n}; {then}"
        return f"canary {where}: {n}; {ci}"


def _mean(rows: np.ndarray) -> float | None:
    n = float(rows[:, 0].sum())
    return float(rows[:, 1].sum()) / n if n else None


def _num(x: float | None) -> float | None:
    """JSON-safe: None for missing, infinite or NaN values."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
