"""Interop: lm-evaluation-harness evaluates our endpoint on local tasks: `local-chat-completions` on a
generation task, and `local-completions` on a multiple-choice (log-likelihood) task whose accuracy must
match transformers' on the same model within 0.05 (it needs completions `echo` + `logprobs`)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[2] / "fixtures" / "evals" / "lm_eval"
RAY_SERVE_LOGS = Path("/tmp/ray/session_latest/logs/serve")


@pytest.fixture
def server_state(request: pytest.FixtureRequest, eval_endpoint: tuple[str, str, bool]) -> Callable[[], str]:
    """What the server side looked like, for a failure message: whether `tuneloop serve` is alive, its
    log tail and the tails of Ray Serve's proxy and controller logs (a disconnect shows there)."""
    if not eval_endpoint[2]:
        return lambda: "(external endpoint: no server logs)"
    service = request.getfixturevalue("tuneloop_service")

    def state() -> str:
        parts = [f"tuneloop serve alive: {service.process.poll() is None}", service.log_tail(40)]
        parts.append(_failed_requests(service.home / "tuneloop.db"))
        for pattern in ("proxy_*.log", "controller_*.log"):
            for log in sorted(RAY_SERVE_LOGS.glob(pattern)):
                lines = log.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    return state


def _failed_requests(db: Path, n: int = 10) -> str:
    """The request log's last `n` rows that did not answer 200 (the server's side of a failed call)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT created_at, endpoint, model_requested, status_code, error FROM requests "
                "WHERE status_code != 200 ORDER BY created_at DESC LIMIT ?",
                (n,),
            ).fetchall()
            total = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    except sqlite3.Error as exc:
        return f"--- request log: unreadable ({exc})"
    lines = [f"--- request log: {total} rows; last non-200 rows:"] + [" | ".join(map(str, r)) for r in rows]
    return "\n".join(lines)


def _harness_errors(stderr: str, n: int = 8) -> str:
    """The harness's first failed-call lines: its last lines are the cancelled calls' noise."""
    lines = [line for line in stderr.splitlines() if "API request failed" in line or "Exception:" in line]
    return "\n".join(line[:600] for line in lines[:n]) or "(no failed-call line in the harness's stderr)"


def _run_lm_eval(
    model_kind: str,
    model_args: str,
    task: str,
    tmp_path: Path,
    server_state: Callable[[], str],
    *extra: str,
) -> dict[str, Any]:
    """Run the harness CLI on one fixture task; returns its `results[task]`. A failure message carries the
    harness's stderr and the server's state."""
    spec = yaml.safe_load((FIXTURES / f"{task}.yaml").read_text())
    data = Path(spec["dataset_kwargs"]["data_files"]["test"]).name
    spec["dataset_kwargs"]["data_files"]["test"] = str(FIXTURES / data)
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / f"{task}.yaml").write_text(yaml.safe_dump(spec))
    cli = shutil.which("lm_eval", path=str(Path(sys.executable).parent)) or "lm_eval"
    command = [
        cli,
        "--model",
        model_kind,
        "--model_args",
        model_args,
        "--tasks",
        task,
        "--include_path",
        str(tmp_path / "tasks"),
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, (
        f"=== first errors ===\n{_harness_errors(done.stderr)}\n=== stderr tail ===\n{done.stderr[-1500:]}"
        f"\n=== server ===\n{server_state()}"
    )
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert results, done.stdout[-2000:]
    return dict(json.loads(results[0].read_text())["results"][task])


def _transformers_accuracy(model_path: Path, docs: list[dict[str, Any]]) -> float:
    """Multiple-choice accuracy computed with transformers as the harness defines it: for each doc, the
    choice with the highest summed log-probability of its tokens after the question (context and
    continuation split as `lm_eval`'s `_encode_pair` splits them)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    correct = 0
    for doc in docs:
        context = f"Question: What is the capital of {doc['country']}?\nAnswer:"
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0], dim=-1)
            scores.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context_ids), len(whole))))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    return correct / len(docs)


def test_lm_eval_local_completions_multiple_choice(
    eval_endpoint: tuple[str, str, bool],
    default_model_path: Path,
    tmp_path: Path,
    server_state: Callable[[], str],
) -> None:
    pytest.importorskip("lm_eval")
    url, model, _ = eval_endpoint
    metrics = _run_lm_eval(
        "local-completions",
        f"model={model},base_url={url}/completions,tokenizer={default_model_path},"
        "tokenizer_backend=huggingface,num_concurrent=2,max_retries=3",
        "tuneloop_capitals_mc",
        tmp_path,
        server_state,
    )
    docs = [json.loads(line) for line in (FIXTURES / "capitals_mc.jsonl").read_text().splitlines() if line]
    expected = _transformers_accuracy(default_model_path, docs)
    assert metrics["acc,none"] == pytest.approx(expected, abs=0.05), (metrics, expected)
    samples = list((tmp_path / "out").rglob("samples_tuneloop_capitals_mc_*.jsonl"))
    assert samples and len(samples[0].read_text().splitlines()) == len(docs)


def test_lm_eval_local_chat_completions(
    eval_endpoint: tuple[str, str, bool], tmp_path: Path, server_state: Callable[[], str]
) -> None:
    pytest.importorskip("lm_eval")
    url, model, _ = eval_endpoint
    metrics = _run_lm_eval(
        "local-chat-completions",
        f"model={model},base_url={url}/chat/completions,num_concurrent=2,max_retries=3",
        "tuneloop_capitals",
        tmp_path,
        server_state,
        "--apply_chat_template",
    )
    assert 0.0 <= metrics["exact_match,first-word"] <= 1.0
    samples = list((tmp_path / "out").rglob("samples_tuneloop_capitals_*.jsonl"))
    assert samples and len(samples[0].read_text().splitlines()) == 6
