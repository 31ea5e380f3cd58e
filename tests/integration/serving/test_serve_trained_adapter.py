"""A LoRA adapter *trained by tuneloop's recipe* (not random weights) is accepted by the real service:
validated, smoke-tested and routed by vLLM, and vLLM's greedy output with it equals peft's greedy output
on the same prompt — so what the trainer writes is what the engine serves."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from training.api import train

pytestmark = pytest.mark.integration

SYSTEM = "You are the support assistant of Lumen Home."
ANSWER = "Lumen Home refunds desk: your ticket is logged, reference LH-7."
QUESTIONS = [
    "Where is my parcel?",
    "Can I get my money back?",
    "My lamp arrived broken.",
    "How do I change my password?",
    "Is there a discount for students?",
    "Can I return a sofa after two weeks?",
    "Why was I charged twice?",
    "Do you ship to Norway?",
    "The app keeps crashing.",
    "Can I cancel my order?",
    "What are your opening hours?",
    "I never received the invoice.",
]
PROBE = "I would like a refund for my kettle."


def write_dataset(path: Path) -> Path:
    rows = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": q},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for q in QUESTIONS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def peft_greedy(base: Path, adapter: Path, n_tokens: int) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(adapter)
    )
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBE}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n_tokens, do_sample=False)
    return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def test_trained_adapter_is_served_and_matches_peft(
    tuneloop_service: Any, tmp_path: Path, default_model_path: Path
) -> None:
    svc = tuneloop_service
    data = write_dataset(tmp_path / "fixed_answer.jsonl")
    result = train(
        {
            "name": "it-trained-served",
            "base_model": str(default_model_path),
            "data": {
                "sources": [{"path": str(data)}],
                "max_seq_length": 96,
                "clean": {"near_duplicates": False},  # the rows share their answer on purpose
                "split": {"validation": 0.0, "test": 0.0},
            },
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
            "train": {
                "max_steps": 24,
                "epochs": 50,
                "batch_size": 4,
                "learning_rate": 4e-3,
                "warmup_ratio": 0.0,
                "lr_scheduler": "constant",
            },
            "runtime": {"num_cpus": 1, "timeout_s": 900},
            "output": {"runs_dir": str(tmp_path / "runs")},
        },
        use_ray=False,
    )
    assert result.ok, result.error
    assert result.adapter_dir is not None
    assert result.metrics["train_loss_last"] < result.metrics["train_loss_first"]

    incoming = svc.home / "registry" / "incoming" / "trained-it"
    shutil.copytree(result.adapter_dir, incoming)
    admin = httpx.Client(base_url=svc.url, headers=svc.admin_headers(), timeout=300)
    r = admin.post("/admin/adapters", json={"path": str(incoming), "name": "trained", "alias": "champion"})
    assert r.status_code == 201, r.text
    version = r.json()["adapter"]["version"]

    client = openai.OpenAI(base_url=svc.v1, api_key="unused", max_retries=0, timeout=120)
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBE}]
    deadline = time.monotonic() + 60
    while True:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="trained", messages=messages, max_tokens=12, temperature=0
            )
            if raw.headers["x-tuneloop-served-by"] == f"trained@{version[:12]}":
                break
        except openai.NotFoundError:  # the replica picks the new name up on its next poll
            pass
        assert time.monotonic() < deadline, "the trained adapter never took traffic"
        time.sleep(0.3)
    served = raw.parse().choices[0].message.content or ""
    base = (
        client.chat.completions.create(model=svc.base_id, messages=messages, max_tokens=12, temperature=0)
        .choices[0]
        .message.content
    )
    assert served != base  # the adapter changes what the engine says...
    assert served.startswith("Lumen Home refunds")  # ...into what it was trained to say
    # vLLM with the adapter and peft with the adapter agree greedily (same prefix, fp32 on both sides)
    expected = peft_greedy(default_model_path, result.adapter_dir, 12)
    assert served.split()[:6] == expected.split()[:6], (served, expected)
