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
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from monitoring.drift.checks import check_input_drift, check_quality_drift, input_detector
from monitoring.errors import DriftInputError
from monitoring.loop_store import LockHeldError, LoopRun, LoopStore
from monitoring.metrics import LoopMetrics
from monitoring.policy import LoopState, TrainingRecord, TriggerPolicy
from monitoring.scorers.batch import score_batch
from monitoring.store import (
    feedback_table,
    load_prompts,
    load_score_stream,
    opened,
    requests_table,
    scores_table,
)

log = logging.getLogger("tuneloop.loop")

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
STATES = (
    WATCHING,
    TRIGGERED,
    DATASET_BUILT,
    TRAINING,
    TRAINED,
    GATING,
    CANARY,
    PROMOTED,
    ROLLED_BACK,
    REJECTED,
    FAILED,
)
TERMINAL = (PROMOTED, ROLLED_BACK, REJECTED, FAILED)
DATABASE_URL_PLACEHOLDER = "${TUNELOOP_LOOP_DATABASE_URL}"
"""Stands for the loop's database URL in stored training configs (runs, registry lineage), so that a
password in the URL is never written to the database; replaced when the training is dispatched."""


class CanarySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(0.3, gt=0, lt=1)
    """Share of the adapter's live traffic the challenger gets during the canary."""
    min_requests_per_arm: int = Field(20, ge=1)
    scorer: str = "reference"
    """Score used to compare the arms (must be produced by the scorers on live traffic)."""
    margin: float = Field(0.05, ge=0, le=1)
    """Promote unless the challenger's mean score is worse than the champion's by more than this."""
    timeout_s: float = Field(900.0, gt=0)
    """Give up (roll back) when the arms have not collected enough scored requests by then."""


