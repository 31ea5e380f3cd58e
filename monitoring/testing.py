"""Test support for the loop: a small world (real registry + SQLite request log) with training and the
eval gate faked, shared by the loop's unit tests and the process-kill test (which drives it from a child
process). Not used by the product code.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from monitoring.loop import LoopController
from monitoring.spec import LoopSpec, parse_spec
from monitoring.store import connect, feedback_table, requests_table
from serving.registry import AdapterRegistry, ArtifactStore
from serving.registry.testing import SMOLLM2_MODULES, write_adapter
from serving.store import Database

__all__ = ["BASE", "FakeJob", "FakeResult", "LoopWorld", "WorldControllerFactory", "drift"]

BASE = "SmolLM2-135M-Instruct"


@dataclass
class FakeResult:
    status: str
    run_id: str
    adapter_dir: Path | None
    run_dir: Path | None
    metrics: dict[str, Any]
    device: str = "cpu"
    duration_s: float = 1.0
    error: Any = None


class FakeJob:
    """A training job that finishes `delay_s` after it was submitted."""

    def __init__(self, result: FakeResult, delay_s: float = 0.0) -> None:
        self.result = result
        self.ready_at = time.monotonic() + delay_s

    def done(self) -> bool:
        return time.monotonic() >= self.ready_at

    def wait(self, timeout: float | None = None) -> FakeResult:
        return self.result


class LoopWorld:
    """One adapter `support` with a champion v1, a request log, and fakes for training and the gate."""

    def __init__(self, tmp: Path, *, train_delay_s: float = 0.0) -> None:
        self.tmp = tmp
        self.train_delay_s = train_delay_s
        self.db_url = f"sqlite:///{tmp / 'tl.db'}"
        self.db = Database(self.db_url)
        self.registry = AdapterRegistry(
            self.db, ArtifactStore(str(tmp / "registry")), BASE, SMOLLM2_MODULES, 16
        )
        self.engine = connect(self.db_url)
        self.n = 0
        self.trainings: list[dict[str, Any]] = []
        self.train_ok = True
        self.prewarms = 0
        self.rng = random.Random(0)
        marker = tmp / "v1.version"
        if marker.exists():  # another process opening the same world
            self.v1 = self.registry.get("support", marker.read_text())
        else:
            self.v1 = self.registry.register(
                write_adapter(tmp / "v1", base_model=BASE, seed=1), "support", alias="champion"
            )
            marker.write_text(self.v1.version)

    def request(
        self,
        intent: str,
        correct: bool,
        *,
        version: str | None = None,
        experiment: str | None = None,
        arm: str | None = None,
        at: datetime | None = None,
        status_code: int = 200,
    ) -> str:
        self.n += 1
        rid = f"chatcmpl-{os.getpid()}-{self.n:05d}"
        prompts = {
            "shipping": [
                "How long does shipping take?",
                "When will my parcel arrive?",
                "Do you ship abroad?",
            ],
            "refunds": [
                "I want my money back for the broken bulb",
                "How do refunds work?",
                "Can I return my order for a refund?",
            ],
        }
        q = self.rng.choice(prompts[intent]) + f" (order {self.rng.randrange(1000)})"
        with self.engine.begin() as conn:
            conn.execute(
                insert(requests_table).values(
                    id=rid,
                    created_at=at or datetime.now(UTC),
                    endpoint="chat.completions",
                    model_requested="support",
                    served_name="support",
                    served_version=version or self.v1.version,
                    experiment=experiment,
                    arm=arm,
                    prompt=json.dumps([{"role": "user", "content": q}]),
                    response=(
                        None if status_code != 200 else ("It takes 3 days." if correct else "I am not sure.")
                    ),
                    status_code=status_code,
                    stream=False,
                    finish_reason="stop",
                    tags={"intent": intent, "reference": "3 days"},
                )
            )
            conn.execute(
                insert(feedback_table).values(
                    request_id=rid,
                    created_at=datetime.now(UTC),
                    thumbs=1 if correct else -1,
                    correction=None if correct else "It takes 3 days.",
                    source="test",
                )
            )
        return rid

    def canary_traffic(
        self,
        experiment: str,
        challenger_version: str,
        *,
        challenger_better: bool,
        per_arm: int = 40,
        champion_arm: str = "support@champion",
        status_code: int = 200,
    ) -> None:
        """`per_arm` scored refund requests per canary arm; the better arm answers every one correctly
        (with the world's canary settings, 40 per arm settle it either way). `status_code` other than 200
        makes the challenger's requests fail (for the guardrails)."""
        for _ in range(per_arm):
            self.request("refunds", correct=not challenger_better, experiment=experiment, arm=champion_arm)
            self.request(
                "refunds",
                correct=challenger_better,
                version=challenger_version,
                experiment=experiment,
                arm="support@challenger",
                status_code=status_code,
            )

    def submit(self, config: dict[str, Any]) -> FakeJob:
        """`TrainingBackend.submit`: record the config, "train" a fresh random adapter."""
        self.trainings.append(config)
        if not self.train_ok:
            return FakeJob(
                FakeResult(
                    "failed",
                    "run-x",
                    None,
                    None,
                    {},
                    error=type("E", (), {"message": "loss is NaN", "code": "diverged"})(),
                )
            )
        out = write_adapter(
            self.tmp / f"trained-{os.getpid()}-{len(self.trainings)}",
            base_model=BASE,
            seed=10 + len(self.trainings),
        )
        return FakeJob(
            FakeResult("succeeded", f"run-{len(self.trainings)}", out, out.parent, {"train_loss": 0.5}),
            self.train_delay_s,
        )

    def prewarm(self) -> None:
        """`TrainingBackend.prewarm`: nothing to warm."""
        self.prewarms += 1

    def spec(self, **kw: Any) -> LoopSpec:
        """A loop spec for the world; `kw` sets fields, `section__field` nested ones (`windows__size`)."""
        raw: dict[str, Any] = {
            "adapter": "support",
            "database_url": self.db_url,
            "slice_key": "intent",
            "policy": {
                "input_drift": {"max_p_value": 0.05, "min_samples": 30, "min_reference_samples": 30},
                "quality_drift": {"min_samples": 10, "min_drop": 0.2},
                "cooldown_minutes": 0,
            },
            "windows": {"reference_size": 40, "live_size": 40},
            "suites": {"target": "general_qa"},
            "recipe": {"min_corrections": 5},
            "state_dir": str(self.tmp / "loop"),
            # one 50 % step, decided on tens of requests (canary_traffic sends 40 per arm)
            "canary": {"steps": [0.5], "min_requests_per_step": 5, "mde": 0.2},
        }
        for key, value in kw.items():
            section, _, field = key.partition("__")
            if field:
                raw.setdefault(section, {})[field] = value
            else:
                raw[key] = value
        return parse_spec(raw)

    def controller(self, gate_passes: bool = True, **kw: Any) -> LoopController:
        c = LoopController(self.spec(**kw), self.registry, base_model_path=self.tmp, training=self)
        c._gate = lambda run: {"passed": gate_passes, "summary": "fake gate", "suites": {}}  # type: ignore[method-assign]
        return c


def drift(w: LoopWorld, n: int = 40) -> None:
    """The world changes: refund questions the champion gets wrong (every 4th request stays shipping)."""
    for i in range(n):
        w.request("refunds" if i % 4 else "shipping", correct=(i % 4 == 0))


@dataclass(frozen=True)
class WorldControllerFactory:
    """Picklable factory for `monitoring.actor.LoopActor`: the world's controller, built in the actor."""

    world_dir: Path
    train_delay_s: float = 0.0
    check_interval_s: float = 0.2
    lock_stale_after_s: float = 2.0

    def __call__(self) -> LoopController:
        world = LoopWorld(self.world_dir, train_delay_s=self.train_delay_s)
        return world.controller(
            windows__check_interval_s=self.check_interval_s, lock_stale_after_s=self.lock_stale_after_s
        )
