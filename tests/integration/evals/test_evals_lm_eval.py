"""Interop: lm-evaluation-harness (`local-chat-completions`) evaluates our endpoint on a local task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[2] / "fixtures" / "evals" / "lm_eval"


def test_lm_eval_local_chat_completions(eval_endpoint: tuple[str, str, bool], tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    url, model, _ = eval_endpoint
    task = yaml.safe_load((FIXTURES / "tuneloop_capitals.yaml").read_text())
    task["dataset_kwargs"]["data_files"]["test"] = str(FIXTURES / "capitals.jsonl")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tuneloop_capitals.yaml").write_text(yaml.safe_dump(task))
    cli = shutil.which("lm_eval", path=str(Path(sys.executable).parent)) or "lm_eval"
    command = [
        cli,
        "--model",
        "local-chat-completions",
        "--model_args",
        f"model={model},base_url={url}/chat/completions,num_concurrent=2,max_retries=3",
        "--tasks",
        "tuneloop_capitals",
        "--include_path",
        str(tmp_path / "tasks"),
        "--apply_chat_template",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert results, done.stdout[-2000:]
    metrics = json.loads(results[0].read_text())["results"]["tuneloop_capitals"]
    score = metrics["exact_match,first-word"]
    assert 0.0 <= score <= 1.0
    samples = list((tmp_path / "out").rglob("samples_tuneloop_capitals_*.jsonl"))
    assert samples and len(samples[0].read_text().splitlines()) == 6