class LoopSettings(BaseModel):
    """What the loop watches and how it retrains (validated before the loop starts)."""

    model_config = ConfigDict(extra="forbid")

    adapter: str = "support"
    """The adapter name whose `champion` the loop keeps good (clients send model=<adapter>)."""
    database_url: str
    service_url: str = "http://127.0.0.1:8000"
    policy: TriggerPolicy = Field(default_factory=TriggerPolicy)
    slice_tag: str = "intent"
    """Request tag that names a traffic slice; the slice that grew most is the retraining target."""
    reference_size: int = Field(200, ge=10)
    """Prompts in the reference window: the champion's first traffic."""
    live_size: int = Field(200, ge=10)
    """Prompts in the live window: the newest traffic of the champion."""
    quality_scorer: str = "reference"
    scorers: list[Any] = Field(
        default_factory=lambda: [
            "feedback",
            {"kind": "reference", "metric": "contains_answer"},
            "empty",
            "refusal",
            "repetition",
            "truncation",
        ]
    )
    """Scorers run on new traffic (names or `{kind: ..., options}`; see `monitoring.scorers`)."""
    check_interval_s: float = Field(15.0, gt=0)
    training: dict[str, Any] = Field(default_factory=dict)
    """Training config template (`training.config.TrainingConfig` fields); the loop fills in name, style,
    base model, init adapter and data sources."""
    replay_path: Path | None = None
    """Earlier training data (chat JSONL) mixed in against forgetting."""
    replay_weight: float = Field(1.0, gt=0)
    min_corrections: int = Field(10, ge=1)
    """Corrected/accepted examples of the drifted slice needed before training starts."""
    target_suite: str | None = "support_target"
    regression_suite: str | None = "support_regression"
    gate_margin: float | None = None
    """Non-inferiority margin on the regression suite (None: the suite's own `gate.margin`)."""
    gate_regression_per_slice: bool = True
    """Also require non-inferiority on every slice of the regression suite on its own (needs enough
    examples per slice to have the power to show it)."""
    eval_concurrency: int = Field(8, ge=1)
    canary: CanarySettings = Field(default_factory=CanarySettings)
    state_dir: Path = Path("~/.cache/tuneloop/loop").expanduser()
    backoff_minutes: float = Field(10.0, ge=0)
    """After a failed training, wait this long before triggering again."""
    lock_stale_after_s: float = Field(60.0, gt=0)
    """A loop whose lock heartbeat is older than this is presumed dead; a new loop takes over its lock
    and resumes its open run."""


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
        settings: LoopSettings,
        registry: Any,
        *,
        base_model_path: Path | None = None,
        on_event: EventHook | None = None,
        train_fn: Callable[..., Any] | None = None,
        metrics: LoopMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or LoopMetrics(states=STATES)
        self.registry = registry
        self.base_model_path = base_model_path
        self.store = LoopStore(settings.database_url, loop=f"{registry.base_model_id}/{settings.adapter}")
        self.on_event = on_event
        self._train_fn = train_fn
        self._job: Any = None
        self._canary_started: float | None = None
        self._champion_since: datetime | None = None
        self.last_reports: list[Any] = []
        self.last_decision: Any = None
        settings.state_dir.mkdir(parents=True, exist_ok=True)

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
        for v in self.registry.list(self.settings.adapter):
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
        s = self.settings
        version = champion.version if champion is not None else None
        with opened(s.database_url) as engine:
            reference = load_prompts(
                engine,
                served_name=s.adapter,
                served_version=version,
                limit=s.reference_size,
                newest_first=False,
            )
            live = load_prompts(engine, served_name=s.adapter, served_version=version, limit=s.live_size)
        ref_ids = {r.id for r in reference}
        live = [r for r in live if r.id not in ref_ids]
        return reference, live

    def check(self) -> tuple[list[Any], Any, dict[str, Any]]:
        """Score new traffic, run the drift detectors, ask the policy: (reports, decision, context)."""
        s = self.settings
        self.metrics.observe_scores(score_batch(s.database_url, scorers=s.scorers))
        champion = self.champion()
        reference, live = self._windows(champion)
        reports = []
        context: dict[str, Any] = {
            "champion": champion.ref if champion else None,
            "n_reference": len(reference),
            "n_live": len(live),
        }
        # below the detector's own minimum a check means nothing (and would embed both windows for
        # nothing): wait for traffic. The policy's min_samples decides when a report may trip.
        detector = input_detector("mmd")
        if len(reference) >= detector.min_samples and len(live) >= detector.min_samples:
            try:
                report = check_input_drift(
                    [r.user_text for r in reference],
                    [r.user_text for r in live],
                    detector=detector,
                    subject=f"{s.adapter}@{champion.version[:12] if champion else 'base'}",
                )
                reports.append(report)
            except DriftInputError as exc:
                context["input_drift_skipped"] = str(exc)
        with opened(s.database_url) as engine:
            stream = load_score_stream(
                engine,
                s.quality_scorer,
                served_name=s.adapter,
                served_version=champion.version if champion else None,
            )
        if len(stream) >= 20:
            reports.append(
                check_quality_drift([v for _, _, v in stream], subject=f"{s.adapter}:{s.quality_scorer}")
            )
        ref_slices = Counter(str(r.tags.get(s.slice_tag)) for r in reference if r.tags.get(s.slice_tag))
        live_slices = Counter(str(r.tags.get(s.slice_tag)) for r in live if r.tags.get(s.slice_tag))
        context["slices"] = {"reference": dict(ref_slices), "live": dict(live_slices)}
        context["drifted_slice"] = _grown_slice(ref_slices, live_slices)
        for report in reports:
            self.metrics.observe_drift(report)
        decision = s.policy.decide(self._policy_state(), reports, datetime.now(UTC))
        self.last_reports, self.last_decision = reports, decision
        return reports, decision, context

    # ================================================================== steps
    def tick(self) -> TickResult:
        """Advance by at most one step; safe to call again after a crash (steps are idempotent)."""
        self.store.heartbeat()
        run = self.store.open_run()
        if run is None:
            self.metrics.set_state(WATCHING)
            return self._watch()
        step = {
            TRIGGERED: self._build_dataset,
            DATASET_BUILT: self._dispatch_training,
            TRAINING: self._await_training,
            TRAINED: self._register_and_gate,
            GATING: self._register_and_gate,
            CANARY: self._canary,
        }.get(run.state)
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
            until = recent[0].updated_at + timedelta(minutes=self.settings.backoff_minutes)
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
        self._prewarm_training_worker()
        return TickResult(TRIGGERED, "retraining triggered", run.id)

    def _prewarm_training_worker(self) -> None:
        """Real training through Ray only: warm a worker (process + imports) while the dataset is built, so
        the dispatch a few seconds later does not pay for it (benchmarks/training_dispatch_overhead)."""
        if self._train_fn is not None:
            return
        try:
            from training.dispatch import prewarm

            prewarm()
        except Exception as exc:  # noqa: BLE001 - an optimisation: never let it fail the loop
            log.info("loop: could not pre-warm a training worker: %s", exc)

    def _build_dataset(self, run: LoopRun) -> TickResult:
        s = self.settings
        champion = self.champion()
        slice_value = run.data.get("drifted_slice")
        tags = {s.slice_tag: slice_value} if slice_value else {}
        since = datetime.fromisoformat(run.data["triggered_at"]) - timedelta(days=7)
        sources: list[dict[str, Any]] = [
            {
                "kind": "request_log",
                "name": f"feedback-{slice_value or 'all'}",
                "database_url": DATABASE_URL_PLACEHOLDER,  # stored configs never carry credentials
                "served_name": s.adapter,
                "tags": tags,
                "include_accepted": True,
                "since": since.isoformat(),
            }
        ]
        if s.replay_path is not None:
            sources.append(
                {"kind": "file", "name": "replay", "path": str(s.replay_path), "weight": s.replay_weight}
            )
        n_examples = _count_corrections(s.database_url, s.adapter, tags)
        if n_examples < s.min_corrections:
            self._move(
                run,
                FAILED,
                f"only {n_examples} corrected/accepted examples in slice {slice_value!r}; "
                f"need {s.min_corrections}",
                {"examples": n_examples},
            )
            return TickResult(FAILED, "not enough data", run.id)
        base = self.base_model_path
        config: dict[str, Any] = json.loads(json.dumps(s.training))
        config.update(
            {
                "name": f"{s.adapter}-{slice_value or 'retrain'}".replace("_", "-")[:60],
                "data": {**config.get("data", {}), "sources": sources},
            }
        )
        if base is not None:
            config["base_model"] = str(base)
            config["base_model_id"] = self.registry.base_model_id
        if champion is not None:
            config["style"] = "sequential"
            config["init_adapter"] = str(self.registry.local_path(champion))
        else:
            config["style"] = "multitask" if len(sources) > 1 else "sft"
        run.data["training_config"] = config
        run.data["dataset"] = {"sources": sources, "slice": slice_value, "examples_in_slice": n_examples}
        self._move(
            run,
            DATASET_BUILT,
            f"dataset: {n_examples} feedback examples of slice {slice_value!r}"
            + (" + replay" if s.replay_path else ""),
            {"dataset": run.data["dataset"]},
        )
        return TickResult(DATASET_BUILT, "dataset built", run.id)

    def _training(self) -> Callable[..., Any]:
        if self._train_fn is not None:
            return self._train_fn
        from training.api import submit

        return submit

    def _materialize(self, config: dict[str, Any]) -> dict[str, Any]:
        """The stored training config with the request-log placeholder replaced by the real URL."""
        out = json.loads(json.dumps(config))
        for source in out.get("data", {}).get("sources", []):
            if source.get("database_url") == DATABASE_URL_PLACEHOLDER:
                source["database_url"] = self.settings.database_url
        return dict(out)

    def _dispatch_training(self, run: LoopRun) -> TickResult:
        self._job = self._training()(self._materialize(run.data["training_config"]), use_ray=True)
        run.data["training_started_at"] = datetime.now(UTC).isoformat()
        self.metrics.training("started")
        self._move(run, TRAINING, "training dispatched (Ray task; GPU when the cluster has one)")
        return TickResult(TRAINING, "training dispatched", run.id)

    def _await_training(self, run: LoopRun) -> TickResult:
        if self._job is None:  # restarted mid-training: the task died with the old process; start again
            self._event(run, "resumed", "loop restarted during training: dispatching the training again")
            self._job = self._training()(self._materialize(run.data["training_config"]), use_ray=True)
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

        s = self.settings
        if "challenger" not in run.data:
            adapter_dir = Path(run.data["training"]["adapter_dir"])
            manifest_path = adapter_dir.parent / "tuneloop_manifest.json"
            if not manifest_path.is_file():
                manifest_path = adapter_dir / "tuneloop_manifest.json"
            manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
            champion = self.champion()
            version = self.registry.register(
                adapter_dir,
                s.adapter,
                parent=champion.ref if champion else None,
                dataset_hash=(manifest.get("dataset") or {}).get("hash"),
                training_config=run.data["training_config"],
                metadata={"loop_run": run.id, "manifest": manifest},
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
        exp_name = f"{s.adapter}-canary-{run.id[-6:]}"
        arms = [(f"{s.adapter}@champion", 1 - s.canary.weight), (f"{s.adapter}@challenger", s.canary.weight)]
        if self.champion() is None:
            arms[0] = (self.registry.base_model_id, 1 - s.canary.weight)
        self.registry.create_experiment(
            exp_name, arms, intercept=s.adapter, description=f"canary of loop run {run.id}"
        )
        run.data["experiment"] = exp_name
        run.data["canary_started_at"] = datetime.now(UTC).isoformat()
        self._move(
            run,
            CANARY,
            f"gate passed; canary {exp_name}: {s.canary.weight:.0%} of '{s.adapter}' "
            "traffic to the challenger",
            {"gate": gate_result, "experiment": exp_name},
        )
        return TickResult(CANARY, "canary started", run.id)

    def _gate(self, run: LoopRun) -> dict[str, Any]:
        from evals.gate import GatePolicy, gate
        from evals.runner import RunOptions, run_suite

        s = self.settings
        suites = [x for x in (s.target_suite, s.regression_suite) if x]
        base_url = f"{s.service_url.rstrip('/')}/v1"
        out_dir = s.state_dir / run.id / "evals"
        champ_model = f"{s.adapter}@champion" if self.champion() else self.registry.base_model_id
        champion_runs, challenger_runs = [], []
        for suite in suites:
            options = RunOptions(concurrency=s.eval_concurrency, resume=False)
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
            GatePolicy(margin=s.gate_margin, regression_per_slice=s.gate_regression_per_slice),
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

    def _canary(self, run: LoopRun) -> TickResult:
        from serving.hotswap import swap_alias

        s = self.settings
        exp = run.data["experiment"]
        score_batch(s.database_url, scorers=s.scorers)
        arms = _arm_scores(s.database_url, exp, s.canary.scorer)
        started = datetime.fromisoformat(run.data["canary_started_at"])
        elapsed = (datetime.now(UTC) - started).total_seconds()
        champ_arm = f"{s.adapter}@champion"
        chall_arm = f"{s.adapter}@challenger"
        if self.champion() is None:
            champ_arm = self.registry.base_model_id
        n_champ, n_chall = len(arms.get(champ_arm, [])), len(arms.get(chall_arm, []))
        enough = min(n_champ, n_chall) >= s.canary.min_requests_per_arm
        if not enough and elapsed < s.canary.timeout_s:
            return TickResult(
                CANARY, f"canary: {n_champ} champion / {n_chall} challenger scored requests", run.id
            )
        ab: dict[str, Any] = {"arms": {k: {"n": len(v), "mean": _mean(v)} for k, v in arms.items()}}
        try:
            from evals.ab import ab_report

            report = ab_report(exp, s.database_url, control=champ_arm)
            ab["report"] = report.to_dict()
        except Exception as exc:  # noqa: BLE001 - the decision below needs only the arm means
            ab["report_error"] = str(exc)
        run.data["ab"] = ab
        self.registry.stop_experiment(exp)
        champ_mean, chall_mean = _mean(arms.get(champ_arm, [])), _mean(arms.get(chall_arm, []))
        if not enough:
            self._cleanup_challenger(run)
            self._move(run, ROLLED_BACK, f"canary timed out with {n_champ}/{n_chall} scored requests", ab)
            return TickResult(ROLLED_BACK, "canary timed out", run.id)
        if chall_mean < champ_mean - s.canary.margin:
            self._cleanup_challenger(run)
            self._move(
                run,
                ROLLED_BACK,
                f"canary: challenger {chall_mean:.3f} vs champion {champ_mean:.3f} "
                f"({s.canary.scorer}); rolled back",
                ab,
            )
            return TickResult(ROLLED_BACK, "canary worse: rolled back", run.id)
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
            f"promoted {run.data['challenger'][: len(s.adapter) + 13]} to "
            f"{s.adapter}@champion (canary {chall_mean:.3f} vs {champ_mean:.3f})",
            {"ab": ab, "swap": swap.to_dict()},
        )
        return TickResult(PROMOTED, "promoted", run.id)

    def _cleanup_challenger(self, run: LoopRun) -> None:
        """Retire the challenger: stop its canary, drop the alias; the champion keeps serving."""
        s = self.settings
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
        self.store.acquire(stale_after_s=self.settings.lock_stale_after_s)
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
                    else (2.0 if result.state in (TRAINING, CANARY) else self.settings.check_interval_s)
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


