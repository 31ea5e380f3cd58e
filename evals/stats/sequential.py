"""Always-valid sequential testing for live A/B experiments: the mixture SPRT (mSPRT).

Johari, Pekelis & Walsh (2017), "Always Valid Inference": with effect estimate d ~ N(theta, V) and a normal
mixing distribution theta ~ N(0, tau^2) under the alternative, the likelihood ratio against theta = 0 is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

Rejecting the first time Lambda >= 1/alpha keeps the false-positive rate at most alpha however often the
experiment is looked at, so it may be stopped as soon as the evidence is there. The always-valid p-value is
the running minimum of 1/Lambda; inverting the test gives a confidence sequence d +/- r(V) that covers the
true effect at every time simultaneously (its running intersection is what the report plots).

Here d = mean(treatment) - mean(control) and V = s_c^2/n_c + s_t^2/n_t with plug-in variances (binary
outcomes use (x+1)/(n+2) so an early all-zero arm does not look certain). tau defaults to `tau_rel` times the
pooled standard deviation, which makes the test scale-free. Monitoring starts once each arm has `burn_in`
observations. Everything is vectorised over independent streams so simulations are cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SequentialPath:
    """The test's state after each observation of the stream (after burn-in; NaN before)."""

    n_control: np.ndarray
    n_treatment: np.ndarray
    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray


@dataclass(frozen=True)
class SequentialResult:
    """Where the sequential test stands at the end of the stream."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    rejected: bool
    stopped_at: int | None
    """Index (0-based, in stream order) of the first observation at which the test rejected."""
    n_control: int
    n_treatment: int
    alpha: float
    tau_rel: float
    burn_in: int
    path: SequentialPath


def mixture_statistics(
    estimate: np.ndarray | float, variance: np.ndarray | float, tau2: np.ndarray | float, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """The mSPRT at one look, from an effect estimate d ~ N(theta, V) and the mixing variance tau^2:
    (log Lambda against theta = 0, radius r of the always-valid confidence interval d +/- r at level
    alpha). Vectorised; the caller keeps the running minimum p-value / intersection over its looks."""
    d, v, t2 = (np.asarray(x, dtype=float) for x in (estimate, variance, tau2))
    with np.errstate(invalid="ignore", divide="ignore"):
        log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * d**2 / (2 * v * (v + t2))
        radius = np.sqrt(2 * v * (v + t2) / t2 * (np.log(1 / alpha) + 0.5 * np.log((v + t2) / v)))
    return log_lambda, radius


def msprt_paths(
    is_treatment: np.ndarray,
    values: np.ndarray,
    *,
    alpha: float = 0.05,
    tau_rel: float = 0.25,
    burn_in: int = 20,
    binary: bool = False,
) -> SequentialPath:
    """mSPRT state after every observation, for R streams at once (arrays shaped (R, T) or (T,))."""
    treat = np.atleast_2d(np.asarray(is_treatment, dtype=bool))
    x = np.atleast_2d(np.asarray(values, dtype=float))
    if treat.shape != x.shape:
        raise ValueError("is_treatment and values must have the same shape")
    ctrl = ~treat
    n_t = np.cumsum(treat, axis=1, dtype=float)
    n_c = np.cumsum(ctrl, axis=1, dtype=float)
    s_t = np.cumsum(np.where(treat, x, 0.0), axis=1)
    s_c = np.cumsum(np.where(ctrl, x, 0.0), axis=1)
    q_t = np.cumsum(np.where(treat, x * x, 0.0), axis=1)
    q_c = np.cumsum(np.where(ctrl, x * x, 0.0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_t, m_c = s_t / n_t, s_c / n_c
        if binary:
            p_t, p_c = (s_t + 1) / (n_t + 2), (s_c + 1) / (n_c + 2)
            v_t, v_c = p_t * (1 - p_t), p_c * (1 - p_c)
            pooled = (s_t + s_c + 1) / (n_t + n_c + 2)
            var_pooled = pooled * (1 - pooled)
        else:
            v_t = np.maximum((q_t - n_t * m_t**2) / np.maximum(n_t - 1, 1), 0.0)
            v_c = np.maximum((q_c - n_c * m_c**2) / np.maximum(n_c - 1, 1), 0.0)
            var_pooled = ((n_t - 1) * v_t + (n_c - 1) * v_c) / np.maximum(n_t + n_c - 2, 1)
        variance = np.maximum(v_t / n_t + v_c / n_c, 1e-12)
        tau2 = np.maximum(tau_rel**2 * var_pooled, 1e-12)
        d = m_t - m_c
        log_lambda, radius = mixture_statistics(d, variance, tau2, alpha)
    active = (n_t >= burn_in) & (n_c >= burn_in)
    p_step = np.where(active, np.minimum(1.0, np.exp(-log_lambda)), 1.0)
    p_running = np.minimum.accumulate(p_step, axis=1)
    low = np.where(active, d - radius, -np.inf)
    high = np.where(active, d + radius, np.inf)
    low_running = np.maximum.accumulate(low, axis=1)
    high_running = np.minimum.accumulate(high, axis=1)
    nan_if_idle = np.where(active, 1.0, np.nan)
    return SequentialPath(
        n_control=n_c,
        n_treatment=n_t,
        estimate=d * nan_if_idle,
        ci_low=low_running * nan_if_idle,
        ci_high=high_running * nan_if_idle,
        p_value=p_running,
    )


def msprt(
    is_treatment: np.ndarray,
    values: np.ndarray,
    *,
    alpha: float = 0.05,
    tau_rel: float = 0.25,
    burn_in: int = 20,
    binary: bool = False,
) -> SequentialResult:
    """The mSPRT on one stream of (arm, value) observations in arrival order."""
    treat = np.asarray(is_treatment, dtype=bool).ravel()
    x = np.asarray(values, dtype=float).ravel()
    if treat.size == 0:
        raise ValueError("no observations")
    path = msprt_paths(treat, x, alpha=alpha, tau_rel=tau_rel, burn_in=burn_in, binary=binary)
    flat = SequentialPath(
        *(
            np.asarray(a)[0]
            for a in (
                path.n_control,
                path.n_treatment,
                path.estimate,
                path.ci_low,
                path.ci_high,
                path.p_value,
            )
        )
    )
    hits = np.flatnonzero(flat.p_value <= alpha)
    n_t, n_c = int(treat.sum()), int((~treat).sum())
    estimate = float(x[treat].mean() - x[~treat].mean()) if n_t and n_c else float("nan")
    return SequentialResult(
        estimate=estimate,
        ci_low=float(flat.ci_low[-1]),
        ci_high=float(flat.ci_high[-1]),
        p_value=float(flat.p_value[-1]),
        rejected=bool(hits.size),
        stopped_at=int(hits[0]) if hits.size else None,
        n_control=n_c,
        n_treatment=n_t,
        alpha=alpha,
        tau_rel=tau_rel,
        burn_in=burn_in,
        path=flat,
    )
