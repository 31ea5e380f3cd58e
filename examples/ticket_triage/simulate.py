"""The ticket-triage example end to end, as a user runs it: the first champion through the CLI, clients
sending unlabeled tickets, triagers sending the right label back through `/v1/feedback`, and
`tuneloop loop --spec loop.yaml` doing the rest (drift -> dataset -> training -> gate -> canary -> promote).

    tuneloop serve --config settings.yaml                                     # another terminal
    python examples/ticket_triage/simulate.py --config settings.yaml --url http://127.0.0.1:8000

The integration test (tests/integration/examples/test_ticket_triage.py) and the benchmark
(benchmarks/example_ticket_triage.py) call `run_scenario`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ADAPTER = "triage"
OLD_LABELS = ("billing", "shipping", "account")
NEW_LABEL = "security"
BUSY_STATES = ("dataset_built", "training", "trained", "gating")
"""Loop states in which the clients pause (the two CPU cores go to training and evals)."""


def system_prompt() -> str:
    first = json.loads((HERE / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    return str(first["messages"][0]["content"])


def tickets() -> list[dict[str, str]]:
    lines = (HERE / "data" / "traffic.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Traffic:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    correct: dict[str, list[int]] = field(default_factory=dict)
    """label -> [right, asked]"""
    errors: list[str] = field(default_factory=list)


class Triagers:
    """Clients that send tickets without a label, and the humans who label them afterwards."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url.rstrip("/")
        self.rng = random.Random(seed)
        self.system = system_prompt()
        self.stats = Traffic()
        self._lock = threading.Lock()

    def ask(self, client: httpx.Client, ticket: dict[str, str]) -> None:
        body = {
            "model": ADAPTER,
            "max_tokens": 6,
            "temperature": 0.0,
            "user": f"agent-{self.rng.randrange(50)}",
            "messages": [
                {"role": "system", "content": self.system},
                {"role": "user", "content": ticket["text"]},
            ],
        }
        with self._lock:
            self.stats.sent += 1
        try:
            r = client.post(f"{self.url}/v1/chat/completions", json=body, timeout=300)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            with self._lock:
                self.stats.failed += 1
                self.stats.errors.append(repr(exc)[:200])
            return
        data = r.json()
        answer = (data["choices"][0]["message"]["content"] or "").strip().lower()
        right = answer.split()[:1] == [ticket["label"]]
        feedback: dict[str, Any] = {
            "id": data["id"],
            "thumbs": 1 if right else -1,
            "tags": {"label": ticket["label"]},
            "source": "triager",
        }
        if not right:
            feedback["correction"] = ticket["label"]
        fb = client.post(f"{self.url}/v1/feedback", json=feedback, timeout=60)
        with self._lock:
            self.stats.ok += 1
            tally = self.stats.correct.setdefault(ticket["label"], [0, 0])
            tally[0] += int(right)
            tally[1] += 1
            if fb.status_code != 200:
                self.stats.errors.append(f"feedback {fb.status_code}: {fb.text[:200]}")

    def run(
        self,
        batch: list[dict[str, str]],
        concurrency: int = 4,
        stop: threading.Event | None = None,
        pause: Callable[[], bool] | None = None,
    ) -> None:
        def one(ticket: dict[str, str]) -> None:
            while pause is not None and pause() and not (stop is not None and stop.is_set()):
                time.sleep(0.5)
            if stop is not None and stop.is_set():
                return
            with httpx.Client() as client:
                self.ask(client, ticket)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, batch))


def _tuneloop(*args: str, log: Path, env: dict[str, str] | None = None) -> str:
    cli = shutil.which("tuneloop", path=str(Path(sys.executable).parent)) or "tuneloop"
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ tuneloop {' '.join(args)}\n")
        fh.flush()
        done = subprocess.run(
            [cli, *args], stdout=subprocess.PIPE, stderr=fh, text=True, env=env, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"tuneloop {' '.join(args)} failed ({done.returncode}); see {log}")
    return done.stdout