def _count_corrections(db_url: str, adapter: str, tags: dict[str, Any]) -> int:
    import sqlalchemy as sa

    with opened(db_url) as engine:
        req, fb = requests_table, feedback_table
        q = (
            sa.select(req.c.tags, fb.c.correction, fb.c.thumbs, fb.c.rating)
            .select_from(fb.join(req, req.c.id == fb.c.request_id))
            .where(req.c.served_name == adapter, req.c.shadow_of.is_(None))
        )
        with engine.connect() as conn:
            rows = conn.execute(q).all()
    n = 0
    for t, correction, thumbs, rating in rows:
        tagd = t if isinstance(t, dict) else (json.loads(t) if t else {})
        if any(tagd.get(k) != v for k, v in tags.items()):
            continue
        if (correction and correction.strip()) or thumbs == 1 or (rating is not None and rating >= 0.8):
            n += 1
    return n


def _arm_scores(db_url: str, experiment: str, scorer: str) -> dict[str, list[float]]:
    import sqlalchemy as sa

    with opened(db_url) as engine:
        req, sc = requests_table, scores_table
        q = (
            sa.select(req.c.arm, sc.c.score)
            .select_from(sc.join(req, req.c.id == sc.c.request_id))
            .where(req.c.experiment == experiment, sc.c.scorer == scorer, req.c.shadow_of.is_(None))
        )
        with engine.connect() as conn:
            rows = conn.execute(q).all()
    out: dict[str, list[float]] = {}
    for arm, score in rows:
        out.setdefault(str(arm), []).append(float(score))
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _primary(run: Any) -> float | None:
    """The run's overall value of its primary metric."""
    summary = run.summaries.get(run.primary_metric, {}).get(run.ALL)
    return float(summary.value) if summary is not None else None


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
