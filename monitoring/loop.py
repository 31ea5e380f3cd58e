"""The closed loop: a persisted state machine that keeps one adapter good as traffic changes.

    watching ──drift trips the policy──▶ triggered ──▶ dataset_built ──▶ training ──▶ trained
        ▲                                                                              │
        │            ┌──────── gate failed: challenger retired (rejected) ◀── gating ◀─┘
        │            │                                                       │ gate passed
        └── cooldown ┴── rolled_back ◀── canary worse ── canary (A/B, intercepting `adapter`) ──▶ promoted

Every transition is an event with its evidence (drift report → dataset/training config → training run
→ gate decision → A/B result → promotion), and every step stores its artifacts on the run, so a loop
killed in any state resumes from the last completed step when it restarts (training is re-dispatched:
a killed run leaves no artifact). One loop per adapter at a time (a lock in the database).

The loop talks to the serving layer through the registry (same database + artifact store) and the
hot-swap protocol, to training through `training.api`, to evals through `evals.runner`/`evals.gate`/
`evals.ab`, and scores/drift through this package.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from common.log_schema import merged_tags
from monitoring.canary import (
    Action,
    ArmHealth,
    ArmScores,
    CanaryObservation,
    CanaryPolicy,
    CanaryState,
    StepData,
)
from monitoring.drift.base import DriftReport, InputDriftDetector, QualityDriftDetector
from monitoring.drift.checks import check_input_drift, check_quality_drift, detector_for_threshold
from monitoring.errors import DriftInputError
from monitoring.loop_store import LockHeldError, LoopRun, LoopStore
from monitoring.metrics import LoopMetrics
from monitoring.policy import LoopState, TrainingRecord
from monitoring.scorers.batch import score_batch
from monitoring.scorers.heuristics import DEFAULT_REFUSAL_PATTERNS
from monitoring.spec import LoopSpec
from monitoring.store import (
    feedback_table,
    load_prompts,
    load_score_stream,
    opened,
    requests_table,
    scores_table,
)
from serving.registry.artifacts import NAME_MAX_LEN

log = logging.getLogger("tuneloop.loop")


class Phase(StrEnum):
    """The states of a loop run (`watching` = no run open)."""

    WATCHING = "watching"
    TRIGGERED = "triggered"
    DATASET_BUILT = "dataset_built"
    TRAINING = "training"
    TRAINED = "trained"
    GATING = "gating"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    FAILED = "failed"


WATCHING, TRIGGERED, DATASET_BUILT, TRAINING, TRAINED, GATING = (
    Phase.WATCHING,
    Phase.TRIGGERED,
    Phase.DATASET_BUILT,
    Phase.TRAINING,
    Phase.TRAINED,
    Phase.GATING,
)
CANARY, PROMOTED, ROLLED_BACK, REJECTED, FAILED = (
    Phase.CANARY,
    Phase.PROMOTED,
    Phase.ROLLED_BACK,
    Phase.REJECTED,
    Phase.FAILED,
)
STATES = tuple(Phase)
TERMINAL = (PROMOTED, ROLLED_BACK, REJECTED, FAILED)
DATABASE_URL_PLACEHOLDER = "${TUNELOOP_LOOP_DATABASE_URL}"
"""Stands for the loop's database URL in stored training configs (runs, registry lineage), so that a
password in the URL is never written to the database; replaced when the training is dispatched."""


class TrainingJob(Protocol):
    """A dispatched training (`training.api.TrainingJob`)."""

    def done(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Any: ...


class TrainingBackend(Protocol):
    """How the loop trains: `submit` dispatches a config, `prewarm` readies a worker while data is built."""

    def submit(self, config: dict[str, Any]) -> TrainingJob: ...

    def prewarm(self) -> None: ...


class RayTraining:
    """Training as a Ray task (GPU when the cluster has one), the production backend. Joins the cluster at
    `address`, else the one running on this machine (the service's), else starts a local runtime."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def _connect(self) -> None:
        from training.dispatch import ensure_ray

        ensure_ray(self.address)

    def submit(self, config: dict[str, Any]) -> TrainingJob:
        from training.api import submit

        self._connect()
        return submit(config, use_ray=True)

    def prewarm(self) -> None:
        """Warm a worker (process + imports) while the dataset is built, so the dispatch a few seconds later
        does not pay for it (benchmarks/training_dispatch_overhead); never fails the loop."""
        try:
            from training.dispatch import prewarm

            self._connect()
            prewarm()
        except Exception as exc:  # noqa: BLE001 - an optimisation
            log.info("loop: could not pre-warm a training worker: %s", exc)


@dataclass
class TickResult:
    state: str
    message: str
    run_id: str | None = None


EventHook = Callable[[str, str, dict[str, Any]], None]


class LoopController:
    """Drive the state machine one `tick()` at a time (or `run()` until stopped)."""

    def __init__(
        self,
        spec: LoopSpec,
        registry: Any,
        *,
        base_model_path: Path | None = None,
        on_event: EventHook | None = None,
        training: TrainingBackend | None = None,
        metrics: LoopMetrics | None = None,
    ) -> None:
        if spec.database_url is None:
            raise ValueError("the loop spec has no database_url: fill it from the service settings first")
        self.spec = spec
        self.db_url: str = spec.database_url
        self.state_dir = spec.resolved_state_dir()
        self.metrics = metrics or LoopMetrics(states=STATES)
        self.registry = registry
        self.base_model_path = base_model_path
        self.store = LoopStore(self.db_url, loop=f"{registry.base_model_id}/{spec.adapter}")
        self.on_event = on_event
        self.training = training or RayTraining(spec.ray_address)
        self._job: TrainingJob | None = None
        self._canary_started: float | None = None
        self._champion_since: datetime | None = None
        self.last_reports: list[Any] = []
        self.last_decision: Any = None
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # ================================================================== plumbing
    def _event(
        self,
        run: LoopRun | None,
        kind: str,
        message: str,
        *,
        to_state: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        from_state = run.state if run else None
        self.store.event(
            kind,
            message,
            run_id=run.id if run else None,
            from_state=from_state,
            to_state=to_state,
            evidence=evidence,
        )
        log.info("[loop] %s: %s", kind, message)
        if to_state is not None:
            self.metrics.set_state(to_state)
        if self.on_event is not None:
            self.on_event(kind, message, evidence or {})

    def _move(self, run: LoopRun, state: str, message: str, evidence: dict[str, Any] | None = None) -> None:
        self._event(run, "transition", message, to_state=state, evidence=evidence)
        run.state = state
        if state in TERMINAL:
            run.finished = True
            run.outcome = state
        self.store.save(run)

    def champion(self) -> Any | None:
        for v in self.registry.list(self.spec.adapter):
            if "champion" in v.aliases:
                return v
        return None

    def _policy_state(self) -> LoopState:
        trainings: list[TrainingRecord] = []
        last: datetime | None = None
        for run in self.store.runs(limit=50):
            last = run.started_at if last is None or run.started_at > last else last
            if "training_started_at" in run.data:
                started = datetime.fromisoformat(run.data["training_started_at"])
                minutes = float(run.data.get("training_minutes", 0.0))
                trainings.append(TrainingRecord(started_at=started, minutes=minutes or None))
        return LoopState(last_triggered_at=last, trainings=trainings, training_in_progress=False)

    # ================================================================== watching
    def _windows(self, champion: Any | None) -> tuple[list[Any], list[Any]]:
        s = self.spec
        version = champion.version if champion is not None else None
        with opened(self.db_url) as engine:
            reference = load_prompts(
                engine,
                served_name=s.adapter,
                served_version=version,
                limit=s.windows.reference_size,
                newest_first=False,
            )
            live = load_prompts(
                engine, served_name=s.adapter, served_version=version, limit=s.windows.live_size
            )
        ref_ids = {r.id for r in reference}
        live = [r for r in live if r.id not in ref_ids]
        return reference, live

    def check(self) -> tuple[list[DriftReport], Any, dict[str, Any]]:
        """Score new traffic, run every detector the policy names, ask the policy: (reports, decision,
        context)."""
        s = self.spec
        self.metrics.observe_scores(score_batch(self.db_url, scorers=s.scorers, slice_keys=self._slice_keys))
        champion = self.champion()
        reference, live = self._windows(champion)
        subject = f"{s.adapter}@{champion.version[:12] if champion else 'base'}"
        context: dict[str, Any] = {
            "champion": champion.ref if champion else None,
            "n_reference": len(reference),
            "n_live": len(live),
        }
        reports = [*self._input_reports(reference, live, subject, context), *self._quality_reports(champion)]
        ref_slices = Counter(v for v in (self._slice_of(r) for r in reference) if v)
        live_slices = Counter(v for v in (self._slice_of(r) for r in live) if v)
        context["slices"] = {"reference": dict(ref_slices), "live": dict(live_slices)}
        context["drifted_slice"] = _grown_slice(ref_slices, live_slices)
        for report in reports:
            self.metrics.observe_drift(report)
        decision = s.policy.decide(self._policy_state(), reports, datetime.now(UTC))
        self.last_reports, self.last_decision = reports, decision
        return reports, decision, context

    @property
    def _slice_keys(self) -> tuple[str, ...]:
        return (self.spec.slice_key,) if self.spec.slice_key else ()

    def _slice_of(self, request: Any) -> str | None:
        """The request's slice: its `slice_key` tag (feedback tags win over the request's metadata)."""
        key = self.spec.slice_key
        if key is None:
            return None
        value = request.tags.get(key)
        return str(value) if value not in (None, "") else None

    def _input_reports(
        self, reference: list[Any], live: list[Any], subject: str, context: dict[str, Any]
    ) -> list[DriftReport]:
        """One report per input detector the policy names (both windows embedded once)."""
        rule = self.spec.policy.input_drift
        if rule is None:
            return []
        detectors = [detector_for_threshold(name, rule.max_p_value) for name in rule.detectors]
        inputs = [d for d in detectors if isinstance(d, InputDriftDetector)]
        # below the detectors' own minimum a check means nothing (and would embed both windows for
        # nothing): wait for traffic. The policy's min_samples decides when a report may trip.
        needed = max(d.min_samples for d in inputs)
        if len(reference) < needed or len(live) < needed:
            return []
        from monitoring.embeddings import encode

        ref_texts, live_texts = [r.user_text for r in reference], [r.user_text for r in live]
        try:
            ref_emb, live_emb = encode(ref_texts), encode(live_texts)
        except DriftInputError as exc:
            context["input_drift_skipped"] = str(exc)
            return []
        reports = []
        for index, detector in enumerate(inputs):
            try:
                reports.append(
                    check_input_drift(
                        ref_texts,
                        live_texts,
                        detector=detector,
                        ref_embeddings=ref_emb,
                        live_embeddings=live_emb,
                        subject=subject,
                        clusters=8 if index == 0 else 0,  # topics once, not per detector
                    )
                )
            except DriftInputError as exc:
                context.setdefault("input_drift_skipped", str(exc))
        return reports

    def _quality_reports(self, champion: Any | None) -> list[DriftReport]:
        """One report per quality detector the policy names, on each watched scorer's stream."""
        s = self.spec
        rule = s.policy.quality_drift
        if rule is None:
            return []
        scorers = [x for x in (rule.scorers or [s.quality_scorer])]
        detectors = [detector_for_threshold(name, rule.max_p_value) for name in rule.detectors]
        reports = []
        with opened(self.db_url) as engine:
            for scorer in scorers:
                stream = load_score_stream(
                    engine,
                    scorer,
                    served_name=s.adapter,
                    served_version=champion.version if champion else None,
                )
                if len(stream) < s.windows.min_quality_scores:
                    continue
                values = [v for _, _, v in stream]
                for detector in detectors:
                    if isinstance(detector, QualityDriftDetector):
                        reports.append(
                            check_quality_drift(values, detector=detector, subject=f"{s.adapter}:{scorer}")
                        )
        return reports

    # ================================================================== steps
    def tick(self) -> TickResult:
        """Advance by at most one step; safe to call again after a crash (steps are idempotent)."""
        self.store.heartbeat()
        run = self.store.open_run()
        if run is None:
            self.metrics.set_state(WATCHING)
            return self._watch()
        steps: dict[str, Callable[[LoopRun], TickResult]] = {
            TRIGGERED: self._build_dataset,
            DATASET_BUILT: self._dispatch_training,
            TRAINING: self._await_training,
            TRAINED: self._register_and_gate,
            GATING: self._register_and_gate,
            CANARY: self._canary,
        }
        step = steps.get(run.state)
        if step is None:
            run.finished = True
            self.store.save(run)
            return TickResult(run.state, "closed a run in an unknown state", run.id)
        try:
            return step(run)
        except Exception as exc:  # noqa: BLE001 - a failing step is recorded, the champion stays
            log.exception("loop step %s failed", run.state)
            self._cleanup_challenger(run)
            self._move(run, FAILED, f"step {run.state} failed: {exc}", {"error": repr(exc)})
            return TickResult(FAILED, str(exc), run.id)

    def _watch(self) -> TickResult:
        reports, decision, context = self.check()
        if reports:
            self.store.event(
                "check",
                f"{decision.outcome}: " + "; ".join(r.summary() for r in reports),
                evidence={
                    "reports": [
                        {
                            "detector": r.detector,
                            "kind": r.kind,
                            "statistic": r.statistic,
                            "p_value": r.p_value,
                            "threshold": r.threshold,
                            "drifted": r.drifted,
                            "n_ref": r.n_ref,
                            "n_live": r.n_live,
                        }
                        for r in reports
                    ],
                    "outcome": str(decision.outcome),
                    "slices": context.get("slices"),
                },
            )
        if not decision.fire:
            return TickResult(WATCHING, f"{decision.outcome}: {'; '.join(decision.reasons)}")
        recent = self.store.runs(limit=1)
        if recent and recent[0].outcome == FAILED:
            until = recent[0].updated_at + timedelta(minutes=self.spec.backoff_minutes)
            if until > datetime.now(UTC):
                return TickResult(
                    WATCHING, f"drift persists, but backing off after a failed run until {until:%H:%M:%S} UTC"
                )
        slice_value = context.get("drifted_slice")
        run = self.store.new_run(
            TRIGGERED,
            {
                "champion": context["champion"],
                "drifted_slice": slice_value,
                "triggered_at": datetime.now(UTC).isoformat(),
                "drift_reports": [r.to_dict() for r in reports],
                "decision": decision.to_dict(),
                "context": context,
            },
        )
        self._event(
            run,
            "triggered",
            f"drift tripped the policy ({', '.join(decision.tripped)}); drifted slice: {slice_value}",
            to_state=TRIGGERED,
            evidence={
                "decision": decision.to_dict(),
                "reports": [r.summary() for r in reports],
                "slices": context["slices"],
            },
        )
        self.training.prewarm()
        return TickResult(TRIGGERED, "retraining triggered", run.id)

    def _build_dataset(self, run: LoopRun) -> TickResult:
        s, recipe = self.spec, self.spec.recipe
        champion = self.champion()
        slice_value = run.data.get("drifted_slice")
        tags = {s.slice_key: slice_value} if slice_value and s.slice_key else {}
        since = datetime.fromisoformat(run.data["triggered_at"]) - timedelta(days=s.windows.feedback_days)
        sources: list[dict[str, Any]] = [
            {
                "kind": "request_log",
                "name": f"feedback-{slice_value or 'all'}",
                "database_url": DATABASE_URL_PLACEHOLDER,  # stored configs never carry credentials
                "served_name": s.adapter,
                "tags": tags,
                "include_accepted": recipe.include_accepted,
                "min_rating": recipe.min_rating,
                "since": since.isoformat(),
            }
        ]
        if recipe.replay is not None:
            sources.append(
                {"kind": "file", "name": "replay", "path": str(recipe.replay), "weight": recipe.replay_weight}
            )
        counts = _count_feedback(self.db_url, s.adapter, tags, since, recipe.min_rating)
        if counts["corrections"] < recipe.min_corrections:
            waited = (datetime.now(UTC) - datetime.fromisoformat(run.data["triggered_at"])).total_seconds()
            if waited < recipe.wait_for_corrections_s:
                message = (
                    f"waiting for corrections of slice {slice_value!r}: {counts['corrections']} of "
                    f"{recipe.min_corrections} (recipe.min_corrections)"
                )
                if run.data.get("waiting_for") != counts["corrections"]:  # one event per new count
                    run.data["waiting_for"] = counts["corrections"]
                    self.store.save(run)
                    self._event(run, "waiting", message, evidence={"feedback": counts})
                return TickResult(TRIGGERED, message, run.id)
            self._move(
                run,
                FAILED,
                f"only {counts['corrections']} corrected examples in slice {slice_value!r}; "
                f"need {recipe.min_corrections} (recipe.min_corrections; waited "
                f"{recipe.wait_for_corrections_s:.0f} s, recipe.wait_for_corrections_s)",
                {"feedback": counts},
            )
            return TickResult(FAILED, "not enough data", run.id)
        config = recipe.template()
        config.update(
            {
                "name": f"{s.adapter}-{slice_value or 'retrain'}".replace("_", "-")[:60],
                "data": {**config.get("data", {}), "sources": sources},
            }
        )
        config.setdefault("output", {}).setdefault("runs_dir", str(self.state_dir / "runs"))
        if self.base_model_path is not None:
            config["base_model"] = str(self.base_model_path)
            config["base_model_id"] = self.registry.base_model_id
        preference = recipe.style()  # dpo / kto: kept; the champion is the start and the reference
        if preference is not None:
            config["style"] = preference
            if champion is not None:
                config["init_adapter"] = str(self.registry.local_path(champion))
        elif champion is not None:
            config["style"] = "sequential"
            config["init_adapter"] = str(self.registry.local_path(champion))
        else:
            config["style"] = "multitask" if len(sources) > 1 else "sft"
        run.data["training_config"] = config
        run.data["dataset"] = {"sources": sources, "slice": slice_value, "feedback": counts}
        self._move(
            run,
            DATASET_BUILT,
            f"dataset: {counts['corrections']} corrections"
            + (f" + {counts['accepted']} accepted answers" if recipe.include_accepted else "")
            + f" of slice {slice_value!r}"
            + (" + replay" if recipe.replay else ""),
            {"dataset": run.data["dataset"]},
        )
        return TickResult(DATASET_BUILT, "dataset built", run.id)

    def _materialize(self, config: dict[str, Any]) -> dict[str, Any]:
        """The stored training config with the request-log placeholder replaced by the real URL."""
        out = json.loads(json.dumps(config))
        for source in out.get("data", {}).get("sources", []):
            if source.get("database_url") == DATABASE_URL_PLACEHOLDER:
                source["database_url"] = self.db_url
        return dict(out)

    def _dispatch_training(self, run: LoopRun) -> TickResult:
        self._job = self.training.submit(self._materialize(run.data["training_config"]))
        run.data["training_started_at"] = datetime.now(UTC).isoformat()
        self.metrics.training("started")
        self._move(run, TRAINING, "training dispatched (Ray task; GPU when the cluster has one)")
        return TickResult(TRAINING, "training dispatched", run.id)

    def _await_training(self, run: LoopRun) -> TickResult:
        if self._job is None:  # restarted mid-training: the task died with the old process; start again
            self._event(run, "resumed", "loop restarted during training: dispatching the training again")
            self._job = self.training.submit(self._materialize(run.data["training_config"]))
            return TickResult(TRAINING, "training re-dispatched", run.id)
        if not self._job.done():
            return TickResult(TRAINING, "training in progress", run.id)
        result = self._job.wait(0)
        self._job = None
        started = datetime.fromisoformat(run.data["training_started_at"])
        run.data["training_minutes"] = (datetime.now(UTC) - started).total_seconds() / 60
        if result.status != "succeeded":
            err = result.error
            self.metrics.training("failed")
            self._move(
                run,
                FAILED,
                f"training {result.status}: {err.message if err else ''}",
                {"run_id": result.run_id, "error": err.code if err else None},
            )
            return TickResult(FAILED, "training failed", run.id)
        run.data["training"] = {
            "run_id": result.run_id,
            "adapter_dir": str(result.adapter_dir),
            "run_dir": str(result.run_dir),
            "metrics": result.metrics,
            "device": result.device,
            "duration_s": result.duration_s,
        }
        self._move(
            run,
            TRAINED,
            f"training {result.run_id} finished on {result.device} in {result.duration_s:.0f} s",
            {"metrics": result.metrics},
        )
        return TickResult(TRAINED, "trained", run.id)

    def _register_and_gate(self, run: LoopRun) -> TickResult:
        from serving.hotswap import swap_alias

        s = self.spec
        if "challenger" not in run.data:
            adapter_dir = Path(run.data["training"]["adapter_dir"])
            champion = self.champion()
            version = self.registry.register_trained(
                adapter_dir,
                s.adapter,
                parent=champion.ref if champion else None,
                training_config=run.data["training_config"],
                metadata={"loop_run": run.id},
                actor="loop",
            )
            swap_alias(
                self.registry,
                s.adapter,
                "challenger",
                version.version,
                actor="loop",
                reason=f"loop run {run.id}",
            )
            run.data["challenger"] = version.ref
            run.data["champion_at_gate"] = champion.ref if champion else None
            self._move(
                run,
                GATING,
                f"registered {version.short_ref} as {s.adapter}@challenger; gating",
                {"challenger": version.ref, "parent": version.parent},
            )
        gate_result = self._gate(run)
        run.data["gate"] = gate_result
        self.registry.update_metadata(
            s.adapter, run.data["challenger"].split("@", 1)[1], eval_results={"gate": gate_result}
        )
        if gate_result["passed"]:
            self.metrics.training("passed")
        if not gate_result["passed"]:
            self._cleanup_challenger(run)
            self._move(run, REJECTED, f"gate failed: {gate_result['summary']}", {"gate": gate_result})
            return TickResult(REJECTED, "gate failed", run.id)
        policy = CanaryPolicy.from_settings(s.canary)
        run.data["canary"] = {
            "weights": list(policy.steps),
            "champion_arm": f"{s.adapter}@champion" if self.champion() else self.registry.base_model_id,
            "challenger_arm": f"{s.adapter}@challenger",
            "state": policy.start().to_dict(),
            "steps": [],
        }
        run.data["canary_started_at"] = datetime.now(UTC).isoformat()
        exp_name = self._start_canary_step(run, 0)
        plan = " → ".join(f"{w:.0%}" for w in policy.steps)
        self._move(
            run,
            CANARY,
            f"gate passed; canary {plan} → promote: step 1 sends {policy.steps[0]:.0%} of '{s.adapter}' "
            f"traffic to the challenger ({exp_name})",
            {"gate": gate_result, "experiment": exp_name, "canary": _canary_settings(policy)},
        )
        return TickResult(CANARY, "canary started", run.id)

    def _gate(self, run: LoopRun) -> dict[str, Any]:
        from evals.gate import GatePolicy, gate
        from evals.runner import RunOptions, run_suite

        s = self.spec
        suites = s.suites.names()
        base_url = f"{s.service_url.rstrip('/')}/v1"
        out_dir = self.state_dir / run.id / "evals"
        champ_model = f"{s.adapter}@champion" if self.champion() else self.registry.base_model_id
        champion_runs, challenger_runs = [], []
        for suite in suites:
            options = RunOptions(concurrency=s.gate.concurrency, resume=False)
            champion_runs.append(
                run_suite(suite, champ_model, base_url, out_dir=out_dir / "champion", options=options)
            )
            challenger_runs.append(
                run_suite(
                    suite,
                    f"{s.adapter}@challenger",
                    base_url,
                    out_dir=out_dir / "challenger",
                    options=options,
                )
            )
        decision = gate(
            champion_runs,
            challenger_runs,
            GatePolicy(margin=s.gate.margin, regression_per_slice=s.gate.regression_per_slice),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gate.json").write_text(decision.to_json())
        try:
            from evals.report import eval_report, write_report

            write_report(
                eval_report(
                    [*champion_runs, *challenger_runs],
                    decision=decision,
                    title=f"Gate: {s.adapter} challenger vs champion",
                ),
                out_dir / "gate-report",
            )
        except Exception:  # noqa: BLE001 - a report is nice to have, the decision is what matters
            log.warning("could not write the gate report", exc_info=True)
        result = decision.to_dict()
        result["suites"] = {
            r.suite: {"metric": r.primary_metric, "champion": _primary(r), "challenger": _primary(c)}
            for r, c in zip(champion_runs, challenger_runs, strict=True)
        }
        result["report_dir"] = str(out_dir)
        return result

    def _start_canary_step(self, run: LoopRun, index: int) -> str:
        """Route the step's share of the adapter's traffic to the challenger: an experiment per step
        (arms are pinned at creation, so a new weight is a new experiment). Idempotent: a step whose
        experiment already runs (a loop that died right after creating it) keeps it."""
        s, canary = self.spec, run.data["canary"]
        weight = canary["weights"][index]
        name = canary_experiment_name(s.adapter, run.id, index)
        existing = {e.name: e for e in self.registry.list_experiments()}
        if name not in existing:
            self.registry.create_experiment(
                name,
                [(canary["champion_arm"], 1 - weight), (canary["challenger_arm"], weight)],
                intercept=s.adapter,
                description=f"canary of loop run {run.id}, step {index + 1} ({weight:.0%})",
            )
        if len(canary["steps"]) <= index:
            canary["steps"].append(
                {
                    "step": index + 1,
                    "weight": weight,
                    "experiment": name,
                    "started_at": datetime.now(UTC).isoformat(),
                }
            )
        run.data["experiment"] = name
        return name

    def _canary_plan(self, run: LoopRun) -> dict[str, Any]:
        """The run's canary record; a run started before progressive canaries (one experiment, no
        `canary` record) becomes a one-step canary at that experiment's weight."""
        if "canary" not in run.data:
            exp = self.registry.get_experiment(run.data["experiment"])
            total = sum(a.weight for a in exp.arms)
            challenger = next(a for a in exp.arms if a.model.endswith("@challenger"))
            champion = next(a for a in exp.arms if a is not challenger)
            run.data["canary"] = {
                "weights": [challenger.weight / total],
                "champion_arm": champion.model,
                "challenger_arm": challenger.model,
                "state": CanaryState().to_dict(),
                "steps": [
                    {
                        "step": 1,
                        "weight": challenger.weight / total,
                        "experiment": exp.name,
                        "started_at": run.data["canary_started_at"],
                    }
                ],
            }
        canary: dict[str, Any] = run.data["canary"]
        return canary

    def _canary(self, run: LoopRun) -> TickResult:
        """One look at the canary: the rule of `monitoring.canary` on the request log; wait, advance to
        the next weight, promote, or roll back. Every step's end is an event with its statistics."""
        from serving.hotswap import swap_alias

        s = self.spec
        canary = self._canary_plan(run)
        policy = replace(CanaryPolicy.from_settings(s.canary), steps=tuple(canary["weights"]))
        state = CanaryState.from_dict(canary["state"])
        score_batch(self.db_url, scorers=s.scorers, slice_keys=self._slice_keys)
        champ_arm, chall_arm = canary["champion_arm"], canary["challenger_arm"]
        experiments = [step["experiment"] for step in canary["steps"]]
        steps, chall_health, champ_health = _canary_observations(
            self.db_url, experiments, s.canary.scorer, champ_arm, chall_arm
        )
        started = datetime.fromisoformat(run.data["canary_started_at"])
        elapsed = (datetime.now(UTC) - started).total_seconds()
        decision = policy.decide(state, CanaryObservation(steps, chall_health, champ_health, elapsed))
        canary["state"] = decision.state.to_dict()
        canary["last_look"] = decision.statistics
        totals = decision.statistics
        ab: dict[str, Any] = {
            "arms": {
                champ_arm: {"n": totals["n_total"]["champion"], "mean": totals["mean_total"]["champion"]},
                chall_arm: {"n": totals["n_total"]["challenger"], "mean": totals["mean_total"]["challenger"]},
            }
        }
        run.data["ab"] = ab
        if decision.action == Action.WAIT:
            self.store.save(run)  # the test's running bounds survive a restart
            return TickResult(CANARY, decision.message, run.id)
        record = canary["steps"][decision.step]
        record.update(
            {
                "ended_at": datetime.now(UTC).isoformat(),
                "decision": str(decision.action),
                **decision.statistics,
            }
        )
        if decision.action == Action.ADVANCE:
            self._event(run, "canary_step", decision.message, evidence=decision.statistics)
            self.registry.stop_experiment(run.data["experiment"])
            self._start_canary_step(run, decision.step + 1)
            self.store.save(run)
            return TickResult(CANARY, decision.message, run.id)
        try:
            from evals.ab import ab_report

            ab["report"] = ab_report(run.data["experiment"], self.db_url, control=champ_arm).to_dict()
        except Exception as exc:  # noqa: BLE001 - the decision is made; the report is for people
            ab["report_error"] = str(exc)
        evidence = {"canary": canary, "ab": ab}
        if decision.action == Action.ROLLBACK:
            self._cleanup_challenger(run)
            self._move(run, ROLLED_BACK, decision.message, evidence)
            return TickResult(ROLLED_BACK, f"canary: rolled back ({decision.reason})", run.id)
        self.registry.stop_experiment(run.data["experiment"])
        version = run.data["challenger"].split("@", 1)[1]
        swap = swap_alias(
            self.registry,
            s.adapter,
            "champion",
            version,
            actor="loop",
            reason=f"promoted by loop run {run.id}",
        )
        try:
            self.registry.delete_alias(s.adapter, "challenger", actor="loop", reason="promoted")
        except Exception:  # noqa: BLE001
            log.warning("could not delete the challenger alias", exc_info=True)
        self._move(
            run,
            PROMOTED,
            f"promoted {run.data['challenger'][: len(s.adapter) + 13]} to {s.adapter}@champion "
            f"({decision.message})",
            {**evidence, "swap": swap.to_dict()},
        )
        return TickResult(PROMOTED, "promoted", run.id)

    def _cleanup_challenger(self, run: LoopRun) -> None:
        """Retire the challenger: stop its canary, drop the alias; the champion keeps serving."""
        s = self.spec
        exp = run.data.get("experiment")
        if exp:
            try:
                self.registry.stop_experiment(exp)
            except Exception:  # noqa: BLE001
                log.warning("could not stop %s", exp, exc_info=True)
        if run.data.get("challenger"):
            try:
                self.registry.delete_alias(
                    s.adapter, "challenger", actor="loop", reason=f"retired ({run.id})"
                )
            except Exception:  # noqa: BLE001
                log.debug("no challenger alias to delete")

    # ================================================================== driving
    def run(self, stop: threading.Event, *, on_tick: Callable[[TickResult], None] | None = None) -> None:
        """Tick until `stop` is set (holding the loop lock)."""
        self.store.acquire(stale_after_s=self.spec.lock_stale_after_s)
        open_run = self.store.open_run()
        self.metrics.set_state(open_run.state if open_run is not None else WATCHING)
        if open_run is not None:
            self._event(
                open_run,
                "resumed",
                f"loop started with run {open_run.id} open in state {open_run.state}: resuming it",
            )
        try:
            while not stop.is_set():
                try:
                    result = self.tick()
                except LockHeldError:
                    raise  # another loop owns this adapter now: stop, never run two
                except Exception as exc:  # noqa: BLE001 - a failed check must not kill the loop
                    log.exception("loop tick failed")
                    try:
                        self.store.event(
                            "error", f"tick failed: {exc!r}; retrying", evidence={"error": repr(exc)}
                        )
                    except Exception:  # noqa: BLE001 - the database may be what failed
                        log.warning("could not record the failed tick", exc_info=True)
                    result = TickResult(WATCHING, f"tick failed: {exc}")
                if on_tick is not None:
                    on_tick(result)
                busy = result.state in (TRIGGERED, DATASET_BUILT, TRAINED, GATING)
                stop.wait(
                    1.0
                    if busy
                    else (2.0 if result.state in (TRAINING, CANARY) else self.spec.windows.check_interval_s)
                )
        finally:
            self.store.release()

    def status(self) -> dict[str, Any]:
        run = self.store.open_run()
        champion = self.champion()
        return {
            "loop": self.store.loop,
            "state": run.state if run else WATCHING,
            "run": run.id if run else None,
            "champion": champion.ref if champion else None,
            "recent_runs": [
                {"id": r.id, "state": r.state, "outcome": r.outcome, "started_at": r.started_at.isoformat()}
                for r in self.store.runs(limit=10)
            ],
        }


# ---------------------------------------------------------------------- helpers
def _grown_slice(reference: Counter[str], live: Counter[str]) -> str | None:
    """The slice whose share of traffic grew most from the reference to the live window."""
    if not live:
        return None
    n_ref, n_live = max(sum(reference.values()), 1), sum(live.values())
    growth = {k: live[k] / n_live - reference.get(k, 0) / n_ref for k in live}
    best = max(growth, key=lambda k: growth[k])
    return best if growth[best] > 0 else None


def _count_feedback(
    db_url: str, adapter: str, tags: dict[str, Any], since: datetime, min_rating: float
) -> dict[str, int]:
    """Served requests of `adapter` (in the slice `tags`, since `since`) with a correction, and those
    accepted without one (thumbs up or rating >= min_rating): counted apart."""
    import sqlalchemy as sa

    with opened(db_url) as engine:
        req, fb = requests_table, feedback_table
        q = (
            sa.select(req.c.id, req.c.tags, fb.c.tags, fb.c.correction, fb.c.thumbs, fb.c.rating)
            .select_from(fb.join(req, req.c.id == fb.c.request_id))
            .where(
                req.c.served_name == adapter,
                req.c.shadow_of.is_(None),
                req.c.status_code == 200,
                req.c.created_at >= since,
            )
            .order_by(fb.c.created_at, fb.c.id)
        )
        with engine.connect() as conn:
            rows = conn.execute(q).all()
    late: dict[str, list[Any]] = {}
    for request_id, _, feedback_tags, *_ in rows:
        late.setdefault(request_id, []).append(feedback_tags)
    corrected: set[str] = set()
    accepted: set[str] = set()
    for request_id, request_tags, _, correction, thumbs, rating in rows:
        tagd = merged_tags(request_tags, late[request_id])
        if any(tagd.get(k) != v for k, v in tags.items()):
            continue
        if correction and correction.strip():
            corrected.add(request_id)
        elif thumbs == 1 or (rating is not None and rating >= min_rating):
            accepted.add(request_id)
    return {"corrections": len(corrected), "accepted": len(accepted - corrected)}


def canary_experiment_name(adapter: str, run_id: str, index: int) -> str:
    """The experiment of canary step `index` (0-based) of run `run_id`: `<adapter>-canary-<run>[-s<n>]`,
    the adapter part shortened so the name fits the registry's name length."""
    suffix = f"-canary-{run_id[-6:]}" + (f"-s{index + 1}" if index else "")
    return adapter[: NAME_MAX_LEN - len(suffix)] + suffix


def _canary_settings(policy: CanaryPolicy) -> dict[str, Any]:
    return {
        "steps": list(policy.steps),
        "alpha": policy.alpha,
        "mde": policy.mde,
        "min_requests_per_step": policy.min_requests_per_step,
        "max_requests_per_step": policy.max_requests_per_step,
        "guardrails": asdict(policy.guardrails),
        "srm_p_value": policy.srm_p_value,
        "timeout_s": policy.timeout_s,
    }


_REFUSAL = [re.compile(p, re.IGNORECASE) for p in DEFAULT_REFUSAL_PATTERNS]


def _empty_or_refusal(response: str | None) -> bool:
    head = (response or "")[:400]
    return not head.strip() or any(p.search(head) for p in _REFUSAL)


def _canary_observations(
    db_url: str, experiments: list[str], scorer: str, champion_arm: str, challenger_arm: str
) -> tuple[list[StepData], ArmHealth, ArmHealth]:
    """From the request log: per step (one experiment each, in order) the arms' `scorer` scores and
    routed requests; over all steps each arm's health (errors, empty/refused answers, latencies)."""
    import sqlalchemy as sa

    req, sc = requests_table, scores_table
    primary = (req.c.experiment.in_(experiments), req.c.shadow_of.is_(None))
    scores_q = (
        sa.select(req.c.experiment, req.c.arm, sc.c.score)
        .select_from(sc.join(req, req.c.id == sc.c.request_id))
        .where(*primary, sc.c.scorer == scorer)
    )
    requests_q = sa.select(
        req.c.experiment, req.c.arm, req.c.status_code, req.c.response, req.c.latency_ms
    ).where(*primary)
    with opened(db_url) as engine, engine.connect() as conn:
        score_rows = conn.execute(scores_q).all()
        request_rows = conn.execute(requests_q).all()
    scores: dict[tuple[str, str], list[float]] = {}
    for exp, arm, score in score_rows:
        scores.setdefault((str(exp), str(arm)), []).append(float(score))
    routed: Counter[tuple[str, str]] = Counter()
    health: dict[str, dict[str, Any]] = {
        arm: {"requests": 0, "errors": 0, "empty": 0, "latencies": []}
        for arm in (champion_arm, challenger_arm)
    }
    for exp, arm, status, response, latency in request_rows:
        routed[(str(exp), str(arm))] += 1
        h = health.get(str(arm))
        if h is None:
            continue
        h["requests"] += 1
        if status != 200:
            h["errors"] += 1
            continue
        h["empty"] += _empty_or_refusal(response)
        if latency is not None:
            h["latencies"].append(float(latency))
    steps = [
        StepData(
            champion=ArmScores.of(scores.get((exp, champion_arm), [])),
            challenger=ArmScores.of(scores.get((exp, challenger_arm), [])),
            routed_champion=routed[(exp, champion_arm)],
            routed_challenger=routed[(exp, challenger_arm)],
        )
        for exp in experiments
    ]

    def arm_health(arm: str) -> ArmHealth:
        h = health[arm]
        return ArmHealth(h["requests"], h["errors"], h["empty"], tuple(h["latencies"]))

    return steps, arm_health(challenger_arm), arm_health(champion_arm)


def _primary(run: Any) -> float | None:
    """The run's overall value of its primary metric."""
    summary = run.summaries.get(run.primary_metric, {}).get(run.ALL)
    return float(summary.value) if summary is not None else None