def _wait_served(url: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    body = {"model": ADAPTER, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
            if r.status_code == 200:
                return r.headers.get("x-tuneloop-served-by", "?")
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{ADAPTER} not served after {timeout_s:.0f} s")


def run_scenario(
    settings: Path,
    url: str,
    work: Path,
    *,
    phase_a: int = 80,
    seed: int = 0,
    timeout_s: float = 1800,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the first champion, serve the old world, change the world, let the loop react; a summary."""
    from monitoring.loop_store import LoopStore
    from monitoring.spec import load_spec
    from serving.models import resolve_base_model
    from tuneloop.settings import load_settings

    work.mkdir(parents=True, exist_ok=True)
    log = work / "scenario.log"
    env = {**os.environ, "TUNELOOP_CONFIG": str(settings)}
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    say("1. training the first 'triage' champion (billing / shipping / account)")
    adapter_dir = (
        _tuneloop(
            "train",
            str(HERE / "train.yaml"),
            "--config",
            str(settings),
            "--no-progress",
            "--set",
            f"output.runs_dir={work / 'runs'}",
            log=log,
            env=env,
        )
        .strip()
        .splitlines()[-1]
    )
    _tuneloop(
        "adapters",
        "register",
        adapter_dir,
        "--name",
        ADAPTER,
        "--alias",
        "champion",
        "--config",
        str(settings),
        log=log,
        env=env,
    )
    served_by = _wait_served(url)
    timings["first_champion_s"] = time.monotonic() - t0
    say(f"   champion {served_by} in {timings['first_champion_s']:.0f} s")

    rng = random.Random(seed)
    pool = tickets()
    old = [t for t in pool if t["label"] in OLD_LABELS]
    new = [t for t in pool if t["label"] == NEW_LABEL]
    triagers = Triagers(url, seed)
    say(f"2. {phase_a} unlabeled tickets; triagers label them through /v1/feedback")
    triagers.run([rng.choice(old) for _ in range(phase_a)])

    base = load_settings(settings)
    spec = load_spec(HERE / "loop.yaml")
    db_url = base.serving.resolved_database_url()
    base_id = base.serving.served_model_id or resolve_base_model(base.serving.base_model).name
    store = LoopStore(db_url, loop=f"{base_id}/{ADAPTER}")
    before = {r.id for r in store.runs(limit=1000)}
    say("3. `tuneloop loop --spec loop.yaml` starts; security tickets (a label nobody told the model) arrive")
    loop_log = (work / "loop.log").open("w", encoding="utf-8")
    cli = shutil.which("tuneloop", path=str(Path(sys.executable).parent)) or "tuneloop"
    loop_proc = subprocess.Popen(
        [
            cli,
            "loop",
            "--spec",
            str(HERE / "loop.yaml"),
            "--config",
            str(settings),
            "--set",
            f"state_dir={work / 'loop'}",
            "--set",
            f"service_url={url}",
        ],
        stdout=loop_log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    drift_at = time.monotonic()
    timings["drift_injected_at_s"] = drift_at - t0
    state = {"value": "watching"}
    stop = threading.Event()
    mixed = [rng.choice(new) if i % 2 == 0 else rng.choice(old) for i in range(3000)]
    traffic = threading.Thread(
        target=triagers.run,
        args=(mixed,),
        kwargs={"stop": stop, "pause": lambda: state["value"] in BUSY_STATES},
        daemon=True,
    )
    traffic.start()
    final = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and loop_proc.poll() is None:
            run = store.open_run()
            if run is None:
                ended = [r for r in store.runs(limit=5) if r.id not in before and r.finished]
                if ended:
                    final = ended[0]
                    break
                state["value"] = "watching"
            elif run.state != state["value"]:
                state["value"] = run.state
                say(f"   loop: {run.state}")
                if run.state == "canary":
                    timings.setdefault("canary_started_s", time.monotonic() - t0)
            time.sleep(1)
    finally:
        stop.set()
        loop_proc.send_signal(signal.SIGTERM)
        try:
            loop_proc.wait(120)
        except subprocess.TimeoutExpired:
            loop_proc.kill()
        traffic.join(120)
        loop_log.close()
    timings["drift_to_outcome_s"] = time.monotonic() - drift_at
    timings["total_s"] = time.monotonic() - t0
    gate = (final.data.get("gate") or {}) if final is not None else {}
    summary = {
        "outcome": final.outcome if final is not None else "timeout",
        "run_id": final.id if final is not None else None,
        "suites": gate.get("suites", {}),
        "gate_summary": gate.get("summary"),
        "drifted_slice": final.data.get("drifted_slice") if final is not None else None,
        "tripped": ((final.data.get("decision") or {}).get("tripped") if final is not None else None),
        "canary": (final.data.get("ab") or {}).get("arms") if final is not None else None,
        "timings": timings,
        "traffic": asdict(triagers.stats),
        "spec": str(HERE / "loop.yaml"),
        "policy": spec.policy.name,
        "logs": {"scenario": str(log), "loop": str(work / "loop.log")},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="tuneloop settings YAML of the service")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--work", type=Path, default=Path("triage-run"))
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    summary = run_scenario(args.config, args.url, args.work, timeout_s=args.timeout)
    print(json.dumps({k: summary[k] for k in ("outcome", "suites", "timings")}, indent=2, default=str))


if __name__ == "__main__":
    main()
